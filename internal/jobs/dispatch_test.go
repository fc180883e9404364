package jobs

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/metrics"
	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/push"
	"github.com/pushmfa/pushmfa/internal/seal"
)

var dispatchActor = audit.Actor{Type: audit.ActorAdmin, ID: "test"}

// dispatchBundle is a store whose challenges' pushes go to a dispatcher
// sending through the logging provider, and a user with an APNs device.
type dispatchBundle struct {
	tdb *pgtest.DB
	db  *postgres.DB
	d   *Dispatcher
	req postgres.NewChallenge
}

func dispatchSetup(t *testing.T) dispatchBundle {
	t.Helper()
	ctx := context.Background()
	tdb := pgtest.New(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, _ := seal.NewKeyring(key)
	logger := slog.New(slog.DiscardHandler)
	db := postgres.New(tdb.Pool, keys, logger)
	inserter, err := river.NewClient(riverpgxv5.New(tdb.Pool), &river.Config{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	db.UseQueue(inserter)
	d := NewDispatcher(Config{DB: db, Metrics: metrics.New(), Logger: logger, Push: push.Router{Log: push.LogProvider{Logger: logger}}})
	db.UseDispatcher(d, DispatchGrace)

	ten, err := db.TenantBySlug(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	app, _, err := db.CreateApplication(ctx, dispatchActor, ten.ID, account.NewApplication{Name: "VPN"})
	if err != nil {
		t.Fatal(err)
	}
	_, code, err := db.CreateEnrollment(ctx, postgres.NewEnrollment{TenantID: ten.ID, UserName: "pia", By: dispatchActor})
	if err != nil {
		t.Fatal(err)
	}
	dk, _ := authenticator.NewKey()
	raw, err := authenticator.EnrollToken(dk, authenticator.EnrollRequest{Code: code, Platform: "ios", PushProvider: "apns",
		PushToken: "pias-token", Name: "phone"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jose.VerifyEnroll(raw, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CompleteEnrollment(ctx, postgres.NewDevice{Token: tok, Platform: "ios", PushProvider: "apns",
		PushToken: "pias-token", Name: "phone"}); err != nil {
		t.Fatal(err)
	}
	return dispatchBundle{tdb: tdb, db: db, d: d, req: postgres.NewChallenge{TenantID: ten.ID, ApplicationID: app.ID,
		AppName: app.Name, AppMatching: app.NumberMatching, Request: challenge.Request{User: "pia"}, By: dispatchActor}}
}

func (b dispatchBundle) create(t *testing.T) challenge.Challenge {
	t.Helper()
	req := b.req
	req.Now = time.Now()
	c, _, err := b.db.CreateChallenge(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pushOf is a challenge's one push: its delivery's outcome and provider,
// and its job's state and whether it is due (state "" when deleted).
type pushOf struct {
	outcome, provider, messageID string
	job                          string
	due                          bool
}

func (b dispatchBundle) push(t *testing.T, challengeID string) pushOf {
	t.Helper()
	var p pushOf
	if err := b.tdb.Pool.QueryRow(context.Background(), `SELECT d.outcome, d.provider, coalesce(d.provider_message_id, ''),
			coalesce(j.state::text, ''), coalesce(j.scheduled_at <= now(), false)
		FROM deliveries d LEFT JOIN river_job j ON j.kind = 'deliver' AND j.args->>'delivery_id' = d.id::text
		WHERE d.challenge_id = $1`, challengeID).Scan(&p.outcome, &p.provider, &p.messageID, &p.job, &p.due); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDispatcherSendsAndRecords: a running dispatcher sends a new
// challenge's push at once and records it: the delivery sent with the
// provider's id, the job deleted, no River worker involved.
func TestDispatcherSendsAndRecords(t *testing.T) {
	t.Parallel()
	b := dispatchSetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c := b.create(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := b.push(t, c.ID)
		if p.outcome == "sent" && p.job == "" {
			if p.provider != "log" || p.messageID == "" {
				t.Errorf("push %+v, want sent by the logging provider with its id", p)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("push not recorded within 10 s: %+v", p)
		}
		time.Sleep(10 * time.Millisecond) // waiting on the dispatcher, not asserting a duration
	}
}

// TestDispatcherHandsOver: what the dispatcher cannot send at once goes to
// the push's River job, due now, and the delivery is left for the job: a
// push past a full backlog, and one that waited too long for a sender.
func TestDispatcherHandsOver(t *testing.T) {
	t.Parallel()
	b := dispatchSetup(t)
	// No senders run, and the backlog holds one push.
	b.d.intake = make(chan handoff, 1)
	first, second := b.create(t), b.create(t)
	if p := b.push(t, first.ID); p.outcome != "pending" || p.job != "available" || p.due {
		t.Errorf("push in the backlog %+v, want pending, its job waiting out the grace", p)
	}
	if p := b.push(t, second.ID); p.outcome != "pending" || p.job != "available" || !p.due {
		t.Errorf("push past the backlog %+v, want pending, its job due now", p)
	}

	// The one in the backlog waited past dispatchStartBy.
	h := <-b.d.intake
	h.at = time.Now().Add(-dispatchStartBy - time.Second)
	s := b.d.send(context.Background(), h)
	if err := b.db.SettleHandoffs(context.Background(), []postgres.Settlement{s}); err != nil {
		t.Fatal(err)
	}
	if p := b.push(t, first.ID); p.outcome != "pending" || p.job != "available" || !p.due {
		t.Errorf("push that waited too long %+v, want pending, its job due now (never sent here)", p)
	}
}

// TestDispatcherRecordsOnStop: outcomes still on their way to the
// database when the dispatcher stops are recorded before Run returns, and
// pushes no sender took go to River.
func TestDispatcherRecordsOnStop(t *testing.T) {
	t.Parallel()
	b := dispatchSetup(t)
	var cs []challenge.Challenge
	for range 3 {
		cs = append(cs, b.create(t)) // queued: no sender runs yet
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.d.Run(ctx) // stopped at once: each push was sent or handed over
	for _, c := range cs {
		p := b.push(t, c.ID)
		sent := p.outcome == "sent" && p.job == ""
		handed := p.outcome == "pending" && p.job == "available" && p.due
		if !sent && !handed {
			t.Errorf("push of %s after stop: %+v, want sent and recorded, or handed to River due now", c.ID, p)
		}
	}
}

// TestDispatcherSkipsWhatIsOver: a push whose challenge this process
// knows to be over by the time a sender takes it is not sent: the delivery
// is skipped (no attempt counted) and its job deleted.
func TestDispatcherSkipsWhatIsOver(t *testing.T) {
	t.Parallel()
	b := dispatchSetup(t)
	c := b.create(t)
	b.d.settled = func(id string, _ time.Time) bool { return id == c.ID }
	s := b.d.send(context.Background(), <-b.d.intake)
	if err := b.db.SettleHandoffs(context.Background(), []postgres.Settlement{s}); err != nil {
		t.Fatal(err)
	}
	p := b.push(t, c.ID)
	var attempts int
	if err := b.tdb.Pool.QueryRow(context.Background(), `SELECT attempts FROM deliveries WHERE challenge_id = $1`, c.ID).Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if p.outcome != "skipped" || p.job != "" || attempts != 0 {
		t.Errorf("push %+v after %d attempts, want skipped without an attempt and its job deleted", p, attempts)
	}
}
