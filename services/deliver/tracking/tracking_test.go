package tracking

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/html"
)

const testBase = "http://127.0.0.1:8081/"

func TestTokenRoundTrip(t *testing.T) {
	key := []byte("k1")
	for _, c := range []claims{
		{Kind: kindOpen, WorkspaceID: "ws", DeliveryID: "d1", UserID: "u1"},
		{Kind: kindOpen},
		{Kind: kindClick, WorkspaceID: "ws", DeliveryID: "d1", UserID: "ü/ser?&", Target: "https://x.test/a?b=1&c=%20#f"},
		{Kind: kindUnsub, WorkspaceID: "ws", DeliveryID: "d1", UserID: "u1", Channel: "email", Topic: "newsletter"},
		{Kind: kindUnsub, WorkspaceID: strings.Repeat("w", 300), DeliveryID: "\x00\xff", UserID: "u"},
	} {
		tok := encodeToken(key, c)
		if strings.ContainsAny(tok, "+/=") {
			t.Errorf("token %q is not URL-safe", tok)
		}
		got, err := decodeToken([][]byte{key}, tok, c.Kind)
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
		for _, other := range []byte{kindOpen, kindClick, kindUnsub} {
			if other != c.Kind {
				if _, err := decodeToken([][]byte{key}, tok, other); !errors.Is(err, ErrInvalidToken) {
					t.Errorf("a %q token accepted as %q", c.Kind, other)
				}
			}
		}
	}
}

// TestTokenTamper: changing any byte of a token, or verifying under
// another key, is rejected.
func TestTokenTamper(t *testing.T) {
	key := []byte("k1")
	c := claims{Kind: kindClick, WorkspaceID: "ws", DeliveryID: "d1", UserID: "u1", Target: "https://good.test/"}
	raw, err := b64.DecodeString(encodeToken(key, c))
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		for _, bit := range []byte{1, 0x80} {
			mut := append([]byte(nil), raw...)
			mut[i] ^= bit
			if _, err := decodeToken([][]byte{key}, b64.EncodeToString(mut), kindClick); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("flipping bit %#x of byte %d was accepted", bit, i)
			}
		}
	}
	for _, bad := range []string{"", "a", "!!!", encodeToken([]byte("other"), c), encodeToken(key, c) + "A", strings.Repeat("A", maxTokenLen+4)} {
		if _, err := decodeToken([][]byte{key}, bad, kindClick); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("token %.40q accepted", bad)
		}
	}
}

func TestSignerRotation(t *testing.T) {
	old := NewSigner([]byte("old"), testBase)
	cur := NewSigner([]byte("new"), testBase).AcceptPrevious([]byte("old"))
	oldTok := strings.TrimPrefix(old.OpenPixelURL("ws", "d", "u"), "http://127.0.0.1:8081/t/o/")
	if _, err := decodeToken(cur.keys, oldTok, kindOpen); err != nil {
		t.Errorf("a token under the previous key: %v", err)
	}
	newTok := strings.TrimPrefix(cur.OpenPixelURL("ws", "d", "u"), "http://127.0.0.1:8081/t/o/")
	if _, err := decodeToken(old.keys, newTok, kindOpen); err == nil {
		t.Error("the old signer accepted a token under the new key")
	}
	if _, err := decodeToken(NewSigner([]byte("new"), testBase).keys, oldTok, kindOpen); err == nil {
		t.Error("a signer without AcceptPrevious accepted an old token")
	}
}

type recorder struct {
	mu  sync.Mutex
	got []Outcome
	err error
}

func (r *recorder) Publish(_ context.Context, o Outcome) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.got = append(r.got, o)
	return nil
}

func (r *recorder) outcomes() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Outcome(nil), r.got...)
}

