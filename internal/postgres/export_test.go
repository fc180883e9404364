package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// What the tests outside the package reach of its inside.

// Wakeups is wakeups.
var Wakeups = wakeups

// EnqueuePiped queues jobs as a hot act does: in a pipe, the waker waking
// their queue after the commit.
func (db *DB) EnqueuePiped(ctx context.Context, params []river.InsertManyParams) error {
	return db.piped(ctx, func(p *pipe) error {
		if err := db.enqueuePiped(ctx, p, params); err != nil {
			return err
		}
		return p.Commit(ctx)
	})
}

// Enqueue queues jobs as a rare act does: the wake-up in its transaction.
func (db *DB) Enqueue(ctx context.Context, params []river.InsertManyParams) error {
	return db.Transact(ctx, func(tx pgx.Tx) error {
		_, err := db.enqueue(ctx, tx, params)
		return err
	})
}

// SettleSQL is settleSQL.
const SettleSQL = settleSQL
