package render_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/whisperhq/whisper/internal/gitops/gitopstest"
	"github.com/whisperhq/whisper/internal/gitops/render"
)

// TestSourcePositions checks that rendered objects point at the document
// that declared them, through namePrefix, namespace overrides, patches,
// same-named objects in two namespaces and generators.
func TestSourcePositions(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Files{
		"base/kustomization.yaml": "resources:\n- a.yaml\n- netpol.yaml\n",
		"base/a.yaml":             "# comment\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: api\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  ports: [{port: 80}]\n",
		"base/netpol.yaml":        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  namespace: one\nspec: {podSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  namespace: two\nspec: {podSelector: {}}\n",
		"env/kustomization.yaml":  "namePrefix: dev-\nresources:\n- ../base\n- extra.yaml\npatches:\n- path: patch.yaml\nconfigMapGenerator:\n- name: settings\n  literals: [a=b]\n",
		"env/extra.yaml":          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n",
		"env/patch.yaml":          "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  type: ClusterIP\n",
	})
	res, err := render.Render(root, "env")
	if err != nil {
		t.Fatal(err)
	}
	type pos struct {
		ID   string
		File string
		Idx  int
		Line int
	}
	var got []pos
	for _, d := range res.Docs {
		got = append(got, pos{d.ID(), d.File, d.Index, d.Line})
	}
	want := []pos{
		{"ServiceAccount/dev-api", "base/a.yaml", 0, 2},
		{"Service/dev-api", "base/a.yaml", 1, 7},
		{"NetworkPolicy/one/dev-deny", "base/netpol.yaml", 0, 1},
		{"NetworkPolicy/two/dev-deny", "base/netpol.yaml", 1, 8},
		{"ConfigMap/dev-extra", "env/extra.yaml", 0, 1},
		{"ConfigMap/dev-settings-" + strings.TrimPrefix(res.Docs[5].Name(), "dev-settings-"), "env/kustomization.yaml", 0, 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	out, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "type: ClusterIP") {
		t.Errorf("patch not applied:\n%s", out)
	}
}

func TestRenderErrors(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Files{"env/kustomization.yaml": "resources:\n- missing.yaml\n"})
	if _, err := render.Render(root, "env"); err == nil || !strings.Contains(err.Error(), "render env") {
		t.Errorf("err = %v", err)
	}
	if _, err := render.Render(root, "nowhere"); err == nil {
		t.Error("no error for a missing folder")
	}
}
