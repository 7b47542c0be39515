// Package deliver is the deliver target: it consumes whisper.decisions,
// keeps a delivery ledger in PostgreSQL, waits durably for each decision's
// send time, renders the chosen content, sends it through a channel
// adapter (email, SMS, push, webhook) or stores it in the user's in-app
// inbox, and publishes every outcome back to whisper.events.
//
// # Exactly-once effect
//
// A delivery's id is its decision's id. The consumer inserts one ledger row
// per decision that sends (ON CONFLICT DO NOTHING), in one transaction per
// poll, and commits offsets only after that transaction: a decision
// delivered again by Kafka inserts nothing. Decisions that do not send are
// not recorded; a record that is not a decision, or has no usable decision
// or workspace id, is copied to whisper.decisions.dlq with the reason.
//
// # Durable scheduling
//
// A row is written in state scheduled with its send time. A scheduler loop
// in Run claims due rows with FOR UPDATE SKIP LOCKED, marking them sending
// with a claim token and a lease (claimed_until, ClaimLease). A replica that
// crashes leaves rows in sending whose lease expires; any replica then
// claims them again. The outcome of a send is written, with its attempt,
// only if the claim is still ours, in the transaction that ends the claim:
//
//	scheduled -> sending -> sent | failed | skipped | retrying -> sending ...
//
// So a restart neither loses a send (the row stays due) nor repeats one
// that was recorded. The one window left, between the provider accepting
// a message and the ledger write, is covered by the idempotency key
// (channel.Message.DeliveryID) on providers that support one (Twilio,
// webhook receivers via Whisper-Delivery-Id, SMTP's Message-ID for
// receivers that deduplicate on it). A graceful stop lets sends in flight
// finish and record (they run on a context detached from Run's, bounded by
// the channel timeout).
//
// # Retries and the DLQ
//
// A failed send is retried only when channel.Retryable says so, after an
// exponential backoff with full jitter (a random wait in [0, min(MaxBackoff,
// BaseBackoff·2^(n-1))]), or the provider's Retry-After when longer. After
// MaxAttempts attempts the delivery is failed and its decision copied to
// whisper.decisions.dlq with the reason in the whisper-dlq-reason header.
// A permanent error fails it at once ("Message Failed"; a bounce publishes
// "Message Bounced"). A render failure is retried like a retryable send
// (it may be a transient read of the profile or template): a template that
// can never render ends in the DLQ with the render error as reason.
// A user without a recipient for the channel (traits email, phone,
// push_token; the rendered url or the trait webhook_url for webhooks) is
// skipped with that reason; nothing is published. A user without a
// profile (yet: decide may act on a trigger event before profiles has
// applied it) renders with the user id alone, which is enough for in-app
// and for a webhook whose url is in the template.
//
// # Limits
//
// Each channel has a token bucket in Redis (one Lua script, so replicas
// share it): a send waits for a token. Each workspace has at most
// WorkspaceConcurrency sends in flight per replica (an in-process
// semaphore; with N replicas a workspace may have N times that).
//
// # Closed loop
//
// Outcomes are track events on whisper.events, keyed like ingest keys
// them (kafka.Key(workspace, user)), named "Message Delivered", "Message
// Failed", "Message Bounced", and, through the tracking handler, "Message
// Opened", "Message Clicked" and "Unsubscribed" (properties channel and
// topic, the shape decide's consent reads). Their message ids are
// deterministic (delivery id + ":delivered", ...), so a replay is
// deduplicated downstream. They and DLQ copies are written to an outbox
// table in the transaction that records the outcome and produced by a
// relay after it commits (and on every scheduler tick, for what a stopped
// process left), so an outcome is never recorded without its event. The
// trace of the decision record continues into the send and its events.
//
// # In-app
//
// An in-app delivery is a row in the inbox table, written in the
// transaction that marks it sent. StreamInApp reads the unread backlog from
// PostgreSQL and then follows an in-process hub woken after each commit;
// a stream on another replica than the one that delivered picks the
// message up by polling the inbox every InboxPoll.
//
// Browsers stream with an in-app token (InAppTokens, IssueInAppToken)
// rather than the workspace's API token: it is signed for one user of one
// workspace and expires within a day; the bearer middleware accepts it on
// InAppProcedures only.
package deliver

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/services/deliver/channel"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the schema of the deliver target.
var Migrations = postgres.Migrations{Name: "deliver", FS: mustSub(migrationFiles, "migrations")}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // dir is a literal that go:embed has checked
	}
	return sub
}

// Header names of dead-lettered decisions.
const (
	HeaderDLQReason = "whisper-dlq-reason"
	HeaderDLQSource = "whisper-dlq-source"
)

// Defaults.
const (
	DefaultGroup                = "whisper-deliver"
	DefaultMaxAttempts          = 5
	DefaultBaseBackoff          = time.Second
	DefaultMaxBackoff           = 5 * time.Minute
	DefaultClaimLease           = time.Minute
	DefaultPollInterval         = 200 * time.Millisecond
	DefaultWorkspaceConcurrency = 16
	DefaultConcurrency          = 64
	DefaultInboxPoll            = 2 * time.Second
	maxPollRecords              = 2000
	claimBatch                  = 200
)

// Event names of outcomes.
const (
	EventDelivered    = "Message Delivered"
	EventFailed       = "Message Failed"
	EventBounced      = "Message Bounced"
	EventOpened       = "Message Opened"
	EventClicked      = "Message Clicked"
	EventUnsubscribed = "Unsubscribed"
)

// ConsumerOpts are the kgo options the client of Run must be built with.
func ConsumerOpts(group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(kafka.TopicDecisions),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
	}
}

// Renderer renders a stored template for a user (content's *Renderer).
type Renderer interface {
	Render(ctx context.Context, req *contentv1.RenderRequest) (*contentv1.Message, error)
}

// Profiles reads a user's profile, for the recipient; it returns an error
// wrapping ErrNoProfile when the user has none.
type Profiles interface {
	Profile(ctx context.Context, ws, userID string) (*profilev1.Profile, error)
}

// Tracker makes the signed tracking links of emails (tracking's *Signer):
// the one-click unsubscribe URL, and HTML whose links go through the click
// redirect and that carries the open pixel.
type Tracker interface {
	UnsubscribeURL(ws, deliveryID, userID, channel, topic string) string
	RewriteHTML(html, ws, deliveryID, userID string) (string, error)
}

// Rate is a token bucket: PerSecond tokens a second, at most Burst saved.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Options are the dependencies and settings of the service.
type Options struct {
	Pool *pgxpool.Pool
	// Client consumes whisper.decisions (built with ConsumerOpts) and
	// produces to whisper.events and whisper.decisions.dlq.
	Client   *kgo.Client
	Renderer Renderer
	Profiles Profiles
	// Senders by channel; a decision for a channel without a sender fails
	// permanently ("no sender configured"). In-app needs none.
	Senders map[campaignv1.Channel]channel.Sender
	// Tracking, when set, gives emails their one-click unsubscribe URL,
	// tracked links and open pixel.
	Tracking Tracker
	// Redis holds the rate-limit buckets; nil means no rate limits.
	Redis *redis.Client
	// Rates by channel; a channel without one is not limited.
	Rates map[campaignv1.Channel]Rate

	MaxAttempts              int
	BaseBackoff, MaxBackoff  time.Duration
	ClaimLease, PollInterval time.Duration
	WorkspaceConcurrency     int
	// Concurrency is how many sends one replica makes at once.
	Concurrency int
	InboxPoll   time.Duration

	Registerer     prometheus.Registerer
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Now            func() time.Time
}
