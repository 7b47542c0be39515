package devenv

import (
	"path/filepath"
	"slices"
	"testing"
)

func TestVersionOrder(t *testing.T) {
	tests := []struct {
		dir  string
		want string
	}{
		{dir: "/usr/lib/postgresql/16/bin", want: "16"},
		{dir: "/usr/lib/postgresql/9.6/bin", want: "9.6"},
		{dir: "/usr/pgsql-15/bin", want: "15"},
		{dir: "/opt/homebrew/opt/postgresql@17/bin", want: "17"},
	}
	for _, tt := range tests {
		if got := versionOf(tt.dir); got != tt.want {
			t.Errorf("versionOf(%q) = %q, want %q", tt.dir, got, tt.want)
		}
	}

	cmps := []struct {
		a, b string
		want int
	}{
		{a: "9.6", b: "10", want: -1},
		{a: "16", b: "15", want: 1},
		{a: "15", b: "15", want: 0},
		{a: "beta", b: "9", want: -1},
	}
	for _, tt := range cmps {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// Debian keeps the server binaries off PATH; they must still be found.
func TestFindPostgresBinariesOffPath(t *testing.T) {
	var installed []string
	for _, g := range binaryGlobs {
		m, _ := filepath.Glob(g)
		installed = append(installed, m...)
	}
	if len(installed) == 0 {
		t.Skipf("no PostgreSQL installed under %v", binaryGlobs)
	}
	t.Setenv("PATH", t.TempDir())
	bins, err := findPostgresBinaries()
	if err != nil {
		t.Fatalf("findPostgresBinaries: %v", err)
	}
	if dir := filepath.Dir(bins.postgres); !slices.Contains(installed, dir) || filepath.Dir(bins.initdb) != dir {
		t.Errorf("found initdb %s and postgres %s, want both from one of %v", bins.initdb, bins.postgres, installed)
	}
}
