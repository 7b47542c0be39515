package argocd_test

import data.argocd

sha := "0123456789abcdef0123456789abcdef01234567"

project(spec) := {
	"apiVersion": "argoproj.io/v1alpha1",
	"kind": "AppProject",
	"metadata": {"name": "whisper", "namespace": "argocd"},
	"spec": object.union(
		{
			"sourceRepos": ["https://github.com/whisperhq/whisper.git"],
			"destinations": [{"server": "https://kubernetes.default.svc", "namespace": "whisper"}],
			"clusterResourceWhitelist": [{"group": "", "kind": "Namespace"}],
		},
		spec,
	),
}

finalizers := ["resources-finalizer.argocd.argoproj.io"]

app(spec) := {
	"apiVersion": "argoproj.io/v1alpha1",
	"kind": "Application",
	"metadata": {"name": "ingest", "namespace": "argocd", "finalizers": finalizers},
	"spec": object.union(
		{
			"project": "whisper",
			"source": {"repoURL": "https://github.com/whisperhq/whisper.git", "path": "environments/production", "targetRevision": "v1.4.0"},
			"destination": {"server": "https://kubernetes.default.svc", "namespace": "whisper"},
		},
		spec,
	),
}

revision(rev) := app({"source": {"targetRevision": rev}})

appset(template_spec, generators) := {
	"apiVersion": "argoproj.io/v1alpha1",
	"kind": "ApplicationSet",
	"metadata": {"name": "services", "namespace": "argocd"},
	"spec": {
		"generators": generators,
		"template": {
			"metadata": {"name": "{{name}}", "finalizers": finalizers},
			"spec": object.union(app({}).spec, template_spec),
		},
	},
}

denies(doc) := result if {
	result := {v.rule | some v in argocd.deny} with input as doc
}

prod_denies(doc) := result if {
	result := {v.rule | some v in argocd.deny} with input as doc with data.environment as "production"
}

warned(doc) := result if {
	result := {v.rule | some v in argocd.warn} with input as doc with data.environment as "production"
}

bad_cases := [
	{"rule": "appproject-wildcard-source-repos", "doc": project({"sourceRepos": ["*"]})},
	{"rule": "appproject-wildcard-source-repos", "doc": project({"sourceRepos": ["https://github.com/whisperhq/*"]})},
	{"rule": "appproject-wildcard-destinations", "doc": project({"destinations": [{"server": "*", "namespace": "whisper"}]})},
	{"rule": "appproject-wildcard-destinations", "doc": project({"destinations": [{"server": "https://kubernetes.default.svc", "namespace": "*"}]})},
	{"rule": "appproject-wildcard-destinations", "doc": project({"destinations": [{"name": "*", "namespace": "whisper"}]})},
	{"rule": "appproject-wildcard-cluster-resources", "doc": project({"clusterResourceWhitelist": [{"group": "*", "kind": "Namespace"}]})},
	{"rule": "appproject-wildcard-cluster-resources", "doc": project({"clusterResourceWhitelist": [{"group": "", "kind": "*"}]})},
	{"rule": "application-default-project", "doc": app({"project": "default"})},
	{"rule": "application-default-project", "doc": app({"project": ""})},
	{"rule": "application-default-project", "doc": appset({"project": "default"}, [])},
]

test_bad_cases_denied if {
	failures := [[i, c.rule] | some i, c in bad_cases; not c.rule in denies(c.doc)]
	print("bad cases not denied:", failures)
	failures == []
}

test_good_objects_pass if {
	every doc in [project({}), app({}), appset({}, [{"list": {"elements": [{"name": "ingest"}]}}])] {
		prod_denies(doc) == set()
		warned(doc) == set()
	}

	# other API groups with the same kind are not Argo CD objects
	denies({"apiVersion": "example.com/v1", "kind": "Application", "spec": {"project": "default"}}) == set()
}

test_unpinned_revisions_denied_in_production if {
	unpinned := ["", "HEAD", "main", "master", "develop", "release-1.4", "feature/x", "1.4", "v1.4", "1.2.*", ">=1.0.0", "0123456", "01.2.3"]
	failures := [rev | some rev in unpinned; not "targetrevision-pinned" in prod_denies(revision(rev))]
	print("unpinned revisions accepted:", failures)
	failures == []
	"targetrevision-pinned" in prod_denies(app({"source": {"targetRevision": null}}))
}

test_pinned_revisions_pass_in_production if {
	pinned := ["v1.4.0", "1.4.0", "0.31.2", "v2.0.0-rc.1", "1.0.0+build.5", sha]
	failures := [rev | some rev in pinned; count(prod_denies(revision(rev))) > 0]
	print("pinned revisions denied:", failures)
	failures == []
}

test_unpinned_revisions_allowed_outside_production if {
	denies(revision("main")) == set()
	d := {v.rule | some v in argocd.deny} with input as revision("main") with data.environment as "staging"
	d == set()
}

test_every_source_is_checked if {
	multi := app({"sources": [
		{"repoURL": "https://charts.example", "chart": "redis", "targetRevision": "19.6.4"},
		{"repoURL": "https://github.com/whisperhq/whisper.git", "targetRevision": "main", "ref": "values"},
	]})
	msgs := {v.msg | some v in argocd.deny} with input as multi with data.environment as "production"
	msgs == {`Application "ingest": spec.sources[1] must pin targetRevision in production to a version tag or a full commit SHA, not "main"`}
	hydrated := app({"sourceHydrator": {"drySource": {"repoURL": "r", "targetRevision": "HEAD"}}})
	prod_denies(hydrated) == {"targetrevision-pinned"}
}

test_applicationset_revisions_checked if {
	prod_denies(appset({"source": {"targetRevision": "main"}}, [])) == {"targetrevision-pinned"}
	git := [{"matrix": {"generators": [
		{"git": {"repoURL": "https://github.com/whisperhq/whisper.git", "revision": "HEAD", "directories": [{"path": "apps/*"}]}},
		{"list": {"elements": []}},
	]}}]
	prod_denies(appset({}, git)) == {"targetrevision-pinned"}
	pinned_git := [{"git": {"repoURL": "https://github.com/whisperhq/whisper.git", "revision": sha, "files": [{"path": "a.json"}]}}]
	prod_denies(appset({}, pinned_git)) == set()
}

test_templated_revision_warns if {
	doc := appset({"source": {"targetRevision": "{{.values.revision}}"}}, [])
	prod_denies(doc) == set()
	warned(doc) == {"targetrevision-templated"}
}

test_finalizer_warning if {
	bare := object.remove(app({}), {"metadata"})
	warned(object.union(bare, {"metadata": {"name": "ingest"}})) == {"application-finalizer"}
	warned(object.union(bare, {"metadata": {"name": "ingest", "finalizers": ["other"]}})) == {"application-finalizer"}
	warned(object.union(bare, {"metadata": {"name": "ingest", "finalizers": ["resources-finalizer.argocd.argoproj.io/background"]}})) == set()
	set_without := json.remove(appset({}, []), ["spec/template/metadata/finalizers"])
	warned(set_without) == {"application-finalizer"}
}
