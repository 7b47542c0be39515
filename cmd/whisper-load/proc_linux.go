package main

import "syscall"

// childAttrs has the kernel interrupt `whisper dev` should this process
// die without stopping it, so no server is left behind.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
}
