package targets

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWithCORSOffByDefault(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	req := httptest.NewRequest(http.MethodOptions, "/whisper.delivery.v1.DeliveryService/StreamInApp", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", http.MethodPost)
	rec := httptest.NewRecorder()
	withCORS(nil, h).ServeHTTP(rec, req)
	if rec.Code != http.StatusTeapot || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight without origins = %d, Access-Control-Allow-Origin %q; want it passed through untouched", rec.Code, rec.Header().Get("Access-Control-Allow-Origin"))
	}
}
