// Package targets assembles the service targets named by --target into one
// process, in the manner of Loki and Mimir: one image, every service a
// target, "all" for a single machine.
//
// Every process serves the WorkspaceService (it needs only PostgreSQL, which
// every target uses to authenticate callers), /metrics, /healthz and /readyz
// on the one HTTP port; each target adds its own APIs and workers.
package targets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/whisperhq/whisper/internal/auth"
	"github.com/whisperhq/whisper/internal/config"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
	"github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1/ingestv1connect"
	"github.com/whisperhq/whisper/internal/gen/whisper/profile/v1/profilev1connect"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/rpc"
	"github.com/whisperhq/whisper/internal/telemetry"
	"github.com/whisperhq/whisper/internal/tracing"
	"github.com/whisperhq/whisper/internal/workspace"
	"github.com/whisperhq/whisper/services/content"
	"github.com/whisperhq/whisper/services/decide"
	"github.com/whisperhq/whisper/services/decide/bandit"
	"github.com/whisperhq/whisper/services/decide/contact"
	"github.com/whisperhq/whisper/services/decide/sendtime"
	"github.com/whisperhq/whisper/services/ingest"
	"github.com/whisperhq/whisper/services/profiles"
)

// Target names; Content and Deliver are beside their wiring.
const (
	All      = "all"
	Ingest   = "ingest"
	Profiles = "profiles"
	Decide   = "decide"
)

// The content target: templates and rendering (ContentService).
const Content = "content"

// Available lists the targets this build can run, in start order.
var Available = []string{Ingest, Profiles, Decide, Content, Deliver}

// compressMinBytes is the smallest Connect response that is compressed.
const compressMinBytes = 8 << 10

// Config is the configuration of a whisper process.
type Config struct {
	Targets     config.StringList
	HTTP        rpc.Config
	Kafka       kafka.Config
	DatabaseURL string
	RedisURL    string
	AdminToken  string
	// IngestAckTimeout bounds how long an ingest request waits for the
	// broker before answering 503.
	IngestAckTimeout time.Duration
	// FlushTimeout bounds the final flush of producers at shutdown.
	FlushTimeout time.Duration
	// TracerProvider traces RPCs, HTTP routes and Kafka hand-offs; nil
	// (tracing off) adds no instrumentation. Set by the process (see
	// internal/tracing), not a flag.
	TracerProvider trace.TracerProvider

	// ContentDrafts configures the content target's drafting provider.
	ContentDrafts content.DraftsConfig
	// DecideWaitInterval is how often the decide target looks for waits
	// that are due.
	DecideWaitInterval time.Duration
	// DecideContactRules is a JSON file of contact rules (see
	// contactRulesFile); empty means contact.DefaultRules.
	DecideContactRules string
	// Deliver configures the deliver target's providers and limits.
	Deliver DeliverConfig
}

// RegisterFlags binds c to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Targets = config.StringList{All}
	fs.Var(&c.Targets, "target", "comma-separated targets to run: all, or any of "+strings.Join(Available, ", "))
	c.HTTP.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (postgres://user:pass@host:5432/db)")
	fs.StringVar(&c.RedisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis URL")
	fs.StringVar(&c.AdminToken, "admin-token", "", "bearer token with rights over every workspace (at least 24 characters); empty disables it")
	fs.DurationVar(&c.IngestAckTimeout, "ingest-ack-timeout", 10*time.Second, "how long an ingest request waits for the broker's acknowledgement before answering 503")
	fs.DurationVar(&c.FlushTimeout, "flush-timeout", 10*time.Second, "how long producers may take to flush at shutdown")
	c.ContentDrafts.RegisterFlags(fs)
	fs.DurationVar(&c.DecideWaitInterval, "decide-wait-interval", time.Second, "how often the decide target looks for campaign waits that are due (the lateness of a wait's end)")
	c.Deliver.RegisterFlags(fs)
	fs.StringVar(&c.DecideContactRules, "decide-contact-rules", "", "JSON file of the decide target's contact rules (caps, quiet hours, minimum gap, priority headroom), default and per workspace; empty: the built-in defaults")
}

// Validate reports every setting that cannot work, naming its flag.
func (c Config) Validate() error {
	var errs []error
	if _, err := c.targets(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HTTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("--database-url: required (or WHISPER_DATABASE_URL)"))
	}
	if _, err := redis.ParseURL(c.RedisURL); err != nil {
		errs = append(errs, fmt.Errorf("--redis-url: %w", err))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 24 {
		errs = append(errs, fmt.Errorf("--admin-token: must be at least 24 characters, got %d", len(c.AdminToken)))
	}
	if c.IngestAckTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--ingest-ack-timeout: must be positive, got %v", c.IngestAckTimeout))
	}
	if c.FlushTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--flush-timeout: must be positive, got %v", c.FlushTimeout))
	}
	if c.DecideWaitInterval < 10*time.Millisecond || c.DecideWaitInterval > time.Minute {
		errs = append(errs, fmt.Errorf("--decide-wait-interval: must be 10ms-1m, got %v", c.DecideWaitInterval))
	}
	if _, err := c.contactConfig(); err != nil {
		errs = append(errs, err)
	}
	if err := c.ContentDrafts.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Deliver.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// contactRulesFile is the shape of --decide-contact-rules: JSON with
