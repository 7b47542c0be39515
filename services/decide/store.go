package decide

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/postgres"
)

// ErrNotFound is a campaign or decision that does not exist in the
// workspace.
var ErrNotFound = errors.New("not found")

// Campaign statuses as stored.
const (
	statusDraft  = "draft"
	statusActive = "active"
	statusPaused = "paused"
)

// outcomeWaiting is the stored outcome of a decision held by a wait.
const outcomeWaiting = "waiting"

// Store keeps campaigns, decisions, waits, consent and profile snapshots in
// PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool, migrated with Migrations.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

func statusProto(s string) campaignv1.CampaignStatus {
	switch s {
	case statusActive:
		return campaignv1.CampaignStatus_CAMPAIGN_STATUS_ACTIVE
	case statusPaused:
		return campaignv1.CampaignStatus_CAMPAIGN_STATUS_PAUSED
	default:
		return campaignv1.CampaignStatus_CAMPAIGN_STATUS_DRAFT
	}
}

// eventNames are the event names that may end a wait of c or convert one
// of its decisions.
func eventNames(c *campaignv1.Campaign) []string {
	names := slices.Clone(c.GetWait().GetExitEvents())
	if n := c.GetWait().GetWaitForEvent(); n != "" {
		names = append(names, n)
	}
	if n := c.GetGoalEvent(); n != "" {
		names = append(names, n)
	}
	if names == nil {
		names = []string{}
	}
	return names
}

func triggerColumns(c *campaignv1.Campaign) (kind string, event, goal *string) {
	if e := c.GetTrigger().GetEvent(); e != nil {
		n := e.GetName()
		event = &n
		kind = "event"
	} else {
		kind = "profile_change"
	}
	if g := c.GetGoalEvent(); g != "" {
		goal = &g
	}
	return kind, event, goal
}

// createCampaign stores c, whose definition is valid, as version 1.
func (s *Store) createCampaign(ctx context.Context, ws string, c *campaignv1.Campaign, status string, now time.Time) (*campaignv1.Campaign, error) {
	c = proto.CloneOf(c)
	c.Id = uuid.NewString()
	c.WorkspaceId = ws
	c.Version = 1
	c.Status = campaignv1.CampaignStatus_CAMPAIGN_STATUS_UNSPECIFIED
	c.CreateTime = timestamppb.New(now)
	c.UpdateTime = c.CreateTime
	def, err := proto.Marshal(c)
	if err != nil {
		return nil, err
	}
	kind, event, goal := triggerColumns(c)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO campaigns (workspace_id, campaign_id, status, version, trigger_kind, trigger_event, goal_event, event_names, definition, created_at, updated_at)
			VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $9)`,
			ws, c.Id, status, kind, event, goal, eventNames(c), def, now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO campaign_versions (workspace_id, campaign_id, version, definition, created_at) VALUES ($1, $2, 1, $3, $4)`,
			ws, c.Id, def, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	c.Status = statusProto(status)
	return c, nil
}

