package profiles

import (
	"context"
	"fmt"
	"time"
)

// DefaultUsersInterval is how often the profiles per lifecycle stage are
// counted for whisper_profiles_users. The count scans the profiles table,
// so it runs on a timer, never per request or per batch; a minute is fresh
// enough for a dashboard of populations that move over days.
const DefaultUsersInterval = time.Minute

// stages are the lifecycle stages, each always exported (0 when no profile
// is in it) so that a stage emptied since the last count reads 0 and not
// its last value.
var stages = []string{StageNew, StageActivated, StageEngaged, StageAtRisk, StageDormant, StageChurned}

// usersByStage counts the profiles in each lifecycle stage, all workspaces
// together.
func (s *Store) usersByStage(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT stage, count(*) FROM profiles GROUP BY stage`)
	if err != nil {
		return nil, fmt.Errorf("count profiles by stage: %w", err)
	}
	defer rows.Close()
	n := map[string]int64{}
	for rows.Next() {
		var stage string
		var c int64
		if err := rows.Scan(&stage, &c); err != nil {
			return nil, fmt.Errorf("count profiles by stage: %w", err)
		}
		n[stage] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count profiles by stage: %w", err)
	}
	return n, nil
}

// countUsers sets whisper_profiles_users from one count.
func (s *Service) countUsers(ctx context.Context) error {
	n, err := s.store.usersByStage(ctx)
	if err != nil {
		return err
	}
	for _, stage := range stages {
		s.metrics.users.WithLabelValues(stage).Set(float64(n[stage]))
	}
	return nil
}

// usersLoop counts the users per stage at start and every usersEvery.
// Every replica counts (they all read the same table), which dashboards
// absorb with max; a failed count leaves the last values and is retried
// at the next tick.
func (s *Service) usersLoop(ctx context.Context) {
	t := time.NewTicker(s.usersEvery)
	defer t.Stop()
	for {
		if err := s.countUsers(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "count users by stage; retrying at the next interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
