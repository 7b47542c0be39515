package profiles

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
)

const ws = "0b6f1c4e-8a52-4f4e-9d43-3a3c2b1b7d10"

func traits(t *testing.T, s string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// view is what the tests compare of a profile.
type view struct {
	UserID              string
	Traits              map[string]string
	Counts              map[string]int64
	FirstSeen, LastSeen int64
	IDs                 []string
}

func viewsOf(b *batch) map[string]view {
	out := map[string]view{}
	for _, p := range b.profiles {
		v := view{UserID: p.userID, Traits: map[string]string{}, Counts: p.counts, FirstSeen: p.firstSeen, LastSeen: p.lastSeen}
		for k, raw := range p.traits {
			v.Traits[k] = string(raw)
		}
		for k, pk := range b.ids {
			if pk == p.key {
				v.IDs = append(v.IDs, k.kind+":"+k.id)
			}
		}
		out[v.UserID] = v
	}
	return out
}

func TestBatchApply(t *testing.T) {
	identify := eventv1.EventType_EVENT_TYPE_IDENTIFY
	track := eventv1.EventType_EVENT_TYPE_TRACK
	alias := eventv1.EventType_EVENT_TYPE_ALIAS
	tests := []struct {
		name   string
		events []event
		want   map[string]view
	}{
		{
			name: "anonymous activity is claimed by identify",
			events: []event{
				{typ: track, anonymousID: "a1", name: "Viewed", micros: 10},
				{typ: identify, anonymousID: "a1", userID: "u1", traits: traits(t, `{"plan":"free"}`), micros: 20},
				{typ: track, userID: "u1", name: "Viewed", micros: 30},
			},
			want: map[string]view{"u1": {
				UserID: "u1", Traits: map[string]string{"plan": `"free"`}, Counts: map[string]int64{"Viewed": 2},
				FirstSeen: 10, LastSeen: 30, IDs: []string{"anonymous:a1", "user:u1"},
			}},
		},
		{
			name: "older identify does not overwrite a newer trait; null deletes",
			events: []event{
				{typ: identify, userID: "u1", traits: traits(t, `{"plan":"pro","age":3,"tmp":1}`), micros: 50},
				{typ: identify, userID: "u1", traits: traits(t, `{"plan":"free","city":"Oslo"}`), micros: 40},
				{typ: identify, userID: "u1", traits: traits(t, `{"tmp":null}`), micros: 60},
				{typ: identify, userID: "u1", traits: traits(t, `{"tmp":2}`), micros: 55},
			},
			want: map[string]view{"u1": {
				UserID: "u1", Traits: map[string]string{"plan": `"pro"`, "age": "3", "city": `"Oslo"`}, Counts: map[string]int64{},
				FirstSeen: 40, LastSeen: 60, IDs: []string{"user:u1"},
			}},
		},
		{
			name: "alias merges the previous user's profile into the new one",
			events: []event{
				{typ: track, userID: "old", name: "A", micros: 5},
				{typ: identify, userID: "old", traits: traits(t, `{"x":1,"y":1}`), micros: 6},
				{typ: track, userID: "new", name: "A", micros: 7},
				{typ: identify, userID: "new", traits: traits(t, `{"y":2}`), micros: 8},
				{typ: alias, userID: "new", previousID: "old", micros: 9},
				{typ: track, userID: "old", name: "B", micros: 10},
			},
			want: map[string]view{"new": {
				UserID: "new", Traits: map[string]string{"x": "1", "y": "2"}, Counts: map[string]int64{"A": 2, "B": 1},
				FirstSeen: 5, LastSeen: 10, IDs: []string{"anonymous:old", "user:new", "user:old"},
			}},
		},
		{
			name: "events of the previous id applied after the alias land on the merged profile",
			events: []event{
				{typ: track, userID: "new", name: "A", micros: 7},
				{typ: alias, userID: "new", previousID: "old", micros: 9},
				{typ: track, userID: "old", name: "A", micros: 5},
				{typ: track, anonymousID: "old", name: "B", micros: 6},
			},
			want: map[string]view{"new": {
				UserID: "new", Traits: map[string]string{}, Counts: map[string]int64{"A": 2, "B": 1},
				FirstSeen: 5, LastSeen: 9, IDs: []string{"anonymous:old", "user:new", "user:old"},
			}},
		},
		{
			name: "an anonymous id of another user stays with that user",
			events: []event{
				{typ: identify, anonymousID: "device", userID: "alice", micros: 1},
				{typ: track, anonymousID: "device", userID: "bob", name: "A", micros: 2},
			},
			want: map[string]view{
				"alice": {UserID: "alice", Traits: map[string]string{}, Counts: map[string]int64{}, FirstSeen: 1, LastSeen: 1, IDs: []string{"anonymous:device", "user:alice"}},
				"bob":   {UserID: "bob", Traits: map[string]string{}, Counts: map[string]int64{"A": 1}, FirstSeen: 2, LastSeen: 2, IDs: []string{"user:bob"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBatch(100 * microsPerDay)
			for _, e := range tt.events {
				e.ws = ws
				b.apply(e)
			}
			got := viewsOf(b)
			if diff := cmp.Diff(tt.want, got, cmpSortIDs); diff != "" {
				t.Errorf("profiles (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSessions(t *testing.T) {
	identify := eventv1.EventType_EVENT_TYPE_IDENTIFY
	track := eventv1.EventType_EVENT_TYPE_TRACK
	alias := eventv1.EventType_EVENT_TYPE_ALIAS
	minute := int64(time.Minute / time.Microsecond)
	t0 := 50 * microsPerDay
	type sessions struct{ Count, Start int64 }
	tests := []struct {
		name   string
		events []event
		want   map[string]sessions
	}{
		{
			name:   "the first event starts a session",
			events: []event{{typ: identify, userID: "u", micros: t0}},
			want:   map[string]sessions{"u": {1, t0}},
		},
		{
			name: "gaps up to 30 minutes continue the session",
			events: []event{
				{typ: track, userID: "u", name: "A", micros: t0},
				{typ: track, userID: "u", name: "A", micros: t0 + 29*minute},
				{typ: track, userID: "u", name: "A", micros: t0 + 59*minute},
				{typ: track, userID: "u", name: "A", micros: t0 + 89*minute}, // exactly 30: not more
			},
			want: map[string]sessions{"u": {1, t0}},
		},
		{
			name: "a gap of more than 30 minutes starts a session",
			events: []event{
				{typ: track, userID: "u", name: "A", micros: t0},
				{typ: track, userID: "u", name: "A", micros: t0 + 30*minute + 1},
				{typ: track, userID: "u", name: "A", micros: t0 + 40*minute},
				{typ: track, userID: "u", name: "A", micros: t0 + 3*24*60*minute},
			},
			want: map[string]sessions{"u": {3, t0 + 3*24*60*minute}},
		},
		{
			name: "a late event never starts a session",
			events: []event{
				{typ: track, userID: "u", name: "A", micros: t0},
				{typ: track, userID: "u", name: "A", micros: t0 - 5*24*60*minute},
				{typ: track, userID: "u", name: "A", micros: t0 - 60*minute},
				{typ: track, userID: "u", name: "A", micros: t0 + 10*minute},
			},
			want: map[string]sessions{"u": {1, t0}},
		},
		{
			name: "the gap is measured from the latest event, not the session start",
			events: []event{
				{typ: track, userID: "u", name: "A", micros: t0},
				{typ: track, userID: "u", name: "A", micros: t0 + 20*minute},
				{typ: track, userID: "u", name: "A", micros: t0 - 2*60*minute}, // late: no session, last seen stays
				{typ: track, userID: "u", name: "A", micros: t0 + 45*minute},
				{typ: track, userID: "u", name: "A", micros: t0 + 76*minute},
			},
			want: map[string]sessions{"u": {2, t0 + 76*minute}},
		},
		{
			name: "an alias adds the counts up and keeps the latest start",
			events: []event{
				{typ: track, anonymousID: "old", name: "A", micros: t0},
				{typ: track, anonymousID: "old", name: "A", micros: t0 + 2*60*minute},
				{typ: track, anonymousID: "old", name: "A", micros: t0 + 4*60*minute},
				{typ: track, userID: "new", name: "A", micros: t0 + 60*minute},
				{typ: track, userID: "new", name: "A", micros: t0 + 3*60*minute},
				// Within 30 minutes of the merged profile's last event
				// (old's, at +4h): it continues that session.
				{typ: alias, userID: "new", previousID: "old", micros: t0 + 4*60*minute + 10*minute},
			},
			want: map[string]sessions{"new": {5, t0 + 4*60*minute}},
		},
		{
			name: "after a merge, the gap is measured from the merged last event",
			events: []event{
				{typ: track, anonymousID: "a", name: "A", micros: t0 + 60*minute},
				{typ: track, userID: "u", name: "A", micros: t0},
				{typ: identify, anonymousID: "a", userID: "u", micros: t0 + 80*minute},
			},
			want: map[string]sessions{"u": {2, t0 + 60*minute}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBatch(100 * microsPerDay)
			for _, e := range tt.events {
				e.ws = ws
				b.apply(e)
			}
			got := map[string]sessions{}
			for _, p := range b.profiles {
				got[p.userID] = sessions{p.sessionCount, p.sessionStart}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("sessions by user (-want +got):\n%s", diff)
			}
		})
	}
}

var cmpSortIDs = cmpopts.SortSlices(func(a, b string) bool { return a < b })

func TestDecodeRefusesWhatCannotBeStored(t *testing.T) {
	tests := []struct {
		name string
		ev   *eventv1.Event
		want string
	}{
		{"no workspace", &eventv1.Event{MessageId: "m", UserId: "u"}, "workspace_id"},
		{"no message id", &eventv1.Event{WorkspaceId: ws, UserId: "u"}, "message_id is empty"},
		{"no identity", &eventv1.Event{WorkspaceId: ws, MessageId: "m"}, "neither user_id nor anonymous_id"},
		{"alias without previous id", &eventv1.Event{WorkspaceId: ws, MessageId: "m", UserId: "u", Type: eventv1.EventType_EVENT_TYPE_ALIAS}, "alias needs"},
		{"track without a name", &eventv1.Event{WorkspaceId: ws, MessageId: "m", UserId: "u", Type: eventv1.EventType_EVENT_TYPE_TRACK}, "track without an event name"},
		{"NUL in user id", &eventv1.Event{WorkspaceId: ws, MessageId: "m", UserId: "u\x00"}, "user_id contains a NUL"},
		{"long anonymous id", &eventv1.Event{WorkspaceId: ws, MessageId: "m", AnonymousId: strings.Repeat("a", 513)}, "anonymous_id is longer than 512 bytes"},
		{"traits an array", &eventv1.Event{WorkspaceId: ws, MessageId: "m", UserId: "u", Type: eventv1.EventType_EVENT_TYPE_IDENTIFY, Traits: []byte(`[1]`)}, "traits are not a JSON object"},
		{"traits with trailing data", &eventv1.Event{WorkspaceId: ws, MessageId: "m", UserId: "u", Type: eventv1.EventType_EVENT_TYPE_IDENTIFY, Traits: []byte(`{}{}`)}, "traits are not a JSON object"},
		{"NUL in a nested trait key", &eventv1.Event{WorkspaceId: ws, MessageId: "m", UserId: "u", Type: eventv1.EventType_EVENT_TYPE_IDENTIFY, Traits: []byte(`{"a":[{"b\u0000":1}]}`)}, "traits contain a NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode(tt.ev, time.Unix(1, 0))
			if !errors.Is(err, errUndecodable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decode = %v, want an undecodable error containing %q", err, tt.want)
			}
		})
	}
	e, err := decode(&eventv1.Event{WorkspaceId: strings.ToUpper(ws), MessageId: "m", UserId: "u", Type: eventv1.EventType_EVENT_TYPE_IDENTIFY, Traits: []byte(`{"n":12345678901234567890}`)}, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if e.ws != ws || string(e.traits["n"]) != "12345678901234567890" || e.micros != 1e6 {
		t.Errorf("decode = %+v; want the canonical workspace id, the number's text, the fallback time", e)
	}
}

// TestSessionsOfEveryInterleaving applies the events of
// TestIdentityAliasAndReplay's u1 in every order that keeps each key's
// (partition's) order, and checks the session outcomes that the end-to-end
// test accepts are exactly those.
func TestSessionsOfEveryInterleaving(t *testing.T) {
	minute := int64(time.Minute / time.Microsecond)
	t0 := 1000 * minute
	track := func(user, anon, name string, at int64) event {
		return event{typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: user, anonymousID: anon, name: name, micros: t0 + at*minute}
	}
	partitions := [][]event{
		{track("", "anon-1", "Viewed", 0)},
		{
			{typ: eventv1.EventType_EVENT_TYPE_IDENTIFY, userID: "u1", anonymousID: "anon-1", micros: t0 + minute},
			track("u1", "", "Viewed", 2), track("u1", "", "Bought", 3), track("u1", "", "Signed Up", 6),
		},
		{
			track("old-id", "", "Viewed", -60),
			{typ: eventv1.EventType_EVENT_TYPE_IDENTIFY, userID: "old-id", micros: t0 - 60*minute},
			{typ: eventv1.EventType_EVENT_TYPE_ALIAS, userID: "u1", previousID: "old-id", micros: t0 + 4*minute},
			track("old-id", "", "Bought", 5),
		},
	}
	type sessions struct{ Count, StartMinute int64 }
	got := map[sessions]bool{}
	var orders func(pos []int, order []event)
	orders = func(pos []int, order []event) {
		done := true
		for i, evs := range partitions {
			if pos[i] == len(evs) {
				continue
			}
			done = false
			next := slices.Clone(pos)
			next[i]++
			orders(next, append(slices.Clone(order), evs[pos[i]]))
		}
		if !done {
			return
		}
		b := newBatch(2 * t0)
		for _, e := range order {
			e.ws = ws
			b.apply(e)
		}
		if len(b.profiles) != 1 {
			t.Fatalf("%d profiles after every event, want 1 (all merged)", len(b.profiles))
		}
		for _, p := range b.profiles {
			got[sessions{p.sessionCount, (p.sessionStart - t0) / minute}] = true
		}
	}
	orders(make([]int, len(partitions)), nil)
	want := map[sessions]bool{{2, 0}: true, {2, 1}: true, {2, 4}: true, {3, 4}: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("session outcomes (-want +got):\n%s", diff)
	}
}
