# METADATA
# title: Shared helpers for the Kubernetes policies
# description: |
#   Finds the pod template inside any pod-bearing document, lists its
#   containers in the order pod-security-admission visits them, matches
#   label selectors, and reads the optional gatekeeper-style inventory.
#   This package has no deny/warn rules of its own.
package kubernetes.lib

# Kinds whose pod template lives at spec.template.
template_kinds := {
	"Deployment",
	"StatefulSet",
	"DaemonSet",
	"ReplicaSet",
	"ReplicationController",
	"Job",
}

# Every kind that carries a pod spec.
pod_bearing_kinds := template_kinds | {"Pod", "CronJob", "PodTemplate"}

# Kinds whose pods run (a PodTemplate is only a template).
workload_kinds := pod_bearing_kinds - {"PodTemplate"}

# finding is the object every deny/warn rule emits.
finding(rule, msg) := {"msg": msg, "rule": rule}

# get reads key k of o, treating a missing key, a null value and a
# non-object o alike: all give the default d.
get(o, k, d) := v if {
	is_object(o)
	v := o[k]
	v != null
} else := d

# at reads the nested path (an array of keys) of o, with null-safe default d.
at(o, path, d) := v if {
	v := object.get(o, path, null)
	v != null
} else := d

# pod_template returns {"metadata": ..., "spec": ...} for any pod-bearing
# object; it is undefined for other kinds.
pod_template(obj) := {"metadata": get(obj, "metadata", {}), "spec": obj.spec} if {
	obj.kind == "Pod"
	is_object(obj.spec)
}

pod_template(obj) := obj.spec.template if {
	obj.kind in template_kinds
	is_object(obj.spec.template)
}

pod_template(obj) := obj.spec.jobTemplate.spec.template if {
	obj.kind == "CronJob"
	is_object(obj.spec.jobTemplate.spec.template)
}

pod_template(obj) := obj.template if {
	obj.kind == "PodTemplate"
	is_object(obj.template)
}

pod_spec(obj) := get(pod_template(obj), "spec", {})

pod_metadata(obj) := get(pod_template(obj), "metadata", {})

pod_labels(obj) := get(pod_metadata(obj), "labels", {})

# containers lists initContainers, containers and ephemeralContainers, in
# the order pod-security-admission visits them.
containers(spec) := [c |
	some field in ["initContainers", "containers", "ephemeralContainers"]
	some c in get(spec, field, [])
]

# is_windows is true when the pod declares the Windows OS; the Linux-only
# controls of the Pod Security Standards exempt such pods.
is_windows(spec) if at(spec, ["os", "name"], "") == "windows"

# namespace_of gives the namespace of a namespaced object; documents rendered
# without one land in "default".
namespace_of(obj) := get(get(obj, "metadata", {}), "namespace", "default")

name_of(obj) := get(get(obj, "metadata", {}), "name", "")

# selector_matches implements metav1.LabelSelector semantics: every
# matchLabels pair and every matchExpressions requirement must hold; an
# empty selector matches everything.
selector_matches(selector, labels) if {
	every k, v in get(selector, "matchLabels", {}) {
		labels[k] == v
	}
	every e in get(selector, "matchExpressions", []) {
		requirement_matches(e, labels)
	}
}

requirement_matches(e, labels) if {
	e.operator == "In"
	labels[e.key] in get(e, "values", [])
}

# NotIn also holds when the label is absent. (Spelled as two clauses: a
# negated expression over an undefined labels[key] is undefined, not true.)
requirement_matches(e, labels) if {
	e.operator == "NotIn"
	not e.key in object.keys(labels)
}

requirement_matches(e, labels) if {
	e.operator == "NotIn"
	value := labels[e.key]
	not value in get(e, "values", [])
}

requirement_matches(e, labels) if {
	e.operator == "Exists"
	e.key in object.keys(labels)
}

requirement_matches(e, labels) if {
	e.operator == "DoesNotExist"
	not e.key in object.keys(labels)
}

# selector_is_empty is true for a selector that selects every pod.
selector_is_empty(selector) if {
	count(get(selector, "matchLabels", {})) == 0
	count(get(selector, "matchExpressions", [])) == 0
}

# has_inventory is true when the caller supplied data.inventory (the Go tool
# always does; plain `conftest test` on single files does not).
has_inventory if data.inventory

# namespaced_objects(ns, kind) lists the inventory objects of one kind in one
# namespace, whatever their apiVersion.
namespaced_objects(ns, kind) := [obj |
	some versions in object.get(data.inventory, ["namespace", ns], {})
	some obj in get(versions, kind, {})
]

# pod_templates(ns) lists {"kind", "name", "labels"} for every running
# workload of a namespace in the inventory.
pod_templates(ns) := [t |
	some versions in object.get(data.inventory, ["namespace", ns], {})
	some kind, objs in versions
	kind in workload_kinds
	some obj in objs
	t := {"kind": kind, "name": name_of(obj), "labels": pod_labels(obj)}
]
