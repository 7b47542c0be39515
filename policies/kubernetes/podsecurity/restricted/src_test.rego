package kubernetes.podsecurity.restricted_test

import data.kubernetes.podsecurity.restricted

restricted_sc := {
	"allowPrivilegeEscalation": false,
	"runAsNonRoot": true,
	"seccompProfile": {"type": "RuntimeDefault"},
	"capabilities": {"drop": ["ALL"]},
	"readOnlyRootFilesystem": true,
}

app := {"name": "app", "image": "registry.example/app:1.0.0", "securityContext": restricted_sc}

pod(spec) := {
	"apiVersion": "v1",
	"kind": "Pod",
	"metadata": {"name": "p", "namespace": "ns"},
	"spec": object.union({"containers": [app]}, spec),
}

# container_sc replaces the securityContext of the "app" container.
container_sc(sc) := pod({"containers": [{"name": "app", "image": "x:1", "securityContext": sc}]})

# patched merges patch into the restricted securityContext of "app".
patched(patch) := container_sc(object.union(restricted_sc, patch))

without(key) := container_sc(object.remove(restricted_sc, {key}))

windows(spec) := pod(object.union({"os": {"name": "windows"}}, spec))

rules(doc) := result if {
	result := {v.rule | some v in restricted.deny} with input as doc
}

