package channel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

// testCert returns a self-signed certificate for 127.0.0.1 and a pool that
// trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smtp.test"},
		DNSNames:              []string{"smtp.test"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

type received struct {
	From, To string
	TLS      bool
	Data     []byte
}

// smtpFake is a real SMTP server (emersion/go-smtp) on a loopback port
// that requires AUTH PLAIN after STARTTLS and records what it accepts.
// Recipients starting with "bounce" get 550 at RCPT, "busy" get 451.
type smtpFake struct {
	mu   sync.Mutex
	msgs []received
	addr string
}

type fakeSession struct {
	f      *smtpFake
	c      *smtp.Conn
	authed bool
	cur    received
}

func (s *fakeSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *fakeSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != "whisper" || password != "s3cret" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.authed = true
		return nil
	}), nil
}
func (s *fakeSession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.cur.From = from
	return nil
}
func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch {
	case strings.HasPrefix(to, "bounce"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	case strings.HasPrefix(to, "busy"):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}
	s.cur.To = to
	return nil
}
func (s *fakeSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, s.cur.TLS = s.c.TLSConnectionState()
	s.cur.Data = b
	s.f.mu.Lock()
	s.f.msgs = append(s.f.msgs, s.cur)
	s.f.mu.Unlock()
	return nil
}
func (s *fakeSession) Reset()        { s.cur = received{} }
func (s *fakeSession) Logout() error { return nil }

func newSMTPFake(t *testing.T, cert tls.Certificate, implicitTLS bool) *smtpFake {
	t.Helper()
	f := &smtpFake{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &fakeSession{f: f, c: c}, nil
	}))
	srv.Domain = "smtp.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	var l net.Listener
	var err error
	if implicitTLS {
		l, err = tls.Listen("tcp", "127.0.0.1:0", srv.TLSConfig)
		srv.AllowInsecureAuth = true // the listener itself is TLS
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func (f *smtpFake) messages() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.msgs...)
}

func emailMessage(id, to, subject, text, html, unsub string) Message {
	return Message{
		DeliveryID:  id,
		WorkspaceID: "ws1",
		UserID:      "u1",
		To:          to,
		Content: &contentv1.Message{Channel: contentv1.Channel_CHANNEL_EMAIL, Content: &contentv1.Content{
			Subject: subject, Text: text, Html: html,
		}},
		UnsubscribeURL: unsub,
	}
}

// parts reads the text/plain and text/html bodies of a received message.
func parts(t *testing.T, msg *mail.Message) map[string]string {
	t.Helper()
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	if mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q, want multipart/alternative", mt)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart() // decodes quoted-printable
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		out[pt] = string(b)
	}
	return out
}

