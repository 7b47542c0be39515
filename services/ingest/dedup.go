package ingest

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// DedupWindow is how long, at least, a message id is remembered per
// workspace.
const DedupWindow = 24 * time.Hour

// dedup remembers the message ids whose records the broker acknowledged,
// so a client retrying a request it never saw answered produces nothing
// twice. Ids are marked only after the acknowledgement: two copies in flight
// at once in different processes may both be produced, which consumers
// absorb by message id, but an id is never marked for a record that was not
// written.
//
// Ids live in one Redis set per workspace and UTC day. A batch is checked
// against today's and yesterday's sets and marked in today's, so a batch
// costs two commands each way instead of one per event, and a repeat is
// caught for at least 24 hours (at most 48). Both sets of a workspace share
// a hash slot, so the pipeline works on Redis Cluster.
type dedup struct {
	rdb *redis.Client
	now func() time.Time
}

// dedupKey names the set of ws's ids produced on day.
func dedupKey(ws string, day time.Time) string {
	return "whisper:ingest:dedup:{" + ws + "}:" + day.Format("20060102")
}

// seen reports, for each id, whether it was already produced.
func (d dedup) seen(ctx context.Context, ws string, ids []string) ([]bool, error) {
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	today := d.now().UTC()
	pipe := d.rdb.Pipeline()
	cmdToday := pipe.SMIsMember(ctx, dedupKey(ws, today), members...)
	cmdYesterday := pipe.SMIsMember(ctx, dedupKey(ws, today.Add(-24*time.Hour)), members...)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := cmdToday.Val()
	for i, yes := range cmdYesterday.Val() {
		out[i] = out[i] || yes
	}
	return out, nil
}

// mark records ids as produced today.
func (d dedup) mark(ctx context.Context, ws string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	key := dedupKey(ws, d.now().UTC())
	pipe := d.rdb.Pipeline()
	pipe.SAdd(ctx, key, members...)
	pipe.Expire(ctx, key, 2*DedupWindow+time.Hour)
	_, err := pipe.Exec(ctx)
	return err
}
