// Package sendtime picks when to send a message: the hour of the day the
// user has historically been most active, in their own timezone, within the
// campaign's maximum delay.
//
// Activity is kept in Redis, one sorted set per workspace and user whose
// members are the UTC hours ("YYYYMMDDHH") the user did something in, scored
// by the hour's Unix time. Observe adds the event's hour with ZADD, which is
// idempotent: an event delivered again, or a hundred events in one hour,
// leave the set as one event would. The histogram Best reads therefore
// counts, for each local hour of the day, on how many of the last Window's
// days the user was active in that hour, so a burst of clicks on one
// evening does not outweigh a habit.
//
// Buckets are UTC hours because events carry instants, not zones; Best maps
// each bucket to the user's local hour with the zone rules of that date, so
// the histogram stays right across daylight-saving changes and when the
// user's timezone trait changes. In zones with a half-hour offset a bucket
// counts for the local hour its start falls in.
package sendtime

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	// The zone database is compiled in: a slim container image has none,
	// and a missing one would silently turn every user's zone into UTC.
	_ "time/tzdata"

	"github.com/redis/go-redis/v9"
)

// Window is how much history Best reads and Observe keeps.
const Window = 28 * 24 * time.Hour

const bucketLayout = "2006010215"

// Optimizer records activity and picks send times. It is safe for
// concurrent use.
type Optimizer struct {
	rdb   *redis.Client
	zones sync.Map // IANA name -> *time.Location
}

// New returns an Optimizer over rdb.
func New(rdb *redis.Client) *Optimizer {
	return &Optimizer{rdb: rdb}
}

// Pick is Best's answer, with what it was based on for ExplainDecision.
type Pick struct {
	// At is when to send: now, or the start of a later local hour.
	At time.Time
	// Hour is At's hour of the day in the user's timezone.
	Hour int
	// Reason says in words why this time was chosen.
	Reason string
	// Histogram counts, per local hour of the day, the days of the last
	// Window the user was active in that hour.
	Histogram [24]int
}

func key(ws, userID string) string {
	// The hash tag keeps one user's keys on one cluster slot.
	return "whisper:sendtime:{" + ws + ":" + userID + "}"
}

// Observe records that the user was active at at. It is idempotent: the
// hour is recorded once however many times it is observed.
func (o *Optimizer) Observe(ctx context.Context, ws, userID string, at time.Time) error {
	return o.ObserveBatch(ctx, []Activity{{WorkspaceID: ws, UserID: userID, At: at}})
}

// Activity is one observation for ObserveBatch.
type Activity struct {
	WorkspaceID, UserID string
	At                  time.Time
}

// ObserveBatch is Observe for many events in one Redis round trip, for a
// consumer recording a whole poll. Activities in the same user-hour are
// written once.
func (o *Optimizer) ObserveBatch(ctx context.Context, acts []Activity) error {
	type userHour struct {
		key  string
		hour int64
	}
	seen := make(map[userHour]bool, len(acts))
	pipe := o.rdb.Pipeline()
	for i, a := range acts {
		if a.WorkspaceID == "" || a.UserID == "" {
			return fmt.Errorf("observe activity %d: workspace and user id are required", i)
		}
		hour := a.At.UTC().Truncate(time.Hour)
		k := key(a.WorkspaceID, a.UserID)
		if seen[userHour{k, hour.Unix()}] {
			continue
		}
		seen[userHour{k, hour.Unix()}] = true
		pipe.ZAdd(ctx, k, redis.Z{Score: float64(hour.Unix()), Member: hour.Format(bucketLayout)})
		// Trimming relative to the event keeps the set bounded for an
		// active user; the TTL removes the set of one who went quiet.
		pipe.ZRemRangeByScore(ctx, k, "-inf", "("+strconv.FormatInt(hour.Add(-Window).Unix(), 10))
		pipe.Expire(ctx, k, Window)
	}
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("observe activity: %w", err)
	}
	return nil
}

// activityRange is the score range of the Window before now.
func activityRange(now time.Time) *redis.ZRangeBy {
	return &redis.ZRangeBy{
		Min: strconv.FormatInt(now.Add(-Window).Unix(), 10),
		Max: strconv.FormatInt(now.Unix(), 10),
	}
}

// histogram counts, per local hour of the day in loc, on how many days the
// user was active in that hour, from the members of the user's set.
func histogram(members []string, loc *time.Location) [24]int {
	var h [24]int
	// Two UTC hours can fall on the same local hour when clocks go back:
	// that is still one day active in that hour.
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		t, err := time.Parse(bucketLayout, m)
		if err != nil {
			continue // not written by Observe; ignore rather than fail a decision
		}
		lt := t.In(loc)
		day := lt.Format("2006010215")
		if seen[day] {
			continue
		}
		seen[day] = true
		h[lt.Hour()]++
	}
	return h
}

