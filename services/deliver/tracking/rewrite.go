package tracking

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// RewriteHTML wraps the href of every <a> whose target is an http(s) URL
// in a ClickURL and adds the open pixel before </body> (or at the end when
// there is none). Everything else (mailto:, tel:, #anchors, relative
// links, other tags, text, comments, scripts) is copied byte for byte: the
// HTML tokenizer finds the tags, so a link-like string in text or in an
// attribute of another tag is never touched.
func (s *Signer) RewriteHTML(src, ws, deliveryID, userID string) (string, error) {
	pixel := `<img src="` + html.EscapeString(s.OpenPixelURL(ws, deliveryID, userID)) +
		`" width="1" height="1" alt="" style="border:0;width:1px;height:1px">`
	z := html.NewTokenizer(strings.NewReader(src))
	var b strings.Builder
	b.Grow(len(src) + len(pixel) + 256)
	inserted := false
	for {
		tt := z.Next()
		// Raw is copied before TagName/TagAttr are called on the token.
		raw := string(z.Raw())
		switch tt {
		case html.ErrorToken:
			if err := z.Err(); !errors.Is(err, io.EOF) {
				return "", fmt.Errorf("tracking: rewriting html: %w", err)
			}
			// The pixel goes before any unterminated tail (say "<a href=x"
			// cut short): after it, the tail would swallow the pixel as
			// attributes of a new tag.
			if !inserted {
				b.WriteString(pixel)
			}
			b.WriteString(raw)
			return b.String(), nil
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			if string(name) != "a" || !hasAttr {
				b.WriteString(raw)
				continue
			}
			tok := html.Token{Type: tt, Data: "a"}
			changed := false
			for more := true; more; {
				var k, v []byte
				k, v, more = z.TagAttr()
				a := html.Attribute{Key: string(k), Val: string(v)}
				if a.Key == "href" && trackable(a.Val) {
					a.Val = s.ClickURL(ws, deliveryID, userID, strings.TrimSpace(a.Val))
					changed = true
				}
				tok.Attr = append(tok.Attr, a)
			}
			if changed {
				b.WriteString(tok.String())
			} else {
				b.WriteString(raw)
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if !inserted && (string(name) == "body" || string(name) == "html") {
				b.WriteString(pixel)
				inserted = true
			}
			b.WriteString(raw)
		default:
			b.WriteString(raw)
		}
	}
}

// trackable reports whether href is an absolute http(s) URL, the only
// links worth wrapping: everything else either does not leave the mail
// client (anchors, mailto:, tel:) or would not resolve from the redirect.
func trackable(href string) bool {
	u, err := url.Parse(strings.TrimSpace(href))
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Scheme, "http") || strings.EqualFold(u.Scheme, "https")
}
