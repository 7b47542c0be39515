package devenv

import "syscall"

// setParentDeathSignal asks the kernel to stop the server with a fast
// shutdown if whisper dies without calling Close (kill -9, a crash), so no
// orphaned cluster keeps running. Linux only; elsewhere Close is the only
// way.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGINT
}
