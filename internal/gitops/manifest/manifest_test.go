package manifest_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/whisperhq/whisper/internal/gitops/manifest"
)

func TestParsePositions(t *testing.T) {
	type pos struct {
		Index, Line int
		Kind        string
	}
	tests := []struct {
		name string
		in   string
		want []pos
	}{
		{"single", "kind: A\n", []pos{{0, 1, "A"}}},
		{"leading comments and separator", "# c\n---\n# d\nkind: A\n---\nkind: B\n", []pos{{0, 4, "A"}, {1, 6, "B"}}},
		{"comment-only documents are not counted", "kind: A\n---\n# nothing\n---\nkind: B\n", []pos{{0, 1, "A"}, {1, 5, "B"}}},
		{"separator with comment", "--- # first\nkind: A\n", []pos{{0, 2, "A"}}},
		{"document end marker", "kind: A\n...\n---\nkind: B\n", []pos{{0, 1, "A"}, {1, 4, "B"}}},
		{"block scalar containing dashes", "kind: A\ndata: |\n  ---\n  x\n---\nkind: B\n", []pos{{0, 1, "A"}, {1, 6, "B"}}},
		{"null document", "~\n---\nkind: B\n", []pos{{1, 3, "B"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, errs := manifest.Parse("f.yaml", []byte(tt.in))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			var got []pos
			for _, d := range docs {
				got = append(got, pos{d.Index, d.Line, d.Kind()})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrorsDoNotHideNeighbours(t *testing.T) {
	docs, errs := manifest.Parse("f.yaml", []byte("kind: A\n---\nkind: [\n---\n- a list\n---\nkind: D\n"))
	if len(docs) != 2 || docs[1].Kind() != "D" || docs[1].Index != 3 {
		t.Errorf("docs = %+v", docs)
	}
	if len(errs) != 2 || errs[0].Index != 1 || errs[1].Index != 2 || errs[0].Line != 3 {
		t.Errorf("errs = %v", errs)
	}
}

// YAML 1.1 as Kubernetes reads it: a bare n is false, even as a key.
func TestKubernetesYAMLSemantics(t *testing.T) {
	docs, _ := manifest.Parse("f.yaml", []byte("kind: A\nmetadata:\n  name: a\n  annotations:\n    x: \"1\"\nspec:\n  count: 3\n  n: 1\n"))
	if got := docs[0].Annotations()["x"]; got != "1" {
		t.Errorf("annotation = %q", got)
	}
	if got := string(docs[0].JSON); !strings.Contains(got, `"count":3`) || !strings.Contains(got, `"false":1`) {
		t.Errorf("json = %s", got)
	}
}

func TestStrictDecode(t *testing.T) {
	dec, err := manifest.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		wantErr string // substring; "" means valid
	}{
		{"valid deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replicas: 2\n  selector: {matchLabels: {a: b}}\n", ""},
		{"unknown field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replica: 2\n", `unknown field "spec.replica"`},
		{"wrong case is unknown", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  Ports: []\n", `unknown field "spec.Ports"`},
		{"duplicate field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {}\ndata: {}\n", "already set"},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replicas: two\n", "cannot unmarshal"},
		{"quantity", "apiVersion: v1\nkind: LimitRange\nmetadata: {name: a}\nspec:\n  limits:\n  - type: Container\n    max: {memory: lots}\n", "quantities must match"},
		{"argo application", "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec:\n  project: p\n  destination: {server: s}\n  source: {repoURL: r, path: p}\n", ""},
		{"argo application unknown field", "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec:\n  projekt: p\n", `unknown field "spec.projekt"`},
		{"appproject", "apiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata: {name: a}\nspec:\n  sourceRepos: ['*']\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, errs := manifest.Parse("f.yaml", []byte(tt.in))
			if len(errs) > 0 {
				// Duplicate keys already fail the strict YAML parse.
				if tt.wantErr != "" && strings.Contains(errs[0].Error(), tt.wantErr) {
					return
				}
				t.Fatal(errs)
			}
			if !dec.Knows(docs[0].APIVersion(), docs[0].Kind()) {
				t.Fatalf("decoder does not know %s", docs[0].Kind())
			}
			err := dec.Decode(docs[0])
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	if dec.Knows("example.com/v1", "Widget") {
		t.Error("decoder claims to know Widget")
	}
}

func TestFieldLine(t *testing.T) {
	src := []byte("kind: ConfigMap\n---\n# the deployment\nkind: Deployment\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - name: a\n        imag: x\n      - name: b\n        securityContext:\n          bogus: true\n")
	tests := []struct {
		path string
		line int
		ok   bool
	}{
		{"spec.replicas", 6, true},
		{"spec.template.spec.containers[0].imag", 11, true},
		{"spec.template.spec.containers[1].securityContext.bogus", 14, true},
		{"spec.template.spec.containers[2].name", 0, false},
		{"spec.missing", 0, false},
	}
	for _, tt := range tests {
		line, ok := manifest.FieldLine(src, 1, tt.path)
		if line != tt.line || ok != tt.ok {
			t.Errorf("FieldLine(%q) = %d, %v; want %d, %v", tt.path, line, ok, tt.line, tt.ok)
		}
	}
	if path, ok := manifest.ErrorFieldPath(`apps/v1 Deployment: unknown field "spec.replica"; unknown field "x"`); !ok || path != "spec.replica" {
		t.Errorf("ErrorFieldPath = %q, %v", path, ok)
	}
}
