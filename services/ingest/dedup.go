package ingest

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// DedupWindow is how long a message id is remembered per workspace.
const DedupWindow = 24 * time.Hour

// dedup remembers the message ids whose records the broker acknowledged,
// so a client retrying a request it never saw answered produces nothing
// twice. Ids are marked only after the acknowledgement: two copies in flight
// at once may both be produced, which consumers absorb by message id, but an
// id is never marked for a record that was not written.
type dedup struct {
	rdb *redis.Client
}

// key puts every id of a workspace in one Redis Cluster slot, so one MGET
// covers a batch.
func dedupKey(ws, messageID string) string {
	return "whisper:ingest:dedup:{" + ws + "}:" + messageID
}

// seen reports, for each id, whether it was already produced.
func (d dedup) seen(ctx context.Context, ws string, ids []string) ([]bool, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = dedupKey(ws, id)
	}
	vals, err := d.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	for i, v := range vals {
		out[i] = v != nil
	}
	return out, nil
}

// mark records ids as produced for the dedup window.
func (d dedup) mark(ctx context.Context, ws string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	pipe := d.rdb.Pipeline()
	for _, id := range ids {
		pipe.Set(ctx, dedupKey(ws, id), "1", DedupWindow)
	}
	_, err := pipe.Exec(ctx)
	return err
}
