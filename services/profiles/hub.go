package profiles

import "sync"

// hub tells in-process watchers which profiles this process's consumer
// changed. It carries no state, only a wake-up: a watcher re-reads the
// profile from the store, so a slow watcher whose wake-ups coalesce still
// sees the latest state, and publishing never blocks on a watcher.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[*subscription]struct{} // by workspace
}

func newHub() *hub { return &hub{subs: map[string]map[*subscription]struct{}{}} }

// subscription wakes up when the profile it watches changes.
type subscription struct {
	h  *hub
	ws string
	// C receives a value after a change to the watched profile; changes
	// made while a value is pending coalesce into it.
	C chan struct{}

	profileID string // guarded by h.mu
}

// subscribe returns a subscription to changes of workspace ws's profiles,
// watching none until watch is called. Call close when done.
func (h *hub) subscribe(ws string) *subscription {
	s := &subscription{h: h, ws: ws, C: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[ws] == nil {
		h.subs[ws] = map[*subscription]struct{}{}
	}
	h.subs[ws][s] = struct{}{}
	return s
}

// watch makes s follow profile id.
func (s *subscription) watch(id string) {
	s.h.mu.Lock()
	s.profileID = id
	s.h.mu.Unlock()
}

func (s *subscription) close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	delete(s.h.subs[s.ws], s)
	if len(s.h.subs[s.ws]) == 0 {
		delete(s.h.subs, s.ws)
	}
}

// publish wakes the subscribers watching any of changed, which must be
// committed already.
func (h *hub) publish(changed []profileKey) {
	if len(changed) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	for _, k := range changed {
		for s := range h.subs[k.ws] {
			if s.profileID != k.id {
				continue
			}
			select {
			case s.C <- struct{}{}:
			default: // a wake-up is pending already
			}
		}
	}
}
