package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
	"github.com/whisperhq/whisper/internal/loadgen"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/targets"
)

// TestDecideAgainstPlatform runs --mode=decide against every target in
// process (as `whisper dev` runs them): every call is answered with a send
// decision over one connection, the decisions are there to list, the
// campaign is paused after the run, and without --rate the rate is
// 1,000 calls/s.
func TestDecideAgainstPlatform(t *testing.T) {
	p := startPlatform(t, func(*targets.Config) {})
	tests := []struct {
		name        string
		args        []string
		wantRate    float64
		wantOffered int64
	}{
		{"rate given", []string{"--rate", "200", "--warmup", "300ms", "--duration", "1s"}, 200, 200},
		{"default rate", []string{"--warmup", "100ms", "--duration", "300ms"}, 1000, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--mode=decide", "--url", p.url, "--api-token", p.apiToken, "--json"}, tt.args...)
			if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr.String())
			}
			var r loadgen.DecideReport
			if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
				t.Fatalf("--json output: %v\n%s", err, stdout.String())
			}
			d := r.Decide
			if d.TargetRate != tt.wantRate || d.Offered != tt.wantOffered {
				t.Errorf("rate %v, %d calls offered; want %v and %d", d.TargetRate, d.Offered, tt.wantRate, tt.wantOffered)
			}
			if d.Completed != d.Offered || d.Errors != nil || d.Outcomes["OUTCOME_SEND"] != d.Completed || d.Latency.Count != uint64(d.Completed) {
				t.Errorf("%d offered: %d completed, errors %v (%v), outcomes %v, latency %+v; want every call answered with a send",
					d.Offered, d.Completed, d.Errors, d.ErrorSamples, d.Outcomes, d.Latency)
			}
			if d.Connections != 1 {
				t.Errorf("%d connections, want every call on one", d.Connections)
			}
			if len(r.Targets) != 2 {
				t.Errorf("targets = %+v, want p99 and completed", r.Targets)
			}
		})
	}
	assertCampaignsPaused(t, p, len(tests))

	// Every call made a decision of its own, warm-up included.
	campaigns := campaignv1connect.NewCampaignServiceClient(http.DefaultClient, p.url, rpctest.Bearer(p.apiToken))
	list, err := campaigns.ListCampaigns(t.Context(), &campaignv1.ListCampaignsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	decisions := decisionv1connect.NewDecisionServiceClient(http.DefaultClient, p.url, rpctest.Bearer(p.apiToken))
	wants := map[string]int{"rate given": 200 * 1.3, "default rate": 1000 * 0.4}
	for _, c := range list.GetCampaigns() {
		users, req := map[string]bool{}, &decisionv1.ListDecisionsRequest{CampaignId: c.GetId(), PageSize: 1000}
		for {
			page, err := decisions.ListDecisions(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page.GetDecisions() {
				if users[d.GetUserId()] || !strings.HasPrefix(d.GetTriggerId(), "request:") {
					t.Errorf("decision %s for %s, trigger %s: want one per user, each from a Decide call", d.GetDecisionId(), d.GetUserId(), d.GetTriggerId())
				}
				users[d.GetUserId()] = true
			}
			if req.PageToken = page.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if n := len(users); n != wants["rate given"] && n != wants["default rate"] {
			t.Errorf("campaign %s has %d decisions, want %v for one of the runs", c.GetId(), n, wants)
		}
	}
}

// TestDecideBadToken shows a refused API token as the reason the run
// failed, before any load.
func TestDecideBadToken(t *testing.T) {
	p := startPlatform(t, func(*targets.Config) {})
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"--mode=decide", "--url", p.url, "--api-token", "wt_nobody", "--duration", "100ms"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "create the email template") || !strings.Contains(stderr.String(), "unauthenticated") {
		t.Errorf("run = %d, stderr %q; want 1 and the refused template", code, stderr.String())
	}
}

// TestDecideNeedsNoWriteKey: decide mode calls only management APIs, so
// with --url it needs --api-token and no --write-key (the run then fails
// for the unreachable URL, not for its flags).
func TestDecideNeedsNoWriteKey(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"--mode=decide", "--url", "http://127.0.0.1:1", "--api-token", "t"}, &stdout, &stderr)
	if code != 1 || strings.Contains(stderr.String(), "--write-key") || !strings.Contains(stderr.String(), "create the email template") {
		t.Errorf("run = %d, stderr %q; want 1 for the unreachable server", code, stderr.String())
	}
}
