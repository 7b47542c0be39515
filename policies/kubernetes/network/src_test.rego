package kubernetes.network_test

import data.kubernetes.lib_test.inventory
import data.kubernetes.network

namespace := {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "whisper"}}

deployment(name, labels) := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {"name": name, "namespace": "whisper"},
	"spec": {"template": {
		"metadata": {"labels": labels},
		"spec": {"containers": [{"name": "app", "image": "x:1"}]},
	}},
}

cronjob(name, labels) := {
	"apiVersion": "batch/v1",
	"kind": "CronJob",
	"metadata": {"name": name, "namespace": "whisper"},
	"spec": {"jobTemplate": {"spec": {"template": {
		"metadata": {"labels": labels},
		"spec": {"containers": [{"name": "job", "image": "x:1"}]},
	}}}},
}

netpol(name, spec) := {
	"apiVersion": "networking.k8s.io/v1",
	"kind": "NetworkPolicy",
	"metadata": {"name": name, "namespace": "whisper"},
	"spec": spec,
}

default_deny := netpol("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})

allow_ingest := netpol("allow-ingest", {
	"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingest"}},
	"policyTypes": ["Ingress"],
	"ingress": [{"ports": [{"port": 8080}]}],
})

ingest := deployment("ingest", {"app.kubernetes.io/name": "ingest"})

denies(doc, docs) := result if {
	result := {v.rule | some v in network.deny} with input as doc with data.inventory as inventory(docs)
}

warned(doc, docs) := result if {
	result := {v.rule | some v in network.warn} with input as doc with data.inventory as inventory(docs)
}

# --- netpol-default-deny --------------------------------------------------------

test_namespace_with_default_deny_passes if {
	denies(namespace, [default_deny]) == set()

	# two policies, one per direction, count too
	denies(namespace, [
		netpol("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}),
		netpol("deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}),
	]) == set()
}

test_namespace_without_default_deny_denied if {
	cases := [
		[],
		[allow_ingest],
		# policyTypes defaults to Ingress only
		[netpol("p", {"podSelector": {}})],
		# not every pod selected
		[netpol("p", {"podSelector": {"matchLabels": {"a": "b"}}, "policyTypes": ["Ingress", "Egress"]})],
		# an empty rule allows everything
		[netpol("p", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [{}]})],
		# the policy is in another namespace
		[object.union(default_deny, {"metadata": {"namespace": "other"}})],
	]
	every docs in cases {
		denies(namespace, docs) == {"netpol-default-deny"}
	}
}

test_namespace_missing_one_direction_names_it if {
	msgs := {v.msg | some v in network.deny} with input as namespace
		with data.inventory as inventory([netpol("p", {"podSelector": {}})])
	msgs == {`namespace "whisper" needs a default-deny NetworkPolicy for Egress (podSelector: {}, policyTypes including Egress, no egress rules)`}
}

# --- netpol-workload-selected ---------------------------------------------------

test_workload_selected_passes if {
	denies(ingest, [ingest, default_deny]) == set()
	denies(ingest, [ingest, allow_ingest]) == set()
	denies(cronjob("prune", {"job": "prune"}), [netpol("prune", {
		"podSelector": {"matchExpressions": [{"key": "job", "operator": "Exists"}]},
		"policyTypes": ["Egress"],
		"egress": [{}],
	})]) == set()
}

test_workload_not_selected_denied if {
	denies(ingest, [ingest]) == {"netpol-workload-selected"}
	denies(ingest, [netpol("p", {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "decide"}}})]) == {"netpol-workload-selected"}
	denies(cronjob("prune", {}), [allow_ingest]) == {"netpol-workload-selected"}
}

test_workload_only_default_deny_warned if {
	warned(ingest, [ingest, default_deny]) == {"netpol-workload-isolated"}
	warned(ingest, [ingest, default_deny, allow_ingest]) == set()
}

# --- netpol-dangling ------------------------------------------------------------

test_dangling_policy_denied if {
	denies(allow_ingest, [allow_ingest]) == {"netpol-dangling"}
	denies(allow_ingest, [allow_ingest, deployment("decide", {"app.kubernetes.io/name": "decide"})]) == {"netpol-dangling"}
	notin := netpol("not-ingest", {"podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["ingest"]}]}})
	denies(notin, [notin, ingest]) == {"netpol-dangling"}
}

test_policy_selecting_a_workload_passes if {
	denies(allow_ingest, [allow_ingest, ingest]) == set()
	denies(default_deny, [default_deny]) == set()
	doesnotexist := netpol("unlabelled", {"podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "DoesNotExist"}]}})
	denies(doesnotexist, [doesnotexist, cronjob("prune", {"job": "prune"})]) == set()
}

# --- without inventory ----------------------------------------------------------

test_no_context_rules_without_inventory if {
	every doc in [namespace, ingest, allow_ingest, cronjob("prune", {})] {
		{v | some v in network.deny} == set() with input as doc
		{v.rule | some v in network.warn} == {"inventory-missing"} with input as doc
	}
	{v | some v in network.warn} == set() with input as {"kind": "ConfigMap", "metadata": {"name": "c"}}
}

test_policy_selecting_operator_pods_passes if {
	kafka := {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "Kafka", "metadata": {"name": "whisper", "namespace": "whisper"}}
	brokers := netpol("brokers", {"podSelector": {"matchLabels": {"strimzi.io/cluster": "whisper"}}})
	denies(brokers, [brokers, kafka]) == set()

	# without the operator's resource, or selecting by other labels, it dangles
	denies(brokers, [brokers]) == {"netpol-dangling"}
	other := netpol("other", {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}})
	denies(other, [other, kafka]) == {"netpol-dangling"}
	pg := {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "pg", "namespace": "whisper"}}
	instances := netpol("pg", {"podSelector": {"matchExpressions": [{"key": "cnpg.io/cluster", "operator": "In", "values": ["pg"]}]}})
	denies(instances, [instances, pg]) == set()
}
