package finding_test

import (
	"testing"

	"github.com/whisperhq/whisper/internal/gitops/finding"
)

func TestSelector(t *testing.T) {
	tests := []struct {
		sel          finding.Selector
		policy, rule string
		match, may   bool
	}{
		{nil, "kubernetes.rbac", "x", true, true},
		{finding.Selector{"kubernetes"}, "kubernetes.rbac", "x", true, true},
		{finding.Selector{"kubernetes.podsecurity"}, "kubernetes.rbac", "x", false, false},
		{finding.Selector{"kubernetes.rbac/wild"}, "kubernetes.rbac", "wildcard", true, true},
		{finding.Selector{"kubernetes.rbac/wild"}, "kubernetes.rbac", "other", false, true},
		{finding.Selector{"argocd", "platformctl."}, "platformctl.decode", "strict", true, true},
	}
	for _, tt := range tests {
		if got := tt.sel.Match(tt.policy, tt.rule); got != tt.match {
			t.Errorf("%v.Match(%s, %s) = %v, want %v", tt.sel, tt.policy, tt.rule, got, tt.match)
		}
		if got := tt.sel.MayMatch(tt.policy); got != tt.may {
			t.Errorf("%v.MayMatch(%s) = %v, want %v", tt.sel, tt.policy, got, tt.may)
		}
	}
}
