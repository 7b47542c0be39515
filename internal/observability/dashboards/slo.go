package dashboards

import (
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"

	"github.com/whisperhq/whisper/internal/observability/slo"
)

// The ProfileService's SLOs, as recorded by alerts/slo.yaml (same
// objectives as ingestion: AvailabilityObjective, LatencyObjective).
const (
	sloProfilesAvail   = `slo="profiles-availability"`
	sloProfilesLatency = `slo="profiles-latency"`
)

// withProfileSLOs adds the ProfileService's row to the overview: the
// 30-day SLIs, the budget left of each and the burn rates the alerts
// compare with their thresholds.
func withProfileSLOs(b *dashboard.DashboardBuilder) *dashboard.DashboardBuilder {
	availBudget := 1 - AvailabilityObjective
	latencyBudget := 1 - LatencyObjective
	green, red, orange := "green", "red", "orange"
	return b.
		WithRow(row("ProfileService SLOs")).
		WithPanel(panel{title: "ProfileService availability (30 days)", unit: units.PercentUnit,
			description: fmt.Sprintf("Share of GetProfile and ListProfiles calls over the last 30 days that did not fail on our side (Connect unavailable/internal/unknown/deadline_exceeded/data_loss; not_found and other client errors excluded, WatchProfile streams not counted). Objective %.2f%%.", AvailabilityObjective*100),
			queries:     q(query(`1 - slo:sli_error:ratio_rate30d{`+sloProfilesAvail+`}`, "availability"))}.
			stat(3, step(nil, red), step(cog.ToPtr(AvailabilityObjective), green))).
		WithPanel(panel{title: "ProfileService availability budget remaining", unit: units.PercentUnit,
			description: "Share of the ProfileService's 30-day availability error budget not yet spent. Below zero the SLO is missed.",
			queries:     q(query(fmt.Sprintf(`1 - slo:sli_error:ratio_rate30d{%s} / %g`, sloProfilesAvail, availBudget), "budget left"))}.
			stat(1, step(nil, red), step(cog.ToPtr(0.0), orange), step(cog.ToPtr(0.25), green))).
		WithPanel(panel{title: "ProfileService latency SLI (30 days)", unit: units.PercentUnit,
			description: fmt.Sprintf("Share of ProfileService calls over the last 30 days answered within their threshold: 100 ms for GetProfile, 1 s for ListProfiles. Objective %.0f%%.", LatencyObjective*100),
			queries:     q(query(`1 - slo:sli_error:ratio_rate30d{`+sloProfilesLatency+`}`, "fast enough"))}.
			stat(2, step(nil, red), step(cog.ToPtr(LatencyObjective), green))).
		WithPanel(panel{title: "ProfileService latency budget remaining", unit: units.PercentUnit,
			description: "Share of the ProfileService's 30-day latency error budget not yet spent. Below zero the latency SLO is missed.",
			queries:     q(query(fmt.Sprintf(`1 - slo:sli_error:ratio_rate30d{%s} / %g`, sloProfilesLatency, latencyBudget), "budget left"))}.
			stat(1, step(nil, red), step(cog.ToPtr(0.0), orange), step(cog.ToPtr(0.25), green))).
		WithPanel(panel{title: "ProfileService budget burn rate (1h)", unit: units.Short,
			description: "How many times faster than sustainable each ProfileService error budget is being spent, over the last hour. The page fires at 14.4 (with the 5-minute window agreeing).",
			queries: q(
				query(fmt.Sprintf(`slo:sli_error:ratio_rate1h{%s} / %g`, sloProfilesAvail, availBudget), "availability"),
				query(fmt.Sprintf(`slo:sli_error:ratio_rate1h{%s} / %g`, sloProfilesLatency, latencyBudget), "latency"),
			)}.timeseries()).
		WithPanel(panel{title: "ProfileService SLI error ratio (5m)", unit: units.PercentUnit,
			description: "Short-window error ratios of the ProfileService SLIs: failed calls (availability) and calls slower than their threshold (latency).",
			queries: q(
				query(`slo:sli_error:ratio_rate5m{`+sloProfilesAvail+`}`, "availability errors"),
				query(`slo:sli_error:ratio_rate5m{`+sloProfilesLatency+`}`, "too slow"),
			)}.timeseries())
}

