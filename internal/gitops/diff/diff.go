// Package diff tells a pull request's reviewer what it really changes: the
// rendered manifests of every environment, object by object, and the policy
// results that appear or disappear, as Markdown for a PR comment. Rendering
// both sides matters because a one-line change to a base fans out to every
// overlay.
package diff

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/render"
)

// Checker runs the policy gates of a tree; the caller supplies it so that
// this package does not decide which gates exist.
type Checker func(ctx context.Context, root string, envs []string) ([]finding.Finding, error)

// Options configure a diff.
type Options struct {
	Root  string
	Base  string // git ref
	Envs  []string
	Check Checker
}

// Extract writes the tree of a git ref into dir with `git archive`, which
// leaves the repository (and colleagues' work in it) untouched, unlike a
// worktree or checkout.
func Extract(ctx context.Context, root, ref, dir string) error {
	cmd := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", ref)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("git archive %s: %w", ref, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git archive %s: %w", ref, err)
	}
	tr := tar.NewReader(out)
	var extractErr error
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			extractErr = err
			break
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(target, filepath.Clean(dir)+string(os.PathSeparator)) {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			extractErr = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			if extractErr = os.MkdirAll(filepath.Dir(target), 0o755); extractErr == nil {
				extractErr = writeFile(target, tr)
			}
		case tar.TypeSymlink:
			extractErr = os.Symlink(h.Linkname, target)
		}
		if extractErr != nil {
			break
		}
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %w: %s", ref, err, strings.TrimSpace(stderr.String()))
	}
	if extractErr != nil {
		return fmt.Errorf("extract %s: %w", ref, extractErr)
	}
	return nil
}

