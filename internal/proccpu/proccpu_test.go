package proccpu

import (
	"os"
	"testing"
	"time"
)

func TestSelfAndOfAgree(t *testing.T) {
	// Burn some CPU so both readings move.
	deadline := time.Now().Add(50 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = n * n
	}
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	proc, ok := Of(os.Getpid())
	if !ok {
		t.Fatal("no /proc/<pid>/stat for this process")
	}
	if self <= 0 || proc <= 0 {
		t.Fatalf("Self = %v, Of(own pid) = %v; want both above zero", self, proc)
	}
	// /proc counts in 10 ms ticks.
	if d := self - proc; d < -20*time.Millisecond || d > 20*time.Millisecond {
		t.Errorf("Self = %v, Of(own pid) = %v; want them within 20 ms", self, proc)
	}
}

func TestNamedWithoutSuchProcess(t *testing.T) {
	if got := Named("no-such-command-here")(); got != -1 {
		t.Errorf("Named(missing)() = %v, want -1", got)
	}
	if _, ok := Of(-1); ok {
		t.Error("Of(-1) reported a reading")
	}
}
