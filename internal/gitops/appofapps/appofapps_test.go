package appofapps_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/whisperhq/whisper/internal/gitops/appofapps"
	"github.com/whisperhq/whisper/internal/gitops/gitopstest"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
)

func rules(t *testing.T, files gitopstest.Files, env string) ([]string, appofapps.Tree) {
	t.Helper()
	root := gitopstest.Repo(t, files)
	c := &appofapps.Checker{Root: root, Layout: appofapps.DefaultLayout(), Render: func(string) ([]manifest.Document, error) { return nil, nil }}
	tree, fs, err := c.Env(env)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fs {
		out = append(out, f.Rule+" "+f.File)
	}
	return out, tree
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name     string
		change   gitopstest.Files
		want     []string
		children int
	}{
		{"clean", nil, nil, 1},
		{
			name: "nested app of apps is followed",
			change: gitopstest.Files{
				"gitops/apps/dev/platform.yaml":    gitopstest.App("platform-dev", "gitops/apps/dev/platform", "platform"),
				"gitops/apps/dev/platform/pg.yaml": gitopstest.App("pg-dev", "environments/dev", "platform"),
			},
			children: 3,
		},
		{
			name:     "path outside the repository",
			change:   gitopstest.Files{"gitops/apps/dev/whisper.yaml": gitopstest.App("whisper-dev", "../elsewhere", "platform")},
			want:     []string{"path-outside gitops/apps/dev/whisper.yaml"},
			children: 1,
		},
		{
			name:     "root with an unknown project",
			change:   gitopstest.Files{"gitops/bootstrap/dev.yaml": gitopstest.App("root-dev", "gitops/apps/dev", "ghost")},
			want:     []string{"project-unknown gitops/bootstrap/dev.yaml"},
			children: 1,
		},
		{
			name:   "root holds no Application",
			change: gitopstest.Files{"gitops/bootstrap/dev.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"},
			want:   []string{"root-missing gitops/bootstrap/dev.yaml"},
		},
		{
			name:     "empty child folder",
			change:   gitopstest.Files{"gitops/apps/dev/whisper.yaml": "", "gitops/apps/dev/README.yaml": "# nothing\n"},
			want:     []string{"path-empty gitops/bootstrap/dev.yaml"},
			children: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, tree := rules(t, gitopstest.Base().With(tt.change), "dev")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			if len(tree.Children) != tt.children {
				t.Errorf("%d children, want %d", len(tree.Children), tt.children)
			}
		})
	}
}

func TestOrphans(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Base().With(gitopstest.Files{
		"gitops/apps/dev/sub/nested.yaml": gitopstest.App("nested", "environments/dev", "platform"),
		"gitops/apps/qa/app.yaml":         gitopstest.App("qa", "environments/dev", "platform"),
	}))
	c := &appofapps.Checker{Root: root, Layout: appofapps.DefaultLayout()}
	fs, err := c.Orphans([]appofapps.Reach{{Dir: "gitops/apps/dev"}, {Dir: "gitops/apps/staging"}, {Dir: "gitops/apps/production"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.File)
	}
	recursive, err := c.Orphans([]appofapps.Reach{{Dir: "gitops/apps/dev", Recurse: true}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range recursive {
		if f.File == "gitops/apps/dev/sub/nested.yaml" {
			t.Errorf("recursive source does not cover its sub-folder")
		}
	}
	// Without directory.recurse Argo CD does not sync sub-folders.
	if diff := cmp.Diff([]string{"gitops/apps/dev/sub/nested.yaml", "gitops/apps/qa/app.yaml"}, got); diff != "" {
		t.Errorf("orphans (-want +got):\n%s", diff)
	}
}
