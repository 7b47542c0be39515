package targets_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/targets"
)

// TestCampaignDecidesOnSegmentEvents defines a campaign over CampaignService
// and sends the event that triggers it over the Segment API, as a client of
// `whisper serve --target=all` would: the decision shows in ListDecisions,
// explains itself, and stays out of the other workspace.
func TestCampaignDecidesOnSegmentEvents(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	_, tokens, key := twoWorkspaces(t, p)
	campaigns := campaignv1connect.NewCampaignServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	created, err := campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Activate: true, Campaign: &campaignv1.Campaign{
		Name:     "welcome",
		Trigger:  &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: "Signed Up"}}},
		Variants: []*campaignv1.Variant{{Id: "A", Weight: 1, Channel: campaignv1.Channel_CHANNEL_WEBHOOK, ContentRef: "welcome/a"}},
	}})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	_, err = campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Campaign: &campaignv1.Campaign{Name: "bad"}})
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("CreateCampaign without a trigger: %v, want InvalidArgument", err)
	}
	if code, res := post(t, p.url+"/v1/track", key, `{"userId":"u1","event":"Signed Up","messageId":"d1"}`); code != http.StatusOK {
		t.Fatalf("POST /v1/track = %d %s", code, res)
	}
	decisions := decisionv1connect.NewDecisionServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	var got []*decisionv1.Decision
	waitFor(t, "the decision", func() (bool, string) {
		res, err := decisions.ListDecisions(ctx, &decisionv1.ListDecisionsRequest{UserId: "u1"})
		if err != nil {
			return false, err.Error()
		}
		got = res.GetDecisions()
		return len(got) == 1, fmt.Sprint(got)
	})
	d := got[0]
	if d.GetCampaignId() != created.GetCampaign().GetId() || d.GetTriggerId() != "event:d1" || d.GetVariantId() != "A" {
		t.Errorf("decision %v", d)
	}
	if d.GetOutcome() != decisionv1.Outcome_OUTCOME_SEND && d.GetOutcome() != decisionv1.Outcome_OUTCOME_DEFERRED {
		t.Errorf("outcome %v, want a send", d.GetOutcome())
	}
	explained, err := decisions.ExplainDecision(ctx, &decisionv1.ExplainDecisionRequest{DecisionId: d.GetDecisionId()})
	if err != nil || explained.GetCampaign().GetVersion() != 1 || len(explained.GetDecision().GetSteps()) < 5 {
		t.Errorf("ExplainDecision = %v, %v", explained, err)
	}
	res, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`whisper_decide_decisions_total{campaign=%q,outcome="send"} 1`, d.GetCampaignId()),
		`whisper_decide_policy_evaluation_duration_seconds_count{memoized="false"} `,
		`whisper_decide_policy_reserve_duration_seconds_count 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	other := decisionv1connect.NewDecisionServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[1]))
	if _, err := other.ExplainDecision(ctx, &decisionv1.ExplainDecisionRequest{DecisionId: d.GetDecisionId()}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("the other workspace explains the decision: %v, want NotFound", err)
	}
}

func TestDecideConfigErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid := file("valid.json", `{"rules": {"channels": {"email": {"per_day": 1, "per_week": 3, "quiet_hours": true}},
		"quiet_start": "22:00", "quiet_end": "07:00", "min_gap": "30m"},
		"workspaces": {"6a0d3c1e-2f4b-4c8d-9e1a-0b2c3d4e5f60": {"quiet_start": "00:00", "quiet_end": "00:00"}}}`)
	tests := []struct {
		name string
		args []string
		want string // empty: valid
	}{
		{"valid rules", []string{"--decide-contact-rules=" + valid}, ""},
		{"wait interval", []string{"--decide-wait-interval=0s"}, "--decide-wait-interval: must be 10ms-1m"},
		{"missing rules file", []string{"--decide-contact-rules=" + filepath.Join(dir, "nope.json")}, "--decide-contact-rules " + filepath.Join(dir, "nope.json")},
		{"unknown field", []string{"--decide-contact-rules=" + file("unknown.json", `{"rules": {"per_day": 1}}`)}, `unknown field "per_day"`},
		{"bad gap", []string{"--decide-contact-rules=" + file("gap.json", `{"rules": {"min_gap": "soon"}}`)}, "rules.min_gap:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var cfg targets.Config
			cfg.RegisterFlags(fs)
			if err := fs.Parse(append([]string{"--database-url=postgres://x"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
