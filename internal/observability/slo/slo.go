// Package slo defines the availability and latency SLOs of the public APIs
// that are not ingestion or the ProfileService (those two are written out
// by hand in alerts/slo.yaml, which this package follows rule for rule),
// and renders their Prometheus rules: the SLIs as recording rules over
// seven windows, the 30-day SLI, and multi-window multi-burn-rate alerts
// (Google SRE workbook, ch. 5). One definition feeds both the rule file
// (alerts/slo-apis.yaml, written by gen/ and checked for staleness by a
// test) and the overview dashboard's SLO rows, so a threshold cannot
// differ between what pages and what is shown.
package slo

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Objectives of every SLO, as for ingestion and the ProfileService.
const (
	AvailabilityObjective = 0.9995
	LatencyObjective      = 0.99
)

// File is where Render's output is committed, relative to the repository.
const File = "alerts/slo-apis.yaml"

// Threshold is a latency objective: calls to Procedures (and requests to
// Routes) answered within Seconds, which must be a bucket boundary of the
// RED histograms (telemetry's latencyBuckets) for the SLI to be exact.
type Threshold struct {
	Seconds    float64
	Procedures []string
	Routes     []string
}

// API is one public API and its two SLOs.
type API struct {
	// Name prefixes the slo label (<name>-availability, <name>-latency)
	// and names the runbook (alerts/runbooks/<name>-budget-burn.md).
	Name string
	// Title names the API in alerts and panels: "the <Title>".
	Title string
	// Service is the Connect service, e.g. whisper.campaign.v1.CampaignService.
	Service string
	// Routes are plain HTTP routes served for the API, as the RED
	// middleware labels them.
	Routes []string
	// Latency lists every procedure and route of the SLOs once, by
	// threshold; procedures not listed (server streams, whose duration is
	// a session) count in neither SLO.
	Latency []Threshold
	// Calls says what is counted, in descriptions: "CampaignService calls".
	Calls string
	// Why explains the thresholds, for the dashboard and the rule file.
	Why string
}

// APIs are the SLOs this package renders.
var APIs = []API{
	{
		Name: "campaigns", Title: "CampaignService", Service: "whisper.campaign.v1.CampaignService",
		Calls: "CampaignService calls",
		Latency: []Threshold{
			{Seconds: 0.1, Procedures: []string{"GetCampaign"}},
			{Seconds: 0.25, Procedures: []string{"CreateCampaign", "UpdateCampaign", "PauseCampaign", "ActivateCampaign"}},
			{Seconds: 1, Procedures: []string{"ListCampaigns"}},
		},
		Why: "GetCampaign is one primary-key read (100 ms, as GetProfile); creating, updating, pausing and activating validate the campaign and write it in one transaction (250 ms); ListCampaigns reads a page of campaigns with their variants (1 s, as ListProfiles).",
	},
	{
		Name: "decisions", Title: "DecisionService", Service: "whisper.decision.v1.DecisionService",
		Calls: "DecisionService calls",
		Latency: []Threshold{
			{Seconds: 0.1, Procedures: []string{"ExplainDecision"}},
			{Seconds: 0.25, Procedures: []string{"Decide"}},
			{Seconds: 1, Procedures: []string{"ListDecisions"}},
		},
		Why: "Decide runs in the caller's own request path (profile, audience, consent, caps and the bandit for every active campaign), so it gets the 250 ms of a single ingestion call; ExplainDecision reads one recorded decision (100 ms); ListDecisions reads a page (1 s).",
	},
	{
		Name: "content", Title: "ContentService", Service: "whisper.content.v1.ContentService",
		Calls: "ContentService calls",
		Latency: []Threshold{
			{Seconds: 0.1, Procedures: []string{"Render", "GetTemplate"}},
			{Seconds: 0.25, Procedures: []string{"Preview", "CreateTemplate", "UpdateTemplate"}},
			{Seconds: 1, Procedures: []string{"ListTemplates"}},
		},
		Why: "Render executes a cached compiled template and is on every delivery's path, and GetTemplate is one row (100 ms); Preview, CreateTemplate and UpdateTemplate compile the template first, the latter two writing it (250 ms); ListTemplates reads a page (1 s).",
	},
	{
		Name: "delivery", Title: "DeliveryService", Service: "whisper.delivery.v1.DeliveryService",
		Routes: []string{"/t/"},
		Calls:  "DeliveryService calls and tracking requests",
		Latency: []Threshold{
			{Seconds: 0.1, Procedures: []string{"GetDelivery", "IssueInAppToken"}},
			{Seconds: 0.25, Procedures: []string{"MarkInAppRead"}, Routes: []string{"/t/"}},
			{Seconds: 1, Procedures: []string{"ListDeliveries"}},
		},
		Why: "Tracking links (/t/: open pixel, click redirect, one-click unsubscribe) keep a person's mail client or browser waiting while the event is written to Kafka, like a single ingestion call (250 ms), and so does MarkInAppRead's write; GetDelivery is one row and IssueInAppToken signs a token without any I/O (100 ms); ListDeliveries reads a page (1 s). StreamInApp, a server stream open as long as the inbox, is in neither SLO.",
	},
	{
		Name: "workspaces", Title: "WorkspaceService", Service: "whisper.workspace.v1.WorkspaceService",
		Calls: "WorkspaceService calls",
		Latency: []Threshold{
			{Seconds: 0.25, Procedures: []string{"CreateWorkspace", "GetWorkspace", "CreateWriteKey", "RevokeWriteKey", "CreateAPIToken", "RevokeAPIToken"}},
			{Seconds: 1, Procedures: []string{"ListWorkspaces", "ListWriteKeys", "ListAPITokens"}},
		},
		Why: "Creating, reading and revoking a workspace, write key or API token is one short transaction (250 ms); the List calls read a page (1 s). These are management calls, so the budget is about people and provisioning scripts waiting.",
	},
}

