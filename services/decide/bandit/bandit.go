// Package bandit chooses a campaign's message variant by Thompson sampling
// and learns from conversions, with its state durable in PostgreSQL.
//
// Each variant is an arm whose conversion rate has a Beta posterior:
//
//	Beta(r + conversions, 1 + exposures - conversions), r = K * weight / sum(weights)
//
// for a campaign of K variants. With equal weights r is 1 and the posterior
// is the textbook Beta(1 + conversions, 1 + failures) over a uniform prior;
// a variant the operator weighs twice the average starts at r = 2, a prior
// mean of 2/3 instead of 1/2, so it is tried more at first. That prior
// counts as about two trials and fades as soon as real exposures arrive:
// weights express the operator's initial belief, never a fixed split.
// Choose draws one sample from each posterior and picks the highest, which
// sends traffic to a variant in proportion to the probability that it is
// the best, exploring while that is uncertain and exploiting once it is not.
//
// The holdout is drawn first, with its own probability, before any variant
// is considered: a held-out user is a control whose outcome measures the
// campaign's lift, so it must not depend on the arms' state. Choose reads no
// state for it.
//
// Totals live in bandit_arm_counts; bandit_decisions keeps one row per
// exposed decision. RecordExposure and RecordConversion run in the caller's
// transaction (the one that writes the decision, or consumes the goal
// event), so a total moves exactly when the caller's own effect commits,
// and the per-decision row makes both idempotent: an exposure is counted
// once per decision id, a conversion at most once and only for a decision
// that was exposed with that variant. Because the state is in PostgreSQL,
// every replica samples from the same posteriors and a restart loses
// nothing.
//
// An arm's total is split over shards (up to 32 rows per arm) and Choose
// sums them. Each transaction counts in one shard that no concurrent
// transaction holds (it claims the lowest free one with an advisory lock
// the first time it counts, and keeps it until it ends), so the
// transactions deciding for one campaign at once, one per consumer
// partition and per Decide batch, do not wait for each other's commits as
// they would on one row per arm. Only beyond 32 concurrent counting
// transactions does one wait for a shard.
package bandit

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/whisperhq/whisper/internal/postgres"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the schema of the bandit's state.
var Migrations = postgres.Migrations{Name: "decide_bandit", FS: mustSub(migrationFiles, "migrations")}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // dir is a literal that go:embed has checked
	}
	return sub
}

// ErrInvalidCampaign wraps every reason Choose refuses a campaign.
var ErrInvalidCampaign = errors.New("invalid campaign")

// Variant is one arm.
type Variant struct {
	ID string
	// Weight is the operator's relative prior belief; positive.
	Weight float64
}

// Campaign is what Choose needs of a campaign.
type Campaign struct {
	WorkspaceID, CampaignID string
	Variants                []Variant
	// HoldoutShare is the probability, in [0, 1), that a decision is held
	// out and sends nothing.
	HoldoutShare float64
}

// Score is one arm's posterior and the sample drawn from it.
type Score struct {
	VariantID   string
	Alpha, Beta float64
	Sample      float64
}

// Choice is Choose's answer.
type Choice struct {
	// VariantID is the chosen variant, empty when Holdout.
	VariantID string
	Holdout   bool
	// Scores has one entry per variant in the campaign's order; nil for a
	// holdout, which is drawn before the arms are read.
	Scores []Score
}

// Store is the bandit over PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool

	mu        sync.Mutex
	staleness time.Duration
	cache     map[campaignKey]cachedTotals
}

type campaignKey struct{ ws, campaign string }

type cachedTotals struct {
	totals map[string]arm
	at     time.Time
}

// maxCached bounds the cache; it is emptied when full.
const maxCached = 10000

// NewStore returns a Store over pool, whose schema is Migrations.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// SetStaleness lets Choose reuse a campaign's totals read less than d ago
// instead of reading them for every decision; 0 (the default) reads every
// time. Thompson sampling tolerates totals a second or two old (feedback
// is delayed by the attribution window anyway), and at thousands of
// decisions per second per campaign that saves the query per decision.
func (s *Store) SetStaleness(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staleness = d
	s.cache = nil
}

func validate(c Campaign) error {
	if c.WorkspaceID == "" {
		return fmt.Errorf("%w: workspace_id is required", ErrInvalidCampaign)
	}
	if c.CampaignID == "" {
		return fmt.Errorf("%w: campaign_id is required", ErrInvalidCampaign)
	}
	if len(c.Variants) == 0 {
		return fmt.Errorf("%w: variants: at least one is required", ErrInvalidCampaign)
	}
	if !(c.HoldoutShare >= 0 && c.HoldoutShare < 1) {
		return fmt.Errorf("%w: holdout_share: %v is not in [0, 1)", ErrInvalidCampaign, c.HoldoutShare)
	}
	seen := make(map[string]bool, len(c.Variants))
	for i, v := range c.Variants {
		if v.ID == "" {
			return fmt.Errorf("%w: variants[%d].id is required", ErrInvalidCampaign, i)
		}
		if seen[v.ID] {
			return fmt.Errorf("%w: variants[%d].id: %q appears twice", ErrInvalidCampaign, i, v.ID)
		}
		seen[v.ID] = true
		if !(v.Weight > 0) || math.IsInf(v.Weight, 0) {
			return fmt.Errorf("%w: variants[%d].weight: %v is not a positive number", ErrInvalidCampaign, i, v.Weight)
		}
	}
	return nil
}