func newTestServer(t *testing.T, p Publisher) (*Signer, *httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(nil)
	s := NewSigner([]byte("tracking-key"), srv.URL)
	srv.Config.Handler = NewHandler(s, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(srv.Close)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return s, srv, client
}

type reply struct {
	Status      int
	ContentType string
	Location    string
	Body        string
}

func do(t *testing.T, c *http.Client, method, u, body string) reply {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Location"), string(b)}
}

// tamper changes one character in the middle of a URL's token.
func tamper(u string) string {
	i := strings.LastIndexByte(u, '/') + 5
	ch := byte('A')
	if u[i] == 'A' {
		ch = 'B'
	}
	return u[:i] + string(ch) + u[i+1:]
}

func TestHandler(t *testing.T) {
	rec := &recorder{}
	s, _, c := newTestServer(t, rec)
	target := "https://shop.test/cart?id=7&utm=mail"

	got := do(t, c, "GET", s.OpenPixelURL("ws1", "d1", "u1"), "")
	if diff := cmp.Diff(reply{200, "image/gif", "", string(gif)}, got); diff != "" {
		t.Errorf("open (-want +got):\n%s", diff)
	}
	got = do(t, c, "GET", s.ClickURL("ws1", "d1", "u1", target), "")
	if diff := cmp.Diff(reply{Status: 302, Location: target}, got, cmpopts.IgnoreFields(reply{}, "ContentType", "Body")); diff != "" {
		t.Errorf("click (-want +got):\n%s", diff)
	}
	unsub := s.UnsubscribeURL("ws1", "d1", "u1", "email", "newsletter")
	page := do(t, c, "GET", unsub, "")
	if page.Status != 200 || !strings.Contains(page.Body, `<form method="post">`) || !strings.Contains(page.Body, "newsletter") {
		t.Errorf("unsubscribe page = %+v", page)
	}
	if n := len(rec.outcomes()); n != 2 {
		t.Errorf("after GET of the unsubscribe page: %d outcomes, want 2 (GET must not unsubscribe)", n)
	}
	// RFC 8058 one-click: the mail client POSTs this exact body.
	if got := do(t, c, "POST", unsub, "List-Unsubscribe=One-Click"); got.Status != 200 {
		t.Errorf("one-click POST = %+v", got)
	}

	// Tampered, truncated, or wrong-kind tokens are refused and publish nothing.
	for _, u := range []string{
		tamper(s.ClickURL("ws1", "d1", "u1", target)),
		s.ClickURL("ws1", "d1", "u1", target)[:len(s.ClickURL("ws1", "d1", "u1", target))-3],
		strings.Replace(s.OpenPixelURL("ws1", "d1", "u1"), "/t/o/", "/t/c/", 1),
		strings.Replace(s.ClickURL("ws1", "d1", "u1", "https://evil.test"), "/t/c/", "/t/o/", 1),
		tamper(s.OpenPixelURL("ws1", "d1", "u1")),
	} {
		if got := do(t, c, "GET", u, ""); got.Status != 400 || got.Location != "" {
			t.Errorf("GET %s = %+v, want 400 without a redirect", u, got)
		}
	}
	if got := do(t, c, "POST", tamper(unsub), "List-Unsubscribe=One-Click"); got.Status != 400 {
		t.Errorf("tampered unsubscribe POST = %d", got.Status)
	}
	// Only http(s) targets are redirected to, even when signed.
	if got := do(t, c, "GET", s.ClickURL("ws1", "d1", "u1", "javascript:alert(1)"), ""); got.Status != 400 {
		t.Errorf("signed javascript: target = %+v", got)
	}

	// HEAD (link scanners) is answered but not counted.
	if got := do(t, c, "HEAD", s.ClickURL("ws1", "d1", "u1", target), ""); got.Status != 302 || got.Location != target {
		t.Errorf("HEAD click = %+v", got)
	}
	if got := do(t, c, "HEAD", s.OpenPixelURL("ws1", "d1", "u1"), ""); got.Status != 200 {
		t.Errorf("HEAD open = %+v", got)
	}

	want := []Outcome{
		{Kind: "opened", WorkspaceID: "ws1", DeliveryID: "d1", UserID: "u1", Channel: "email"},
		{Kind: "clicked", WorkspaceID: "ws1", DeliveryID: "d1", UserID: "u1", Channel: "email", URL: target},
		{Kind: "unsubscribed", WorkspaceID: "ws1", DeliveryID: "d1", UserID: "u1", Channel: "email", Topic: "newsletter"},
	}
	outs := rec.outcomes()
	if diff := cmp.Diff(want, outs, cmpopts.IgnoreFields(Outcome{}, "At")); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	for _, o := range outs {
		if o.At.IsZero() {
			t.Errorf("outcome %s without At", o.Kind)
		}
	}
}

// TestHandlerPublishFailure: opens and clicks are still served when the
// outcome cannot be published; an unsubscribe is not confirmed.
func TestHandlerPublishFailure(t *testing.T) {
	s, _, c := newTestServer(t, &recorder{err: errors.New("kafka down")})
	if got := do(t, c, "GET", s.OpenPixelURL("ws", "d", "u"), ""); got.Status != 200 || got.Body != string(gif) {
		t.Errorf("open = %+v", got)
	}
	if got := do(t, c, "GET", s.ClickURL("ws", "d", "u", "https://x.test/"), ""); got.Status != 302 {
		t.Errorf("click = %+v", got)
	}
	if got := do(t, c, "POST", s.UnsubscribeURL("ws", "d", "u", "email", ""), "List-Unsubscribe=One-Click"); got.Status != 503 {
		t.Errorf("unsubscribe = %d, want 503", got.Status)
	}
}

func TestRewriteHTML(t *testing.T) {
	s := NewSigner([]byte("k"), testBase)
	click := func(target string) string { return s.ClickURL("ws", "d", "u", target) }
	pixel := `<img src="` + s.OpenPixelURL("ws", "d", "u") + `" width="1" height="1" alt="" style="border:0;width:1px;height:1px">`
	for _, tc := range []struct{ name, in, want string }{
		{"links, pixel before body end",
			`<html><body><p>Hi <a href="https://shop.test/a?b=1&amp;c=2" class="btn">buy</a></p></body></html>`,
			`<html><body><p>Hi <a href="` + click("https://shop.test/a?b=1&c=2") + `" class="btn">buy</a></p>` + pixel + `</body></html>`},
		{"non-http links untouched",
			`<a href="mailto:a@b.test">m</a><a href="tel:+15550100">t</a><a href="#top">t</a><a href="/rel">r</a><a name="x">n</a><a href='ftp://f.test/'>f</a>`,
			`<a href="mailto:a@b.test">m</a><a href="tel:+15550100">t</a><a href="#top">t</a><a href="/rel">r</a><a name="x">n</a><a href='ftp://f.test/'>f</a>` + pixel},
		{"uppercase tag and scheme, unquoted",
			`<A HREF=HTTP://X.TEST/Y>x</A></BODY>`,
			`<a href="` + click("HTTP://X.TEST/Y") + `">x</A>` + pixel + `</BODY>`},
		{"links in text, comments, scripts and other tags untouched",
			`<!-- <a href="https://c.test/"> --><script>var a='<a href="https://s.test/">'</script><img src="https://i.test/p.png"><link href="https://l.test/">https://t.test/`,
			`<!-- <a href="https://c.test/"> --><script>var a='<a href="https://s.test/">'</script><img src="https://i.test/p.png"><link href="https://l.test/">https://t.test/` + pixel},
		{"empty", ``, pixel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.RewriteHTML(tc.in, "ws", "d", "u")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// links returns the href of every <a> in doc, in order.
func links(doc string) []string {
	var out []string
	z := html.NewTokenizer(strings.NewReader(doc))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return out
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		if name, hasAttr := z.TagName(); string(name) == "a" && hasAttr {
			for more := true; more; {
				var k, v []byte
				k, v, more = z.TagAttr()
				if string(k) == "href" {
					out = append(out, string(v))
				}
			}
		}
	}
}

// checkRewrite asserts the property RewriteHTML promises: the output's
// links are the input's, with exactly the http(s) ones replaced by click
// URLs that decode to the original target.
func checkRewrite(t *testing.T, s *Signer, in string) {
	t.Helper()
	out, err := s.RewriteHTML(in, "ws", "d", "u")
	if err != nil {
		return // a tokenizer error is reported, not a panic
	}
	prefix := s.baseURL + "/t/c/"
	var got []string
	for _, h := range links(out) {
		if tok, ok := strings.CutPrefix(h, prefix); ok {
			c, err := decodeToken(s.keys, tok, kindClick)
			if err != nil {
				t.Fatalf("output link %q does not verify: %v", h, err)
			}
			h = c.Target
		}
		got = append(got, h)
	}
	want := links(in)
	for i, h := range want {
		if trackable(h) {
			want[i] = strings.TrimSpace(h)
		}
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("links of %q (-in +out):\n%s", in, diff)
	}
	if !strings.Contains(out, s.OpenPixelURL("ws", "d", "u")) {
		t.Fatalf("no pixel in %q", out)
	}
}

func FuzzRewriteHTML(f *testing.F) {
	for _, seed := range []string{
		`<html><body><a href="https://x.test/">x</a><a href="mailto:a@b.test">m</a></body></html>`,
		`<a href=http://x.test/?a=1&b=2 href="tel:1">`,
		`<a href="#a"><a href=" https://x.test/ ">`,
		`<script><a href="https://x.test/"></script><textarea><a href="http://y.test/"></textarea>`,
		`<a href="https://x.test/" /><p>unclosed <a href='javascript:x()'`,
		"<a\x00 href=\"https://x.test/\x00\">",
	} {
		f.Add(seed)
	}
	s := NewSigner([]byte("k"), testBase)
	f.Fuzz(func(t *testing.T, in string) {
		checkRewrite(t, s, in)
	})
}

func FuzzDecodeToken(f *testing.F) {
	key := []byte("k")
	f.Add(encodeToken(key, claims{Kind: kindOpen, WorkspaceID: "ws", DeliveryID: "d", UserID: "u"}))
	f.Add(encodeToken(key, claims{Kind: kindClick, WorkspaceID: "ws", DeliveryID: "d", UserID: "u", Target: "https://x.test/"}))
	f.Add(encodeToken(key, claims{Kind: kindUnsub, WorkspaceID: "ws", DeliveryID: "d", UserID: "u", Channel: "email", Topic: "t"}))
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, tok string) {
		for _, kind := range []byte{kindOpen, kindClick, kindUnsub} {
			c, err := decodeToken([][]byte{key}, tok, kind)
			if err != nil {
				if !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("error %v does not wrap ErrInvalidToken", err)
				}
				continue
			}
			// Anything accepted is canonical: it re-encodes to itself.
			if again := encodeToken(key, c); again != tok {
				t.Fatalf("accepted %q, which re-encodes as %q", tok, again)
			}
		}
	})
}
