package tracking

import (
	"context"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Publisher receives the outcomes the handler observes; deliver core
// implements it by producing to whisper.events.
type Publisher interface {
	Publish(ctx context.Context, e Outcome) error
}

// Outcome is one tracked interaction.
type Outcome struct {
	Kind        string // "opened", "clicked", "unsubscribed"
	WorkspaceID string
	DeliveryID  string
	UserID      string
	Channel     string // "email" for opens and clicks; the unsubscribed channel otherwise
	Topic       string // unsubscribe only
	URL         string // clicked target
	At          time.Time
}

// Outcome kinds.
const (
	KindOpened       = "opened"
	KindClicked      = "clicked"
	KindUnsubscribed = "unsubscribed"
)

// publishTimeout bounds a publish; it runs detached from the request so a
// client closing the connection early does not drop the outcome.
const publishTimeout = 5 * time.Second

// gif is a 1x1 transparent GIF.
var gif = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

type handler struct {
	s      *Signer
	p      Publisher
	logger *slog.Logger
	now    func() time.Time
}

// NewHandler serves the tracking routes described in the package doc.
func NewHandler(s *Signer, p Publisher, logger *slog.Logger) http.Handler {
	h := &handler{s: s, p: p, logger: logger, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /t/o/{token}", h.open)
	mux.HandleFunc("GET /t/c/{token}", h.click)
	mux.HandleFunc("GET /t/u/{token}", h.unsubscribePage)
	mux.HandleFunc("POST /t/u/{token}", h.unsubscribe)
	return mux
}

func (h *handler) publish(r *http.Request, o Outcome) error {
	// HEAD is what link checkers and scanners send; it is answered the
	// same way but is not a person opening or clicking.
	if r.Method == http.MethodHead {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), publishTimeout)
	defer cancel()
	o.At = h.now().UTC()
	return h.p.Publish(ctx, o)
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store, no-cache, must-revalidate, private")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

func (h *handler) open(w http.ResponseWriter, r *http.Request) {
	c, err := decodeToken(h.s.keys, r.PathValue("token"), kindOpen)
	if err != nil {
		http.Error(w, "invalid tracking link", http.StatusBadRequest)
		return
	}
	if err := h.publish(r, Outcome{Kind: KindOpened, WorkspaceID: c.WorkspaceID, DeliveryID: c.DeliveryID, UserID: c.UserID, Channel: "email"}); err != nil {
		h.logger.WarnContext(r.Context(), "tracking: publishing an open failed", "delivery_id", c.DeliveryID, "err", err)
	}
	noStore(w)
	w.Header().Set("Content-Type", "image/gif")
	_, _ = w.Write(gif)
}

func (h *handler) click(w http.ResponseWriter, r *http.Request) {
	c, err := decodeToken(h.s.keys, r.PathValue("token"), kindClick)
	if err != nil {
		http.Error(w, "invalid tracking link", http.StatusBadRequest)
		return
	}
	// The target was signed by us, but only http(s) targets are ever
	// redirected to, whatever a future signer bug might sign.
	u, err := url.Parse(c.Target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		http.Error(w, "invalid tracking link", http.StatusBadRequest)
		return
	}
	if err := h.publish(r, Outcome{Kind: KindClicked, WorkspaceID: c.WorkspaceID, DeliveryID: c.DeliveryID, UserID: c.UserID, Channel: "email", URL: c.Target}); err != nil {
		h.logger.WarnContext(r.Context(), "tracking: publishing a click failed", "delivery_id", c.DeliveryID, "err", err)
	}
	noStore(w)
	http.Redirect(w, r, u.String(), http.StatusFound)
}

var page = template.Must(template.New("unsubscribe").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{{.Title}}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em">
<h1>{{.Title}}</h1><p>{{.Text}}</p>
{{if .Form}}<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>{{end}}
</body></html>
`))

type pageData struct {
	Title, Text string
	Form        bool
}

func (h *handler) render(w http.ResponseWriter, status int, d pageData) {
	noStore(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_ = page.Execute(w, d)
}

func topicText(c claims) string {
	what := "these messages"
	if c.Topic != "" {
		what = "“" + c.Topic + "”"
	}
	if c.Channel != "" {
		what += " by " + strings.ReplaceAll(c.Channel, "_", " ")
	}
	return what
}

func (h *handler) unsubscribePage(w http.ResponseWriter, r *http.Request) {
	c, err := decodeToken(h.s.keys, r.PathValue("token"), kindUnsub)
	if err != nil {
		h.render(w, http.StatusBadRequest, pageData{Title: "Invalid link", Text: "This unsubscribe link is not valid."})
		return
	}
	h.render(w, http.StatusOK, pageData{Title: "Unsubscribe", Text: "Stop receiving " + topicText(c) + "?", Form: true})
}

func (h *handler) unsubscribe(w http.ResponseWriter, r *http.Request) {
	c, err := decodeToken(h.s.keys, r.PathValue("token"), kindUnsub)
	if err != nil {
		h.render(w, http.StatusBadRequest, pageData{Title: "Invalid link", Text: "This unsubscribe link is not valid."})
		return
	}
	o := Outcome{Kind: KindUnsubscribed, WorkspaceID: c.WorkspaceID, DeliveryID: c.DeliveryID, UserID: c.UserID, Channel: c.Channel, Topic: c.Topic}
	if err := h.publish(r, o); err != nil {
		h.logger.ErrorContext(r.Context(), "tracking: publishing an unsubscribe failed", "delivery_id", c.DeliveryID, "err", err)
		h.render(w, http.StatusServiceUnavailable, pageData{Title: "Please try again", Text: "We could not record your request just now.", Form: true})
		return
	}
	h.render(w, http.StatusOK, pageData{Title: "Unsubscribed", Text: "You will no longer receive " + topicText(c) + "."})
}
