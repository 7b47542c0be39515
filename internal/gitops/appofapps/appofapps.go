// Package appofapps checks the Argo CD app-of-apps wiring that a YAML lint
// cannot see: the root Application of an environment must point at a folder
// that exists, every child it finds there must point at a folder that exists
// and renders, use a project that is defined, and no Application file may sit
// where no root will ever sync it.
package appofapps

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
)

// Policy is the policy name integrity findings are reported under.
const Policy = "platformctl.appofapps"

// Layout is where the gitops folders live, relative to the repository root.
type Layout struct {
	Bootstrap string // gitops/bootstrap: one root Application per env, <env>.yaml
	Projects  string // gitops/projects: AppProjects
	Apps      string // gitops/apps: child Applications, <env>/...
}

// DefaultLayout is the repository's layout (DESIGN.md).
func DefaultLayout() Layout {
	return Layout{Bootstrap: "gitops/bootstrap", Projects: "gitops/projects", Apps: "gitops/apps"}
}

// Renderer renders a source folder (relative to the root) of a child
// Application; the check package passes a caching kustomize renderer.
type Renderer func(dir string) ([]manifest.Document, error)

// Tree is the gitops documents of one environment.
type Tree struct {
	Root     []manifest.Document // bootstrap/<env>.yaml
	Projects []manifest.Document
	// Children are the Application documents reached from the root.
	Children []manifest.Document
	// Reached are the folders the roots sync, for the orphan check.
	Reached []Reach
}

// Reach is a folder an Application syncs; Recurse mirrors Argo CD's
// spec.source.directory.recurse (off by default: sub-folders are not synced).
type Reach struct {
	Dir     string
	Recurse bool
}

func (r Reach) covers(dir string) bool {
	return dir == r.Dir || (r.Recurse && strings.HasPrefix(dir, r.Dir+"/"))
}

// Docs returns every document of the tree.
func (t Tree) Docs() []manifest.Document {
	out := append([]manifest.Document(nil), t.Root...)
	out = append(out, t.Projects...)
	return append(out, t.Children...)
}

// Checker walks an environment's app-of-apps.
type Checker struct {
	Root   string
	Layout Layout
	Render Renderer
}

func isApp(d manifest.Document) bool {
	return d.Kind() == "Application" && strings.HasPrefix(d.APIVersion(), "argoproj.io/")
}

// sourcePaths returns the repository paths an Application syncs
// (spec.source.path and spec.sources[].path); Helm chart sources have none.
func sourcePaths(d manifest.Document) []Reach {
	spec, _ := d.Object["spec"].(map[string]any)
	var out []Reach
	add := func(src map[string]any) {
		p, _ := src["path"].(string)
		if p == "" {
			return
		}
		dir, _ := src["directory"].(map[string]any)
		rec, _ := dir["recurse"].(bool)
		out = append(out, Reach{Dir: p, Recurse: rec})
	}
	if src, ok := spec["source"].(map[string]any); ok {
		add(src)
	}
	if srcs, ok := spec["sources"].([]any); ok {
		for _, s := range srcs {
			if m, ok := s.(map[string]any); ok {
				add(m)
			}
		}
	}
	return out
}

func project(d manifest.Document) string {
	spec, _ := d.Object["spec"].(map[string]any)
	p, _ := spec["project"].(string)
	return p
}

func cleanPath(p string) string {
	return path.Clean(strings.TrimPrefix(filepath.ToSlash(p), "./"))
}

func (c *Checker) read(rel string) (manifest.Set, error) {
	return manifest.ReadPaths(c.Root, []string{filepath.Join(c.Root, rel)})
}

// readDir reads the YAML files of a folder the way Argo CD's directory
// source does: only the folder itself unless recurse is set.
func (c *Checker) readDir(rel string, recurse bool) (manifest.Set, error) {
	if recurse {
		return c.read(rel)
	}
	entries, err := os.ReadDir(filepath.Join(c.Root, rel))
	if err != nil {
		return manifest.Set{}, err
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && manifest.IsYAML(e.Name()) {
			files = append(files, filepath.Join(c.Root, rel, e.Name()))
		}
	}
	if len(files) == 0 {
		return manifest.Set{}, nil
	}
	return manifest.ReadPaths(c.Root, files)
}

func (c *Checker) isDir(rel string) bool {
	info, err := os.Stat(filepath.Join(c.Root, rel))
	return err == nil && info.IsDir()
}

func (c *Checker) hasKustomization(rel string) bool {
	for _, n := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if _, err := os.Stat(filepath.Join(c.Root, rel, n)); err == nil {
			return true
		}
	}
	return false
}

