package contact

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

func newTestPolicy(t testing.TB) *Policy {
	t.Helper()
	// Only the Rego half is used: no Redis call is made.
	p, err := New(Options{Redis: redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), Config: Config{}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMemoMatchesEvaluation: for varied inputs, a decision from the memo
// equals a fresh evaluation of the policy, and a caller changing returned
// steps does not change the memo.
func TestMemoMatchesEvaluation(t *testing.T) {
	p := newTestPolicy(t)
	rng := rand.New(rand.NewPCG(1, 2))
	zones := []string{"UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"}
	channels := []string{"email", "sms", "push", "in_app", "webhook", "fax"}
	base := time.Date(2026, 3, 7, 0, 0, 0, 0, time.UTC)
	for i := range 300 {
		rules := p.cfg.Rules
		ch := channels[rng.IntN(len(channels))]
		at := base.Add(time.Duration(rng.IntN(3*24*60)) * time.Minute)
		c := counters{day: int64(rng.IntN(4)), week: int64(rng.IntN(9))}
		if rng.IntN(2) == 0 {
			c.previous = at.Add(-time.Duration(rng.IntN(120)) * time.Minute)
		}
		if rng.IntN(3) == 0 {
			c.next = at.Add(time.Duration(rng.IntN(120)+1) * time.Minute)
		}
		r := Request{Priority: rng.IntN(101), Transactional: rng.IntN(5) == 0}
		tz := zones[rng.IntN(len(zones))]
		loc, _, _ := p.zone(tz)
		in := newPolicyInput(r, ch, rules, rules.forChannel(ch), at, tz, c)
		first, err := p.eval(context.Background(), in, loc)
		if err != nil {
			t.Fatal(err)
		}
		first.steps[0].Inputs["mutated"] = "by the caller"
		memoized, err := p.eval(context.Background(), in, loc)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := p.evalRego(context.Background(), in.value(loc))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fresh, memoized, cmp.AllowUnexported(outcome{}, limits{})); diff != "" {
			t.Fatalf("input %d %+v: memo differs from evaluation (-fresh +memo):\n%s", i, in, diff)
		}
	}
}

// BenchmarkPolicyEval is one evaluation of the Rego policy, memo bypassed.
func BenchmarkPolicyEval(b *testing.B) {
	p := newTestPolicy(b)
	loc, _, _ := p.zone("Europe/Paris")
	at := time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)
	rules := p.cfg.Rules
	in := newPolicyInput(Request{Priority: 50}, "email", rules, rules.forChannel("email"), at, "Europe/Paris",
		counters{day: 1, week: 2, previous: at.Add(-3 * time.Hour)})
	v := in.value(loc)
	for b.Loop() {
		if _, err := p.evalRego(context.Background(), v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPolicyEvalMemo is the memo's hit path, steps copied.
func BenchmarkPolicyEvalMemo(b *testing.B) {
	p := newTestPolicy(b)
	loc, _, _ := p.zone("Europe/Paris")
	at := time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)
	rules := p.cfg.Rules
	i := 0
	for b.Loop() {
		i++
		in := newPolicyInput(Request{Priority: 50}, "email", rules, rules.forChannel("email"), at, "Europe/Paris", counters{day: int64(i % 2)})
		if _, err := p.eval(context.Background(), in, loc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestObserveEval: the hook sees every evaluation and says which came from
// the memo.
func TestObserveEval(t *testing.T) {
	var evaluated, memoized int
	p, err := New(Options{Redis: redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), ObserveEval: func(d time.Duration, fromMemo bool) {
		if d <= 0 {
			t.Errorf("evaluation took %s", d)
		}
		if fromMemo {
			memoized++
		} else {
			evaluated++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	rules := p.cfg.Rules
	at := time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)
	for i := range 3 {
		// The first two differ only in the seconds, which the policy does
		// not see; the third is a minute later.
		in := newPolicyInput(Request{Priority: 50}, "email", rules, rules.forChannel("email"), at.Add(time.Duration(i)*40*time.Second), "UTC", counters{})
		if _, err := p.eval(context.Background(), in, time.UTC); err != nil {
			t.Fatal(err)
		}
	}
	if evaluated != 2 || memoized != 1 {
		t.Errorf("evaluated %d, memoized %d; want 2 and 1", evaluated, memoized)
	}
}
