package deliver

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
)

// tokenBucket takes one token from the bucket at KEYS[1] (fields tokens
// and ts, milliseconds), refilled at ARGV[1] tokens a second up to ARGV[2].
// It returns 0 when a token was taken, else how many milliseconds until
// one will be. Redis's own clock is used, so replicas with skewed clocks
// share one bucket correctly.
var tokenBucket = redis.NewScript(`
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
`)

// limiter is the per-channel token buckets, shared by replicas.
type limiter struct {
	rdb   *redis.Client
	rates map[campaignv1.Channel]Rate
	// prefix of the bucket keys: RateLimitPrefix, but for tests sharing a
	// Redis.
	prefix string
}

// RateLimitPrefix starts the Redis key of each channel's bucket
// (RateLimitPrefix + "email", ...).
const RateLimitPrefix = "whisper:deliver:ratelimit:"

// wait blocks until a token of channel c's bucket is taken, and returns
// how long that took.
func (l *limiter) wait(ctx context.Context, c campaignv1.Channel) (time.Duration, error) {
	r, ok := l.rates[c]
	if !ok || r.PerSecond <= 0 {
		return 0, nil
	}
	burst := max(r.Burst, 1)
	start := time.Now()
	for {
		ms, err := tokenBucket.Run(ctx, l.rdb, []string{l.prefix + channelName(c)},
			strconv.FormatFloat(r.PerSecond, 'f', -1, 64), burst).Int64()
		if err != nil {
			return time.Since(start), fmt.Errorf("rate limit: %w", err)
		}
		if ms == 0 {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(time.Duration(ms) * time.Millisecond):
		}
	}
}
