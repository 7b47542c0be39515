package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

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
	properties, traits, context, integrations jsontext.Value
	// The client's clocks; zero when absent.
	timestamp, sentAt time.Time
}

// itemRef locates a call in a request for error messages: batch[3] in a
// Segment batch, items[3] in an RPC batch, nothing for a single call. Field
// names are built only when an error needs them, off the hot path.
type itemRef struct {
	list  string // "batch", "items", or empty for a single call
	index int
}

func (r itemRef) String() string {
	if r.list == "" {
		return ""
	}
	return r.list + "[" + strconv.Itoa(r.index) + "]"
}

// field names a field of the call: "batch[3].event", or "event".
func (r itemRef) field(name string) string {
	if r.list == "" {
		return name
	}
	return r.String() + "." + name
}

// segmentJSON is the wire form of one call.
type segmentJSON struct {
	Type              string         `json:"type"`
	MessageID         flexString     `json:"messageId"`
	UserID            flexString     `json:"userId"`
	AnonymousID       flexString     `json:"anonymousId"`
	Event             flexString     `json:"event"`
	Name              flexString     `json:"name"`
	Category          flexString     `json:"category"`
	GroupID           flexString     `json:"groupId"`
	PreviousID        flexString     `json:"previousId"`
	Properties        jsontext.Value `json:"properties"`
	Traits            jsontext.Value `json:"traits"`
	Context           jsontext.Value `json:"context"`
	Integrations      jsontext.Value `json:"integrations"`
	Timestamp         string         `json:"timestamp"`
	OriginalTimestamp string         `json:"originalTimestamp"`
	SentAt            string         `json:"sentAt"`
	WriteKey          string         `json:"writeKey"`
}

// flexString accepts a JSON string or number: SDKs send numeric user ids.
type flexString string

func (s *flexString) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	switch tok.Kind() {
	case '"':
		*s = flexString(tok.String())
	case '0':
		*s = flexString(tok.String())
	case 'n':
		*s = ""
	default:
		return &InputError{Msg: "expected a string or a number, got " + kindName(tok.Kind())}
	}
	return nil
}

// kindName names a JSON kind for error messages.
func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '"':
		return "a string"
	case '0':
		return "a number"
	}
	return "nothing"
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
	context      jsontext.Value
	integrations jsontext.Value
	sentAt       time.Time
	writeKey     string
	stamps       []stampMemo // see stamp
	// bodyBytes is the size of the JSON the calls came from (0 when they
	// came as protobuf): their records take about as much.
	bodyBytes int
}

// decodeSingle decodes the body of /v1/{track,identify,...}; typ is the
// route's call type, which wins over a "type" in the body.
func decodeSingle(body []byte, typ eventv1.EventType) (*request, error) {
	if len(body) > MaxEventBytes {
		return nil, &TooLargeError{What: "event", Limit: MaxEventBytes}
	}
	var w segmentJSON
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, jsonInputError("", err)
	}
	c, err := w.toCall(typ, itemRef{})
	if err != nil {
		return nil, err
	}
	return &request{calls: []call{c}, writeKey: w.WriteKey, bodyBytes: len(body)}, nil
}

