package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whisperhq/whisper/internal/gitops/cli"
	"github.com/whisperhq/whisper/services/targets"
)

const repoRoot = "../.."

func check(t *testing.T, root string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), []string{"check", "--root", root, "--select", "observability"},
		&out, &errb, cli.WithMetricCatalogue(targets.MetricCatalogue))
	if errb.Len() > 0 {
		t.Logf("stderr: %s", errb.String())
	}
	return code, out.String()
}

// TestCheckRunsTheObservabilityGate checks the wiring main does: with the
// catalogue, check holds the dashboards to the code's metrics.
func TestCheckRunsTheObservabilityGate(t *testing.T) {
	if code, out := check(t, repoRoot); code != cli.ExitOK {
		t.Fatalf("check of the repository: exit %d\n%s", code, out)
	}

	root := t.TempDir()
	for _, dir := range []string{"environments", "gitops", "policies", "dashboards", "alerts"} {
		if err := os.CopyFS(filepath.Join(root, dir), os.DirFS(filepath.Join(repoRoot, dir))); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(root, "dashboards", "business.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.ReplaceAll(string(data), "whisper_ingest_events_accepted_total", "whisper_ingest_events_total")
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := check(t, root)
	if code != cli.ExitFindings {
		t.Errorf("check of a broken dashboard: exit %d, want %d", code, cli.ExitFindings)
	}
	for _, want := range []string{"Panel/Events accepted by type", "observability.contract/unknown-metric", "whisper_ingest_events_total"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