// Budget is the share of calls an SLO may spend.
// It is rounded to a millionth, so that 1 - 0.9995 prints as 0.0005.
func Budget(objective float64) float64 { return math.Round((1-objective)*1e6) / 1e6 }

// AvailabilitySLO is the availability SLO's slo label value.
func (a API) AvailabilitySLO() string { return a.Name + "-availability" }

// LatencySLO is the latency SLO's slo label value.
func (a API) LatencySLO() string { return a.Name + "-latency" }

// Runbook is the runbook's path in the repository.
func (a API) Runbook() string { return "alerts/runbooks/" + a.Name + "-budget-burn.md" }

// Procedures are every procedure of the SLOs, in Latency's order.
func (a API) Procedures() []string {
	var ps []string
	for _, t := range a.Latency {
		ps = append(ps, t.Procedures...)
	}
	return ps
}

// ThresholdText says the thresholds in words, e.g. "100 ms for
// GetCampaign; 1 s for ListCampaigns".
func (a API) ThresholdText() string {
	var parts []string
	for _, t := range a.Latency {
		who := append(append([]string{}, t.Procedures...), t.Routes...)
		parts = append(parts, fmt.Sprintf("%s for %s", duration(t.Seconds), strings.Join(who, ", ")))
	}
	return strings.Join(parts, "; ")
}

func duration(s float64) string {
	if s < 1 {
		return strconv.FormatFloat(s*1000, 'f', -1, 64) + " ms"
	}
	return strconv.FormatFloat(s, 'f', -1, 64) + " s"
}

// serverErrorCodes are the Connect codes that spend availability budget:
// our fault, not the caller's.
const serverErrorCodes = "unavailable|internal|unknown|deadline_exceeded|data_loss"

// procSelector matches procs of service, e.g.
// procedure=~"/whisper[.]campaign[.]v1[.]CampaignService/(GetCampaign|ListCampaigns)".
func procSelector(service string, procs []string) string {
	return fmt.Sprintf(`procedure=~"/%s/(%s)"`, strings.ReplaceAll(service, ".", "[.]"), strings.Join(procs, "|"))
}

func routeSelector(routes []string) string {
	if len(routes) == 1 {
		return fmt.Sprintf(`route=%q`, routes[0])
	}
	quoted := make([]string, len(routes))
	for i, r := range routes {
		quoted[i] = regexp.QuoteMeta(r)
	}
	return fmt.Sprintf(`route=~"%s"`, strings.Join(quoted, "|"))
}

func le(s float64) string { return fmt.Sprintf(`le="%s"`, strconv.FormatFloat(s, 'f', -1, 64)) }

// term is one summed rate, 0 rather than absent when nothing matches, so
// that an API with no errors (or no HTTP traffic) still has an SLI.
func term(metric, selector, window string) string {
	return fmt.Sprintf("(sum(rate(%s{%s}[%s])) or vector(0))", metric, selector, window)
}

// ratio is num / den, absent (not NaN) without traffic.
func ratio(num, den []string) string {
	return "(\n  " + strings.Join(num, "\n  +\n  ") + "\n)\n/\n((\n  " + strings.Join(den, "\n  +\n  ") + "\n) > 0)"
}

// AvailabilityExpr is the share of calls over window that failed on our
// side: server-error Connect codes, HTTP 5xx.
func (a API) AvailabilityExpr(window string) string {
	procs := procSelector(a.Service, a.Procedures())
	num := []string{term("whisper_rpc_requests_total", procs+`,code=~"`+serverErrorCodes+`"`, window)}
	den := []string{term("whisper_rpc_requests_total", procs, window)}
	if len(a.Routes) > 0 {
		routes := routeSelector(a.Routes)
		num = append(num, term("whisper_http_requests_total", routes+`,code=~"5.."`, window))
		den = append(den, term("whisper_http_requests_total", routes, window))
	}
	return ratio(num, den)
}

// LatencyExpr is the share of calls over window slower than their
// threshold.
func (a API) LatencyExpr(window string) string {
	var fast, all []string
	for _, t := range a.Latency {
		if len(t.Procedures) > 0 {
			fast = append(fast, term("whisper_rpc_request_duration_seconds_bucket", procSelector(a.Service, t.Procedures)+","+le(t.Seconds), window))
		}
		if len(t.Routes) > 0 {
			fast = append(fast, term("whisper_http_request_duration_seconds_bucket", routeSelector(t.Routes)+","+le(t.Seconds), window))
		}
	}
	all = append(all, term("whisper_rpc_request_duration_seconds_count", procSelector(a.Service, a.Procedures()), window))
	if len(a.Routes) > 0 {
		all = append(all, term("whisper_http_request_duration_seconds_count", routeSelector(a.Routes), window))
	}
	return "1 - " + ratio(fast, all)
}
