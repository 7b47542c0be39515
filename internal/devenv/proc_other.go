//go:build !unix

package devenv

import (
	"os"
	"syscall"
)

// sysProcAttr is empty: without unix credentials and process groups the
// cluster runs as the current user, which is fine off unix (no root).
func sysProcAttr(*runAs) *syscall.SysProcAttr { return nil }

func killProcessGroup(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

func checkSearchable(string, *runAs) error { return nil }
