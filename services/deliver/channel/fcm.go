package channel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// FCMConfig configures the push adapter for Firebase Cloud Messaging's
// HTTP v1 API.
type FCMConfig struct {
	// BaseURL is the API root: https://fcm.googleapis.com in production, a
	// test server in tests.
	BaseURL   string
	ProjectID string
	// TokenSource returns an OAuth 2.0 access token for the
	// firebase.messaging scope, cached and refreshed by the source:
	// (*ServiceAccountTokens).Token in production, static in tests.
	TokenSource func(ctx context.Context) (string, error)
	// InvalidateToken, if set, is told of a token FCM refused with
	// UNAUTHENTICATED; the send is then tried once more at once with a
	// new token from TokenSource ((*ServiceAccountTokens).Invalidate).
	InvalidateToken func(token string)
	// Timeout bounds one API call; 0 means 10s.
	Timeout time.Duration
}

// FCM sends push notifications to one device registration token each.
type FCM struct {
	cfg      FCMConfig
	endpoint string
	client   *http.Client
}

// NewFCM validates cfg and returns the adapter.
func NewFCM(cfg FCMConfig) (*FCM, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("fcm: BaseURL %q must be an http(s) URL", cfg.BaseURL)
	}
	if cfg.ProjectID == "" || strings.ContainsAny(cfg.ProjectID, "/?#") {
		return nil, fmt.Errorf("fcm: ProjectID %q must be a Firebase project id", cfg.ProjectID)
	}
	if cfg.TokenSource == nil {
		return nil, errors.New("fcm: TokenSource is required")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("fcm: Timeout %v must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	endpoint := strings.TrimRight(cfg.BaseURL, "/") + "/v1/projects/" + url.PathEscape(cfg.ProjectID) + "/messages:send"
	return &FCM{cfg: cfg, endpoint: endpoint, client: &http.Client{Timeout: cfg.Timeout}}, nil
}

type fcmNotification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type fcmMessage struct {
	Token        string            `json:"token"`
	Notification *fcmNotification  `json:"notification,omitempty"`
	Data         map[string]string `json:"data,omitempty"`
}

type fcmRequest struct {
	Message fcmMessage `json:"message"`
}

type fcmReply struct {
	Name string `json:"name"`
}

// fcmErrorReply is the google.rpc.Status error shape of the v1 API.
type fcmErrorReply struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field       string `json:"field"`
				Description string `json:"description"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// Send posts one message to m.To (a registration token) with the rendered
// title and body as the notification and Content.Data as data.
// UNREGISTERED, SENDER_ID_MISMATCH and an INVALID_ARGUMENT about the token
// are bounces: the token will never work again. FCM has no idempotency
// key, so the deliver ledger is the only guard against a duplicate push.
func (f *FCM) Send(ctx context.Context, m Message) (Receipt, error) {
	if m.To == "" {
		return Receipt{}, &Error{Bounce: true, Code: "invalid_token", Err: errors.New("fcm: the registration token is empty")}
	}
	c := m.Content.GetContent()
	msg := fcmMessage{Token: m.To, Data: c.GetData()}
	if c.GetTitle() != "" || c.GetBody() != "" {
		msg.Notification = &fcmNotification{Title: c.GetTitle(), Body: c.GetBody()}
	}
	if msg.Notification == nil && len(msg.Data) == 0 {
		return Receipt{}, &Error{Code: "empty_message", Err: errors.New("fcm: the rendered push has no title, body or data")}
	}
	body, err := json.Marshal(fcmRequest{Message: msg})
	if err != nil {
		return Receipt{}, &Error{Code: "invalid_message", Err: fmt.Errorf("fcm: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	resp, reply, err := f.post(ctx, body)
	if err != nil {
		return Receipt{}, err
	}
	if resp.StatusCode == http.StatusUnauthorized && f.cfg.InvalidateToken != nil && !thirdPartyAuth(reply) {
		// Refused before it was accepted, so trying again cannot send
		// twice: the token source lets go of the token and gets another.
		f.cfg.InvalidateToken(strings.TrimPrefix(resp.Request.Header.Get("Authorization"), "Bearer "))
		if resp, reply, err = f.post(ctx, body); err != nil {
			return Receipt{}, err
		}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var r fcmReply
		_ = json.Unmarshal(reply, &r) // accepted either way; the name is only for the ledger
		return Receipt{ProviderMessageID: r.Name}, nil
	}
	e := httpStatusError("fcm", resp).(*Error)
	if resp.StatusCode == http.StatusUnauthorized {
		// An expired access token: the token source refreshes it for the
		// next attempt.
		e.Retryable = true
	}
	var er fcmErrorReply
	if json.Unmarshal(reply, &er) != nil || er.Error.Status == "" {
		return Receipt{}, e
	}
	code := er.Error.Status
	tokenField := false
	for _, d := range er.Error.Details {
		if strings.HasSuffix(d.Type, "google.firebase.fcm.v1.FcmError") && d.ErrorCode != "" {
			code = d.ErrorCode
		}
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				tokenField = true
			}
		}
	}
	e.Code = code
	e.Err = fmt.Errorf("fcm: status %d %s: %s", resp.StatusCode, code, er.Error.Message)
	switch code {
	case "UNREGISTERED", "SENDER_ID_MISMATCH":
		e.Bounce, e.Retryable = true, false
	case "INVALID_ARGUMENT":
		if tokenField || strings.Contains(strings.ToLower(er.Error.Message), "registration token") {
			e.Bounce, e.Retryable = true, false
		}
	case "QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL":
		e.Retryable = true
	}
	return Receipt{}, e
}

// post makes one send request with the current access token and returns
// the response (its body closed) with the body read.
func (f *FCM) post(ctx context.Context, body []byte) (*http.Response, []byte, error) {
	token, err := f.cfg.TokenSource(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("fcm: access token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("fcm: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fcm: %w", err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("fcm: reading the reply: %w", err)
	}
	return resp, reply, nil
}

// thirdPartyAuth reports whether a 401 is about the APNs or Web Push
// credentials configured in Firebase, not our access token: a new token
// would not help.
func thirdPartyAuth(reply []byte) bool {
	var er fcmErrorReply
	if json.Unmarshal(reply, &er) != nil {
		return false
	}
	for _, d := range er.Error.Details {
		if d.ErrorCode == "THIRD_PARTY_AUTH_ERROR" {
			return true
		}
	}
	return false
}
