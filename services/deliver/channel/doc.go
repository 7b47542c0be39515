// Package channel holds the provider adapters deliver sends through: email
// over SMTP, signed webhooks, SMS through Twilio's REST API and push
// through FCM's HTTP v1 API. Each adapter is a Sender: it sends one
// rendered Message and classifies every failure as an *Error, so the
// deliver core decides on retry, bounce or dead letter without knowing the
// provider. Errors that are not an *Error (network failures, timeouts) are
// retryable; a canceled context is not.
//
// Idempotency: Message.DeliveryID is stable across retries and reaches the
// provider wherever it supports one: the SMTP Message-ID is derived from it
// (receivers and our own ledger can deduplicate), Twilio gets it as
// I-Twilio-Idempotency-Token, webhooks as Whisper-Delivery-Id and
// Idempotency-Key. FCM has no
// idempotency key; the ledger in deliver is the only guard there.
//
// Every call is bounded by the adapter's Timeout as well as the context.
//
// # Webhook signature scheme
//
// Every webhook is an HTTP POST of the rendered JSON body with these
// headers:
//
//	Content-Type:        application/json
//	Whisper-Delivery-Id: <delivery id, stable across retries: deduplicate on it>
//	Idempotency-Key:     "<delivery id>" (the same key, as a quoted string)
//	Whisper-Timestamp:   <unix seconds when this attempt was signed>
//	Whisper-Signature:   v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// To verify, a receiver takes the raw request body bytes (before any JSON
// parsing), computes HMAC-SHA256 with the shared secret over the decimal
// timestamp header, a single ".", and the body, hex-encodes it and compares
// it in constant time with the value after "v1=". It then rejects the
// request if the timestamp is further than its tolerance (five minutes is
// a good default) from its own clock, which bounds replays; deduplicating
// on the delivery id (see Idempotency) makes the remaining window harmless. Whisper-Signature may carry several
// comma-separated "v1=" values (for secret rotation); one match suffices.
// VerifySignature does all of this and is the reference implementation.
//
// A retry is signed again with a new timestamp; the delivery id and the
// body stay the same. A 2xx reply acknowledges the delivery; 408, 429 and
// 5xx are retried with backoff (a Retry-After header is honoured); any
// other status, including redirects (never followed), fails the delivery
// for good.
//
// Webhook destinations are checked against server-side request forgery at
// dial time, on the address actually connected to, so a host name that
// resolves (or re-resolves, DNS rebinding) to loopback, link-local,
// private, unspecified, multicast or other non-public ranges is refused
// unless WebhookConfig.AllowPrivate is set.
//
// # Idempotency
//
// Delivery is at least once: a sender that is killed after the receiver
// accepted a webhook but before deliver recorded the reply sends it again
// when the delivery's claim is taken over (after the claim lease). The
// repeat carries the same delivery id, so a receiver that remembers the ids
// it has acted on (for longer than the retry horizon: a day is plenty) and
// answers 2xx to a repeat without acting again sees every effect once.
// Idempotency-Key carries the id as a quoted string, in the form of the IETF
// draft-ietf-httpapi-idempotency-key-header, for middleware that already
// deduplicates on that header. The v1 signature covers the timestamp and
// the body, not these headers: a receiver that must also withstand a
// replayed request with a forged id within the tolerance should put its own
// key into the template's body (an order id from the event's properties, say) and
// deduplicate on that.
//
// # FCM access tokens
//
// ServiceAccountTokens turns a Google service account key into FCM access
// tokens: it signs a JWT (RS256, scope FCMScope, audience the key's
// token_uri) with the key, exchanges it at token_uri for an access token
// (the JWT bearer grant, RFC 7523), and reuses that token until the last
// fifth of its lifetime (at most five minutes before expiry). A token FCM
// refuses with UNAUTHENTICATED is dropped and the send tried once more with
// a new one: the refused request was not accepted, so this cannot send
// twice.
package channel
