package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/push"
	"github.com/pushmfa/pushmfa/internal/queue"
)

// holder is a dispatcher that keeps what it is handed and sends nothing.
type holder struct {
	mu  sync.Mutex
	got []postgres.Handoff
}

func (h *holder) Dispatch(hs []postgres.Handoff) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, hs...)
}

func (h *holder) take() []postgres.Handoff {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.got
	h.got = nil
	return out
}

const testGrace = 10 * time.Second

// handoffSetup is a store with a holding dispatcher, an application, and
// a user with an APNs device, an FCM device and a poll-only one.
type handoffSetup struct {
	db     *postgres.DB
	pool   *pgxpool.Pool
	held   *holder
	tenant string
	app    account.Application
	apns   string // device ids
	fcm    string
}

func newHandoffSetup(t *testing.T) handoffSetup {
	t.Helper()
	db, pool := setup(t)
	s := handoffSetup{db: db, pool: pool, held: &holder{}, tenant: defaultTenant(t, db)}
	db.UseDispatcher(s.held, testGrace)
	// Enrolling a second push device queues news for the first.
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	db.UseQueue(client)
	if s.app, _, err = db.CreateApplication(context.Background(), admin, s.tenant, account.NewApplication{Name: "VPN"}); err != nil {
		t.Fatal(err)
	}
	// Many challenges for one user.
	if _, err := pool.Exec(context.Background(), `UPDATE policies SET max_pending_challenges = 1000 WHERE tenant_id = $1`, s.tenant); err != nil {
		t.Fatal(err)
	}
	a, _ := enrolledWith(t, db, s.tenant, "hana", "apns", "hanas-apns-token")
	f, _ := enrolledWith(t, db, s.tenant, "hana", "fcm", "hanas-fcm-token")
	enrolledWith(t, db, s.tenant, "hana", "none", "")
	s.apns, s.fcm = a.ID, f.ID
	return s
}

