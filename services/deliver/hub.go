package deliver

import "sync"

// hub wakes in-process StreamInApp calls when their user's inbox gets a
// message. It carries no data: a woken stream reads the inbox, so wake-ups
// that coalesce lose nothing.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{} // by workspace "/" user
}

func newHub() *hub { return &hub{subs: map[string]map[chan struct{}]struct{}{}} }

func (h *hub) subscribe(ws, user string) (chan struct{}, func()) {
	k := ws + "/" + user
	c := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs[k] == nil {
		h.subs[k] = map[chan struct{}]struct{}{}
	}
	h.subs[k][c] = struct{}{}
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[k], c)
		if len(h.subs[k]) == 0 {
			delete(h.subs, k)
		}
	}
}

func (h *hub) publish(ws, user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs[ws+"/"+user] {
		poke(c)
	}
}
