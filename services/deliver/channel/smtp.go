package channel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPConfig configures the SMTP email adapter.
type SMTPConfig struct {
	// Addr is the server's host:port.
	Addr string
	// Host is the server name checked against its TLS certificate; empty
	// means the host part of Addr.
	Host string
	// Username and Password enable AUTH PLAIN when Username is set; use
	// them only with TLS "starttls" or "tls", which protect the password.
	Username string
	Password string
	// From is the envelope sender and From header, e.g. "Whisper <hi@example.com>".
	From string
	// TLS is "starttls" (default when empty), "tls" (implicit TLS, port 465)
	// or "none".
	TLS string
	// TLSConfig, if set, is used for the TLS handshake (RootCAs in tests);
	// its ServerName is overridden by Host.
	TLSConfig *tls.Config
	// Timeout bounds one whole send (dial to QUIT); 0 means 30s.
	Timeout time.Duration
}

// SMTP sends email through one SMTP server, one connection per message.
type SMTP struct {
	cfg    SMTPConfig
	from   *mail.Address
	domain string
}

// NewSMTP validates cfg and returns the adapter.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("smtp: Addr %q must be host:port", cfg.Addr)
	}
	if cfg.Host == "" {
		cfg.Host = host
	}
	switch cfg.TLS {
	case "":
		cfg.TLS = "starttls"
	case "starttls", "tls", "none":
	default:
		return nil, fmt.Errorf("smtp: TLS %q must be starttls, tls or none", cfg.TLS)
	}
	if cfg.Username == "" && cfg.Password != "" {
		return nil, errors.New("smtp: Password is set without Username")
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("smtp: From %q: %w", cfg.From, err)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("smtp: Timeout %v must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	domain := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	return &SMTP{cfg: cfg, from: from, domain: domain}, nil
}

// Send delivers m over a fresh connection. 4xx replies and connection
// failures are retryable; a 5xx reply to RCPT is a bounce; any other 5xx
// is a permanent failure.
func (s *SMTP) Send(ctx context.Context, m Message) (Receipt, error) {
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return Receipt{}, &Error{Bounce: true, Code: "invalid_address", Err: fmt.Errorf("smtp: To %q: %w", m.To, err)}
	}
	msgID := s.messageID(m.DeliveryID)
	raw, err := s.compose(m, to, msgID)
	if err != nil {
		return Receipt{}, &Error{Code: "invalid_message", Err: err}
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return Receipt{}, fmt.Errorf("smtp: dial %s: %w", s.cfg.Addr, err)
	}
	// The SMTP client has no context: a deadline on the connection bounds
	// every read and write, and cancellation moves it to now.
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	c, err := s.client(conn)
	if err != nil {
		_ = conn.Close()
		return Receipt{}, s.classify(ctx, "connect", err)
	}
	defer c.Close()
	if s.cfg.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", s.cfg.Username, s.cfg.Password)); err != nil {
			return Receipt{}, s.classify(ctx, "auth", err)
		}
	}
	if err := c.Mail(s.from.Address, nil); err != nil {
		return Receipt{}, s.classify(ctx, "mail", err)
	}
	if err := c.Rcpt(to.Address, nil); err != nil {
		return Receipt{}, s.classify(ctx, "rcpt", err)
	}
	w, err := c.Data()
	if err != nil {
		return Receipt{}, s.classify(ctx, "data", err)
	}
	if _, err := w.Write(raw); err != nil {
		_ = w.Close()
		return Receipt{}, s.classify(ctx, "data", err)
	}
	if err := w.Close(); err != nil {
		return Receipt{}, s.classify(ctx, "data", err)
	}
	// The message is accepted once DATA is acknowledged; a failed QUIT
	// must not make deliver send it again.
	_ = c.Quit()
	return Receipt{ProviderMessageID: msgID}, nil
}

func (s *SMTP) client(conn net.Conn) (*smtp.Client, error) {
	tc := &tls.Config{}
	if s.cfg.TLSConfig != nil {
		tc = s.cfg.TLSConfig.Clone()
	}
	tc.ServerName = s.cfg.Host
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	switch s.cfg.TLS {
	case "tls":
		return smtp.NewClient(tls.Client(conn, tc)), nil
	case "none":
		return smtp.NewClient(conn), nil
	default:
		return smtp.NewClientStartTLS(conn, tc)
	}
}

