package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func serve(t *testing.T, setup func(*Server)) (string, context.CancelFunc, chan error) {
	t.Helper()
	s := NewServer(Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, ReadyTimeout: time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	setup(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(cancel)
	return "http://" + ln.Addr().String(), cancel, done
}

func get(t *testing.T, c *http.Client, url string) (int, string, int) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.ProtoMajor
}

func TestProbesAndH2C(t *testing.T) {
	var unhealthy atomic.Bool
	url, _, _ := serve(t, func(s *Server) {
		s.AddCheck("db", func(context.Context) error {
			if unhealthy.Load() {
				return errors.New("connection refused")
			}
			return nil
		})
	})
	if code, body, _ := get(t, http.DefaultClient, url+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body, _ := get(t, http.DefaultClient, url+"/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Errorf("/readyz healthy = %d %s", code, body)
	}
	unhealthy.Store(true)
	if code, body, _ := get(t, http.DefaultClient, url+"/readyz"); code != 503 || !strings.Contains(body, `"db":"connection refused"`) {
		t.Errorf("/readyz failing = %d %s, want 503 naming the check", code, body)
	}
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: protocols}}
	if code, _, proto := get(t, h2c, url+"/metrics"); code != 200 || proto != 2 {
		t.Errorf("/metrics over h2c = %d HTTP/%d, want 200 over HTTP/2", code, proto)
	}
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	started := make(chan struct{})
	url, cancel, done := serve(t, func(s *Server) {
		s.Handle("/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			time.Sleep(300 * time.Millisecond)
			w.Write([]byte("finished"))
		}))
	})
	result := make(chan string, 1)
	go func() {
		res, err := http.Get(url + "/slow")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		result <- string(b)
	}()
	<-started
	cancel()
	if got := <-result; got != "finished" {
		t.Errorf("in-flight request got %q, want it to finish", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after stop: %v", err)
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("the port still accepts requests after shutdown")
	}
}
