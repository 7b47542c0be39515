# METADATA
# title: NetworkPolicy coverage
# description: |
#   Every namespace denies all ingress and egress by default, every workload
#   is selected by a NetworkPolicy of its namespace, and no NetworkPolicy
#   selects nothing. These rules need the other documents of the rendered
#   environment, read from the gatekeeper-style data.inventory:
#     data.inventory.namespace[<ns>][<apiVersion>][<kind>][<name>] = document
#     data.inventory.cluster[<apiVersion>][<kind>][<name>]         = document
#   Without data.inventory they stay silent and a warning says why.
#   https://kubernetes.io/docs/concepts/services-networking/network-policies/
package kubernetes.network

import data.kubernetes.lib

network_policies(ns) := lib.namespaced_objects(ns, "NetworkPolicy")

# policy_types gives the effective spec.policyTypes, defaulted as the API
# server does: Ingress always, Egress when egress rules are present.
policy_types(p) := {t | some t in p.spec.policyTypes} if {
	count(lib.at(p, ["spec", "policyTypes"], [])) > 0
} else := {"Ingress", "Egress"} if {
	count(lib.at(p, ["spec", "egress"], [])) > 0
} else := {"Ingress"}

rules_field := {"Ingress": "ingress", "Egress": "egress"}

# denies_all(p, direction) is true when p selects every pod of its namespace
# and allows nothing in that direction.
denies_all(p, direction) if {
	lib.selector_is_empty(lib.at(p, ["spec", "podSelector"], {}))
	direction in policy_types(p)
	count(lib.at(p, ["spec", rules_field[direction]], [])) == 0
}

selects(p, labels) if lib.selector_matches(lib.at(p, ["spec", "podSelector"], {}), labels)

# --- netpol-default-deny --------------------------------------------------------

deny contains lib.finding("netpol-default-deny", msg) if {
	lib.has_inventory
	input.kind == "Namespace"
	ns := lib.name_of(input)
	some direction in ["Ingress", "Egress"]
	not namespace_denies_all(ns, direction)
	msg := sprintf("namespace %q needs a default-deny NetworkPolicy for %s (podSelector: {}, policyTypes including %s, no %s rules)", [ns, direction, direction, rules_field[direction]])
}

namespace_denies_all(ns, direction) if {
	some p in network_policies(ns)
	denies_all(p, direction)
}

# --- netpol-workload-selected ---------------------------------------------------

is_workload if {
	input.kind in lib.workload_kinds
	is_object(lib.pod_template(input))
}

workload_labels := lib.pod_labels(input) if is_workload

deny contains lib.finding("netpol-workload-selected", msg) if {
	lib.has_inventory
	is_workload
	ns := lib.namespace_of(input)
	not workload_selected(ns)
	msg := sprintf("%s %q is selected by no NetworkPolicy of namespace %q", [input.kind, lib.name_of(input), ns])
}

workload_selected(ns) if {
	some p in network_policies(ns)
	selects(p, workload_labels)
}

# A pod selected only by policies without any rule can neither receive nor
# send traffic: usually a missing allow policy.
warn contains lib.finding("netpol-workload-isolated", msg) if {
	lib.has_inventory
	is_workload
	ns := lib.namespace_of(input)
	workload_selected(ns)
	not workload_allowed(ns)
	msg := sprintf("%s %q is selected only by deny-all NetworkPolicies of namespace %q: no traffic reaches or leaves it", [input.kind, lib.name_of(input), ns])
}

workload_allowed(ns) if {
	some p in network_policies(ns)
	selects(p, workload_labels)
	some field in ["ingress", "egress"]
	count(lib.at(p, ["spec", field], [])) > 0
}

# --- netpol-dangling ------------------------------------------------------------

deny contains lib.finding("netpol-dangling", msg) if {
	lib.has_inventory
	input.kind == "NetworkPolicy"
	selector := lib.at(input, ["spec", "podSelector"], {})
	not lib.selector_is_empty(selector)
	ns := lib.namespace_of(input)
	not selects_some_workload(ns)
	msg := sprintf("NetworkPolicy %q selects no workload of namespace %q: fix its podSelector or delete it", [lib.name_of(input), ns])
}

selects_some_workload(ns) if {
	some t in lib.pod_templates(ns)
	selects(input, t.labels)
}

# Operators create pods that no manifest templates (Strimzi brokers, CNPG
# instances). A policy selecting them by the operator's own labels counts as
# selecting something when a custom resource of that operator is in the
# namespace. Keyed by API group; the value is the label-key prefix the
# operator puts on its pods.
operator_label_prefixes := {
	"kafka.strimzi.io": "strimzi.io/",
	"postgresql.cnpg.io": "cnpg.io/",
}

selects_some_workload(ns) if {
	some api_version, _ in object.get(data.inventory, ["namespace", ns], {})
	prefix := operator_label_prefixes[split(api_version, "/")[0]]
	some key in selector_keys(lib.at(input, ["spec", "podSelector"], {}))
	startswith(key, prefix)
}

selector_keys(selector) := {k | some k, _ in lib.get(selector, "matchLabels", {})} | {e.key | some e in lib.get(selector, "matchExpressions", [])}

# --- inventory-missing ----------------------------------------------------------

warn contains lib.finding("inventory-missing", msg) if {
	not lib.has_inventory
	context_kind
	msg := sprintf("%s %q: NetworkPolicy coverage not checked because data.inventory is missing (run platformctl check)", [input.kind, lib.name_of(input)])
}

context_kind if input.kind in {"Namespace", "NetworkPolicy"}

context_kind if is_workload