// classify maps an SMTP failure in stage to an *Error, or returns a plain
// (retryable) error for transport failures.
func (s *SMTP) classify(ctx context.Context, stage string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(ctxErr, context.Canceled) {
		return fmt.Errorf("smtp %s: %w: %w", stage, ctxErr, err)
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return fmt.Errorf("smtp %s: %w", stage, err)
	}
	code := strconv.Itoa(se.Code)
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		code = fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	e := &Error{Code: code, Err: fmt.Errorf("smtp %s: %w", stage, err)}
	switch {
	case se.Code >= 400 && se.Code < 500:
		e.Retryable = true
	case se.Code >= 500 && stage == "rcpt":
		e.Bounce = true
	}
	return e
}

// messageID derives the Message-ID from the delivery id so every retry of
// one delivery carries the same id.
func (s *SMTP) messageID(deliveryID string) string {
	local := deliveryID
	for _, r := range deliveryID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			sum := sha256.Sum256([]byte(deliveryID))
			local = hex.EncodeToString(sum[:16])
			break
		}
	}
	if local == "" || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		sum := sha256.Sum256([]byte(deliveryID))
		local = hex.EncodeToString(sum[:16])
	}
	return "<" + local + "@" + s.domain + ">"
}

// headerText makes a rendered value safe for one header line: line breaks
// become spaces (so no header can be injected), and non-ASCII text is
// RFC 2047 encoded.
func headerText(v string) string {
	v = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, v)
	return mime.QEncoding.Encode("utf-8", v)
}

func (s *SMTP) compose(m Message, to *mail.Address, msgID string) ([]byte, error) {
	var subject, text, html string
	if m.Content != nil && m.Content.GetContent() != nil {
		c := m.Content.GetContent()
		subject, text, html = c.GetSubject(), c.GetText(), c.GetHtml()
	}
	if text == "" && html == "" {
		return nil, errors.New("smtp: the message has neither text nor html")
	}
	var b bytes.Buffer
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", s.from.String())
	h("To", to.String())
	h("Subject", headerText(subject))
	h("Date", time.Now().UTC().Format(time.RFC1123Z))
	h("Message-ID", msgID)
	h("MIME-Version", "1.0")
	if m.UnsubscribeURL != "" {
		if strings.ContainsAny(m.UnsubscribeURL, "\r\n<> ") || !strings.HasPrefix(m.UnsubscribeURL, "https://") && !strings.HasPrefix(m.UnsubscribeURL, "http://") {
			return nil, fmt.Errorf("smtp: UnsubscribeURL %q is not a plain http(s) URL", m.UnsubscribeURL)
		}
		h("List-Unsubscribe", "<"+m.UnsubscribeURL+">")
		h("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
	}

	part := func(w *bytes.Buffer, body string) error {
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(body)); err != nil {
			return err
		}
		return qp.Close()
	}
	switch {
	case text != "" && html != "":
		mw := multipart.NewWriter(&b)
		h("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
		b.WriteString("\r\n")
		for _, p := range []struct{ typ, body string }{{"text/plain", text}, {"text/html", html}} {
			pw, err := mw.CreatePart(textproto.MIMEHeader{
				"Content-Type":              {p.typ + "; charset=utf-8"},
				"Content-Transfer-Encoding": {"quoted-printable"},
			})
			if err != nil {
				return nil, err
			}
			var pb bytes.Buffer
			if err := part(&pb, p.body); err != nil {
				return nil, err
			}
			if _, err := pw.Write(pb.Bytes()); err != nil {
				return nil, err
			}
		}
		if err := mw.Close(); err != nil {
			return nil, err
		}
	default:
		typ, body := "text/plain", text
		if html != "" {
			typ, body = "text/html", html
		}
		h("Content-Type", typ+"; charset=utf-8")
		h("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		if err := part(&b, body); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}