// Env checks one environment and returns its gitops documents and findings.
func (c *Checker) Env(env string) (Tree, []finding.Finding, error) {
	var (
		tree Tree
		out  []finding.Finding
	)
	deny := func(d manifest.Document, rule, format string, args ...any) {
		out = append(out, finding.About(d, finding.Finding{
			Env: env, Policy: Policy, Rule: rule, Level: finding.Deny, Message: fmt.Sprintf(format, args...),
		}))
	}
	parseProblems := func(set manifest.Set) {
		for _, p := range set.Problems {
			out = append(out, finding.Finding{
				Env: env, File: p.File, Index: p.Index, Line: p.Line,
				Policy: "platformctl.decode", Rule: "yaml", Level: finding.Deny, Message: p.Err.Error(),
			})
		}
	}

	rootFile := path.Join(c.Layout.Bootstrap, env+".yaml")
	if _, err := os.Stat(filepath.Join(c.Root, rootFile)); err != nil {
		out = append(out, finding.Finding{Env: env, File: rootFile, Line: 1, Policy: Policy, Rule: "root-missing",
			Level: finding.Deny, Message: fmt.Sprintf("no root Application for %s: %s does not exist", env, rootFile)})
		return tree, out, nil
	}
	rootSet, err := c.read(rootFile)
	if err != nil {
		return tree, nil, err
	}
	parseProblems(rootSet)
	tree.Root = rootSet.Docs

	projects := map[string]bool{}
	if c.isDir(c.Layout.Projects) {
		set, err := c.read(c.Layout.Projects)
		if err != nil {
			return tree, nil, err
		}
		parseProblems(set)
		tree.Projects = set.Docs
		for _, d := range set.Docs {
			if d.Kind() == "AppProject" {
				projects[d.Name()] = true
			}
		}
	}
	checkProject := func(d manifest.Document) {
		p := project(d)
		switch {
		case p == "":
			deny(d, "project-missing", "Application %s has no spec.project", d.Name())
		case !projects[p] && p != "default":
			deny(d, "project-unknown", "Application %s uses project %q, which no AppProject in %s defines", d.Name(), p, c.Layout.Projects)
		}
	}

	var roots []manifest.Document
	for _, d := range rootSet.Docs {
		if isApp(d) {
			roots = append(roots, d)
		}
	}
	if len(roots) == 0 {
		out = append(out, finding.Finding{Env: env, File: rootFile, Line: 1, Policy: Policy, Rule: "root-missing",
			Level: finding.Deny, Message: fmt.Sprintf("%s holds no argoproj.io Application", rootFile)})
		return tree, out, nil
	}

	// Walk breadth-first: a folder of Applications may hold further
	// app-of-apps; visited stops cycles.
	visited := map[string]bool{}
	queue := roots
	for len(queue) > 0 {
		app := queue[0]
		queue = queue[1:]
		checkProject(app)
		paths := sourcePaths(app)
		if len(paths) == 0 {
			continue // a Helm chart or remote source: nothing here to check
		}
		for _, reach := range paths {
			p := cleanPath(reach.Dir)
			reach.Dir = p
			if strings.HasPrefix(p, "..") || path.IsAbs(p) {
				deny(app, "path-outside", "Application %s points at %q, outside the repository", app.Name(), p)
				continue
			}
			if !c.isDir(p) {
				deny(app, "path-missing", "Application %s points at %s, which does not exist", app.Name(), p)
				continue
			}
			if visited[p] {
				continue
			}
			visited[p] = true
			tree.Reached = append(tree.Reached, reach)
			if c.hasKustomization(p) {
				if c.Render != nil {
					if _, err := c.Render(p); err != nil {
						deny(app, "render", "Application %s: path %s does not render: %v", app.Name(), p, err)
					}
				}
				continue
			}
			set, err := c.readDir(p, reach.Recurse)
			if err != nil {
				return tree, nil, err
			}
			parseProblems(set)
			for _, d := range set.Docs {
				if isApp(d) {
					tree.Children = append(tree.Children, d)
					queue = append(queue, d)
				}
			}
			if len(set.Docs) == 0 {
				deny(app, "path-empty", "Application %s points at %s, which holds no manifests", app.Name(), p)
			}
		}
	}
	return tree, out, nil
}

// Orphans reports Application files under the apps folder that no root of
// any environment reaches: Argo CD would never sync them, so edits to them
// would pass review and do nothing.
func (c *Checker) Orphans(reached []Reach) ([]finding.Finding, error) {
	if !c.isDir(c.Layout.Apps) {
		return nil, nil
	}
	set, err := c.read(c.Layout.Apps)
	if err != nil {
		return nil, err
	}
	var out []finding.Finding
	for _, d := range set.Docs {
		if !isApp(d) {
			continue
		}
		dir := path.Dir(d.File)
		ok := false
		for _, r := range reached {
			if r.covers(dir) {
				ok = true
				break
			}
		}
		if !ok {
			out = append(out, finding.About(d, finding.Finding{
				Policy: Policy, Rule: "orphan", Level: finding.Deny,
				Message: fmt.Sprintf("Application %s in %s is not reached from any root Application in %s", d.Name(), d.File, c.Layout.Bootstrap),
			}))
		}
	}
	return out, nil
}
