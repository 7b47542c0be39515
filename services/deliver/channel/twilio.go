package channel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TwilioConfig configures the SMS adapter for Twilio's Programmable
// Messaging REST API (2010-04-01).
type TwilioConfig struct {
	// BaseURL is the API root: https://api.twilio.com in production, a
	// test server in tests. No trailing path.
	BaseURL    string
	AccountSID string
	AuthToken  string
	// From is the sending E.164 number (or a Messaging Service SID starting
	// with "MG", sent as MessagingServiceSid).
	From string
	// Timeout bounds one API call; 0 means 10s.
	Timeout time.Duration
}

// Twilio sends SMS through Twilio's Messages resource.
type Twilio struct {
	cfg      TwilioConfig
	endpoint string
	client   *http.Client
}

// twilioBounceCodes are Twilio error codes that mean this recipient can
// never receive the message: an invalid or non-mobile number, or one that
// replied STOP.
var twilioBounceCodes = map[int]bool{
	21211: true, // invalid 'To' phone number
	21214: true, // 'To' phone number cannot be reached
	21217: true, // phone number does not appear to be valid
	21401: true, // invalid phone number
	21407: true, // this phone number type does not support SMS
	21421: true, // phone number is invalid
	21610: true, // attempt to send to unsubscribed recipient
	21612: true, // the 'To' number is not currently reachable via SMS
	21614: true, // 'To' number is not a valid mobile number
}

// NewTwilio validates cfg and returns the adapter.
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("twilio: BaseURL %q must be an http(s) URL", cfg.BaseURL)
	}
	if !strings.HasPrefix(cfg.AccountSID, "AC") {
		return nil, fmt.Errorf("twilio: AccountSID %q must start with AC", cfg.AccountSID)
	}
	if cfg.AuthToken == "" {
		return nil, errors.New("twilio: AuthToken is required")
	}
	if cfg.From == "" {
		return nil, errors.New("twilio: From is required")
	}
	if !strings.HasPrefix(cfg.From, "MG") && !isE164(cfg.From) {
		return nil, fmt.Errorf("twilio: From %q must be an E.164 number or a Messaging Service SID", cfg.From)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("twilio: Timeout %v must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	endpoint := strings.TrimRight(cfg.BaseURL, "/") + "/2010-04-01/Accounts/" + url.PathEscape(cfg.AccountSID) + "/Messages.json"
	return &Twilio{cfg: cfg, endpoint: endpoint, client: &http.Client{Timeout: cfg.Timeout}}, nil
}

// isE164 reports whether s is "+" followed by 8 to 15 digits, the first
// not zero.
func isE164(s string) bool {
	if len(s) < 9 || len(s) > 16 || s[0] != '+' || s[1] == '0' {
		return false
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

type twilioMessage struct {
	SID    string `json:"sid"`
	Status string `json:"status"`
}

type twilioError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

// Send creates one Message resource with Body = the rendered text. The
// delivery id is sent as I-Twilio-Idempotency-Token so a retry after a
// lost reply does not send a second SMS.
func (t *Twilio) Send(ctx context.Context, m Message) (Receipt, error) {
	if !isE164(m.To) {
		return Receipt{}, &Error{Bounce: true, Code: "invalid_to", Err: fmt.Errorf("twilio: To %q is not an E.164 number", m.To)}
	}
	text := m.Content.GetContent().GetText()
	if text == "" {
		return Receipt{}, &Error{Code: "empty_body", Err: errors.New("twilio: the rendered SMS text is empty")}
	}
	form := url.Values{"To": {m.To}, "Body": {text}}
	if strings.HasPrefix(t.cfg.From, "MG") {
		form.Set("MessagingServiceSid", t.cfg.From)
	} else {
		form.Set("From", t.cfg.From)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Receipt{}, fmt.Errorf("twilio: %w", err)
	}
	req.SetBasicAuth(t.cfg.AccountSID, t.cfg.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if m.DeliveryID != "" {
		req.Header.Set("I-Twilio-Idempotency-Token", m.DeliveryID)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return Receipt{}, fmt.Errorf("twilio: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return Receipt{}, fmt.Errorf("twilio: reading the reply: %w", err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var msg twilioMessage
		if err := json.Unmarshal(body, &msg); err != nil || msg.SID == "" {
			// The message was accepted; only the id is missing. Retrying
			// would be covered by the idempotency token, but failing here
			// would record a sent SMS as failed.
			return Receipt{}, nil
		}
		return Receipt{ProviderMessageID: msg.SID}, nil
	}
	statusErr := httpStatusError("twilio", resp).(*Error)
	var te twilioError
	if json.Unmarshal(body, &te) != nil || te.Code == 0 {
		return Receipt{}, statusErr
	}
	e := &Error{
		Retryable:  statusErr.Retryable || te.Code == 20429,
		RetryAfter: statusErr.RetryAfter,
		Bounce:     twilioBounceCodes[te.Code],
		Code:       strconv.Itoa(te.Code),
		Err:        fmt.Errorf("twilio: status %d: %s (%s)", resp.StatusCode, te.Message, te.MoreInfo),
	}
	if e.Bounce {
		e.Retryable = false
	}
	return Receipt{}, e
}
