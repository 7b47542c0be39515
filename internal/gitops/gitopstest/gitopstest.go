// Package gitopstest builds small repositories for platformctl's tests: a
// base with dev/staging/production overlays, an app-of-apps per environment,
// a few policies with a Rego unit test, all clean, so that each test adds
// exactly the breakage it is about.
package gitopstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Files is a repository as path → content.
type Files map[string]string

// With returns a copy of f with changes applied; an empty content deletes
// the path.
func (f Files) With(changes Files) Files {
	out := Files{}
	for k, v := range f {
		out[k] = v
	}
	for k, v := range changes {
		if v == "" {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// Write writes files below dir.
func Write(t testing.TB, dir string, files Files) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Repo writes files into a fresh temporary folder and returns it.
func Repo(t testing.TB, files Files) string {
	t.Helper()
	dir := t.TempDir()
	Write(t, dir, files)
	return dir
}

// Git runs git in dir with a fixed identity, failing the test on error.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// GitRepo is Repo plus `git init` and a first commit.
func GitRepo(t testing.TB, files Files) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("SKIPPING: git is not installed")
	}
	dir := Repo(t, files)
	Git(t, dir, "init", "-q", "-b", "main")
	Git(t, dir, "add", "-A")
	Git(t, dir, "commit", "-q", "-m", "base")
	return dir
}

// Deployment is the base Deployment; tests edit copies of it.
const Deployment = `# The one workload of the fixture.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: app
  labels:
    team: platform
spec:
  replicas: 2
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
      - name: api
        image: example/api:1.0
        securityContext:
          runAsNonRoot: true
`

func app(name, path, project string) string {
	return `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: ` + name + `
  namespace: argocd
spec:
  project: ` + project + `
  source:
    repoURL: https://example.com/repo.git
    targetRevision: HEAD
    path: ` + path + `
  destination:
    server: https://kubernetes.default.svc
    namespace: app
`
}

// App is an Argo CD Application syncing path with project.
func App(name, path, project string) string { return app(name, path, project) }

func overlay() string {
	return `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../base
patches:
- path: replicas.yaml
`
}

func replicasPatch(n string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: app
spec:
  replicas: ` + n + `
`
}

// Base is a clean repository: `platformctl check` passes on it.
func Base() Files {
	f := Files{
		"environments/base/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- namespace.yaml
- workload.yaml
- netpol.yaml
`,
		"environments/base/namespace.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: app
`,
		"environments/base/workload.yaml": Deployment + `---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: app
spec:
  selector:
    app: api
  ports:
  - port: 80
    targetPort: 8080
`,
		"environments/base/netpol.yaml": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: app
spec:
  podSelector: {}
  policyTypes: [Ingress]
`,
		"gitops/projects/platform.yaml": `apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: platform
  namespace: argocd
spec:
  sourceRepos: ["*"]
  destinations:
  - server: https://kubernetes.default.svc
    namespace: "*"
`,
		"policies/kubernetes/workload/src.rego": `package kubernetes.workload

deny contains {"msg": msg, "rule": "run-as-non-root"} if {
	input.kind == "Deployment"
	some c in input.spec.template.spec.containers
	not c.securityContext.runAsNonRoot
	msg := sprintf("container %q must set securityContext.runAsNonRoot=true", [c.name])
}

warn contains msg if {
	input.kind == "Deployment"
	not input.metadata.labels.team
	msg := "Deployment has no team label"
}
`,
		"policies/kubernetes/workload/src_test.rego": `package kubernetes.workload_test

import data.kubernetes.workload

test_root_denied if {
	count(workload.deny) == 1 with input as {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}
}

test_non_root_allowed if {
	count(workload.deny) == 0 with input as {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"name": "a", "securityContext": {"runAsNonRoot": true}}]}}}}
}
`,
		"policies/kubernetes/network/src.rego": `package kubernetes.network

# Context rule: reads the inventory of the environment.
deny contains {"msg": msg, "rule": "netpol-required"} if {
	input.kind == "Deployment"
	ns := input.metadata.namespace
	count(object.get(data.inventory.namespace, [ns, "networking.k8s.io/v1", "NetworkPolicy"], {})) == 0
	msg := sprintf("namespace %s has no NetworkPolicy", [ns])
}

deny contains {"msg": "production runs at least 2 replicas", "rule": "replicas"} if {
	data.environment == "production"
	input.kind == "Deployment"
	input.spec.replicas < 2
}
`,
		"policies/argocd/src.rego": `package argocd

deny contains {"msg": "Application must not use the default project", "rule": "no-default-project"} if {
	input.kind == "Application"
	input.spec.project == "default"
}
`,
		"policies/waivers.yaml": "waivers: []\n",
	}
	for _, env := range []string{"dev", "staging", "production"} {
		n := "2"
		if env == "production" {
			n = "3"
		}
		f["environments/"+env+"/kustomization.yaml"] = overlay()
		f["environments/"+env+"/replicas.yaml"] = replicasPatch(n)
		f["gitops/bootstrap/"+env+".yaml"] = app("root-"+env, "gitops/apps/"+env, "platform")
		f["gitops/apps/"+env+"/whisper.yaml"] = app("whisper-"+env, "environments/"+env, "platform")
	}
	return f
}

// ReplicasPatch is the overlay patch setting spec.replicas to n.
func ReplicasPatch(n string) string { return replicasPatch(n) }
