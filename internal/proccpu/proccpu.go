// Package proccpu reads how much CPU time processes have used, so
// benchmarks can report the CPU a unit of work costs in this process and in
// the local servers it talks to (PostgreSQL backends, redis-server), not
// only how long it took on a machine whose cores they share.
package proccpu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Self is the user and system CPU time this process has used.
func Self() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// Of reads the user and system CPU time process pid has used from
// /proc/<pid>/stat; false when it cannot (no such process, or no /proc).
func Of(pid int) (time.Duration, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields 14 and 15 (utime, stime) in clock ticks, 100 a second on
	// Linux; the command (field 2) may hold spaces, so count after it.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// Named returns a function reading the CPU time of the first local process
// whose command is comm ("redis-server"), or -1 when there is none to read
// (the server runs elsewhere, or there is no /proc).
func Named(comm string) func() time.Duration {
	pid := 0
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, f := range comms {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == comm {
			pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(f)))
			break
		}
	}
	return func() time.Duration {
		if cpu, ok := Of(pid); pid != 0 && ok {
			return cpu
		}
		return -1
	}
}
