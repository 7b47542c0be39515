package channel

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// WebhookConfig configures the webhook adapter.
type WebhookConfig struct {
	// Secret is the HMAC-SHA256 key shared with receivers; required.
	Secret []byte
	// AllowPrivate permits destinations in loopback, link-local, private,
	// unspecified, multicast and other non-public ranges. Off in production:
	// it is what stops a webhook URL from reaching internal services.
	AllowPrivate bool
	// Timeout bounds one whole request including reading the reply; 0
	// means 10s.
	Timeout time.Duration
	// Client is an optional base client; its Transport, if set, must be an
	// *http.Transport, which is cloned and given the guarded dialer. Its
	// redirect policy is replaced: redirects are never followed.
	Client *http.Client
}

// Webhook POSTs signed JSON to the URL in Message.To.
type Webhook struct {
	secret []byte
	client *http.Client
	now    func() time.Time
}

// ErrForbiddenAddress is returned (wrapped) when a webhook destination
// resolves to an address outside the public internet and AllowPrivate is
// off.
var ErrForbiddenAddress = errors.New("destination address is not public")

// maxReplyBytes bounds how much of a receiver's reply is read: only the
// status matters, the rest is read so the connection can be reused.
const maxReplyBytes = 64 << 10

// NewWebhook validates cfg and returns the adapter.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("webhook: Secret is required")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("webhook: Timeout %v must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	var client http.Client
	var tr *http.Transport
	if cfg.Client != nil {
		client = *cfg.Client
		switch t := cfg.Client.Transport.(type) {
		case nil:
		case *http.Transport:
			tr = t.Clone()
		default:
			return nil, fmt.Errorf("webhook: Client.Transport must be an *http.Transport, not %T", cfg.Client.Transport)
		}
	}
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout}
	if !cfg.AllowPrivate {
		dialer.Control = guardDial
		// A proxy would make the dialed address the proxy's, not the
		// destination's: the guard only means something without one.
		tr.Proxy = nil
	}
	tr.DialContext = dialer.DialContext
	// Many deliveries go to the same few receivers: keep enough idle
	// connections per host that concurrent sends reuse them instead of
	// dialing (and TLS handshaking) each time.
	if tr.MaxIdleConnsPerHost < 64 {
		tr.MaxIdleConnsPerHost = 64
	}
	if tr.MaxIdleConns != 0 && tr.MaxIdleConns < 256 {
		tr.MaxIdleConns = 256
	}
	tr.DialTLSContext = nil
	tr.ResponseHeaderTimeout = cfg.Timeout
	client.Transport = tr
	client.Timeout = cfg.Timeout
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Webhook{secret: append([]byte(nil), cfg.Secret...), client: &client, now: time.Now}, nil
}

// guardDial runs after name resolution, on the address about to be
// connected to, so neither a private IP literal nor a public name that
// resolves (or rebinds) to a private address gets through.
func guardDial(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrForbiddenAddress, address)
	}
	if !PublicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
	}
	return nil
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: reaches IPv4 targets
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("100::/64"),        // discard
}

// PublicAddr reports whether a is an address a webhook may reach without
// AllowPrivate: not loopback, link-local, private (RFC 1918, ULA),
// unspecified, multicast or another special-purpose range. IPv4-mapped
// IPv6 addresses are judged as the IPv4 address they carry.
func PublicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsPrivate() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// Send POSTs m.Content.Body to m.To, signed as the package doc describes.
func (w *Webhook) Send(ctx context.Context, m Message) (Receipt, error) {
	u, err := url.Parse(m.To)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Receipt{}, &Error{Code: "invalid_url", Err: fmt.Errorf("webhook: To %q is not an http(s) URL", m.To)}
	}
	body := []byte(m.Content.GetContent().GetBody())
	if !json.Valid(body) {
		return Receipt{}, &Error{Code: "invalid_body", Err: errors.New("webhook: the rendered body is not valid JSON")}
	}
	ts := strconv.FormatInt(w.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Receipt{}, &Error{Code: "invalid_url", Err: fmt.Errorf("webhook: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Whisper-Webhook/1")
	req.Header.Set("Whisper-Delivery-Id", m.DeliveryID)
	// The same key under the name generic idempotency middleware looks
	// for (IETF draft-ietf-httpapi-idempotency-key-header).
	req.Header.Set("Idempotency-Key", strconv.Quote(m.DeliveryID))
	req.Header.Set("Whisper-Timestamp", ts)
	req.Header.Set("Whisper-Signature", "v1="+sign(w.secret, ts, body))
	resp, err := w.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenAddress) {
			return Receipt{}, &Error{Code: "forbidden_address", Err: fmt.Errorf("webhook: %w", err)}
		}
		return Receipt{}, fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxReplyBytes))
	return Receipt{}, httpStatusError("webhook", resp)
}

// httpStatusError classifies a reply status shared by the HTTP adapters:
// nil for 2xx; 408, 429 and 5xx retryable (honouring Retry-After); the
// rest permanent.
func httpStatusError(provider string, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := &Error{Code: "http_" + strconv.Itoa(resp.StatusCode), Err: fmt.Errorf("%s: status %s", provider, resp.Status)}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		e.Retryable = true
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		e.Err = fmt.Errorf("%s: status %s: redirects are not followed", provider, resp.Status)
	}
	return e
}

// retryAfter parses a Retry-After value in seconds or as an HTTP date;
// 0 if absent or unparseable.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > 86400 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func sign(secret []byte, ts string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature checks a webhook request's Whisper-Timestamp and
// Whisper-Signature headers against the raw body: the timestamp must be
// within tolerance of now and one v1 signature must match in constant
// time.
func VerifySignature(secret []byte, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts := header.Get("Whisper-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook signature: Whisper-Timestamp %q is not unix seconds", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook signature: timestamp is %v away from now, beyond the tolerance of %v", d.Round(time.Second), tolerance)
	}
	want, _ := hex.DecodeString(sign(secret, ts, body))
	sigs := header.Get("Whisper-Signature")
	if sigs == "" {
		return errors.New("webhook signature: Whisper-Signature is missing")
	}
	for _, s := range strings.Split(sigs, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(s), "v1=")
		if !ok {
			continue
		}
		got, err := hex.DecodeString(v)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("webhook signature: no v1 signature matches")
}