// decodeBatch decodes the body of /v1/batch (and of /v1/import, its alias).
// It streams the batch with a tokenizer, so each item's exact size is known
// and the body is parsed once.
func decodeBatch(body []byte) (*request, error) {
	if len(body) > MaxBatchBytes {
		return nil, &TooLargeError{What: "batch", Limit: MaxBatchBytes}
	}
	// A bytes.Buffer lets the decoder parse the body in place; values are
	// sliced out of body by offset and stay valid while the request lives.
	dec := jsontext.NewDecoder(bytes.NewBuffer(body))
	if err := expectKind(dec, '{', "", "a JSON object"); err != nil {
		return nil, err
	}
	req := &request{bodyBytes: len(body)}
	// The items' strings (ids, names, timestamps) are cut out of one copy
	// of the body rather than allocated one by one.
	text := string(body)
	sawBatch := false
	for {
		switch dec.PeekKind() {
		case '}':
			dec.ReadToken()
			if _, err := dec.ReadToken(); err != io.EOF {
				return nil, &InputError{Msg: "malformed JSON: unexpected data after the object"}
			}
			if !sawBatch {
				return nil, &InputError{Field: "batch", Msg: "required"}
			}
			if len(req.calls) == 0 {
				return nil, &InputError{Field: "batch", Msg: "must hold at least one call"}
			}
			return req, nil
		case 0:
			_, err := dec.ReadToken()
			return nil, jsonInputError("", err)
		}
		name, err := dec.ReadToken()
		if err != nil {
			return nil, jsonInputError("", err)
		}
		switch key := name.String(); key {
		case "batch":
			sawBatch = true
			if err := decodeItems(dec, body, text, req); err != nil {
				return nil, err
			}
		case "context", "integrations":
			raw, err := dec.ReadValue()
			if err != nil {
				return nil, jsonInputError(key, err)
			}
			obj, ok := objectOrNil(raw.Clone())
			if !ok {
				return nil, &InputError{Field: key, Msg: "must be a JSON object"}
			}
			if key == "context" {
				req.context = obj
			} else {
				req.integrations = obj
			}
		case "sentAt", "writeKey":
			var v string
			if err := json.UnmarshalDecode(dec, &v); err != nil {
				return nil, jsonInputError(key, err)
			}
			if key == "writeKey" {
				req.writeKey = v
			} else if req.sentAt, err = parseTime(v); err != nil {
				return nil, &InputError{Field: "sentAt", Msg: err.Error()}
			}
		default:
			if err := dec.SkipValue(); err != nil {
				return nil, jsonInputError(key, err)
			}
		}
	}
}

// decodeItems decodes the batch array; text is body as a string.
func decodeItems(dec *jsontext.Decoder, body []byte, text string, req *request) error {
	if dec.PeekKind() != '[' {
		if dec.PeekKind() == 0 {
			_, err := dec.ReadToken()
			return jsonInputError("batch", err)
		}
		return &InputError{Field: "batch", Msg: "must be an array"}
	}
	dec.ReadToken()
	if req.calls == nil {
		// About one call per 256 bytes: a batch of typical events then
		// grows its calls at most once.
		req.calls = make([]call, 0, len(body)/256+1)
	}
	for i := 0; ; i++ {
		switch dec.PeekKind() {
		case ']':
			dec.ReadToken()
			return nil
		case 0:
			_, err := dec.ReadToken()
			return jsonInputError("batch", err)
		}
		at := itemRef{list: "batch", index: i}
		start := dec.InputOffset()
		var w segmentJSON
		if err := w.decodeFrom(dec, body, text, at); err != nil {
			return err
		}
		if dec.InputOffset()-start > MaxEventBytes {
			return &TooLargeError{What: at.String(), Limit: MaxEventBytes}
		}
		typ, ok := callTypes[w.Type]
		if !ok {
			if w.Type == "" {
				return &InputError{Field: at.field("type"), Msg: "required"}
			}
			return &InputError{Field: at.field("type"), Msg: fmt.Sprintf("unknown call type %q", w.Type)}
		}
		c, err := w.toCall(typ, at)
		if err != nil {
			return err
		}
		req.calls = append(req.calls, c)
	}
}

