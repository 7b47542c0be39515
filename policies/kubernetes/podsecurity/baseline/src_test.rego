package kubernetes.podsecurity.baseline_test

import data.kubernetes.podsecurity.baseline

app := {"name": "app", "image": "registry.example/app:1.0.0"}

pod(spec) := {
	"apiVersion": "v1",
	"kind": "Pod",
	"metadata": {"name": "p", "namespace": "ns"},
	"spec": object.union({"containers": [app]}, spec),
}

# container_sc puts sc on the "app" container.
container_sc(sc) := pod({"containers": [object.union(app, {"securityContext": sc})]})

init_sc(sc) := pod({"initContainers": [{"name": "init", "image": "x:1", "securityContext": sc}]})

ephemeral_sc(sc) := pod({"ephemeralContainers": [{"name": "debug", "image": "x:1", "securityContext": sc}]})

pod_sc(sc) := pod({"securityContext": sc})

annotated(annotations) := object.union(pod({}), {"metadata": {"annotations": annotations}})

rules(doc) := result if {
	result := {v.rule | some v in baseline.deny} with input as doc
}

bad_cases := [
	{"rule": "windowsHostProcess", "doc": pod_sc({"windowsOptions": {"hostProcess": true}})},
	{"rule": "windowsHostProcess", "doc": container_sc({"windowsOptions": {"hostProcess": true}})},
	{"rule": "windowsHostProcess", "doc": ephemeral_sc({"windowsOptions": {"hostProcess": true}})},
	{"rule": "hostNamespaces", "doc": pod({"hostNetwork": true})},
	{"rule": "hostNamespaces", "doc": pod({"hostPID": true})},
	{"rule": "hostNamespaces", "doc": pod({"hostIPC": true})},
	{"rule": "privileged", "doc": container_sc({"privileged": true})},
	{"rule": "privileged", "doc": init_sc({"privileged": true})},
	{"rule": "capabilities_baseline", "doc": container_sc({"capabilities": {"add": ["NET_RAW"]}})},
	{"rule": "capabilities_baseline", "doc": container_sc({"capabilities": {"add": ["CHOWN", "SYS_ADMIN"]}})},
	{"rule": "capabilities_baseline", "doc": container_sc({"capabilities": {"add": ["chown"]}})},
	{"rule": "hostPathVolumes", "doc": pod({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})},
	{"rule": "hostPorts", "doc": pod({"containers": [object.union(app, {"ports": [{"containerPort": 80, "hostPort": 80}]})]})},
	{"rule": "hostPorts", "doc": pod({"initContainers": [{"name": "init", "image": "x:1", "ports": [{"containerPort": 53, "hostPort": 53}]}]})},
	{"rule": "appArmorProfile", "doc": pod_sc({"appArmorProfile": {"type": "Unconfined"}})},
	{"rule": "appArmorProfile", "doc": pod_sc({"appArmorProfile": {}})},
	{"rule": "appArmorProfile", "doc": container_sc({"appArmorProfile": {"type": "Unconfined"}})},
	{"rule": "appArmorProfile", "doc": annotated({"container.apparmor.security.beta.kubernetes.io/app": "unconfined"})},
	{"rule": "appArmorProfile", "doc": annotated({"container.apparmor.security.beta.kubernetes.io/other": "runtime/x"})},
	{"rule": "seLinuxOptions", "doc": pod_sc({"seLinuxOptions": {"type": "spc_t"}})},
	{"rule": "seLinuxOptions", "doc": pod_sc({"seLinuxOptions": {"user": "system_u"}})},
	{"rule": "seLinuxOptions", "doc": container_sc({"seLinuxOptions": {"role": "system_r"}})},
	{"rule": "seLinuxOptions", "doc": container_sc({"seLinuxOptions": {"type": "unconfined_t"}})},
	{"rule": "procMount", "doc": container_sc({"procMount": "Unmasked"})},
	{"rule": "procMount", "doc": container_sc({"procMount": ""})},
	{"rule": "seccompProfile_baseline", "doc": pod_sc({"seccompProfile": {"type": "Unconfined"}})},
	{"rule": "seccompProfile_baseline", "doc": pod_sc({"seccompProfile": {}})},
	{"rule": "seccompProfile_baseline", "doc": container_sc({"seccompProfile": {"type": "Unconfined"}})},
	{"rule": "seccompProfile_baseline", "doc": init_sc({"seccompProfile": {"type": ""}})},
	{"rule": "sysctls", "doc": pod_sc({"sysctls": [{"name": "kernel.msgmax", "value": "1"}]})},
	{"rule": "sysctls", "doc": pod_sc({"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "net.core.somaxconn", "value": "1"}]})},
]

test_bad_cases_denied if {
	failures := [[i, c.rule] | some i, c in bad_cases; not c.rule in rules(c.doc)]
	print("bad cases not denied:", failures)
	failures == []
}

good_docs := [
	pod({}),
	pod_sc({}),
	container_sc({}),
	pod({"hostNetwork": false, "hostPID": false, "hostIPC": false}),
	pod_sc({"windowsOptions": {"hostProcess": false}}),
	container_sc({"windowsOptions": {"hostProcess": null}}),
	container_sc({"privileged": false}),
	container_sc({"capabilities": {"add": [
		"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
		"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
	]}}),
	container_sc({"capabilities": {"drop": ["ALL"]}}),
	pod({"volumes": [{"name": "h", "hostPath": null, "emptyDir": {}}]}),
	pod({"containers": [object.union(app, {"ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 0}]})]}),
	pod_sc({"appArmorProfile": {"type": "RuntimeDefault"}}),
	container_sc({"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}),
	annotated({
		"container.apparmor.security.beta.kubernetes.io/a": "runtime/default",
		"container.apparmor.security.beta.kubernetes.io/b": "localhost/profile",
		"container.apparmor.security.beta.kubernetes.io/c": "",
	}),
	pod_sc({"seLinuxOptions": {}}),
	pod_sc({"seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"}}),
	container_sc({"seLinuxOptions": {"type": "container_init_t"}}),
	container_sc({"seLinuxOptions": {"type": "container_kvm_t", "user": ""}}),
	container_sc({"seLinuxOptions": {"type": "container_engine_t"}}),
	container_sc({"procMount": "Default"}),
	pod_sc({"seccompProfile": {"type": "RuntimeDefault"}}),
	container_sc({"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}),
	# The alpha annotations are ignored by the latest standard.
	annotated({"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}),
	pod_sc({"sysctls": [
		{"name": "kernel.shm_rmid_forced", "value": "0"},
		{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"},
		{"name": "net.ipv4.tcp_syncookies", "value": "1"},
		{"name": "net.ipv4.ping_group_range", "value": "0 0"},
		{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},
		{"name": "net.ipv4.ip_local_reserved_ports", "value": "8080"},
		{"name": "net.ipv4.tcp_keepalive_time", "value": "60"},
		{"name": "net.ipv4.tcp_fin_timeout", "value": "30"},
		{"name": "net.ipv4.tcp_keepalive_intvl", "value": "10"},
		{"name": "net.ipv4.tcp_keepalive_probes", "value": "3"},
	]}),
]

test_good_docs_pass if {
	failures := [[i, rules(doc)] | some i, doc in good_docs; count(rules(doc)) > 0]
	print("good docs denied:", failures)
	failures == []
}

template := {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "app", "image": "x:1", "securityContext": {"privileged": true}}]}}

test_every_workload_kind_is_checked if {
	docs := [
		{"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": template}},
		{"kind": "StatefulSet", "metadata": {"name": "d"}, "spec": {"template": template}},
		{"kind": "DaemonSet", "metadata": {"name": "d"}, "spec": {"template": template}},
		{"kind": "ReplicaSet", "metadata": {"name": "d"}, "spec": {"template": template}},
		{"kind": "ReplicationController", "metadata": {"name": "d"}, "spec": {"template": template}},
		{"kind": "Job", "metadata": {"name": "d"}, "spec": {"template": template}},
		{"kind": "CronJob", "metadata": {"name": "d"}, "spec": {"jobTemplate": {"spec": {"template": template}}}},
		{"kind": "PodTemplate", "metadata": {"name": "d"}, "template": template},
	]
	every doc in docs {
		rules(doc) == {"privileged"}
	}
}

test_template_annotations_are_checked if {
	bad := object.union(template, {"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}}})
	"appArmorProfile" in rules({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": bad}})
}

test_other_kinds_ignored if {
	rules({"kind": "Service", "metadata": {"name": "s"}, "spec": {"hostNetwork": true}}) == set()
	rules({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}) == set()
}

test_windows_pods_are_not_exempt_from_baseline if {
	"privileged" in rules(pod({"os": {"name": "windows"}, "containers": [object.union(app, {"securityContext": {"privileged": true}})]}))
}

test_message_names_container_and_field if {
	msgs := {v.msg | some v in baseline.deny} with input as container_sc({"privileged": true})
	msgs == {`container "app" must not set securityContext.privileged=true`}
}

test_warns_on_legacy_annotations if {
	doc := annotated({
		"container.apparmor.security.beta.kubernetes.io/app": "runtime/default",
		"seccomp.security.alpha.kubernetes.io/pod": "runtime/default",
	})
	warnings := {v.rule | some v in baseline.warn} with input as doc
	warnings == {"appArmorAnnotationDeprecated", "seccompAnnotationIgnored"}
	clean := {v | some v in baseline.warn} with input as pod({})
	clean == set()
}
