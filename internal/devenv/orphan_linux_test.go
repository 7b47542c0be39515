package devenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// If whisper dies without Close (kill -9, a crash), the kernel must still
// stop the cluster: an orphaned postgres would hold its port and data dir
// until someone noticed. The test runs itself as the process that dies.
func TestThrowawayClusterStopsWhenParentDies(t *testing.T) {
	if os.Getenv("DEVENV_TEST_ORPHAN_CHILD") == "1" {
		env, err := start(t.Context(), Config{KafkaAddr: "127.0.0.1:0"}, startOptions{})
		if err != nil {
			fmt.Fprintf(os.Stdout, "error %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stdout, "%d %s\n", env.cluster.cmd.Process.Pid, env.cluster.dataDir)
		select {} // until killed
	}
	requireBinaries(t)

	child := exec.Command(os.Args[0], "-test.run=^TestThrowawayClusterStopsWhenParentDies$")
	child.Env = append(os.Environ(), "DEVENV_TEST_ORPHAN_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("reading the child's report: %v (got %q)", err, line)
	}
	var pid int
	var dataDir string
	if _, err := fmt.Sscanf(line, "%d %s", &pid, &dataDir); err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child reported %q, want PID and data dir", line)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })

	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	deadline := time.Now().Add(15 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("postgres pid %d still runs 15s after its parent was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processGone reports whether pid has exited. A zombie counts: reaping an
// orphan is up to PID 1, which in some containers never does it.
func processGone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
