// Package postgres holds all of the service's SQL. It implements the domain's
// operations on PostgreSQL through pgx, each act in one transaction together
// with its audit event, and translates database errors into domain errors so
// that no pgx or pgconn error leaves the package.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/seal"
)

// defaultMaxConns is the pool size when DATABASE_URL does not set
// pool_max_conns: enough for request handlers plus River's workers. It is
// sized for PostgreSQL on the same few cores as the server: on 2 shared
// cores a burst of 20,000 pushes kept commit-to-provider p50/p99 at 8-9/39-47
// ms with 12 connections against 10-11/52-58 ms with 16 (more backends take
// the CPU the senders need), at the same 2,000+ pushes/s. Give a larger
// PostgreSQL more with pool_max_conns.
const defaultMaxConns = 12

// minConns is the smallest pool the server can run on.
const minConns = 4

// Connect opens a pool and waits, up to timeout, for the database to answer.
// Failures that waiting cannot fix (bad password, unknown database) return at
// once.
func Connect(ctx context.Context, url string, timeout time.Duration, logger *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors can quote the URL, password included: say less.
		return nil, errors.New("DATABASE_URL cannot be parsed as a PostgreSQL connection string")
	}
	if _, set := cfg.ConnConfig.RuntimeParams["application_name"]; !set {
		cfg.ConnConfig.RuntimeParams["application_name"] = "pushmfa"
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	// pgx pings a connection idle for over a second before lending it, and
	// under fluctuating load that is often: each ping is a round trip and a
	// (counted) transaction. A dead connection fails its query and is
	// dropped anyway; ping only after a long idle, when a firewall may have
	// cut it.
	cfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool { return p.IdleDuration > 30*time.Second }
	// Migrating holds one connection for its lock while it works on another,
	// and requests, River and long-polls need their own: fewer would hang.
	if cfg.MaxConns < minConns {
		return nil, fmt.Errorf("DATABASE_URL pool_max_conns is %d; it must be at least %d", cfg.MaxConns, minConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = pool.Ping(pctx)
		cancel()
		if err == nil {
			return pool, nil
		}
		if permanent(err) || time.Now().After(deadline) || ctx.Err() != nil {
			pool.Close()
			return nil, fmt.Errorf("connect to database at %s:%d (waited %s): %w",
				cfg.ConnConfig.Host, cfg.ConnConfig.Port, timeout, err)
		}
		logger.Info("waiting for the database", "host", cfg.ConnConfig.Host, "port", cfg.ConnConfig.Port, "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// permanent reports errors that retrying will not fix: the server answered
// and refused us.
func permanent(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "28", "3D": // invalid authorization, invalid catalog (no such database)
			return true
		}
	}
	return false
}

// DB implements the service's operations on a pool.
type DB struct {
	pool   *pgxpool.Pool
	keys   *seal.Keyring
	logger *slog.Logger
	queue  queue.Inserter
	waker  *waker
	// dispatcher sends challenges' pushes in process (handoff.go); their
	// jobs fall due after grace.
	dispatcher Dispatcher
	grace      time.Duration
	// instance identifies this server process among the replicas sharing
	// the database (for targeted wake-ups).
	instance string
}

// UseQueue sets where acts enqueue their jobs (pushes, notifications), in
// their own transactions. The server sets it once River's client exists.
func (db *DB) UseQueue(q queue.Inserter) { db.queue = q }

// errNoQueue is what an act that must queue jobs meets before UseQueue.
var errNoQueue = errors.New("no job queue configured")

// enqueue inserts jobs in tx, and wakes their queues' workers when tx
// commits (see wakeSQL). It serves the acts that are rare (device news,
// the sweeps): their NOTIFY rides in the transaction.
func (db *DB) enqueue(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error) {
	if db.queue == nil {
		return nil, errNoQueue
	}
	if _, err := tx.Exec(ctx, wakeSQL, wakeups(params)); err != nil {
		return nil, fmt.Errorf("wake queues: %w", err)
	}
	return db.queue.InsertManyTx(ctx, tx, params)
}

// deliverJobs are the deliver jobs of these deliveries.
func deliverJobs(ids []string) []river.InsertManyParams {
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: queue.DeliverArgs{DeliveryID: id}}
	}
	return params
}

// enqueuePiped inserts jobs in a pipe's transaction, and has the waker
// wake their queues once it commits: a hot act (resolving a challenge;
// creating one writes its jobs in its own statement and calls the waker
// alike) shares wake-ups rather than NOTIFY in its transaction.
func (db *DB) enqueuePiped(ctx context.Context, p *pipe, params []river.InsertManyParams) error {
	if db.queue == nil {
		return errNoQueue
	}
	tx, err := p.Tx(ctx) // sends what is queued first
	if err != nil {
		return err
	}
	if _, err := db.queue.InsertManyTx(ctx, tx, params); err != nil {
		return err
	}
	payloads := wakeups(params)
	p.afterCommit(func() { db.waker.wake(payloads) })
	return nil
}

// New wraps a pool. keys seals and opens recoverable secrets.
func New(pool *pgxpool.Pool, keys *seal.Keyring, logger *slog.Logger) *DB {
	return &DB{pool: pool, keys: keys, logger: logger, instance: uuid.NewString(), waker: newWaker(logger)}
}

// Pool returns the underlying pool (for River and health checks).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// querier is what both a pool and a transaction offer, so helpers compose
// inside one transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Transact runs fn in a transaction, committing when it returns nil. It
// retries serialization failures and deadlocks, which are safe to retry
// because fn starts over from nothing.
func (db *DB) Transact(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, db.pool, fn)
		var pgErr *pgconn.PgError
		if attempt < 4 && errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01") {
			continue
		}
		return err
	}
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// Postgres error codes we translate.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
	checkViolation      = "23514"
)

func pgCode(err error) (code, constraint string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.ConstraintName
	}
	return "", ""
}
