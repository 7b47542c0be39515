// Package dashboards defines Whisper's Grafana dashboards as Go code with
// the Grafana Foundation SDK, so that they are reviewed like code, share
// their queries' conventions (datasource variable, $__rate_interval, a unit
// and a description on every panel) and cannot drift from what is
// committed: dashboards/*.json is generated from here (see gen/) and a test
// fails when it is stale. The observability contract gate then checks every
// query against the metrics the code registers.
package dashboards

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"

	"github.com/whisperhq/whisper/internal/observability/slo"
)

// The objectives of every public API's SLOs, as recorded by alerts/slo.yaml
// and alerts/slo-apis.yaml.
const (
	AvailabilityObjective = slo.AvailabilityObjective
	LatencyObjective      = slo.LatencyObjective
)

// Render returns every dashboard as indented JSON, keyed by file name.
func Render() (map[string][]byte, error) {
	builders := map[string]*dashboard.DashboardBuilder{
		"overview.json": Overview(),
		"ingest.json":   Ingest(),
		"business.json": Business(),
		"profiles.json": Profiles(),
		"decide.json":   Decide(),
		"content.json":  Content(),
		"deliver.json":  Deliver(),
	}
	out := map[string][]byte{}
	for file, b := range builders {
		d, err := b.Build()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		data, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out[file] = append(data, '\n')
	}
	return out, nil
}

// datasource points every panel at the dashboard's datasource variable, so
// one dashboard serves every environment's Prometheus.
func datasource() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}
}

func newDashboard(uid, title, description string, tags ...string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags(append([]string{"whisper"}, tags...)).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Time("now-6h", "now").
		Refresh("1m").
		Timezone("utc").
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus"))
}

// withNamespace adds the namespace variable; queries filter on
// namespace=~"$namespace" so staging and production are told apart when
// one Prometheus scrapes both.
func withNamespace(b *dashboard.DashboardBuilder) *dashboard.DashboardBuilder {
	return b.WithVariable(dashboard.NewQueryVariableBuilder("namespace").
		Label("Namespace").
		Datasource(datasource()).
		Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(whisper_rpc_requests_total, namespace)")}).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		IncludeAll(true).
		AllValue(".*").
		Multi(true).
		Current(dashboard.VariableOption{
			Text:  dashboard.StringOrArrayOfString{String: cog.ToPtr("All")},
			Value: dashboard.StringOrArrayOfString{String: cog.ToPtr("$__all")},
		}))
}

// ns is the namespace matcher of every query of a dashboard with the
// namespace variable.
const ns = `namespace=~"$namespace"`

func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasource()).
		Expr(strings.TrimSpace(expr)).
		LegendFormat(legend)
}

type panel struct {
	title, description, unit string
	width, height            uint32
	queries                  []*prometheus.DataqueryBuilder
}

func (p panel) timeseries() *timeseries.PanelBuilder {
	b := timeseries.NewPanelBuilder().
		Title(p.title).
		Description(p.description).
		Unit(p.unit).
		Datasource(datasource()).
		Span(or(p.width, 12)).
		Height(or(p.height, 8)).
		FillOpacity(10).
		Min(0).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true).
			Calcs([]string{"mean", "max", "lastNotNull"}))
	for _, q := range p.queries {
		b.WithTarget(q)
	}
	return b
}

func (p panel) stat(decimals float64, thresholds ...dashboard.Threshold) *stat.PanelBuilder {
	b := stat.NewPanelBuilder().
		Title(p.title).
		Description(p.description).
		Unit(p.unit).
		Decimals(decimals).
		Datasource(datasource()).
		Span(or(p.width, 6)).
		Height(or(p.height, 5)).
		GraphMode(common.BigValueGraphModeArea).
		ColorMode(common.BigValueColorModeValue).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
	if len(thresholds) > 0 {
		b.Thresholds(dashboard.NewThresholdsConfigBuilder().
			Mode(dashboard.ThresholdsModeAbsolute).
			Steps(thresholds))
	}
	for _, q := range p.queries {
		b.WithTarget(q.Instant())
	}
	return b
}

func or(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

// step is a threshold step: value nil is the base.
func step(value *float64, color string) dashboard.Threshold {
	return dashboard.Threshold{Value: value, Color: color}
}

func row(title string) *dashboard.RowBuilder { return dashboard.NewRowBuilder(title) }
