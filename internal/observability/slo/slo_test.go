package slo

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	_ "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	_ "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	_ "github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1"
	_ "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
)

func TestCommittedRulesAreFresh(t *testing.T) {
	want, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", "..", File))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is stale; run make generate (-generated +committed):\n%s", File, diff)
	}
}

// TestEveryUnaryProcedureHasAThreshold: a procedure added to an API's
// proto must be given a latency threshold (and so join both SLOs), or the
// SLOs silently stop covering the API. Server streams are left out: their
// duration is a session, not a response time.
func TestEveryUnaryProcedureHasAThreshold(t *testing.T) {
	for _, a := range APIs {
		t.Run(a.Name, func(t *testing.T) {
			d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(a.Service))
			if err != nil {
				t.Fatalf("service %s: %v", a.Service, err)
			}
			methods := d.(protoreflect.ServiceDescriptor).Methods()
			var unary []string
			for i := range methods.Len() {
				if m := methods.Get(i); !m.IsStreamingClient() && !m.IsStreamingServer() {
					unary = append(unary, string(m.Name()))
				}
			}
			got := a.Procedures()
			if dup := duplicates(got); len(dup) > 0 {
				t.Errorf("procedures with two thresholds: %v", dup)
			}
			slices.Sort(unary)
			slices.Sort(got)
			if diff := cmp.Diff(unary, got); diff != "" {
				t.Errorf("thresholds do not cover exactly the unary procedures of %s (-proto +thresholds):\n%s", a.Service, diff)
			}
			for _, th := range a.Latency {
				for _, r := range th.Routes {
					if !slices.Contains(a.Routes, r) {
						t.Errorf("route %s has a threshold but is not in Routes", r)
					}
				}
			}
		})
	}
}

func duplicates(xs []string) []string {
	seen := map[string]bool{}
	var dup []string
	for _, x := range xs {
		if seen[x] {
			dup = append(dup, x)
		}
		seen[x] = true
	}
	return dup
}
