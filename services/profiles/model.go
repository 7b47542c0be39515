package profiles

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
)

// Identity kinds, the kind column of profile_identities.
const (
	kindUser      = "user"
	kindAnonymous = "anonymous"
)

// idKey is one identity of one workspace.
type idKey struct{ ws, kind, id string }

// profileKey is one profile of one workspace.
type profileKey struct{ ws, id string }

// profile is the mutable state of one profile while a batch is applied.
// Times are Unix microseconds, as stored in the jsonb columns.
type profile struct {
	key    profileKey
	userID string
	// traits holds raw JSON values; traitTimes the event time of each key's
	// value, kept also for keys deleted by a null so that an older event
	// cannot bring them back.
	traits     map[string]json.RawMessage
	traitTimes map[string]int64
	counts     map[string]int64
	lastEvent  map[string]int64
	firstSeen  int64
	lastSeen   int64
	// sessionCount counts sessions; sessionStart is the event time that
	// started the latest one (see sessionGap).
	sessionCount int64
	sessionStart int64
	daily        activity
	// version counts the writes of the row (see the Redis mirror).
	version int64
	// The lifecycle as stored: for a loaded profile, what was loaded,
	// until the batch recomputes it.
	stage     string
	stageTime int64
	score     int32
	// stored says the row exists in PostgreSQL (it was loaded, not created).
	stored bool
	// changed says an event of the batch reached the profile.
	changed bool
	// loadedTraits are the traits as loaded (nil for a new profile);
	// mergedIDs the stored profiles merged into this one.
	loadedTraits map[string]json.RawMessage
	mergedIDs    []string
}

func newProfile(ws string) *profile {
	return &profile{
		key:        profileKey{ws, uuid.NewString()},
		traits:     map[string]json.RawMessage{},
		traitTimes: map[string]int64{},
		counts:     map[string]int64{},
		lastEvent:  map[string]int64{},
		daily:      activity{},
	}
}

