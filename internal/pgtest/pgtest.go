// Package pgtest gives tests a real, private PostgreSQL database.
//
// Each call creates a fresh database on the server named by
// WHISPER_TEST_DATABASE_URL and drops it when the test ends, so tests run in
// parallel without seeing each other's rows. Without that variable the test
// is skipped with a loud message, unless CI is set: there a missing database
// is a failure, because a skipped integration test proves nothing.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL names the variable that points at the test server.
const EnvURL = "WHISPER_TEST_DATABASE_URL"

// URL returns the server URL, skipping or failing t when there is none.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set; CI must run integration tests against a real PostgreSQL", EnvURL)
		}
		t.Skipf("SKIPPING integration test: set %s (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) to run it", EnvURL)
	}
	return u
}

// NewDatabase creates an empty database and returns its URL; it is dropped
// when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin := URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to %s: %v", EnvURL, err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	name := "whisper_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil || u.Scheme == "" {
		t.Fatalf("%s must be a postgres:// URL: %q", EnvURL, admin)
	}
	u.Path = "/" + name
	return u.String()
}

// NewPool is NewDatabase with a connected pool, closed when t ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), NewDatabase(t))
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
