package targets

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/whisperhq/whisper/internal/auth"
	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1/deliveryv1connect"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/rpc"
	"github.com/whisperhq/whisper/internal/telemetry"
	"github.com/whisperhq/whisper/services/content"
	"github.com/whisperhq/whisper/services/deliver"
	"github.com/whisperhq/whisper/services/deliver/channel"
	"github.com/whisperhq/whisper/services/deliver/tracking"
	"github.com/whisperhq/whisper/services/profiles"
)

// The deliver target: the delivery ledger, scheduler, channel adapters and
// in-app inbox (DeliveryService).
const Deliver = "deliver"

// DeliverConfig configures the deliver target. A channel whose provider is
// not configured has no sender: its deliveries fail with "no sender
// configured" (and a Message Failed event), which is visible in the ledger.
type DeliverConfig struct {
	SMTPAddr, SMTPHost, SMTPUsername, SMTPPassword, SMTPFrom, SMTPTLS string

	WebhookSecret       string
	WebhookAllowPrivate bool

	TwilioBaseURL, TwilioAccountSID, TwilioAuthToken, TwilioFrom string

	FCMBaseURL, FCMProjectID, FCMAccessToken string

	// TrackingKey signs open, click and unsubscribe links; empty turns
	// tracking off (no /t/ routes, no List-Unsubscribe header).
	TrackingKey string
	// PublicURL is where browsers reach this process's /t/ routes.
	PublicURL string

	// ProviderTimeout bounds every provider call.
	ProviderTimeout time.Duration
	// RateLimits are "channel=per_second[:burst]" pairs, comma-separated.
	RateLimits           string
	MaxAttempts          int
	WorkspaceConcurrency int
}

// RegisterFlags binds c to fs.
func (c *DeliverConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.SMTPAddr, "deliver-smtp-addr", "", "SMTP server host:port for email; empty: no email sender")
	fs.StringVar(&c.SMTPHost, "deliver-smtp-host", "", "SMTP server name for TLS verification (default: the host of --deliver-smtp-addr)")
	fs.StringVar(&c.SMTPUsername, "deliver-smtp-username", "", "SMTP AUTH PLAIN user name; empty: no auth")
	fs.StringVar(&c.SMTPPassword, "deliver-smtp-password", "", "SMTP AUTH PLAIN password")
	fs.StringVar(&c.SMTPFrom, "deliver-smtp-from", "", "From address of emails")
	fs.StringVar(&c.SMTPTLS, "deliver-smtp-tls", "starttls", "SMTP transport security: starttls, tls or none")
	fs.StringVar(&c.WebhookSecret, "deliver-webhook-secret", "", "HMAC-SHA256 key webhook bodies are signed with (Whisper-Signature); empty: no webhook sender")
	fs.BoolVar(&c.WebhookAllowPrivate, "deliver-webhook-allow-private", false, "allow webhook destinations in loopback, private and link-local ranges (SSRF guard off; for development only)")
	fs.StringVar(&c.TwilioBaseURL, "deliver-twilio-base-url", "", "Twilio REST API root URL for SMS; empty: no SMS sender")
	fs.StringVar(&c.TwilioAccountSID, "deliver-twilio-account-sid", "", "Twilio account SID (AC...)")
	fs.StringVar(&c.TwilioAuthToken, "deliver-twilio-auth-token", "", "Twilio auth token")
	fs.StringVar(&c.TwilioFrom, "deliver-twilio-from", "", "Twilio sending number (E.164) or messaging service SID (MG...)")
	fs.StringVar(&c.FCMBaseURL, "deliver-fcm-base-url", "", "FCM HTTP v1 API root URL for push; empty: no push sender")
	fs.StringVar(&c.FCMProjectID, "deliver-fcm-project-id", "", "Firebase project id")
	fs.StringVar(&c.FCMAccessToken, "deliver-fcm-access-token", "", "OAuth 2.0 bearer token for FCM (refreshed outside whisper)")
	fs.StringVar(&c.TrackingKey, "deliver-tracking-key", "", "key (at least 32 bytes) that signs open, click and unsubscribe links; empty: no tracking and no one-click unsubscribe")
	fs.StringVar(&c.PublicURL, "deliver-public-url", "http://127.0.0.1:8080", "public base URL of this process's tracking routes (/t/...), as recipients' browsers reach it")
	fs.DurationVar(&c.ProviderTimeout, "deliver-provider-timeout", 10*time.Second, "how long one provider call may take")
	fs.StringVar(&c.RateLimits, "deliver-rate-limits", "", "per-channel token buckets shared by replicas, e.g. email=100,sms=10:20 (per second[:burst]); unlisted channels are not limited")
	fs.IntVar(&c.MaxAttempts, "deliver-max-attempts", deliver.DefaultMaxAttempts, "attempts of a retryable failure before the decision goes to whisper.decisions.dlq")
	fs.IntVar(&c.WorkspaceConcurrency, "deliver-workspace-concurrency", deliver.DefaultWorkspaceConcurrency, "sends of one workspace in flight at once, per replica")
}

