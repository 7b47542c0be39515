# METADATA
# title: RBAC least privilege
# description: |
#   Roles grant named verbs on named resources; bindings never hand out
#   cluster-admin or reach anonymous, unauthenticated or wildcard subjects;
#   service account tokens are mounted only where a pod asks for them.
#   https://kubernetes.io/docs/concepts/security/rbac-good-practices/
package kubernetes.rbac

import data.kubernetes.lib

role_kinds := {"Role", "ClusterRole"}

binding_kinds := {"RoleBinding", "ClusterRoleBinding"}

rules := lib.get(input, "rules", []) if input.kind in role_kinds

role := sprintf("%s %q", [input.kind, lib.name_of(input)])

# --- wildcards in rules ---------------------------------------------------------

deny contains lib.finding("rbac-wildcard-verbs", msg) if {
	some rule in rules
	"*" in lib.get(rule, "verbs", [])
	msg := sprintf("%s must not grant verbs [\"*\"]: list the verbs it needs", [role])
}

deny contains lib.finding("rbac-wildcard-resources", msg) if {
	some rule in rules
	some resource in lib.get(rule, "resources", [])
	contains(resource, "*")
	msg := sprintf("%s must not grant resources %q: list the resources it needs", [role, resource])
}

deny contains lib.finding("rbac-wildcard-apigroups", msg) if {
	some rule in rules
	"*" in lib.get(rule, "apiGroups", [])
	msg := sprintf("%s must not grant apiGroups [\"*\"]: list the API groups it needs", [role])
}

# --- sensitive grants -----------------------------------------------------------

# grants(rule, group, resource, verb) is true when the rule grants that verb
# on that resource of that API group (wildcards included).
grants(rule, group, resource, verb) if {
	some g in lib.get(rule, "apiGroups", [])
	g in {group, "*"}
	some r in lib.get(rule, "resources", [])
	r in {resource, "*"}
	some v in lib.get(rule, "verbs", [])
	v in {verb, "*"}
}

deny contains lib.finding("rbac-secrets-read", msg) if {
	some rule in rules
	some verb in ["get", "list", "watch"]
	grants(rule, "", "secrets", verb)
	msg := sprintf("%s must not grant %q on secrets: mount the secret into the pod instead", [role, verb])
}

# create is what exec/attach need; get is included because API servers
# before the AuthorizePodWebsocketUpgradeCreatePermission feature (1.35)
# also accept a websocket upgrade authorized by get.
deny contains lib.finding("rbac-pod-exec", msg) if {
	some rule in rules
	some resource in ["pods/exec", "pods/attach"]
	some verb in ["create", "get"]
	grants(rule, "", resource, verb)
	msg := sprintf("%s must not grant %q on %s", [role, verb, resource])
}

deny contains lib.finding("rbac-escalation-verbs", msg) if {
	some rule in rules
	some verb in lib.get(rule, "verbs", [])
	verb in {"escalate", "bind", "impersonate"}
	msg := sprintf("%s must not grant the %q verb", [role, verb])
}

# --- bindings -------------------------------------------------------------------

binding := sprintf("%s %q", [input.kind, lib.name_of(input)]) if input.kind in binding_kinds

deny contains lib.finding("rbac-cluster-admin-binding", msg) if {
	input.kind in binding_kinds
	input.roleRef.kind == "ClusterRole"
	input.roleRef.name == "cluster-admin"
	msg := sprintf("%s must not bind cluster-admin", [binding])
}

forbidden_subjects := {"system:anonymous", "system:unauthenticated"}

deny contains lib.finding("rbac-forbidden-subject", msg) if {
	input.kind in binding_kinds
	some subject in lib.get(input, "subjects", [])
	subject.kind in {"User", "Group"}
	subject.name in forbidden_subjects
	msg := sprintf("%s must not bind %s %q", [binding, subject.kind, subject.name])
}

deny contains lib.finding("rbac-forbidden-subject", msg) if {
	input.kind in binding_kinds
	some subject in lib.get(input, "subjects", [])
	some field in ["name", "namespace"]
	contains(lib.get(subject, field, ""), "*")
	msg := sprintf("%s must not use a wildcard subject %s %q", [binding, field, subject[field]])
}

broad_groups := {"system:authenticated", "system:serviceaccounts"}

warn contains lib.finding("rbac-broad-subject", msg) if {
	input.kind in binding_kinds
	some subject in lib.get(input, "subjects", [])
	subject.kind == "Group"
	subject.name in broad_groups
	msg := sprintf("%s binds every member of group %q: bind named service accounts instead", [binding, subject.name])
}

# --- service account tokens -----------------------------------------------------

deny contains lib.finding("sa-automount-token", msg) if {
	input.kind == "ServiceAccount"
	lib.get(input, "automountServiceAccountToken", null) != false
	msg := sprintf("ServiceAccount %q must set automountServiceAccountToken: false (pods that call the API opt in themselves)", [lib.name_of(input)])
}

deny contains lib.finding("pod-automount-token", msg) if {
	input.kind in lib.pod_bearing_kinds
	lib.get(lib.pod_spec(input), "automountServiceAccountToken", null) == true
	msg := sprintf("%s %q must not set automountServiceAccountToken: true in its pod spec", [input.kind, lib.name_of(input)])
}

# A pod that leaves the field unset inherits it from its service account.
# The "default" service account is never in our manifests (so the rule above
# cannot reach it) and mounts a token unless told otherwise: deny. A named
# account is held to automountServiceAccountToken: false above: warn only.
deny contains lib.finding("pod-automount-token", msg) if {
	input.kind in lib.pod_bearing_kinds
	lib.get(lib.pod_spec(input), "automountServiceAccountToken", null) == null
	service_account_name == "default"
	msg := sprintf("%s %q runs as the default service account and must set automountServiceAccountToken: false in its pod spec", [input.kind, lib.name_of(input)])
}

warn contains lib.finding("pod-automount-token-unset", msg) if {
	input.kind in lib.pod_bearing_kinds
	lib.get(lib.pod_spec(input), "automountServiceAccountToken", null) == null
	service_account_name != "default"
	msg := sprintf("%s %q should set automountServiceAccountToken: false in its pod spec (it relies on service account %q)", [input.kind, lib.name_of(input), service_account_name])
}

service_account_name := name if {
	name := lib.get(lib.pod_spec(input), "serviceAccountName", "")
	name != ""
} else := "default"
