package profiles

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// sweepResult says what one sweep did.
type sweepResult struct {
	// recomputed counts the due profiles taken; changes the outbox rows
	// written; transitions the stage changes, as [from, to].
	recomputed, changes int
	transitions         [][2]string
	touched             []profileKey
}

// sweep recomputes up to limit profiles whose stage_due_at has passed at
// now, in one transaction: their stage, scores and inputs, their next due
// time, and an outbox row for each change that matters. Rows that a batch
// is applying are skipped, not waited for: that batch recomputes them.
func (s *Store) sweep(ctx context.Context, now time.Time, limit int) (sweepResult, error) {
	var res sweepResult
	nowMicros := now.UnixMicro()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res = sweepResult{}
		rows, err := tx.Query(ctx, `
			SELECT workspace_id::text, profile_id::text, event_counts, daily, first_seen, last_seen, stage, engagement_score
			FROM profiles WHERE stage_due_at <= $1
			ORDER BY stage_due_at LIMIT $2
			FOR UPDATE SKIP LOCKED`, now, limit)
		if err != nil {
			return fmt.Errorf("read due profiles: %w", err)
		}
		var due []*profile
		wsSet := map[string]bool{}
		for rows.Next() {
			p := &profile{stored: true}
			var counts, daily []byte
			var first, last time.Time
			if err := rows.Scan(&p.key.ws, &p.key.id, &counts, &daily, &first, &last, &p.stage, &p.score); err != nil {
				rows.Close()
				return fmt.Errorf("read due profiles: %w", err)
			}
			if err := json.Unmarshal(counts, &p.counts); err != nil {
				rows.Close()
				return fmt.Errorf("profile %s: %w", p.key.id, err)
			}
			if err := json.Unmarshal(daily, &p.daily); err != nil {
				rows.Close()
				return fmt.Errorf("profile %s: %w", p.key.id, err)
			}
			p.firstSeen, p.lastSeen = first.UnixMicro(), last.UnixMicro()
			due = append(due, p)
			wsSet[p.key.ws] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read due profiles: %w", err)
		}
		if len(due) == 0 {
			return nil
		}
		rules, err := rulesOf(ctx, tx, slices.Collect(maps.Keys(wsSet)))
		if err != nil {
			return err
		}

		var (
			ws, ids, stages, inputs []string
			moved, mattered         []bool
			scores                  []int32
			risks                   []float64
			dues                    []*time.Time
			changes                 []change
		)
		for _, p := range due {
			r, ok := rules[p.key.ws]
			if !ok {
				r = DefaultRules
			}
			activated := p.counts[r.ActivationEvent] > 0
			st := evaluate(p.daily, p.firstSeen, p.lastSeen, activated, r, nowMicros)
			c := change{key: p.key, previousStage: p.stage, stage: st.stage, previousBand: scoreBand(p.score), band: scoreBand(st.score)}
			if c.matters() {
				changes = append(changes, c)
				if c.previousStage != c.stage {
					res.transitions = append(res.transitions, [2]string{c.previousStage, c.stage})
				}
				res.touched = append(res.touched, p.key)
			}
			in, err := json.Marshal(st.inputs)
			if err != nil {
				return fmt.Errorf("profile %s: %w", p.key.id, err)
			}
			ws, ids = append(ws, p.key.ws), append(ids, p.key.id)
			stages, inputs = append(stages, st.stage), append(inputs, string(in))
			moved, mattered = append(moved, st.stage != p.stage), append(mattered, c.matters())
			scores, risks = append(scores, st.score), append(risks, st.risk)
			dues = append(dues, dueTime(dueAt(p.daily, p.firstSeen, p.lastSeen, activated, r, nowMicros)))
		}
		// Only a profile whose stage or band moved counts as written
		// (updated_at); the others keep theirs but get their new inputs
		// and due time, since their scores may have moved within a band.
		wb := &pgx.Batch{}
		wb.Queue(`
			UPDATE profiles p SET
			  stage = u.st, engagement_score = u.sc, churn_risk = u.cr, score_inputs = u.si::jsonb, stage_due_at = u.due,
			  stage_time = CASE WHEN u.moved OR p.stage_time IS NULL THEN $10 ELSE p.stage_time END,
			  updated_at = CASE WHEN u.mattered THEN $10 ELSE p.updated_at END
			FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::int[], $5::float8[], $6::text[], $7::timestamptz[], $8::bool[], $9::bool[])
			  AS u(ws, id, st, sc, cr, si, due, moved, mattered)
			WHERE p.workspace_id = u.ws AND p.profile_id = u.id`,
			ws, ids, stages, scores, risks, inputs, dues, moved, mattered, now)
		if len(changes) > 0 {
			queueReadBack(wb, changes)
		}
		br := tx.SendBatch(ctx, wb)
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("write swept profiles: %w", err)
		}
		if len(changes) > 0 {
			if err := readBack(br, changes); err != nil {
				br.Close()
				return err
			}
		}
		if err := br.Close(); err != nil {
			return fmt.Errorf("write swept profiles: %w", err)
		}
		n, err := insertOutbox(ctx, tx, changes, now)
		if err != nil {
			return err
		}
		res.recomputed, res.changes = len(due), n
		return nil
	})
	if err == nil {
		s.hub.publish(res.touched)
	}
	return res, err
}
