package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"
	psa "k8s.io/pod-security-admission/policy"

	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
	"github.com/whisperhq/whisper/internal/gitops/policy"
)

// goodPod passes the restricted profile: every variant below changes one
// security-relevant field of it, so a disagreement names exactly one field.
func goodPod() *corev1.Pod {
	f, t := false, true
	uid := int64(1000)
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "whisper"},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &t,
				RunAsUser:      &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.example/app:1.0",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &f,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
			Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

type variant struct {
	name   string
	mutate func(p *corev1.Pod)
}

func ptr[T any](v T) *T { return &v }

func csc(p *corev1.Pod) *corev1.SecurityContext { return p.Spec.Containers[0].SecurityContext }

// variants mutates one field at a time over goodPod.
func variants() []variant {
	vs := []variant{{"good", func(*corev1.Pod) {}}}
	add := func(name string, f func(p *corev1.Pod)) { vs = append(vs, variant{name, f}) }

	// privileged, on every container kind.
	add("privileged=true", func(p *corev1.Pod) { csc(p).Privileged = ptr(true) })
	add("privileged=false", func(p *corev1.Pod) { csc(p).Privileged = ptr(false) })
	add("initContainer privileged", func(p *corev1.Pod) {
		c := p.Spec.Containers[0].DeepCopy()
		c.Name = "init"
		c.SecurityContext.Privileged = ptr(true)
		p.Spec.InitContainers = []corev1.Container{*c}
	})
	add("initContainer without securityContext", func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "x:1"}}
	})
	add("ephemeralContainer privileged", func(p *corev1.Pod) {
		c := p.Spec.Containers[0].DeepCopy()
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debug", Image: "x:1", SecurityContext: &corev1.SecurityContext{
				Privileged: ptr(true), AllowPrivilegeEscalation: ptr(false),
				Capabilities: c.SecurityContext.Capabilities,
			}}}}
	})
	add("ephemeralContainer without securityContext", func(p *corev1.Pod) {
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "x:1"}}}
	})

	// capabilities.
	for _, c := range []corev1.Capability{"NET_BIND_SERVICE", "NET_RAW", "SYS_ADMIN", "CHOWN", "KILL", "AUDIT_WRITE", "ALL", "net_raw", "CAP_CHOWN", "SYS_TIME"} {
		add("capabilities.add="+string(c), func(p *corev1.Pod) { csc(p).Capabilities.Add = []corev1.Capability{c} })
	}
	add("capabilities.drop=[]", func(p *corev1.Pod) { csc(p).Capabilities.Drop = nil })
	add("capabilities=nil", func(p *corev1.Pod) { csc(p).Capabilities = nil })
	add("capabilities.drop=[NET_RAW]", func(p *corev1.Pod) { csc(p).Capabilities.Drop = []corev1.Capability{"NET_RAW"} })
	add("capabilities.drop=[all]", func(p *corev1.Pod) { csc(p).Capabilities.Drop = []corev1.Capability{"all"} })
	add("capabilities.drop=[ALL,NET_RAW]", func(p *corev1.Pod) { csc(p).Capabilities.Drop = []corev1.Capability{"ALL", "NET_RAW"} })

	// host namespaces and ports.
	add("hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	add("hostPID", func(p *corev1.Pod) { p.Spec.HostPID = true })
	add("hostIPC", func(p *corev1.Pod) { p.Spec.HostIPC = true })
	add("hostPort=8080", func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 8080}}
	})
	add("hostPort=0", func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 0}}
	})
	add("initContainer hostPort", func(p *corev1.Pod) {
		c := p.Spec.Containers[0].DeepCopy()
		c.Name = "init"
		c.Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
		p.Spec.InitContainers = []corev1.Container{*c}
	})

	// volumes.
	for name, src := range map[string]corev1.VolumeSource{
		"hostPath":              {HostPath: &corev1.HostPathVolumeSource{Path: "/var/run"}},
		"configMap":             {ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}},
		"secret":                {Secret: &corev1.SecretVolumeSource{SecretName: "s"}},
		"persistentVolumeClaim": {PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}},
		"projected":             {Projected: &corev1.ProjectedVolumeSource{}},
		"downwardAPI":           {DownwardAPI: &corev1.DownwardAPIVolumeSource{}},
		"csi":                   {CSI: &corev1.CSIVolumeSource{Driver: "d"}},
		"ephemeral":             {Ephemeral: &corev1.EphemeralVolumeSource{}},
		"nfs":                   {NFS: &corev1.NFSVolumeSource{Server: "s", Path: "/"}},
		"gitRepo":               {GitRepo: &corev1.GitRepoVolumeSource{Repository: "r"}},
		"iscsi":                 {ISCSI: &corev1.ISCSIVolumeSource{TargetPortal: "t", IQN: "i"}},
		"awsElasticBlockStore":  {AWSElasticBlockStore: &corev1.AWSElasticBlockStoreVolumeSource{VolumeID: "v"}},
		"gcePersistentDisk":     {GCEPersistentDisk: &corev1.GCEPersistentDiskVolumeSource{PDName: "d"}},
		"rbd":                   {RBD: &corev1.RBDVolumeSource{CephMonitors: []string{"m"}, RBDImage: "i"}},
		"flexVolume":            {FlexVolume: &corev1.FlexVolumeSource{Driver: "d"}},
		"cephfs":                {CephFS: &corev1.CephFSVolumeSource{Monitors: []string{"m"}}},
		"fc":                    {FC: &corev1.FCVolumeSource{}},
		"azureFile":             {AzureFile: &corev1.AzureFileVolumeSource{SecretName: "s", ShareName: "s"}},
		"image":                 {Image: &corev1.ImageVolumeSource{Reference: "x:1"}},
	} {
		add("volume "+name, func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v", VolumeSource: src})
		})
	}

	// seccomp.
	for _, t := range []corev1.SeccompProfileType{corev1.SeccompProfileTypeUnconfined, corev1.SeccompProfileTypeLocalhost, "Bogus"} {
		add("pod seccomp="+string(t), func(p *corev1.Pod) {
			p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: t, LocalhostProfile: ptr("prof.json")}
		})
		add("container seccomp="+string(t), func(p *corev1.Pod) {
			csc(p).SeccompProfile = &corev1.SeccompProfile{Type: t, LocalhostProfile: ptr("prof.json")}
		})
	}
	add("pod seccomp=nil", func(p *corev1.Pod) { p.Spec.SecurityContext.SeccompProfile = nil })
	add("pod seccomp=nil, container RuntimeDefault", func(p *corev1.Pod) {
		p.Spec.SecurityContext.SeccompProfile = nil
		csc(p).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	})
	add("pod seccomp=Unconfined, container RuntimeDefault", func(p *corev1.Pod) {
		p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		csc(p).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	})
	add("seccomp annotation unconfined", func(p *corev1.Pod) {
		p.Annotations = map[string]string{"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}
	})

	// runAsNonRoot / runAsUser at both levels.
	add("pod runAsNonRoot=false", func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsNonRoot = ptr(false) })
	add("pod runAsNonRoot=nil", func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsNonRoot = nil })
	add("pod runAsNonRoot=nil, container true", func(p *corev1.Pod) {
		p.Spec.SecurityContext.RunAsNonRoot = nil
		csc(p).RunAsNonRoot = ptr(true)
	})
	add("container runAsNonRoot=false", func(p *corev1.Pod) { csc(p).RunAsNonRoot = ptr(false) })
	add("pod runAsNonRoot=false, container true", func(p *corev1.Pod) {
		p.Spec.SecurityContext.RunAsNonRoot = ptr(false)
		csc(p).RunAsNonRoot = ptr(true)
	})
	add("pod runAsUser=0", func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsUser = ptr(int64(0)) })
	add("container runAsUser=0", func(p *corev1.Pod) { csc(p).RunAsUser = ptr(int64(0)) })
	add("pod runAsUser=nil", func(p *corev1.Pod) { p.Spec.SecurityContext.RunAsUser = nil })
	add("pod runAsUser=0, container 1000", func(p *corev1.Pod) {
		p.Spec.SecurityContext.RunAsUser = ptr(int64(0))
		csc(p).RunAsUser = ptr(int64(1000))
	})
	add("pod securityContext=nil", func(p *corev1.Pod) { p.Spec.SecurityContext = nil })
	add("container securityContext=nil", func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext = nil })

	// privilege escalation and procMount.
	add("allowPrivilegeEscalation=true", func(p *corev1.Pod) { csc(p).AllowPrivilegeEscalation = ptr(true) })
	add("allowPrivilegeEscalation=nil", func(p *corev1.Pod) { csc(p).AllowPrivilegeEscalation = nil })
	add("procMount=Unmasked", func(p *corev1.Pod) { csc(p).ProcMount = ptr(corev1.UnmaskedProcMount) })
	add("procMount=Default", func(p *corev1.Pod) { csc(p).ProcMount = ptr(corev1.DefaultProcMount) })

	// sysctls.
	for _, s := range []string{
		"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
		"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
		"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
		"net.ipv4.tcp_keepalive_probes", "kernel.msgmax", "net.core.somaxconn", "vm.swappiness",
	} {
		add("sysctl "+s, func(p *corev1.Pod) { p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: s, Value: "1"}} })
	}

	// SELinux.
	for _, o := range []struct {
		name string
		opts corev1.SELinuxOptions
	}{
		{"type=container_t", corev1.SELinuxOptions{Type: "container_t"}},
		{"type=container_init_t", corev1.SELinuxOptions{Type: "container_init_t"}},
		{"type=container_kvm_t", corev1.SELinuxOptions{Type: "container_kvm_t"}},
		{"type=container_engine_t", corev1.SELinuxOptions{Type: "container_engine_t"}},
		{"type=spc_t", corev1.SELinuxOptions{Type: "spc_t"}},
		{"user=system_u", corev1.SELinuxOptions{User: "system_u"}},
		{"role=system_r", corev1.SELinuxOptions{Role: "system_r"}},
		{"level=s0:c1,c2", corev1.SELinuxOptions{Level: "s0:c1,c2"}},
	} {
		add("pod seLinux "+o.name, func(p *corev1.Pod) { p.Spec.SecurityContext.SELinuxOptions = ptr(o.opts) })
		add("container seLinux "+o.name, func(p *corev1.Pod) { csc(p).SELinuxOptions = ptr(o.opts) })
	}

	// AppArmor: annotations and fields.
	for _, v := range []string{"runtime/default", "localhost/prof", "unconfined", "bogus"} {
		add("apparmor annotation "+v, func(p *corev1.Pod) {
			p.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/app": v}
		})
	}
	for _, t := range []corev1.AppArmorProfileType{corev1.AppArmorProfileTypeRuntimeDefault, corev1.AppArmorProfileTypeLocalhost, corev1.AppArmorProfileTypeUnconfined} {
		add("pod appArmorProfile="+string(t), func(p *corev1.Pod) {
			p.Spec.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: t, LocalhostProfile: ptr("prof")}
		})
		add("container appArmorProfile="+string(t), func(p *corev1.Pod) {
			csc(p).AppArmorProfile = &corev1.AppArmorProfile{Type: t, LocalhostProfile: ptr("prof")}
		})
	}

	// Windows.
	add("windows pod, no linux fields", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.SecurityContext = nil
		p.Spec.Containers[0].SecurityContext = nil
	})
	add("windows pod hostProcess", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.SecurityContext.WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr(true)}
	})
	add("container hostProcess", func(p *corev1.Pod) {
		csc(p).WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr(true)}
	})
	add("windows pod, hostNetwork", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.HostNetwork = true
	})
	add("windows pod, capabilities add SYS_ADMIN", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		csc(p).Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
	})
	add("windows pod, seccomp Unconfined", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	})
	add("windows pod, hostPath", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "C:\\"}}})
	})
	add("os=linux explicit", func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Linux} })
	add("windows pod, runAsUser=0", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.SecurityContext.RunAsUser = ptr(int64(0))
	})
	add("windows pod, runAsNonRoot=false", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.SecurityContext.RunAsNonRoot = ptr(false)
	})
	add("windows pod, volume nfs", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "n", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "s", Path: "/"}}})
	})
	add("windows pod, allowPrivilegeEscalation=nil", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		csc(p).AllowPrivilegeEscalation = nil
	})

	// Every container kind must satisfy the restricted checks.
	initLike := func(name string, edit func(c *corev1.Container)) {
		add("initContainer "+name, func(p *corev1.Pod) {
			c := p.Spec.Containers[0].DeepCopy()
			c.Name = "init"
			edit(c)
			p.Spec.InitContainers = []corev1.Container{*c}
		})
	}
	initLike("capabilities.add=SYS_ADMIN", func(c *corev1.Container) { c.SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"} })
	initLike("capabilities.drop=[]", func(c *corev1.Container) { c.SecurityContext.Capabilities.Drop = nil })
	initLike("allowPrivilegeEscalation=true", func(c *corev1.Container) { c.SecurityContext.AllowPrivilegeEscalation = ptr(true) })
	initLike("runAsNonRoot=false", func(c *corev1.Container) { c.SecurityContext.RunAsNonRoot = ptr(false) })
	initLike("runAsUser=0", func(c *corev1.Container) { c.SecurityContext.RunAsUser = ptr(int64(0)) })
	initLike("seccomp=Unconfined", func(c *corev1.Container) {
		c.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	})
	initLike("procMount=Unmasked", func(c *corev1.Container) { c.SecurityContext.ProcMount = ptr(corev1.UnmaskedProcMount) })
	initLike("seLinux type=spc_t", func(c *corev1.Container) { c.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"} })
	initLike("appArmorProfile=Unconfined", func(c *corev1.Container) {
		c.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
	})
	add("ephemeralContainer capabilities.drop=[]", func(p *corev1.Pod) {
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debug", Image: "x:1", SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false)}}}}
	})
	add("ephemeralContainer hostPort", func(p *corev1.Pod) {
		p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debug", Image: "x:1", Ports: []corev1.ContainerPort{{ContainerPort: 1, HostPort: 1}},
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}}}
	})

	// Combinations around precedence.
	add("pod seccomp=nil, container Localhost", func(p *corev1.Pod) {
		p.Spec.SecurityContext.SeccompProfile = nil
		csc(p).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr("p.json")}
	})
	add("pod seccomp=nil, only initContainer sets RuntimeDefault", func(p *corev1.Pod) {
		p.Spec.SecurityContext.SeccompProfile = nil
		c := p.Spec.Containers[0].DeepCopy()
		c.Name = "init"
		c.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
		p.Spec.InitContainers = []corev1.Container{*c}
	})
	add("pod appArmor Unconfined, container RuntimeDefault", func(p *corev1.Pod) {
		p.Spec.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		csc(p).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
	})
	add("apparmor annotation for unknown container unconfined", func(p *corev1.Pod) {
		p.Annotations = map[string]string{"container.apparmor.security.beta.kubernetes.io/ghost": "unconfined"}
	})
	add("seLinux empty options", func(p *corev1.Pod) { p.Spec.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{} })
	add("sysctl with slashes net/ipv4/ip_local_port_range", func(p *corev1.Pod) {
		p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net/ipv4/ip_local_port_range", Value: "1024 65535"}}
	})
	add("two sysctls, one unsafe", func(p *corev1.Pod) {
		p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}, {Name: "kernel.sem", Value: "1"}}
	})
	add("hostProcess=false on windows", func(p *corev1.Pod) {
		p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		p.Spec.SecurityContext.WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: ptr(false)}
	})
	add("capabilities.add=[NET_BIND_SERVICE] with drop ALL on two containers", func(p *corev1.Pod) {
		c := p.Spec.Containers[0].DeepCopy()
		c.Name = "side"
		c.SecurityContext.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
		p.Spec.Containers = append(p.Spec.Containers, *c)
	})
	add("second container without securityContext", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: "x:1"})
	})
	return vs
}

