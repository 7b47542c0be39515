package targets

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"github.com/whisperhq/whisper/internal/auth"
	"github.com/whisperhq/whisper/internal/devenv"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/workspace"
)

// DevConfig is what `whisper dev` adds to Config.
type DevConfig struct {
	KafkaAddr  string
	RedisURL   string
	WriteKey   string
	APIToken   string
	AdminToken string
	DataDir    string
}

// RegisterFlags binds c to fs. The flag names give the WHISPER_DEV_*
// variables of the design (WHISPER_DEV_KAFKA_ADDR, WHISPER_DEV_WRITE_KEY...).
func (c *DevConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.KafkaAddr, "dev-kafka-addr", devenv.DefaultKafkaAddr, "address of the embedded Kafka broker, for kcat and other Kafka tools")
	fs.StringVar(&c.RedisURL, "dev-redis-url", "", "use this Redis instead of the in-process one (default: in-process)")
	fs.StringVar(&c.WriteKey, "dev-write-key", "", "pin the demo workspace's write key (default: a new one each start)")
	fs.StringVar(&c.APIToken, "dev-api-token", "", "pin the demo workspace's API token (default: a new one each start)")
	fs.StringVar(&c.AdminToken, "dev-admin-token", "", "pin the admin token (default: a new one each start)")
	fs.StringVar(&c.DataDir, "dev-data-dir", "", "keep a throwaway PostgreSQL cluster here across restarts (default: a temporary one)")
}

// RunDev runs every target on embedded dependencies: an in-process Kafka
// broker and Redis, and PostgreSQL from --database-url, a local server or a
// throwaway cluster. It creates the demo workspace and prints its
// credentials and every URL to out.
func RunDev(ctx context.Context, cfg Config, dev DevConfig, logger *slog.Logger, out io.Writer) (err error) {
	env, err := devenv.Start(ctx, devenv.Config{
		KafkaAddr: dev.KafkaAddr, DatabaseURL: cfg.DatabaseURL, DataDir: dev.DataDir, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer func() {
		if closeErr := env.Close(); closeErr != nil {
			err = errors.Join(err, fmt.Errorf("stop dev dependencies: %w", closeErr))
		}
	}()
	cfg.Kafka.Brokers = env.KafkaBrokers()
	cfg.RedisURL = cmp.Or(dev.RedisURL, env.RedisURL())
	cfg.DatabaseURL = env.DatabaseURL()

	cfg.AdminToken = dev.AdminToken
	if cfg.AdminToken == "" {
		if cfg.AdminToken, err = auth.NewSecret("wa_"); err != nil {
			return err
		}
	}
	// Webhooks work out of the box on one machine: a fresh signing secret
	// (printed) and local destinations allowed, unless configured.
	if cfg.Deliver.WebhookSecret == "" {
		if cfg.Deliver.WebhookSecret, err = auth.NewSecret("whsec_"); err != nil {
			return err
		}
		cfg.Deliver.WebhookAllowPrivate = true
	}
	if cfg.Deliver.TrackingKey == "" {
		if cfg.Deliver.TrackingKey, err = auth.NewSecret("wt_"); err != nil {
			return err
		}
	}
	// A page under development is served from its own port: in-app
	// messages reach it from any origin, unless configured. The token a
	// page needs still comes from IssueInAppToken.
	if len(cfg.Deliver.InAppOrigins) == 0 {
		cfg.Deliver.InAppOrigins = []string{"*"}
	}
	boot, err := bootstrap(ctx, cfg.DatabaseURL, dev, logger)
	if err != nil {
		return err
	}
	return Run(ctx, cfg, logger, Options{Ready: func(addr string) {
		printBanner(out, addr, env, cfg.RedisURL, cfg.AdminToken, cfg.Deliver.WebhookSecret, boot)
	}})
}

func bootstrap(ctx context.Context, databaseURL string, dev DevConfig, logger *slog.Logger) (workspace.BootstrapResult, error) {
	pool, err := postgres.Open(ctx, databaseURL)
	if err != nil {
		return workspace.BootstrapResult{}, err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool, workspace.Migrations, logger); err != nil {
		return workspace.BootstrapResult{}, err
	}
	res, err := workspace.Bootstrap(ctx, workspace.NewStore(pool), workspace.BootstrapOptions{WriteKey: dev.WriteKey, APIToken: dev.APIToken})
	if err != nil {
		return workspace.BootstrapResult{}, fmt.Errorf("create the demo workspace: %w", err)
	}
	return res, nil
}

func printBanner(out io.Writer, addr string, env *devenv.Env, redisURL, adminToken, webhookSecret string, boot workspace.BootstrapResult) {
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	base := "http://" + net.JoinHostPort(host, port)
	var b strings.Builder
	fmt.Fprintf(&b, "\nWhisper dev is running. Stop it with Ctrl-C.\n\n")
	fmt.Fprintf(&b, "  Workspace        %s (%s)\n", boot.Workspace.Name, boot.Workspace.ID)
	fmt.Fprintf(&b, "  Write key        %s\n", boot.WriteKeySecret)
	fmt.Fprintf(&b, "  API token        %s\n", boot.APITokenSecret)
	fmt.Fprintf(&b, "  Admin token      %s\n", adminToken)
	fmt.Fprintf(&b, "  Webhook secret   %s (Whisper-Signature of webhook deliveries)\n\n", webhookSecret)
	fmt.Fprintf(&b, "  Segment API      %s/v1/{track,identify,page,screen,group,alias,batch}\n", base)
	fmt.Fprintf(&b, "  Connect/gRPC     %s (whisper.ingest.v1.IngestService, whisper.profile.v1.ProfileService, whisper.campaign.v1.CampaignService, whisper.decision.v1.DecisionService, whisper.content.v1.ContentService, whisper.delivery.v1.DeliveryService, whisper.workspace.v1.WorkspaceService)\n", base)
	fmt.Fprintf(&b, "  Metrics          %s/metrics\n", base)
	fmt.Fprintf(&b, "  Health           %s/healthz  %s/readyz\n\n", base, base)
	fmt.Fprintf(&b, "  Kafka            %s (topics whisper.*)\n", strings.Join(env.KafkaBrokers(), ","))
	redisSource := "in-process"
	if redisURL != env.RedisURL() {
		redisSource = "--dev-redis-url"
	}
	fmt.Fprintf(&b, "  Redis            %s (%s)\n", redactURL(redisURL), redisSource)
	fmt.Fprintf(&b, "  PostgreSQL       %s (%s)\n\n", redactURL(env.DatabaseURL()), env.PostgresSource())
	fmt.Fprintf(&b, "  Try it:\n    curl -u '%s:' %s/v1/track -d '{\"userId\":\"u1\",\"event\":\"Signed Up\"}'\n\n", boot.WriteKeySecret, base)
	io.WriteString(out, b.String())
}

// redactURL hides a password in a database URL.
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unprintable URL)"
	}
	return parsed.Redacted()
}
