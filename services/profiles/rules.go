package profiles

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
)

// rulesColumns are read by scanRulesRow, in its order.
const rulesColumns = `workspace_id::text, activation_event, new_days, engaged_active_days,
	at_risk_idle_days, at_risk_trend, dormant_idle_days, churned_idle_days, updated_at`

func scanRulesRow(row pgx.Row) (string, Rules, time.Time, error) {
	var ws string
	var r Rules
	var updated time.Time
	err := row.Scan(&ws, &r.ActivationEvent, &r.NewDays, &r.EngagedActiveDays,
		&r.AtRiskIdleDays, &r.AtRiskTrend, &r.DormantIdleDays, &r.ChurnedIdleDays, &updated)
	return ws, r, updated, err
}

// scanRules reads the next result of br, a query of rulesColumns, by
// workspace.
func scanRules(br pgx.BatchResults) (map[string]Rules, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read lifecycle rules: %w", err)
	}
	defer rows.Close()
	out := map[string]Rules{}
	for rows.Next() {
		ws, r, _, err := scanRulesRow(rows)
		if err != nil {
			return nil, fmt.Errorf("read lifecycle rules: %w", err)
		}
		out[ws] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read lifecycle rules: %w", err)
	}
	return out, nil
}

// rulesOf returns the lifecycle rules of the given workspaces that have
// set some.
func rulesOf(ctx context.Context, q interface {
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}, ws []string) (map[string]Rules, error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT `+rulesColumns+` FROM profiles_lifecycle_rules WHERE workspace_id = ANY($1::text[]::uuid[])`, ws)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	out, err := scanRules(br)
	if err != nil {
		return nil, err
	}
	return out, br.Close()
}

// getRules returns workspace ws's rules, with when they were set; the
// defaults and a zero time when it has set none.
func (s *Store) getRules(ctx context.Context, ws string) (Rules, time.Time, error) {
	_, r, updated, err := scanRulesRow(s.pool.QueryRow(ctx, `SELECT `+rulesColumns+` FROM profiles_lifecycle_rules WHERE workspace_id = $1`, ws))
	if errors.Is(err, pgx.ErrNoRows) {
		return DefaultRules, time.Time{}, nil
	}
	if err != nil {
		return Rules{}, time.Time{}, fmt.Errorf("read lifecycle rules: %w", err)
	}
	return r, updated, nil
}

// putRules replaces workspace ws's rules (valid ones) and makes all its
// profiles due, so that the sweeper re-stages them by the new rules. It
// holds the workspace's rules lock exclusively, so no batch of the
// workspace is in flight with the old rules when it commits (see
// markApplied); the UPDATE is one statement over the workspace's profiles.
func (s *Store) putRules(ctx context.Context, ws string, r Rules) (time.Time, error) {
	var updated time.Time
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, rulesLockKey(ws)); err != nil {
			return fmt.Errorf("lock lifecycle rules: %w", err)
		}
		if err := tx.QueryRow(ctx, `
			INSERT INTO profiles_lifecycle_rules (workspace_id, activation_event, new_days, engaged_active_days,
			  at_risk_idle_days, at_risk_trend, dormant_idle_days, churned_idle_days, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
			ON CONFLICT (workspace_id) DO UPDATE SET
			  activation_event = excluded.activation_event, new_days = excluded.new_days,
			  engaged_active_days = excluded.engaged_active_days, at_risk_idle_days = excluded.at_risk_idle_days,
			  at_risk_trend = excluded.at_risk_trend, dormant_idle_days = excluded.dormant_idle_days,
			  churned_idle_days = excluded.churned_idle_days, updated_at = excluded.updated_at
			RETURNING updated_at`,
			ws, r.ActivationEvent, r.NewDays, r.EngagedActiveDays, r.AtRiskIdleDays, r.AtRiskTrend,
			r.DormantIdleDays, r.ChurnedIdleDays).Scan(&updated); err != nil {
			return fmt.Errorf("write lifecycle rules: %w", err)
		}
		// The epoch, not now(): due whatever the sweeper's clock says.
		if _, err := tx.Exec(ctx, `UPDATE profiles SET stage_due_at = 'epoch' WHERE workspace_id = $1`, ws); err != nil {
			return fmt.Errorf("make profiles due: %w", err)
		}
		return nil
	})
	return updated, err
}

func rulesToProto(r Rules) *profilev1.LifecycleRules {
	return &profilev1.LifecycleRules{
		ActivationEvent:   r.ActivationEvent,
		NewDays:           int32(r.NewDays),
		EngagedActiveDays: int32(r.EngagedActiveDays),
		AtRiskIdleDays:    int32(r.AtRiskIdleDays),
		AtRiskTrend:       r.AtRiskTrend,
		DormantIdleDays:   int32(r.DormantIdleDays),
		ChurnedIdleDays:   int32(r.ChurnedIdleDays),
	}
}

func rulesFromProto(p *profilev1.LifecycleRules) Rules {
	return Rules{
		ActivationEvent:   p.GetActivationEvent(),
		NewDays:           int(p.GetNewDays()),
		EngagedActiveDays: int(p.GetEngagedActiveDays()),
		AtRiskIdleDays:    int(p.GetAtRiskIdleDays()),
		AtRiskTrend:       p.GetAtRiskTrend(),
		DormantIdleDays:   int(p.GetDormantIdleDays()),
		ChurnedIdleDays:   int(p.GetChurnedIdleDays()),
	}
}

// GetLifecycleRules returns the workspace's lifecycle rules.
func (h *Handler) GetLifecycleRules(ctx context.Context, req *profilev1.GetLifecycleRulesRequest) (*profilev1.GetLifecycleRulesResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	r, updated, err := h.store.getRules(ctx, ws)
	if err != nil {
		return nil, h.internal(ctx, "get lifecycle rules", err)
	}
	resp := &profilev1.GetLifecycleRulesResponse{Rules: rulesToProto(r), Defaults: updated.IsZero()}
	if !updated.IsZero() {
		resp.UpdateTime = timestamppb.New(updated)
	}
	return resp, nil
}

// UpdateLifecycleRules replaces the workspace's lifecycle rules.
func (h *Handler) UpdateLifecycleRules(ctx context.Context, req *profilev1.UpdateLifecycleRulesRequest) (*profilev1.UpdateLifecycleRulesResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if req.GetRules() == nil {
		return nil, invalid("rules", "required")
	}
	r := rulesFromProto(req.GetRules())
	if err := r.Validate(); err != nil {
		var re *RuleError
		if errors.As(err, &re) {
			return nil, invalid("rules."+re.Field, re.Problem)
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	updated, err := h.store.putRules(ctx, ws, r)
	if err != nil {
		return nil, h.internal(ctx, "update lifecycle rules", err)
	}
	return &profilev1.UpdateLifecycleRulesResponse{Rules: rulesToProto(r), UpdateTime: timestamppb.New(updated)}, nil
}