bad_cases := [
	# baseline checks are part of restricted
	{"rule": "hostNamespaces", "doc": pod({"hostNetwork": true})},
	{"rule": "privileged", "doc": patched({"privileged": true})},
	{"rule": "sysctls", "doc": pod({"securityContext": {"sysctls": [{"name": "kernel.msgmax"}]}})},
	{"rule": "procMount", "doc": patched({"procMount": "Unmasked"})},
	{"rule": "seLinuxOptions", "doc": patched({"seLinuxOptions": {"type": "spc_t"}})},
	{"rule": "appArmorProfile", "doc": patched({"appArmorProfile": {"type": "Unconfined"}})},
	{"rule": "hostPorts", "doc": pod({"containers": [object.union(app, {"ports": [{"hostPort": 8080}]})]})},
	{"rule": "windowsHostProcess", "doc": patched({"windowsOptions": {"hostProcess": true}})},
	# restrictedVolumes
	{"rule": "restrictedVolumes", "doc": pod({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})},
	{"rule": "restrictedVolumes", "doc": pod({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]})},
	{"rule": "restrictedVolumes", "doc": pod({"volumes": [{"name": "g", "gitRepo": {"repository": "r"}}]})},
	{"rule": "restrictedVolumes", "doc": pod({"volumes": [{"name": "none"}]})},
	{"rule": "restrictedVolumes", "doc": pod({"volumes": [{"name": "null", "emptyDir": null}]})},
	# allowPrivilegeEscalation
	{"rule": "allowPrivilegeEscalation", "doc": without("allowPrivilegeEscalation")},
	{"rule": "allowPrivilegeEscalation", "doc": patched({"allowPrivilegeEscalation": true})},
	{"rule": "allowPrivilegeEscalation", "doc": pod({"initContainers": [{"name": "init", "image": "x:1", "securityContext": object.remove(restricted_sc, {"allowPrivilegeEscalation"})}]})},
	# runAsNonRoot
	{"rule": "runAsNonRoot", "doc": without("runAsNonRoot")},
	{"rule": "runAsNonRoot", "doc": patched({"runAsNonRoot": false})},
	{"rule": "runAsNonRoot", "doc": pod({"securityContext": {"runAsNonRoot": false}})},
	{"rule": "runAsNonRoot", "doc": pod({"securityContext": {"runAsNonRoot": true}, "containers": [object.union(app, {"securityContext": object.union(restricted_sc, {"runAsNonRoot": false})})]})},
	# runAsUser
	{"rule": "runAsUser", "doc": patched({"runAsUser": 0})},
	{"rule": "runAsUser", "doc": pod({"securityContext": {"runAsUser": 0}})},
	# seccompProfile_restricted
	{"rule": "seccompProfile_restricted", "doc": without("seccompProfile")},
	{"rule": "seccompProfile_restricted", "doc": patched({"seccompProfile": {"type": "Unconfined"}})},
	{"rule": "seccompProfile_restricted", "doc": container_sc(object.union(object.remove(restricted_sc, {"seccompProfile"}), {"seccompProfile": {}}))},
	{"rule": "seccompProfile_restricted", "doc": pod({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})},
	{"rule": "seccompProfile_restricted", "doc": pod({
		"securityContext": {"seccompProfile": {"type": "Unconfined"}},
		"containers": [container_sc(object.remove(restricted_sc, {"seccompProfile"})).spec.containers[0]],
	})},
	# capabilities_restricted
	{"rule": "capabilities_restricted", "doc": without("capabilities")},
	{"rule": "capabilities_restricted", "doc": patched({"capabilities": {"drop": ["NET_RAW"]}})},
	{"rule": "capabilities_restricted", "doc": patched({"capabilities": {"drop": ["all"]}})},
	{"rule": "capabilities_restricted", "doc": patched({"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}})},
	{"rule": "capabilities_restricted", "doc": pod({"ephemeralContainers": [{"name": "debug", "image": "x:1", "securityContext": object.remove(restricted_sc, {"capabilities"})}]})},
	# Windows pods stay subject to the checks that are not Linux-only.
	{"rule": "runAsNonRoot", "doc": windows({"containers": [{"name": "app", "image": "x:1"}]})},
	{"rule": "hostNamespaces", "doc": windows({"hostNetwork": true})},
]

test_bad_cases_denied if {
	failures := [[i, c.rule] | some i, c in bad_cases; not c.rule in rules(c.doc)]
	print("bad cases not denied:", failures)
	failures == []
}

good_docs := [
	pod({}),
	# pod-level settings cover containers that leave them unset
	pod({
		"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
		"containers": [{"name": "app", "image": "x:1", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
	}),
	# container-level settings may override a pod-level unset
	patched({"runAsUser": 1000, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
	pod({"securityContext": {"runAsUser": 1000, "runAsNonRoot": true}}),
	pod({"volumes": [
		{"name": "a", "configMap": {"name": "c"}},
		{"name": "b", "csi": {"driver": "d"}},
		{"name": "c", "downwardAPI": {}},
		{"name": "d", "emptyDir": {}},
		{"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
		{"name": "f", "persistentVolumeClaim": {"claimName": "c"}},
		{"name": "g", "projected": {"sources": []}},
		{"name": "h", "secret": {"secretName": "s"}},
	]}),
	# Linux-only controls do not apply to Windows pods
	windows({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "app", "image": "x:1"}]}),
]

test_good_docs_pass if {
	failures := [[i, rules(doc)] | some i, doc in good_docs; count(rules(doc)) > 0]
	print("good docs denied:", failures)
	failures == []
}

# Upstream, capabilities_restricted and seccompProfile_restricted replace their
# baseline checks; as they exempt Windows pods, restricted lets a Windows pod
# add capabilities or set an unconfined seccomp profile that baseline denies.
test_superseded_baseline_checks_follow_upstream if {
	doc := windows({
		"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Unconfined"}},
		"containers": [{"name": "app", "image": "x:1", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
	})
	rules(doc) == set()
	baseline_rules := {v.rule | some v in data.kubernetes.podsecurity.baseline.deny} with input as doc
	baseline_rules == {"capabilities_baseline", "seccompProfile_baseline"}
}

test_host_path_reported_once_as_restricted_volume if {
	rules(pod({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})) == {"restrictedVolumes"}
}

test_cronjob_template_checked if {
	doc := {
		"apiVersion": "batch/v1",
		"kind": "CronJob",
		"metadata": {"name": "c"},
		"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "job", "image": "x:1"}]}}}}},
	}
	rules(doc) == {"allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile_restricted", "capabilities_restricted"}
}

test_message_names_container_and_field if {
	msgs := {v.msg | some v in restricted.deny} with input as without("allowPrivilegeEscalation")
	msgs == {`container "app" must set securityContext.allowPrivilegeEscalation=false`}
}

test_warns_on_writable_root_filesystem if {
	warnings := {v.rule | some v in restricted.warn} with input as without("readOnlyRootFilesystem")
	warnings == {"readOnlyRootFilesystem"}
	clean := {v | some v in restricted.warn} with input as pod({})
	clean == set()
}
