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

// NOTIFY channels.
const (
	// ChallengeChannel carries challenge changes (a notify.Change).
	ChallengeChannel = "pushmfa_challenge"
	// CredentialsChannel carries the id of an application whose secret or
	// settings changed.
	CredentialsChannel = "pushmfa_credentials"
)

// notifyCredentials tells every instance to forget what it cached of an
// application, when (and only if) the caller's transaction commits.
func notifyCredentials(ctx context.Context, q querier, appID string) error {
	_, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, CredentialsChannel, appID)
	return err
}

// Listener holds one LISTEN connection per process and feeds the hub of
// challenge changes and the cache of application principals.
type Listener struct {
	config *pgx.ConnConfig
	hub    *notify.Hub
	apps   *notify.Apps
	logger *slog.Logger
}

// NewListener listens with the pool's connection settings.
func (db *DB) NewListener(hub *notify.Hub, apps *notify.Apps) *Listener {
	return &Listener{config: db.pool.Config().ConnConfig.Copy(), hub: hub, apps: apps, logger: db.logger}
}

// Run listens until ctx ends, reconnecting after failures.
func (l *Listener) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx)
		l.hub.Disconnected()
		l.apps.Disconnected()
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
	if _, err := conn.Exec(ctx, "LISTEN "+ChallengeChannel+"; LISTEN "+CredentialsChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Listening from here on: anything earlier may have been missed, which
	// Connected tells every waiter and cache.
	l.hub.Connected()
	l.apps.Connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		if n.Channel == CredentialsChannel {
			l.apps.Invalidate(n.Payload)
			continue
		}
		var ch notify.Change
		if err := json.Unmarshal([]byte(n.Payload), &ch); err != nil {
			l.logger.Warn("malformed challenge notification", "error", err)
			continue
		}
		l.hub.Publish(ch)
	}
}
