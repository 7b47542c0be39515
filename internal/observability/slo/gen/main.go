// Command gen writes the SLO rules of internal/observability/slo to
// alerts/slo-apis.yaml; run it from the repository root (make generate).
package main

import (
	"log"
	"os"

	"github.com/whisperhq/whisper/internal/observability/slo"
)

func main() {
	out, err := slo.Render()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(slo.File, out, 0o644); err != nil {
		log.Fatal(err)
	}
}
