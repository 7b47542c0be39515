package profiles

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
)

// TestUsersByStage: the gauge counts profiles per stage over every
// workspace, reads 0 for stages nobody is in, and follows the table when
// profiles change stage or are merged away.
func TestUsersByStage(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, pool, Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	store := NewStore(pool)
	reg := prometheus.NewRegistry()
	s := New(Options{Store: store, Registerer: reg})
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	const other = "5d1c8a39-0f3e-4c57-b3a9-6a1f0e2d4c11"
	day := 24 * time.Hour
	apply := func(es ...event) {
		t.Helper()
		if _, err := store.applyEvents(ctx, es, now); err != nil {
			t.Fatal(err)
		}
	}
	identify := func(w, id, user string, at time.Time) event {
		return event{ws: w, messageID: id, typ: eventv1.EventType_EVENT_TYPE_IDENTIFY, userID: user, micros: at.UnixMicro()}
	}
	apply(
		identify(ws, "m1", "new-1", now),
		identify(other, "m2", "new-2", now), // another workspace counts too
		event{ws: ws, messageID: "m3", typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: "activated", name: "Signed Up", micros: now.UnixMicro()},
		identify(ws, "m4", "dormant", now.Add(-20*day)),
		identify(ws, "m5", "churned-1", now.Add(-40*day)),
		identify(other, "m6", "churned-2", now.Add(-45*day)),
	)
	check := func(want string) {
		t.Helper()
		if err := s.countUsers(ctx); err != nil {
			t.Fatal(err)
		}
		head := `
# HELP whisper_profiles_users Profiles in each lifecycle stage, all workspaces together, as of the last periodic count.
# TYPE whisper_profiles_users gauge
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(head+want), "whisper_profiles_users"); err != nil {
			t.Error(err)
		}
	}
	check(`
whisper_profiles_users{stage="activated"} 1
whisper_profiles_users{stage="at_risk"} 0
whisper_profiles_users{stage="churned"} 2
whisper_profiles_users{stage="dormant"} 1
whisper_profiles_users{stage="engaged"} 0
whisper_profiles_users{stage="new"} 2
`)
	// The dormant user comes back and activates; the two new users of ws
	// and other stay new; an alias merges new-1 into the activated user.
	apply(
		event{ws: ws, messageID: "m7", typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: "dormant", name: "Signed Up", micros: now.UnixMicro()},
		event{ws: ws, messageID: "m8", typ: eventv1.EventType_EVENT_TYPE_ALIAS, userID: "activated", previousID: "new-1", micros: now.UnixMicro()},
	)
	check(`
whisper_profiles_users{stage="activated"} 2
whisper_profiles_users{stage="at_risk"} 0
whisper_profiles_users{stage="churned"} 2
whisper_profiles_users{stage="dormant"} 0
whisper_profiles_users{stage="engaged"} 0
whisper_profiles_users{stage="new"} 1
`)
}
