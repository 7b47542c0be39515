package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Backlog counts the rows of a queue table (an outbox) and returns how old
// its oldest is at now by the timestamp column; the age is 0 when the
// table is empty. table and column are the caller's identifiers, quoted
// here.
func Backlog(ctx context.Context, pool *pgxpool.Pool, table, column string, now time.Time) (rows int64, oldest time.Duration, err error) {
	var first *time.Time
	query := fmt.Sprintf(`SELECT count(*), min(%s) FROM %s`, pgx.Identifier{column}.Sanitize(), pgx.Identifier{table}.Sanitize())
	if err := pool.QueryRow(ctx, query).Scan(&rows, &first); err != nil {
		return 0, 0, fmt.Errorf("backlog of %s: %w", table, err)
	}
	if first == nil {
		return rows, 0, nil
	}
	return rows, max(0, now.Sub(*first)), nil
}