// Choose draws the holdout, then a variant by Thompson sampling over the
// arms' current totals. rng is the caller's, so a simulation can be
// reproduced; it must not be shared between goroutines.
func (s *Store) Choose(ctx context.Context, c Campaign, rng *rand.Rand) (Choice, error) {
	if err := validate(c); err != nil {
		return Choice{}, err
	}
	if c.HoldoutShare > 0 && rng.Float64() < c.HoldoutShare {
		return Choice{Holdout: true}, nil
	}
	totals, err := s.cachedTotals(ctx, c.WorkspaceID, c.CampaignID)
	if err != nil {
		return Choice{}, err
	}
	return choose(c, totals, rng), nil
}

// cachedTotals returns the totals, from the cache when SetStaleness allows.
// The cached map is only read, never changed, so it is shared safely.
func (s *Store) cachedTotals(ctx context.Context, ws, campaignID string) (map[string]arm, error) {
	s.mu.Lock()
	staleness := s.staleness
	k := campaignKey{ws, campaignID}
	if e, ok := s.cache[k]; ok && time.Since(e.at) < staleness {
		s.mu.Unlock()
		return e.totals, nil
	}
	s.mu.Unlock()
	totals, err := s.totals(ctx, ws, campaignID)
	if err != nil || staleness <= 0 {
		return totals, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache == nil || len(s.cache) >= maxCached {
		s.cache = map[campaignKey]cachedTotals{}
	}
	s.cache[k] = cachedTotals{totals: totals, at: time.Now()}
	return totals, nil
}

type arm struct{ exposures, conversions int64 }

// choose samples every posterior; the highest sample wins, the first of
// equal ones (which only happens with degenerate rngs).
func choose(c Campaign, totals map[string]arm, rng *rand.Rand) Choice {
	sum := 0.0
	for _, v := range c.Variants {
		sum += v.Weight
	}
	k := float64(len(c.Variants))
	ch := Choice{Scores: make([]Score, len(c.Variants))}
	best := -1.0
	for i, v := range c.Variants {
		t := totals[v.ID]
		a := k*v.Weight/sum + float64(t.conversions)
		b := 1 + float64(t.exposures-t.conversions)
		x := betaSample(rng, a, b)
		ch.Scores[i] = Score{VariantID: v.ID, Alpha: a, Beta: b, Sample: x}
		if x > best {
			best, ch.VariantID = x, v.ID
		}
	}
	return ch
}

func (s *Store) totals(ctx context.Context, ws, campaignID string) (map[string]arm, error) {
	rows, err := s.pool.Query(ctx,
		`
SELECT variant_id, sum(exposures)::bigint, sum(conversions)::bigint FROM bandit_arm_counts
WHERE workspace_id = $1 AND campaign_id = $2 GROUP BY variant_id`,
		ws, campaignID)
	if err != nil {
		return nil, fmt.Errorf("read arms of campaign %s: %w", campaignID, err)
	}
	totals := map[string]arm{}
	var id string
	var a arm
	_, err = pgx.ForEachRow(rows, []any{&id, &a.exposures, &a.conversions}, func() error {
		totals[id] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read arms of campaign %s: %w", campaignID, err)
	}
	return totals, nil
}

func checkIDs(ws, campaignID, variantID, decisionID string) error {
	switch {
	case ws == "":
		return errors.New("workspace_id is required")
	case campaignID == "":
		return errors.New("campaign_id is required")
	case variantID == "":
		return errors.New("variant_id is required")
	case decisionID == "":
		return errors.New("decision_id is required")
	}
	return nil
}

// RecordExposure counts one exposure of variantID, inside tx. A decision id
// already recorded (in any earlier committed transaction, or earlier in
// this one) changes nothing.
func (s *Store) RecordExposure(ctx context.Context, tx pgx.Tx, ws, campaignID, variantID, decisionID string) error {
	if err := checkIDs(ws, campaignID, variantID, decisionID); err != nil {
		return fmt.Errorf("record exposure: %w", err)
	}
	_, err := tx.Exec(ctx, `
WITH d AS (
    INSERT INTO bandit_decisions (workspace_id, decision_id, campaign_id, variant_id)
    VALUES ($1, $4, $2, $3)
    ON CONFLICT (workspace_id, decision_id) DO NOTHING
    RETURNING variant_id
)
INSERT INTO bandit_arm_counts AS a (workspace_id, campaign_id, variant_id, shard, exposures)
SELECT $1, $2, variant_id, (SELECT bandit_counter_shard()), 1 FROM d
ON CONFLICT (workspace_id, campaign_id, variant_id, shard) DO UPDATE SET exposures = a.exposures + 1`,
		ws, campaignID, variantID, decisionID)
	if err != nil {
		return fmt.Errorf("record exposure of decision %s: %w", decisionID, err)
	}
	return nil
}

// Exposure is one sent variant, for RecordExposures.
type Exposure struct {
	WorkspaceID, CampaignID, VariantID, DecisionID string
}

// RecordExposures is RecordExposure for many decisions in one statement
// (QueueExposures sent alone).
func (s *Store) RecordExposures(ctx context.Context, tx pgx.Tx, es []Exposure) error {
	b := &pgx.Batch{}
	if err := QueueExposures(b, es); err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("record %d exposures: %w", len(es), err)
	}
	return nil
}

// QueueExposures adds to b the one statement that records the exposures
// of many decisions: the per-decision rows are inserted together and each
// arm's total moves by the number of its new rows, so a batch of decisions
// costs no round trip of its own (b is sent with the caller's other
// statements, in the transaction that writes the decisions). The totals
// move in the transaction's own shard, so concurrent batches for the same
// arms do not wait for each other. Decision ids already recorded change
// nothing. It adds nothing when es is empty.
func QueueExposures(b *pgx.Batch, es []Exposure) error {
	if len(es) == 0 {
		return nil
	}
	ws := make([]string, len(es))
	campaigns := make([]string, len(es))
	variants := make([]string, len(es))
	decisions := make([]string, len(es))
	for i, e := range es {
		if err := checkIDs(e.WorkspaceID, e.CampaignID, e.VariantID, e.DecisionID); err != nil {
			return fmt.Errorf("record exposure %d: %w", i, err)
		}
		ws[i], campaigns[i], variants[i], decisions[i] = e.WorkspaceID, e.CampaignID, e.VariantID, e.DecisionID
	}
	// The scalar subquery claims the shard once per statement. ORDER BY:
	// only the shard's holder writes its rows, but should anything else
	// ever do so, batches still lock rows in one order and cannot deadlock.
	b.Queue(`
WITH d AS (
    INSERT INTO bandit_decisions (workspace_id, decision_id, campaign_id, variant_id)
    SELECT * FROM unnest($1::text[], $4::text[], $2::text[], $3::text[])
    ON CONFLICT (workspace_id, decision_id) DO NOTHING
    RETURNING workspace_id, campaign_id, variant_id
)
INSERT INTO bandit_arm_counts AS a (workspace_id, campaign_id, variant_id, shard, exposures)
SELECT workspace_id, campaign_id, variant_id, (SELECT bandit_counter_shard()), count(*) FROM d
GROUP BY workspace_id, campaign_id, variant_id ORDER BY workspace_id, campaign_id, variant_id
ON CONFLICT (workspace_id, campaign_id, variant_id, shard) DO UPDATE SET exposures = a.exposures + EXCLUDED.exposures`,
		ws, campaigns, variants, decisions)
	return nil
}

// RecordConversion counts the conversion of decisionID, inside tx, in the
// transaction's shard (whose row may not have the exposure). It does
// so at most once per decision, and only when the decision was exposed
// with this campaign and variant; otherwise (a holdout, a decision never
// sent, a conversion seen again) it changes nothing and returns nil,
// because a goal event for such a decision is normal, not an error.
func (s *Store) RecordConversion(ctx context.Context, tx pgx.Tx, ws, campaignID, variantID, decisionID string) error {
	if err := checkIDs(ws, campaignID, variantID, decisionID); err != nil {
		return fmt.Errorf("record conversion: %w", err)
	}
	_, err := tx.Exec(ctx, `
WITH d AS (
    UPDATE bandit_decisions SET converted_at = now()
    WHERE workspace_id = $1 AND decision_id = $4 AND campaign_id = $2 AND variant_id = $3
      AND converted_at IS NULL
    RETURNING variant_id
)
INSERT INTO bandit_arm_counts AS a (workspace_id, campaign_id, variant_id, shard, conversions)
SELECT $1, $2, variant_id, (SELECT bandit_counter_shard()), 1 FROM d
ON CONFLICT (workspace_id, campaign_id, variant_id, shard) DO UPDATE SET conversions = a.conversions + 1`,
		ws, campaignID, variantID, decisionID)
	if err != nil {
		return fmt.Errorf("record conversion of decision %s: %w", decisionID, err)
	}
	return nil
}

// Prune forgets the per-decision rows of exposures older than before and
// returns how many it deleted. Call it with a time older than the longest
// attribution window: a conversion for a pruned decision is ignored, and an
// exposure of a pruned decision id would count again. The arms' totals are
// kept.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM bandit_decisions WHERE exposed_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune bandit decisions: %w", err)
	}
	return tag.RowsAffected(), nil
}
