package targets

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/cors"

	"github.com/whisperhq/whisper/internal/auth"
	"github.com/whisperhq/whisper/internal/config"
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
	// FCMCredentialsFile is a service account key (JSON): access tokens
	// are then obtained and refreshed from it, not given.
	FCMCredentialsFile string

	// TrackingKey signs open, click and unsubscribe links; empty turns
	// tracking off (no /t/ routes, no List-Unsubscribe header).
	TrackingKey string
	// PublicURL is where browsers reach this process's /t/ routes.
	PublicURL string
	// InAppOrigins are the web origins whose pages may call
	// DeliveryService from the browser (CORS); none: no CORS headers.
	InAppOrigins config.StringList

	// ProviderTimeout bounds every provider call.
	ProviderTimeout time.Duration
	// RateLimits are "channel=per_second[:burst]" pairs, comma-separated.
	RateLimits           string
	MaxAttempts          int
	WorkspaceConcurrency int
	// ClaimLease is how long a replica owns a claimed delivery: after a
	// crash its in-flight sends are taken over when their leases expire.
	ClaimLease time.Duration
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
	fs.StringVar(&c.FCMBaseURL, "deliver-fcm-base-url", "", "FCM HTTP v1 API root URL for push (default with --deliver-fcm-credentials-file: "+fcmProductionURL+"); empty: no push sender")
	fs.StringVar(&c.FCMProjectID, "deliver-fcm-project-id", "", "Firebase project id (default: the credentials file's project_id)")
	fs.StringVar(&c.FCMCredentialsFile, "deliver-fcm-credentials-file", "", "Google service account key (JSON) whose OAuth 2.0 access tokens (JWT bearer grant at its token_uri) authorize FCM sends, refreshed before they expire")
	fs.StringVar(&c.FCMAccessToken, "deliver-fcm-access-token", "", "a fixed OAuth 2.0 bearer token for FCM instead of --deliver-fcm-credentials-file (tests and development: it is never refreshed)")
	fs.StringVar(&c.TrackingKey, "deliver-tracking-key", "", "key (at least 32 bytes) that signs open, click and unsubscribe links and in-app tokens; empty: no tracking, no one-click unsubscribe, no in-app tokens")
	fs.Var(&c.InAppOrigins, "deliver-inapp-origins", "comma-separated origins (scheme://host[:port], or * for any) whose pages may call DeliveryService from a browser (CORS); empty: none")
	fs.StringVar(&c.PublicURL, "deliver-public-url", "http://127.0.0.1:8080", "public base URL of this process's tracking routes (/t/...), as recipients' browsers reach it")
	fs.DurationVar(&c.ProviderTimeout, "deliver-provider-timeout", 10*time.Second, "how long one provider call may take")
	fs.StringVar(&c.RateLimits, "deliver-rate-limits", "", "per-channel token buckets shared by replicas, e.g. email=100,sms=10:20 (per second[:burst]); unlisted channels are not limited")
	fs.IntVar(&c.MaxAttempts, "deliver-max-attempts", deliver.DefaultMaxAttempts, "attempts of a retryable failure before the decision goes to whisper.decisions.dlq")
	fs.IntVar(&c.WorkspaceConcurrency, "deliver-workspace-concurrency", deliver.DefaultWorkspaceConcurrency, "sends of one workspace in flight at once, per replica")
	fs.DurationVar(&c.ClaimLease, "deliver-claim-lease", deliver.DefaultClaimLease, "how long a replica owns a claimed delivery; a crashed replica's sends are retried by another after it (an attempt gets 3/4 of it: keep it above --deliver-provider-timeout)")
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
	if c.FCMBaseURL != "" || c.FCMCredentialsFile != "" {
		s, err := c.fcm()
		if err != nil {
			return nil, err
		}
		out[campaignv1.Channel_CHANNEL_PUSH] = s
	}
	return out, nil
}

const fcmProductionURL = "https://fcm.googleapis.com"

