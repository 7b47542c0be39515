package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/whisperhq/whisper/internal/gitops/manifest"
	"github.com/whisperhq/whisper/internal/gitops/policy"
	"github.com/whisperhq/whisper/internal/gitops/render"
)

// renderedEnvironments is what policybench hands to `policy check`: every
// environment rendered, one YAML stream each.
func renderedEnvironments(b *testing.B) map[string][]byte {
	b.Helper()
	root := filepath.Join("..", "..", "..")
	out := map[string][]byte{}
	for _, env := range []string{"dev", "staging", "production"} {
		if _, err := os.Stat(filepath.Join(root, render.Dir(env), "kustomization.yaml")); err != nil {
			b.Skipf("SKIPPING: no environment %s in the repository", env)
		}
		res, err := render.Render(root, render.Dir(env))
		if err != nil {
			b.Fatal(err)
		}
		y, err := res.YAML()
		if err != nil {
			b.Fatal(err)
		}
		out[env+".yaml"] = y
	}
	return out
}

// BenchmarkPolicyCheck is `platformctl policy check` on the rendered
// environments minus process start: compile, parse, evaluate.
func BenchmarkPolicyCheck(b *testing.B) {
	ctx := context.Background()
	dir := filepath.Join("..", "..", "..", "policies")
	files := renderedEnvironments(b)
	parse := func() []manifest.Document {
		var docs []manifest.Document
		for name, data := range files {
			d, errs := manifest.Parse(name, data)
			if len(errs) > 0 {
				b.Fatal(errs)
			}
			docs = append(docs, d...)
		}
		return docs
	}
	b.Run("load", func(b *testing.B) {
		for b.Loop() {
			if _, err := policy.Load(ctx, dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			parse()
		}
	})
	b.Run("evaluate", func(b *testing.B) {
		e, err := policy.Load(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		docs := parse()
		for b.Loop() {
			if _, err := e.Evaluate(ctx, docs, policy.Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			e, err := policy.Load(ctx, dir)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.Evaluate(ctx, parse(), policy.Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
