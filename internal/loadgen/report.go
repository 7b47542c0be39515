package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The targets of the ingestion benchmark.
const (
	TargetEventsPerSec = 100_000
	TargetP99          = 100 * time.Millisecond
	TargetRatio        = 0.50
)

// Report is a whole benchmark run, as printed and as --json.
type Report struct {
	Machine Machine        `json:"machine"`
	Load    LoadShape      `json:"load"`
	Ingest  IngestResult   `json:"ingest"`
	Ceiling *CeilingResult `json:"ceiling,omitempty"`
	// Ratio is ingest events/s over ceiling records/s; zero without a
	// ceiling.
	Ratio float64 `json:"ratio"`
	// CPURatio is the ceiling's CPU time per record over ingestion's per
	// event, all watched processes together: the ratio the two would have
	// on equal CPU. Zero unless both phases watched the same processes.
	CPURatio float64  `json:"cpu_ratio,omitempty"`
	Targets  []Target `json:"targets"`
}

// Machine says where the numbers come from.
type Machine struct {
	CPUs int    `json:"cpus"`
	Note string `json:"note"`
}

// LoadShape is what was sent.
type LoadShape struct {
	BatchSize     int           `json:"batch_size"`
	AvgEventBytes float64       `json:"avg_event_bytes"`
	Templates     int           `json:"templates"`
	Warmup        time.Duration `json:"warmup_ns"`
	Duration      time.Duration `json:"duration_ns"`
}

// Target is one pass/fail line.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Pass bool   `json:"pass"`
}

// Judge fills Ratio and Targets from the results.
func (r *Report) Judge() {
	r.Ratio, r.CPURatio = 0, 0
	r.Targets = []Target{{
		Name: "ingest throughput", Want: fmt.Sprintf(">= %d events/s", TargetEventsPerSec),
		Got: fmt.Sprintf("%.0f events/s", r.Ingest.EventsPerSec), Pass: r.Ingest.EventsPerSec >= TargetEventsPerSec,
	}, {
		Name: "ingest p99 latency", Want: "< " + TargetP99.String(),
		Got: ms(r.Ingest.Latency.P99), Pass: r.Ingest.Latency.Count > 0 && r.Ingest.Latency.P99 < TargetP99,
	}}
	if r.Ceiling != nil && r.Ceiling.RecordsPerSec > 0 {
		r.Ratio = r.Ingest.EventsPerSec / r.Ceiling.RecordsPerSec
		in, c := r.Ingest.CPUPerEvent, r.Ceiling.CPUPerRecord
		if len(in) > 0 && slices.Equal(slices.Sorted(maps.Keys(in)), slices.Sorted(maps.Keys(c))) && in.Total() > 0 {
			r.CPURatio = c.Total() / in.Total()
		}
		r.Targets = append(r.Targets, Target{
			Name: "ingest / ceiling", Want: fmt.Sprintf(">= %.0f%%", TargetRatio*100),
			Got: fmt.Sprintf("%.1f%%", r.Ratio*100), Pass: r.Ratio >= TargetRatio,
		})
	}
}

// Passed reports whether every target was met.
func (r *Report) Passed() bool {
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return true
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// WriteText prints the report as a table.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%d CPUs; %s\n", r.Machine.CPUs, r.Machine.Note)
	fmt.Fprintf(tw, "load\tbatches of %d events, %.0f bytes/event, %d templates, unique messageIds\n",
		r.Load.BatchSize, r.Load.AvgEventBytes, r.Load.Templates)
	fmt.Fprintf(tw, "window\t%v measured after %v warm-up\n\n", r.Load.Duration, r.Load.Warmup)

	in := r.Ingest
	fmt.Fprintf(tw, "INGEST (POST /v1/batch)\n")
	fmt.Fprintf(tw, "  connections\t%d\n", in.Connections)
	fmt.Fprintf(tw, "  requests\t%d\n", in.Measured.Requests)
	fmt.Fprintf(tw, "  accepted events\t%d\n", in.Measured.Accepted)
	fmt.Fprintf(tw, "  accepted events/s\t%.0f\n", in.EventsPerSec)
	fmt.Fprintf(tw, "  latency p50\t%s\n", ms(in.Latency.P50))
	fmt.Fprintf(tw, "  latency p99\t%s\n", ms(in.Latency.P99))
	fmt.Fprintf(tw, "  latency max\t%s\n", ms(in.Latency.Max))
	if len(in.Measured.Errors) == 0 {
		fmt.Fprintf(tw, "  errors\tnone\n")
	}
	for _, k := range slices.Sorted(maps.Keys(in.Measured.Errors)) {
		fmt.Fprintf(tw, "  errors %s\t%d\n", k, in.Measured.Errors[k])
	}
	for _, k := range slices.Sorted(maps.Keys(in.ErrorSamples)) {
		fmt.Fprintf(tw, "  sample %s\t%s\n", k, in.ErrorSamples[k])
	}
	if len(in.CPUPerEvent) > 0 {
		fmt.Fprintf(tw, "  CPU per event\t%s\n", in.CPUPerEvent)
	}
	if c := r.Ceiling; c != nil {
		fmt.Fprintf(tw, "\nCEILING (franz-go straight to the broker)\n")
		fmt.Fprintf(tw, "  topic\t%s (%d partitions, scratch)\n", c.Topic, c.Partitions)
		fmt.Fprintf(tw, "  records in flight\t%d max\n", c.InFlight)
		fmt.Fprintf(tw, "  value size\t%.0f bytes avg\n", c.AvgValueBytes)
		fmt.Fprintf(tw, "  acked records\t%d\n", c.Acked)
		fmt.Fprintf(tw, "  acked records/s\t%.0f\n", c.RecordsPerSec)
		if len(c.Errors) == 0 {
			fmt.Fprintf(tw, "  errors\tnone\n")
		}
		for _, k := range slices.Sorted(maps.Keys(c.Errors)) {
			fmt.Fprintf(tw, "  errors %s\t%d\n", k, c.Errors[k])
		}
		if len(c.CPUPerRecord) > 0 {
			fmt.Fprintf(tw, "  CPU per record\t%s\n", c.CPUPerRecord)
		}
		fmt.Fprintf(tw, "\nratio ingest/ceiling\t%.1f%%\n", r.Ratio*100)
		if r.CPURatio > 0 {
			fmt.Fprintf(tw, "ratio at equal CPU\t%.1f%% (ceiling's CPU per record over ingestion's per event)\n", r.CPURatio*100)
		}
	} else {
		fmt.Fprintf(tw, "\nCEILING\tskipped (no --brokers)\n")
	}
	fmt.Fprintln(tw)
	for _, t := range r.Targets {
		verdict := "FAIL"
		if t.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(tw, "%s\t%s: %s (target %s)\n", verdict, t.Name, t.Got, t.Want)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}
