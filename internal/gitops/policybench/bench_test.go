package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMedian(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		in   []time.Duration
		want time.Duration
	}{
		{ms(5), 5 * time.Millisecond},
		{ms(9, 1, 5), 5 * time.Millisecond},
		{ms(4, 1, 3, 2), 2500 * time.Microsecond},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseConftest(t *testing.T) {
	out := []byte(`[
	 {"filename": "/tmp/x/dev.yaml", "namespace": "kubernetes.rbac", "successes": 3,
	  "failures": [{"msg": "m1", "metadata": {"query": "data.kubernetes.rbac.deny", "rule": "rbac-pod-exec"}}]},
	 {"filename": "/tmp/x/dev.yaml", "namespace": "kubernetes.network", "successes": 1,
	  "warnings": [{"msg": "m2", "metadata": {"rule": "inventory-missing"}}, {"msg": "m3", "metadata": {"rule": "inventory-missing"}}]}
	]`)
	got, err := parseConftest(out)
	if err != nil {
		t.Fatal(err)
	}
	want := outcome{
		denies: 1, warns: 2,
		findings: map[string]int{
			"deny kubernetes.rbac/rbac-pod-exec dev.yaml: m1":        1,
			"warn kubernetes.network/inventory-missing dev.yaml: m2": 1,
			"warn kubernetes.network/inventory-missing dev.yaml: m3": 1,
		},
		packages: []string{"kubernetes.network", "kubernetes.rbac"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(outcome{})); diff != "" {
		t.Errorf("parseConftest (-want +got):\n%s", diff)
	}
}

func TestParsePlatformctlMatchesConftestKeys(t *testing.T) {
	out := []byte(`{"results": [
	  {"file": "dev.yaml", "index": 3, "kind": "Role", "namespace": "whisper", "name": "r",
	   "policy": "kubernetes.rbac", "rule": "rbac-pod-exec", "level": "deny", "message": "m1"},
	  {"file": "dev.yaml", "index": 4, "policy": "kubernetes.rbac", "rule": "x", "level": "waived", "message": "w"}],
	 "summary": {"files": 1, "documents": 7, "denies": 1, "warns": 0}}`)
	got, err := parsePlatformctl(out)
	if err != nil {
		t.Fatal(err)
	}
	want := outcome{docs: 7, denies: 1, waived: 1, findings: map[string]int{"deny kubernetes.rbac/rbac-pod-exec dev.yaml: m1": 1}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(outcome{})); diff != "" {
		t.Errorf("parsePlatformctl (-want +got):\n%s", diff)
	}
}

func TestCompare(t *testing.T) {
	pc := outcome{denies: 1, findings: map[string]int{"deny p/r a.yaml: x": 1}}
	tests := []struct {
		name          string
		other         outcome
		agree         bool
		onlyInventory bool
	}{
		{"same", outcome{denies: 1, findings: map[string]int{"deny p/r a.yaml: x": 1}}, true, false},
		{"extra inventory-missing warns", outcome{denies: 1, warns: 2, findings: map[string]int{
			"deny p/r a.yaml: x": 1, "warn kubernetes.network/inventory-missing a.yaml: y": 2}}, false, true},
		{"duplicate deny", outcome{denies: 2, findings: map[string]int{"deny p/r a.yaml: x": 2}}, false, false},
		{"other warn", outcome{denies: 1, warns: 1, findings: map[string]int{
			"deny p/r a.yaml: x": 1, "warn p/other a.yaml: z": 1}}, false, false},
		{"missing deny", outcome{findings: map[string]int{}}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := compare("a", pc, "b", tt.other)
			if got.Agree != tt.agree {
				t.Errorf("Agree = %v, want %v (differences %q)", got.Agree, tt.agree, got.Differences)
			}
			if got := onlyInventoryMissing(pc, tt.other); got != tt.onlyInventory {
				t.Errorf("onlyInventoryMissing = %v, want %v", got, tt.onlyInventory)
			}
		})
	}
}

func TestDisplayArgv(t *testing.T) {
	got := displayArgv(
		[]string{"/r/.tmp/bin/conftest", "test", "-p", "/w/policies", "--root", "/r", "/w/dev.yaml", "/w/prod.yaml"},
		"/r", "/w", []string{"/w/dev.yaml", "/w/prod.yaml"})
	want := []string{".tmp/bin/conftest", "test", "-p", "$TMP/policies", "--root", ".", "FILES"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("displayArgv (-want +got):\n%s", diff)
	}
}