var channelsByName = map[string]campaignv1.Channel{
	"email": campaignv1.Channel_CHANNEL_EMAIL, "sms": campaignv1.Channel_CHANNEL_SMS, "push": campaignv1.Channel_CHANNEL_PUSH,
	"webhook": campaignv1.Channel_CHANNEL_WEBHOOK,
}

// rates parses --deliver-rate-limits.
func (c DeliverConfig) rates() (map[campaignv1.Channel]deliver.Rate, error) {
	out := map[campaignv1.Channel]deliver.Rate{}
	if c.RateLimits == "" {
		return out, nil
	}
	for _, kv := range strings.Split(c.RateLimits, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		ch, known := channelsByName[name]
		if !ok || !known {
			return nil, fmt.Errorf("--deliver-rate-limits: %q is not channel=rate with channel one of email, sms, push, webhook", kv)
		}
		rate, burst, hasBurst := strings.Cut(v, ":")
		r := deliver.Rate{}
		var err error
		if r.PerSecond, err = strconv.ParseFloat(rate, 64); err != nil || r.PerSecond <= 0 {
			return nil, fmt.Errorf("--deliver-rate-limits: %s: rate %q must be a positive number", name, rate)
		}
		r.Burst = max(1, int(r.PerSecond))
		if hasBurst {
			if r.Burst, err = strconv.Atoi(burst); err != nil || r.Burst < 1 {
				return nil, fmt.Errorf("--deliver-rate-limits: %s: burst %q must be a positive integer", name, burst)
			}
		}
		out[ch] = r
	}
	return out, nil
}

// senders builds a sender for every configured provider; each constructor
// validates its settings, and the error names the flags.
func (c DeliverConfig) senders() (map[campaignv1.Channel]channel.Sender, error) {
	out := map[campaignv1.Channel]channel.Sender{}
	if c.SMTPAddr != "" {
		s, err := channel.NewSMTP(channel.SMTPConfig{Addr: c.SMTPAddr, Host: c.SMTPHost, Username: c.SMTPUsername, Password: c.SMTPPassword,
			From: c.SMTPFrom, TLS: c.SMTPTLS, Timeout: c.ProviderTimeout})
		if err != nil {
			return nil, fmt.Errorf("--deliver-smtp-*: %w", err)
		}
		out[campaignv1.Channel_CHANNEL_EMAIL] = s
	}
	if c.WebhookSecret != "" {
		s, err := channel.NewWebhook(channel.WebhookConfig{Secret: []byte(c.WebhookSecret), AllowPrivate: c.WebhookAllowPrivate, Timeout: c.ProviderTimeout})
		if err != nil {
			return nil, fmt.Errorf("--deliver-webhook-*: %w", err)
		}
		out[campaignv1.Channel_CHANNEL_WEBHOOK] = s
	}
	if c.TwilioBaseURL != "" {
		s, err := channel.NewTwilio(channel.TwilioConfig{BaseURL: c.TwilioBaseURL, AccountSID: c.TwilioAccountSID, AuthToken: c.TwilioAuthToken,
			From: c.TwilioFrom, Timeout: c.ProviderTimeout})
		if err != nil {
			return nil, fmt.Errorf("--deliver-twilio-*: %w", err)
		}
		out[campaignv1.Channel_CHANNEL_SMS] = s
	}
	if c.FCMBaseURL != "" {
		token := c.FCMAccessToken
		s, err := channel.NewFCM(channel.FCMConfig{BaseURL: c.FCMBaseURL, ProjectID: c.FCMProjectID, Timeout: c.ProviderTimeout,
			TokenSource: func(context.Context) (string, error) { return token, nil }})
		if err != nil {
			return nil, fmt.Errorf("--deliver-fcm-*: %w", err)
		}
		out[campaignv1.Channel_CHANNEL_PUSH] = s
	}
	return out, nil
}

// Validate reports every deliver setting that cannot work, naming its flag.
func (c DeliverConfig) Validate() error {
	var errs []error
	if _, err := c.rates(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.senders(); err != nil {
		errs = append(errs, err)
	}
	if c.TrackingKey != "" && len(c.TrackingKey) < 32 {
		errs = append(errs, fmt.Errorf("--deliver-tracking-key: must be at least 32 bytes, got %d", len(c.TrackingKey)))
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--deliver-public-url: %q is not an http(s) URL", c.PublicURL))
	}
	if c.ProviderTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--deliver-provider-timeout: must be positive, got %v", c.ProviderTimeout))
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		errs = append(errs, fmt.Errorf("--deliver-max-attempts: must be 1-100, got %d", c.MaxAttempts))
	}
	if c.WorkspaceConcurrency < 1 {
		errs = append(errs, fmt.Errorf("--deliver-workspace-concurrency: must be at least 1, got %d", c.WorkspaceConcurrency))
	}
	return errors.Join(errs...)
}