func writeFile(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// objects renders an environment into id → YAML. A render failure is
// returned as a message so that a PR that breaks rendering still gets a
// report.
func objects(root, env string) (map[string]string, string) {
	res, err := render.Render(root, render.Dir(env))
	if err != nil {
		return nil, err.Error()
	}
	out := map[string]string{}
	for _, d := range res.Docs {
		y, err := yaml.Marshal(d.Object)
		if err != nil {
			return nil, err.Error()
		}
		out[d.ID()] = string(y)
	}
	return out, ""
}

// Write renders both trees and writes the Markdown report.
func Write(ctx context.Context, w io.Writer, opts Options) error {
	tmp, err := os.MkdirTemp("", "platformctl-diff-")
	if err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := Extract(ctx, opts.Root, opts.Base, tmp); err != nil {
		return fmt.Errorf("diff: %w", err)
	}

	var baseFindings, headFindings []finding.Finding
	var baseCheckErr error
	if opts.Check != nil {
		// The base is checked with its own policies and waivers: a finding
		// is "new" whether the manifest or the policy changed.
		baseFindings, baseCheckErr = opts.Check(ctx, tmp, opts.Envs)
		headFindings, err = opts.Check(ctx, opts.Root, opts.Envs)
		if err != nil {
			return fmt.Errorf("diff: check working tree: %w", err)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "## platformctl diff against `%s`\n\n", opts.Base)
	for _, env := range opts.Envs {
		fmt.Fprintf(&b, "### %s\n\n", env)
		writeManifests(&b, tmp, opts.Root, env)
		if opts.Check != nil {
			if baseCheckErr != nil {
				fmt.Fprintf(&b, "Policy results at the base could not be computed (%v); all current results are listed as new.\n\n", baseCheckErr)
			}
			writeFindings(&b, forEnv(baseFindings, env), forEnv(headFindings, env))
		}
	}
	// Findings about the repository rather than one environment (orphan
	// Applications, waivers) are listed once.
	if opts.Check != nil {
		base, head := forEnv(baseFindings, ""), forEnv(headFindings, "")
		if added, resolved := Changes(base, head); len(added)+len(resolved) > 0 {
			b.WriteString("### All environments\n\n")
			writeFindings(&b, base, head)
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func writeManifests(b *strings.Builder, baseRoot, headRoot, env string) {
	base, baseErr := objects(baseRoot, env)
	head, headErr := objects(headRoot, env)
	if baseErr != "" {
		fmt.Fprintf(b, "The base does not render: `%s`\n\n", oneLine(baseErr))
	}
	if headErr != "" {
		fmt.Fprintf(b, "**This change does not render:** `%s`\n\n", oneLine(headErr))
	}
	ids := map[string]bool{}
	for id := range base {
		ids[id] = true
	}
	for id := range head {
		ids[id] = true
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	var added, removed, changed []string
	diffs := map[string]string{}
	for _, id := range sorted {
		a, inBase := base[id]
		h, inHead := head[id]
		switch {
		case !inBase:
			added = append(added, id)
			diffs[id] = Unified("/dev/null", id, "", h, 3)
		case !inHead:
			removed = append(removed, id)
			diffs[id] = Unified(id, "/dev/null", a, "", 3)
		case a != h:
			changed = append(changed, id)
			diffs[id] = Unified(id, id, a, h, 3)
		}
	}
	if len(added)+len(removed)+len(changed) == 0 {
		b.WriteString("No change to the rendered manifests.\n\n")
		return
	}
	fmt.Fprintf(b, "Rendered manifests: %d added, %d removed, %d changed.\n\n", len(added), len(removed), len(changed))
	for _, group := range []struct {
		title string
		ids   []string
	}{{"Added", added}, {"Removed", removed}, {"Changed", changed}} {
		if len(group.ids) == 0 {
			continue
		}
		fmt.Fprintf(b, "#### %s\n\n", group.title)
		for _, id := range group.ids {
			fmt.Fprintf(b, "<details><summary><code>%s</code></summary>\n\n```diff\n%s```\n\n</details>\n\n", id, diffs[id])
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// key identifies a finding across trees: files and indexes move when
// unrelated documents are added, so they are not part of it.
func key(f finding.Finding) string {
	return strings.Join([]string{f.Env, string(f.Level), f.Policy, f.Rule, f.Kind, f.Namespace, f.Name, f.Message}, "\x00")
}

// Changes splits findings into those only in head (new) and only in base
// (resolved).
func Changes(base, head []finding.Finding) (added, resolved []finding.Finding) {
	count := func(fs []finding.Finding) map[string]int {
		m := map[string]int{}
		for _, f := range fs {
			m[key(f)]++
		}
		return m
	}
	bc, hc := count(base), count(head)
	for _, f := range head {
		if k := key(f); bc[k] > 0 {
			bc[k]--
		} else {
			added = append(added, f)
		}
	}
	for _, f := range base {
		if k := key(f); hc[k] > 0 {
			hc[k]--
		} else {
			resolved = append(resolved, f)
		}
	}
	return added, resolved
}

func forEnv(fs []finding.Finding, env string) []finding.Finding {
	var out []finding.Finding
	for _, f := range fs {
		if f.Env == env {
			out = append(out, f)
		}
	}
	return out
}

func writeFindings(b *strings.Builder, base, head []finding.Finding) {
	added, resolved := Changes(base, head)
	finding.Sort(added)
	finding.Sort(resolved)
	if len(added)+len(resolved) == 0 {
		b.WriteString("No new or resolved policy results.\n\n")
		return
	}
	d, w := finding.Count(added)
	fmt.Fprintf(b, "#### Policy results: %d new (%d denies, %d warnings), %d resolved\n\n", len(added), d, w, len(resolved))
	b.WriteString("| | Level | Object | Policy/rule | Where | Message |\n|---|---|---|---|---|---|\n")
	row := func(state string, f finding.Finding) {
		fmt.Fprintf(b, "| %s | %s | `%s` | `%s` | `%s:%d` | %s |\n", state, f.Level, f.Object(), f.PolicyRule(), f.File, f.Line, cell(f.Message))
	}
	for _, f := range added {
		row("new", f)
	}
	for _, f := range resolved {
		row("resolved", f)
	}
	b.WriteString("\n")
}

func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}