// updateCampaign stores c as the next version of campaign c.Id.
func (s *Store) updateCampaign(ctx context.Context, ws string, c *campaignv1.Campaign, now time.Time) (*campaignv1.Campaign, error) {
	c = proto.CloneOf(c)
	var out *campaignv1.Campaign
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			status  string
			version int32
			created time.Time
		)
		err := tx.QueryRow(ctx, `SELECT status, version, created_at FROM campaigns WHERE workspace_id = $1 AND campaign_id = $2 FOR UPDATE`,
			ws, c.GetId()).Scan(&status, &version, &created)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		c.WorkspaceId = ws
		c.Version = version + 1
		c.Status = campaignv1.CampaignStatus_CAMPAIGN_STATUS_UNSPECIFIED
		c.CreateTime = timestamppb.New(created)
		c.UpdateTime = timestamppb.New(now)
		def, err := proto.Marshal(c)
		if err != nil {
			return err
		}
		kind, event, goal := triggerColumns(c)
		if _, err := tx.Exec(ctx, `
			UPDATE campaigns SET version = $3, trigger_kind = $4, trigger_event = $5, goal_event = $6, definition = $7, updated_at = $8,
				event_names = ARRAY(SELECT DISTINCT unnest(event_names || $9::text[]))
			WHERE workspace_id = $1 AND campaign_id = $2`,
			ws, c.Id, c.Version, kind, event, goal, def, now, eventNames(c)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO campaign_versions (workspace_id, campaign_id, version, definition, created_at) VALUES ($1, $2, $3, $4, $5)`,
			ws, c.Id, c.Version, def, now); err != nil {
			return err
		}
		c.Status = statusProto(status)
		out = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("update campaign: %w", err)
	}
	return out, nil
}

// getCampaign returns a campaign at version (0: the latest) with its
// current status.
func (s *Store) getCampaign(ctx context.Context, q querier, ws, id string, version int32) (*campaignv1.Campaign, error) {
	var (
		status string
		def    []byte
	)
	var err error
	if version == 0 {
		err = q.QueryRow(ctx, `SELECT status, definition FROM campaigns WHERE workspace_id = $1 AND campaign_id = $2`, ws, id).Scan(&status, &def)
	} else {
		err = q.QueryRow(ctx, `
			SELECT c.status, v.definition FROM campaign_versions v JOIN campaigns c USING (workspace_id, campaign_id)
			WHERE v.workspace_id = $1 AND v.campaign_id = $2 AND v.version = $3`, ws, id, version).Scan(&status, &def)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get campaign: %w", err)
	}
	return decodeCampaign(status, def)
}

func decodeCampaign(status string, def []byte) (*campaignv1.Campaign, error) {
	c := &campaignv1.Campaign{}
	if err := proto.Unmarshal(def, c); err != nil {
		return nil, fmt.Errorf("decode campaign: %w", err)
	}
	c.Status = statusProto(status)
	return c, nil
}

type campaignPage struct {
	campaigns []*campaignv1.Campaign
	// seqs[i] is the creation order of campaigns[i], for page tokens.
	seqs []int64
}

// listCampaigns returns up to limit campaigns created after afterSeq.
func (s *Store) listCampaigns(ctx context.Context, ws string, afterSeq int64, limit int) (campaignPage, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT seq, status, definition FROM campaigns WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, ws, afterSeq, limit)
	if err != nil {
		return campaignPage{}, fmt.Errorf("list campaigns: %w", err)
	}
	defer rows.Close()
	var page campaignPage
	for rows.Next() {
		var (
			seq    int64
			status string
			def    []byte
		)
		if err := rows.Scan(&seq, &status, &def); err != nil {
			return campaignPage{}, fmt.Errorf("list campaigns: %w", err)
		}
		c, err := decodeCampaign(status, def)
		if err != nil {
			return campaignPage{}, err
		}
		page.campaigns = append(page.campaigns, c)
		page.seqs = append(page.seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return campaignPage{}, fmt.Errorf("list campaigns: %w", err)
	}
	return page, nil
}

// setStatus changes a campaign's status and returns it.
func (s *Store) setStatus(ctx context.Context, ws, id, status string, now time.Time) (*campaignv1.Campaign, error) {
	var def []byte
	err := s.pool.QueryRow(ctx, `UPDATE campaigns SET status = $3 WHERE workspace_id = $1 AND campaign_id = $2 RETURNING definition`,
		ws, id, status).Scan(&def)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("set campaign status: %w", err)
	}
	return decodeCampaign(status, def)
}

// campaignSet is what the consumer needs of a workspace's campaigns.
type campaignSet struct {
	// Active campaigns by trigger event name, and those triggered by
	// profile changes.
	byEvent  map[string][]*campaignv1.Campaign
	onChange []*campaignv1.Campaign
	// Event names that may end a wait or convert a decision.
	names map[string]bool
}

// campaigns reads the campaign set of ws.
func (s *Store) campaigns(ctx context.Context, q querier, ws string) (*campaignSet, error) {
	rows, err := q.Query(ctx, `SELECT status, definition, event_names FROM campaigns WHERE workspace_id = $1`, ws)
	if err != nil {
		return nil, fmt.Errorf("read campaigns: %w", err)
	}
	defer rows.Close()
	set := &campaignSet{byEvent: map[string][]*campaignv1.Campaign{}, names: map[string]bool{}}
	for rows.Next() {
		var (
			status string
			def    []byte
			names  []string
		)
		if err := rows.Scan(&status, &def, &names); err != nil {
			return nil, fmt.Errorf("read campaigns: %w", err)
		}
		for _, n := range names {
			set.names[n] = true
		}
		if status != statusActive {
			continue
		}
		c, err := decodeCampaign(status, def)
		if err != nil {
			return nil, err
		}
		if e := c.GetTrigger().GetEvent(); e != nil {
			set.byEvent[e.GetName()] = append(set.byEvent[e.GetName()], c)
		} else {
			set.onChange = append(set.onChange, c)
		}
	}
	return set, rows.Err()
}

// snapshot returns the latest profile of a user from whisper.profiles, or
// nil when none has arrived.
func (s *Store) snapshot(ctx context.Context, q querier, ws, user string) (*profilev1.Profile, error) {
	var b []byte
	err := q.QueryRow(ctx, `SELECT profile FROM profile_snapshots WHERE workspace_id = $1 AND user_id = $2`, ws, user).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read profile snapshot: %w", err)
	}
	p := &profilev1.Profile{}
	if err := proto.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("decode profile snapshot: %w", err)
	}
	return p, nil
}

// saveSnapshot keeps p unless a later change is already kept.
func (s *Store) saveSnapshot(ctx context.Context, tx pgx.Tx, ws, user string, p *profilev1.Profile, at time.Time) error {
	b, err := proto.Marshal(p)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO profile_snapshots (workspace_id, user_id, profile, change_time) VALUES ($1, $2, $3, $4)
		ON CONFLICT (workspace_id, user_id) DO UPDATE SET profile = EXCLUDED.profile, change_time = EXCLUDED.change_time
		WHERE profile_snapshots.change_time <= EXCLUDED.change_time`, ws, user, b, at)
	if err != nil {
		return fmt.Errorf("save profile snapshot: %w", err)
	}
	return nil
}

