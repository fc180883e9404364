// Package queue names the durable jobs the service runs on River and what
// each carries. It is a leaf, so that the store can enqueue jobs in the
// transaction of the act that needs them, and the workers (internal/jobs)
// can do them, without either importing the other.
package queue

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Inserter inserts jobs in a transaction; a *river.Client is one.
type Inserter interface {
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// Of is the queue a job is inserted in.
func Of(p river.InsertManyParams) string {
	if p.InsertOpts != nil && p.InsertOpts.Queue != "" {
		return p.InsertOpts.Queue
	}
	if a, ok := p.Args.(river.JobArgsWithInsertOpts); ok && a.InsertOpts().Queue != "" {
		return a.InsertOpts().Queue
	}
	return river.QueueDefault
}

// DeliverArgs sends one delivery (a push to one device) and records the
// outcome on its row.
type DeliverArgs struct {
	DeliveryID string `json:"delivery_id"`
	// RescueOf is the job this one stands in for: a deliver job left
	// running by a process that died (see rescuePushes in internal/postgres).
	RescueOf int64 `json:"rescue_of,omitempty"`
}

// Kind names the job.
func (DeliverArgs) Kind() string { return "deliver" }

// InsertOpts: a push is retried while it is worth sending (the worker gives
// up once the next try would come after the challenge's expiry or the
// notification's end of life); the attempt limit only bounds a push that
// keeps failing for most of an hour. Their own queue keeps housekeeping
// from delaying them.
func (DeliverArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueuePush, MaxAttempts: 20}
}

// RescueOpts are the insert options of a rescue: DeliverArgs' own, and
// unique by arguments, so a stuck job is stood in for once however many
// sweeps find it.
func RescueOpts() *river.InsertOpts {
	o := DeliverArgs{}.InsertOpts()
	o.UniqueOpts = river.UniqueOpts{ByArgs: true}
	return &o
}

// QueuePush is the queue of deliveries.
const QueuePush = "push"

// WebhookArgs calls an application's webhook for one resolved challenge and
// records the attempt on its webhook_deliveries row.
type WebhookArgs struct {
	DeliveryID string `json:"delivery_id"`
}

// Kind names the job.
func (WebhookArgs) Kind() string { return "webhook" }

// WebhookAttempts: with the worker's backoff (doubling from 10 s, at most
// an hour apart) this keeps trying for about a day.
const WebhookAttempts = 32

// InsertOpts: webhooks have their own queue and many attempts.
func (WebhookArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueWebhook, MaxAttempts: WebhookAttempts}
}

// QueueWebhook is the queue of webhook calls.
const QueueWebhook = "webhook"
