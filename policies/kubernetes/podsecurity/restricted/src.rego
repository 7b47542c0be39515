# METADATA
# title: Pod Security Standards, restricted
# description: |
#   The restricted profile of the Kubernetes Pod Security Standards, latest
#   version, with the semantics of k8s.io/pod-security-admission (v0.31).
#   It is every baseline check plus the restricted ones, except the three
#   baseline checks that a restricted check supersedes upstream
#   (capabilities_baseline, seccompProfile_baseline, hostPathVolumes). For
#   Linux pods the superseding checks are strictly stronger; Windows pods
#   (spec.os.name == "windows") are exempt from the Linux-only restricted
#   checks and therefore from the checks they supersede, as upstream.
#   https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
package kubernetes.podsecurity.restricted

import data.kubernetes.lib
import data.kubernetes.podsecurity.baseline

spec := lib.pod_spec(input)

pod_sc := lib.get(spec, "securityContext", {})

sc(c) := lib.get(c, "securityContext", {})

linux if not lib.is_windows(spec)

superseded := {"capabilities_baseline", "seccompProfile_baseline", "hostPathVolumes"}

deny contains v if {
	some v in baseline.deny
	not v.rule in superseded
}

warn contains v if {
	some v in baseline.warn
}

# --- restrictedVolumes ----------------------------------------------------------

allowed_volume_types := {
	"configMap",
	"csi",
	"downwardAPI",
	"emptyDir",
	"ephemeral",
	"persistentVolumeClaim",
	"projected",
	"secret",
}

deny contains lib.finding("restrictedVolumes", msg) if {
	some volume in lib.get(spec, "volumes", [])
	not allowed_volume(volume)
	found := [t | some t, source in volume; t != "name"; source != null]
	msg := sprintf("volume %q must use only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected or secret (found %v)", [lib.get(volume, "name", ""), found])
}

allowed_volume(volume) if {
	some t in allowed_volume_types
	lib.get(volume, t, null) != null
}

# --- allowPrivilegeEscalation ---------------------------------------------------

deny contains lib.finding("allowPrivilegeEscalation", msg) if {
	linux
	some c in lib.containers(spec)
	lib.get(sc(c), "allowPrivilegeEscalation", null) != false
	msg := sprintf("container %q must set securityContext.allowPrivilegeEscalation=false", [c.name])
}

# --- runAsNonRoot ---------------------------------------------------------------

pod_run_as_non_root := lib.get(pod_sc, "runAsNonRoot", null)

deny contains lib.finding("runAsNonRoot", "pod must not set securityContext.runAsNonRoot=false") if {
	pod_run_as_non_root == false
}

deny contains lib.finding("runAsNonRoot", msg) if {
	some c in lib.containers(spec)
	lib.get(sc(c), "runAsNonRoot", null) == false
	msg := sprintf("container %q must not set securityContext.runAsNonRoot=false", [c.name])
}

deny contains lib.finding("runAsNonRoot", msg) if {
	pod_run_as_non_root != true
	some c in lib.containers(spec)
	lib.get(sc(c), "runAsNonRoot", null) == null
	msg := sprintf("pod or container %q must set securityContext.runAsNonRoot=true", [c.name])
}

# --- runAsUser ------------------------------------------------------------------

deny contains lib.finding("runAsUser", "pod must not set securityContext.runAsUser=0") if {
	lib.get(pod_sc, "runAsUser", null) == 0
}

deny contains lib.finding("runAsUser", msg) if {
	some c in lib.containers(spec)
	lib.get(sc(c), "runAsUser", null) == 0
	msg := sprintf("container %q must not set securityContext.runAsUser=0", [c.name])
}

# --- seccompProfile_restricted --------------------------------------------------

valid_seccomp_types := {"RuntimeDefault", "Localhost"}

pod_seccomp := lib.get(pod_sc, "seccompProfile", null)

pod_seccomp_valid if lib.get(pod_seccomp, "type", "") in valid_seccomp_types

deny contains lib.finding("seccompProfile_restricted", msg) if {
	linux
	pod_seccomp != null
	not pod_seccomp_valid
	msg := sprintf("pod must not set securityContext.seccompProfile.type to %q", [lib.get(pod_seccomp, "type", "")])
}

deny contains lib.finding("seccompProfile_restricted", msg) if {
	linux
	some c in lib.containers(spec)
	profile := lib.get(sc(c), "seccompProfile", null)
	profile != null
	not lib.get(profile, "type", "") in valid_seccomp_types
	msg := sprintf("container %q must not set securityContext.seccompProfile.type to %q", [c.name, lib.get(profile, "type", "")])
}

deny contains lib.finding("seccompProfile_restricted", msg) if {
	linux
	not pod_seccomp_valid
	some c in lib.containers(spec)
	lib.get(sc(c), "seccompProfile", null) == null
	msg := sprintf("pod or container %q must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"", [c.name])
}

# --- capabilities_restricted ----------------------------------------------------

deny contains lib.finding("capabilities_restricted", msg) if {
	linux
	some c in lib.containers(spec)
	not "ALL" in lib.at(sc(c), ["capabilities", "drop"], [])
	msg := sprintf("container %q must set securityContext.capabilities.drop=[\"ALL\"]", [c.name])
}

deny contains lib.finding("capabilities_restricted", msg) if {
	linux
	some c in lib.containers(spec)
	some capability in lib.at(sc(c), ["capabilities", "add"], [])
	capability != "NET_BIND_SERVICE"
	msg := sprintf("container %q must not include %q in securityContext.capabilities.add (only NET_BIND_SERVICE)", [c.name, capability])
}

# --- warnings -------------------------------------------------------------------

# Not part of the standard: a hardening recommendation that the restricted
# profile leaves out.
warn contains lib.finding("readOnlyRootFilesystem", msg) if {
	linux
	some c in lib.get(spec, "containers", [])
	lib.get(sc(c), "readOnlyRootFilesystem", false) != true
	msg := sprintf("container %q should set securityContext.readOnlyRootFilesystem=true", [c.name])
}
