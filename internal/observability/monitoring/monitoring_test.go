package monitoring

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/whisperhq/whisper/internal/gitops/render"
)

// root is the repository root, seen from this package.
var root = filepath.Join("..", "..", "..")

// committed is where gen writes the objects.
var committed = filepath.Join(root, "environments", "base", "monitoring")

func generate(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := Generate(os.DirFS(root))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestCommittedObjectsAreFresh(t *testing.T) {
	want := generate(t)
	entries, err := os.ReadDir(committed)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(committed, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if Generated(data) {
			got = append(got, e.Name())
		}
	}
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	slices.Sort(wantNames)
	if diff := cmp.Diff(wantNames, got); diff != "" {
		t.Fatalf("environments/base/monitoring holds other generated files than dashboards/ and alerts/ give; run make generate (-want +got):\n%s", diff)
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(committed, name))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(data), string(got)); diff != "" {
			t.Errorf("environments/base/monitoring/%s is stale; run make generate (-generated +committed):\n%s", name, diff)
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	first := generate(t)
	for range 5 {
		if diff := cmp.Diff(first, generate(t)); diff != "" {
			t.Fatalf("two runs differ (-first +later):\n%s", diff)
		}
	}
}

// normalise round-trips v through JSON, so that values decoded by
// different YAML libraries (int against float64, map types) compare equal
// exactly when the API server would store the same thing.
func normalise(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// sourceGroups reads alerts/*.yaml as promtool does (yaml.v3), by rule
// file base name.
func sourceGroups(t *testing.T) map[string]any {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "alerts", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no alerts/*.yaml")
	}
	out := map[string]any{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Groups any `yaml:"groups"`
		}
		if err := yaml.Unmarshal(data, &f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".yaml")] = normalise(t, f.Groups)
	}
	return out
}

type ruleObject struct {
	APIVersion string `json:"apiVersion" yaml:"apiVersion"`
	Kind       string `json:"kind" yaml:"kind"`
	Metadata   struct {
		Name        string            `json:"name" yaml:"name"`
		Namespace   string            `json:"namespace" yaml:"namespace"`
		Labels      map[string]string `json:"labels" yaml:"labels"`
		Annotations map[string]string `json:"annotations" yaml:"annotations"`
	} `json:"metadata" yaml:"metadata"`
	Spec struct {
		Groups any `json:"groups" yaml:"groups"`
	} `json:"spec" yaml:"spec"`
}

// TestRuleGroupsEqualSource decodes every generated PrometheusRule with
// both the YAML library promtool uses and the one Kubernetes clients use,
// and compares spec.groups with the rule file it came from.
func TestRuleGroupsEqualSource(t *testing.T) {
	want := sourceGroups(t)
	files := generate(t)
	decoders := []struct {
		name   string
		decode func([]byte, *ruleObject) error
	}{
		{"yaml.v3", func(b []byte, o *ruleObject) error { return yaml.Unmarshal(b, o) }},
		{"sigs.k8s.io/yaml", func(b []byte, o *ruleObject) error { return sigsyaml.UnmarshalStrict(b, o) }},
	}
	for rule, groups := range want {
		file := "prometheusrule-" + rule + ".yaml"
		data, ok := files[file]
		if !ok {
			t.Errorf("alerts/%s.yaml: no %s generated", rule, file)
			continue
		}
		for _, d := range decoders {
			var o ruleObject
			if err := d.decode(data, &o); err != nil {
				t.Fatalf("%s with %s: %v", file, d.name, err)
			}
			if o.APIVersion != "monitoring.coreos.com/v1" || o.Kind != "PrometheusRule" {
				t.Errorf("%s: got %s %s, want monitoring.coreos.com/v1 PrometheusRule", file, o.APIVersion, o.Kind)
			}
			if o.Metadata.Name != "whisper-"+rule || o.Metadata.Namespace != Namespace {
				t.Errorf("%s: got %s/%s, want %s/whisper-%s", file, o.Metadata.Namespace, o.Metadata.Name, Namespace, rule)
			}
			if diff := cmp.Diff(groups, normalise(t, o.Spec.Groups)); diff != "" {
				t.Errorf("%s read with %s: spec.groups differ from alerts/%s.yaml (-source +generated):\n%s", file, d.name, rule, diff)
			}
		}
	}
}

// TestRenderedRulesEqualSource follows the rules through kustomize, as
// Argo CD applies them: every environment gets every rule file, unchanged.
func TestRenderedRulesEqualSource(t *testing.T) {
	want := sourceGroups(t)
	for _, env := range []string{"dev", "staging", "production"} {
		t.Run(env, func(t *testing.T) {
			res, err := render.Render(root, render.Dir(env))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]any{}
			dashboards := map[string]string{}
			for _, d := range res.Docs {
				switch {
				case d.Kind() == "PrometheusRule" && d.Namespace() == Namespace:
					spec, _ := d.Object["spec"].(map[string]any)
					got[strings.TrimPrefix(d.Name(), "whisper-")] = normalise(t, spec["groups"])
				case d.Kind() == "ConfigMap" && d.Namespace() == Namespace:
					data, _ := d.Object["data"].(map[string]any)
					for k, v := range data {
						s, _ := v.(string)
						dashboards[k] = s
					}
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("rendered PrometheusRules differ from alerts/ (-source +rendered):\n%s", diff)
			}
			paths, err := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
			if err != nil {
				t.Fatal(err)
			}
			wantDash := map[string]string{}
			for _, p := range paths {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				wantDash[filepath.Base(p)] = string(data)
			}
			if diff := cmp.Diff(wantDash, dashboards); diff != "" {
				t.Errorf("rendered dashboard ConfigMaps differ from dashboards/ (-source +rendered):\n%s", diff)
			}
		})
	}
}

func TestDashboardConfigMap(t *testing.T) {
	src := fstest.MapFS{
		"dashboards/a.json": {Data: []byte("{\n  \"title\": \"A\"\n}\n")},
	}
	files, err := Generate(src)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		APIVersion, Kind string
		Metadata         struct {
			Name, Namespace string
			Labels          map[string]string
			Annotations     map[string]string
		}
		Data map[string]string
	}
	if err := sigsyaml.Unmarshal(files["grafana-dashboard-a.yaml"], &cm); err != nil {
		t.Fatal(err)
	}
	if cm.APIVersion != "v1" || cm.Kind != "ConfigMap" || cm.Metadata.Name != "whisper-dashboard-a" || cm.Metadata.Namespace != Namespace {
		t.Errorf("got %s %s %s/%s, want v1 ConfigMap monitoring/whisper-dashboard-a", cm.APIVersion, cm.Kind, cm.Metadata.Namespace, cm.Metadata.Name)
	}
	if got := cm.Metadata.Labels[DashboardLabel]; got != DashboardLabelValue {
		t.Errorf("label %s = %q, want %q", DashboardLabel, got, DashboardLabelValue)
	}
	if got := cm.Metadata.Annotations[FolderAnnotation]; got != Folder {
		t.Errorf("annotation %s = %q, want %q", FolderAnnotation, got, Folder)
	}
	if got, want := cm.Data["a.json"], string(src["dashboards/a.json"].Data); got != want {
		t.Errorf("data[a.json] = %q, want the file verbatim %q", got, want)
	}
	if !Generated(files["grafana-dashboard-a.yaml"]) || !Generated(files["kustomization.yaml"]) {
		t.Error("a generated file lacks the header")
	}
}

func TestGenerateRejects(t *testing.T) {
	tests := []struct {
		name string
		src  fstest.MapFS
		want string
	}{
		{"nothing to do", fstest.MapFS{"README.md": {}}, "no dashboards"},
		{"bad json", fstest.MapFS{"dashboards/a.json": {Data: []byte("{")}}, "not valid JSON"},
		{"bad name", fstest.MapFS{"dashboards/My_Board.json": {Data: []byte("{}")}}, "file name"},
		{"extra key", fstest.MapFS{"alerts/a.yaml": {Data: []byte("groups: []\nrules: []\n")}}, `unexpected top-level key "rules"`},
		{"groups not a list", fstest.MapFS{"alerts/a.yaml": {Data: []byte("groups: {}\n")}}, "groups must be a list"},
		{"alias", fstest.MapFS{"alerts/a.yaml": {Data: []byte("groups:\n  - name: g\n    labels: &l {a: b}\n  - name: h\n    labels: *l\n")}}, "anchors and aliases"},
		{"not yaml", fstest.MapFS{"alerts/a.yaml": {Data: []byte("groups: [\n")}}, "alerts/a.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Generate(tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Generate() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
