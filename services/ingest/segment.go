package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"time"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
)

// Limits of the Segment HTTP API.
const (
	MaxEventBytes = 32 << 10
	MaxBatchBytes = 500 << 10
	// maxIDBytes bounds ids, which become record keys and Redis keys.
	maxIDBytes = 512
	// maxNameBytes bounds event, page and screen names.
	maxNameBytes = 1024
)

// InputError is bad input: the caller gets a 400 / InvalidArgument with its
// message, which names the field and, in a batch, the item.
type InputError struct {
	Field string // e.g. "batch[3].event"; empty when the whole body is bad
	Msg   string
}

func (e *InputError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// ErrTooLarge means an event or batch is over its size limit.
var ErrTooLarge = errors.New("too large")

// TooLargeError says which limit was passed.
type TooLargeError struct {
	What  string
	Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is larger than %d bytes", e.What, e.Limit)
}

func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// call is one Segment call after decoding, in the shape both the HTTP API
// and the Connect API reduce to before validation.
type call struct {
	typ                            eventv1.EventType
	messageID, userID, anonymousID string
	event, name, category          string
	groupID, previousID            string
	// JSON objects as sent, or nil.
	properties, traits, context, integrations json.RawMessage
	// The client's clocks; zero when absent.
	timestamp, sentAt time.Time
}

// segmentJSON is the wire form of one call.
type segmentJSON struct {
	Type              string          `json:"type"`
	MessageID         flexString      `json:"messageId"`
	UserID            flexString      `json:"userId"`
	AnonymousID       flexString      `json:"anonymousId"`
	Event             flexString      `json:"event"`
	Name              flexString      `json:"name"`
	Category          flexString      `json:"category"`
	GroupID           flexString      `json:"groupId"`
	PreviousID        flexString      `json:"previousId"`
	Properties        json.RawMessage `json:"properties"`
	Traits            json.RawMessage `json:"traits"`
	Context           json.RawMessage `json:"context"`
	Integrations      json.RawMessage `json:"integrations"`
	Timestamp         string          `json:"timestamp"`
	OriginalTimestamp string          `json:"originalTimestamp"`
	SentAt            string          `json:"sentAt"`
	WriteKey          string          `json:"writeKey"`
}

// flexString accepts a JSON string or number: SDKs send numeric user ids.
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) > 0 && b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	case string(b) == "null":
		*s = ""
	case len(b) > 0 && (b[0] == '-' || (b[0] >= '0' && b[0] <= '9')):
		*s = flexString(b)
	default:
		return &json.UnmarshalTypeError{Value: "value " + string(b[:min(len(b), 1)]), Type: reflect.TypeFor[string]()}
	}
	return nil
}

var callTypes = map[string]eventv1.EventType{
	"track":    eventv1.EventType_EVENT_TYPE_TRACK,
	"identify": eventv1.EventType_EVENT_TYPE_IDENTIFY,
	"page":     eventv1.EventType_EVENT_TYPE_PAGE,
	"screen":   eventv1.EventType_EVENT_TYPE_SCREEN,
	"group":    eventv1.EventType_EVENT_TYPE_GROUP,
	"alias":    eventv1.EventType_EVENT_TYPE_ALIAS,
}

// callTypeNames is the reverse of callTypes, for labels and routes.
var callTypeNames = func() map[eventv1.EventType]string {
	m := make(map[eventv1.EventType]string, len(callTypes))
	for name, t := range callTypes {
		m[t] = name
	}
	return m
}()

// request is a decoded Segment request: one call, or a batch of them with
// the batch-level fields that apply to every item.
type request struct {
	calls        []call
	context      json.RawMessage
	integrations json.RawMessage
	sentAt       time.Time
	writeKey     string
}

