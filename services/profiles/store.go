package profiles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
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

// applyResult says what applyEvents did.
type applyResult struct {
	applied, duplicates int
	// mirror are the rolling activity states to write to Redis, deleted
	// the profiles whose mirror goes (merged away).
	mirror  []mirrorEntry
	deleted []profileKey
	// changes counts the rows written to the outbox; transitions the
	// stage changes, as [from, to].
	changes     int
	transitions [][2]string
}

// applyEvents applies events (in order) in one transaction: the message ids
// not seen before are recorded and their effects written, or nothing is.
// A handful of round trips serve the whole batch, whatever its size: the
// lifecycle rules come with the message ids, the changes that matter are
// read back with the writes, and the outbox rows take one more.
//
// Concurrent batches (other partitions, other replicas) may touch the same
// profiles, for one user's events are keyed by whichever id they carry. They
// are serialised by transaction-scoped advisory locks on every identity an
// event names, taken in one order, and by row locks on the profiles, also
// taken in one order; a batch that finds a profile merged away under it
// starts over.
//
// Events already applied change nothing, but the profiles they name are
// returned for mirroring all the same: if the process stopped after a
// commit and before the Redis write, the redelivery repairs the mirror.
func (s *Store) applyEvents(ctx context.Context, events []event, now time.Time) (applyResult, error) {
	var res applyResult
	var touched []profileKey
	nowMicros := now.UnixMicro()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res, touched = applyResult{}, nil
		fresh, rules, err := markApplied(ctx, tx, events)
		if err != nil {
			return err
		}
		var todo, dups []event
		for _, e := range events {
			k := [2]string{e.ws, e.messageID}
			if fresh[k] {
				delete(fresh, k) // a repeat within the batch is a duplicate too
				todo = append(todo, e)
			} else {
				res.duplicates++
				dups = append(dups, e)
			}
		}
		written := map[profileKey]bool{}
		if len(todo) > 0 {
			b, err := load(ctx, tx, todo, nowMicros)
			if err != nil {
				return err
			}
			for _, e := range todo {
				b.apply(e)
			}
			changes, err := write(ctx, tx, b, rules, nowMicros)
			if err != nil {
				return err
			}
			n, err := insertOutbox(ctx, tx, changes, now)
			if err != nil {
				return err
			}
			res.applied, res.changes = len(todo), n
			for _, p := range b.changed() {
				touched = append(touched, p.key)
				written[p.key] = true
				res.mirror = append(res.mirror, mirrorEntry{key: p.key, version: p.version, daily: p.daily})
			}
			for _, c := range changes {
				if c.previousStage != "" && c.previousStage != c.stage {
					res.transitions = append(res.transitions, [2]string{c.previousStage, c.stage})
				}
			}
			for src := range b.absorbed {
				touched = append(touched, src) // its watchers follow the survivor
				res.deleted = append(res.deleted, src)
			}
		}
		if len(dups) > 0 {
			again, err := readMirror(ctx, tx, dups)
			if err != nil {
				return err
			}
			for _, m := range again {
				if !written[m.key] {
					res.mirror = append(res.mirror, m)
				}
			}
		}
		return nil
	})
	if err == nil {
		s.hub.publish(touched)
	}
	return res, err
}