// changedTraits lists the trait keys whose values differ from the loaded
// ones (set, replaced or deleted), sorted.
func (p *profile) changedTraits() []string {
	var out []string
	for k, v := range p.traits {
		if old, ok := p.loadedTraits[k]; !ok || !bytes.Equal(old, v) {
			out = append(out, k)
		}
	}
	for k := range p.loadedTraits {
		if _, ok := p.traits[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// touch widens the seen interval to include t.
func (p *profile) touch(t int64) {
	if p.firstSeen == 0 || t < p.firstSeen {
		p.firstSeen = t
	}
	if t > p.lastSeen {
		p.lastSeen = t
	}
}

// sessionGap is the inactivity that ends a session, as in web analytics.
const sessionGap = int64(30 * time.Minute / time.Microsecond)

// observeSession counts the session an event at t belongs to. It must be
// called before touch(t), since it compares t with the latest event applied
// before it: the first event, or one more than sessionGap after that, starts
// a session; anything else, a late event included, continues the latest.
func (p *profile) observeSession(t int64) {
	if p.lastSeen == 0 || t > p.lastSeen+sessionGap {
		p.sessionCount++
		p.sessionStart = t
	}
}

// setTraits merges traits observed at t: per key, the value of the latest
// event wins; null deletes the key (and remembers when). Nested objects are
// values like any other: the latest replaces them whole.
func (p *profile) setTraits(traits map[string]json.RawMessage, t int64) {
	for k, v := range traits {
		if cur, ok := p.traitTimes[k]; ok && cur > t {
			continue
		}
		p.traitTimes[k] = t
		if string(v) == "null" {
			delete(p.traits, k)
		} else {
			p.traits[k] = v
		}
	}
}

// absorb merges src into p: counters add up, per-key latest traits and
// last event times win, the seen interval covers both.
func (p *profile) absorb(src *profile) {
	for k, t := range src.traitTimes {
		if cur, ok := p.traitTimes[k]; ok && cur >= t {
			continue
		}
		p.traitTimes[k] = t
		if v, ok := src.traits[k]; ok {
			p.traits[k] = v
		} else {
			delete(p.traits, k)
		}
	}
	p.daily.absorb(src.daily)
	// Sessions are not recomputed from the two event histories (they are
	// not kept): counts add up and the later start wins. Sessions of the
	// two ids that overlapped in time are counted twice; for one person on
	// two devices or ids, that is the usual approximation.
	p.sessionCount += src.sessionCount
	p.sessionStart = max(p.sessionStart, src.sessionStart)
	p.mergedIDs = append(p.mergedIDs, src.mergedIDs...)
	for name, n := range src.counts {
		p.counts[name] += n
	}
	for name, t := range src.lastEvent {
		if t > p.lastEvent[name] {
			p.lastEvent[name] = t
		}
	}
	if src.firstSeen != 0 {
		p.touch(src.firstSeen)
	}
	if src.lastSeen != 0 {
		p.touch(src.lastSeen)
	}
	if p.userID == "" {
		p.userID = src.userID
	}
}

// event is a decoded record, ready to apply.
type event struct {
	ws, messageID       string
	typ                 eventv1.EventType
	userID, anonymousID string
	previousID, name    string
	traits              map[string]json.RawMessage
	micros              int64
	recordIndex         int
}

const (
	maxIDBytes   = 512
	maxNameBytes = 1024
)

// errUndecodable marks a record that no retry can apply; it goes to the DLQ.
var errUndecodable = errors.New("undecodable event")

// decode checks that ev can be applied and extracts what profiles read.
func decode(ev *eventv1.Event, fallback time.Time) (event, error) {
	bad := func(format string, args ...any) (event, error) {
		return event{}, fmt.Errorf("%w: %s", errUndecodable, fmt.Sprintf(format, args...))
	}
	ws, err := uuid.Parse(ev.GetWorkspaceId())
	if err != nil {
		return bad("workspace_id %q is not a uuid", ev.GetWorkspaceId())
	}
	if ev.GetMessageId() == "" {
		return bad("message_id is empty")
	}
	e := event{
		ws: ws.String(), messageID: ev.GetMessageId(), typ: ev.GetType(),
		userID: ev.GetUserId(), anonymousID: ev.GetAnonymousId(), previousID: ev.GetPreviousId(), name: ev.GetEvent(),
	}
	switch {
	case e.typ == eventv1.EventType_EVENT_TYPE_ALIAS && (e.userID == "" || e.previousID == ""):
		return bad("alias needs user_id and previous_id")
	case e.userID == "" && e.anonymousID == "":
		return bad("neither user_id nor anonymous_id is set")
	case e.typ == eventv1.EventType_EVENT_TYPE_TRACK && e.name == "":
		return bad("track without an event name")
	}
	// What PostgreSQL would refuse on every retry (NUL in text or jsonb,
	// ids too long for a btree key) is refused here instead. The limits are
	// ingestion's: 512 bytes for ids, 1024 for event names.
	for _, f := range [...]struct {
		field string
		v     string
		max   int
	}{
		{"message_id", e.messageID, maxIDBytes}, {"user_id", e.userID, maxIDBytes}, {"anonymous_id", e.anonymousID, maxIDBytes},
		{"previous_id", e.previousID, maxIDBytes}, {"event", e.name, maxNameBytes},
	} {
		if strings.ContainsRune(f.v, 0) {
			return bad("%s contains a NUL character", f.field)
		}
		if len(f.v) > f.max {
			return bad("%s is longer than %d bytes", f.field, f.max)
		}
	}
	if b := ev.GetTraits(); len(b) > 0 && e.typ == eventv1.EventType_EVENT_TYPE_IDENTIFY {
		// Values are decoded and encoded again rather than kept raw: Go
		// writes valid UTF-8 without lone surrogates, which jsonb refuses.
		// Numbers keep their text, so large integers stay exact.
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil || dec.More() {
			return bad("traits are not a JSON object")
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return bad("traits are not a JSON object")
		}
		if hasNUL(v) {
			return bad("traits contain a NUL character")
		}
		e.traits = make(map[string]json.RawMessage, len(obj))
		for k, x := range obj {
			raw, err := json.Marshal(x)
			if err != nil {
				return bad("trait %q: %v", k, err)
			}
			e.traits[k] = raw
		}
	}
	t := fallback
	switch {
	case ev.GetTimestamp() != nil:
		t = ev.GetTimestamp().AsTime()
	case ev.GetReceivedAt() != nil:
		t = ev.GetReceivedAt().AsTime()
	}
	e.micros = t.UnixMicro()
	if e.micros <= 0 {
		return bad("timestamp %v is before 1970", t)
	}
	return e, nil
}

// hasNUL reports whether a decoded JSON value has a NUL in a string or key.
func hasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		return slices.ContainsFunc(v, hasNUL)
	case map[string]any:
		for k, x := range v {
			if strings.ContainsRune(k, 0) || hasNUL(x) {
				return true
			}
		}
	}
	return false
}

// batch applies events to profiles in memory. It starts from the identities
// and profiles loaded for the events, and records what must be written back.
type batch struct {
	ids      map[idKey]profileKey
	profiles map[profileKey]*profile
	// linked are the identities to write (new, or re-pointed).
	linked map[idKey]bool
	// absorbed maps each merged-away profile to the one that absorbed it.
	absorbed map[profileKey]profileKey
	// now is the clock of the batch, in Unix microseconds.
	now int64
}

func newBatch(now int64) *batch {
	return &batch{
		now:      now,
		ids:      map[idKey]profileKey{},
		profiles: map[profileKey]*profile{},
		linked:   map[idKey]bool{},
		absorbed: map[profileKey]profileKey{},
	}
}

// identityKeys lists the identities an event may read or write.
func identityKeys(e event) []idKey {
	var ks []idKey
	if e.userID != "" {
		ks = append(ks, idKey{e.ws, kindUser, e.userID})
	}
	if e.anonymousID != "" {
		ks = append(ks, idKey{e.ws, kindAnonymous, e.anonymousID})
	}
	if e.previousID != "" {
		ks = append(ks, idKey{e.ws, kindUser, e.previousID}, idKey{e.ws, kindAnonymous, e.previousID})
	}
	return ks
}

func (b *batch) lookup(k idKey) *profile {
	pk, ok := b.ids[k]
	if !ok {
		return nil
	}
	return b.profiles[pk]
}

func (b *batch) link(k idKey, p *profile) {
	b.ids[k] = p.key
	b.linked[k] = true
}

func (b *batch) create(ws string) *profile {
	p := newProfile(ws)
	b.profiles[p.key] = p
	return p
}

// merge moves everything of src into dst and re-points src's identities.
func (b *batch) merge(src, dst *profile) {
	dst.absorb(src)
	for k, pk := range b.ids {
		if pk == src.key {
			b.link(k, dst)
		}
	}
	for from, to := range b.absorbed {
		if to == src.key {
			b.absorbed[from] = dst.key
		}
	}
	delete(b.profiles, src.key)
	if src.stored {
		b.absorbed[src.key] = dst.key
		dst.mergedIDs = append(dst.mergedIDs, src.key.id)
	}
}

// apply applies one event.
func (b *batch) apply(e event) {
	var p *profile
	if e.typ == eventv1.EventType_EVENT_TYPE_ALIAS {
		p = b.alias(e)
	} else {
		p = b.resolve(e)
	}
	p.changed = true
	p.observeSession(e.micros)
	p.touch(e.micros)
	name := ""
	if e.typ == eventv1.EventType_EVENT_TYPE_TRACK {
		name = e.name
	}
	p.daily.add(e.micros, name, b.now)
	switch e.typ {
	case eventv1.EventType_EVENT_TYPE_IDENTIFY:
		p.setTraits(e.traits, e.micros)
	case eventv1.EventType_EVENT_TYPE_TRACK:
		p.counts[e.name]++
		if e.micros > p.lastEvent[e.name] {
			p.lastEvent[e.name] = e.micros
		}
	}
}

// resolve finds (or creates) the profile of an event, linking its user id
// and anonymous id. An anonymous-only profile whose anonymous id now comes
// with a user id is claimed by that user: merged into the user's profile if
// there is one, else given the user id. An anonymous id already claimed by
// another user stays with that user (a shared device).
func (b *batch) resolve(e event) *profile {
	uk, ak := idKey{e.ws, kindUser, e.userID}, idKey{e.ws, kindAnonymous, e.anonymousID}
	var pu, pa *profile
	if e.userID != "" {
		pu = b.lookup(uk)
	}
	if e.anonymousID != "" {
		pa = b.lookup(ak)
	}
	switch {
	case pu == nil && pa == nil:
		p := b.create(e.ws)
		p.userID = e.userID
		if e.userID != "" {
			b.link(uk, p)
		}
		if e.anonymousID != "" {
			b.link(ak, p)
		}
		return p
	case pu != nil && pa == nil:
		if e.anonymousID != "" {
			b.link(ak, pu)
		}
		return pu
	case pu == nil:
		if e.userID == "" {
			return pa
		}
		if pa.userID == "" {
			pa.userID = e.userID
			b.link(uk, pa)
			return pa
		}
		p := b.create(e.ws)
		p.userID = e.userID
		b.link(uk, p)
		return p
	default:
		if pu != pa && pa.userID == "" {
			b.merge(pa, pu)
		}
		return pu
	}
}

// alias links previous_id to user_id; when both have profiles, the
// previous one is merged into the user's. Segment does not say whether a
// previous id was a user id or an anonymous id, and its own events may be
// applied after the alias (they are keyed by it, so they may sit on another
// partition): the previous id is linked as both, so that its events, early
// or late, land on the merged profile.
func (b *batch) alias(e event) *profile {
	uk := idKey{e.ws, kindUser, e.userID}
	prevUser := idKey{e.ws, kindUser, e.previousID}
	prevAnon := idKey{e.ws, kindAnonymous, e.previousID}
	target := b.lookup(uk)
	source := b.lookup(prevUser)
	if source == nil {
		source = b.lookup(prevAnon)
	}
	switch {
	case target == nil && source == nil:
		target = b.create(e.ws)
		b.link(uk, target)
	case target == nil:
		target = source
		b.link(uk, target)
	case source != nil && source != target:
		b.merge(source, target)
	}
	target.userID = e.userID
	for _, k := range []idKey{prevUser, prevAnon} {
		if b.lookup(k) == nil {
			b.link(k, target)
		}
	}
	return target
}

// changed lists the profiles to write back.
func (b *batch) changed() []*profile {
	var out []*profile
	for _, p := range b.profiles {
		if p.changed {
			out = append(out, p)
		}
	}
	return out
}
