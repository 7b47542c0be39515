//go:build unix

package devenv

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// sysProcAttr puts the server in its own process group, so that a Ctrl-C
// in the terminal reaches only whisper, which then stops the server after
// the services have let go of it. A non-nil as names the account to run
// the server as.
func sysProcAttr(as *runAs) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if as != nil {
		// An empty Groups drops root's supplementary groups.
		attr.Credential = &syscall.Credential{Uid: as.uid, Gid: as.gid, Groups: []uint32{}}
	}
	setParentDeathSignal(attr)
	return attr
}

func killProcessGroup(pid int) error {
	return syscall.Kill(-pid, syscall.SIGKILL)
}

// checkSearchable reports the first directory above dir that as cannot
// enter: initdb would otherwise fail with a bare "permission denied", and
// the usual culprit (a DataDir under /root) deserves a better message.
func checkSearchable(dir string, as *runAs) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("postgres: inspecting %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := fi.Mode().Perm()
		var search bool
		switch {
		case st.Uid == as.uid:
			search = mode&0o100 != 0
		case st.Gid == as.gid:
			search = mode&0o010 != 0
		default:
			search = mode&0o001 != 0
		}
		if !search {
			return fmt.Errorf("postgres: the throwaway cluster runs as user %s (PostgreSQL refuses to run as root), which cannot enter %s on the way to %s: choose a data directory under a world-searchable one such as /var/tmp, or chmod o+x %s", as.name, d, dir, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
