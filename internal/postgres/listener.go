package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/notify"
)

// ChallengeChannel is the NOTIFY channel of challenge changes.
const ChallengeChannel = "pushmfa_challenge"

// notifyChange announces a challenge's change in the caller's transaction;
// PostgreSQL delivers it to every listener when (and only if) it commits.
func notifyChange(ctx context.Context, q querier, ch notify.Change) error {
	payload, err := json.Marshal(ch)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, `SELECT pg_notify($1, $2)`, ChallengeChannel, string(payload))
	return err
}

// Listener holds one LISTEN connection per process and feeds a hub.
type Listener struct {
	config *pgx.ConnConfig
	hub    *notify.Hub
	logger *slog.Logger
}

// NewListener listens with the pool's connection settings.
func (db *DB) NewListener(hub *notify.Hub) *Listener {
	return &Listener{config: db.pool.Config().ConnConfig.Copy(), hub: hub, logger: db.logger}
}

// Run listens until ctx ends, reconnecting after failures.
func (l *Listener) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx)
		l.hub.Disconnected()
		if ctx.Err() != nil {
			return
		}
		l.logger.Warn("challenge listener lost its connection; reconnecting", "error", err, "in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (l *Listener) listen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.config)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+ChallengeChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Listening from here on: anything earlier may have been missed, which
	// Connected tells every waiter.
	l.hub.Connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		var ch notify.Change
		if err := json.Unmarshal([]byte(n.Payload), &ch); err != nil {
			l.logger.Warn("malformed challenge notification", "error", err)
			continue
		}
		l.hub.Publish(ch)
	}
}
