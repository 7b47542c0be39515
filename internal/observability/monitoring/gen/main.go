// Command gen writes the monitoring objects generated from dashboards/ and
// alerts/ into environments/base/monitoring, because Argo CD renders that
// folder with plain kustomize and kustomize cannot read files outside it.
// Run it from the repository root: go run ./internal/observability/monitoring/gen
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/whisperhq/whisper/internal/observability/monitoring"
)

func main() {
	root := flag.String("root", ".", "repository root holding dashboards/ and alerts/")
	out := flag.String("out", filepath.Join("environments", "base", "monitoring"), "folder to write the objects into")
	flag.Parse()
	if err := run(*root, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(root, dir string) error {
	files, err := monitoring.Generate(os.DirFS(root))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Objects of a dashboard or rule file that is gone go too; files we
	// did not generate (the README) stay.
	old, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if _, keep := files[filepath.Base(f)]; keep {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if monitoring.Generated(data) {
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
