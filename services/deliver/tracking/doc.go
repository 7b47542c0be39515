// Package tracking closes the loop for email: it signs the URLs that go
// into a message (open pixel, click redirect, unsubscribe link) and serves
// them, turning each hit into an Outcome that deliver publishes to
// whisper.events.
//
// Tokens. Every URL carries one token: a compact binary payload (version,
// kind, then length-prefixed workspace id, delivery id, user id and the
// kind's extra fields: the click target, or the unsubscribe channel and
// topic) followed by a 128-bit truncated HMAC-SHA256 of the payload under
// the signer's key, all base64url without padding. Verification is in
// constant time and strict: a token whose MAC does not match under the
// current key or any accepted previous key, whose kind does not match the
// route, or whose payload has trailing or malformed bytes is rejected
// before any field is used. A token is not secret (it sits in an email);
// it only cannot be forged or altered, so a click can only redirect to the
// target that was signed: the redirect is never open.
//
// Routes (NewHandler):
//
//	GET  /t/o/{token}  a 1x1 transparent GIF; publishes "opened" (HEAD: served, not counted)
//	GET  /t/c/{token}  302 to the signed target; publishes "clicked"; tampered -> 400
//	GET  /t/u/{token}  a confirmation page with a one-button form (GET changes
//	                   nothing, because mail scanners prefetch links)
//	POST /t/u/{token}  unsubscribes; publishes "unsubscribed" (RFC 8058 one-click)
//
// Opens and clicks are best-effort telemetry: if publishing fails the
// pixel and the redirect are still served and the failure is logged.
// Unsubscribing is not: if the outcome cannot be published the POST
// answers 503 so the mail client or the user retries.
package tracking
