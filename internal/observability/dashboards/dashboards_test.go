package dashboards

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// committed is where make generate writes the dashboards.
var committed = filepath.Join("..", "..", "..", "dashboards")

func TestCommittedDashboardsAreFresh(t *testing.T) {
	want, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	paths, err := filepath.Glob(filepath.Join(committed, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	slices.Sort(wantNames)
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Fatalf("dashboards/ holds other files than the code defines; run make generate (-want +got):\n%s", diff)
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(committed, name))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(data), string(got)); diff != "" {
			t.Errorf("dashboards/%s is stale; run make generate (-generated +committed):\n%s", name, diff)
		}
	}
}

// TestPanelConventions checks what the SDK cannot: every panel has a
// description and a unit, every query uses the datasource variable and
// rates use $__rate_interval.
func TestPanelConventions(t *testing.T) {
	files, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		var d struct {
			UID        string `json:"uid"`
			Templating struct {
				List []struct{ Name, Type string }
			}
			Panels []struct {
				Type, Title, Description string
				Datasource               struct{ UID string }
				FieldConfig              struct{ Defaults struct{ Unit string } }
				Targets                  []struct {
					Expr       string
					Datasource struct{ UID string }
				}
			}
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.UID == "" {
			t.Errorf("%s: no uid: links and provisioning need a stable one", name)
		}
		if !slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type string }) bool {
			return v.Name == "datasource" && v.Type == "datasource"
		}) {
			t.Errorf("%s: no datasource variable", name)
		}
		panels := 0
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			panels++
			if p.Description == "" {
				t.Errorf("%s: panel %q has no description", name, p.Title)
			}
			if p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s: panel %q has no unit", name, p.Title)
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q datasource is %q, want ${datasource}", name, p.Title, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", name, p.Title)
			}
			for _, q := range p.Targets {
				if strings.Contains(q.Expr, "rate(") && !strings.Contains(q.Expr, "[$__rate_interval]") {
					t.Errorf("%s: panel %q: rate without $__rate_interval: %s", name, p.Title, q.Expr)
				}
			}
		}
		if panels == 0 {
			t.Errorf("%s: no panels", name)
		}
	}
}