// markApplied records the batch's message ids and returns those that were
// not recorded before, with the lifecycle rules of the batch's workspaces
// (those that have set some), in one round trip.
//
// The rules are read under a shared lock on each workspace's rules, which
// putRules takes exclusively: a batch either sees new rules, or commits
// before they do, and then putRules makes the profiles it wrote due.
func markApplied(ctx context.Context, tx pgx.Tx, events []event) (map[[2]string]bool, map[string]Rules, error) {
	ws := make([]string, len(events))
	ids := make([]string, len(events))
	wsSet := map[string]bool{}
	for i, e := range events {
		ws[i], ids[i] = e.ws, e.messageID
		wsSet[e.ws] = true
	}
	var locks []int64
	for w := range wsSet {
		locks = append(locks, rulesLockKey(w))
	}
	qb := &pgx.Batch{}
	qb.Queue(`SELECT pg_advisory_xact_lock_shared(k) FROM (SELECT k FROM unnest($1::bigint[]) AS k ORDER BY k) AS s`, locks)
	qb.Queue(`
		INSERT INTO profile_applied_messages (workspace_id, message_id)
		SELECT * FROM unnest($1::text[]::uuid[], $2::text[])
		ON CONFLICT DO NOTHING
		RETURNING workspace_id::text, message_id`, ws, ids)
	qb.Queue(`SELECT `+rulesColumns+` FROM profiles_lifecycle_rules WHERE workspace_id = ANY($1::text[]::uuid[])`, slices.Collect(maps.Keys(wsSet)))
	br := tx.SendBatch(ctx, qb)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, nil, fmt.Errorf("lock lifecycle rules: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, fmt.Errorf("record message ids: %w", err)
	}
	fresh := map[[2]string]bool{}
	var k [2]string
	if _, err = pgx.ForEachRow(rows, []any{&k[0], &k[1]}, func() error {
		fresh[k] = true
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("record message ids: %w", err)
	}
	rules, err := scanRules(br)
	if err != nil {
		return nil, nil, err
	}
	if err := br.Close(); err != nil {
		return nil, nil, fmt.Errorf("record message ids: %w", err)
	}
	return fresh, rules, nil
}

// rulesLockKey is the advisory lock key of workspace ws's lifecycle rules.
func rulesLockKey(ws string) int64 {
	h := fnv.New64a()
	h.Write([]byte("lifecycle rules"))
	h.Write([]byte{0})
	h.Write([]byte(ws))
	return int64(h.Sum64())
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
func load(ctx context.Context, tx pgx.Tx, events []event, now int64) (*batch, error) {
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
	b := newBatch(now)
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
		       p.traits, p.trait_times, p.event_counts, p.last_event_times, p.first_seen, p.last_seen,
		       p.daily, p.version, p.stage, p.stage_time, p.engagement_score, p.session_count, p.session_start_time
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
		var traits, traitTimes, counts, lastEvent, daily []byte
		var first, last, sessionStart time.Time
		var stageTime *time.Time
		if err := rows.Scan(&p.key.ws, &p.key.id, &p.userID, &traits, &traitTimes, &counts, &lastEvent, &first, &last,
			&daily, &p.version, &p.stage, &stageTime, &p.score, &p.sessionCount, &sessionStart); err != nil {
			return nil, fmt.Errorf("read profiles: %w", err)
		}
		for _, f := range []struct {
			b []byte
			v any
		}{{traits, &p.traits}, {traits, &p.loadedTraits}, {traitTimes, &p.traitTimes}, {counts, &p.counts}, {lastEvent, &p.lastEvent}, {daily, &p.daily}} {
			if err := json.Unmarshal(f.b, f.v); err != nil {
				return nil, fmt.Errorf("profile %s: %w", p.key.id, err)
			}
		}
		p.firstSeen, p.lastSeen = first.UnixMicro(), last.UnixMicro()
		p.sessionStart = sessionStart.UnixMicro()
		if stageTime != nil {
			p.stageTime = stageTime.UnixMicro()
		}
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

// write computes the lifecycle of the profiles the batch changed and
// stores them, in one round trip: profiles first (identities refer to
// them), then identities, then the merged-away profiles, once nothing
// refers to them; last, the profiles whose changes matter are read back
// whole for the outbox.
func write(ctx context.Context, tx pgx.Tx, b *batch, rules map[string]Rules, now int64) ([]change, error) {
	wb := &pgx.Batch{}
	var (
		ws, ids                                      []string
		users                                        []*string
		traits, traitTimes, counts, lastEvent, daily []string
		first, last                                  []time.Time
		versions                                     []int64
		stages                                       []string
		stageTimes                                   []time.Time
		scores                                       []int32
		risks                                        []float64
		inputs                                       []string
		dues                                         []*time.Time
		sessionCounts                                []int64
		sessionStarts                                []time.Time
		changes                                      []change
	)
	for _, p := range b.changed() {
		r, ok := rules[p.key.ws]
		if !ok {
			r = DefaultRules
		}
		p.daily.trim(now)
		p.version++
		activated := p.counts[r.ActivationEvent] > 0
		st := evaluate(p.daily, p.firstSeen, p.lastSeen, activated, r, now)
		c := change{
			key: p.key, created: !p.stored, previousStage: p.stage, stage: st.stage,
			previousBand: scoreBand(p.score), band: scoreBand(st.score), mergedIDs: p.mergedIDs,
		}
		if !p.stored {
			c.previousStage, c.previousBand = "", 0
		}
		if c.created || p.loadedTraits != nil {
			c.traits = p.changedTraits()
		}
		if c.matters() {
			changes = append(changes, c)
		}
		if st.stage != p.stage || !p.stored || p.stageTime == 0 {
			// (A row from before lifecycles has a default stage and no time.)
			p.stageTime = now
		}
		p.stage, p.score = st.stage, st.score

		ws, ids = append(ws, p.key.ws), append(ids, p.key.id)
		var u *string
		if p.userID != "" {
			u = &p.userID
		}
		users = append(users, u)
		for _, f := range []struct {
			dst *[]string
			v   any
		}{{&traits, p.traits}, {&traitTimes, p.traitTimes}, {&counts, p.counts}, {&lastEvent, p.lastEvent}, {&daily, p.daily}, {&inputs, st.inputs}} {
			j, err := json.Marshal(f.v)
			if err != nil {
				return nil, fmt.Errorf("profile %s: %w", p.key.id, err)
			}
			*f.dst = append(*f.dst, string(j))
		}
		first = append(first, time.UnixMicro(p.firstSeen))
		last = append(last, time.UnixMicro(p.lastSeen))
		versions = append(versions, p.version)
		stages = append(stages, st.stage)
		stageTimes = append(stageTimes, time.UnixMicro(p.stageTime))
		scores = append(scores, st.score)
		risks = append(risks, st.risk)
		dues = append(dues, dueTime(dueAt(p.daily, p.firstSeen, p.lastSeen, activated, r, now)))
		sessionCounts = append(sessionCounts, p.sessionCount)
		sessionStarts = append(sessionStarts, time.UnixMicro(p.sessionStart))
	}
	if len(ws) > 0 {
		wb.Queue(`
			INSERT INTO profiles (workspace_id, profile_id, user_id, traits, trait_times, event_counts, last_event_times, first_seen, last_seen, updated_at,
			                      daily, version, stage, stage_time, engagement_score, churn_risk, score_inputs, stage_due_at,
			                      session_count, session_start_time)
			SELECT ws, id, u, t::jsonb, tt::jsonb, c::jsonb, le::jsonb, f, l, $10, d::jsonb, v, st, stt, sc, cr, si::jsonb, due, sn, ss
			FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[],
			            $11::text[], $12::bigint[], $13::text[], $14::timestamptz[], $15::int[], $16::float8[], $17::text[], $18::timestamptz[],
			            $19::bigint[], $20::timestamptz[])
			  AS r(ws, id, u, t, tt, c, le, f, l, d, v, st, stt, sc, cr, si, due, sn, ss)
			ON CONFLICT (workspace_id, profile_id) DO UPDATE SET
			  user_id = excluded.user_id, traits = excluded.traits, trait_times = excluded.trait_times,
			  event_counts = excluded.event_counts, last_event_times = excluded.last_event_times,
			  first_seen = excluded.first_seen, last_seen = excluded.last_seen, updated_at = excluded.updated_at,
			  daily = excluded.daily, version = excluded.version, stage = excluded.stage, stage_time = excluded.stage_time,
			  engagement_score = excluded.engagement_score, churn_risk = excluded.churn_risk,
			  score_inputs = excluded.score_inputs, stage_due_at = excluded.stage_due_at,
			  session_count = excluded.session_count, session_start_time = excluded.session_start_time`,
			ws, ids, users, traits, traitTimes, counts, lastEvent, first, last, time.UnixMicro(now),
			daily, versions, stages, stageTimes, scores, risks, inputs, dues, sessionCounts, sessionStarts)
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
	n := wb.Len()
	if len(changes) > 0 {
		queueReadBack(wb, changes)
	}
	if wb.Len() == 0 {
		return nil, nil
	}
	br := tx.SendBatch(ctx, wb)
	defer br.Close()
	for range n {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("write profiles: %w", err)
		}
	}
	if len(changes) > 0 {
		if err := readBack(br, changes); err != nil {
			return nil, err
		}
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("write profiles: %w", err)
	}
	return changes, nil
}

// dueTime is the stage_due_at of a due time from dueAt.
func dueTime(micros int64) *time.Time {
	if micros == 0 {
		return nil
	}
	t := time.UnixMicro(micros)
	return &t
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
	p.daily, p.stage, p.stage_time, p.engagement_score, p.churn_risk, p.score_inputs,
	p.session_count, p.session_start_time,
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
	Daily                          activity
	Stage                          string
	StageTime                      *time.Time
	EngagementScore                int32
	ChurnRisk                      float64
	Inputs                         scoreInputs
	SessionCount                   int64
	SessionStart                   time.Time
}

func scanProfile(row pgx.Row) (Profile, error) {
	var p Profile
	var counts, lastEvent, daily, inputs []byte
	if err := row.Scan(&p.WorkspaceID, &p.ProfileID, &p.UserID, &p.Traits, &counts, &lastEvent,
		&p.FirstSeen, &p.LastSeen, &p.UpdatedAt,
		&daily, &p.Stage, &p.StageTime, &p.EngagementScore, &p.ChurnRisk, &inputs,
		&p.SessionCount, &p.SessionStart, &p.AnonymousIDs); err != nil {
		return Profile{}, err
	}
	for _, f := range []struct {
		b []byte
		v any
	}{{counts, &p.EventCounts}, {lastEvent, &p.LastEventTimes}, {daily, &p.Daily}, {inputs, &p.Inputs}} {
		if err := json.Unmarshal(f.b, f.v); err != nil {
			return Profile{}, fmt.Errorf("profile %s: %w", p.ProfileID, err)
		}
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

// TunePool adjusts the configuration of the pool a Store is built on:
// every statement is planned for its actual parameters
// (plan_cache_mode=force_custom_plan).
//
// pgx prepares and caches statements, and after five executions PostgreSQL
// may switch a prepared statement to a generic plan, which it keeps. On
// fresh tables that generic plan is made from empty-table statistics (and
// cannot see how many elements an unnest array holds), so it stays a plan
// for empty tables as they grow: a first load run measured p99 freshness
// of 1.6 s. Custom plans cost a little planning per statement and track
// the tables' real size from the first row on.
func TunePool(cfg *pgxpool.Config) {
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
}