// withAPISLOs adds a row per API of slo.APIs (the SLOs rendered into
// alerts/slo-apis.yaml): the same panels as the ProfileService's, with the
// thresholds and what counts taken from the SLO definitions themselves.
func withAPISLOs(b *dashboard.DashboardBuilder) *dashboard.DashboardBuilder {
	green, red, orange := "green", "red", "orange"
	for _, a := range slo.APIs {
		avail := fmt.Sprintf(`slo=%q`, a.AvailabilitySLO())
		latency := fmt.Sprintf(`slo=%q`, a.LatencySLO())
		availBudget := slo.Budget(slo.AvailabilityObjective)
		latencyBudget := slo.Budget(slo.LatencyObjective)
		httpErrors := ""
		if len(a.Routes) > 0 {
			httpErrors = ", HTTP 5xx on " + strings.Join(a.Routes, ", ")
		}
		b = b.
			WithRow(row(a.Title + " SLOs")).
			WithPanel(panel{title: a.Title + " availability (30 days)", unit: units.PercentUnit,
				description: fmt.Sprintf("Share of %s over the last 30 days that did not fail on our side (Connect unavailable/internal/unknown/deadline_exceeded/data_loss%s; client errors excluded). Objective %.2f%%.", a.Calls, httpErrors, slo.AvailabilityObjective*100),
				queries:     q(query(`1 - slo:sli_error:ratio_rate30d{`+avail+`}`, "availability"))}.
				stat(3, step(nil, red), step(cog.ToPtr(slo.AvailabilityObjective), green))).
			WithPanel(panel{title: a.Title + " availability budget remaining", unit: units.PercentUnit,
				description: fmt.Sprintf("Share of the %s's 30-day availability error budget not yet spent. Below zero the SLO is missed.", a.Title),
				queries:     q(query(fmt.Sprintf(`1 - slo:sli_error:ratio_rate30d{%s} / %g`, avail, availBudget), "budget left"))}.
				stat(1, step(nil, red), step(cog.ToPtr(0.0), orange), step(cog.ToPtr(0.25), green))).
			WithPanel(panel{title: a.Title + " latency SLI (30 days)", unit: units.PercentUnit,
				description: fmt.Sprintf("Share of %s over the last 30 days answered within their threshold: %s. Objective %.0f%%.", a.Calls, a.ThresholdText(), slo.LatencyObjective*100),
				queries:     q(query(`1 - slo:sli_error:ratio_rate30d{`+latency+`}`, "fast enough"))}.
				stat(2, step(nil, red), step(cog.ToPtr(slo.LatencyObjective), green))).
			WithPanel(panel{title: a.Title + " latency budget remaining", unit: units.PercentUnit,
				description: fmt.Sprintf("Share of the %s's 30-day latency error budget not yet spent. Below zero the latency SLO is missed.", a.Title),
				queries:     q(query(fmt.Sprintf(`1 - slo:sli_error:ratio_rate30d{%s} / %g`, latency, latencyBudget), "budget left"))}.
				stat(1, step(nil, red), step(cog.ToPtr(0.0), orange), step(cog.ToPtr(0.25), green))).
			WithPanel(panel{title: a.Title + " budget burn rate (1h)", unit: units.Short,
				description: fmt.Sprintf("How many times faster than sustainable each %s error budget is being spent, over the last hour. The page fires at 14.4 (with the 5-minute window agreeing).", a.Title),
				queries: q(
					query(fmt.Sprintf(`slo:sli_error:ratio_rate1h{%s} / %g`, avail, availBudget), "availability"),
					query(fmt.Sprintf(`slo:sli_error:ratio_rate1h{%s} / %g`, latency, latencyBudget), "latency"),
				)}.timeseries()).
			WithPanel(panel{title: a.Title + " SLI error ratio (5m)", unit: units.PercentUnit,
				description: fmt.Sprintf("Short-window error ratios of the %s SLIs: failed calls (availability) and calls slower than their threshold (latency).", a.Title),
				queries: q(
					query(`slo:sli_error:ratio_rate5m{`+avail+`}`, "availability errors"),
					query(`slo:sli_error:ratio_rate5m{`+latency+`}`, "too slow"),
				)}.timeseries())
	}
	return b
}