// decodeFrom reads one call object from dec, which parses body. It walks
// the object's members itself rather than through reflection: a batch item
// is then scanned once, and its objects (properties, context...) are slices
// of body, not copies, as are its strings of text (body as a string) when
// they hold no escapes. Member names are matched as sent; one spelled with
// escapes is ignored like any unknown member.
func (w *segmentJSON) decodeFrom(dec *jsontext.Decoder, body []byte, text string, at itemRef) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return jsonInputError(at.String(), err)
	}
	if tok.Kind() != '{' {
		return &InputError{Field: at.String(), Msg: "expected an object, got " + kindName(tok.Kind())}
	}
	for {
		switch dec.PeekKind() {
		case '}':
			_, err := dec.ReadToken()
			return err
		case 0:
			_, err := dec.ReadToken()
			return jsonInputError(at.String(), err)
		}
		name, err := dec.ReadValue()
		if err != nil {
			return jsonInputError(at.String(), err)
		}
		var str *string
		var flex *flexString
		var raw *jsontext.Value
		switch string(name) {
		case `"type"`:
			str = &w.Type
		case `"messageId"`:
			flex = &w.MessageID
		case `"userId"`:
			flex = &w.UserID
		case `"anonymousId"`:
			flex = &w.AnonymousID
		case `"event"`:
			flex = &w.Event
		case `"name"`:
			flex = &w.Name
		case `"category"`:
			flex = &w.Category
		case `"groupId"`:
			flex = &w.GroupID
		case `"previousId"`:
			flex = &w.PreviousID
		case `"timestamp"`:
			str = &w.Timestamp
		case `"originalTimestamp"`:
			str = &w.OriginalTimestamp
		case `"sentAt"`:
			str = &w.SentAt
		case `"writeKey"`:
			str = &w.WriteKey
		case `"properties"`:
			raw = &w.Properties
		case `"traits"`:
			raw = &w.Traits
		case `"context"`:
			raw = &w.Context
		case `"integrations"`:
			raw = &w.Integrations
		}
		field := func() string {
			unquoted, _ := jsontext.AppendUnquote(nil, name)
			return at.field(string(unquoted))
		}
		switch {
		case str != nil || flex != nil:
			v, err := dec.ReadValue()
			if err != nil {
				return jsonInputError(field(), err)
			}
			end := int(dec.InputOffset())
			s, kind := scalarText(v, text[end-len(v):end])
			switch {
			case kind == '"' || kind == 'n':
			case kind == '0' && flex != nil:
			case flex != nil:
				return &InputError{Field: field(), Msg: "expected a string or a number, got " + kindName(kind)}
			default:
				return &InputError{Field: field(), Msg: "expected a string, got " + kindName(kind)}
			}
			if str != nil {
				*str = s
			} else {
				*flex = flexString(s)
			}
		case raw != nil:
			start := dec.InputOffset()
			if _, err := dec.ReadValue(); err != nil {
				return jsonInputError(field(), err)
			}
			*raw = trimValue(body[start:dec.InputOffset()])
		default:
			if err := dec.SkipValue(); err != nil {
				return jsonInputError(field(), err)
			}
		}
	}
}

// scalarText returns what a string, number or null value v holds, as text:
// src is v's text, sliced when v needs no unescaping, and a null is "". For
// other kinds it returns only the kind.
func scalarText(v jsontext.Value, src string) (string, jsontext.Kind) {
	kind := v.Kind()
	switch kind {
	case '"':
		if bytes.IndexByte(v, '\\') < 0 {
			return src[1 : len(src)-1], kind
		}
		unquoted, _ := jsontext.AppendUnquote(nil, v) // v is valid: the decoder read it
		return string(unquoted), kind
	case '0':
		return src, kind
	}
	return "", kind
}

// trimValue cuts what precedes a value between two decoder offsets: the
// name separator and white space.
func trimValue(b []byte) jsontext.Value {
	for len(b) > 0 {
		switch b[0] {
		case ' ', '\t', '\r', '\n', ':', ',':
			b = b[1:]
			continue
		}
		break
	}
	return b
}

func (w *segmentJSON) toCall(typ eventv1.EventType, at itemRef) (call, error) {
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
	var ok bool
	if c.properties, ok = objectOrNil(w.Properties); !ok {
		return call{}, &InputError{Field: at.field("properties"), Msg: "must be a JSON object"}
	}
	if c.traits, ok = objectOrNil(w.Traits); !ok {
		return call{}, &InputError{Field: at.field("traits"), Msg: "must be a JSON object"}
	}
	if c.context, ok = objectOrNil(w.Context); !ok {
		return call{}, &InputError{Field: at.field("context"), Msg: "must be a JSON object"}
	}
	if c.integrations, ok = objectOrNil(w.Integrations); !ok {
		return call{}, &InputError{Field: at.field("integrations"), Msg: "must be a JSON object"}
	}
	ts := w.Timestamp
	if ts == "" {
		ts = w.OriginalTimestamp
	}
	var err error
	if c.timestamp, err = parseTime(ts); err != nil {
		return call{}, &InputError{Field: at.field("timestamp"), Msg: err.Error()}
	}
	if c.sentAt, err = parseTime(w.SentAt); err != nil {
		return call{}, &InputError{Field: at.field("sentAt"), Msg: err.Error()}
	}
	return c, c.validate(at)
}

