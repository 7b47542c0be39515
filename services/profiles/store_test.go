package profiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
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
