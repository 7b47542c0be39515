package deliver

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/whisperhq/whisper/internal/auth"
	"github.com/whisperhq/whisper/services/deliver/tracking"
)

const testSigningKey = "deliver-signing-key-for-tests-0123456789"

func newTestInAppTokens(t *testing.T, key string, now time.Time) *InAppTokens {
	t.Helper()
	tok, err := NewInAppTokens([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	tok.now = func() time.Time { return now }
	return tok
}

func TestInAppTokens(t *testing.T) {
	const ws, user = "0b0e8c8e-4f5c-4a43-9a57-4a1f0d2a7f10", "user-42 ☕"
	issued := time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)
	issuer := newTestInAppTokens(t, testSigningKey, issued)
	token, exp := issuer.Issue(ws, user, time.Hour)
	if !strings.HasPrefix(token, auth.UserTokenPrefix) || !exp.Equal(issued.Add(time.Hour)) {
		t.Fatalf("Issue = %q, %v; want a %s token expiring at %v", token, exp, auth.UserTokenPrefix, issued.Add(time.Hour))
	}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, auth.UserTokenPrefix))
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return auth.UserTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	}
	// A tracking link's token, signed with the same key material.
	signer := tracking.NewSigner([]byte(testSigningKey), "https://t.example.com")
	clickURL := signer.ClickURL(ws, "d1", user, "https://example.com")
	trackingToken := clickURL[strings.LastIndex(clickURL, "/")+1:]

	tests := []struct {
		name    string
		key     string
		at      time.Time
		token   string
		expired bool // else invalid, when wantErr
		wantErr bool
	}{
		{name: "fresh", key: testSigningKey, at: issued, token: token},
		{name: "a second before expiry", key: testSigningKey, at: exp.Add(-time.Second), token: token},
		{name: "at expiry", key: testSigningKey, at: exp, token: token, wantErr: true, expired: true},
		{name: "long after", key: testSigningKey, at: exp.Add(48 * time.Hour), token: token, wantErr: true, expired: true},
		{name: "other key", key: testSigningKey + "x", at: issued, token: token, wantErr: true},
		{name: "payload bit flipped", key: testSigningKey, at: issued, token: flip(5), wantErr: true},
		{name: "mac bit flipped", key: testSigningKey, at: issued, token: flip(len(raw) - 1), wantErr: true},
		{name: "truncated", key: testSigningKey, at: issued, token: token[:len(token)-4], wantErr: true},
		{name: "no prefix", key: testSigningKey, at: issued, token: strings.TrimPrefix(token, auth.UserTokenPrefix), wantErr: true},
		{name: "tracking token", key: testSigningKey, at: issued, token: trackingToken, wantErr: true},
		{name: "tracking token with the prefix", key: testSigningKey, at: issued, token: auth.UserTokenPrefix + trackingToken, wantErr: true},
		{name: "not base64", key: testSigningKey, at: issued, token: auth.UserTokenPrefix + "!!!!", wantErr: true},
		{name: "huge", key: testSigningKey, at: issued, token: auth.UserTokenPrefix + strings.Repeat("A", 4096), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestInAppTokens(t, tt.key, tt.at)
			gotWS, gotUser, err := v.VerifyUserToken(tt.token)
			switch {
			case !tt.wantErr && (err != nil || gotWS != ws || gotUser != user):
				t.Errorf("VerifyUserToken = %q, %q, %v; want %q, %q", gotWS, gotUser, err, ws, user)
			case tt.wantErr && err == nil:
				t.Errorf("VerifyUserToken = %q, %q; want an error", gotWS, gotUser)
			case tt.wantErr && errors.Is(err, auth.ErrExpiredToken) != tt.expired:
				t.Errorf("VerifyUserToken error %v; expired %v, want %v", err, errors.Is(err, auth.ErrExpiredToken), tt.expired)
			}
		})
	}
	if _, err := NewInAppTokens([]byte("short")); err == nil {
		t.Error("NewInAppTokens accepted a 5-byte key")
	}
}
