package waiver_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/waiver"
)

var today = time.Date(2026, 6, 1, 15, 0, 0, 0, time.UTC)

func TestParseProblems(t *testing.T) {
	entry := "- policy: p\n  rule: r\n  selector: {kind: Deployment, namespace: ns, name: a}\n  owner: o\n  reason: why\n"
	tests := []struct {
		name       string
		in         string
		wantValid  int
		wantRules  []string
		wantLines  []int
		wantErrNil bool
	}{
		{"empty file", "", 0, nil, nil, true},
		{"empty list", "waivers: []\n", 0, nil, nil, true},
		{"valid", "waivers:\n" + entry + "  expires: \"2026-06-01\"\n", 1, nil, nil, true},
		{"expired yesterday", "waivers:\n" + entry + "  expires: \"2026-05-31\"\n", 0, []string{"expired"}, []int{2}, true},
		{"missing owner", "waivers:\n- policy: p\n  reason: why\n  expires: \"2027-01-01\"\n", 0, []string{"malformed"}, []int{2}, true},
		{"missing reason and expiry", "waivers:\n- policy: p\n  owner: o\n", 0, []string{"malformed"}, []int{2}, true},
		{"bad date", "waivers:\n" + entry + "  expires: \"tomorrow\"\n", 0, []string{"malformed"}, []int{2}, true},
		{"unknown field", "waivers:\n" + entry + "  expires: \"2027-01-01\"\n  approved: yes\n", 0, []string{"malformed"}, []int{2}, true},
		{"unknown selector field", "waivers:\n- policy: p\n  selector: {kind: A, label: x}\n  owner: o\n  reason: r\n  expires: \"2027-01-01\"\n", 0, []string{"malformed"}, []int{2}, true},
		{"second entry bad", "waivers:\n" + entry + "  expires: \"2027-01-01\"\n" + "- policy: q\n", 1, []string{"malformed"}, []int{8}, true},
		{"not yaml", "waivers: [\n", 0, nil, nil, false},
		{"unknown top-level key", "exceptions: []\n", 0, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := waiver.Parse("policies/waivers.yaml", []byte(tt.in), today)
			if (err == nil) != tt.wantErrNil {
				t.Fatalf("err = %v", err)
			}
			if len(set.Waivers) != tt.wantValid {
				t.Errorf("%d valid waivers, want %d", len(set.Waivers), tt.wantValid)
			}
			var rules []string
			var lines []int
			for _, p := range set.Problems {
				rules = append(rules, p.Rule)
				lines = append(lines, p.Line)
				if p.Level != finding.Deny || p.Policy != waiver.Policy || p.File != "policies/waivers.yaml" {
					t.Errorf("problem %+v", p)
				}
			}
			if diff := cmp.Diff(tt.wantRules, rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantLines, lines); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApply(t *testing.T) {
	set, err := waiver.Parse("w.yaml", []byte(`waivers:
- policy: kubernetes.workload
  rule: probes
  selector: {kind: Deployment, name: "whisper-*"}
  owner: "@platform"
  reason: batch job has no port
  expires: "2027-01-01"
`), today)
	if err != nil || len(set.Problems) > 0 {
		t.Fatal(err, set.Problems)
	}
	f := func(policy, rule, kind, name string, level finding.Level) finding.Finding {
		return finding.Finding{Policy: policy, Rule: rule, Kind: kind, Namespace: "whisper", Name: name, Level: level}
	}
	in := []finding.Finding{
		f("kubernetes.workload", "probes", "Deployment", "whisper-ingest", finding.Deny),
		f("kubernetes.workload", "probes", "Deployment", "redis", finding.Deny),
		f("kubernetes.workload", "image-tag", "Deployment", "whisper-ingest", finding.Deny),
		f("kubernetes.workload", "probes", "StatefulSet", "whisper-ingest", finding.Deny),
		f("kubernetes.workload", "probes", "Deployment", "whisper-decide", finding.Warn),
	}
	set.Apply(in)
	var got []finding.Level
	for _, x := range in {
		got = append(got, x.Level)
	}
	want := []finding.Level{finding.Waived, finding.Deny, finding.Deny, finding.Deny, finding.Warn}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("levels (-want +got):\n%s", diff)
	}
	if in[0].WaivedBy != "@platform" {
		t.Errorf("WaivedBy = %q", in[0].WaivedBy)
	}
}
