package kubernetes.rbac_test

import data.kubernetes.rbac

role(rules) := {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r", "namespace": "ns"}, "rules": rules}

cluster_role(rules) := object.union(role(rules), {"kind": "ClusterRole"})

binding(role_ref, subjects) := {
	"apiVersion": "rbac.authorization.k8s.io/v1",
	"kind": "RoleBinding",
	"metadata": {"name": "b", "namespace": "ns"},
	"roleRef": object.union({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role"}, role_ref),
	"subjects": subjects,
}

sa_subject := {"kind": "ServiceAccount", "name": "ingest", "namespace": "ns"}

deployment(pod_spec) := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {"name": "d", "namespace": "ns"},
	"spec": {"template": {"spec": object.union({"containers": [{"name": "app", "image": "x:1"}]}, pod_spec)}},
}

denied(doc) := result if {
	result := {v.rule | some v in rbac.deny} with input as doc
}

warned(doc) := result if {
	result := {v.rule | some v in rbac.warn} with input as doc
}

bad_cases := [
	{"rule": "rbac-wildcard-verbs", "doc": role([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}])},
	{"rule": "rbac-wildcard-resources", "doc": cluster_role([{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}])},
	{"rule": "rbac-wildcard-resources", "doc": role([{"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]}])},
	{"rule": "rbac-wildcard-apigroups", "doc": role([{"apiGroups": ["*"], "resources": ["configmaps"], "verbs": ["get"]}])},
	{"rule": "rbac-secrets-read", "doc": role([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])},
	{"rule": "rbac-secrets-read", "doc": role([{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["list", "create"]}])},
	{"rule": "rbac-secrets-read", "doc": cluster_role([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["watch"], "resourceNames": ["s"]}])},
	{"rule": "rbac-secrets-read", "doc": role([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}])},
	{"rule": "rbac-secrets-read", "doc": role([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}])},
	{"rule": "rbac-pod-exec", "doc": role([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}])},
	{"rule": "rbac-pod-exec", "doc": role([{"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["get", "create"]}])},
	{"rule": "rbac-pod-exec", "doc": role([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}])},
	{"rule": "rbac-escalation-verbs", "doc": cluster_role([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]}])},
	{"rule": "rbac-escalation-verbs", "doc": cluster_role([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["bind"]}])},
	{"rule": "rbac-escalation-verbs", "doc": cluster_role([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}])},
	{"rule": "rbac-cluster-admin-binding", "doc": binding({"kind": "ClusterRole", "name": "cluster-admin"}, [sa_subject])},
	{"rule": "rbac-cluster-admin-binding", "doc": object.union(binding({"kind": "ClusterRole", "name": "cluster-admin"}, [sa_subject]), {"kind": "ClusterRoleBinding"})},
	{"rule": "rbac-forbidden-subject", "doc": binding({"name": "r"}, [{"kind": "User", "name": "system:anonymous"}])},
	{"rule": "rbac-forbidden-subject", "doc": binding({"name": "r"}, [{"kind": "Group", "name": "system:unauthenticated"}])},
	{"rule": "rbac-forbidden-subject", "doc": binding({"name": "r"}, [sa_subject, {"kind": "User", "name": "*"}])},
	{"rule": "rbac-forbidden-subject", "doc": binding({"name": "r"}, [{"kind": "ServiceAccount", "name": "x", "namespace": "*"}])},
	{"rule": "sa-automount-token", "doc": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}}},
	{"rule": "sa-automount-token", "doc": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}, "automountServiceAccountToken": true}},
	{"rule": "pod-automount-token", "doc": deployment({"serviceAccountName": "ingest", "automountServiceAccountToken": true})},
	{"rule": "pod-automount-token", "doc": deployment({})},
	{"rule": "pod-automount-token", "doc": deployment({"serviceAccountName": "default"})},
]

test_bad_cases_denied if {
	failures := [[i, c.rule] | some i, c in bad_cases; not c.rule in denied(c.doc)]
	print("bad cases not denied:", failures)
	failures == []
}

good_docs := [
	role([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]),
	role([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update"]}]),
	# secrets of another API group are not core secrets
	role([{"apiGroups": ["example.com"], "resources": ["secrets"], "verbs": ["get"]}]),
	role([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]),
	cluster_role([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"]}]),
	binding({"name": "r"}, [sa_subject]),
	binding({"kind": "ClusterRole", "name": "view"}, [{"kind": "Group", "name": "whisper:oncall"}]),
	{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}, "automountServiceAccountToken": false},
	deployment({"serviceAccountName": "ingest", "automountServiceAccountToken": false}),
	deployment({"automountServiceAccountToken": false}),
	deployment({"serviceAccountName": "ingest"}),
	{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
]

test_good_docs_pass if {
	failures := [[i, denied(doc)] | some i, doc in good_docs; count(denied(doc)) > 0]
	print("good docs denied:", failures)
	failures == []
}

test_warnings if {
	warned(binding({"kind": "ClusterRole", "name": "view"}, [{"kind": "Group", "name": "system:authenticated"}])) == {"rbac-broad-subject"}
	warned(deployment({"serviceAccountName": "ingest"})) == {"pod-automount-token-unset"}
	warned(deployment({"serviceAccountName": "ingest", "automountServiceAccountToken": false})) == set()
	warned(binding({"name": "r"}, [sa_subject])) == set()
}

test_messages_name_the_object if {
	msgs := {v.msg | some v in rbac.deny} with input as binding({"kind": "ClusterRole", "name": "cluster-admin"}, [sa_subject])
	msgs == {`RoleBinding "b" must not bind cluster-admin`}
}
