package kubernetes.workload_test

import data.kubernetes.lib_test.inventory
import data.kubernetes.workload

digest := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

good_container := {
	"name": "app",
	"image": concat("", ["ghcr.io/whisperhq/whisper:1.4.0@", digest]),
	"resources": {
		"requests": {"cpu": "100m", "memory": "128Mi"},
		"limits": {"cpu": "1", "memory": "256Mi"},
	},
	"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
	"readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
}

labels := {"app.kubernetes.io/name": "ingest"}

owner(kind, container) := {
	"apiVersion": "apps/v1",
	"kind": kind,
	"metadata": {"name": "ingest", "namespace": "whisper"},
	"spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
}

deployment(container) := owner("Deployment", container)

with_container(patch) := deployment(object.union(good_container, patch))

without(keys) := deployment(object.remove(good_container, keys))

image(ref) := with_container({"image": ref})

# resources(r) replaces the resources of the good container.
resources(r) := deployment(object.union(object.remove(good_container, {"resources"}), {"resources": r}))

hpa := {
	"apiVersion": "autoscaling/v2",
	"kind": "HorizontalPodAutoscaler",
	"metadata": {"name": "ingest", "namespace": "whisper"},
	"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ingest"}},
}

pdb := {
	"apiVersion": "policy/v1",
	"kind": "PodDisruptionBudget",
	"metadata": {"name": "ingest", "namespace": "whisper"},
	"spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
}

denies(doc) := result if {
	result := {v.rule | some v in workload.deny} with input as doc
}

warned(doc) := result if {
	result := {v.rule | some v in workload.warn} with input as doc
}

prod_denies(doc, docs) := result if {
	result := {v.rule | some v in workload.deny} with input as doc with data.environment as "production" with data.inventory as inventory(docs)
}

test_good_deployment_passes if {
	denies(deployment(good_container)) == set()
	warned(deployment(good_container)) == set()
	prod_denies(deployment(good_container), [hpa, pdb]) == set()
}

bad_cases := [
	{"rule": "resources-requests", "doc": resources({"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}})},
	{"rule": "resources-requests", "doc": resources({"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}})},
	{"rule": "resources-requests", "doc": without({"resources"})},
	{"rule": "resources-memory-limit", "doc": resources({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1"}})},
	{"rule": "resources-requests", "doc": object.union(deployment(good_container), {"spec": {"template": {"spec": {"initContainers": [{"name": "init", "image": "x:1"}]}}}})},
	{"rule": "probes", "doc": without({"livenessProbe"})},
	{"rule": "probes", "doc": without({"readinessProbe"})},
	{"rule": "probes", "doc": owner("StatefulSet", object.remove(good_container, {"readinessProbe"}))},
	{"rule": "probes", "doc": owner("DaemonSet", object.remove(good_container, {"livenessProbe"}))},
	{"rule": "probes", "doc": {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [object.remove(good_container, {"livenessProbe"})]}}},
	{"rule": "image-tag", "doc": image("ghcr.io/whisperhq/whisper:latest")},
	{"rule": "image-tag", "doc": image("ghcr.io/whisperhq/whisper")},
	{"rule": "image-tag", "doc": image("registry.local:5000/whisper")},
	{"rule": "image-tag", "doc": image("whisper")},
]

test_bad_cases_denied if {
	failures := [[i, c.rule] | some i, c in bad_cases; not c.rule in denies(c.doc)]
	print("bad cases not denied:", failures)
	failures == []
}

good_docs := [
	image("ghcr.io/whisperhq/whisper:1.4.0"),
	image("registry.local:5000/whisper:1.4.0"),
	image(concat("", ["ghcr.io/whisperhq/whisper@", digest])),
	# Jobs, CronJobs and run-to-completion Pods need no probes
	{"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [object.remove(good_container, {"livenessProbe", "readinessProbe"})]}}}},
	{"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [object.remove(good_container, {"livenessProbe", "readinessProbe"})]}}}}}},
	{"kind": "Pod", "metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": [object.remove(good_container, {"livenessProbe", "readinessProbe"})]}},
	# init containers need resources but no probes
	object.union(deployment(good_container), {"spec": {"template": {"spec": {"initContainers": [object.remove(good_container, {"livenessProbe", "readinessProbe"})]}}}}),
	{"kind": "Service", "metadata": {"name": "s"}, "spec": {}},
]

test_good_docs_pass if {
	failures := [[i, denies(doc)] | some i, doc in good_docs; count(denies(doc)) > 0]
	print("good docs denied:", failures)
	failures == []
}

test_cpu_limit_is_a_warning if {
	doc := resources({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}})
	denies(doc) == set()
	warned(doc) == {"resources-cpu-limit"}
}

test_digest_required_in_production_only if {
	tagged := image("ghcr.io/whisperhq/whisper:1.4.0")
	denies(tagged) == set()
	prod_denies(tagged, [hpa, pdb]) == {"image-digest"}
	prod_denies(image("ghcr.io/whisperhq/whisper@sha256:abc"), [hpa, pdb]) == {"image-digest", "image-tag"}
	d := {v.rule | some v in workload.deny} with input as tagged with data.environment as "staging"
	d == set()
}

test_hpa_and_pdb_required_in_production if {
	doc := deployment(good_container)
	prod_denies(doc, []) == {"hpa-required", "pdb-required"}
	prod_denies(doc, [pdb]) == {"hpa-required"}
	prod_denies(doc, [hpa]) == {"pdb-required"}

	# the HPA must target this Deployment, the PDB must select its pods
	other_hpa := object.union(hpa, {"spec": {"scaleTargetRef": {"name": "decide"}}})
	other_pdb := object.union(pdb, {"spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "decide"}}}})
	prod_denies(doc, [other_hpa, other_pdb]) == {"hpa-required", "pdb-required"}

	# a StatefulSet is held to the same, DaemonSets are not
	prod_denies(owner("StatefulSet", good_container), []) == {"hpa-required", "pdb-required"}
	prod_denies(owner("DaemonSet", good_container), []) == set()

	# a PDB in another namespace does not count
	prod_denies(doc, [hpa, object.union(pdb, {"metadata": {"namespace": "other"}})]) == {"pdb-required"}
}

test_production_without_inventory_warns if {
	doc := deployment(good_container)
	d := {v.rule | some v in workload.deny} with input as doc with data.environment as "production"
	d == set()
	w := {v.rule | some v in workload.warn} with input as doc with data.environment as "production"
	w == {"inventory-missing"}
}
