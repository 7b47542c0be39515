package profiles

import "testing"

func TestHub(t *testing.T) {
	h := newHub()
	a := h.subscribe("ws1")
	a.watch("p1")
	b := h.subscribe("ws1")
	b.watch("p2")
	other := h.subscribe("ws2")
	other.watch("p1") // same profile id, another workspace

	pending := func(s *subscription) bool {
		select {
		case <-s.C:
			return true
		default:
			return false
		}
	}
	// Many changes to p1 before a reads coalesce into one wake-up.
	for range 5 {
		h.publish([]profileKey{{"ws1", "p1"}})
	}
	if !pending(a) || pending(a) {
		t.Errorf("a: want exactly one pending wake-up after five changes")
	}
	if pending(b) || pending(other) {
		t.Errorf("a change to ws1/p1 woke a watcher of another profile or workspace")
	}

	// After watch, a follows its new profile only.
	a.watch("p3")
	h.publish([]profileKey{{"ws1", "p1"}})
	if pending(a) {
		t.Errorf("a woke for p1 after moving to p3")
	}
	h.publish([]profileKey{{"ws1", "p3"}, {"ws1", "p2"}})
	if !pending(a) || !pending(b) {
		t.Errorf("a batch touching p2 and p3 did not wake both watchers")
	}

	for _, s := range []*subscription{a, b, other} {
		s.close()
	}
	h.publish([]profileKey{{"ws1", "p3"}})
	if len(h.subs) != 0 {
		t.Errorf("hub keeps %d workspaces after every subscription closed", len(h.subs))
	}
}