func TestSMTPSendStartTLS(t *testing.T) {
	cert, pool := testCert(t)
	f := newSMTPFake(t, cert, false)
	s, err := NewSMTP(SMTPConfig{Addr: f.addr, Host: "smtp.test", Username: "whisper", Password: "s3cret",
		From: "Whisper <hi@whisper.test>", TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("A long line that quoted-printable must wrap. ", 10) + "\n.\n. dot-stuffed line"
	rc, err := s.Send(context.Background(), emailMessage("dlv-123", "Ann <ann@example.test>", "Héllo Ann",
		long, `<p>Hi <a href="https://x.test/?a=1&amp;b=2">there</a> – ünïcode</p>`, "https://t.test/t/u/tok"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Receipt{ProviderMessageID: "<dlv-123@whisper.test>"}, rc); diff != "" {
		t.Errorf("receipt (-want +got):\n%s", diff)
	}
	msgs := f.messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if !got.TLS || got.From != "hi@whisper.test" || got.To != "ann@example.test" {
		t.Errorf("envelope = TLS %v from %q to %q", got.TLS, got.From, got.To)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(got.Data)))
	if err != nil {
		t.Fatal(err)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{
		"Subject":               subject,
		"Message-ID":            msg.Header.Get("Message-ID"),
		"From":                  msg.Header.Get("From"),
		"To":                    msg.Header.Get("To"),
		"List-Unsubscribe":      msg.Header.Get("List-Unsubscribe"),
		"List-Unsubscribe-Post": msg.Header.Get("List-Unsubscribe-Post"),
	}
	want := map[string]string{
		"Subject":               "Héllo Ann",
		"Message-ID":            "<dlv-123@whisper.test>",
		"From":                  `"Whisper" <hi@whisper.test>`,
		"To":                    `"Ann" <ann@example.test>`,
		"List-Unsubscribe":      "<https://t.test/t/u/tok>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
	}
	if diff := cmp.Diff(want, headers); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	wantParts := map[string]string{
		"text/plain": strings.ReplaceAll(long, "\n", "\r\n"),
		"text/html":  `<p>Hi <a href="https://x.test/?a=1&amp;b=2">there</a> – ünïcode</p>`,
	}
	if diff := cmp.Diff(wantParts, parts(t, msg)); diff != "" {
		t.Errorf("parts (-want +got):\n%s", diff)
	}
}

func TestSMTPImplicitTLS(t *testing.T) {
	cert, pool := testCert(t)
	f := newSMTPFake(t, cert, true)
	s, err := NewSMTP(SMTPConfig{Addr: f.addr, Username: "whisper", Password: "s3cret", From: "hi@whisper.test",
		TLS: "tls", TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), emailMessage("d1", "bob@example.test", "s", "text only", "", "")); err != nil {
		t.Fatal(err)
	}
	msgs := f.messages()
	if len(msgs) != 1 || !msgs[0].TLS {
		t.Fatalf("messages = %+v, want one over TLS", msgs)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(msgs[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("List-Unsubscribe"); got != "" {
		t.Errorf("List-Unsubscribe = %q without an UnsubscribeURL", got)
	}
	if ct := msg.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestSMTPHeaderInjection(t *testing.T) {
	cert, pool := testCert(t)
	f := newSMTPFake(t, cert, false)
	s, err := NewSMTP(SMTPConfig{Addr: f.addr, Host: "smtp.test", Username: "whisper", Password: "s3cret",
		From: "hi@whisper.test", TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	evil := "Hi\r\nBcc: victim@example.test\r\n\r\ninjected body"
	if _, err := s.Send(context.Background(), emailMessage("d2", "ann@example.test", evil, "t", "<b>h</b>", "")); err != nil {
		t.Fatal(err)
	}
	msgs := f.messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages", len(msgs))
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(msgs[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	if bcc := msg.Header.Get("Bcc"); bcc != "" {
		t.Errorf("injected Bcc header %q", bcc)
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if subject != "Hi  Bcc: victim@example.test    injected body" {
		t.Errorf("Subject = %q", subject)
	}
	// A malicious unsubscribe URL is refused rather than written.
	_, err = s.Send(context.Background(), emailMessage("d3", "ann@example.test", "s", "t", "", "https://x.test/>\r\nBcc: v@x.test"))
	var ce *Error
	if !errors.As(err, &ce) || ce.Retryable || ce.Bounce {
		t.Errorf("evil UnsubscribeURL: err = %v, want a permanent *Error", err)
	}
}

func TestSMTPErrors(t *testing.T) {
	cert, pool := testCert(t)
	f := newSMTPFake(t, cert, false)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	cfg := SMTPConfig{Addr: f.addr, Host: "smtp.test", Username: "whisper", Password: "s3cret",
		From: "hi@whisper.test", TLSConfig: &tls.Config{RootCAs: pool}}
	type want struct {
		Retryable, Bounce, IsError bool
		Code                       string
	}
	for _, tc := range []struct {
		name string
		mod  func(*SMTPConfig)
		to   string
		want want
	}{
		{"bounce on RCPT 550", nil, "bounce@example.test", want{Bounce: true, IsError: true, Code: "550 5.1.1"}},
		{"RCPT 451 retryable", nil, "busy@example.test", want{Retryable: true, IsError: true, Code: "451 4.3.0"}},
		{"bad password permanent", func(c *SMTPConfig) { c.Password = "wrong" }, "ann@example.test", want{IsError: true, Code: "535 5.7.8"}},
		{"connection refused retryable", func(c *SMTPConfig) { c.Addr = closedAddr }, "ann@example.test", want{Retryable: true}},
		{"untrusted certificate", func(c *SMTPConfig) { c.TLSConfig = nil }, "ann@example.test", want{Retryable: true}},
		{"invalid recipient address", nil, "not an address", want{Bounce: true, IsError: true, Code: "invalid_address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.mod != nil {
				tc.mod(&c)
			}
			s, err := NewSMTP(c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Send(context.Background(), emailMessage("d", tc.to, "s", "t", "", ""))
			if err == nil {
				t.Fatal("Send succeeded")
			}
			var ce *Error
			got := want{Retryable: Retryable(err)}
			if errors.As(err, &ce) {
				got = want{Retryable: ce.Retryable, Bounce: ce.Bounce, IsError: true, Code: ce.Code}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("classification of %v (-want +got):\n%s", err, diff)
			}
		})
	}
	if n := len(f.messages()); n != 0 {
		t.Errorf("%d messages accepted, want 0", n)
	}
}

// TestSMTPTimeout: a server that accepts the connection but never greets
// must not hold Send beyond its Timeout.
func TestSMTPTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		<-done
		c.Close()
	}()
	s, err := NewSMTP(SMTPConfig{Addr: l.Addr().String(), From: "hi@whisper.test", TLS: "none", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Send(context.Background(), emailMessage("d", "ann@example.test", "s", "t", "", ""))
	if err == nil || !Retryable(err) {
		t.Errorf("err = %v, want a retryable timeout", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Send took %v with a 200ms timeout", el)
	}
}

func TestNewSMTPValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   SMTPConfig
		field string
	}{
		{"no port", SMTPConfig{Addr: "mail.test", From: "a@b.test"}, "Addr"},
		{"bad TLS", SMTPConfig{Addr: "mail.test:587", From: "a@b.test", TLS: "ssl"}, "TLS"},
		{"bad From", SMTPConfig{Addr: "mail.test:587", From: "nobody"}, "From"},
		{"negative timeout", SMTPConfig{Addr: "mail.test:587", From: "a@b.test", Timeout: -1}, "Timeout"},
		{"password without user", SMTPConfig{Addr: "mail.test:587", From: "a@b.test", Password: "x"}, "Password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSMTP(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("err = %v, want one naming %s", err, tc.field)
			}
		})
	}
	if _, err := NewSMTP(SMTPConfig{Addr: "mail.test:587", From: "a@b.test"}); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
