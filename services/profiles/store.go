package profiles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errProfileMoved means a profile this batch resolved was merged away by a
// concurrent batch between resolution and locking; the batch is retried.
var errProfileMoved = errors.New("profile merged away by a concurrent batch")

// Store keeps profiles in PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	// hub is told of the profiles applyEvents changed, for WatchProfile.
	hub *hub
}

// NewStore returns a Store over pool, whose schema is Migrations.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool, hub: newHub()} }

// applyResult counts what applyEvents did.
type applyResult struct {
	applied, duplicates int
}

// applyEvents applies events (in order) in one transaction: the message ids
// not seen before are recorded and their effects written, or nothing is.
// A handful of round trips serve the whole batch, whatever its size.
//
// Concurrent batches (other partitions, other replicas) may touch the same
// profiles, for one user's events are keyed by whichever id they carry. They
// are serialised by transaction-scoped advisory locks on every identity an
// event names, taken in one order, and by row locks on the profiles, also
// taken in one order; a batch that finds a profile merged away under it
// starts over.
func (s *Store) applyEvents(ctx context.Context, events []event) (applyResult, error) {
	var res applyResult
	var touched []profileKey
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res, touched = applyResult{}, nil
		fresh, err := markApplied(ctx, tx, events)
		if err != nil {
			return err
		}
		var todo []event
		for _, e := range events {
			k := [2]string{e.ws, e.messageID}
			if fresh[k] {
				delete(fresh, k) // a repeat within the batch is a duplicate too
				todo = append(todo, e)
			} else {
				res.duplicates++
			}
		}
		if len(todo) == 0 {
			return nil
		}
		b, err := load(ctx, tx, todo)
		if err != nil {
			return err
		}
		for _, e := range todo {
			b.apply(e)
		}
		if err := write(ctx, tx, b); err != nil {
			return err
		}
		res.applied = len(todo)
		for _, p := range b.changed() {
			touched = append(touched, p.key)
		}
		for src := range b.absorbed {
			touched = append(touched, src) // its watchers follow the survivor
		}
		return nil
	})
	if err == nil {
		s.hub.publish(touched)
	}
	return res, err
}