// snake_case names and durations as Go duration strings, e.g.
//
//	{"rules": {"channels": {"email": {"per_day": 2, "per_week": 7, "quiet_hours": true, "min_gap": true}},
//	           "other_channels": {"per_day": 2, "per_week": 7},
//	           "quiet_start": "21:00", "quiet_end": "08:00", "min_gap": "1h",
//	           "priority_threshold": 80, "priority_headroom": 1},
//	 "workspaces": {"<workspace id>": {...the same as rules...}}}
//
// A workspace's rules replace the default rules whole; absent rules are
// contact.DefaultRules.
type contactRulesFile struct {
	Rules      *contactRules           `json:"rules"`
	Workspaces map[string]contactRules `json:"workspaces"`
}

type contactRules struct {
	Channels          map[string]contactChannelRules `json:"channels"`
	OtherChannels     contactChannelRules            `json:"other_channels"`
	QuietStart        string                         `json:"quiet_start"`
	QuietEnd          string                         `json:"quiet_end"`
	MinGap            string                         `json:"min_gap"`
	PriorityThreshold int                            `json:"priority_threshold"`
	PriorityHeadroom  int                            `json:"priority_headroom"`
}

type contactChannelRules struct {
	PerDay     int  `json:"per_day"`
	PerWeek    int  `json:"per_week"`
	QuietHours bool `json:"quiet_hours"`
	MinGap     bool `json:"min_gap"`
}

func (r contactRules) rules(field string) (contact.Rules, error) {
	out := contact.Rules{
		Channels:   map[string]contact.ChannelRules{},
		QuietStart: r.QuietStart, QuietEnd: r.QuietEnd,
		PriorityThreshold: r.PriorityThreshold, PriorityHeadroom: r.PriorityHeadroom,
		OtherChannels: contact.ChannelRules(r.OtherChannels),
	}
	for ch, cr := range r.Channels {
		out.Channels[ch] = contact.ChannelRules(cr)
	}
	if r.MinGap != "" {
		d, err := time.ParseDuration(r.MinGap)
		if err != nil {
			return contact.Rules{}, fmt.Errorf("%s.min_gap: %w", field, err)
		}
		out.MinGap = d
	}
	return out, nil
}