// fcm builds the push sender: tokens from the service account key, or the
// fixed token.
func (c DeliverConfig) fcm() (*channel.FCM, error) {
	cfg := channel.FCMConfig{BaseURL: c.FCMBaseURL, ProjectID: c.FCMProjectID, Timeout: c.ProviderTimeout}
	switch {
	case c.FCMCredentialsFile != "" && c.FCMAccessToken != "":
		return nil, errors.New("--deliver-fcm-credentials-file and --deliver-fcm-access-token: give one, not both")
	case c.FCMCredentialsFile != "":
		key, err := os.ReadFile(c.FCMCredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("--deliver-fcm-credentials-file: %w", err)
		}
		tokens, err := channel.NewServiceAccountTokens(key, &http.Client{Timeout: c.ProviderTimeout})
		if err != nil {
			return nil, fmt.Errorf("--deliver-fcm-credentials-file %s: %w", c.FCMCredentialsFile, err)
		}
		cfg.BaseURL = cmp.Or(cfg.BaseURL, fcmProductionURL)
		cfg.ProjectID = cmp.Or(cfg.ProjectID, tokens.ProjectID())
		cfg.TokenSource, cfg.InvalidateToken = tokens.Token, tokens.Invalidate
	default:
		token := c.FCMAccessToken
		cfg.TokenSource = func(context.Context) (string, error) { return token, nil }
	}
	s, err := channel.NewFCM(cfg)
	if err != nil {
		return nil, fmt.Errorf("--deliver-fcm-*: %w", err)
	}
	return s, nil
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
	for _, o := range c.InAppOrigins {
		if err := checkOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("--deliver-inapp-origins: %q %w", o, err))
		}
	}
	if c.ProviderTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--deliver-provider-timeout: must be positive, got %v", c.ProviderTimeout))
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		errs = append(errs, fmt.Errorf("--deliver-max-attempts: must be 1-100, got %d", c.MaxAttempts))
	}
	if c.ClaimLease*3/4 <= c.ProviderTimeout {
		errs = append(errs, fmt.Errorf("--deliver-claim-lease: %v leaves an attempt 3/4 of it, not more than --deliver-provider-timeout %v", c.ClaimLease, c.ProviderTimeout))
	}
	if c.WorkspaceConcurrency < 1 {
		errs = append(errs, fmt.Errorf("--deliver-workspace-concurrency: must be at least 1, got %d", c.WorkspaceConcurrency))
	}
	return errors.Join(errs...)
}

// checkOrigin accepts what a browser sends as Origin: scheme, host and
// port, nothing more; or "*".
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errors.New("is not an http(s) origin such as https://app.example.com")
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#"):
		return errors.New("is not an origin: give scheme://host[:port] only, without path or trailing slash")
	case o != strings.ToLower(o):
		// Browsers send origins in lower case; a mixed-case entry would
		// never match.
		return errors.New("must be lower case")
	}
	return nil
}

// withCORS lets pages on origins call h from a browser: it answers
// preflights and adds the CORS headers Connect, gRPC-Web and the bearer
// token need. No origins: h unchanged.
func withCORS(origins []string, h http.Handler) http.Handler {
	if len(origins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		ExposedHeaders: connectcors.ExposedHeaders(),
		// Bearer tokens, not cookies: no credentials mode.
		MaxAge: int((2 * time.Hour).Seconds()),
	}).Handler(h)
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
		MaxAttempts: cfg.Deliver.MaxAttempts, WorkspaceConcurrency: cfg.Deliver.WorkspaceConcurrency, ClaimLease: cfg.Deliver.ClaimLease,
		Registerer: reg, Logger: logger, TracerProvider: cfg.TracerProvider,
	})
	handler := deliver.NewHandler(svc, logger)
	authenticate := authenticator.AuthenticateBearer
	if cfg.Deliver.TrackingKey != "" {
		tokens, err := deliver.NewInAppTokens([]byte(cfg.Deliver.TrackingKey))
		if err != nil {
			client.Close()
			rdb.Close()
			return nil, nil, nil, fmt.Errorf("--deliver-tracking-key: %w", err)
		}
		handler.WithInAppTokens(tokens)
		authenticate = authenticator.AuthenticateBearerOrUser(tokens, deliver.InAppProcedures...)
	}
	path, h := handler.Routes(handlerOpts...)
	// CORS outside authn: a preflight carries no credentials.
	srv.HandleService(deliveryv1connect.DeliveryServiceName, path,
		withCORS(cfg.Deliver.InAppOrigins, authn.NewMiddleware(authenticate, handlerOpts...).Wrap(h)))
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
