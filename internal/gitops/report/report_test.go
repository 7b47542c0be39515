package report_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/report"
)

func TestGitHubEscaping(t *testing.T) {
	var b bytes.Buffer
	err := report.Write(&b, "github", report.Report{Findings: []finding.Finding{{
		Env: "dev", File: "a,b:c.yaml", Line: 0, Kind: "Pod", Name: "p",
		Policy: "x", Rule: "y", Level: finding.Warn, Message: "100% bad\nreally",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	want := "::warning file=a%2Cb%3Ac.yaml,line=1,title=x/y::[dev] Pod/p: 100%25 bad%0Areally\n"
	if got := strings.SplitAfter(b.String(), "\n")[0]; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestEmptyReports(t *testing.T) {
	for _, format := range report.Formats() {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			if err := report.Write(&b, format, report.Report{Policies: []string{"p"}}); err != nil {
				t.Fatal(err)
			}
			if b.Len() == 0 {
				t.Error("no output")
			}
		})
	}
	var b bytes.Buffer
	_ = report.Write(&b, "json", report.Report{})
	var rep map[string]any
	if err := json.Unmarshal(b.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if res, ok := rep["results"].([]any); !ok || len(res) != 0 {
		t.Errorf("results must be an empty array, got %v", rep["results"])
	}
	if err := report.Write(&b, "yaml", report.Report{}); err == nil {
		t.Error("unknown format accepted")
	}
}
