# METADATA
# title: Pod Security Standards, baseline
# description: |
#   The baseline profile of the Kubernetes Pod Security Standards, latest
#   version, with the semantics of k8s.io/pod-security-admission (v0.31,
#   policy/check_*.go). Rule ids are the upstream check ids, so results can
#   be compared check by check. Applies to Pods and to the pod template of
#   every workload kind (see kubernetes.lib).
#   https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline
package kubernetes.podsecurity.baseline

import data.kubernetes.lib

spec := lib.pod_spec(input)

metadata := lib.pod_metadata(input)

pod_sc := lib.get(spec, "securityContext", {})

sc(c) := lib.get(c, "securityContext", {})

# --- windowsHostProcess ------------------------------------------------------

deny contains lib.finding("windowsHostProcess", "pod must not set securityContext.windowsOptions.hostProcess=true") if {
	lib.at(pod_sc, ["windowsOptions", "hostProcess"], false) == true
}

deny contains lib.finding("windowsHostProcess", msg) if {
	some c in lib.containers(spec)
	lib.at(sc(c), ["windowsOptions", "hostProcess"], false) == true
	msg := sprintf("container %q must not set securityContext.windowsOptions.hostProcess=true", [c.name])
}

# --- hostNamespaces -----------------------------------------------------------

deny contains lib.finding("hostNamespaces", msg) if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	lib.get(spec, field, false) == true
	msg := sprintf("pod must not set spec.%s=true", [field])
}

# --- privileged -----------------------------------------------------------------

deny contains lib.finding("privileged", msg) if {
	some c in lib.containers(spec)
	lib.get(sc(c), "privileged", false) == true
	msg := sprintf("container %q must not set securityContext.privileged=true", [c.name])
}

# --- capabilities_baseline ------------------------------------------------------

allowed_capabilities := {
	"AUDIT_WRITE",
	"CHOWN",
	"DAC_OVERRIDE",
	"FOWNER",
	"FSETID",
	"KILL",
	"MKNOD",
	"NET_BIND_SERVICE",
	"SETFCAP",
	"SETGID",
	"SETPCAP",
	"SETUID",
	"SYS_CHROOT",
}

deny contains lib.finding("capabilities_baseline", msg) if {
	some c in lib.containers(spec)
	some capability in lib.at(sc(c), ["capabilities", "add"], [])
	not capability in allowed_capabilities
	msg := sprintf("container %q must not include %q in securityContext.capabilities.add", [c.name, capability])
}

# --- hostPathVolumes ------------------------------------------------------------

deny contains lib.finding("hostPathVolumes", msg) if {
	some volume in lib.get(spec, "volumes", [])
	lib.get(volume, "hostPath", null) != null
	msg := sprintf("volume %q must not use hostPath", [volume.name])
}

# --- hostPorts ------------------------------------------------------------------

deny contains lib.finding("hostPorts", msg) if {
	some c in lib.containers(spec)
	some port in lib.get(c, "ports", [])
	lib.get(port, "hostPort", 0) != 0
	msg := sprintf("container %q must not set ports[].hostPort (found %v)", [c.name, port.hostPort])
}

# --- appArmorProfile ------------------------------------------------------------

allowed_apparmor_types := {"RuntimeDefault", "Localhost"}

apparmor_annotation_prefix := "container.apparmor.security.beta.kubernetes.io/"

deny contains lib.finding("appArmorProfile", msg) if {
	profile := lib.get(pod_sc, "appArmorProfile", null)
	profile != null
	not lib.get(profile, "type", "") in allowed_apparmor_types
	msg := sprintf("pod must not set securityContext.appArmorProfile.type to %q", [lib.get(profile, "type", "")])
}

deny contains lib.finding("appArmorProfile", msg) if {
	some c in lib.containers(spec)
	profile := lib.get(sc(c), "appArmorProfile", null)
	profile != null
	not lib.get(profile, "type", "") in allowed_apparmor_types
	msg := sprintf("container %q must not set securityContext.appArmorProfile.type to %q", [c.name, lib.get(profile, "type", "")])
}

