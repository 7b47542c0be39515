package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/whisperhq/whisper/internal/gitops/cli"
	"github.com/whisperhq/whisper/internal/gitops/gitopstest"
	"github.com/whisperhq/whisper/internal/gitops/report"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func checkJSON(t *testing.T, root string, args ...string) (report.JSONReport, int) {
	t.Helper()
	r := run(t, append([]string{"check", "--root", root, "--format", "json"}, args...)...)
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	var rep report.JSONReport
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("json output does not decode into the documented schema: %v\nstdout:\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	return rep, r.code
}

// short is a finding reduced to what tests compare.
type short struct {
	File, Kind, Name, Policy, Rule, Level string
	Index                                 int
}

func shorts(rep report.JSONReport, keep func(report.JSONResult) bool) []short {
	var out []short
	for _, r := range rep.Results {
		if keep == nil || keep(r) {
			out = append(out, short{r.File, r.Kind, r.Name, r.Policy, r.Rule, r.Level, r.Index})
		}
	}
	return out
}

func TestCheckCleanRepository(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Base())
	r := run(t, "check", "--root", root)
	if r.code != cli.ExitOK {
		t.Fatalf("exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "0 denies, 0 warnings") {
		t.Errorf("summary missing:\n%s", r.stdout)
	}
}

func TestCheckFindings(t *testing.T) {
	noSecurityContext := strings.Replace(gitopstest.Deployment, "        securityContext:\n          runAsNonRoot: true\n", "", 1)
	tests := []struct {
		name     string
		change   gitopstest.Files
		args     []string
		wantCode int
		keep     func(report.JSONResult) bool
		want     []short
	}{
		{
			name:     "environment-specific policy only fires in production",
			change:   gitopstest.Files{"environments/production/replicas.yaml": gitopstest.ReplicasPatch("1")},
			wantCode: 1,
			want: []short{{File: "environments/base/workload.yaml", Index: 0, Kind: "Deployment", Name: "api",
				Policy: "kubernetes.network", Rule: "replicas", Level: "deny"}},
		},
		{
			name:     "inventory rule sees the other documents of the environment",
			change:   gitopstest.Files{"environments/base/netpol.yaml": "", "environments/base/kustomization.yaml": "resources:\n- namespace.yaml\n- workload.yaml\n"},
			args:     []string{"--env", "dev"},
			wantCode: 1,
			want: []short{{File: "environments/base/workload.yaml", Kind: "Deployment", Name: "api",
				Policy: "kubernetes.network", Rule: "netpol-required", Level: "deny"}},
		},
		{
			name:     "select keeps only matching policies",
			change:   gitopstest.Files{"environments/production/replicas.yaml": gitopstest.ReplicasPatch("1")},
			args:     []string{"--select", "kubernetes.workload"},
			wantCode: 0,
		},
		{
			name:     "select on policy/rule",
			change:   gitopstest.Files{"environments/base/workload.yaml": noSecurityContext},
			args:     []string{"--env", "dev", "--select", "kubernetes.workload/run-as-non-root"},
			wantCode: 1,
			want: []short{{File: "environments/base/workload.yaml", Kind: "Deployment", Name: "api",
				Policy: "kubernetes.workload", Rule: "run-as-non-root", Level: "deny"}},
		},
		{
			name: "unknown field in a Deployment is a decode error naming file and index",
			change: gitopstest.Files{"environments/base/workload.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n  namespace: app\n---\n" +
				strings.Replace(gitopstest.Deployment, "  replicas: 2\n", "  replicas: 2\n  replica: 3\n", 1)},
			args:     []string{"--env", "dev"},
			wantCode: 1,
			keep:     func(r report.JSONResult) bool { return r.Policy == "platformctl.decode" },
			want: []short{{File: "environments/base/workload.yaml", Index: 1, Kind: "Deployment", Name: "api",
				Policy: "platformctl.decode", Rule: "strict", Level: "deny"}},
		},
		{
			name: "wrong type in a Deployment is a decode error",
			change: gitopstest.Files{"environments/base/workload.yaml": strings.Replace(gitopstest.Deployment,
				"  replicas: 2\n", "  replicas: 2\n  minReadySeconds: soon\n", 1)},
			args:     []string{"--env", "staging"},
			wantCode: 1,
			keep:     func(r report.JSONResult) bool { return r.Policy == "platformctl.decode" },
			want: []short{{File: "environments/base/workload.yaml", Kind: "Deployment", Name: "api",
				Policy: "platformctl.decode", Rule: "strict", Level: "deny"}},
		},
		{
			name: "unknown kind is a warning, never a silent pass",
			change: gitopstest.Files{
				"environments/base/widget.yaml":        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: app\n",
				"environments/base/kustomization.yaml": "resources:\n- namespace.yaml\n- workload.yaml\n- netpol.yaml\n- widget.yaml\n",
			},
			args:     []string{"--env", "dev"},
			wantCode: 0,
			want: []short{{File: "environments/base/widget.yaml", Kind: "Widget", Name: "w",
				Policy: "platformctl.decode", Rule: "unknown-kind", Level: "warn"}},
		},
		{
			name: "operator custom resource is validated against its CRD schema",
			change: gitopstest.Files{
				"environments/base/topic.yaml":         "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata:\n  name: events\n  namespace: app\nspec:\n  partitions: 0\n  replicas: 3\n  retention: 7d\n",
				"environments/base/kustomization.yaml": "resources:\n- namespace.yaml\n- workload.yaml\n- netpol.yaml\n- topic.yaml\n",
			},
			args:     []string{"--env", "dev"},
			wantCode: 1,
			want: []short{
				{File: "environments/base/topic.yaml", Kind: "KafkaTopic", Name: "events", Policy: "platformctl.schema", Rule: "openapi", Level: "deny"},
				{File: "environments/base/topic.yaml", Kind: "KafkaTopic", Name: "events", Policy: "platformctl.schema", Rule: "openapi", Level: "deny"},
			},
		},
		{
			name:     "gitops documents are checked by the argocd policies",
			change:   gitopstest.Files{"gitops/apps/dev/whisper.yaml": gitopstest.App("whisper-dev", "environments/dev", "default")},
			args:     []string{"--env", "dev"},
			wantCode: 1,
			want: []short{{File: "gitops/apps/dev/whisper.yaml", Kind: "Application", Name: "whisper-dev",
				Policy: "argocd", Rule: "no-default-project", Level: "deny"}},
		},
		{
			name:     "child application pointing at a missing path",
			change:   gitopstest.Files{"gitops/apps/dev/whisper.yaml": gitopstest.App("whisper-dev", "environments/nope", "platform")},
			args:     []string{"--env", "dev"},
			wantCode: 1,
			want: []short{{File: "gitops/apps/dev/whisper.yaml", Kind: "Application", Name: "whisper-dev",
				Policy: "platformctl.appofapps", Rule: "path-missing", Level: "deny"}},
		},
		{
			name:     "child application with an undefined project",
			change:   gitopstest.Files{"gitops/apps/dev/whisper.yaml": gitopstest.App("whisper-dev", "environments/dev", "nobody")},
			args:     []string{"--env", "dev"},
			wantCode: 1,
			want: []short{{File: "gitops/apps/dev/whisper.yaml", Kind: "Application", Name: "whisper-dev",
				Policy: "platformctl.appofapps", Rule: "project-unknown", Level: "deny"}},
		},
		{
			name:     "orphan application file",
			change:   gitopstest.Files{"gitops/apps/old/legacy.yaml": gitopstest.App("legacy", "environments/dev", "platform")},
			wantCode: 1,
			want: []short{{File: "gitops/apps/old/legacy.yaml", Kind: "Application", Name: "legacy",
				Policy: "platformctl.appofapps", Rule: "orphan", Level: "deny"}},
		},
		{
			name: "child application whose path does not render",
			change: gitopstest.Files{
				"gitops/apps/dev/broken.yaml":            gitopstest.App("broken-dev", "environments/broken", "platform"),
				"environments/broken/kustomization.yaml": "resources:\n- missing.yaml\n",
			},
			args:     []string{"--env", "dev"},
			wantCode: 1,
			want: []short{{File: "gitops/apps/dev/broken.yaml", Kind: "Application", Name: "broken-dev",
				Policy: "platformctl.appofapps", Rule: "render", Level: "deny"}},
		},
		{
			name:     "missing root application",
			change:   gitopstest.Files{"gitops/bootstrap/staging.yaml": ""},
			args:     []string{"--env", "staging"},
			wantCode: 1,
			want:     []short{{File: "gitops/bootstrap/staging.yaml", Policy: "platformctl.appofapps", Rule: "root-missing", Level: "deny"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := gitopstest.Repo(t, gitopstest.Base().With(tt.change))
			rep, code := checkJSON(t, root, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; results: %+v", code, tt.wantCode, rep.Results)
			}
			if diff := cmp.Diff(tt.want, shorts(rep, tt.keep)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckDecodeErrorMessageNamesFieldFileAndIndex(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Base().With(gitopstest.Files{
		"environments/base/workload.yaml": strings.Replace(gitopstest.Deployment, "  replicas: 2\n", "  replicas: 2\n  replica: 3\n", 1),
	}))
	r := run(t, "check", "--root", root, "--env", "dev")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	want := `DENY   dev environments/base/workload.yaml:0 Deployment/app/api platformctl.decode/strict: environments/base/workload.yaml:0: apps/v1 Deployment: unknown field "spec.replica"`
	if !strings.Contains(r.stdout, want) {
		t.Errorf("text output lacks\n%s\ngot:\n%s", want, r.stdout)
	}
	// The annotation points at the misspelt line itself.
	r = run(t, "check", "--root", root, "--env", "dev", "--format", "github")
	if want := "::error file=environments/base/workload.yaml,line=11,title=platformctl.decode/strict::"; !strings.Contains(r.stdout, want) {
		t.Errorf("github output lacks %q:\n%s", want, r.stdout)
	}
}

func TestWaivers(t *testing.T) {
	breakProd := gitopstest.Files{"environments/production/replicas.yaml": gitopstest.ReplicasPatch("1")}
	waiver := func(extra string) string {
		return `waivers:
- policy: kubernetes.network
  rule: replicas
  selector:
    kind: Deployment
    namespace: app
    name: api
` + extra
	}
	tests := []struct {
		name      string
		waivers   string
		wantCode  int
		wantLevel map[string]string // policy/rule → level
	}{
		{
			name:      "valid waiver",
			waivers:   waiver("  owner: \"@platform\"\n  reason: one replica until the load test\n  expires: \"2999-01-01\"\n"),
			wantCode:  0,
			wantLevel: map[string]string{"kubernetes.network/replicas": "waived"},
		},
		{
			name:      "expired waiver",
			waivers:   waiver("  owner: \"@platform\"\n  reason: one replica until the load test\n  expires: \"2020-01-01\"\n"),
			wantCode:  1,
			wantLevel: map[string]string{"kubernetes.network/replicas": "deny", "platformctl.waiver/expired": "deny"},
		},
		{
			name:      "waiver without owner",
			waivers:   waiver("  reason: one replica until the load test\n  expires: \"2999-01-01\"\n"),
			wantCode:  1,
			wantLevel: map[string]string{"kubernetes.network/replicas": "deny", "platformctl.waiver/malformed": "deny"},
		},
		{
			name:      "waiver with a bad date",
			waivers:   waiver("  owner: \"@platform\"\n  reason: r\n  expires: \"31/12/2999\"\n"),
			wantCode:  1,
			wantLevel: map[string]string{"kubernetes.network/replicas": "deny", "platformctl.waiver/malformed": "deny"},
		},
		{
			name:      "waiver with a misspelt field",
			waivers:   waiver("  owner: \"@platform\"\n  reason: r\n  expiers: \"2999-01-01\"\n"),
			wantCode:  1,
			wantLevel: map[string]string{"kubernetes.network/replicas": "deny", "platformctl.waiver/malformed": "deny"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := gitopstest.Repo(t, gitopstest.Base().With(breakProd).With(gitopstest.Files{"policies/waivers.yaml": tt.waivers}))
			rep, code := checkJSON(t, root)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d: %+v", code, tt.wantCode, rep.Results)
			}
			got := map[string]string{}
			for _, r := range rep.Results {
				got[r.Policy+"/"+r.Rule] = r.Level
			}
			if diff := cmp.Diff(tt.wantLevel, got); diff != "" {
				t.Errorf("levels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckFormats(t *testing.T) {
	// A deny on the second document of a file, so lines are checked too.
	root := gitopstest.Repo(t, gitopstest.Base().With(gitopstest.Files{
		"environments/base/workload.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n  namespace: app\n---\n" +
			strings.Replace(gitopstest.Deployment, "        securityContext:\n          runAsNonRoot: true\n", "", 1),
	}))
	base := []string{"check", "--root", root, "--env", "dev", "--format"}

	t.Run("text", func(t *testing.T) {
		r := run(t, append(base, "text")...)
		if r.code != 1 {
			t.Fatalf("exit %d", r.code)
		}
		want := `DENY   dev environments/base/workload.yaml:1 Deployment/app/api kubernetes.workload/run-as-non-root: container "api" must set securityContext.runAsNonRoot=true`
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q in\n%s", want, r.stdout)
		}
		if !strings.Contains(r.stdout, "1 denies, 0 warnings") {
			t.Errorf("summary wrong:\n%s", r.stdout)
		}
	})
	t.Run("json", func(t *testing.T) {
		rep, code := checkJSON(t, root, "--env", "dev")
		if code != 1 {
			t.Fatalf("exit %d", code)
		}
		want := report.JSONSummary{Files: 6, Documents: 7, Denies: 1, Warns: 0}
		if diff := cmp.Diff(want, rep.Summary); diff != "" {
			t.Errorf("summary (-want +got):\n%s", diff)
		}
		// Field names are the documented contract.
		r := run(t, append(base, "json")...)
		var raw map[string][]map[string]any
		_ = json.Unmarshal([]byte(r.stdout), &raw)
		var keys []string
		for k := range raw["results"][0] {
			keys = append(keys, k)
		}
		wantKeys := []string{"file", "index", "kind", "level", "message", "name", "namespace", "policy", "rule"}
		if diff := cmp.Diff(wantKeys, keys, cmpSorted); diff != "" {
			t.Errorf("result keys (-want +got):\n%s", diff)
		}
	})
	t.Run("sarif", func(t *testing.T) {
		r := run(t, append(base, "sarif")...)
		var log struct {
			Version string `json:"version"`
			Runs    []struct {
				Tool struct {
					Driver struct {
						Rules []struct {
							ID string `json:"id"`
						} `json:"rules"`
					} `json:"driver"`
				} `json:"tool"`
				Results []struct {
					RuleID    string `json:"ruleId"`
					Level     string `json:"level"`
					Locations []struct {
						PhysicalLocation struct {
							ArtifactLocation struct {
								URI string `json:"uri"`
							} `json:"artifactLocation"`
							Region struct {
								StartLine int `json:"startLine"`
							} `json:"region"`
						} `json:"physicalLocation"`
					} `json:"locations"`
				} `json:"results"`
			} `json:"runs"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &log); err != nil {
			t.Fatal(err)
		}
		if log.Version != "2.1.0" || len(log.Runs) != 1 {
			t.Fatalf("version %q, %d runs", log.Version, len(log.Runs))
		}
		run := log.Runs[0]
		if len(run.Tool.Driver.Rules) != 1 || run.Tool.Driver.Rules[0].ID != "kubernetes.workload/run-as-non-root" {
			t.Errorf("rules: %+v", run.Tool.Driver.Rules)
		}
		if len(run.Results) != 1 || run.Results[0].Level != "error" ||
			run.Results[0].Locations[0].PhysicalLocation.ArtifactLocation.URI != "environments/base/workload.yaml" ||
			run.Results[0].Locations[0].PhysicalLocation.Region.StartLine != 8 {
			t.Errorf("results: %+v", run.Results)
		}
	})
	t.Run("junit", func(t *testing.T) {
		r := run(t, append(base, "junit")...)
		var suites struct {
			XMLName xml.Name `xml:"testsuites"`
			Suites  []struct {
				Name     string `xml:"name,attr"`
				Failures int    `xml:"failures,attr"`
			} `xml:"testsuite"`
		}
		if err := xml.Unmarshal([]byte(r.stdout), &suites); err != nil {
			t.Fatalf("junit is not XML: %v\n%s", err, r.stdout)
		}
		failures := map[string]int{}
		for _, s := range suites.Suites {
			failures[s.Name] = s.Failures
		}
		want := map[string]int{"argocd": 0, "kubernetes.network": 0, "kubernetes.workload": 1,
			"platformctl.appofapps": 0, "platformctl.decode": 0, "platformctl.render": 0, "platformctl.schema": 0, "platformctl.waiver": 0}
		if diff := cmp.Diff(want, failures); diff != "" {
			t.Errorf("suites (-want +got):\n%s", diff)
		}
	})
	t.Run("github", func(t *testing.T) {
		r := run(t, append(base, "github")...)
		want := "::error file=environments/base/workload.yaml,line=8,title=kubernetes.workload/run-as-non-root::[dev] Deployment/app/api: container \"api\" must set securityContext.runAsNonRoot=true\n"
		if !strings.HasPrefix(r.stdout, want) {
			t.Errorf("got\n%s\nwant prefix\n%s", r.stdout, want)
		}
	})
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestUsageErrors(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Base())
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"render"},
		{"render", "dev", "staging", "--root", root},
		{"check", "--root", root, "--format", "yaml"},
		{"check", "--root", root, "--nope"},
		{"check", "--root", root, "extra"},
		{"policy"},
		{"policy", "check", "--root", root},
		{"diff", "--root", root},
		{"render", "nowhere", "--root", root},
	} {
		if r := run(t, args...); r.code != cli.ExitError {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, r.code, r.stderr)
		}
	}
}

func TestRender(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Base())
	r := run(t, "render", "production", "--root", root)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"kind: Namespace", "replicas: 3", "kind: NetworkPolicy"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("render lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "config.kubernetes.io/origin") || strings.Contains(r.stdout, "internal.config") {
		t.Errorf("render leaks build annotations:\n%s", r.stdout)
	}
}

func TestPolicyCheck(t *testing.T) {
	root := gitopstest.Repo(t, gitopstest.Base())
	dir := filepath.Join(root, "manifests")
	gitopstest.Write(t, dir, gitopstest.Files{
		"ok.yaml": gitopstest.Deployment + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: d\n  namespace: app\nspec:\n  podSelector: {}\n",
		"sub/bad.yaml": strings.Replace(strings.Replace(gitopstest.Deployment, "name: api", "name: bad", 1),
			"        securityContext:\n          runAsNonRoot: true\n", "", 1),
		"notes.txt": "not yaml",
	})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []short
	}{
		{"folder", []string{dir}, 1, []short{{File: filepath.Join(dir, "sub/bad.yaml"), Kind: "Deployment", Name: "bad",
			Policy: "kubernetes.workload", Rule: "run-as-non-root", Level: "deny"}}},
		{"single clean file: inventory is only that file", []string{filepath.Join(dir, "ok.yaml")}, 0, nil},
		{"select excludes", []string{dir, "--select", "argocd"}, 0, nil},
		{"env makes environment rules apply", []string{filepath.Join(dir, "ok.yaml"), "--env", "production"}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"policy", "check", "--root", root, "--format", "json"}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d\n%s%s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			var rep report.JSONReport
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, shorts(rep, nil)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyTest(t *testing.T) {
	t.Run("passing", func(t *testing.T) {
		root := gitopstest.Repo(t, gitopstest.Base())
		r := run(t, "policy", "test", "--root", root)
		if r.code != 0 || !strings.Contains(r.stdout, "PASS: 2/2") {
			t.Errorf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("failing", func(t *testing.T) {
		root := gitopstest.Repo(t, gitopstest.Base().With(gitopstest.Files{
			"policies/kubernetes/workload/more_test.rego": "package kubernetes.workload_test\n\nimport data.kubernetes.workload\n\ntest_wrong if {\n\tcount(workload.deny) == 5 with input as {}\n}\n",
		}))
		r := run(t, "policy", "test", "--root", root)
		if r.code != 1 || !strings.Contains(r.stdout, "FAIL") {
			t.Errorf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
}

func TestDiff(t *testing.T) {
	root := gitopstest.GitRepo(t, gitopstest.Base())
	// The PR: drop the securityContext and add a ConfigMap.
	gitopstest.Write(t, root, gitopstest.Files{
		"environments/base/workload.yaml": strings.Replace(gitopstest.Base()["environments/base/workload.yaml"],
			"        securityContext:\n          runAsNonRoot: true\n", "", 1) +
			"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: app\ndata:\n  a: b\n",
	})
	if err := os.Remove(filepath.Join(root, "environments/base/netpol.yaml")); err != nil {
		t.Fatal(err)
	}
	gitopstest.Write(t, root, gitopstest.Files{"environments/base/kustomization.yaml": "resources:\n- namespace.yaml\n- workload.yaml\n"})

	r := run(t, "diff", "--root", root, "--base", "HEAD", "--env", "dev")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"## platformctl diff against `HEAD`",
		"### dev",
		"Rendered manifests: 1 added, 1 removed, 1 changed.",
		"<code>ConfigMap/app/settings</code>",
		"<code>NetworkPolicy/app/default-deny</code>",
		"<code>Deployment/app/api</code>",
		"-        securityContext:\n-          runAsNonRoot: true\n",
		"| new | deny | `Deployment/app/api` | `kubernetes.workload/run-as-non-root` |",
		"| new | deny | `Deployment/app/api` | `kubernetes.network/netpol-required` |",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("diff lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "### staging") {
		t.Errorf("--env dev reported other environments")
	}

	// Repository-wide findings are listed once, not per environment.
	gitopstest.Write(t, root, gitopstest.Files{"gitops/apps/old/legacy.yaml": gitopstest.App("legacy", "environments/dev", "platform")})
	r = run(t, "diff", "--root", root, "--base", "HEAD")
	if got := strings.Count(r.stdout, "`platformctl.appofapps/orphan`"); got != 1 || !strings.Contains(r.stdout, "### All environments") {
		t.Errorf("orphan listed %d times:\n%s", got, r.stdout)
	}
	if err := os.RemoveAll(filepath.Join(root, "gitops/apps/old")); err != nil {
		t.Fatal(err)
	}

	// Resolving it again shows the findings as resolved.
	gitopstest.Git(t, root, "add", "-A")
	gitopstest.Git(t, root, "commit", "-q", "-m", "break")
	gitopstest.Write(t, root, gitopstest.Base())
	r = run(t, "diff", "--root", root, "--base", "HEAD", "--env", "dev")
	if !strings.Contains(r.stdout, "| resolved | deny | `Deployment/app/api` | `kubernetes.workload/run-as-non-root` |") {
		t.Errorf("resolved finding missing:\n%s", r.stdout)
	}
}
