package profiles

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/postgres"
)

// change is what happened to one profile in one transaction, as far as
// whisper.profiles is concerned.
type change struct {
	key                  profileKey
	created              bool
	previousStage, stage string
	previousBand, band   int32
	traits               []string
	mergedIDs            []string
	// profile is the profile after the change, read back in the same
	// transaction.
	profile *profilev1.Profile
}

// kinds says what the change carries; none when it does not matter to
// decisions (a count went up, nothing else moved).
func (c change) kinds() []profilev1.ProfileChangeKind {
	var out []profilev1.ProfileChangeKind
	if c.created {
		out = append(out, profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_CREATED)
	} else {
		if c.previousStage != c.stage {
			out = append(out, profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_STAGE)
		}
		if len(c.traits) > 0 {
			out = append(out, profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_TRAITS)
		}
		if c.previousBand != c.band {
			out = append(out, profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_SCORE_BAND)
		}
	}
	if len(c.mergedIDs) > 0 {
		out = append(out, profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_MERGED)
	}
	return out
}

func (c change) matters() bool { return len(c.kinds()) > 0 }

// queueReadBack queues the read of the changed profiles, whole, after the
// writes queued before it in the same batch.
func queueReadBack(b *pgx.Batch, changes []change) {
	ws := make([]string, len(changes))
	ids := make([]string, len(changes))
	for i, c := range changes {
		ws[i], ids[i] = c.key.ws, c.key.id
	}
	b.Queue(`
		SELECT `+profileColumns+`
		FROM profiles p JOIN unnest($1::text[]::uuid[], $2::text[]::uuid[]) AS k(ws, id)
		  ON p.workspace_id = k.ws AND p.profile_id = k.id`, ws, ids)
}

// readBack reads the result of queueReadBack into changes.
func readBack(br pgx.BatchResults, changes []change) error {
	rows, err := br.Query()
	if err != nil {
		return fmt.Errorf("read back changed profiles: %w", err)
	}
	defer rows.Close()
	byID := make(map[profileKey]*profilev1.Profile, len(changes))
	for rows.Next() {
		p, err := scanProfile(rows)
		if err != nil {
			return fmt.Errorf("read back changed profiles: %w", err)
		}
		pb, err := toProto(p)
		if err != nil {
			return fmt.Errorf("read back profile %s: %w", p.ProfileID, err)
		}
		byID[profileKey{p.WorkspaceID, p.ProfileID}] = pb
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read back changed profiles: %w", err)
	}
	for i := range changes {
		if changes[i].profile = byID[changes[i].key]; changes[i].profile == nil {
			return fmt.Errorf("read back profile %s: %w", changes[i].key.id, errProfileMoved)
		}
	}
	return nil
}

// recordKey keys a profile's changes like its events: by workspace and
// user id, or, for a profile known only anonymously, its first anonymous
// id (see the package doc on ordering).
func recordKey(p *profilev1.Profile) []byte {
	switch {
	case p.GetUserId() != "":
		return kafka.Key(p.GetWorkspaceId(), p.GetUserId())
	case len(p.GetAnonymousIds()) > 0:
		return kafka.Key(p.GetWorkspaceId(), p.GetAnonymousIds()[0])
	default:
		return kafka.Key(p.GetWorkspaceId(), p.GetProfileId())
	}
}

// insertOutbox writes one outbox row per change, each with a new change
// id: the transaction that makes a change is the only one that can record
// it, so a redelivered event (a duplicate, which changes nothing) never
// publishes again. It returns how many rows it wrote.
func insertOutbox(ctx context.Context, tx pgx.Tx, changes []change, now time.Time) (int, error) {
	if len(changes) == 0 {
		return 0, nil
	}
	ids := make([]string, len(changes))
	keys := make([][]byte, len(changes))
	values := make([][]byte, len(changes))
	for i, c := range changes {
		pc := &profilev1.ProfileChange{
			ChangeId:          uuid.NewString(),
			WorkspaceId:       c.key.ws,
			Kinds:             c.kinds(),
			PreviousStage:     c.previousStage,
			ChangedTraits:     c.traits,
			PreviousScoreBand: c.previousBand,
			ScoreBand:         c.band,
			Profile:           c.profile,
			ChangeTime:        timestamppb.New(now),
			MergedProfileIds:  c.mergedIDs,
		}
		b, err := pc.MarshalVT() // generated, without proto.Marshal's reflection
		if err != nil {
			return 0, fmt.Errorf("encode change of %s: %w", c.key.id, err)
		}
		ids[i], keys[i], values[i] = pc.ChangeId, recordKey(c.profile), b
	}
	// WITH ORDINALITY keeps the changes' order in the ids they get.
	if _, err := tx.Exec(ctx, `
		INSERT INTO profile_outbox (change_id, key, value, created_at)
		SELECT c, k, v, $4 FROM unnest($1::text[]::uuid[], $2::bytea[], $3::bytea[]) WITH ORDINALITY AS r(c, k, v, n)
		ORDER BY n`, ids, keys, values, now); err != nil {
		return 0, fmt.Errorf("write outbox: %w", err)
	}
	return len(changes), nil
}

// outboxLock is the advisory lock key of the outbox relay: one relay at a
// time, across replicas, keeps every profile's changes in order.
const outboxLock = int64(0x77687370_6f757462) // "whsp" "outb"

// drainOutbox produces up to limit outbox rows, oldest first, and deletes
// them once produce has returned; it returns how many it produced, 0 when
// another relay holds the lock. Rows whose production fails stay, in
// order, for the next attempt.
func (s *Store) drainOutbox(ctx context.Context, limit int, produce func(context.Context, []*kgo.Record) error) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n = 0
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, outboxLock).Scan(&locked); err != nil {
			return fmt.Errorf("lock outbox: %w", err)
		}
		if !locked {
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT id, key, value FROM profile_outbox ORDER BY id LIMIT $1`, limit)
		if err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		var ids []int64
		var recs []*kgo.Record
		var id int64
		var key, value []byte
		if _, err := pgx.ForEachRow(rows, []any{&id, &key, &value}, func() error {
			ids = append(ids, id)
			recs = append(recs, &kgo.Record{Topic: kafka.TopicProfiles, Key: key, Value: value})
			return nil
		}); err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		if len(recs) == 0 {
			return nil
		}
		if err := produce(ctx, recs); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM profile_outbox WHERE id = ANY($1)`, ids); err != nil {
			return fmt.Errorf("delete produced outbox rows: %w", err)
		}
		n = len(recs)
		return nil
	})
	return n, err
}

// outboxBacklog returns how many changes wait in the outbox and the age
// of the oldest.
func (s *Store) outboxBacklog(ctx context.Context, now time.Time) (int64, time.Duration, error) {
	return postgres.Backlog(ctx, s.pool, "profile_outbox", "created_at", now)
}
