package check_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/whisperhq/whisper/internal/gitops/check"
	"github.com/whisperhq/whisper/internal/gitops/crdschema"
	"github.com/whisperhq/whisper/internal/gitops/gitopstest"
)

// benchRoot is the repository itself when its environments exist, the
// fixture otherwise.
func benchRoot(b *testing.B) string {
	root := filepath.Join("..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, "environments", "production", "kustomization.yaml")); err == nil {
		return root
	}
	return gitopstest.Repo(b, gitopstest.Base())
}

// BenchmarkCheckAllEnvironments is `platformctl check` minus process start:
// policy compilation, three renders, decode, policies, app-of-apps.
func BenchmarkCheckAllEnvironments(b *testing.B) {
	ctx := context.Background()
	root := benchRoot(b)
	for b.Loop() {
		schemas, err := crdschema.New()
		if err != nil {
			b.Fatal(err)
		}
		c, err := check.New(ctx, check.Options{Root: root, Schemas: schemas})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Run(ctx, check.Environments(), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCheckRepository(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, "environments", "production", "kustomization.yaml")); err != nil {
		t.Skip("SKIPPING: the repository's environments/ is not here")
	}
	ctx := context.Background()
	schemas, err := crdschema.New()
	if err != nil {
		t.Fatal(err)
	}
	c, err := check.New(ctx, check.Options{Root: root, Schemas: schemas})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Run(ctx, check.Environments(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Findings {
		t.Logf("%s %s %s:%d %s %s: %s", f.Level, f.Env, f.File, f.Index, f.Object(), f.PolicyRule(), f.Message)
	}
	if res.Docs == 0 {
		t.Error("no documents checked")
	}
}
