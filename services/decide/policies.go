package decide

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// The decide pipeline calls three policies, each in its own subpackage:
// contact (caps, gap, quiet hours, priority, in Redis), bandit (Thompson
// sampling, in PostgreSQL) and sendtime (activity histograms, in Redis).
// These are the small interfaces it needs of them; the request and answer
// types mirror theirs field for field.

// contactPolicy reserves a message against the cross-campaign contact rules.
type contactPolicy interface {
	// Reserve counts the message against the caps when Allowed.
	Reserve(ctx context.Context, r contactRequest) (contactVerdict, error)
	// Release undoes a reservation whose decision was not persisted.
	Release(ctx context.Context, r contactRequest) error
}

type contactRequest struct {
	WorkspaceID, UserID, CampaignID, DecisionID, Channel string
	Priority                                             int
	Transactional                                        bool
	// IANA zone from the profile trait "timezone"; empty means UTC.
	Timezone string
	// The proposed send time.
	SendAt time.Time
}

type contactVerdict struct {
	Allowed bool
	// May be later than the proposal (quiet hours).
	SendAt time.Time
	// The rule that capped or deferred; empty when none.
	Rule  string
	Steps []contactStep
}

type contactStep struct {
	Name, Result string
	Inputs       map[string]string
}

// variantChooser is the bandit over a campaign's variants.
type variantChooser interface {
	Choose(ctx context.Context, c banditCampaign, rng *rand.Rand) (banditChoice, error)
	// RecordExposure counts a sent variant, once per decision id.
	RecordExposure(ctx context.Context, tx pgx.Tx, ws, campaignID, variantID, decisionID string) error
	// RecordConversion rewards a variant, at most once per decision id.
	RecordConversion(ctx context.Context, tx pgx.Tx, ws, campaignID, variantID, decisionID string) error
}

type banditCampaign struct {
	WorkspaceID, CampaignID string
	Variants                []banditVariant
	HoldoutShare            float64
}

type banditVariant struct {
	ID     string
	Weight float64
}

type banditChoice struct {
	// Empty when Holdout.
	VariantID string
	Holdout   bool
	Scores    []banditScore
}

type banditScore struct {
	VariantID           string
	Alpha, Beta, Sample float64
}

// sendTimer picks the hour a user is most active.
type sendTimer interface {
	// Observe records activity; idempotent.
	Observe(ctx context.Context, ws, userID string, at time.Time) error
	Best(ctx context.Context, ws, userID string, now time.Time, maxDelay time.Duration, tz string) (sendPick, error)
}

type sendPick struct {
	At        time.Time
	Hour      int
	Reason    string
	Histogram [24]int
}
