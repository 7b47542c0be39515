package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/loadgen"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/targets"
)

// platform is every target in process, as `whisper dev` runs them, on
// kfake, a real PostgreSQL and Redis, with a workspace of its own.
type platform struct {
	url, writeKey, apiToken string
}

// startPlatform starts the platform with decide's noCapsRules and the
// config configure changes, and stops it when the test ends.
func startPlatform(t *testing.T, configure func(*targets.Config)) platform {
	t.Helper()
	const admin = "whisper-load-test-admin-0123456789"
	_, brokers := kafkatest.NewCluster(t)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg targets.Config
	cfg.RegisterFlags(fs)
	rules := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(rules, []byte(noCapsRules), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Brokers, cfg.Kafka.Partitions = brokers, 3
	cfg.DatabaseURL, cfg.RedisURL, cfg.AdminToken = pgtest.NewDatabase(t), redistest.URL(t), admin
	cfg.DecideContactRules = rules
	cfg.HTTP.ShutdownTimeout = 10 * time.Second
	configure(&cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan error, 1), make(chan struct{})
	go func() {
		done <- targets.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), targets.Options{Listener: ln, Ready: func(string) { close(ready) }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("platform not ready after 60 s")
	}
	wsc := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, url, rpctest.Bearer(admin))
	w, err := wsc.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "load"})
	if err != nil {
		t.Fatal(err)
	}
	ws := w.GetWorkspace().GetId()
	wk, err := wsc.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: ws, Name: "load"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := wsc.CreateAPIToken(ctx, &workspacev1.CreateAPITokenRequest{WorkspaceId: ws, Name: "load"})
	if err != nil {
		t.Fatal(err)
	}
	return platform{url: url, writeKey: wk.GetSecret(), apiToken: tok.GetSecret()}
}

// assertCampaignsPaused checks that the workspace holds n campaigns, all
// paused: every run pauses the campaign it created.
func assertCampaignsPaused(t *testing.T, p platform, n int) {
	t.Helper()
	campaigns := campaignv1connect.NewCampaignServiceClient(http.DefaultClient, p.url, rpctest.Bearer(p.apiToken))
	list, err := campaigns.ListCampaigns(t.Context(), &campaignv1.ListCampaignsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(list.GetCampaigns()); got != n {
		t.Errorf("%d campaigns, want %d: one per run", got, n)
	}
	for _, c := range list.GetCampaigns() {
		if c.GetStatus() != campaignv1.CampaignStatus_CAMPAIGN_STATUS_PAUSED {
			t.Errorf("campaign %q is %v after its run, want paused", c.GetName(), c.GetStatus())
		}
	}
}

// TestDeliveryAgainstPlatform runs --mode=delivery against every target
// in process (as `whisper dev` runs them): the campaign is created and
// paused through the public API, every trigger's webhook arrives once and
// verifies; with the wrong secret every webhook is refused.
func TestDeliveryAgainstPlatform(t *testing.T) {
	const secret = "whsec_whisper_load_test"
	p := startPlatform(t, func(cfg *targets.Config) {
		cfg.Deliver.WebhookSecret, cfg.Deliver.WebhookAllowPrivate = secret, true
	})

	tests := []struct {
		name   string
		secret string
		wait   string // --probe-timeout: how long missing webhooks are awaited
		check  func(t *testing.T, d loadgen.DeliveryResult)
	}{
		{"delivered once", secret, "15s", func(t *testing.T, d loadgen.DeliveryResult) {
			if d.Triggers == 0 || d.Delivered != d.Triggers || d.Missing != 0 || d.Duplicates != 0 || d.Rejected != 0 || d.Latency.Count != uint64(d.Triggers) {
				t.Errorf("%d triggers: %d delivered, %d missing, %d duplicates, %d refused, latency %+v; want all delivered once",
					d.Triggers, d.Delivered, d.Missing, d.Duplicates, d.Rejected, d.Latency)
			}
		}},
		{"wrong secret", "whsec_not_the_instances", "3s", func(t *testing.T, d loadgen.DeliveryResult) {
			if d.Triggers == 0 || d.Delivered != 0 || d.Rejected < d.Triggers {
				t.Errorf("%d triggers: %d delivered, %d refused; want every webhook refused", d.Triggers, d.Delivered, d.Rejected)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{"--mode=delivery", "--url", p.url, "--write-key", p.writeKey, "--api-token", p.apiToken,
				"--webhook-secret", tt.secret, "--rate", "200", "--batch-size", "10", "--warmup", "300ms", "--duration", "1s",
				"--probe-timeout", tt.wait, "--json"}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr.String())
			}
			var r loadgen.DeliveryReport
			if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
				t.Fatalf("--json output: %v\n%s", err, stdout.String())
			}
			tt.check(t, r.Delivery)
		})
	}
	assertCampaignsPaused(t, p, len(tests))
}