// policiesDir is the repository's policies/; the test is skipped (loudly)
// when it is absent, e.g. in a partial checkout.
func policiesDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "policies")
	if _, err := os.Stat(filepath.Join(dir, "kubernetes", "podsecurity")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no pod security policies at %s: CI must run the differential test", dir)
		}
		t.Skipf("SKIPPING: no pod security policies at %s", dir)
	}
	return dir
}

// TestPodSecurityMatchesUpstream compares the allow/deny verdict of the Rego
// pod security packages with k8s.io/pod-security-admission, the code the
// API server enforces with, on one-field variants of a good pod.
func TestPodSecurityMatchesUpstream(t *testing.T) {
	ctx := context.Background()
	engine, err := policy.Load(ctx, policiesDir(t))
	if err != nil {
		t.Fatal(err)
	}
	eval, err := psa.NewEvaluator(psa.DefaultChecks())
	if err != nil {
		t.Fatal(err)
	}
	vs := variants()
	docs := make([]manifest.Document, len(vs))
	for i, v := range vs {
		p := goodPod()
		v.mutate(p)
		js, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(js, &obj); err != nil {
			t.Fatal(err)
		}
		docs[i], _ = manifest.FromObject(v.name, i, 1, obj)
	}
	fs, err := engine.Evaluate(ctx, docs, policy.Options{Env: "production", Select: finding.Selector{"kubernetes.podsecurity."}})
	if err != nil {
		t.Fatal(err)
	}
	regoDenies := map[string]map[int][]string{} // package → variant → rules
	for _, f := range fs {
		if f.Level != finding.Deny {
			continue
		}
		if regoDenies[f.Policy] == nil {
			regoDenies[f.Policy] = map[int][]string{}
		}
		regoDenies[f.Policy][f.Index] = append(regoDenies[f.Policy][f.Index], f.Rule)
	}

	// Guard against a vacuous comparison: the good pod passes upstream and
	// a privileged one does not.
	if got := eval.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &goodPod().ObjectMeta, &goodPod().Spec); !psa.AggregateCheckResults(got).Allowed {
		t.Fatalf("good pod is not restricted upstream: %+v", got)
	}

	for _, level := range []struct {
		pkg   string
		level psaapi.Level
	}{
		{"kubernetes.podsecurity.baseline", psaapi.LevelBaseline},
		{"kubernetes.podsecurity.restricted", psaapi.LevelRestricted},
	} {
		for i, v := range vs {
			t.Run(string(level.level)+"/"+v.name, func(t *testing.T) {
				p := goodPod()
				v.mutate(p)
				var upstream []string
				for _, r := range eval.EvaluatePod(psaapi.LevelVersion{Level: level.level, Version: psaapi.LatestVersion()}, &p.ObjectMeta, &p.Spec) {
					if !r.Allowed {
						upstream = append(upstream, r.ForbiddenReason+" ("+r.ForbiddenDetail+")")
					}
				}
				rules := regoDenies[level.pkg][i]
				sort.Strings(rules)
				upstreamAllows, regoAllows := len(upstream) == 0, len(rules) == 0
				if upstreamAllows != regoAllows {
					t.Errorf("variant %q at %s: pod-security-admission allowed=%v %s; Rego %s allowed=%v %s",
						v.name, level.level, upstreamAllows, fmt.Sprint(upstream), level.pkg, regoAllows, strings.Join(rules, ","))
				}
			})
		}
	}
}
