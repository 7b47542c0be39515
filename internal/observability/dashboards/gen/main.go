// Command gen writes the dashboards defined in Go to dashboards/*.json, so
// that the committed JSON Grafana provisions is always what the code says.
// Run it from the repository root: go run ./internal/observability/dashboards/gen
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/whisperhq/whisper/internal/observability/dashboards"
)

func main() {
	out := flag.String("out", "dashboards", "folder to write the dashboards into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := dashboards.Render()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Dashboards removed from the code go from the folder too.
	old, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if _, keep := files[filepath.Base(f)]; !keep {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
