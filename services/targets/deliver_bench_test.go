package targets_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/targets"
)

// BenchmarkEventToDelivery offers 1,000 events/s for 10 s over the Segment
// batch API to every target in one process (as `whisper dev` runs them), a
// tenth of them triggering a webhook campaign for a new user, and measures
// from each batch's send to the signed webhook's arrival at a local
// receiver: ingest -> whisper.events -> decide -> whisper.decisions ->
// deliver (ledger, render, send).
//
//	go test -run '^$' -bench EventToDelivery -benchtime=1x ./services/targets
func BenchmarkEventToDelivery(b *testing.B) {
	const (
		rate     = 1000 // events/s
		batch    = 10   // events per request, one of them the trigger
		duration = 10 * time.Second
	)
	var mu sync.Mutex
	var lat []time.Duration
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Sent int64 `json:"sent,string"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err == nil {
			mu.Lock()
			lat = append(lat, time.Since(time.Unix(0, body.Sent)))
			mu.Unlock()
		}
	}))
	b.Cleanup(hook.Close)
	rules := filepath.Join(b.TempDir(), "rules.json")
	if err := os.WriteFile(rules, []byte(`{"rules": {"other_channels": {"per_day": 1000, "per_week": 1000}, "quiet_start": "00:00", "quiet_end": "00:00"}}`), 0o600); err != nil {
		b.Fatal(err)
	}
	p := startWith(b, func(c *targets.Config, _ string) {
		c.DecideContactRules = rules
		c.Deliver.WebhookSecret, c.Deliver.WebhookAllowPrivate = "bench-secret", true
	})
	ctx := context.Background()
	admin := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, p.url, rpctest.Bearer(adminToken))
	ws, err := admin.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := admin.CreateAPIToken(ctx, &workspacev1.CreateAPITokenRequest{WorkspaceId: ws.GetWorkspace().GetId(), Name: "ops"})
	if err != nil {
		b.Fatal(err)
	}
	wk, err := admin.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: ws.GetWorkspace().GetId(), Name: "web"})
	if err != nil {
		b.Fatal(err)
	}
	contents := contentv1connect.NewContentServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tok.GetSecret()))
	tmpl, err := contents.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: &contentv1.Template{
		Name: "hook", Channel: contentv1.Channel_CHANNEL_WEBHOOK, DefaultLocale: "en",
		Locales: map[string]*contentv1.Content{"en": {Body: `{"sent": {{ event.sent | json }}}`, Url: hook.URL + "/h"}}}})
	if err != nil {
		b.Fatal(err)
	}
	campaigns := campaignv1connect.NewCampaignServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tok.GetSecret()))
	if _, err := campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Activate: true, Campaign: &campaignv1.Campaign{
		Name:     "checkout",
		Trigger:  &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: "Checkout"}}},
		Variants: []*campaignv1.Variant{{Id: "A", Weight: 1, Channel: campaignv1.Channel_CHANNEL_WEBHOOK, ContentRef: tmpl.GetTemplate().GetTemplateId()}},
	}}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	tick := time.NewTicker(time.Second * batch / rate)
	defer tick.Stop()
	triggers, failed := 0, 0
	for end := time.Now().Add(duration); time.Now().Before(end); <-tick.C {
		sent := time.Now().UnixNano()
		events := []map[string]any{{"type": "track", "userId": fmt.Sprintf("buyer-%d", triggers), "event": "Checkout",
			"messageId": fmt.Sprintf("c-%d", triggers), "properties": map[string]any{"sent": strconv.FormatInt(sent, 10)}}}
		for i := 1; i < batch; i++ {
			events = append(events, map[string]any{"type": "track", "userId": fmt.Sprintf("viewer-%d", (triggers*batch+i)%5000),
				"event": "Page Viewed", "messageId": fmt.Sprintf("v-%d-%d", triggers, i)})
		}
		body, _ := json.Marshal(map[string]any{"batch": events})
		req, _ := http.NewRequest(http.MethodPost, p.url+"/v1/batch", bytes.NewReader(body))
		req.SetBasicAuth(wk.GetSecret(), "")
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusOK {
			failed++
		}
		if res != nil {
			res.Body.Close()
		}
		triggers++
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n >= triggers-failed {
			break
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	if len(lat) == 0 {
		b.Fatalf("no deliveries of %d triggers", triggers)
	}
	q := func(f float64) time.Duration { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
	b.ReportMetric(float64(len(lat)), "delivered")
	b.ReportMetric(float64(triggers), "triggers")
	b.ReportMetric(float64(failed), "failed_requests")
	b.ReportMetric(q(0.5).Seconds()*1000, "p50_ms")
	b.ReportMetric(q(0.99).Seconds()*1000, "p99_ms")
	b.ReportMetric(lat[len(lat)-1].Seconds()*1000, "max_ms")
}
