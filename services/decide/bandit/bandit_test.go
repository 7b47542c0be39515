package bandit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/services/decide/bandit"
)

const ws = "6f1c3f0e-3f4a-4d7e-9a57-0c8a4a6d2b10"

func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(context.Background(), pool, bandit.Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return pool
}

// inTx runs f in a committed transaction.
func inTx(t testing.TB, pool *pgxpool.Pool, f func(pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), pool, f); err != nil {
		t.Fatal(err)
	}
}

// posteriors returns each variant's (alpha, beta) as Choose sees them.
func posteriors(t testing.TB, s *bandit.Store, c bandit.Campaign) map[string][2]float64 {
	t.Helper()
	c.HoldoutShare = 0
	ch, err := s.Choose(context.Background(), c, rand.New(rand.NewPCG(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]float64{}
	for _, sc := range ch.Scores {
		got[sc.VariantID] = [2]float64{sc.Alpha, sc.Beta}
	}
	return got
}

// TestSimulationConvergesToTheBetterVariant: B converts at 12%, A at 6%.
// After 2,000 seeded decisions B has most exposures and the regret (expected
// conversions lost against always sending B) is below 30; sending A and B
// evenly would lose 60.
func TestSimulationConvergesToTheBetterVariant(t *testing.T) {
	pool := newPool(t)
	s := bandit.NewStore(pool)
	ctx := context.Background()
	rates := map[string]float64{"A": 0.06, "B": 0.12}
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-sim", Variants: []bandit.Variant{{ID: "A", Weight: 1}, {ID: "B", Weight: 1}}}
	choiceRNG := rand.New(rand.NewPCG(42, 7))
	worldRNG := rand.New(rand.NewPCG(9, 9))
	const rounds, batch = 2000, 10
	exposures := map[string]int{}
	regret := 0.0
	// Feedback arrives in batches of ten decisions, as it does from a
	// consumer committing a poll at a time.
	for i := 0; i < rounds; i += batch {
		type outcome struct {
			id, variant string
			converted   bool
		}
		var out []outcome
		for j := i; j < i+batch; j++ {
			ch, err := s.Choose(ctx, c, choiceRNG)
			if err != nil {
				t.Fatal(err)
			}
			exposures[ch.VariantID]++
			regret += rates["B"] - rates[ch.VariantID]
			out = append(out, outcome{fmt.Sprintf("d%d", j), ch.VariantID, worldRNG.Float64() < rates[ch.VariantID]})
		}
		inTx(t, pool, func(tx pgx.Tx) error {
			for _, o := range out {
				if err := s.RecordExposure(ctx, tx, ws, c.CampaignID, o.variant, o.id); err != nil {
					return err
				}
				if o.converted {
					if err := s.RecordConversion(ctx, tx, ws, c.CampaignID, o.variant, o.id); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	t.Logf("exposures %v, regret %.1f", exposures, regret)
	if exposures["B"] <= exposures["A"] {
		t.Errorf("B (the better variant) has %d exposures, A %d", exposures["B"], exposures["A"])
	}
	if exposures["B"] < rounds*7/10 {
		t.Errorf("B has %d of %d exposures, want at least 70%%", exposures["B"], rounds)
	}
	if regret >= 30 {
		t.Errorf("regret %.1f, want below 30 (an even split loses %.0f)", regret, rounds*0.5*(rates["B"]-rates["A"]))
	}
	// The state survives a restart: a new Store over the same database
	// sees the totals the decisions left.
	got := posteriors(t, bandit.NewStore(pool), c)
	conv := map[string]int64{}
	rows, err := pool.Query(ctx, `SELECT variant_id, count(converted_at) FROM bandit_decisions GROUP BY variant_id`)
	if err != nil {
		t.Fatal(err)
	}
	var v string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&v, &n}, func() error { conv[v] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]float64{}
	for _, id := range []string{"A", "B"} {
		want[id] = [2]float64{1 + float64(conv[id]), 1 + float64(int64(exposures[id])-conv[id])}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("posteriors after restart (-want +got):\n%s", diff)
	}
}

// TestHoldoutShareIsRespected: the holdout is drawn with its probability,
// and a held-out choice names no variant.
func TestHoldoutShareIsRespected(t *testing.T) {
	pool := newPool(t)
	s := bandit.NewStore(pool)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, share := range []float64{0, 0.1, 0.3} {
		c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-holdout", HoldoutShare: share,
			Variants: []bandit.Variant{{ID: "A", Weight: 1}, {ID: "B", Weight: 1}}}
		const n = 4000
		held := 0
		for range n {
			ch, err := s.Choose(context.Background(), c, rng)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Holdout {
				held++
				if ch.VariantID != "" || ch.Scores != nil {
					t.Fatalf("holdout choice carries a variant: %+v", ch)
				}
			} else if ch.VariantID == "" {
				t.Fatalf("non-holdout choice without a variant: %+v", ch)
			}
		}
		got := float64(held) / n
		// Four standard deviations of a binomial share.
		if tol := 4 * math.Sqrt(share*(1-share)/n); math.Abs(got-share) > tol+1e-9 {
			t.Errorf("holdout share %.3f, want %.2f ± %.3f", got, share, tol)
		}
	}
}

// TestRecordIsIdempotent: exposures count once per decision, conversions at
// most once and only for an exposure of the same campaign and variant, and
// nothing counts from a rolled-back transaction.
func TestRecordIsIdempotent(t *testing.T) {
	pool := newPool(t)
	s := bandit.NewStore(pool)
	ctx := context.Background()
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-idem", Variants: []bandit.Variant{{ID: "A", Weight: 1}, {ID: "B", Weight: 1}}}
	steps := []struct {
		name     string
		do       func(tx pgx.Tx) error
		rollback bool
		want     map[string][2]float64
	}{
		{
			name: "first exposure counts",
			do:   func(tx pgx.Tx) error { return s.RecordExposure(ctx, tx, ws, "c-idem", "A", "d1") },
			want: map[string][2]float64{"A": {1, 2}, "B": {1, 1}},
		},
		{
			name: "the same decision again counts nothing",
			do: func(tx pgx.Tx) error {
				if err := s.RecordExposure(ctx, tx, ws, "c-idem", "A", "d1"); err != nil {
					return err
				}
				return s.RecordExposure(ctx, tx, ws, "c-idem", "A", "d1")
			},
			want: map[string][2]float64{"A": {1, 2}, "B": {1, 1}},
		},
		{
			name:     "a rolled-back exposure counts nothing",
			do:       func(tx pgx.Tx) error { return s.RecordExposure(ctx, tx, ws, "c-idem", "B", "d2") },
			rollback: true,
			want:     map[string][2]float64{"A": {1, 2}, "B": {1, 1}},
		},
		{
			name: "a conversion of an unexposed decision counts nothing",
			do:   func(tx pgx.Tx) error { return s.RecordConversion(ctx, tx, ws, "c-idem", "B", "d2") },
			want: map[string][2]float64{"A": {1, 2}, "B": {1, 1}},
		},
		{
			name: "a conversion naming another variant counts nothing",
			do:   func(tx pgx.Tx) error { return s.RecordConversion(ctx, tx, ws, "c-idem", "B", "d1") },
			want: map[string][2]float64{"A": {1, 2}, "B": {1, 1}},
		},
		{
			name: "a conversion naming another campaign counts nothing",
			do:   func(tx pgx.Tx) error { return s.RecordConversion(ctx, tx, ws, "c-other", "A", "d1") },
			want: map[string][2]float64{"A": {1, 2}, "B": {1, 1}},
		},
		{
			name: "the conversion counts once",
			do: func(tx pgx.Tx) error {
				for range 3 {
					if err := s.RecordConversion(ctx, tx, ws, "c-idem", "A", "d1"); err != nil {
						return err
					}
				}
				return nil
			},
			want: map[string][2]float64{"A": {2, 1}, "B": {1, 1}},
		},
		{
			name: "and once across transactions",
			do:   func(tx pgx.Tx) error { return s.RecordConversion(ctx, tx, ws, "c-idem", "A", "d1") },
			want: map[string][2]float64{"A": {2, 1}, "B": {1, 1}},
		},
		{
			name: "another workspace's decision with the same id is its own",
			do: func(tx pgx.Tx) error {
				return s.RecordExposure(ctx, tx, "0b6f0d1e-0000-4000-8000-000000000001", "c-idem", "A", "d1")
			},
			want: map[string][2]float64{"A": {2, 1}, "B": {1, 1}},
		},
	}
	for _, st := range steps {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.do(tx); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.rollback {
			err = tx.Rollback(ctx)
		} else {
			err = tx.Commit(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(st.want, posteriors(t, s, c)); diff != "" {
			t.Errorf("%s: posteriors (-want +got):\n%s", st.name, diff)
		}
	}
	other := c
	other.WorkspaceID = "0b6f0d1e-0000-4000-8000-000000000001"
	if diff := cmp.Diff(map[string][2]float64{"A": {1, 2}, "B": {1, 1}}, posteriors(t, s, other)); diff != "" {
		t.Errorf("other workspace (-want +got):\n%s", diff)
	}

	n, err := s.Prune(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 2 {
		t.Errorf("Prune = %d, %v; want 2 rows", n, err)
	}
	if diff := cmp.Diff(map[string][2]float64{"A": {2, 1}, "B": {1, 1}}, posteriors(t, s, c)); diff != "" {
		t.Errorf("after prune the totals stay (-want +got):\n%s", diff)
	}
}

// TestWeightsAreThePrior: with no data the posterior is Beta(K*w/sum, 1),
// and the heavier variant is chosen more often at first.
func TestWeightsAreThePrior(t *testing.T) {
	pool := newPool(t)
	s := bandit.NewStore(pool)
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-prior", Variants: []bandit.Variant{
		{ID: "A", Weight: 3}, {ID: "B", Weight: 1}, {ID: "C", Weight: 2},
	}}
	ch, err := s.Choose(context.Background(), c, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := []bandit.Score{{VariantID: "A", Alpha: 1.5, Beta: 1}, {VariantID: "B", Alpha: 0.5, Beta: 1}, {VariantID: "C", Alpha: 1, Beta: 1}}
	if diff := cmp.Diff(want, ch.Scores, cmpopts.IgnoreFields(bandit.Score{}, "Sample"), cmpopts.EquateApprox(0, 1e-12)); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	counts := map[string]int{}
	for range 3000 {
		ch, err := s.Choose(context.Background(), c, rng)
		if err != nil {
			t.Fatal(err)
		}
		counts[ch.VariantID]++
	}
	if !(counts["A"] > counts["C"] && counts["C"] > counts["B"]) {
		t.Errorf("choices %v do not follow the weights 3 > 2 > 1", counts)
	}
}

func TestChooseRejectsInvalidCampaigns(t *testing.T) {
	pool := newPool(t)
	s := bandit.NewStore(pool)
	ok := []bandit.Variant{{ID: "A", Weight: 1}}
	tests := []struct {
		name string
		c    bandit.Campaign
		want string
	}{
		{"no workspace", bandit.Campaign{CampaignID: "c", Variants: ok}, "workspace_id"},
		{"no campaign", bandit.Campaign{WorkspaceID: ws, Variants: ok}, "campaign_id"},
		{"no variants", bandit.Campaign{WorkspaceID: ws, CampaignID: "c"}, "variants: at least one"},
		{"holdout of 1", bandit.Campaign{WorkspaceID: ws, CampaignID: "c", Variants: ok, HoldoutShare: 1}, "holdout_share"},
		{"negative holdout", bandit.Campaign{WorkspaceID: ws, CampaignID: "c", Variants: ok, HoldoutShare: -0.1}, "holdout_share"},
		{"NaN holdout", bandit.Campaign{WorkspaceID: ws, CampaignID: "c", Variants: ok, HoldoutShare: math.NaN()}, "holdout_share"},
		{"empty id", bandit.Campaign{WorkspaceID: ws, CampaignID: "c", Variants: []bandit.Variant{{Weight: 1}}}, "variants[0].id"},
		{"duplicate id", bandit.Campaign{WorkspaceID: ws, CampaignID: "c", Variants: []bandit.Variant{{ID: "A", Weight: 1}, {ID: "A", Weight: 1}}}, "variants[1].id"},
		{"zero weight", bandit.Campaign{WorkspaceID: ws, CampaignID: "c", Variants: []bandit.Variant{{ID: "A", Weight: 0}}}, "variants[0].weight"},
		{"infinite weight", bandit.Campaign{WorkspaceID: ws, CampaignID: "c", Variants: []bandit.Variant{{ID: "A", Weight: math.Inf(1)}}}, "variants[0].weight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Choose(context.Background(), tt.c, rand.New(rand.NewPCG(1, 1)))
			if !errors.Is(err, bandit.ErrInvalidCampaign) {
				t.Fatalf("Choose error = %v, want ErrInvalidCampaign", err)
			}
			if got := err.Error(); !strings.Contains(got, tt.want) {
				t.Errorf("error %q does not name %q", got, tt.want)
			}
		})
	}
}

// BenchmarkChoose: one Choose over a campaign of three variants with data,
// reading the arms every time (fresh) or at most once a second (stale_1s).
func BenchmarkChoose(b *testing.B) {
	pool := newPool(b)
	s := bandit.NewStore(pool)
	ctx := context.Background()
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-bench", HoldoutShare: 0.05, Variants: []bandit.Variant{
		{ID: "A", Weight: 1}, {ID: "B", Weight: 1}, {ID: "C", Weight: 1},
	}}
	inTx(b, pool, func(tx pgx.Tx) error {
		for i := range 30 {
			v := []string{"A", "B", "C"}[i%3]
			if err := s.RecordExposure(ctx, tx, ws, c.CampaignID, v, fmt.Sprint(i)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, mode := range []struct {
		name      string
		staleness time.Duration
	}{{"fresh", 0}, {"stale_1s", time.Second}} {
		b.Run(mode.name, func(b *testing.B) {
			s.SetStaleness(mode.staleness)
			rng := rand.New(rand.NewPCG(1, 2))
			for b.Loop() {
				if _, err := s.Choose(ctx, c, rng); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStaleness: by default every Choose sees the latest totals; with
// SetStaleness it reuses totals younger than the staleness.
func TestStaleness(t *testing.T) {
	pool := newPool(t)
	s := bandit.NewStore(pool)
	ctx := context.Background()
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-stale", Variants: []bandit.Variant{{ID: "A", Weight: 1}}}
	expose := func(id string) {
		inTx(t, pool, func(tx pgx.Tx) error { return s.RecordExposure(ctx, tx, ws, c.CampaignID, "A", id) })
	}
	beta := func() float64 { return posteriors(t, s, c)["A"][1] }

	expose("d1")
	if got := beta(); got != 2 {
		t.Fatalf("beta after one exposure = %v, want 2", got)
	}
	s.SetStaleness(time.Hour)
	if got := beta(); got != 2 {
		t.Fatalf("beta = %v, want 2", got)
	}
	expose("d2")
	if got := beta(); got != 2 {
		t.Errorf("within the staleness beta = %v, want the cached 2", got)
	}
	s.SetStaleness(0)
	if got := beta(); got != 3 {
		t.Errorf("without staleness beta = %v, want 3", got)
	}
}

// RecordExposures counts each new decision once, per arm, across and within
// batches, as RecordExposure one at a time would.
func TestRecordExposuresCountsEachDecisionOnce(t *testing.T) {
	pool := newPool(t)
	s := bandit.NewStore(pool)
	ctx := context.Background()
	const ws = "0b6f0d1e-0000-4000-8000-000000000002"
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-batch", Variants: []bandit.Variant{{ID: "A", Weight: 1}, {ID: "B", Weight: 1}}}
	e := func(variant, decision string) bandit.Exposure {
		return bandit.Exposure{WorkspaceID: ws, CampaignID: c.CampaignID, VariantID: variant, DecisionID: decision}
	}
	inTx(t, pool, func(tx pgx.Tx) error {
		return s.RecordExposures(ctx, tx, []bandit.Exposure{e("A", "d1"), e("A", "d2"), e("B", "d3"), e("A", "d1")})
	})
	inTx(t, pool, func(tx pgx.Tx) error {
		return s.RecordExposures(ctx, tx, []bandit.Exposure{e("A", "d2"), e("B", "d4")})
	})
	inTx(t, pool, func(tx pgx.Tx) error { return s.RecordExposures(ctx, tx, nil) })
	// Beta = 1 + exposures - conversions.
	got := posteriors(t, s, c)
	if got["A"][1] != 3 || got["B"][1] != 3 {
		t.Errorf("posteriors %v, want beta 3 for A (d1, d2) and B (d3, d4)", got)
	}
	err := s.RecordExposures(ctx, nil, []bandit.Exposure{e("", "d5")})
	if err == nil || !strings.Contains(err.Error(), "variant_id") {
		t.Errorf("an exposure without a variant: %v, want an error naming variant_id", err)
	}
}

// newPoolOf is newPool with room for conns connections at once (pgxpool's
// default is the number of CPUs, at least 4).
func newPoolOf(t testing.TB, conns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(context.Background(), pool, bandit.Migrations, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return pool
}

// beginNoWait begins a transaction in which any lock wait longer than a
// second fails the statement, so a test sees waiting as an error.
func beginNoWait(t testing.TB, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), `SET LOCAL lock_timeout = '1s'`); err != nil {
		t.Fatal(err)
	}
	return tx
}

// armRows returns the number of counter rows of each variant of c.
func armRows(t testing.TB, pool *pgxpool.Pool, c bandit.Campaign) map[string]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT variant_id, count(*) FROM bandit_arm_counts WHERE workspace_id = $1 AND campaign_id = $2 GROUP BY variant_id`,
		c.WorkspaceID, c.CampaignID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	var v string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&v, &n}, func() error { got[v] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestConcurrentTransactionsDoNotWait: transactions open at the same time
// all count exposures and conversions of the same arms, twice each, and
// none waits for another (each counts in its own shard; on one row per arm
// every one after the first would wait for the first's commit). After they
// commit, one of them rolled back, the totals are exact.
func TestConcurrentTransactionsDoNotWait(t *testing.T) {
	const txns = 6
	pool := newPoolOf(t, txns)
	s := bandit.NewStore(pool)
	ctx := context.Background()
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-concurrent", Variants: []bandit.Variant{{ID: "A", Weight: 1}, {ID: "B", Weight: 1}}}
	e := func(variant, decision string) bandit.Exposure {
		return bandit.Exposure{WorkspaceID: ws, CampaignID: c.CampaignID, VariantID: variant, DecisionID: decision}
	}
	// Decisions the transactions convert, exposed beforehand.
	inTx(t, pool, func(tx pgx.Tx) error {
		var es []bandit.Exposure
		for i := range txns {
			es = append(es, e("A", fmt.Sprintf("conv%d", i)))
		}
		return s.RecordExposures(ctx, tx, es)
	})

	open := make([]pgx.Tx, txns)
	for i := range open {
		open[i] = beginNoWait(t, pool)
		defer open[i].Rollback(ctx)
	}
	// Round robin, so that each transaction's second statements come
	// after every other's first.
	for round := range 2 {
		for i, tx := range open {
			es := []bandit.Exposure{e("A", fmt.Sprintf("t%d-r%d-a", i, round)), e("B", fmt.Sprintf("t%d-r%d-b", i, round))}
			if err := s.RecordExposures(ctx, tx, es); err != nil {
				t.Fatalf("transaction %d, round %d: exposures: %v", i, round, err)
			}
			if err := s.RecordExposure(ctx, tx, ws, c.CampaignID, "B", fmt.Sprintf("t%d-r%d-one", i, round)); err != nil {
				t.Fatalf("transaction %d, round %d: exposure: %v", i, round, err)
			}
			if err := s.RecordConversion(ctx, tx, ws, c.CampaignID, "A", fmt.Sprintf("conv%d", i)); err != nil {
				t.Fatalf("transaction %d, round %d: conversion: %v", i, round, err)
			}
		}
	}
	if err := open[0].Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tx := range open[1:] {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// A: the txns exposures before and 2 per committed transaction, and
	// one conversion per committed transaction. B: 4 per committed
	// transaction. Beta = 1 + exposures - conversions.
	const committed = txns - 1
	want := map[string][2]float64{
		"A": {1 + committed, 1 + txns + 2*committed - committed},
		"B": {1, 1 + 4*committed},
	}
	if diff := cmp.Diff(want, posteriors(t, s, c)); diff != "" {
		t.Errorf("posteriors (-want +got):\n%s", diff)
	}
	// A row per arm for each committed transaction's shard (the
	// rolled-back one's went with it), and A's from the exposures before.
	if diff := cmp.Diff(map[string]int64{"A": 1 + committed, "B": committed}, armRows(t, pool, c)); diff != "" {
		t.Errorf("counter rows per arm (-want +got):\n%s", diff)
	}
	n, err := s.Prune(ctx, time.Now().Add(time.Hour))
	if err != nil || n != txns+6*committed {
		t.Errorf("Prune = %d, %v; want %d rows", n, err, txns+6*committed)
	}
	if diff := cmp.Diff(want, posteriors(t, s, c)); diff != "" {
		t.Errorf("after prune the totals stay (-want +got):\n%s", diff)
	}
}

// TestTransactionsBeyondTheShardsWait: with all 32 shards held, one more
// counting transaction waits for a shard instead of sharing a row
// unlocked, and its count adds to the shard's once it has it.
func TestTransactionsBeyondTheShardsWait(t *testing.T) {
	const shards = 32
	pool := newPoolOf(t, shards+2)
	s := bandit.NewStore(pool)
	ctx := context.Background()
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-full", Variants: []bandit.Variant{{ID: "A", Weight: 1}}}
	holders := make([]pgx.Tx, shards)
	for i := range holders {
		holders[i] = beginNoWait(t, pool)
		defer holders[i].Rollback(ctx)
		if err := s.RecordExposure(ctx, holders[i], ws, c.CampaignID, "A", fmt.Sprintf("h%d", i)); err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
	}

	done := make(chan error, 1)
	go func() {
		done <- pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return s.RecordExposure(ctx, tx, ws, c.CampaignID, "A", "late")
		})
	}()
	// Wait until the late transaction waits for an advisory lock.
	for deadline := time.Now().Add(10 * time.Second); ; {
		var waiting int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 1 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the 33rd transaction did not wait for a shard (err %v)", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the 33rd transaction is not waiting for a shard")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, tx := range holders {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("the 33rd transaction: %v", err)
	}
	if got, want := posteriors(t, s, c)["A"], [2]float64{1, 1 + shards + 1}; got != want {
		t.Errorf("A's posterior %v, want %v", got, want)
	}
	if got := armRows(t, pool, c)["A"]; got != shards {
		t.Errorf("A has %d counter rows, want %d", got, shards)
	}
}

// TestMigrationKeepsTheTotals: the totals in bandit_arms before the
// counters were sharded are the totals after, and going back down sums
// the shards into bandit_arms again.
func TestMigrationKeepsTheTotals(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	db := postgres.DB(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, bandit.Migrations.FS, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO bandit_arms VALUES ($1, 'c-old', 'A', 40, 3), ($1, 'c-old', 'B', 7, 0)`, ws); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	s := bandit.NewStore(pool)
	c := bandit.Campaign{WorkspaceID: ws, CampaignID: "c-old", Variants: []bandit.Variant{{ID: "A", Weight: 1}, {ID: "B", Weight: 1}}}
	want := map[string][2]float64{"A": {1 + 3, 1 + 40 - 3}, "B": {1, 1 + 7}}
	if diff := cmp.Diff(want, posteriors(t, s, c)); diff != "" {
		t.Fatalf("after the migration (-want +got):\n%s", diff)
	}

	// Counts in two shards, the migrated one (shard 0, which the first
	// transaction claims) and another: one transaction stays open while
	// another counts.
	open := beginNoWait(t, pool)
	defer open.Rollback(ctx)
	if err := s.RecordExposure(ctx, open, ws, "c-old", "A", "d1"); err != nil {
		t.Fatal(err)
	}
	inTx(t, pool, func(tx pgx.Tx) error {
		if err := s.RecordExposure(ctx, tx, ws, "c-old", "A", "d2"); err != nil {
			return err
		}
		return s.RecordConversion(ctx, tx, ws, "c-old", "A", "d2")
	})
	if err := open.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := armRows(t, pool, c)["A"]; got != 2 {
		t.Fatalf("A has %d counter rows, want 2", got)
	}
	if _, err := p.DownTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	type row struct {
		Variant                string
		Exposures, Conversions int64
	}
	rows, err := pool.Query(ctx, `SELECT variant_id, exposures, conversions FROM bandit_arms WHERE campaign_id = 'c-old' ORDER BY variant_id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]row{{"A", 42, 4}, {"B", 7, 0}}, got); diff != "" {
		t.Errorf("bandit_arms after going down (-want +got):\n%s", diff)
	}
}

// BenchmarkConcurrentExposures: txns transactions at once, each recording
// the exposures of ten decisions across the three variants of one campaign
// and committing, as the consumer's partitions and Decide batches do. An
// op is one transaction.
func BenchmarkConcurrentExposures(b *testing.B) {
	for _, txns := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("txns=%d", txns), func(b *testing.B) {
			pool := newPoolOf(b, int32(txns))
			s := bandit.NewStore(pool)
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range txns {
				wg.Go(func() {
					es := make([]bandit.Exposure, 10)
					for {
						op := next.Add(1)
						if op > int64(b.N) {
							return
						}
						for j := range es {
							es[j] = bandit.Exposure{WorkspaceID: ws, CampaignID: "c-bench", VariantID: []string{"A", "B", "C"}[j%3], DecisionID: fmt.Sprintf("%d-%d", op, j)}
						}
						err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return s.RecordExposures(ctx, tx, es) })
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*10)/b.Elapsed().Seconds(), "exposures/s")
		})
	}
}