// saveConsent records a Subscribed/Unsubscribed event unless a later one
// for the same channel and topic is already recorded.
func (s *Store) saveConsent(ctx context.Context, tx pgx.Tx, ws, user, channel, topic string, subscribed bool, at time.Time) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO consent (workspace_id, user_id, channel, topic, subscribed, event_time) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (workspace_id, user_id, channel, topic) DO UPDATE SET subscribed = EXCLUDED.subscribed, event_time = EXCLUDED.event_time
		WHERE consent.event_time <= EXCLUDED.event_time`, ws, user, channel, topic, subscribed, at)
	if err != nil {
		return fmt.Errorf("save consent: %w", err)
	}
	return nil
}

// consentState is a user's subscription to one channel and topic.
type consentState struct {
	channelUnsubscribed bool
	topicUnsubscribed   bool
}

// consentKey is one recorded consent; topic "" is the whole channel.
type consentKey struct{ channel, topic string }

// consent reads the user's recorded consent on the channels, in one query:
// unsubscribed[{channel, topic}] for each recorded one.
func (s *Store) consent(ctx context.Context, q querier, ws, user string, channels []string) (map[consentKey]bool, error) {
	rows, err := q.Query(ctx, `
		SELECT channel, topic, subscribed FROM consent WHERE workspace_id = $1 AND user_id = $2 AND channel = ANY ($3)`,
		ws, user, channels)
	if err != nil {
		return nil, fmt.Errorf("read consent: %w", err)
	}
	defer rows.Close()
	unsubscribed := map[consentKey]bool{}
	for rows.Next() {
		var (
			k   consentKey
			sub bool
		)
		if err := rows.Scan(&k.channel, &k.topic, &sub); err != nil {
			return nil, fmt.Errorf("read consent: %w", err)
		}
		unsubscribed[k] = !sub
	}
	return unsubscribed, rows.Err()
}

// consentOf says whether the user left channel, or topic on channel.
func consentOf(unsubscribed map[consentKey]bool, channel, topic string) consentState {
	st := consentState{channelUnsubscribed: unsubscribed[consentKey{channel, ""}]}
	if topic != "" {
		st.topicUnsubscribed = unsubscribed[consentKey{channel, topic}]
	}
	return st
}

// interest says whether event name can end a wait of the user or convert
// one of the user's decisions: one cheap read that spares the transactions
// of the firehose's many events that do neither.
func (s *Store) interest(ctx context.Context, q querier, ws, user, name string) (waits, goals bool, err error) {
	err = q.QueryRow(ctx, `
		SELECT
			EXISTS (SELECT 1 FROM waits WHERE workspace_id = $1 AND user_id = $2 AND (wait_for_event = $3 OR $3 = ANY (exit_events))),
			EXISTS (SELECT 1 FROM decisions WHERE workspace_id = $1 AND user_id = $2 AND goal_event = $3 AND converted_at IS NULL)`,
		ws, user, name).Scan(&waits, &goals)
	if err != nil {
		return false, false, fmt.Errorf("read waits and goals of the user: %w", err)
	}
	return waits, goals, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// userInputs are what a decision reads of its user: the profile snapshot
// (nil when none) and the recorded consent on the campaign's channels.
type userInputs struct {
	profile      *profilev1.Profile
	unsubscribed map[consentKey]bool
}

// saveDecision writes the final outcome and record of a decision a wait
// held into its row, and puts it in the outbox; goal and deadline are set
// when a conversion may reward it.
func (s *Store) saveDecision(ctx context.Context, tx pgx.Tx, d *decisionv1.Decision, goal string, deadline time.Time) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return err
	}
	var goalArg, deadlineArg any
	if goal != "" {
		goalArg, deadlineArg = goal, deadline
	}
	_, err = tx.Exec(ctx, `
		WITH d AS (
			UPDATE decisions SET outcome = $3, variant_id = $4, decided_at = $5, goal_event = $6, goal_deadline = $7, record = $8, campaign_version = $9
			WHERE workspace_id = $1 AND decision_id = $2
			RETURNING workspace_id, decision_id, decided_at)
		INSERT INTO decision_outbox (workspace_id, decision_id, decided_at) SELECT * FROM d ON CONFLICT DO NOTHING`,
		d.WorkspaceId, d.DecisionId, outcomeName(d.Outcome), d.VariantId, d.DecideTime.AsTime(), goalArg, deadlineArg, b, d.CampaignVersion)
	if err != nil {
		return fmt.Errorf("save decision: %w", err)
	}
	return nil
}

// decision reads one decision.
func (s *Store) decision(ctx context.Context, q querier, ws, id string) (*decisionv1.Decision, error) {
	var b []byte
	err := q.QueryRow(ctx, `SELECT record FROM decisions WHERE workspace_id = $1 AND decision_id = $2`, ws, id).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read decision: %w", err)
	}
	d := &decisionv1.Decision{}
	if err := proto.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("decode decision: %w", err)
	}
	return d, nil
}

type decisionPage struct {
	decisions []*decisionv1.Decision
	lastSeq   int64
}

// listDecisions returns up to limit decisions of ws older than beforeSeq
// (0: from the newest), of one user and/or campaign when those are set.
func (s *Store) listDecisions(ctx context.Context, ws, user, campaign string, beforeSeq int64, limit int) (decisionPage, error) {
	// Only the filters asked for are in the statement, so the planner
	// picks the (workspace, user, seq) or (workspace, campaign, seq) index;
	// the latter is partial on seq > 0 (see migration 00002), always true.
	if beforeSeq == 0 {
		beforeSeq = math.MaxInt64
	}
	q := `SELECT seq, record FROM decisions WHERE workspace_id = $1 AND seq < $2 AND seq > 0`
	args := []any{ws, beforeSeq}
	if user != "" {
		args = append(args, user)
		q += fmt.Sprintf(" AND user_id = $%d", len(args))
	}
	if campaign != "" {
		args = append(args, campaign)
		q += fmt.Sprintf(" AND campaign_id = $%d", len(args))
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY seq DESC LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return decisionPage{}, fmt.Errorf("list decisions: %w", err)
	}
	defer rows.Close()
	var page decisionPage
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&page.lastSeq, &b); err != nil {
			return decisionPage{}, fmt.Errorf("list decisions: %w", err)
		}
		d := &decisionv1.Decision{}
		if err := proto.Unmarshal(b, d); err != nil {
			return decisionPage{}, fmt.Errorf("decode decision: %w", err)
		}
		page.decisions = append(page.decisions, d)
	}
	return page, rows.Err()
}

// outboxKey names a decision's row in the outbox.
type outboxKey struct{ ws, id string }

// deleteOutbox takes acknowledged decisions out of the outbox.
func (s *Store) deleteOutbox(ctx context.Context, keys []outboxKey) error {
	ws, ids := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ws[i], ids[i] = k.ws, k.id
	}
	_, err := s.pool.Exec(ctx, `
		DELETE FROM decision_outbox o USING unnest($1::uuid[], $2::uuid[]) AS x(ws, id)
		WHERE o.workspace_id = x.ws AND o.decision_id = x.id`, ws, ids)
	if err != nil {
		return fmt.Errorf("delete %d published decisions from the outbox: %w", len(keys), err)
	}
	return nil
}

// outboxBacklog returns how many decisions are in the outbox and the age
// of the oldest.
func (s *Store) outboxBacklog(ctx context.Context, now time.Time) (int64, time.Duration, error) {
	return postgres.Backlog(ctx, s.pool, "decision_outbox", "decided_at", now)
}

// unpublished returns decisions in the outbox decided before olderThan:
// those whose publisher failed or stopped.
func (s *Store) unpublished(ctx context.Context, olderThan time.Time, limit int) ([]*decisionv1.Decision, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT d.record FROM decision_outbox o JOIN decisions d USING (workspace_id, decision_id)
		WHERE o.decided_at < $1 ORDER BY o.decided_at LIMIT $2`, olderThan, limit)
	if err != nil {
		return nil, fmt.Errorf("read unpublished decisions: %w", err)
	}
	defer rows.Close()
	var out []*decisionv1.Decision
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("read unpublished decisions: %w", err)
		}
		d := &decisionv1.Decision{}
		if err := proto.Unmarshal(b, d); err != nil {
			return nil, fmt.Errorf("decode decision: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// queueWait adds to b the statement that holds decision d until due, if
// d's row was inserted (see writes.write: it may have lost its trigger to
// another transaction's decision, and the batch must then end without an
// error to say so).
func queueWait(b *pgx.Batch, d *decisionv1.Decision, due time.Time, waitFor string, exits []string) {
	var waitForArg any
	if waitFor != "" {
		waitForArg = waitFor
	}
	if exits == nil {
		exits = []string{}
	}
	b.Queue(`
		INSERT INTO waits (workspace_id, decision_id, user_id, due_at, wait_for_event, exit_events)
		SELECT $1::uuid, $2::uuid, $3::text, $4::timestamptz, $5::text, $6::text[]
		WHERE EXISTS (SELECT 1 FROM decisions WHERE workspace_id = $1 AND decision_id = $2)`,
		d.WorkspaceId, d.DecisionId, d.UserId, due, waitForArg, exits)
}

// pendingWait is a wait, locked by the transaction that read it.
type pendingWait struct {
	decision *decisionv1.Decision
	waitFor  string
	exits    []string
	due      time.Time
}

// lockWaits locks waits of one user the event name ends (as awaited or
// exit event), or, when user is empty, waits due by now; at most limit,
// skipping those another transaction holds.
func (s *Store) lockWaits(ctx context.Context, tx pgx.Tx, ws, user, name string, now time.Time, limit int) ([]pendingWait, error) {
	var (
		rows pgx.Rows
		err  error
	)
	if user == "" {
		rows, err = tx.Query(ctx, `
			SELECT d.record, coalesce(w.wait_for_event, ''), w.exit_events, w.due_at FROM waits w JOIN decisions d USING (workspace_id, decision_id)
			WHERE w.due_at <= $1 ORDER BY w.due_at LIMIT $2 FOR UPDATE OF w SKIP LOCKED`, now, limit)
	} else {
		rows, err = tx.Query(ctx, `
			SELECT d.record, coalesce(w.wait_for_event, ''), w.exit_events, w.due_at FROM waits w JOIN decisions d USING (workspace_id, decision_id)
			WHERE w.workspace_id = $1 AND w.user_id = $2 AND (w.wait_for_event = $3 OR $3 = ANY (w.exit_events))
			LIMIT $4 FOR UPDATE OF w`, ws, user, name, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("lock waits: %w", err)
	}
	defer rows.Close()
	var out []pendingWait
	for rows.Next() {
		var (
			b []byte
			w pendingWait
		)
		if err := rows.Scan(&b, &w.waitFor, &w.exits, &w.due); err != nil {
			return nil, fmt.Errorf("lock waits: %w", err)
		}
		w.decision = &decisionv1.Decision{}
		if err := proto.Unmarshal(b, w.decision); err != nil {
			return nil, fmt.Errorf("decode waiting decision: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

func (s *Store) deleteWait(ctx context.Context, tx pgx.Tx, ws, decisionID string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM waits WHERE workspace_id = $1 AND decision_id = $2`, ws, decisionID); err != nil {
		return fmt.Errorf("delete wait: %w", err)
	}
	return nil
}

// conversion is a sent (or held out) decision that a goal event converts.
type conversion struct {
	decisionID, campaignID, variantID string
}

// convert marks, per campaign, the latest unconverted decision of the user
// whose goal is name and whose window holds at, and returns them.
func (s *Store) convert(ctx context.Context, tx pgx.Tx, ws, user, name string, at time.Time) ([]conversion, error) {
	rows, err := tx.Query(ctx, `
		UPDATE decisions d SET converted_at = $4
		FROM (
			SELECT DISTINCT ON (campaign_id) decision_id FROM decisions
			WHERE workspace_id = $1 AND user_id = $2 AND goal_event = $3 AND converted_at IS NULL
			  AND decided_at <= $4 AND goal_deadline >= $4
			ORDER BY campaign_id, seq DESC
		) c
		WHERE d.workspace_id = $1 AND d.decision_id = c.decision_id
		RETURNING d.decision_id, d.campaign_id, d.variant_id`, ws, user, name, at)
	if err != nil {
		return nil, fmt.Errorf("record conversions: %w", err)
	}
	defer rows.Close()
	var out []conversion
	for rows.Next() {
		var c conversion
		if err := rows.Scan(&c.decisionID, &c.campaignID, &c.variantID); err != nil {
			return nil, fmt.Errorf("record conversions: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// userKey is one user of a workspace.
type userKey struct{ ws, user string }

// earlier is a decision an earlier delivery of a trigger made. pending
// says it is in the outbox although it was decided before the
// abandonedBefore its reader gave (its publisher failed or stopped); one
// decided since may still be in its publisher's hands (Decide answers
// before publishing, the consumer commits offsets before the broker
// acknowledges): publishing it again would only duplicate it, and the
// outbox sweeper publishes it should that publisher fail.
type earlier struct {
	d       *decisionv1.Decision
	pending bool
}

// queueEarlier adds to b one statement reading the decisions already made
// for the keys into found (by key).
func queueEarlier(b *pgx.Batch, keys []triggerKey, abandonedBefore time.Time, found map[triggerKey]earlier) {
	ws, campaigns, triggers := make([]string, len(keys)), make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ws[i], campaigns[i], triggers[i] = k.ws, k.campaign, k.trigger
	}
	b.Queue(`
		SELECT d.workspace_id::text, d.campaign_id::text, d.trigger_id, d.record, o.decided_at IS NOT NULL AND o.decided_at < $4
		FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS x(ws, campaign, trig)
		JOIN decisions d ON d.workspace_id = x.ws AND d.campaign_id = x.campaign AND d.trigger_id = x.trig
		LEFT JOIN decision_outbox o ON o.workspace_id = d.workspace_id AND o.decision_id = d.decision_id`,
		ws, campaigns, triggers, abandonedBefore).Query(func(rows pgx.Rows) error {
		var (
			k       triggerKey
			rec     []byte
			pending bool
		)
		_, err := pgx.ForEachRow(rows, []any{&k.ws, &k.campaign, &k.trigger, &rec, &pending}, func() error {
			d := &decisionv1.Decision{}
			if err := proto.Unmarshal(rec, d); err != nil {
				return fmt.Errorf("decode decision: %w", err)
			}
			found[k] = earlier{d: d, pending: pending}
			return nil
		})
		return err
	})
}

// readAll reads, in one round trip of three set-based statements (one per
// kind, not per decision), what deciding a batch needs: the decisions
// earlier deliveries of its triggers made (see earlier), and the users'
// profile snapshots and consent (in, by distinct user). A trigger found
// decided here may also be decided meanwhile by another transaction: the
// decisions' INSERT finds that out (see writes.write).
func (s *Store) readAll(ctx context.Context, tx pgx.Tx, keys []triggerKey, users []userKey, abandonedBefore time.Time) (map[triggerKey]earlier, map[userKey]*userInputs, error) {
	var (
		uws, uusers []string
		in          = make(map[userKey]*userInputs, len(users))
		found       = map[triggerKey]earlier{}
	)
	for _, k := range users {
		if in[k] == nil {
			in[k] = &userInputs{unsubscribed: map[consentKey]bool{}}
			uws, uusers = append(uws, k.ws), append(uusers, k.user)
		}
	}
	b := &pgx.Batch{}
	queueEarlier(b, keys, abandonedBefore, found)
	b.Queue(`
		SELECT p.workspace_id::text, p.user_id, p.profile FROM profile_snapshots p
		JOIN unnest($1::uuid[], $2::text[]) AS u(ws, usr) ON p.workspace_id = u.ws AND p.user_id = u.usr`, uws, uusers).
		Query(func(rows pgx.Rows) error {
			var (
				k    userKey
				snap []byte
			)
			_, err := pgx.ForEachRow(rows, []any{&k.ws, &k.user, &snap}, func() error {
				p := &profilev1.Profile{}
				if err := proto.Unmarshal(snap, p); err != nil {
					return fmt.Errorf("decode profile snapshot: %w", err)
				}
				if u := in[k]; u != nil {
					u.profile = p
				}
				return nil
			})
			return err
		})
	b.Queue(`
		SELECT c.workspace_id::text, c.user_id, c.channel, c.topic, c.subscribed FROM consent c
		JOIN unnest($1::uuid[], $2::text[]) AS u(ws, usr) ON c.workspace_id = u.ws AND c.user_id = u.usr`, uws, uusers).
		Query(func(rows pgx.Rows) error {
			var (
				k   userKey
				ck  consentKey
				sub bool
			)
			_, err := pgx.ForEachRow(rows, []any{&k.ws, &k.user, &ck.channel, &ck.topic, &sub}, func() error {
				if u := in[k]; u != nil {
					u.unsubscribed[ck] = !sub
				}
				return nil
			})
			return err
		})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, fmt.Errorf("read %d triggers and their users: %w", len(keys), err)
	}
	return found, in, nil
}

// decisionSave is one decision to write; goal and deadline are set when a
// conversion may reward it.
type decisionSave struct {
	d        *decisionv1.Decision
	goal     string
	deadline time.Time
}

// saveColumns are saves' column values, and each decision's record as
// written, which is also what whisper.decisions gets.
type saveColumns struct {
	ws, ids, campaigns, users, triggers, outcomes, variants []string
	at                                                      []time.Time
	goals                                                   []*string
	deadlines                                               []*time.Time
	records                                                 [][]byte
	versions                                                []int32
}

func columnsOf(saves []decisionSave) (saveColumns, error) {
	n := len(saves)
	c := saveColumns{
		ws: make([]string, n), ids: make([]string, n), campaigns: make([]string, n), users: make([]string, n),
		triggers: make([]string, n), outcomes: make([]string, n), variants: make([]string, n),
		at: make([]time.Time, n), goals: make([]*string, n), deadlines: make([]*time.Time, n),
		records: make([][]byte, n), versions: make([]int32, n),
	}
	for i, sv := range saves {
		d := sv.d
		rec, err := d.MarshalVT() // generated, without proto.Marshal's reflection
		if err != nil {
			return saveColumns{}, err
		}
		c.ws[i], c.ids[i], c.campaigns[i], c.users[i], c.triggers[i] = d.WorkspaceId, d.DecisionId, d.CampaignId, d.UserId, d.TriggerId
		c.outcomes[i], c.variants[i] = outcomeName(d.Outcome), d.VariantId
		c.at[i], c.records[i], c.versions[i] = d.DecideTime.AsTime(), rec, d.CampaignVersion
		if sv.goal != "" {
			g, dl := sv.goal, sv.deadline
			c.goals[i], c.deadlines[i] = &g, &dl
		}
	}
	return c, nil
}

// queueInserts adds to b one statement inserting every save as a new
// decision row, final ones into the outbox too, unless its trigger has a
// decision already (another transaction's, made meanwhile); inserted gets
// the ids of the rows inserted. It returns each decision's record.
func queueInserts(b *pgx.Batch, saves []decisionSave, inserted map[string]bool) ([][]byte, error) {
	if len(saves) == 0 {
		return nil, nil
	}
	c, err := columnsOf(saves)
	if err != nil {
		return nil, err
	}
	b.Queue(`
		WITH d AS (
			INSERT INTO decisions (workspace_id, decision_id, campaign_id, campaign_version, user_id, trigger_id, outcome, variant_id,
				decided_at, goal_event, goal_deadline, record)
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::timestamptz[], $10::text[], $11::timestamptz[], $12::bytea[])
			ON CONFLICT (workspace_id, campaign_id, trigger_id) DO NOTHING
			RETURNING workspace_id, decision_id, decided_at, outcome),
		o AS (
			INSERT INTO decision_outbox (workspace_id, decision_id, decided_at)
			SELECT workspace_id, decision_id, decided_at FROM d WHERE outcome <> 'waiting')
		SELECT decision_id::text FROM d`,
		c.ws, c.ids, c.campaigns, c.versions, c.users, c.triggers, c.outcomes, c.variants, c.at, c.goals, c.deadlines, c.records,
	).Query(func(rows pgx.Rows) error {
		var id string
		_, err := pgx.ForEachRow(rows, []any{&id}, func() error {
			inserted[id] = true
			return nil
		})
		return err
	})
	return c.records, nil
}

// queueUpdates adds to b one statement writing every save, final, into
// the row its wait held (saveDecision for a batch) and into the outbox. It
// returns each decision's record.
func queueUpdates(b *pgx.Batch, saves []decisionSave) ([][]byte, error) {
	if len(saves) == 0 {
		return nil, nil
	}
	c, err := columnsOf(saves)
	if err != nil {
		return nil, err
	}
	b.Queue(`
		WITH d AS (
			UPDATE decisions d SET outcome = x.outcome, variant_id = x.variant, decided_at = x.at, goal_event = x.goal,
				goal_deadline = x.deadline, record = x.record, campaign_version = x.version
			FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::timestamptz[], $8::bytea[], $9::int[])
				AS x(ws, id, outcome, variant, at, goal, deadline, record, version)
			WHERE d.workspace_id = x.ws AND d.decision_id = x.id
			RETURNING d.workspace_id, d.decision_id, d.decided_at)
		INSERT INTO decision_outbox (workspace_id, decision_id, decided_at) SELECT * FROM d ON CONFLICT DO NOTHING`,
		c.ws, c.ids, c.outcomes, c.variants, c.at, c.goals, c.deadlines, c.records, c.versions)
	return c.records, nil
}
