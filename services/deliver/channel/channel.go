// Package channel holds the channel adapters deliver sends through (email
// over SMTP, webhook, Twilio SMS, FCM push) and the small contract they
// share with deliver: a Message in, a Receipt or a classified *Error out.
//
// Error classification decides what deliver does next: a retryable error
// is tried again with backoff (honouring RetryAfter), a permanent one fails
// the delivery, and a Bounce also publishes "Message Bounced". An error
// that is not an *Error (a network error, a timeout) is retryable, since
// the provider may not have seen the request; DeliveryID is the idempotency
// key that makes such a retry safe where the provider supports one.
package channel

import (
	"context"
	"errors"
	"time"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

// Message is one message to send through one provider.
type Message struct {
	// DeliveryID is unique and stable across retries: the idempotency key
	// sent to providers that support one.
	DeliveryID  string
	WorkspaceID string
	UserID      string
	// To is an email address, an E.164 phone number, a device
	// registration token, or a webhook URL.
	To string
	// Content is the rendered message.
	Content *contentv1.Message
	// UnsubscribeURL is, for email only, the one-click unsubscribe URL
	// (List-Unsubscribe and List-Unsubscribe-Post headers, RFC 8058).
	UnsubscribeURL string
}

// Receipt is what a provider said when it accepted a message.
type Receipt struct{ ProviderMessageID string }

// Sender sends messages through one provider.
type Sender interface {
	Send(ctx context.Context, m Message) (Receipt, error)
}

// Error classifies a provider failure; anything not an *Error is treated
// as retryable.
type Error struct {
	Retryable bool
	// RetryAfter is the wait the provider asked for (Retry-After, 429), 0
	// if none.
	RetryAfter time.Duration
	// Bounce marks a permanent recipient failure (SMTP 5xx on RCPT, an
	// invalid number or token): deliver publishes a bounce.
	Bounce bool
	// Code is the provider's code, for the ledger.
	Code string
	Err  error
}

func (e *Error) Error() string {
	msg := "provider error"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Code != "" {
		return msg + " (code " + e.Code + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether a send that failed with err may be tried
// again: an *Error says so itself; a cancelled context is not; anything
// else (network errors, timeouts) is.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return !errors.Is(err, context.Canceled)
}
