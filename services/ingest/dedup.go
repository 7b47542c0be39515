package ingest

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DedupWindow is how long, at least, a message id is remembered per
// workspace.
const DedupWindow = 24 * time.Hour

// presenceTTL is how long dedup trusts what it learned about whether one of
// the optional sets exists.
const presenceTTL = time.Minute

// fingerprintBytes is the size of a set member.
const fingerprintBytes = 16

// dedup remembers the message ids whose records the broker acknowledged,
// so a client retrying a request it never saw answered produces nothing
// twice. Ids are marked only after the acknowledgement: two copies in flight
// at once in different processes may both be produced, which consumers
// absorb by message id, but an id is never marked for a record that was not
// written.
//
// Ids live in one Redis set per workspace and UTC day. A batch is checked
// against today's and yesterday's sets and marked in today's, so a batch
// costs one command per set instead of one per event, and a repeat is
// caught for at least 24 hours (at most 48). All sets of a workspace share
// a hash slot, so the pipeline works on Redis Cluster.
//
// A member is the id's fingerprint: the first 16 bytes of its SHA-256. Two
// different ids of one workspace share a fingerprint with a probability of
// about n²/2¹²⁹ for n ids a day, which is never in practice, and Redis
// stores, hashes and compares 16 bytes instead of the id (36 for a UUID,
// more for the SDKs' prefixed ids): the dict lookups on sets of millions of
// members were most of Redis's time spent on ingestion.
//
// Sets that may be missing are not checked while they are known to be:
// yesterday's set on a workspace's first day, and the sets of text ids
// written by the version before fingerprints (see legacyKey). Whether they
// exist is asked with EXISTS, in the same pipeline, at most once a minute.
type dedup struct {
	rdb *redis.Client
	now func() time.Time

	mu sync.Mutex
	// presence holds what is known of optional sets by key.
	presence  map[string]presence
	nextSweep time.Time
}

// presence is whether a set existed when last asked, trusted until until.
type presence struct {
	exists bool
	until  time.Time
}

func newDedup(rdb *redis.Client, now func() time.Time) *dedup {
	return &dedup{rdb: rdb, now: now, presence: map[string]presence{}}
}

// dedupKey names the set of ws's id fingerprints produced on day.
func dedupKey(ws string, day time.Time) string {
	return "whisper:ingest:dedup:v2:{" + ws + "}:" + day.Format("20060102")
}

// legacyKey names the set of ws's ids, as text, that the version before
// fingerprints wrote for day. Such sets are checked for as long as they
// exist (49 hours after their last write), so neither a rolling upgrade nor
// the day after it lets a retry through.
func legacyKey(ws string, day time.Time) string {
	return "whisper:ingest:dedup:{" + ws + "}:" + day.Format("20060102")
}

// fingerprints returns the set members of ids, in order.
func fingerprints(ids []string) []any {
	buf := make([]byte, 0, len(ids)*fingerprintBytes)
	for _, id := range ids {
		sum := sha256.Sum256([]byte(id))
		buf = append(buf, sum[:fingerprintBytes]...)
	}
	// One string for all, sliced: a member costs no copy of its own.
	all := string(buf)
	members := make([]any, len(ids))
	for i := range members {
		members[i] = all[i*fingerprintBytes : (i+1)*fingerprintBytes]
	}
	return members
}

// setCheck is one SMISMEMBER of a pipeline, with the EXISTS that tells
// whether its set is there when that is not known.
type setCheck struct {
	key    string
	found  *redis.BoolSliceCmd
	exists *redis.IntCmd // nil when presence was known
}

// seen reports, for each id, whether it was already produced; members
// are the ids' fingerprints.
func (d *dedup) seen(ctx context.Context, ws string, ids []string, members []any) ([]bool, error) {
	now := d.now()
	today := now.UTC()
	yesterday := today.Add(-24 * time.Hour)
	var text []any // legacy members, built when a legacy set exists
	pipe := d.rdb.Pipeline()
	checks := make([]setCheck, 0, 4)
	checks = append(checks, setCheck{key: dedupKey(ws, today), found: pipe.SMIsMember(ctx, dedupKey(ws, today), members...)})
	optional := [...]struct {
		key    string
		legacy bool
	}{{dedupKey(ws, yesterday), false}, {legacyKey(ws, today), true}, {legacyKey(ws, yesterday), true}}
	for _, o := range optional {
		p, known := d.present(o.key, now)
		if known && !p {
			continue
		}
		args := members
		if o.legacy {
			if text == nil {
				text = make([]any, len(ids))
				for i, id := range ids {
					text[i] = id
				}
			}
			args = text
		}
		c := setCheck{key: o.key, found: pipe.SMIsMember(ctx, o.key, args...)}
		if !known {
			c.exists = pipe.Exists(ctx, o.key)
		}
		checks = append(checks, c)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	for _, c := range checks {
		if c.exists != nil {
			d.learn(c.key, c.exists.Val() > 0, now)
		}
		for i, yes := range c.found.Val() {
			out[i] = out[i] || yes
		}
	}
	return out, nil
}

// present returns what is known of whether key exists, and whether that is
// still to be trusted at now.
func (d *dedup) present(key string, now time.Time) (exists, known bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.presence[key]
	if !ok || now.After(p.until) {
		return false, false
	}
	return p.exists, true
}

// learn records whether key exists, and forgets what is out of date once a
// minute, so keys of past days and idle workspaces do not pile up.
func (d *dedup) learn(key string, exists bool, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.presence[key] = presence{exists: exists, until: now.Add(presenceTTL)}
	if now.Before(d.nextSweep) {
		return
	}
	d.nextSweep = now.Add(presenceTTL)
	for k, p := range d.presence {
		if now.After(p.until) {
			delete(d.presence, k)
		}
	}
}

// mark records the ids of members, their fingerprints, as produced today.
func (d *dedup) mark(ctx context.Context, ws string, members []any) error {
	if len(members) == 0 {
		return nil
	}
	key := dedupKey(ws, d.now().UTC())
	pipe := d.rdb.Pipeline()
	pipe.SAdd(ctx, key, members...)
	pipe.Expire(ctx, key, 2*DedupWindow+time.Hour)
	_, err := pipe.Exec(ctx)
	return err
}