// markApplied records the batch's message ids and returns those that were
// not recorded before.
func markApplied(ctx context.Context, tx pgx.Tx, events []event) (map[[2]string]bool, error) {
	ws := make([]string, len(events))
	ids := make([]string, len(events))
	for i, e := range events {
		ws[i], ids[i] = e.ws, e.messageID
	}
	rows, err := tx.Query(ctx, `
		INSERT INTO profile_applied_messages (workspace_id, message_id)
		SELECT * FROM unnest($1::text[]::uuid[], $2::text[])
		ON CONFLICT DO NOTHING
		RETURNING workspace_id::text, message_id`, ws, ids)
	if err != nil {
		return nil, fmt.Errorf("record message ids: %w", err)
	}
	fresh := map[[2]string]bool{}
	var k [2]string
	_, err = pgx.ForEachRow(rows, []any{&k[0], &k[1]}, func() error {
		fresh[k] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record message ids: %w", err)
	}
	return fresh, nil
}

func lockKey(k idKey) int64 {
	h := fnv.New64a()
	h.Write([]byte(k.ws))
	h.Write([]byte{0})
	h.Write([]byte(k.kind))
	h.Write([]byte{0})
	h.Write([]byte(k.id))
	return int64(h.Sum64())
}

// load locks the identities the events name, and reads them and their
// profiles (locked too) into a batch.
func load(ctx context.Context, tx pgx.Tx, events []event) (*batch, error) {
	keySet := map[idKey]bool{}
	for _, e := range events {
		for _, k := range identityKeys(e) {
			keySet[k] = true
		}
	}
	var keys []idKey
	var locks []int64
	for k := range keySet {
		keys = append(keys, k)
		locks = append(locks, lockKey(k))
	}
	slices.Sort(locks)
	locks = slices.Compact(locks)
	// One statement takes every lock, in key order (the subquery's ORDER
	// BY fixes the order the locks are taken in, so batches cannot deadlock).
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS s`, locks); err != nil {
		return nil, fmt.Errorf("lock identities: %w", err)
	}

	ws := make([]string, len(keys))
	kinds := make([]string, len(keys))
	ids := make([]string, len(keys))
	for i, k := range keys {
		ws[i], kinds[i], ids[i] = k.ws, k.kind, k.id
	}
	rows, err := tx.Query(ctx, `
		SELECT i.workspace_id::text, i.kind, i.id, i.profile_id::text
		FROM profile_identities i
		JOIN unnest($1::text[]::uuid[], $2::text[], $3::text[]) AS k(ws, kind, id)
		  ON i.workspace_id = k.ws AND i.kind = k.kind AND i.id = k.id`, ws, kinds, ids)
	if err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	b := newBatch()
	var k idKey
	var pid string
	wanted := map[profileKey]bool{}
	if _, err := pgx.ForEachRow(rows, []any{&k.ws, &k.kind, &k.id, &pid}, func() error {
		b.ids[k] = profileKey{k.ws, pid}
		wanted[profileKey{k.ws, pid}] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	if len(wanted) == 0 {
		return b, nil
	}

	pws := make([]string, 0, len(wanted))
	pids := make([]string, 0, len(wanted))
	for pk := range wanted {
		pws, pids = append(pws, pk.ws), append(pids, pk.id)
	}
	rows, err = tx.Query(ctx, `
		SELECT p.workspace_id::text, p.profile_id::text, coalesce(p.user_id, ''),
		       p.traits, p.trait_times, p.event_counts, p.last_event_times, p.first_seen, p.last_seen
		FROM profiles p
		JOIN unnest($1::text[]::uuid[], $2::text[]::uuid[]) AS k(ws, id) ON p.workspace_id = k.ws AND p.profile_id = k.id
		ORDER BY p.workspace_id, p.profile_id
		FOR UPDATE OF p`, pws, pids)
	if err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		p := &profile{stored: true}
		var traits, traitTimes, counts, lastEvent []byte
		var first, last time.Time
		if err := rows.Scan(&p.key.ws, &p.key.id, &p.userID, &traits, &traitTimes, &counts, &lastEvent, &first, &last); err != nil {
			return nil, fmt.Errorf("read profiles: %w", err)
		}
		for _, f := range []struct {
			b []byte
			v any
		}{{traits, &p.traits}, {traitTimes, &p.traitTimes}, {counts, &p.counts}, {lastEvent, &p.lastEvent}} {
			if err := json.Unmarshal(f.b, f.v); err != nil {
				return nil, fmt.Errorf("profile %s: %w", p.key.id, err)
			}
		}
		p.firstSeen, p.lastSeen = first.UnixMicro(), last.UnixMicro()
		b.profiles[p.key] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	if len(b.profiles) != len(wanted) {
		return nil, errProfileMoved
	}
	return b, nil
}

// write stores what the batch changed, in one round trip: profiles first
// (identities refer to them), then identities, then the merged-away
// profiles, once nothing refers to them.
func write(ctx context.Context, tx pgx.Tx, b *batch) error {
	wb := &pgx.Batch{}
	var (
		ws, ids                               []string
		users                                 []*string
		traits, traitTimes, counts, lastEvent []string
		first, last                           []time.Time
	)
	for _, p := range b.changed() {
		ws, ids = append(ws, p.key.ws), append(ids, p.key.id)
		var u *string
		if p.userID != "" {
			u = &p.userID
		}
		users = append(users, u)
		for _, f := range []struct {
			dst *[]string
			v   any
		}{{&traits, p.traits}, {&traitTimes, p.traitTimes}, {&counts, p.counts}, {&lastEvent, p.lastEvent}} {
			j, err := json.Marshal(f.v)
			if err != nil {
				return fmt.Errorf("profile %s: %w", p.key.id, err)
			}
			*f.dst = append(*f.dst, string(j))
		}
		first = append(first, time.UnixMicro(p.firstSeen))
		last = append(last, time.UnixMicro(p.lastSeen))
	}
	if len(ws) > 0 {
		wb.Queue(`
			INSERT INTO profiles (workspace_id, profile_id, user_id, traits, trait_times, event_counts, last_event_times, first_seen, last_seen, updated_at)
			SELECT ws, id, u, t::jsonb, tt::jsonb, c::jsonb, le::jsonb, f, l, now()
			FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[])
			  AS r(ws, id, u, t, tt, c, le, f, l)
			ON CONFLICT (workspace_id, profile_id) DO UPDATE SET
			  user_id = excluded.user_id, traits = excluded.traits, trait_times = excluded.trait_times,
			  event_counts = excluded.event_counts, last_event_times = excluded.last_event_times,
			  first_seen = excluded.first_seen, last_seen = excluded.last_seen, updated_at = now()`,
			ws, ids, users, traits, traitTimes, counts, lastEvent, first, last)
	}

	var iws, ikinds, iids, ipids []string
	for k := range b.linked {
		pk := b.ids[k]
		iws, ikinds, iids, ipids = append(iws, k.ws), append(ikinds, k.kind), append(iids, k.id), append(ipids, pk.id)
	}
	if len(iws) > 0 {
		wb.Queue(`
			INSERT INTO profile_identities (workspace_id, kind, id, profile_id)
			SELECT * FROM unnest($1::text[]::uuid[], $2::text[], $3::text[], $4::text[]::uuid[])
			ON CONFLICT (workspace_id, kind, id) DO UPDATE SET profile_id = excluded.profile_id`,
			iws, ikinds, iids, ipids)
	}

	var aws, asrc, adst []string
	for src, dst := range b.absorbed {
		aws, asrc, adst = append(aws, src.ws), append(asrc, src.id), append(adst, dst.id)
	}
	if len(aws) > 0 {
		// Identities of the absorbed profiles that no event of the batch
		// named were not loaded; they move here.
		wb.Queue(`
			UPDATE profile_identities i SET profile_id = m.dst
			FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[]::uuid[]) AS m(ws, src, dst)
			WHERE i.workspace_id = m.ws AND i.profile_id = m.src`, aws, asrc, adst)
		wb.Queue(`
			DELETE FROM profiles p USING unnest($1::text[]::uuid[], $2::text[]::uuid[]) AS d(ws, id)
			WHERE p.workspace_id = d.ws AND p.profile_id = d.id`, aws, asrc)
	}
	if wb.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, wb).Close(); err != nil {
		return fmt.Errorf("write profiles: %w", err)
	}
	return nil
}

// purgeApplied forgets message ids applied before horizon, in chunks so
// that no single statement holds many locks.
func (s *Store) purgeApplied(ctx context.Context, horizon time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `
			DELETE FROM profile_applied_messages WHERE ctid = ANY (ARRAY(
			  SELECT ctid FROM profile_applied_messages WHERE applied_at < $1 LIMIT 10000))`, horizon)
		if err != nil {
			return total, fmt.Errorf("purge applied message ids: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}

// ErrNotFound is returned for an identity no profile of the workspace has.
var ErrNotFound = errors.New("profile not found")

// profileColumns are read by scanProfile, in its order; identities come as
// every id linked to the profile except its current user id.
const profileColumns = `
	p.workspace_id::text, p.profile_id::text, coalesce(p.user_id, ''),
	p.traits, p.event_counts, p.last_event_times, p.first_seen, p.last_seen, p.updated_at,
	coalesce((SELECT array_agg(DISTINCT i.id ORDER BY i.id) FROM profile_identities i
	          WHERE i.workspace_id = p.workspace_id AND i.profile_id = p.profile_id
	            AND NOT (i.kind = 'user' AND i.id = coalesce(p.user_id, ''))), '{}')`

// Profile is a stored profile as the API shows it. Times in the maps are
// Unix microseconds.
type Profile struct {
	WorkspaceID, ProfileID, UserID string
	AnonymousIDs                   []string
	Traits                         []byte
	EventCounts                    map[string]int64
	LastEventTimes                 map[string]int64
	FirstSeen, LastSeen, UpdatedAt time.Time
}

func scanProfile(row pgx.Row) (Profile, error) {
	var p Profile
	var counts, lastEvent []byte
	if err := row.Scan(&p.WorkspaceID, &p.ProfileID, &p.UserID, &p.Traits, &counts, &lastEvent,
		&p.FirstSeen, &p.LastSeen, &p.UpdatedAt, &p.AnonymousIDs); err != nil {
		return Profile{}, err
	}
	if err := json.Unmarshal(counts, &p.EventCounts); err != nil {
		return Profile{}, fmt.Errorf("profile %s: %w", p.ProfileID, err)
	}
	if err := json.Unmarshal(lastEvent, &p.LastEventTimes); err != nil {
		return Profile{}, fmt.Errorf("profile %s: %w", p.ProfileID, err)
	}
	return p, nil
}

// Get returns the profile of workspace ws that identity (kind, id) is
// linked to.
func (s *Store) get(ctx context.Context, ws, kind, id string) (Profile, error) {
	p, err := scanProfile(s.pool.QueryRow(ctx, `
		SELECT `+profileColumns+`
		FROM profile_identities k JOIN profiles p USING (workspace_id, profile_id)
		WHERE k.workspace_id = $1 AND k.kind = $2 AND k.id = $3`, ws, kind, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Profile{}, ErrNotFound
	}
	if err != nil {
		return Profile{}, fmt.Errorf("get profile: %w", err)
	}
	return p, nil
}

// list returns up to limit profiles of ws with ids after afterID, in id
// order.
func (s *Store) list(ctx context.Context, ws, afterID string, limit int) ([]Profile, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+profileColumns+`
		FROM profiles p
		WHERE p.workspace_id = $1 AND p.profile_id > $2::uuid
		ORDER BY p.profile_id
		LIMIT $3`, ws, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	defer rows.Close()
	var out []Profile
	for rows.Next() {
		p, err := scanProfile(rows)
		if err != nil {
			return nil, fmt.Errorf("list profiles: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	return out, nil
}