func (s handoffSetup) create(t *testing.T) challenge.Challenge {
	t.Helper()
	c, _, err := s.db.CreateChallenge(context.Background(), postgres.NewChallenge{TenantID: s.tenant, ApplicationID: s.app.ID,
		AppName: s.app.Name, AppMatching: s.app.NumberMatching, Request: challenge.Request{User: "hana"}, By: admin, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// jobRow is a deliver job as stored.
type jobRow struct {
	state     string
	scheduled time.Time
	attempt   int
}

func jobOf(t *testing.T, pool *pgxpool.Pool, id int64) (jobRow, bool) {
	t.Helper()
	var j jobRow
	err := pool.QueryRow(context.Background(), `SELECT state::text, scheduled_at, attempt FROM river_job WHERE id = $1`, id).
		Scan(&j.state, &j.scheduled, &j.attempt)
	if err == pgx.ErrNoRows {
		return j, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return j, true
}

// deliveryRow is a delivery as stored.
type deliveryRow struct {
	outcome, provider, messageID, reason string
	attempts                             int
	sentAt                               *time.Time
}

func deliveryRowOf(t *testing.T, pool *pgxpool.Pool, id string) deliveryRow {
	t.Helper()
	var d deliveryRow
	if err := pool.QueryRow(context.Background(), `SELECT outcome, provider, coalesce(provider_message_id, ''), coalesce(reason, ''),
		attempts, sent_at FROM deliveries WHERE id = $1`, id).Scan(&d.outcome, &d.provider, &d.messageID, &d.reason, &d.attempts, &d.sentAt); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCreateHandsOffPushes: with a dispatcher, a challenge's pushes are
// handed to it once the transaction commits, one per push device, with the
// device's token opened and the delivery's own row and job; the jobs are
// written in the same transaction, due only when the grace ends.
func TestCreateHandsOffPushes(t *testing.T) {
	t.Parallel()
	s := newHandoffSetup(t)
	ctx := context.Background()
	// The enrollments' news to the earlier devices is in the queue too.
	before, err := s.db.QueueDepth(ctx, queue.QueuePush)
	if err != nil {
		t.Fatal(err)
	}
	c := s.create(t)
	hs := s.held.take()
	if len(hs) != 2 {
		t.Fatalf("handed %d pushes, want 2 (the poll-only device has none)", len(hs))
	}
	tokens := map[string]string{s.apns: "hanas-apns-token", s.fcm: "hanas-fcm-token"}
	providers := map[string]string{s.apns: "apns", s.fcm: "fcm"}
	for _, h := range hs {
		m := h.Message
		if m.Token != tokens[m.DeviceID] || m.Provider != providers[m.DeviceID] || m.Kind != push.KindChallenge ||
			m.ChallengeID != c.ID || !m.Expires.Equal(c.ExpiresAt) {
			t.Errorf("handoff %+v (token %q), want the device's own", m, m.Token)
		}
		var device, challengeID string
		var created time.Time
		if err := s.pool.QueryRow(ctx, `SELECT device_id::text, challenge_id::text, created_at FROM deliveries WHERE id = $1`,
			m.DeliveryID).Scan(&device, &challengeID, &created); err != nil {
			t.Fatal(err)
		}
		if device != m.DeviceID || challengeID != c.ID || !created.Equal(h.Queued) {
			t.Errorf("delivery row (%s, %s, %v) does not match the handoff (%s, queued %v)", device, challengeID, created, m.DeviceID, h.Queued)
		}
		// The commit's acknowledgement comes after the row, before now.
		if h.Committed.Before(h.Queued) || h.Committed.After(time.Now()) {
			t.Errorf("handoff committed at %v, queued at %v", h.Committed, h.Queued)
		}
		var args string
		var due time.Duration
		var state string
		if err := s.pool.QueryRow(ctx, `SELECT args->>'delivery_id', state::text,
			extract(epoch FROM scheduled_at - created_at) * interval '1 second' FROM river_job WHERE id = $1`, h.JobID).Scan(&args, &state, &due); err != nil {
			t.Fatalf("job %d of the handoff: %v", h.JobID, err)
		}
		if args != m.DeliveryID || state != "available" || due < testGrace-time.Second || due > testGrace+time.Second {
			t.Errorf("job %d: delivery %s, %s, due %v after its insert; want %s, available, due after the grace (%v)",
				h.JobID, args, state, due, m.DeliveryID, testGrace)
		}
	}

	// Waiting out the grace, they are not a backlog.
	depth, err := s.db.QueueDepth(ctx, queue.QueuePush)
	if err != nil {
		t.Fatal(err)
	}
	if depth["available"] != before["available"] || depth["scheduled"] != before["scheduled"]+2 {
		t.Errorf("push queue depth %v after the challenge, %v before; want its two jobs scheduled, none available", depth, before)
	}

	// Every column but the times and the state matches River's own insert
	// of the same job due as late.
	client, err := river.NewClient(riverpgxv5.New(s.pool), &river.Config{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := client.InsertManyTx(ctx, tx, []river.InsertManyParams{{Args: queue.DeliverArgs{DeliveryID: hs[0].Message.DeliveryID},
			InsertOpts: &river.InsertOpts{ScheduledAt: time.Now().Add(testGrace)}}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var rows []string
	r, err := s.pool.Query(ctx, `SELECT (row_to_json(r)::jsonb - 'id' - 'created_at' - 'scheduled_at' - 'state')::text
		FROM river_job r WHERE kind = 'deliver' AND args->>'delivery_id' = $1 ORDER BY id`, hs[0].Message.DeliveryID)
	if err != nil {
		t.Fatal(err)
	}
	if rows, err = pgx.CollectRows(r, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0] != rows[1] {
		t.Errorf("the handed-off job differs from River's own:\n%s", rows)
	}
}

// TestSettleHandoffs: each thing that can become of a handed-off push is
// recorded on its delivery, and its job is deleted or left to River, due
// when it should be; a delivery River settled meanwhile keeps its outcome,
// and a job River started is River's.
func TestSettleHandoffs(t *testing.T) {
	t.Parallel()
	at := time.Now().Add(-time.Second).Truncate(time.Microsecond)
	tests := []struct {
		name string
		// before runs ahead of the settlement (as River's job would).
		before   string
		settle   func(h postgres.Handoff) postgres.Settlement
		delivery deliveryRow
		job      *jobRow // nil: deleted
	}{
		{"sent", "", func(h postgres.Handoff) postgres.Settlement {
			return postgres.Settlement{JobID: h.JobID, At: at, Outcome: postgres.DeliveryOutcome{ID: h.Message.DeliveryID,
				Provider: h.Message.Provider, Outcome: postgres.OutcomeSent, ProviderMessageID: "msg-1", Attempted: true}}
		}, deliveryRow{outcome: "sent", messageID: "msg-1", attempts: 1, sentAt: &at}, nil},
		{"failed for good", "", func(h postgres.Handoff) postgres.Settlement {
			return postgres.Settlement{JobID: h.JobID, At: at, Outcome: postgres.DeliveryOutcome{ID: h.Message.DeliveryID,
				Provider: h.Message.Provider, Outcome: postgres.OutcomeFailed, Reason: "refused", Attempted: true}}
		}, deliveryRow{outcome: "failed", reason: "refused", attempts: 1}, nil},
		{"retry soon", "", func(h postgres.Handoff) postgres.Settlement {
			return postgres.Settlement{JobID: h.JobID, At: at, RetryAt: at.Add(3 * time.Second), Outcome: postgres.DeliveryOutcome{
				ID: h.Message.DeliveryID, Provider: h.Message.Provider, Outcome: postgres.OutcomeRetrying, Reason: "503", Attempted: true}}
		}, deliveryRow{outcome: "retrying", reason: "503", attempts: 1}, &jobRow{state: "available", scheduled: at.Add(3 * time.Second)}},
		{"retry later", "", func(h postgres.Handoff) postgres.Settlement {
			return postgres.Settlement{JobID: h.JobID, At: at, RetryAt: at.Add(time.Minute), Outcome: postgres.DeliveryOutcome{
				ID: h.Message.DeliveryID, Provider: h.Message.Provider, Outcome: postgres.OutcomeRetrying, Reason: "429", Attempted: true}}
		}, deliveryRow{outcome: "retrying", reason: "429", attempts: 1}, &jobRow{state: "scheduled", scheduled: at.Add(time.Minute)}},
		{"handed to River untried", "", func(h postgres.Handoff) postgres.Settlement {
			return postgres.Settlement{JobID: h.JobID, At: at, RetryAt: at}
		}, deliveryRow{outcome: "pending"}, &jobRow{state: "available", scheduled: at}},
		{"recorded already (a refused token)", `UPDATE deliveries SET outcome = 'token_invalid', attempts = 1 WHERE id = $1`,
			func(h postgres.Handoff) postgres.Settlement { return postgres.Settlement{JobID: h.JobID, At: at} },
			deliveryRow{outcome: "token_invalid", attempts: 1}, nil},
		{"settled by River meanwhile", `UPDATE deliveries SET outcome = 'sent', sent_at = now(), attempts = 1,
				provider_message_id = 'river' WHERE id = $1`,
			func(h postgres.Handoff) postgres.Settlement {
				return postgres.Settlement{JobID: h.JobID, At: at, Outcome: postgres.DeliveryOutcome{ID: h.Message.DeliveryID,
					Provider: h.Message.Provider, Outcome: postgres.OutcomeFailed, Reason: "late", Attempted: true}}
			}, deliveryRow{outcome: "sent", messageID: "river", attempts: 1}, nil},
		{"started by River meanwhile", `UPDATE river_job SET state = 'running', attempt = 1 WHERE args->>'delivery_id' = $1`,
			func(h postgres.Handoff) postgres.Settlement {
				return postgres.Settlement{JobID: h.JobID, At: at, RetryAt: at.Add(time.Minute)}
			}, deliveryRow{outcome: "pending"}, &jobRow{state: "running", attempt: 1}},
	}
	s := newHandoffSetup(t)
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.create(t)
			h := s.held.take()[0]
			if tt.before != "" {
				if _, err := s.pool.Exec(ctx, tt.before, h.Message.DeliveryID); err != nil {
					t.Fatal(err)
				}
			}
			var before jobRow
			if tt.job != nil && tt.job.state == "running" {
				before, _ = jobOf(t, s.pool, h.JobID)
				tt.job.scheduled = before.scheduled
			}
			if err := s.db.SettleHandoffs(ctx, []postgres.Settlement{tt.settle(h)}); err != nil {
				t.Fatal(err)
			}
			got := deliveryRowOf(t, s.pool, h.Message.DeliveryID)
			tt.delivery.provider = h.Message.Provider
			if got.sentAt != nil && tt.delivery.sentAt != nil && got.sentAt.Equal(*tt.delivery.sentAt) {
				got.sentAt = tt.delivery.sentAt
			}
			if (got.sentAt == nil) != (tt.delivery.sentAt == nil) && tt.before == "" {
				t.Errorf("sent_at %v, want %v", got.sentAt, tt.delivery.sentAt)
			}
			got.sentAt, tt.delivery.sentAt = nil, nil
			if got != tt.delivery {
				t.Errorf("delivery %+v, want %+v", got, tt.delivery)
			}
			j, ok := jobOf(t, s.pool, h.JobID)
			switch {
			case tt.job == nil && ok:
				t.Errorf("job %+v left, want it deleted", j)
			case tt.job != nil && !ok:
				t.Errorf("job deleted, want %+v", *tt.job)
			case tt.job != nil && (j.state != tt.job.state || !j.scheduled.Equal(tt.job.scheduled) || j.attempt != tt.job.attempt):
				t.Errorf("job %+v, want %+v", j, *tt.job)
			}
		})
	}
}

// TestSettleHandoffsInOneStatement: a batch settles every push in it.
func TestSettleHandoffsInOneStatement(t *testing.T) {
	t.Parallel()
	s := newHandoffSetup(t)
	ctx := context.Background()
	var hs []postgres.Handoff
	for range 5 {
		s.create(t)
		hs = append(hs, s.held.take()...)
	}
	now := time.Now()
	ss := make([]postgres.Settlement, len(hs))
	for i, h := range hs {
		ss[i] = postgres.Settlement{JobID: h.JobID, At: now, Outcome: postgres.DeliveryOutcome{ID: h.Message.DeliveryID,
			Provider: h.Message.Provider, Outcome: postgres.OutcomeSent, ProviderMessageID: h.Message.DeliveryID, Attempted: true}}
	}
	if err := s.db.SettleHandoffs(ctx, ss); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if d := deliveryRowOf(t, s.pool, h.Message.DeliveryID); d.outcome != "sent" || d.messageID != h.Message.DeliveryID {
			t.Errorf("delivery %s: %+v", h.Message.DeliveryID, d)
		}
		if j, ok := jobOf(t, s.pool, h.JobID); ok {
			t.Errorf("job %d left: %+v", h.JobID, j)
		}
	}
}

// TestUnopenedTokenGoesToRiver: a push whose sealed token does not open
// (here, another device's ciphertext swapped in: the seal is bound to its
// row) is not handed off; its job is due at once, for River's worker to
// read the device again and say why.
func TestUnopenedTokenGoesToRiver(t *testing.T) {
	t.Parallel()
	s := newHandoffSetup(t)
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `UPDATE devices SET push_token = (SELECT push_token FROM devices WHERE id = $2),
		push_token_key_id = (SELECT push_token_key_id FROM devices WHERE id = $2) WHERE id = $1`, s.apns, s.fcm); err != nil {
		t.Fatal(err)
	}
	c := s.create(t)
	hs := s.held.take()
	if len(hs) != 1 || hs[0].Message.DeviceID != s.fcm {
		t.Fatalf("handed %+v, want only the FCM device's push", hs)
	}
	var state string
	var due bool
	if err := s.pool.QueryRow(ctx, `SELECT j.state::text, j.scheduled_at <= now() FROM river_job j
		JOIN deliveries d ON d.id = (j.args->>'delivery_id')::uuid WHERE d.challenge_id = $1 AND d.device_id = $2`,
		c.ID, s.apns).Scan(&state, &due); err != nil {
		t.Fatal(err)
	}
	if state != "available" || !due {
		t.Errorf("the unopened push's job is %s, due now %v; want available and due", state, due)
	}
}

// TestSettlePlanUsesKeys: with statistics in which nearly every delivery is
// long settled (a service with history), recording a push still finds its
// delivery and job by their keys. A statement joining a whole batch had the
// planner scan the deliveries table once per push, seconds a batch.
func TestSettlePlanUsesKeys(t *testing.T) {
	t.Parallel()
	s := newHandoffSetup(t)
	ctx := context.Background()
	s.create(t)
	h := s.held.take()[0]
	if _, err := s.pool.Exec(ctx, `INSERT INTO deliveries (id, tenant_id, device_id, kind, notification, provider, outcome, attempts, sent_at)
		SELECT gen_random_uuid(), d.tenant_id, d.id, 'notification', 'device_added', 'apns', 'sent', 1, now()
		FROM devices d, generate_series(1, 20000) WHERE d.id = $1`, s.apns); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE deliveries; ANALYZE river_job`); err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, `EXPLAIN `+postgres.SettleSQL, h.JobID, h.Message.DeliveryID, "apns", "sent", "msg", "",
		time.Now(), nil, 5.0, true)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	// (River's table is a page here: scanning it is as cheap as its index.)
	if !strings.Contains(text, "Index Scan using deliveries_pkey") || strings.Contains(text, "Seq Scan on deliveries") {
		t.Errorf("settle plan does not find the delivery by its key:\n%s", text)
	}
	// A plan cached while River's table was small once found jobs through
	// River's fetching index, by state, and then walked every available job
	// of a burst for each push. Even with River's key out of the way (in a
	// transaction rolled back), no plan may look a job up by its state.
	later := time.Now().Add(time.Minute)
	for _, retry := range []*time.Time{nil, &later} {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `ALTER TABLE river_job DROP CONSTRAINT river_job_pkey`); err != nil {
			t.Fatal(err)
		}
		// Statistics from a quiet time, when every job was finished, then
		// a burst's worth of jobs waiting out their grace.
		if _, err := tx.Exec(ctx, `INSERT INTO river_job (args, kind, max_attempts, queue, state, scheduled_at, attempt, attempted_at, finalized_at)
			SELECT '{}', 'deliver', 25, 'push', 'completed', now(), 1, now(), now() FROM generate_series(1, 5000);
			ANALYZE river_job;
			INSERT INTO river_job (args, kind, max_attempts, queue, state, scheduled_at)
			SELECT '{}', 'deliver', 25, 'push', 'available', now() + interval '10 s' FROM generate_series(1, 5000)`); err != nil {
			t.Fatal(err)
		}
		rows, err := tx.Query(ctx, `EXPLAIN `+postgres.SettleSQL, h.JobID, h.Message.DeliveryID, "apns", "sent", "msg", "",
			time.Now(), retry, 5.0, true)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		_ = tx.Rollback(ctx)
		if text := strings.Join(plan, "\n"); strings.Contains(text, "Index Cond: ((state =") || strings.Contains(text, "Index Cond: (state =") {
			t.Errorf("settle plan (retry %v) finds River's job by its state:\n%s", retry, text)
		}
	}
}
