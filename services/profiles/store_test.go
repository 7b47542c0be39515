package profiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
)

// TestConcurrentBatchesOnOneProfile: batches of different partitions reach
// one profile through different identities while aliases merge other
// profiles into it. No update is lost and no batch fails but for the
// documented retry.
func TestConcurrentBatchesOnOneProfile(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, pool, Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	s := NewStore(pool)
	const writers, batches, perBatch, aliases = 6, 15, 10, 10
	seq := 0
	next := func(e event) event {
		seq++
		e.ws, e.messageID, e.micros = ws, fmt.Sprintf("m%d", seq), int64(1000+seq)
		return e
	}
	var setup []event
	for i := range writers {
		setup = append(setup, next(event{typ: eventv1.EventType_EVENT_TYPE_IDENTIFY, userID: "u", anonymousID: fmt.Sprintf("a%d", i)}))
	}
	for j := range aliases {
		setup = append(setup, next(event{typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: fmt.Sprintf("x%d", j), name: "X"}))
	}
	if _, err := s.applyEvents(ctx, setup, time.Now()); err != nil {
		t.Fatal(err)
	}
	work := make([][][]event, writers+1)
	for i := range writers {
		for range batches {
			var b []event
			for range perBatch {
				b = append(b, next(event{typ: eventv1.EventType_EVENT_TYPE_TRACK, anonymousID: fmt.Sprintf("a%d", i), name: "T"}))
			}
			work[i] = append(work[i], b)
		}
	}
	for j := range aliases {
		work[writers] = append(work[writers], []event{next(event{typ: eventv1.EventType_EVENT_TYPE_ALIAS, userID: "u", previousID: fmt.Sprintf("x%d", j)})})
	}
	var wg sync.WaitGroup
	for _, w := range work {
		wg.Go(func() {
			for _, b := range w {
				for {
					_, err := s.applyEvents(ctx, b, time.Now())
					if errors.Is(err, errProfileMoved) {
						continue
					}
					if err != nil {
						t.Errorf("apply: %v", err)
					}
					break
				}
			}
		})
	}
	wg.Wait()
	p, err := s.get(ctx, ws, kindUser, "u")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"T": writers * batches * perBatch, "X": aliases}
	if p.EventCounts["T"] != want["T"] || p.EventCounts["X"] != want["X"] || len(p.EventCounts) != 2 {
		t.Errorf("counts = %v, want %v", p.EventCounts, want)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d profiles (%v), want 1: every alias merged into u", n, err)
	}
}

func TestPurgeApplied(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, pool, Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO profile_applied_messages (workspace_id, message_id, applied_at) VALUES
		  ($1, 'old', now() - interval '8 days'), ($1, 'recent', now() - interval '6 days')`, ws); err != nil {
		t.Fatal(err)
	}
	n, err := NewStore(pool).purgeApplied(ctx, time.Now().Add(-AppliedRetention))
	if err != nil || n != 1 {
		t.Fatalf("purgeApplied = %d, %v; want 1 row", n, err)
	}
	rows, _ := pool.Query(ctx, `SELECT message_id FROM profile_applied_messages`)
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(left) != 1 || left[0] != "recent" {
		t.Errorf("left %v (%v), want [recent]", left, err)
	}
}

// TestTunePool: a tuned pool plans every statement for its parameters.
func TestTunePool(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	TunePool(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var mode string
	if err := pool.QueryRow(context.Background(), `SHOW plan_cache_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "force_custom_plan" {
		t.Errorf("plan_cache_mode = %s, want force_custom_plan", mode)
	}
}

// TestSessionsMigration: rows written before 00003_sessions get one
// session started at their last_seen, and their next events count on from
// there.
func TestSessionsMigration(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	before := fstest.MapFS{}
	for _, name := range []string{"00001_profiles.sql", "00002_lifecycle.sql"} {
		b, err := fs.ReadFile(Migrations.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = &fstest.MapFile{Data: b}
	}
	if err := postgres.Migrate(ctx, pool, postgres.Migrations{Name: Migrations.Name, FS: before}, logger); err != nil {
		t.Fatal(err)
	}
	lastSeen := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	const profileID = "6f0f4a3e-0c1f-4a57-9b0a-1d2c3e4f5a6b"
	if _, err := pool.Exec(ctx, `
		INSERT INTO profiles (workspace_id, profile_id, user_id, first_seen, last_seen) VALUES ($1, $2, 'u', $3, $4)`, ws, profileID, lastSeen.Add(-48*time.Hour), lastSeen); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO profile_identities (workspace_id, kind, id, profile_id) VALUES ($1, 'user', 'u', $2)`, ws, profileID); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Migrate(ctx, pool, Migrations, logger); err != nil {
		t.Fatal(err)
	}
	s := NewStore(pool)
	type sessions struct {
		Count int64
		Start time.Time
	}
	check := func(want sessions) {
		t.Helper()
		p, err := s.get(ctx, ws, kindUser, "u")
		if err != nil {
			t.Fatal(err)
		}
		if got := (sessions{p.SessionCount, p.SessionStart.UTC()}); got != want {
			t.Errorf("sessions = %+v, want %+v", got, want)
		}
	}
	check(sessions{1, lastSeen})
	at := func(id string, d time.Duration) event {
		return event{ws: ws, messageID: id, typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: "u", name: "A", micros: lastSeen.Add(d).UnixMicro()}
	}
	for _, step := range []struct {
		e    event
		want sessions
	}{
		{at("m1", 20*time.Minute), sessions{1, lastSeen}},
		{at("m2", 51*time.Minute), sessions{2, lastSeen.Add(51 * time.Minute)}},
		{at("m3", -5*time.Hour), sessions{2, lastSeen.Add(51 * time.Minute)}},
		{at("m2", 51*time.Minute), sessions{2, lastSeen.Add(51 * time.Minute)}}, // a replay
	} {
		if _, err := s.applyEvents(ctx, []event{step.e}, lastSeen.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		check(step.want)
	}
}
