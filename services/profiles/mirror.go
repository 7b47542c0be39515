package profiles

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// RollingTTL is how long a profile's rolling key lives after its last
// write: a day more than the window, so that a key outlives every bucket
// it can usefully hold and then vanishes by itself.
const RollingTTL = (rollingDays + 1) * 24 * time.Hour

// RollingKey is the Redis hash that mirrors a profile's rolling activity
// (see the package doc for its fields).
func RollingKey(workspaceID, profileID string) string {
	return "whisper:profiles:rolling:" + workspaceID + ":" + profileID
}

// RollingVersionField is the hash field that holds the profile version
// the hash was written from.
const RollingVersionField = "v"

// mirrorScript replaces a rolling hash whole, unless it already holds a
// newer version: two batches that committed in one order may reach Redis
// in the other, and the older must not win.
//
// KEYS[1] the hash; ARGV[1] the version, ARGV[2] the TTL in milliseconds,
// then field, value pairs.
var mirrorScript = redis.NewScript(mirrorSource)

const mirrorSource = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if cur > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

// redisClient is what the mirror needs of Redis.
type redisClient interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
}

// mirrorEntry is the rolling activity of one profile at one version.
type mirrorEntry struct {
	key     profileKey
	version int64
	daily   activity
}

// args are the script arguments of e: version, TTL and the bucket fields,
// "<day>" for events of any kind and "<day>:<name>" per track event name.
func (e mirrorEntry) args() []any {
	out := make([]any, 0, 2+4*len(e.daily))
	out = append(out, e.version, RollingTTL.Milliseconds())
	for day, b := range e.daily {
		d := strconv.FormatInt(day, 10)
		out = append(out, d, b.All)
		for name, n := range b.Names {
			out = append(out, d+":"+name, n)
		}
	}
	return out
}

// writeMirror writes entries and deletes the keys of deleted profiles in
// one pipelined round trip (two when Redis lost the script, after a
// restart). Values are absolute, so writing the same state again changes
// nothing.
func writeMirror(ctx context.Context, rdb redisClient, entries []mirrorEntry, deleted []profileKey) error {
	if len(entries)+len(deleted) == 0 {
		return nil
	}
	run := func() error {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, e := range entries {
				mirrorScript.EvalSha(ctx, p, []string{RollingKey(e.key.ws, e.key.id)}, e.args()...)
			}
			for _, k := range deleted {
				p.Del(ctx, RollingKey(k.ws, k.id))
			}
			return nil
		})
		return err
	}
	err := run()
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		if err := rdb.ScriptLoad(ctx, mirrorSource).Err(); err != nil {
			return fmt.Errorf("load the mirror script: %w", err)
		}
		err = run()
	}
	if err != nil {
		return fmt.Errorf("write rolling activity to redis: %w", err)
	}
	return nil
}

// readMirror reads, without locking, the rolling activity of the profiles
// events' identities point to.
func readMirror(ctx context.Context, tx pgx.Tx, events []event) ([]mirrorEntry, error) {
	set := map[idKey]bool{}
	for _, e := range events {
		for _, k := range identityKeys(e) {
			set[k] = true
		}
	}
	var ws, kinds, ids []string
	for k := range set {
		ws, kinds, ids = append(ws, k.ws), append(kinds, k.kind), append(ids, k.id)
	}
	rows, err := tx.Query(ctx, `
		SELECT DISTINCT p.workspace_id::text, p.profile_id::text, p.version, p.daily
		FROM profile_identities i
		JOIN unnest($1::text[]::uuid[], $2::text[], $3::text[]) AS k(ws, kind, id)
		  ON i.workspace_id = k.ws AND i.kind = k.kind AND i.id = k.id
		JOIN profiles p ON p.workspace_id = i.workspace_id AND p.profile_id = i.profile_id`, ws, kinds, ids)
	if err != nil {
		return nil, fmt.Errorf("read rolling activity: %w", err)
	}
	var out []mirrorEntry
	var e mirrorEntry
	var daily []byte
	if _, err := pgx.ForEachRow(rows, []any{&e.key.ws, &e.key.id, &e.version, &daily}, func() error {
		e.daily = activity{}
		if err := json.Unmarshal(daily, &e.daily); err != nil {
			return fmt.Errorf("profile %s: %w", e.key.id, err)
		}
		out = append(out, e)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read rolling activity: %w", err)
	}
	return out, nil
}
