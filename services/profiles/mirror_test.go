package profiles

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/redistest"
)

// TestWriteMirror: a hash is replaced whole, an older version never
// replaces a newer one, deleted profiles lose their hash, and a Redis that
// lost the script (a restart, SCRIPT FLUSH) is given it again. It runs on
// the real Redis and on a private miniredis, the only one it may flush
// scripts on (the real one is shared with other tests).
func TestWriteMirror(t *testing.T) {
	private := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { private.Close() })
	for _, srv := range []struct {
		name     string
		rdb      *redis.Client
		canFlush bool
	}{{"redis", redistest.New(t), false}, {"miniredis", private, true}} {
		t.Run(srv.name, func(t *testing.T) { testWriteMirror(t, srv.rdb, srv.canFlush) })
	}
}

func testWriteMirror(t *testing.T, rdb *redis.Client, canFlush bool) {
	ctx := context.Background()
	k := profileKey{uuid.NewString(), uuid.NewString()}
	gone := profileKey{k.ws, uuid.NewString()}
	key := RollingKey(k.ws, k.id)
	t.Cleanup(func() { rdb.Del(context.Background(), key, RollingKey(gone.ws, gone.id)) })
	v2 := activity{20000: {All: 3, Names: map[string]int64{"Viewed": 2}}, 20001: {All: 1}}
	v1 := activity{19999: {All: 9, Names: map[string]int64{"Old": 9}}}
	v3 := activity{20001: {All: 2, Names: map[string]int64{"Bought": 1}}}

	if err := rdb.HSet(ctx, RollingKey(gone.ws, gone.id), "v", 1).Err(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		entry   mirrorEntry
		deleted []profileKey
		flush   bool
		want    map[string]string
	}{
		{"first write", mirrorEntry{k, 2, v2}, []profileKey{gone}, false,
			map[string]string{"v": "2", "20000": "3", "20000:Viewed": "2", "20001": "1"}},
		{"the same again changes nothing", mirrorEntry{k, 2, v2}, nil, false,
			map[string]string{"v": "2", "20000": "3", "20000:Viewed": "2", "20001": "1"}},
		{"an older version arriving late is refused", mirrorEntry{k, 1, v1}, nil, false,
			map[string]string{"v": "2", "20000": "3", "20000:Viewed": "2", "20001": "1"}},
		{"a newer version replaces the hash whole", mirrorEntry{k, 3, v3}, nil, canFlush,
			map[string]string{"v": "3", "20001": "2", "20001:Bought": "1"}},
	}
	for _, st := range steps {
		if st.flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := writeMirror(ctx, rdb, []mirrorEntry{st.entry}, st.deleted); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(st.want, got); diff != "" {
			t.Errorf("%s: hash (-want +got):\n%s", st.name, diff)
		}
		if ttl := rdb.PTTL(ctx, key).Val(); ttl <= RollingTTL-time.Minute {
			t.Errorf("%s: TTL %v, want about %v", st.name, ttl, RollingTTL)
		}
	}
	if n := rdb.Exists(ctx, RollingKey(gone.ws, gone.id)).Val(); n != 0 {
		t.Errorf("the merged-away profile's hash survived")
	}
}

// TestRedeliveryRepairsTheMirror: if the process stops after a batch
// commits and before its mirror is written, the redelivered records are
// duplicates, and their profiles are mirrored from PostgreSQL all the same.
func TestRedeliveryRepairsTheMirror(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, pool, Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	s := NewStore(pool)
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	events := []event{
		{ws: ws, messageID: "r1", typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: "u1", name: "Viewed", micros: now.Add(-time.Hour).UnixMicro()},
		{ws: ws, messageID: "r2", typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: "u1", name: "Viewed", micros: now.Add(-25 * time.Hour).UnixMicro()},
	}
	first, err := s.applyEvents(ctx, events, now)
	if err != nil {
		t.Fatal(err)
	}
	// ... and the process stops here: nothing reaches Redis.
	again, err := s.applyEvents(ctx, events, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if again.applied != 0 || again.duplicates != 2 || again.changes != 0 {
		t.Fatalf("redelivery applied %d, %d duplicates, %d changes; want 0, 2, 0", again.applied, again.duplicates, again.changes)
	}
	opts := cmp.AllowUnexported(mirrorEntry{}, profileKey{})
	if diff := cmp.Diff(first.mirror, again.mirror, opts); diff != "" {
		t.Errorf("the redelivery mirrors another state than the commit (-commit +redelivery):\n%s", diff)
	}
	rdb := redistest.New(t)
	if err := writeMirror(ctx, rdb, again.mirror, nil); err != nil {
		t.Fatal(err)
	}
	key := RollingKey(ws, again.mirror[0].key.id)
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	today := strconv.FormatInt(dayOf(now.UnixMicro()), 10)
	yesterday := strconv.FormatInt(dayOf(now.UnixMicro())-1, 10)
	got := rdb.HGetAll(ctx, key).Val()
	delete(got, "v")
	want := map[string]string{today: "1", today + ":Viewed": "1", yesterday: "1", yesterday + ":Viewed": "1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mirror after the redelivery (-want +got):\n%s", diff)
	}
}

// TestOutboxDrain: changes stay in the outbox, in order, while producing
// fails, and go out once, in commit order, when it works.
func TestOutboxDrain(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, pool, Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	s := NewStore(pool)
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	// Three batches on one user: created, a trait, another trait.
	for i, tr := range []string{`{"plan":"free"}`, `{"plan":"pro"}`, `{"plan":"team"}`} {
		e := event{ws: ws, messageID: "o" + strconv.Itoa(i), typ: eventv1.EventType_EVENT_TYPE_IDENTIFY, userID: "u1",
			traits: traits(t, tr), micros: now.Add(time.Duration(i) * time.Minute).UnixMicro()}
		if _, err := s.applyEvents(ctx, []event{e}, now); err != nil {
			t.Fatal(err)
		}
	}
	failing := errors.New("broker down")
	if n, err := s.drainOutbox(ctx, 10, func(context.Context, []*kgo.Record) error { return failing }); !errors.Is(err, failing) || n != 0 {
		t.Fatalf("drain with a failing producer = %d, %v; want 0, %v", n, err, failing)
	}
	if n, age, err := s.outboxBacklog(ctx, now.Add(time.Minute)); err != nil || n != 3 || age != time.Minute {
		t.Fatalf("backlog = %d, %v, %v; want 3 changes, a minute old", n, age, err)
	}
	var plans []string
	var keys []string
	produce := func(_ context.Context, recs []*kgo.Record) error {
		for _, r := range recs {
			var c profilev1.ProfileChange
			if err := proto.Unmarshal(r.Value, &c); err != nil {
				return err
			}
			plans = append(plans, c.GetProfile().GetTraits().GetFields()["plan"].GetStringValue())
			keys = append(keys, string(r.Key))
		}
		return nil
	}
	// Two at a time: order holds across drains.
	for {
		n, err := s.drainOutbox(ctx, 2, produce)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if diff := cmp.Diff([]string{"free", "pro", "team"}, plans); diff != "" {
		t.Errorf("changes produced out of commit order (-want +got):\n%s", diff)
	}
	for _, k := range keys {
		if k != ws+"/u1" {
			t.Errorf("record key %q, want %q", k, ws+"/u1")
		}
	}
	if n, _, err := s.outboxBacklog(ctx, now); err != nil || n != 0 {
		t.Errorf("backlog after draining = %d, %v; want 0", n, err)
	}
}