deny contains lib.finding("appArmorProfile", msg) if {
	some key, value in lib.get(metadata, "annotations", {})
	startswith(key, apparmor_annotation_prefix)
	not allowed_apparmor_annotation(value)
	msg := sprintf("annotation %s must not set AppArmor profile %q", [key, value])
}

allowed_apparmor_annotation(value) if value == ""

allowed_apparmor_annotation("runtime/default")

allowed_apparmor_annotation(value) if startswith(value, "localhost/")

# --- seLinuxOptions -------------------------------------------------------------

allowed_selinux_types := {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}

deny contains lib.finding("seLinuxOptions", sprintf("pod %s", [problem])) if {
	some problem in selinux_problems(lib.get(pod_sc, "seLinuxOptions", null))
}

deny contains lib.finding("seLinuxOptions", sprintf("container %q %s", [c.name, problem])) if {
	some c in lib.containers(spec)
	some problem in selinux_problems(lib.get(sc(c), "seLinuxOptions", null))
}

selinux_problems(options) := {p |
	options != null
	some p in selinux_problem(options)
}

selinux_problem(options) := {p |
	not lib.get(options, "type", "") in allowed_selinux_types
	p := sprintf("must not set securityContext.seLinuxOptions.type to %q", [options.type])
} | {p |
	some field in ["user", "role"]
	lib.get(options, field, "") != ""
	p := sprintf("must not set securityContext.seLinuxOptions.%s", [field])
}

# --- procMount ------------------------------------------------------------------

deny contains lib.finding("procMount", msg) if {
	some c in lib.containers(spec)
	mount := lib.get(sc(c), "procMount", null)
	mount != null
	mount != "Default"
	msg := sprintf("container %q must not set securityContext.procMount to %q", [c.name, mount])
}

# --- seccompProfile_baseline ----------------------------------------------------

valid_seccomp_types := {"RuntimeDefault", "Localhost"}

deny contains lib.finding("seccompProfile_baseline", msg) if {
	profile := lib.get(pod_sc, "seccompProfile", null)
	profile != null
	not lib.get(profile, "type", "") in valid_seccomp_types
	msg := sprintf("pod must not set securityContext.seccompProfile.type to %q", [lib.get(profile, "type", "")])
}

deny contains lib.finding("seccompProfile_baseline", msg) if {
	some c in lib.containers(spec)
	profile := lib.get(sc(c), "seccompProfile", null)
	profile != null
	not lib.get(profile, "type", "") in valid_seccomp_types
	msg := sprintf("container %q must not set securityContext.seccompProfile.type to %q", [c.name, lib.get(profile, "type", "")])
}

# --- sysctls --------------------------------------------------------------------

# The safe set of the latest standard (v1.29+).
allowed_sysctls := {
	"kernel.shm_rmid_forced",
	"net.ipv4.ip_local_port_range",
	"net.ipv4.tcp_syncookies",
	"net.ipv4.ping_group_range",
	"net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_fin_timeout",
	"net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
}

deny contains lib.finding("sysctls", msg) if {
	some sysctl in lib.get(pod_sc, "sysctls", [])
	name := lib.get(sysctl, "name", "")
	not name in allowed_sysctls
	msg := sprintf("pod must not set securityContext.sysctls %q (not in the safe set)", [name])
}

# --- warnings: annotations that no longer do what they say ----------------------

warn contains lib.finding("appArmorAnnotationDeprecated", msg) if {
	some key, _ in lib.get(metadata, "annotations", {})
	startswith(key, apparmor_annotation_prefix)
	msg := sprintf("annotation %s is deprecated since Kubernetes 1.30: set securityContext.appArmorProfile instead", [key])
}

warn contains lib.finding("seccompAnnotationIgnored", msg) if {
	some key, _ in lib.get(metadata, "annotations", {})
	seccomp_annotation(key)
	msg := sprintf("annotation %s is ignored since Kubernetes 1.27: set securityContext.seccompProfile instead", [key])
}

seccomp_annotation("seccomp.security.alpha.kubernetes.io/pod")

seccomp_annotation(key) if startswith(key, "container.seccomp.security.alpha.kubernetes.io/")
