package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"connectrpc.com/connect"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
	"github.com/whisperhq/whisper/internal/loadgen"
	"github.com/whisperhq/whisper/services/deliver/channel"
)

// noCapsRules are decide's contact rules for the delivery and decide
// benchmarks' `whisper dev`: no quiet hours and caps no run reaches, so
// every decision is a send at once (each is a new user's anyway).
const noCapsRules = `{"rules": {"other_channels": {"per_day": 1000, "per_week": 1000}, "quiet_start": "00:00", "quiet_end": "00:00"}}`

// writeNoCapsRules writes noCapsRules where WHISPER_DECIDE_CONTACT_RULES
// can name it, and returns its path.
func writeNoCapsRules() (string, error) {
	rules := filepath.Join(os.TempDir(), "whisper-load-contact-rules.json")
	if err := os.WriteFile(rules, []byte(noCapsRules), 0o600); err != nil {
		return "", fmt.Errorf("contact rules of whisper dev: %w", err)
	}
	return rules, nil
}

// delivery runs the event-to-delivery benchmark against the instance o
// names, starting one when it names none: a webhook campaign whose
// destination is a receiver in this process, triggered by one event of
// every batch.
func delivery(ctx context.Context, o options, logger *slog.Logger) (_ *loadgen.DeliveryReport, err error) {
	bodies, err := loadgen.NewBodies(loadgen.BodiesOptions{Templates: o.templates, BatchSize: o.batchSize - 1})
	if err != nil {
		return nil, err
	}
	secret := o.webhookSecret
	if secret == "" {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		secret = "whsec_" + hex.EncodeToString(b[:])
	}
	recv := loadgen.NewHookReceiver(bodies, func(h http.Header, body []byte) error {
		return channel.VerifySignature([]byte(secret), h, body, time.Now(), 5*time.Minute)
	})
	ln, err := net.Listen("tcp", o.hookAddr)
	if err != nil {
		return nil, fmt.Errorf("--hook-addr: %w", err)
	}
	hookSrv := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second}
	go hookSrv.Serve(ln)
	defer hookSrv.Close()
	hookURL := "http://" + ln.Addr().String() + "/hook"

	note := "the load generator and webhook receiver run on this machine; the server at " + o.url
	if o.url == "" {
		env, stopTracing, err := tracingEnv(o.tracing, logger)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, stopTracing()) }()
		rules, err := writeNoCapsRules()
		if err != nil {
			return nil, err
		}
		env = append(env, "WHISPER_DELIVER_WEBHOOK_SECRET="+secret, "WHISPER_DELIVER_WEBHOOK_ALLOW_PRIVATE=true",
			"WHISPER_DECIDE_CONTACT_RULES="+rules)
		dev, err := startDev(ctx, devOptions{
			binary: o.whisper, logPath: o.whisperLog, linger: o.linger, startTimeout: o.startTimeout, env: env,
		}, logger)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, dev.stop()) }()
		o.url, o.writeKey, o.apiToken = dev.url, dev.writeKey, dev.apiToken
		note = "load generator, webhook receiver, whisper dev (every target) and its in-process broker share these CPUs; PostgreSQL too when local"
	}
	url := strings.TrimSuffix(o.url, "/")
	pause, err := createHookCampaign(ctx, url, o.apiToken, hookURL, bodies.TriggerEventName())
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, pause()) }()
	logger.InfoContext(ctx, "webhook campaign active", "trigger", bodies.TriggerEventName(), "destination", hookURL)
	res, err := loadgen.RunDelivery(ctx, loadgen.DeliveryConfig{
		URL: url, WriteKey: o.writeKey, Rate: o.rate, Bodies: bodies, Warmup: o.warmup, Duration: o.duration,
		MaxInFlight: o.maxInFlight, Timeout: o.timeout, DeliveryTimeout: o.probeTimeout, Receiver: recv, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	report := &loadgen.DeliveryReport{Machine: loadgen.Machine{CPUs: runtime.NumCPU(), Note: note}, Delivery: res}
	report.Judge()
	return report, nil
}

// createHookCampaign creates, through the public API, the webhook template
// and the active campaign the trigger event fires; pause stops the
// campaign, so later runs (and the instance's other users) are not sent
// its webhooks.
func createHookCampaign(ctx context.Context, url, apiToken, hookURL, trigger string) (pause func() error, err error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	auth := bearerAuth(apiToken)
	contents := contentv1connect.NewContentServiceClient(hc, url, auth)
	tmpl, err := contents.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: &contentv1.Template{
		Name: "whisper-load " + trigger, Channel: contentv1.Channel_CHANNEL_WEBHOOK, DefaultLocale: "en",
		Locales: map[string]*contentv1.Content{"en": {Body: loadgen.TriggerWebhookBody, Url: hookURL}}}})
	if err != nil {
		return nil, fmt.Errorf("create the webhook template: %w", err)
	}
	campaigns := campaignv1connect.NewCampaignServiceClient(hc, url, auth)
	c, err := campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Activate: true, Campaign: &campaignv1.Campaign{
		Name:    "whisper-load " + trigger,
		Trigger: &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: trigger}}},
		Variants: []*campaignv1.Variant{{Id: "A", Weight: 1, Channel: campaignv1.Channel_CHANNEL_WEBHOOK,
			ContentRef: tmpl.GetTemplate().GetTemplateId()}},
	}})
	if err != nil {
		return nil, fmt.Errorf("create the webhook campaign: %w", err)
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := campaigns.PauseCampaign(ctx, &campaignv1.PauseCampaignRequest{CampaignId: c.GetCampaign().GetId()}); err != nil {
			return fmt.Errorf("pause the webhook campaign: %w", err)
		}
		return nil
	}, nil
}

// bearerAuth sends apiToken with every call of a management client.
func bearerAuth(apiToken string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+apiToken)
			return next(ctx, req)
		}
	}))
}
