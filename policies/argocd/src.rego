# METADATA
# title: Argo CD projects and applications
# description: |
#   AppProjects name what they may deploy, from where, to where; Applications
#   live in a real project, and in production (data.environment ==
#   "production") deploy a pinned revision, never a moving branch.
#   https://argo-cd.readthedocs.io/en/stable/user-guide/projects/
#   https://argo-cd.readthedocs.io/en/stable/user-guide/tracking_strategies/
package argocd

argo_api if startswith(text(input, ["apiVersion"]), "argoproj.io/")

production if data.environment == "production"

name := text(input, ["metadata", "name"])

finding(rule, msg) := {"msg": msg, "rule": rule}

# list reads an array field that may be missing or null.
list(o, path) := v if {
	v := object.get(o, path, null)
	is_array(v)
} else := []

# text reads a string field that may be missing or null.
text(o, path) := v if {
	v := object.get(o, path, null)
	is_string(v)
} else := ""

# --- AppProject -----------------------------------------------------------------

project if {
	argo_api
	input.kind == "AppProject"
}

deny contains finding("appproject-wildcard-source-repos", msg) if {
	project
	some repo in list(input, ["spec", "sourceRepos"])
	contains(repo, "*")
	msg := sprintf("AppProject %q must list its source repositories, not %q", [name, repo])
}

deny contains finding("appproject-wildcard-destinations", msg) if {
	project
	some destination in list(input, ["spec", "destinations"])
	some field in ["server", "namespace", "name"]
	contains(text(destination, [field]), "*")
	msg := sprintf("AppProject %q must list its destinations, not %s %q", [name, field, destination[field]])
}

deny contains finding("appproject-wildcard-cluster-resources", msg) if {
	project
	some entry in list(input, ["spec", "clusterResourceWhitelist"])
	some field in ["group", "kind"]
	text(entry, [field]) == "*"
	msg := sprintf("AppProject %q must list the cluster-scoped kinds it may create, not %s \"*\" in clusterResourceWhitelist", [name, field])
}

# --- Application / ApplicationSet -----------------------------------------------

application if {
	argo_api
	input.kind == "Application"
}

application_set if {
	argo_api
	input.kind == "ApplicationSet"
}

# app_spec is the Application spec, or the template spec of an ApplicationSet.
app_spec := object.get(input, "spec", {}) if application

app_spec := object.get(input, ["spec", "template", "spec"], {}) if application_set

deny contains finding("application-default-project", msg) if {
	text(app_spec, ["project"]) in {"", "default"}
	msg := sprintf("%s %q must use a dedicated AppProject, not \"default\"", [input.kind, name])
}

# sources lists {"where", "revision"} for every revision the app tracks.
sources contains {"where": "spec.source", "revision": text(app_spec, ["source", "targetRevision"])} if {
	object.get(app_spec, "source", null) != null
}

sources contains {"where": sprintf("spec.sources[%d]", [i]), "revision": text(source, ["targetRevision"])} if {
	some i, source in list(app_spec, ["sources"])
}

sources contains {"where": "spec.sourceHydrator.drySource", "revision": text(app_spec, ["sourceHydrator", "drySource", "targetRevision"])} if {
	object.get(app_spec, "sourceHydrator", null) != null
}

# Git generators of an ApplicationSet (at any nesting depth) track a revision too.
sources contains {"where": "git generator", "revision": text(generator, ["revision"])} if {
	application_set
	walk(object.get(input, ["spec", "generators"], []), [path, generator])
	path[count(path) - 1] == "git"
	is_object(generator)
}

# pinned: a semantic version tag or chart version (optionally "v"-prefixed),
# or a full commit SHA (SHA-1 or SHA-256). Branch names, HEAD, ranges like
# "1.2.*" or ">=1.0" and short SHAs all move or are ambiguous.
pinned(revision) if regex.match(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`, revision)

pinned(revision) if regex.match(`^([0-9a-f]{40}|[0-9a-f]{64})$`, revision)

templated(revision) if contains(revision, "{{")

deny contains finding("targetrevision-pinned", msg) if {
	production
	some source in sources
	not pinned(source.revision)
	not templated(source.revision)
	msg := sprintf("%s %q: %s must pin targetRevision in production to a version tag or a full commit SHA, not %q", [input.kind, name, source.where, source.revision])
}

warn contains finding("targetrevision-templated", msg) if {
	production
	some source in sources
	templated(source.revision)
	msg := sprintf("%s %q: %s takes targetRevision from a template (%s): make sure every generated value is pinned", [input.kind, name, source.where, source.revision])
}

# --- finalizer ------------------------------------------------------------------

finalizer := "resources-finalizer.argocd.argoproj.io"

app_finalizers := list(input, ["metadata", "finalizers"]) if application

app_finalizers := list(input, ["spec", "template", "metadata", "finalizers"]) if application_set

# The background/foreground variants are the same finalizer with a deletion mode.
has_finalizer if {
	some f in app_finalizers
	f == finalizer
}

has_finalizer if {
	some f in app_finalizers
	startswith(f, concat("", [finalizer, "/"]))
}

warn contains finding("application-finalizer", msg) if {
	app_finalizers
	not has_finalizer
	msg := sprintf("%s %q should set the %s finalizer so deleting the app deletes what it deployed", [input.kind, name, finalizer])
}
