# METADATA
# title: Workload hygiene
# description: |
#   Containers declare resources and probes and run reproducible images; in
#   production every Deployment and StatefulSet also has an autoscaler and a
#   disruption budget. Production-ness is data.environment == "production"
#   (absent means non-production); the HPA/PDB rules read data.inventory
#   (layout in kubernetes.lib) and stay silent without it.
#   https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/
package kubernetes.workload

import data.kubernetes.lib

production if data.environment == "production"

is_workload if {
	input.kind in lib.pod_bearing_kinds
	is_object(lib.pod_template(input))
}

spec := lib.pod_spec(input) if is_workload

resource := sprintf("%s %q", [input.kind, lib.name_of(input)])

# Containers that take resources: ephemeral debug containers cannot.
sized_containers := [c |
	some field in ["initContainers", "containers"]
	some c in lib.get(spec, field, [])
]

# --- resources ------------------------------------------------------------------

deny contains lib.finding("resources-requests", msg) if {
	some c in sized_containers
	some r in ["cpu", "memory"]
	lib.at(c, ["resources", "requests", r], null) == null
	msg := sprintf("%s: container %q must set resources.requests.%s", [resource, c.name, r])
}

deny contains lib.finding("resources-memory-limit", msg) if {
	some c in sized_containers
	lib.at(c, ["resources", "limits", "memory"], null) == null
	msg := sprintf("%s: container %q must set resources.limits.memory", [resource, c.name])
}

warn contains lib.finding("resources-cpu-limit", msg) if {
	some c in sized_containers
	lib.at(c, ["resources", "limits", "cpu"], null) == null
	msg := sprintf("%s: container %q has no resources.limits.cpu", [resource, c.name])
}

# --- probes ---------------------------------------------------------------------

# Pods that are meant to keep running: not Jobs/CronJobs, not one-off Pods,
# not bare PodTemplates.
long_running if input.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"}

long_running if {
	input.kind == "Pod"
	lib.get(spec, "restartPolicy", "Always") == "Always"
}

deny contains lib.finding("probes", msg) if {
	long_running
	some c in lib.get(spec, "containers", [])
	some probe in ["livenessProbe", "readinessProbe"]
	lib.get(c, probe, null) == null
	msg := sprintf("%s: container %q must set %s", [resource, c.name, probe])
}

# --- images ---------------------------------------------------------------------

# image_tag is the tag of an image reference, undefined when it has none.
# A registry port ("host:5000/app") is not a tag: only the last path
# segment, before any digest, can carry one.
image_tag(image) := tag if {
	name := split(image, "@")[0]
	segments := split(name, "/")
	last := segments[count(segments) - 1]
	parts := split(last, ":")
	count(parts) > 1
	tag := parts[count(parts) - 1]
}

has_digest(image) if regex.match(`@sha256:[0-9a-f]{64}$`, image)

deny contains lib.finding("image-tag", msg) if {
	some c in lib.containers(spec)
	image_tag(c.image) == "latest"
	msg := sprintf("%s: container %q must not use the latest tag (%s)", [resource, c.name, c.image])
}

deny contains lib.finding("image-tag", msg) if {
	some c in lib.containers(spec)
	not image_tag(c.image)
	not has_digest(c.image)
	msg := sprintf("%s: container %q must name an image tag or digest (%s)", [resource, c.name, c.image])
}

deny contains lib.finding("image-digest", msg) if {
	production
	some c in lib.containers(spec)
	not has_digest(c.image)
	msg := sprintf("%s: container %q must pin its image by digest (@sha256:...) in production (%s)", [resource, c.name, c.image])
}

# --- production availability ----------------------------------------------------

scaled_kinds := {"Deployment", "StatefulSet"}

deny contains lib.finding("hpa-required", msg) if {
	production
	lib.has_inventory
	input.kind in scaled_kinds
	not has_hpa
	msg := sprintf("%s needs a HorizontalPodAutoscaler in production (scaleTargetRef kind %s, name %q)", [resource, input.kind, lib.name_of(input)])
}

has_hpa if {
	some hpa in lib.namespaced_objects(lib.namespace_of(input), "HorizontalPodAutoscaler")
	lib.at(hpa, ["spec", "scaleTargetRef", "kind"], "") == input.kind
	lib.at(hpa, ["spec", "scaleTargetRef", "name"], "") == lib.name_of(input)
}

deny contains lib.finding("pdb-required", msg) if {
	production
	lib.has_inventory
	input.kind in scaled_kinds
	not has_pdb
	msg := sprintf("%s needs a PodDisruptionBudget selecting its pods in production", [resource])
}

has_pdb if {
	some pdb in lib.namespaced_objects(lib.namespace_of(input), "PodDisruptionBudget")
	selector := lib.at(pdb, ["spec", "selector"], null)
	selector != null
	lib.selector_matches(selector, lib.pod_labels(input))
}

warn contains lib.finding("inventory-missing", msg) if {
	production
	not lib.has_inventory
	input.kind in scaled_kinds
	msg := sprintf("%s: HPA and PodDisruptionBudget not checked because data.inventory is missing (run platformctl check)", [resource])
}