// contactConfig reads --decide-contact-rules; the policy validates the
// rules themselves when it is built.
func (c Config) contactConfig() (contact.Config, error) {
	if c.DecideContactRules == "" {
		return contact.Config{}, nil
	}
	bad := func(err error) (contact.Config, error) {
		return contact.Config{}, fmt.Errorf("--decide-contact-rules %s: %w", c.DecideContactRules, err)
	}
	b, err := os.ReadFile(c.DecideContactRules)
	if err != nil {
		return bad(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f contactRulesFile
	if err := dec.Decode(&f); err != nil {
		return bad(err)
	}
	var cfg contact.Config
	if f.Rules != nil {
		if cfg.Rules, err = f.Rules.rules("rules"); err != nil {
			return bad(err)
		}
	}
	for ws, r := range f.Workspaces {
		rules, err := r.rules("workspaces." + ws)
		if err != nil {
			return bad(err)
		}
		if cfg.Workspaces == nil {
			cfg.Workspaces = map[string]contact.Rules{}
		}
		cfg.Workspaces[ws] = rules
	}
	return cfg, nil
}

// targets expands "all" and checks every name.
func (c Config) targets() ([]string, error) {
	if len(c.Targets) == 0 {
		return nil, errors.New("--target: name at least one target")
	}
	var out []string
	for _, t := range c.Targets {
		switch {
		case t == All:
			out = append(out, Available...)
		case slices.Contains(Available, t):
			out = append(out, t)
		default:
			return nil, fmt.Errorf("--target: unknown target %q; this build has: all, %s", t, strings.Join(Available, ", "))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Options are the seams of Run for tests and for `whisper dev`.
type Options struct {
	// Listener, when set, is served instead of listening on --http-addr.
	Listener net.Listener
	// Ready, when set, is called once everything is started and the port
	// accepts requests.
	Ready func(addr string)
}

// Run starts the configured targets and serves until ctx ends. Then it stops
// accepting requests, lets in-flight ones finish, flushes the producers and
// returns nil on a clean stop.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, opts Options) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	targets, _ := cfg.targets()
	logger.InfoContext(ctx, "starting", "targets", targets)

	reg := telemetry.NewRegistry()
	red := telemetry.NewRED(reg)
	tp := cfg.TracerProvider
	handlerOpts := []connect.HandlerOption{
		connect.WithInterceptors(append(tracing.Interceptors(tp), red.Interceptor())...),
		// Most answers are a message of a kilobyte or two: gzipping each
		// (connect's default for a client that accepts it) cost more CPU
		// in the Decide benchmark than deciding, to save a kilobyte.
		// Pages and streams of larger messages are still compressed.
		connect.WithCompressMinBytes(compressMinBytes),
	}

	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("--database-url: %w", err)
	}
	defer pool.Close()
	reg.MustRegister(telemetry.NewPgxPoolCollector("main", pool))
	if err := postgres.Migrate(ctx, pool, workspace.Migrations, logger); err != nil {
		return err
	}
	store := workspace.NewStore(pool)
	authenticator := auth.NewAuthenticator(store, cfg.AdminToken, 0, logger)

	srv := rpc.NewServer(cfg.HTTP, logger, reg)
	srv.AddCheck("postgres", pool.Ping)
	path, h := workspacev1connect.NewWorkspaceServiceHandler(workspace.NewHandler(store, authenticator, logger), handlerOpts...)
	srv.HandleService(workspacev1connect.WorkspaceServiceName, path, authn.NewMiddleware(authenticator.AuthenticateBearer, handlerOpts...).Wrap(h))

	var producers []*kgo.Client
	defer func() {
		for _, p := range producers {
			p.Close()
		}
	}()
	var rdb *redis.Client
	if slices.Contains(targets, Ingest) || slices.Contains(targets, Decide) {
		rdbOpts, _ := redis.ParseURL(cfg.RedisURL)
		rdb = redis.NewClient(rdbOpts)
		defer rdb.Close()
		reg.MustRegister(telemetry.NewRedisPoolCollector("main", rdb))
		srv.AddCheck("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	}
	if slices.Contains(targets, Ingest) {
		producer, err := kafka.NewClient(cfg.Kafka, Ingest, reg)
		if err != nil {
			return err
		}
		producers = append(producers, producer)
		if err := kafka.EnsureTopics(ctx, producer, cfg.Kafka, kafka.TopicEvents, kafka.TopicEventsDLQ); err != nil {
			return fmt.Errorf("--kafka-brokers %s: %w", cfg.Kafka.Brokers.String(), err)
		}
		srv.AddCheck("kafka", producer.Ping)

		svc := ingest.New(ingest.Options{
			Producer: producer, Redis: rdb, WriteKeys: authenticator,
			Registerer: reg, Logger: logger.With("target", Ingest), AckTimeout: cfg.IngestAckTimeout,
			TracerProvider: tp,
		})
		for pattern, h := range svc.Routes() {
			srv.Handle(pattern, tracing.Route(tp, pattern, red.Route(pattern, h)))
		}
		path, h := svc.ConnectHandler(handlerOpts...)
		srv.HandleService(ingestv1connect.IngestServiceName, path, h)
	}

	// Workers (consumers) run for as long as the server: they are stopped
	// and waited for once it stops, or on any early return, before the
	// clients they use are closed.
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	var workers sync.WaitGroup

	if slices.Contains(targets, Profiles) {
		if err := postgres.Migrate(ctx, pool, profiles.Migrations, logger); err != nil {
			return err
		}
		lag, err := kafka.NewConsumerLag(reg)
		if err != nil {
			return err
		}
		consumer, err := kafka.NewClient(cfg.Kafka, Profiles, reg, append(profiles.ConsumerOpts(profiles.DefaultGroup), lag.ForgetRevoked(profiles.DefaultGroup)...)...)
		if err != nil {
			return err
		}
		defer consumer.Close()
		if err := kafka.EnsureTopics(ctx, consumer, cfg.Kafka, kafka.TopicEvents, kafka.TopicEventsDLQ, kafka.TopicProfiles); err != nil {
			return fmt.Errorf("--kafka-brokers %s: %w", cfg.Kafka.Brokers.String(), err)
		}
		srv.AddCheck("kafka-profiles", consumer.Ping)
		// Rolling activity is mirrored to Redis for decide's hot path.
		rdbOpts, _ := redis.ParseURL(cfg.RedisURL)
		profilesRedis := redis.NewClient(rdbOpts)
		defer profilesRedis.Close()
		reg.MustRegister(telemetry.NewRedisPoolCollector(Profiles, profilesRedis))
		srv.AddCheck("redis-profiles", func(ctx context.Context) error { return profilesRedis.Ping(ctx).Err() })

		// The profiles target has a pool of its own, tuned for its
		// statements (see profiles.TunePool).
		poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
		if err != nil {
			return fmt.Errorf("--database-url: %w", err)
		}
		profiles.TunePool(poolCfg)
		profilesPool, err := pgxpool.NewWithConfig(ctx, poolCfg)
		if err != nil {
			return fmt.Errorf("--database-url: %w", err)
		}
		defer profilesPool.Close()
		reg.MustRegister(telemetry.NewPgxPoolCollector(Profiles, profilesPool))
		profileStore := profiles.NewStore(profilesPool)
		svc := profiles.New(profiles.Options{
			Store: profileStore, Client: consumer, Redis: profilesRedis, Registerer: reg, Logger: logger.With("target", Profiles),
			TracerProvider: tp,
		})
		path, h := profiles.NewHandler(profileStore, logger.With("target", Profiles)).Routes(handlerOpts...)
		srv.HandleService(profilev1connect.ProfileServiceName, path, authn.NewMiddleware(authenticator.AuthenticateBearer, handlerOpts...).Wrap(h))
		workers.Go(func() {
			if err := svc.Run(workCtx); err != nil {
				logger.Error("profiles consumer stopped", "err", err)
			}
		})
		defer func() { stopWork(); workers.Wait() }() // before consumer.Close
	}

	if slices.Contains(targets, Content) {
		if err := startContent(ctx, cfg, pool, srv, reg, authenticator, logger, handlerOpts); err != nil {
			return err
		}
	}

	if slices.Contains(targets, Decide) {
		for _, m := range []postgres.Migrations{decide.Migrations, bandit.Migrations} {
			if err := postgres.Migrate(ctx, pool, m, logger); err != nil {
				return err
			}
		}
		// The bandit reads while a decision's transaction holds a
		// connection of the main pool: it gets its own (see
		// decide.Options.Bandit).
		banditPool, err := postgres.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return fmt.Errorf("--database-url: %w", err)
		}
		defer banditPool.Close()
		reg.MustRegister(telemetry.NewPgxPoolCollector("bandit", banditPool))
		lag, err := kafka.NewConsumerLag(reg)
		if err != nil {
			return err
		}
		client, err := kafka.NewClient(cfg.Kafka, Decide, reg, append(decide.ConsumerOpts(decide.DefaultGroup), lag.ForgetRevoked(decide.DefaultGroup)...)...)
		if err != nil {
			return err
		}
		producers = append(producers, client) // closed after the workers stop
		if err := kafka.EnsureTopics(ctx, client, cfg.Kafka, kafka.TopicEvents, kafka.TopicProfiles, kafka.TopicDecisions); err != nil {
			return fmt.Errorf("--kafka-brokers %s: %w", cfg.Kafka.Brokers.String(), err)
		}
		srv.AddCheck("kafka-decide", client.Ping)

		decideLogger := logger.With("target", Decide)
		// The policy is evaluated only once svc runs, so the closure
		// never sees svc unset.
		var svc *decide.Service
		contactCfg, _ := cfg.contactConfig() // checked by Validate
		policy, err := contact.New(contact.Options{
			Redis: rdb, Logger: decideLogger, Config: contactCfg,
			ObserveEval: func(d time.Duration, memoized bool) { svc.ObservePolicyEval(d, memoized) },
		})
		if err != nil {
			return fmt.Errorf("contact policy (--decide-contact-rules): %w", err)
		}
		arms := bandit.NewStore(banditPool)
		// Totals a second old are as good for Thompson sampling (rewards
		// arrive later anyway) and spare a query per decision.
		arms.SetStaleness(time.Second)
		svc, err = decide.New(decide.Options{
			Store: decide.NewStore(pool), Client: client, Policy: policy, Bandit: arms,
			SendTime: sendtime.New(rdb), WaitInterval: cfg.DecideWaitInterval, Registerer: reg, Logger: decideLogger,
			TracerProvider: tp,
		})
		if err != nil {
			return err
		}
		h := decide.NewHandler(svc, decideLogger)
		mw := authn.NewMiddleware(authenticator.AuthenticateBearer, handlerOpts...)
		path, ch := h.CampaignRoutes(handlerOpts...)
		srv.HandleService(campaignv1connect.CampaignServiceName, path, mw.Wrap(ch))
		path, dh := h.DecisionRoutes(handlerOpts...)
		srv.HandleService(decisionv1connect.DecisionServiceName, path, mw.Wrap(dh))
		workers.Go(func() {
			if err := svc.Run(workCtx); err != nil {
				logger.Error("decide consumer stopped", "err", err)
			}
		})
		defer func() { stopWork(); workers.Wait() }() // before client.Close
	}

	if slices.Contains(targets, Deliver) {
		svc, trackingHandler, closeDeliver, err := startDeliver(ctx, cfg, pool, srv, reg, authenticator, logger, handlerOpts)
		if err != nil {
			return err
		}
		if trackingHandler != nil {
			// Opened by recipients' mail clients and browsers: the signed
			// token is the credential.
			srv.Handle("/t/", tracing.Route(tp, "/t/", red.Route("/t/", trackingHandler)))
		}
		defer closeDeliver()
		workers.Go(func() {
			if err := svc.Run(workCtx); err != nil {
				logger.Error("deliver stopped", "err", err)
			}
		})
		defer func() { stopWork(); workers.Wait() }() // before closeDeliver
	}

	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.HTTP.Addr); err != nil {
			return fmt.Errorf("--http-addr %s: %w", cfg.HTTP.Addr, err)
		}
	}
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String())
	}
	serveErr := srv.Serve(ctx, ln)
	stopWork()
	workers.Wait()

	// The port is closed and in-flight requests have their answers; what
	// producers still hold (nothing acknowledged to a client depends on it)
	// gets a bounded chance to reach the broker.
	flushCtx, cancel := context.WithTimeout(context.Background(), cfg.FlushTimeout)
	defer cancel()
	for _, p := range producers {
		if err := p.Flush(flushCtx); err != nil {
			logger.Warn("flush producer at shutdown", "err", err)
		}
	}
	logger.Info("stopped")
	return serveErr
}
