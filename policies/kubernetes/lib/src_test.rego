package kubernetes.lib_test

import data.kubernetes.lib

pod_spec := {"containers": [{"name": "app"}]}

template := {"metadata": {"labels": {"app": "x"}}, "spec": pod_spec}

test_pod_template_for_every_kind if {
	docs := [
		{"kind": "Pod", "metadata": {"labels": {"app": "x"}}, "spec": pod_spec},
		{"kind": "Deployment", "spec": {"template": template}},
		{"kind": "StatefulSet", "spec": {"template": template}},
		{"kind": "DaemonSet", "spec": {"template": template}},
		{"kind": "ReplicaSet", "spec": {"template": template}},
		{"kind": "ReplicationController", "spec": {"template": template}},
		{"kind": "Job", "spec": {"template": template}},
		{"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}},
		{"kind": "PodTemplate", "template": template},
	]
	every doc in docs {
		lib.pod_spec(doc) == pod_spec
		lib.pod_labels(doc) == {"app": "x"}
	}
}

test_pod_template_undefined_for_other_kinds if {
	not lib.pod_template({"kind": "Service", "spec": {"template": template}})
	not lib.pod_template({"kind": "Deployment", "spec": {}})
	not lib.pod_template({"kind": "Deployment", "spec": {"template": null}})
}

test_containers_in_visit_order if {
	spec := {
		"containers": [{"name": "c"}],
		"ephemeralContainers": [{"name": "e"}],
		"initContainers": [{"name": "i"}],
	}
	[c.name | some c in lib.containers(spec)] == ["i", "c", "e"]
	lib.containers({"containers": null}) == []
}

test_get_treats_null_as_missing if {
	lib.get({"a": null}, "a", 1) == 1
	lib.get({"a": false}, "a", 1) == false
	lib.get(null, "a", 1) == 1
	lib.at({"a": {"b": null}}, ["a", "b"], 2) == 2
	lib.at({"a": null}, ["a", "b"], 2) == 2
	lib.at({"a": {"b": 0}}, ["a", "b"], 2) == 0
}

test_selector_matches if {
	labels := {"app": "ingest", "tier": "api"}
	selects := [
		{},
		{"matchLabels": {}},
		{"matchLabels": {"app": "ingest"}},
		{"matchExpressions": [{"key": "app", "operator": "In", "values": ["ingest", "decide"]}]},
		{"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["decide"]}]},
		{"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]},
		{"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
		{"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]},
		{"matchLabels": {"app": "ingest"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]},
	]
	misses := [
		{"matchLabels": {"app": "decide"}},
		{"matchLabels": {"app": "ingest", "missing": "x"}},
		{"matchExpressions": [{"key": "app", "operator": "In", "values": ["decide"]}]},
		{"matchExpressions": [{"key": "missing", "operator": "In", "values": ["x"]}]},
		{"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["ingest"]}]},
		{"matchExpressions": [{"key": "missing", "operator": "Exists"}]},
		{"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
		{"matchExpressions": [{"key": "app", "operator": "Unknown", "values": ["ingest"]}]},
		{"matchLabels": {"app": "ingest"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
	]
	every s in selects {
		lib.selector_matches(s, labels)
	}
	every s in misses {
		not lib.selector_matches(s, labels)
	}
}

test_selector_is_empty if {
	lib.selector_is_empty({})
	lib.selector_is_empty({"matchLabels": {}, "matchExpressions": []})
	not lib.selector_is_empty({"matchLabels": {"a": "b"}})
}

test_inventory_readers if {
	inv := {"namespace": {"ns": {
		"apps/v1": {"Deployment": {"d": {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": template}}}},
		"networking.k8s.io/v1": {"NetworkPolicy": {"p": {"kind": "NetworkPolicy"}}},
		"v1": {"ConfigMap": {"c": {"kind": "ConfigMap"}}},
	}}}
	lib.has_inventory with data.inventory as inv
	not lib.has_inventory
	count(lib.namespaced_objects("ns", "NetworkPolicy")) == 1 with data.inventory as inv
	lib.namespaced_objects("other", "NetworkPolicy") == [] with data.inventory as inv
	lib.pod_templates("ns") == [{"kind": "Deployment", "name": "d", "labels": {"app": "x"}}] with data.inventory as inv
}

# inventory builds data.inventory from a list of namespaced documents; the
# other packages' tests use it.
inventory(docs) := {"namespace": {ns: versions(docs, ns) |
	some d in docs
	ns := d.metadata.namespace
}}

versions(docs, ns) := {v: kinds(docs, ns, v) |
	some d in docs
	d.metadata.namespace == ns
	v := d.apiVersion
}

kinds(docs, ns, v) := {k: names(docs, ns, v, k) |
	some d in docs
	d.metadata.namespace == ns
	d.apiVersion == v
	k := d.kind
}

names(docs, ns, v, k) := {d.metadata.name: d |
	some d in docs
	d.metadata.namespace == ns
	d.apiVersion == v
	d.kind == k
}

test_inventory_builder if {
	d := {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"}}
	inventory([d]) == {"namespace": {"ns": {"v1": {"Service": {"s": d}}}}}
}
