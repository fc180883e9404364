package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A pipe is a transaction whose statements travel in batches: BEGIN rides
// with the first batch and COMMIT with the last, so an act that needs to
// look at the database once before it writes costs two round trips, not one
// per statement. On loopback a round trip costs a client about 40 µs of CPU
// and a batched statement about 7, so the hot paths use pipes.
//
// Statements run in the order queued. Their results reach the callbacks set
// on the queued queries (QueuedQuery.QueryRow, Exec, Query) when the batch
// is sent. An error in one statement skips the rest of its batch and leaves
// the transaction failed: Close then rolls it back.
type pipe struct {
	conn  *pgxpool.Conn
	tx    pgx.Tx // the transaction once BEGIN has been sent, for code that wants a pgx.Tx (River)
	batch *pgx.Batch
	// committed runs once COMMIT has succeeded.
	committed []func()
}

// afterCommit has f run once the transaction has committed.
func (p *pipe) afterCommit(f func()) { p.committed = append(p.committed, f) }

// openPipe takes a connection and queues BEGIN.
func (db *DB) openPipe(ctx context.Context) (*pipe, error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	p := &pipe{conn: conn, batch: &pgx.Batch{}}
	p.batch.BeginTx(pgx.TxOptions{})
	return p, nil
}

// Queue adds a statement to the next batch.
func (p *pipe) Queue(sql string, args ...any) *pgx.QueuedQuery { return p.batch.Queue(sql, args...) }

// Send sends the queued statements in one round trip and runs their
// callbacks.
func (p *pipe) Send(ctx context.Context) error {
	if p.batch.Len() == 0 {
		return nil
	}
	b := p.batch
	p.batch = &pgx.Batch{}
	br := p.conn.SendBatch(ctx, b)
	if p.tx == nil {
		p.tx = br.Tx()
	}
	return br.Close()
}

// Tx is the transaction as a pgx.Tx, for libraries that take one. Queued
// statements are sent first, so that order is kept.
func (p *pipe) Tx(ctx context.Context) (pgx.Tx, error) {
	if err := p.Send(ctx); err != nil {
		return nil, err
	}
	return p.tx, nil
}

// Commit sends the queued statements and COMMIT in one round trip and
// gives the connection back.
func (p *pipe) Commit(ctx context.Context) error {
	var tag pgconn.CommandTag
	p.Queue("commit").Exec(func(ct pgconn.CommandTag) error { tag = ct; return nil })
	if err := p.Send(ctx); err != nil {
		return err // Close rolls back
	}
	p.conn.Release()
	p.conn = nil
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	for _, f := range p.committed {
		f()
	}
	return nil
}

// Close rolls back unless committed, and gives the connection back (a
// connection whose rollback fails is closed instead). Safe to defer.
func (p *pipe) Close() {
	if p.conn == nil {
		return
	}
	conn := p.conn
	p.conn = nil
	if conn.Conn().PgConn().TxStatus() != 'I' && !conn.Conn().IsClosed() {
		// The request's context may be gone: roll back on a short one of
		// our own rather than lose the connection.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := conn.Exec(ctx, "rollback")
		cancel()
		if err != nil {
			_ = conn.Conn().Close(context.Background())
		}
	}
	conn.Release()
}

// retryable reports an error after which an act can simply start over: a
// deadlock or serialization failure rolled everything back.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// piped runs fn with a fresh pipe, closing it after, and starts over (up to
// three times) when the database asks for a retry.
func (db *DB) piped(ctx context.Context, fn func(p *pipe) error) error {
	for attempt := 1; ; attempt++ {
		p, err := db.openPipe(ctx)
		if err != nil {
			return err
		}
		err = fn(p)
		p.Close()
		if attempt < 4 && retryable(err) {
			continue
		}
		return err
	}
}
