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
	// To is an email address, an E.164 phone number, a device registration
	// token, or a webhook URL, depending on the channel.
	To string
	// Content is the rendered message.
	Content *contentv1.Message
	// UnsubscribeURL is, for email only, the one-click unsubscribe URL sent
	// in the List-Unsubscribe and List-Unsubscribe-Post headers (RFC 8058).
	UnsubscribeURL string
}

// Receipt is what a provider returned for an accepted message.
type Receipt struct {
	// ProviderMessageID is the provider's id for the message (SMTP
	// Message-ID, Twilio SID, FCM message name), recorded in the ledger.
	ProviderMessageID string
}

// Sender sends one message through one provider.
type Sender interface {
	Send(ctx context.Context, m Message) (Receipt, error)
}

// Error classifies provider failures; anything not an *Error is treated as
// retryable.
type Error struct {
	// Retryable says a later attempt may succeed.
	Retryable bool
	// RetryAfter is the delay the provider asked for (Retry-After, 429), 0
	// if none.
	RetryAfter time.Duration
	// Bounce marks a permanent recipient failure (SMTP 5xx on RCPT, invalid
	// number or token): deliver publishes a bounce.
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
		return e.Code + ": " + msg
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether err may succeed on a later attempt: an *Error
// says so itself; a canceled context never does; anything else (network
// errors) does.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	return true
}