// startDeliver builds the deliver service and mounts DeliveryService; the
// caller runs the returned service as a worker and, once it has stopped,
// calls the returned func to close its Kafka and Redis clients. The
// returned handler serves the /t/ tracking routes (nil when tracking is
// off); the caller mounts it.
func startDeliver(ctx context.Context, cfg Config, pool *pgxpool.Pool, srv *rpc.Server, reg prometheus.Registerer,
	authenticator *auth.Authenticator, logger *slog.Logger, handlerOpts []connect.HandlerOption,
) (*deliver.Service, http.Handler, func(), error) {
	for _, m := range []postgres.Migrations{deliver.Migrations, content.Migrations, profiles.Migrations} {
		if err := postgres.Migrate(ctx, pool, m, logger); err != nil {
			return nil, nil, nil, err
		}
	}
	logger = logger.With("target", Deliver)
	senders, err := cfg.Deliver.senders()
	if err != nil {
		return nil, nil, nil, err
	}
	rates, err := cfg.Deliver.rates()
	if err != nil {
		return nil, nil, nil, err
	}
	lag, err := kafka.NewConsumerLag(reg)
	if err != nil {
		return nil, nil, nil, err
	}
	opts := append(deliver.ConsumerOpts(deliver.DefaultGroup), kafka.TraceContext())
	client, err := kafka.NewClient(cfg.Kafka, Deliver, reg, append(opts, lag.ForgetRevoked(deliver.DefaultGroup)...)...)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := kafka.EnsureTopics(ctx, client, cfg.Kafka, kafka.TopicDecisions, kafka.TopicDecisionsDLQ, kafka.TopicEvents); err != nil {
		client.Close()
		return nil, nil, nil, fmt.Errorf("--kafka-brokers %s: %w", cfg.Kafka.Brokers.String(), err)
	}
	srv.AddCheck("kafka-deliver", client.Ping)
	rdbOpts, _ := redis.ParseURL(cfg.RedisURL)
	rdb := redis.NewClient(rdbOpts)
	reg.MustRegister(telemetry.NewRedisPoolCollector(Deliver, rdb))
	srv.AddCheck("redis-deliver", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	profileHandler := profiles.NewHandler(profiles.NewStore(pool), logger)
	renderer := content.New(content.Options{Store: content.NewStore(pool), Profiles: profileReader{profileHandler}, Logger: logger})
	var signer *tracking.Signer
	var tracker deliver.Tracker
	if cfg.Deliver.TrackingKey != "" {
		signer = tracking.NewSigner([]byte(cfg.Deliver.TrackingKey), cfg.Deliver.PublicURL)
		tracker = signer
	}
	svc := deliver.New(deliver.Options{
		Pool: pool, Client: client, Renderer: renderer, Profiles: deliverProfiles{profileReader{profileHandler}},
		Senders: senders, Redis: rdb, Rates: rates, Tracking: tracker,
		MaxAttempts: cfg.Deliver.MaxAttempts, WorkspaceConcurrency: cfg.Deliver.WorkspaceConcurrency,
		Registerer: reg, Logger: logger, TracerProvider: cfg.TracerProvider,
	})
	path, h := deliver.NewHandler(svc, logger).Routes(handlerOpts...)
	srv.HandleService(deliveryv1connect.DeliveryServiceName, path, authn.NewMiddleware(authenticator.AuthenticateBearer, handlerOpts...).Wrap(h))
	closeAll := func() {
		client.Close()
		rdb.Close()
	}
	var trackingHandler http.Handler
	if signer != nil {
		trackingHandler = tracking.NewHandler(signer, trackingPublisher{svc}, logger)
	}
	return svc, trackingHandler, closeAll, nil
}

// deliverProfiles reads profiles for deliver, which names a missing one
// deliver.ErrNoProfile.
type deliverProfiles struct{ r profileReader }

func (p deliverProfiles) Profile(ctx context.Context, ws, userID string) (*profilev1.Profile, error) {
	pr, err := p.r.Profile(ctx, ws, userID)
	if errors.Is(err, content.ErrProfileNotFound) {
		return nil, fmt.Errorf("%w: %w", deliver.ErrNoProfile, err)
	}
	return pr, err
}

// trackingPublisher publishes what the tracking routes observe through
// deliver's outbox, as events on whisper.events.
type trackingPublisher struct{ s *deliver.Service }

func (p trackingPublisher) Publish(ctx context.Context, o tracking.Outcome) error {
	return p.s.PublishOutcome(ctx, deliver.Outcome{Kind: o.Kind, WorkspaceID: o.WorkspaceID, DeliveryID: o.DeliveryID, UserID: o.UserID,
		Channel: o.Channel, Topic: o.Topic, URL: o.URL, At: o.At})
}