// validate applies the rules of the call's type.
func (c *call) validate(at itemRef) error {
	for _, f := range [...]struct{ name, v string }{
		{"messageId", c.messageID}, {"userId", c.userID}, {"anonymousId", c.anonymousID},
		{"groupId", c.groupID}, {"previousId", c.previousID},
	} {
		if len(f.v) > maxIDBytes {
			return &InputError{Field: at.field(f.name), Msg: fmt.Sprintf("longer than %d bytes", maxIDBytes)}
		}
	}
	for _, f := range [...]struct{ name, v string }{{"event", c.event}, {"name", c.name}, {"category", c.category}} {
		if len(f.v) > maxNameBytes {
			return &InputError{Field: at.field(f.name), Msg: fmt.Sprintf("longer than %d bytes", maxNameBytes)}
		}
	}
	switch c.typ {
	case eventv1.EventType_EVENT_TYPE_ALIAS:
		if c.previousID == "" {
			return &InputError{Field: at.field("previousId"), Msg: "required for alias"}
		}
		if c.userID == "" {
			return &InputError{Field: at.field("userId"), Msg: "required for alias"}
		}
		return nil
	case eventv1.EventType_EVENT_TYPE_TRACK:
		if c.event == "" {
			return &InputError{Field: at.field("event"), Msg: "required for track"}
		}
	case eventv1.EventType_EVENT_TYPE_GROUP:
		if c.groupID == "" {
			return &InputError{Field: at.field("groupId"), Msg: "required for group"}
		}
	}
	if c.userID == "" && c.anonymousID == "" {
		return &InputError{Field: at.field("userId"), Msg: "userId or anonymousId is required"}
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

// expectKind reads the next token, which must open a value of kind want.
func expectKind(dec *jsontext.Decoder, want jsontext.Kind, field, what string) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return jsonInputError(field, err)
	}
	if tok.Kind() != want {
		return &InputError{Field: field, Msg: "expected " + what}
	}
	return nil
}

// objectOrNil accepts a JSON object, or null/absent as nil; ok is false for
// any other JSON value.
func objectOrNil(raw jsontext.Value) (obj jsontext.Value, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	if raw[0] != '{' {
		return nil, false
	}
	return raw, true
}

// parseTime parses an ISO-8601 timestamp as SDKs send it; empty is zero.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an ISO-8601 timestamp", s)
	}
	return t, nil
}

// jsonInputError turns a decoding error into a message naming the field:
// field is where the decoder was (a batch item, say), and the error's JSON
// pointer says where inside it.
func jsonInputError(field string, err error) error {
	var semErr *json.SemanticError
	var synErr *jsontext.SyntacticError
	switch {
	case errors.As(err, &semErr):
		name := joinField(field, semErr.JSONPointer)
		var msg string
		switch {
		case semErr.Err != nil:
			msg = semErr.Err.Error()
		case semErr.JSONKind != 0 && semErr.GoType != nil:
			msg = fmt.Sprintf("expected %s, got %s", goTypeName(semErr.GoType.Kind().String()), kindName(semErr.JSONKind))
		default:
			msg = "malformed JSON: " + semErr.Error()
		}
		return &InputError{Field: name, Msg: msg}
	case errors.As(err, &synErr):
		return &InputError{Field: joinField(field, synErr.JSONPointer), Msg: fmt.Sprintf("malformed JSON at byte %d: %v", synErr.ByteOffset, synErr.Err)}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &InputError{Field: field, Msg: "malformed JSON: unexpected end of input"}
	}
	return &InputError{Field: field, Msg: "malformed JSON: " + err.Error()}
}

// joinField appends a JSON pointer ("/context/ip") to a field name
// ("batch[2]") as "batch[2].context.ip".
func joinField(field string, ptr jsontext.Pointer) string {
	var parts []string
	if field != "" {
		parts = append(parts, field)
	}
	for tok := range ptr.Tokens() {
		parts = append(parts, tok)
	}
	return strings.Join(parts, ".")
}

func goTypeName(kind string) string {
	if kind == "struct" || kind == "map" {
		return "an object"
	}
	return "a " + kind
}
