package engagement_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/whisperhq/whisper/policies/engagement"
)

// TestRego runs the _test.rego files of this folder, as `platformctl policy
// test` does for all of policies/, so `go test` catches a broken policy too.
func TestRego(t *testing.T) {
	modules, store, err := tester.Load([]string{"."}, func(_ string, info os.FileInfo, _ int) bool {
		return !info.IsDir() && !strings.HasSuffix(info.Name(), ".rego")
	})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := tester.NewRunner().SetStore(store).SetModules(modules).SetTimeout(30*time.Second).
		RunTests(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r := range ch {
		n++
		if r.Fail || r.Error != nil {
			t.Errorf("%s.%s failed: %v %s", r.Package, r.Name, r.Error, r.Output)
		}
	}
	if n == 0 {
		t.Fatal("no Rego tests found")
	}
	t.Logf("%d Rego tests", n)
}

// TestModulesAreThePolicies: Modules carries the policy, never its tests,
// and the policy compiles in Rego v1.
func TestModulesAreThePolicies(t *testing.T) {
	mods := engagement.Modules()
	if _, ok := mods["contact.rego"]; !ok || len(mods) != 1 {
		t.Fatalf("Modules() = %v, want contact.rego only", keys(mods))
	}
	parsed := map[string]*ast.Module{}
	for name, src := range mods {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		parsed[name] = m
	}
	c := ast.NewCompiler()
	if c.Compile(parsed); c.Failed() {
		t.Fatal(c.Errors)
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
