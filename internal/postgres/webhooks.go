package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/seal"
)

// webhookJob records the call of the application's webhook, if it has one,
// in the transaction that resolved the challenge, and returns the job that
// makes it (nil for none) for the caller to enqueue with the others.
func (db *DB) webhookJob(ctx context.Context, tx pgx.Tx, c challenge.Challenge) (*river.InsertManyParams, error) {
	var hook *string
	if err := tx.QueryRow(ctx, `SELECT webhook_url FROM applications WHERE id = $1`, c.ApplicationID).Scan(&hook); err != nil {
		return nil, fmt.Errorf("queue webhook: %w", err)
	}
	if hook == nil {
		return nil, nil
	}
	id := uuid.NewString()
	if _, err := tx.Exec(ctx, `INSERT INTO webhook_deliveries (id, tenant_id, application_id, challenge_id)
		VALUES ($1, $2, $3, $4)`, id, c.TenantID, c.ApplicationID, c.ID); err != nil {
		return nil, fmt.Errorf("queue webhook: %w", err)
	}
	return &river.InsertManyParams{Args: queue.WebhookArgs{DeliveryID: id}}, nil
}

// WebhookCall is what one webhook attempt needs.
type WebhookCall struct {
	DeliveryID string
	URL        string
	Secret     []byte
	Challenge  challenge.Challenge
	// Done reports a call already delivered or given up (a retried job).
	Done bool
	// Gone reports that the application was deleted or lost its webhook.
	Gone bool
}

// WebhookCall loads a webhook delivery and opens the application's secret.
func (db *DB) WebhookCall(ctx context.Context, id string) (WebhookCall, error) {
	w := WebhookCall{DeliveryID: id}
	var outcome string
	var hook, keyID *string
	var sealed []byte
	var appID, challengeID, tenantID string
	err := db.pool.QueryRow(ctx, `SELECT w.outcome, w.tenant_id, w.application_id, w.challenge_id, a.webhook_url,
			a.webhook_secret, a.webhook_secret_key_id
		FROM webhook_deliveries w JOIN applications a ON a.id = w.application_id WHERE w.id = $1`, id).
		Scan(&outcome, &tenantID, &appID, &challengeID, &hook, &sealed, &keyID)
	if err != nil {
		return w, fmt.Errorf("read webhook delivery %s: %w", id, err)
	}
	w.Done = outcome == "delivered" || outcome == "failed"
	if hook == nil || keyID == nil {
		w.Gone = true
		return w, nil
	}
	w.URL = *hook
	if w.Secret, err = db.keys.Open(seal.Box{KeyID: *keyID, Data: sealed}, seal.Place{Table: "applications", Column: "webhook_secret", Row: appID}); err != nil {
		return w, fmt.Errorf("open webhook secret: %w", err)
	}
	if w.Challenge, err = db.Challenge(ctx, tenantID, appID, challengeID); err != nil {
		return w, err
	}
	return w, nil
}

// WebhookAttempt is the outcome of one call.
type WebhookAttempt struct {
	DeliveryID string
	Outcome    string // delivered, retrying, failed
	Status     int
	Error      string
}

// RecordWebhookAttempt stores an attempt's outcome.
func (db *DB) RecordWebhookAttempt(ctx context.Context, a WebhookAttempt) error {
	var status *int
	if a.Status != 0 {
		status = &a.Status
	}
	_, err := db.pool.Exec(ctx, `UPDATE webhook_deliveries SET outcome = $2, attempts = attempts + 1, last_status = $3,
			last_error = nullif($4, ''), updated_at = now(), delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
		WHERE id = $1`, a.DeliveryID, a.Outcome, status, truncate(a.Error, 512))
	if err != nil {
		return fmt.Errorf("record webhook attempt: %w", err)
	}
	return nil
}

// WebhookDelivery is a webhook delivery as admins see it.
type WebhookDelivery struct {
	ID          string
	Outcome     string
	Attempts    int
	LastStatus  *int
	LastError   string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	DeliveredAt *time.Time
}

// WebhookDeliveries lists a challenge's webhook deliveries (within a tenant,
// "" = any).
func (db *DB) WebhookDeliveries(ctx context.Context, tenantID, challengeID string) ([]WebhookDelivery, error) {
	var exists bool
	if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM challenges WHERE id = $1 AND ($2 = '' OR tenant_id::text = $2))`,
		challengeID, tenantID).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, errs.NotFoundf("challenge not found")
	}
	rows, err := db.pool.Query(ctx, `SELECT id, outcome, attempts, last_status, coalesce(last_error, ''), created_at, updated_at, delivered_at
		FROM webhook_deliveries WHERE challenge_id = $1 ORDER BY created_at`, challengeID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebhookDelivery, error) {
		var w WebhookDelivery
		return w, r.Scan(&w.ID, &w.Outcome, &w.Attempts, &w.LastStatus, &w.LastError, &w.CreatedAt, &w.UpdatedAt, &w.DeliveredAt)
	})
}
