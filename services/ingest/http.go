package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
)

// Routes returns the Segment-compatible HTTP API: POST /v1/<call> for each
// call type, /v1/batch and its alias /v1/import, keyed by ServeMux pattern.
// Browsers post from other origins, so every route also answers CORS
// preflight requests.
func (s *Service) Routes() map[string]http.Handler {
	routes := map[string]http.Handler{}
	for name, typ := range callTypes {
		routes["/v1/"+name] = s.segmentHandler(typ)
	}
	routes["/v1/batch"] = s.segmentHandler(eventv1.EventType_EVENT_TYPE_UNSPECIFIED)
	routes["/v1/import"] = routes["/v1/batch"]
	return routes
}

// bodyPool recycles request buffers: decoded calls point into the body only
// until their records are marshalled.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// segmentHandler serves one route; UNSPECIFIED means a batch.
func (s *Service) segmentHandler(typ eventv1.EventType) http.Handler {
	limit := MaxEventBytes
	if typ == eventv1.EventType_EVENT_TYPE_UNSPECIFIED {
		limit = MaxBatchBytes
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setCORS(w.Header())
		switch r.Method {
		case http.MethodOptions:
			w.WriteHeader(http.StatusNoContent)
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", "POST, OPTIONS")
			s.fail(w, http.StatusMethodNotAllowed, "", "use POST")
			return
		}
		ctx := r.Context()

		// Authenticate before reading the body when the key is in the
		// header, so a flood with a bad key costs no parsing.
		headerKey, _, hasHeaderKey := r.BasicAuth()
		var ws string
		if hasHeaderKey && headerKey != "" {
			var err error
			if ws, err = s.keys.ResolveWriteKey(ctx, headerKey); err != nil {
				s.fail(w, http.StatusUnauthorized, reasonUnauthorized, "unknown or revoked write key")
				return
			}
		}

		buf := bodyPool.Get().(*bytes.Buffer)
		buf.Reset()
		defer bodyPool.Put(buf)
		if err := readBody(buf, r, limit); err != nil {
			var tooLarge *TooLargeError
			if errors.As(err, &tooLarge) {
				s.fail(w, http.StatusRequestEntityTooLarge, reasonTooLarge, err.Error())
				return
			}
			s.fail(w, http.StatusBadRequest, reasonMalformed, err.Error())
			return
		}

		var req *request
		var err error
		if typ == eventv1.EventType_EVENT_TYPE_UNSPECIFIED {
			req, err = decodeBatch(buf.Bytes())
		} else {
			req, err = decodeSingle(buf.Bytes(), typ)
		}
		if err != nil {
			s.failInput(w, err)
			return
		}
		if ws == "" {
			if req.writeKey == "" {
				s.fail(w, http.StatusUnauthorized, reasonUnauthorized, "missing write key: send it as the Basic-auth user name or as writeKey in the body")
				return
			}
			if ws, err = s.keys.ResolveWriteKey(ctx, req.writeKey); err != nil {
				s.fail(w, http.StatusUnauthorized, reasonUnauthorized, "unknown or revoked write key")
				return
			}
		}
		if _, err := s.accept(ctx, "segment", ws, req); err != nil {
			if errors.Is(err, ErrUnavailable) {
				w.Header().Set("Retry-After", "1")
				s.fail(w, http.StatusServiceUnavailable, reasonUnavailable, "events not stored, retry later: "+err.Error())
				return
			}
			s.logger.ErrorContext(ctx, "accept events", "err", err)
			s.fail(w, http.StatusInternalServerError, reasonUnavailable, "internal error")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"success":true}`))
	})
}

func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding")
	h.Set("Access-Control-Max-Age", "86400")
}

// readBody reads the (possibly gzip-encoded) body into buf, refusing more
// than limit bytes after decompression.
func readBody(buf *bytes.Buffer, r *http.Request, limit int) error {
	var body io.Reader = r.Body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return &InputError{Msg: "body is not valid gzip: " + err.Error()}
		}
		defer zr.Close()
		body = zr
	default:
		return &InputError{Msg: "unsupported Content-Encoding " + enc + ": send identity or gzip"}
	}
	n, err := buf.ReadFrom(io.LimitReader(body, int64(limit)+1))
	if err != nil {
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
			return &InputError{Msg: "body is not valid gzip: " + err.Error()}
		}
		return &InputError{Msg: "reading body: " + err.Error()}
	}
	if n > int64(limit) {
		what := "event"
		if limit == MaxBatchBytes {
			what = "batch"
		}
		return &TooLargeError{What: what, Limit: limit}
	}
	return nil
}

func (s *Service) failInput(w http.ResponseWriter, err error) {
	var tooLarge *TooLargeError
	var input *InputError
	switch {
	case errors.As(err, &tooLarge):
		s.fail(w, http.StatusRequestEntityTooLarge, reasonTooLarge, err.Error())
	case errors.As(err, &input) && strings.HasPrefix(input.Msg, "malformed"):
		s.fail(w, http.StatusBadRequest, reasonMalformed, err.Error())
	default:
		s.fail(w, http.StatusBadRequest, reasonInvalid, err.Error())
	}
}

// fail writes a JSON error body; reason, when set, is counted.
func (s *Service) fail(w http.ResponseWriter, status int, reason, msg string) {
	if reason != "" {
		s.metrics.rejected.WithLabelValues("segment", reason).Inc()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Success bool   `json:"success"`
		Error   string `json:"error"`
	}{false, msg})
}
