package contract

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Type is the kind of a metric as the code registers it.
type Type string

// Metric types. Unknown is a metric the code describes but whose type
// could not be observed (a custom collector that emits nothing yet): its
// name and labels are still checked, its series suffixes are not.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
	Summary   Type = "summary"
	Untyped   Type = "untyped"
	Unknown   Type = "unknown"
)

// Metric is one metric family a process can expose.
type Metric struct {
	Name string
	Type Type
	// Labels are the variable and constant label names, sorted; le and
	// quantile are implied by the type.
	Labels []string
	// Buckets are the classic histogram upper bounds, +Inf excluded.
	Buckets []float64
	// Native is set when a histogram is also exposed as a native
	// histogram, so its bare name may be queried.
	Native bool
}

// Catalogue is the set of metrics the code registers.
type Catalogue struct {
	metrics map[string]Metric
}

// NewCatalogue returns a catalogue of ms; a later metric of the same name
// replaces an earlier one.
func NewCatalogue(ms ...Metric) *Catalogue {
	c := &Catalogue{metrics: make(map[string]Metric, len(ms))}
	for _, m := range ms {
		c.metrics[m.Name] = m
	}
	return c
}

// Metrics returns every metric, sorted by name.
func (c *Catalogue) Metrics() []Metric {
	out := make([]Metric, 0, len(c.metrics))
	for _, m := range c.metrics {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Metric returns the metric family named name.
func (c *Catalogue) Metric(name string) (Metric, bool) {
	m, ok := c.metrics[name]
	return m, ok
}

// series resolves a series name as Prometheus stores it (x_bucket, x_sum,
// x_count, a counter's x_total) to its family. suffix is what was added to
// the family name.
func (c *Catalogue) series(name string) (m Metric, suffix string, ok bool) {
	if m, ok := c.metrics[name]; ok {
		switch {
		case m.Type == Histogram && !m.Native:
			// A classic histogram has no series of its bare name.
		default:
			return m, "", true
		}
	}
	for _, s := range []string{"_bucket", "_sum", "_count", "_total"} {
		base, found := strings.CutSuffix(name, s)
		if !found {
			continue
		}
		m, ok := c.metrics[base]
		if !ok {
			continue
		}
		switch {
		case s == "_bucket" && m.Type == Histogram,
			(s == "_sum" || s == "_count") && (m.Type == Histogram || m.Type == Summary),
			s == "_total" && m.Type == Counter:
			return m, s, true
		}
	}
	return Metric{}, "", false
}

// Recorder is a prometheus.Registerer that registers on a registry and
// remembers every collector, so that a catalogue can be built from what the
// code registers, including vectors nothing has observed yet (which
// Gather alone never shows).
type Recorder struct {
	reg *prometheus.Registry

	mu         sync.Mutex
	collectors []prometheus.Collector
}

// NewRecorder returns a recorder registering on reg. Collectors registered
// on reg directly (the runtime collectors of telemetry.NewRegistry) are
// still catalogued, through reg's Describe and Gather.
func NewRecorder(reg *prometheus.Registry) *Recorder { return &Recorder{reg: reg} }

// Register implements prometheus.Registerer.
func (r *Recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.collectors = append(r.collectors, c)
	r.mu.Unlock()
	return nil
}

// MustRegister implements prometheus.Registerer.
func (r *Recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister implements prometheus.Registerer.
func (r *Recorder) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.Index(r.collectors, c); i >= 0 {
		r.collectors = slices.Delete(r.collectors, i, i+1)
	}
	return r.reg.Unregister(c)
}

// Catalogue describes every registered collector. Vectors get one child
// with placeholder label values first, so that their type, labels and
// buckets show in Gather; the collectors are meant for this catalogue only.
func (r *Recorder) Catalogue() (*Catalogue, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.collectors {
		for _, d := range describe(c) {
			n := len(parseDesc(d).variable)
			lvs := slices.Repeat([]string{"catalogue"}, n)
			switch v := c.(type) {
			case *prometheus.CounterVec:
				v.WithLabelValues(lvs...)
			case *prometheus.GaugeVec:
				v.WithLabelValues(lvs...)
			case *prometheus.HistogramVec:
				v.WithLabelValues(lvs...)
			case *prometheus.SummaryVec:
				v.WithLabelValues(lvs...)
			}
		}
	}
	metrics := map[string]Metric{}
	for _, d := range describe(r.reg) {
		p := parseDesc(d)
		if p.name == "" {
			return nil, fmt.Errorf("cannot read metric description %s", d)
		}
		labels := append(append([]string(nil), p.variable...), p.constant...)
		metrics[p.name] = Metric{Name: p.name, Type: Unknown, Labels: sortedUnique(labels)}
	}
	families, err := r.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	for _, f := range families {
		m := metrics[f.GetName()]
		m.Name = f.GetName()
		m.Type = typeOf(f.GetType())
		labels := m.Labels
		for _, s := range f.GetMetric() {
			for _, lp := range s.GetLabel() {
				labels = append(labels, lp.GetName())
			}
			if h := s.GetHistogram(); h != nil {
				for _, b := range h.GetBucket() {
					if !math.IsInf(b.GetUpperBound(), +1) {
						m.Buckets = append(m.Buckets, b.GetUpperBound())
					}
				}
				if h.Schema != nil || h.GetZeroThreshold() > 0 || len(h.GetPositiveSpan()) > 0 {
					m.Native = true
				}
			}
		}
		m.Labels = sortedUnique(labels)
		slices.Sort(m.Buckets)
		m.Buckets = slices.Compact(m.Buckets)
		metrics[m.Name] = m
	}
	c := &Catalogue{metrics: metrics}
	return c, nil
}

func typeOf(t dto.MetricType) Type {
	switch t {
	case dto.MetricType_COUNTER:
		return Counter
	case dto.MetricType_GAUGE:
		return Gauge
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return Histogram
	case dto.MetricType_SUMMARY:
		return Summary
	case dto.MetricType_UNTYPED:
		return Untyped
	}
	return Unknown
}

func describe(c prometheus.Collector) []*prometheus.Desc {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var out []*prometheus.Desc
	for d := range ch {
		out = append(out, d)
	}
	return out
}

type descParts struct {
	name               string
	variable, constant []string
}

var (
	descName     = regexp.MustCompile(`^Desc\{fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
	descConstant = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	descVariable = regexp.MustCompile(`(?:c\()?([a-zA-Z_][a-zA-Z0-9_]*)\)?`)
)

// parseDesc reads a Desc's name and label names from its String form, the
// only way client_golang exposes them.
func parseDesc(d *prometheus.Desc) descParts {
	s := d.String()
	var p descParts
	if m := descName.FindStringSubmatch(s); m != nil {
		p.name = m[1]
	}
	const constKey, varKey = "constLabels: {", "}, variableLabels: {"
	vi := strings.LastIndex(s, varKey)
	ci := strings.LastIndex(s[:max(vi, 0)], constKey)
	if vi < 0 || ci < 0 {
		return descParts{}
	}
	for _, m := range descConstant.FindAllStringSubmatch(s[ci+len(constKey):vi], -1) {
		p.constant = append(p.constant, m[1])
	}
	vars := strings.TrimSuffix(s[vi+len(varKey):], "}}")
	for _, v := range strings.Split(vars, ",") {
		if m := descVariable.FindStringSubmatch(strings.TrimSpace(v)); m != nil {
			p.variable = append(p.variable, m[1])
		}
	}
	return p
}

func sortedUnique(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return slices.Compact(out)
}