// Best picks when to send to the user: the start of the local hour within
// [now, now+maxDelay] in which the user was active on the most days (the
// earliest such hour on a tie, and now itself when the current hour is
// among the best). Without history, or when no reachable hour has any,
// it picks now. tz is an IANA zone; empty or unknown means UTC, which the
// reason then says.
func (o *Optimizer) Best(ctx context.Context, ws, userID string, now time.Time, maxDelay time.Duration, tz string) (Pick, error) {
	picks, err := o.BestBatch(ctx, []Query{{WorkspaceID: ws, UserID: userID, Now: now, MaxDelay: maxDelay, Timezone: tz}})
	if err != nil {
		return Pick{}, err
	}
	return picks[0], nil
}

// Query is one user's question to BestBatch: Best's arguments.
type Query struct {
	WorkspaceID, UserID string
	Now                 time.Time
	MaxDelay            time.Duration
	Timezone            string
}

// BestBatch is Best for many users in one Redis round trip, for a batch of
// decisions; the picks are in the order of the queries.
func (o *Optimizer) BestBatch(ctx context.Context, qs []Query) ([]Pick, error) {
	if len(qs) == 0 {
		return nil, nil
	}
	pipe := o.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(qs))
	for i, q := range qs {
		cmds[i] = pipe.ZRangeByScore(ctx, key(q.WorkspaceID, q.UserID), activityRange(q.Now))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read activity of %d users: %w", len(qs), err)
	}
	picks := make([]Pick, len(qs))
	for i, q := range qs {
		loc, zoneNote := o.zone(q.Timezone)
		pick := pickHour(histogram(cmds[i].Val(), loc), q.Now, q.MaxDelay, loc)
		if zoneNote != "" {
			pick.Reason = zoneNote + "; " + pick.Reason
		}
		picks[i] = pick
	}
	return picks, nil
}

// pickHour is Best's choice over a histogram.
func pickHour(h [24]int, now time.Time, maxDelay time.Duration, loc *time.Location) Pick {
	lnow := now.In(loc)
	pick := Pick{At: now, Hour: lnow.Hour(), Histogram: h}
	total, top := 0, 0
	for hour, n := range h {
		total += n
		if n > h[top] {
			top = hour
		}
	}
	if total == 0 {
		pick.Reason = "no activity in the last 28 days: sending now"
		return pick
	}
	// Candidates are now and the start of every later local hour up to
	// maxDelay. Stepping from the start of the current local hour by whole
	// hours of absolute time visits each wall-clock hour as the zone has
	// it: the skipped hour of a spring-forward day is not offered, the
	// repeated one of a fall-back day is offered twice.
	start := now.Add(-time.Duration(lnow.Minute())*time.Minute - time.Duration(lnow.Second())*time.Second - time.Duration(lnow.Nanosecond()))
	best, bestAt := h[lnow.Hour()], now
	for k := 1; k <= 24; k++ {
		t := start.Add(time.Duration(k) * time.Hour)
		if t.Sub(now) > maxDelay {
			break
		}
		if n := h[t.In(loc).Hour()]; n > best {
			best, bestAt = n, t
		}
	}
	pick.At, pick.Hour = bestAt, bestAt.In(loc).Hour()
	switch {
	case best == 0:
		pick.Reason = fmt.Sprintf("no activity in any hour reachable within %s (most active at %02d:00 on %d days): sending now", maxDelay, top, h[top])
	case bestAt.Equal(now) && h[top] == best:
		pick.Reason = fmt.Sprintf("the current hour %02d:00 is the user's most active (%d of the last 28 days): sending now", pick.Hour, best)
	case bestAt.Equal(now):
		pick.Reason = fmt.Sprintf("the current hour %02d:00 is the most active reachable within %s (%d days; %02d:00 has %d but is out of reach): sending now", pick.Hour, maxDelay, best, top, h[top])
	case h[top] == best:
		pick.Reason = fmt.Sprintf("most active at %02d:00 (%d of the last 28 days): sending at %s, %s from now", pick.Hour, best, bestAt.In(loc).Format("2006-01-02 15:04 MST"), bestAt.Sub(now).Round(time.Minute))
	default:
		pick.Reason = fmt.Sprintf("most active at %02d:00 (%d days) but that is beyond %s; the best reachable hour is %02d:00 (%d days): sending at %s", top, h[top], maxDelay, pick.Hour, best, bestAt.In(loc).Format("2006-01-02 15:04 MST"))
	}
	return pick
}

// zone resolves an IANA name, caching it: LoadLocation reads the zone
// database on every call. A bad name is the user's data, not a reason to
// fail a decision; UTC is used and the note says so.
func (o *Optimizer) zone(tz string) (*time.Location, string) {
	tz = strings.TrimSpace(tz)
	if tz == "" {
		return time.UTC, ""
	}
	if l, ok := o.zones.Load(tz); ok {
		return l.(*time.Location), ""
	}
	l, err := time.LoadLocation(tz)
	if err != nil {
		return time.UTC, fmt.Sprintf("unknown timezone %q, using UTC", tz)
	}
	o.zones.Store(tz, l)
	return l, ""
}
