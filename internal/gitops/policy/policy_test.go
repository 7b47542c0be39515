package policy_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
	"github.com/whisperhq/whisper/internal/gitops/policy"
)

const contextPolicy = `package test.ctx

import rego.v1

env := x if {
	x := data.environment
} else := "<unset>"

deny contains {"msg": sprintf("env=%v", [env]), "rule": "env"} if input.kind == "Probe"

deny contains {"msg": msg, "rule": "needs-config"} if {
	input.kind == "Deployment"
	not data.inventory.namespace[input.metadata.namespace].v1.ConfigMap[input.metadata.name]
	msg := "no ConfigMap of the same name"
}

warn contains "string message" if input.kind == "Deployment"

warn contains {"msg": "cluster-scoped seen", "rule": "cluster"} if {
	input.kind == "Probe"
	data.inventory.cluster.v1.Namespace.app
}

helper(x) := x
`

func docs(t *testing.T, src string) []manifest.Document {
	t.Helper()
	d, errs := manifest.Parse("f.yaml", []byte(src))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return d
}

func TestEvaluate(t *testing.T) {
	ctx := context.Background()
	e, err := policy.LoadModules(ctx, map[string]string{"ctx.rego": contextPolicy, "lib.rego": "package test.lib\n\nhelper := 1\n"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"test.ctx"}, e.Packages()); diff != "" {
		t.Errorf("packages (-want +got):\n%s", diff)
	}
	in := docs(t, `apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: app}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: app}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: api, namespace: app}
---
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Probe
metadata: {name: p}
`)
	type res struct {
		Name, Rule string
		Level      finding.Level
		Msg        string
	}
	collect := func(fs []finding.Finding) []res {
		finding.Sort(fs)
		var out []res
		for _, f := range fs {
			out = append(out, res{f.Name, f.Rule, f.Level, f.Message})
		}
		return out
	}
	tests := []struct {
		name string
		opts policy.Options
		want []res
	}{
		{"production", policy.Options{Env: "production"}, []res{
			{"api", "", finding.Warn, "string message"},
			{"web", "", finding.Warn, "string message"},
			{"web", "needs-config", finding.Deny, "no ConfigMap of the same name"},
			{"p", "cluster", finding.Warn, "cluster-scoped seen"},
			{"p", "env", finding.Deny, "env=production"},
		}},
		{"unset environment", policy.Options{Select: finding.Selector{"test.ctx/env"}}, []res{
			{"p", "env", finding.Deny, "env=<unset>"},
		}},
		{"select excludes the package", policy.Options{Env: "dev", Select: finding.Selector{"kubernetes"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := e.Evaluate(ctx, in, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, collect(fs)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := policy.LoadModules(ctx, map[string]string{"bad.rego": "package x\n\ndeny contains msg if { msg := undefined_fn(1) }\n"}); err == nil {
		t.Error("no error for an uncompilable policy")
	}
	if _, err := policy.Load(ctx, "does-not-exist"); err == nil {
		t.Error("no error for a missing folder")
	}
}