// decodeSingle decodes the body of /v1/{track,identify,...}; typ is the
// route's call type, which wins over a "type" in the body.
func decodeSingle(body []byte, typ eventv1.EventType) (*request, error) {
	if len(body) > MaxEventBytes {
		return nil, &TooLargeError{What: "event", Limit: MaxEventBytes}
	}
	var w segmentJSON
	if err := strictUnmarshal(body, &w); err != nil {
		return nil, jsonInputError("", err)
	}
	c, err := w.toCall(typ, "")
	if err != nil {
		return nil, err
	}
	return &request{calls: []call{c}, writeKey: w.WriteKey}, nil
}

// decodeBatch decodes the body of /v1/batch (and of /v1/import, its alias).
// It streams the items so each one's size is known exactly, without a second
// parse of the batch.
func decodeBatch(body []byte) (*request, error) {
	if len(body) > MaxBatchBytes {
		return nil, &TooLargeError{What: "batch", Limit: MaxBatchBytes}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	req := &request{}
	sawBatch := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonInputError("", err)
		}
		key, _ := tok.(string)
		switch key {
		case "batch":
			sawBatch = true
			if err := decodeItems(dec, req); err != nil {
				return nil, err
			}
		case "context":
			if err := decodeObject(dec, &req.context, "context"); err != nil {
				return nil, err
			}
		case "integrations":
			if err := decodeObject(dec, &req.integrations, "integrations"); err != nil {
				return nil, err
			}
		case "sentAt":
			var s string
			if err := dec.Decode(&s); err != nil {
				return nil, jsonInputError("sentAt", err)
			}
			t, err := parseTime("sentAt", s)
			if err != nil {
				return nil, err
			}
			req.sentAt = t
		case "writeKey":
			if err := dec.Decode(&req.writeKey); err != nil {
				return nil, jsonInputError("writeKey", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, jsonInputError(key, err)
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, jsonInputError("", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &InputError{Msg: "unexpected data after the JSON object"}
	}
	if !sawBatch {
		return nil, &InputError{Field: "batch", Msg: "required"}
	}
	if len(req.calls) == 0 {
		return nil, &InputError{Field: "batch", Msg: "must hold at least one call"}
	}
	return req, nil
}

func decodeItems(dec *json.Decoder, req *request) error {
	if err := expectDelim(dec, '['); err != nil {
		return &InputError{Field: "batch", Msg: "must be an array"}
	}
	for i := 0; dec.More(); i++ {
		field := "batch[" + strconv.Itoa(i) + "]"
		start := dec.InputOffset()
		var w segmentJSON
		if err := dec.Decode(&w); err != nil {
			return jsonInputError(field, err)
		}
		if dec.InputOffset()-start > MaxEventBytes {
			return &TooLargeError{What: field, Limit: MaxEventBytes}
		}
		typ, ok := callTypes[w.Type]
		if !ok {
			if w.Type == "" {
				return &InputError{Field: field + ".type", Msg: "required"}
			}
			return &InputError{Field: field + ".type", Msg: fmt.Sprintf("unknown call type %q", w.Type)}
		}
		c, err := w.toCall(typ, field+".")
		if err != nil {
			return err
		}
		req.calls = append(req.calls, c)
	}
	if _, err := dec.Token(); err != nil {
		return jsonInputError("batch", err)
	}
	return nil
}

func (w *segmentJSON) toCall(typ eventv1.EventType, prefix string) (call, error) {
	c := call{
		typ:         typ,
		messageID:   string(w.MessageID),
		userID:      string(w.UserID),
		anonymousID: string(w.AnonymousID),
		event:       string(w.Event),
		name:        string(w.Name),
		category:    string(w.Category),
		groupID:     string(w.GroupID),
		previousID:  string(w.PreviousID),
	}
	var err error
	for _, o := range []struct {
		name string
		raw  json.RawMessage
		dst  *json.RawMessage
	}{
		{"properties", w.Properties, &c.properties},
		{"traits", w.Traits, &c.traits},
		{"context", w.Context, &c.context},
		{"integrations", w.Integrations, &c.integrations},
	} {
		if *o.dst, err = objectOrNil(prefix+o.name, o.raw); err != nil {
			return call{}, err
		}
	}
	ts := w.Timestamp
	if ts == "" {
		ts = w.OriginalTimestamp
	}
	if c.timestamp, err = parseTime(prefix+"timestamp", ts); err != nil {
		return call{}, err
	}
	if c.sentAt, err = parseTime(prefix+"sentAt", w.SentAt); err != nil {
		return call{}, err
	}
	return c, c.validate(prefix)
}

// validate applies the rules of the call's type. prefix names the item in a
// batch ("batch[3].") or is empty.
func (c *call) validate(prefix string) error {
	for _, f := range []struct{ name, v string }{
		{"messageId", c.messageID}, {"userId", c.userID}, {"anonymousId", c.anonymousID},
		{"groupId", c.groupID}, {"previousId", c.previousID},
	} {
		if len(f.v) > maxIDBytes {
			return &InputError{Field: prefix + f.name, Msg: fmt.Sprintf("longer than %d bytes", maxIDBytes)}
		}
	}
	for _, f := range []struct{ name, v string }{{"event", c.event}, {"name", c.name}, {"category", c.category}} {
		if len(f.v) > maxNameBytes {
			return &InputError{Field: prefix + f.name, Msg: fmt.Sprintf("longer than %d bytes", maxNameBytes)}
		}
	}
	switch c.typ {
	case eventv1.EventType_EVENT_TYPE_ALIAS:
		if c.previousID == "" {
			return &InputError{Field: prefix + "previousId", Msg: "required for alias"}
		}
		if c.userID == "" {
			return &InputError{Field: prefix + "userId", Msg: "required for alias"}
		}
		return nil
	case eventv1.EventType_EVENT_TYPE_TRACK:
		if c.event == "" {
			return &InputError{Field: prefix + "event", Msg: "required for track"}
		}
	case eventv1.EventType_EVENT_TYPE_GROUP:
		if c.groupID == "" {
			return &InputError{Field: prefix + "groupId", Msg: "required for group"}
		}
	}
	if c.userID == "" && c.anonymousID == "" {
		return &InputError{Field: prefix + "userId", Msg: "userId or anonymousId is required"}
	}
	return nil
}

// user is the identity that keys the call's record.
func (c *call) user() string {
	if c.userID != "" {
		return c.userID
	}
	return c.anonymousID
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonInputError("", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return &InputError{Msg: fmt.Sprintf("expected a JSON %s", map[json.Delim]string{'{': "object", '[': "array"}[want])}
	}
	return nil
}

func decodeObject(dec *json.Decoder, dst *json.RawMessage, field string) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return jsonInputError(field, err)
	}
	obj, err := objectOrNil(field, raw)
	*dst = obj
	return err
}

// objectOrNil accepts a JSON object, or null/absent as nil.
func objectOrNil(field string, raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, &InputError{Field: field, Msg: "must be a JSON object"}
	}
	return raw, nil
}

// parseTime parses an ISO-8601 timestamp as SDKs send it; empty is zero.
func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &InputError{Field: field, Msg: fmt.Sprintf("%q is not an ISO-8601 timestamp", s)}
	}
	return t, nil
}

// strictUnmarshal decodes exactly one JSON value.
func strictUnmarshal(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// jsonInputError turns a decoding error into a message naming the field.
func jsonInputError(field string, err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		name := typeErr.Field
		if field != "" && name != "" {
			name = field + "." + name
		} else if name == "" {
			name = field
		}
		if name == "" {
			return &InputError{Msg: "expected a JSON object"}
		}
		return &InputError{Field: name, Msg: fmt.Sprintf("expected %s, got JSON %s", typeErr.Type, typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return &InputError{Field: field, Msg: fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &InputError{Field: field, Msg: "malformed JSON: unexpected end of input"}
	}
	return &InputError{Field: field, Msg: "malformed JSON: " + err.Error()}
}
