package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
	"github.com/whisperhq/whisper/internal/loadgen"
)

// decideTrigger is the trigger event of the decide benchmark's campaign.
// Nothing sends it: every decision comes from a Decide call, so the
// campaign stays out of the way of events, of this run and of others.
const decideTrigger = "whisper-load Decide (never sent)"

// decide runs the Decide latency benchmark against the instance o names,
// starting one when it names none: an email campaign decided for a new
// user on every call.
func decide(ctx context.Context, o options, logger *slog.Logger) (_ *loadgen.DecideReport, err error) {
	note := "the load generator runs on this machine; the server at " + o.url
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
		env = append(env, "WHISPER_DECIDE_CONTACT_RULES="+rules)
		dev, err := startDev(ctx, devOptions{
			binary: o.whisper, logPath: o.whisperLog, linger: o.linger, startTimeout: o.startTimeout, env: env,
		}, logger)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, dev.stop()) }()
		o.url, o.apiToken = dev.url, dev.apiToken
		note = "load generator, whisper dev (every target: deliver consumes each decision) and its in-process broker share these CPUs; PostgreSQL too when local"
	}
	url := strings.TrimSuffix(o.url, "/")
	campaignID, pause, err := createDecideCampaign(ctx, url, o.apiToken)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, pause()) }()
	logger.InfoContext(ctx, "email campaign active", "campaign", campaignID)
	res, err := loadgen.RunDecide(ctx, loadgen.DecideConfig{
		URL: url, APIToken: o.apiToken, CampaignID: campaignID, Rate: o.rate, Warmup: o.warmup, Duration: o.duration,
		MaxInFlight: o.maxInFlight, Timeout: o.timeout, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	report := &loadgen.DecideReport{Machine: loadgen.Machine{CPUs: runtime.NumCPU(), Note: note}, Decide: res}
	report.Judge()
	return report, nil
}

// createDecideCampaign creates, through the public API, an email template
// and the active campaign that sends it; pause stops the campaign. The
// template is real, though deciding needs only a content ref, so that
// deliver, which acts on every decision the run makes, renders it and
// skips the send (the users have no profile, hence no address) instead of
// retrying a missing template into the DLQ.
func createDecideCampaign(ctx context.Context, url, apiToken string) (id string, pause func() error, err error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	auth := bearerAuth(apiToken)
	contents := contentv1connect.NewContentServiceClient(hc, url, auth)
	tmpl, err := contents.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: &contentv1.Template{
		Name: "whisper-load decide", Channel: contentv1.Channel_CHANNEL_EMAIL, DefaultLocale: "en",
		Locales: map[string]*contentv1.Content{"en": {Subject: "whisper-load", Text: "A decision of whisper-load."}}}})
	if err != nil {
		return "", nil, fmt.Errorf("create the email template: %w", err)
	}
	campaigns := campaignv1connect.NewCampaignServiceClient(hc, url, auth)
	c, err := campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Activate: true, Campaign: &campaignv1.Campaign{
		Name:    "whisper-load decide",
		Trigger: &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: decideTrigger}}},
		Variants: []*campaignv1.Variant{{Id: "A", Weight: 1, Channel: campaignv1.Channel_CHANNEL_EMAIL,
			ContentRef: tmpl.GetTemplate().GetTemplateId()}},
	}})
	if err != nil {
		return "", nil, fmt.Errorf("create the email campaign: %w", err)
	}
	id = c.GetCampaign().GetId()
	return id, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := campaigns.PauseCampaign(ctx, &campaignv1.PauseCampaignRequest{CampaignId: id}); err != nil {
			return fmt.Errorf("pause the email campaign: %w", err)
		}
		return nil
	}, nil
}
