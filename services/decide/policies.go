package decide

import (
	"context"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"

	"github.com/whisperhq/whisper/services/decide/bandit"
	"github.com/whisperhq/whisper/services/decide/contact"
	"github.com/whisperhq/whisper/services/decide/sendtime"
)

// The decide pipeline calls three policies, each in its own subpackage:
// contact (caps, gap, quiet hours, priority, in Redis), bandit (Thompson
// sampling, in PostgreSQL) and sendtime (activity histograms, in Redis).
// These are the small interfaces it needs of them, so tests can put fakes
// in their place; *contact.Policy, *bandit.Store and *sendtime.Optimizer
// satisfy them.

// contactPolicy reserves a message against the cross-campaign contact rules.
type contactPolicy interface {
	// ReserveBatch counts each message against the caps when its verdict
	// is Allowed, in the order of the requests; verdicts are in that order.
	ReserveBatch(ctx context.Context, rs []contact.Request) ([]contact.Verdict, error)
	// Release undoes a reservation whose decision was not persisted.
	Release(ctx context.Context, r contact.Request) error
}

// variantChooser is the bandit over a campaign's variants.
type variantChooser interface {
	Choose(ctx context.Context, c bandit.Campaign, rng *rand.Rand) (bandit.Choice, error)
	// RecordConversion rewards a variant, at most once per decision id.
	RecordConversion(ctx context.Context, tx pgx.Tx, ws, campaignID, variantID, decisionID string) error
}

// The sent variants are recorded with bandit.QueueExposures, in the
// statements that write their decisions: a variantChooser's state must be
// bandit's tables, in the decide target's database.

// sendTimer picks the hour a user is most active.
type sendTimer interface {
	// ObserveBatch records a poll's activity; idempotent.
	ObserveBatch(ctx context.Context, acts []sendtime.Activity) error
	// BestBatch picks, in one call, the send time of each query.
	BestBatch(ctx context.Context, qs []sendtime.Query) ([]sendtime.Pick, error)
}

var (
	_ contactPolicy  = (*contact.Policy)(nil)
	_ variantChooser = (*bandit.Store)(nil)
	_ sendTimer      = (*sendtime.Optimizer)(nil)
)

// Short names for the policies' types in this package.
type (
	contactRequest = contact.Request
	contactVerdict = contact.Verdict
	contactStep    = contact.Step
	banditCampaign = bandit.Campaign
	banditVariant  = bandit.Variant
	banditChoice   = bandit.Choice
	banditScore    = bandit.Score
	sendPick       = sendtime.Pick
)
