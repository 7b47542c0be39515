package ingest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestFlightsClaim(t *testing.T) {
	ctx := context.Background()
	f := newFlights()
	// A first attempt claims a and b.
	produced, err := f.claim(ctx, "ws", []string{"a", "b"}, time.Second)
	if err != nil || produced[0] || produced[1] {
		t.Fatalf("first claim = %v, %v; want nothing produced", produced, err)
	}
	// A retry of a, b and c waits for the first attempt; a lands, b fails.
	type result struct {
		produced []bool
		err      error
	}
	retry := make(chan result, 1)
	go func() {
		p, err := f.claim(ctx, "ws", []string{"a", "b", "c"}, 5*time.Second)
		retry <- result{p, err}
	}()
	select {
	case r := <-retry:
		t.Fatalf("retry did not wait for the first attempt: %v", r)
	case <-time.After(50 * time.Millisecond):
	}
	f.release("ws", []string{"a", "b"}, []bool{true, false})
	r := <-retry
	if r.err != nil || !r.produced[0] || r.produced[1] || r.produced[2] {
		t.Fatalf("retry = %v, %v; want a produced, b and c claimed", r.produced, r.err)
	}
	// Another workspace's "b" is independent.
	if p, err := f.claim(ctx, "other", []string{"b"}, time.Millisecond); err != nil || p[0] {
		t.Errorf("claim in another workspace = %v, %v", p, err)
	}
	// b and c are the retry's now: a third attempt times out, claiming none.
	if _, err := f.claim(ctx, "ws", []string{"d", "c"}, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("claim of a busy id = %v, want DeadlineExceeded", err)
	}
	if p, err := f.claim(ctx, "ws", []string{"d"}, time.Millisecond); err != nil || p[0] {
		t.Errorf("d after the timed-out claim = %v, %v; want it free", p, err)
	}
}

// The ids of one claim are one flight: a retry of one of them learns its
// outcome once the whole earlier attempt has ended, never before its own id
// is released, and the outcome is that id's.
func TestFlightsPartialRelease(t *testing.T) {
	ctx := context.Background()
	f := newFlights()
	if _, err := f.claim(ctx, "ws", []string{"a", "b"}, time.Second); err != nil {
		t.Fatal(err)
	}
	retry := make(chan []bool, 1)
	go func() {
		p, err := f.claim(ctx, "ws", []string{"a"}, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		retry <- p
	}()
	time.Sleep(50 * time.Millisecond) // the retry is waiting on a
	f.release("ws", []string{"a"}, []bool{true})
	select {
	case p := <-retry:
		t.Fatalf("retry of a woke while b was still in flight: %v", p)
	case <-time.After(50 * time.Millisecond):
	}
	f.release("ws", []string{"b"}, []bool{false})
	if p := <-retry; !p[0] {
		t.Errorf("retry of a = %v, want a produced", p)
	}
	if len(f.m) != 0 {
		t.Errorf("%d claims left after every release, want none", len(f.m))
	}
}

// Two ids with one key (forced here by clearing the mask; about one chance
// in 2^64 per pair otherwise) are told apart: the later waits for the
// earlier's flight and then claims, and releasing one never ends the
// other's claim.
func TestFlightsKeyCollision(t *testing.T) {
	ctx := context.Background()
	f := newFlights()
	f.mask = 0
	if _, err := f.claim(ctx, "ws", []string{"a"}, time.Second); err != nil {
		t.Fatal(err)
	}
	retry := make(chan []bool, 1)
	go func() {
		p, err := f.claim(ctx, "ws", []string{"b"}, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		retry <- p
	}()
	time.Sleep(50 * time.Millisecond) // b waits on a's flight
	f.release("ws", []string{"b"}, []bool{true})
	select {
	case p := <-retry:
		t.Fatalf("releasing b, which nobody had claimed, ended a's claim: %v", p)
	case <-time.After(50 * time.Millisecond):
	}
	f.release("ws", []string{"a"}, []bool{true})
	if p := <-retry; p[0] {
		t.Errorf("b = %v: took a's outcome, want b claimed (not produced)", p)
	}
	if len(f.m) != 1 {
		t.Fatalf("%d claims held, want b's", len(f.m))
	}
	f.release("ws", []string{"b"}, []bool{false})
	if len(f.m) != 0 {
		t.Errorf("%d claims left after every release, want none", len(f.m))
	}
}

func BenchmarkFlights(b *testing.B) {
	ctx := context.Background()
	f := newFlights()
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("0191e3c2-7d4a-7c61-9f0e-%012d", i)
	}
	ok := make([]bool, len(ids))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.claim(ctx, "ws", ids, time.Second); err != nil {
			b.Fatal(err)
		}
		f.release("ws", ids, ok)
	}
}
