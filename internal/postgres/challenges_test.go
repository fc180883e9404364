package postgres_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// answer makes a device's signed approval of c and the call token it is
// sent with, both verified as the server would.
func answer(t *testing.T, d *authenticator.Device, c challenge.Challenge) (jose.Device, jose.Response) {
	t.Helper()
	view := wire.DeviceChallenge{ID: c.ID, Nonce: base64.RawURLEncoding.EncodeToString(c.Nonce),
		Context: wire.ChallengeContext(c.Context), ContextDigest: challenge.EncodeDigest(c.ContextDigest), NumberRequired: c.Number != 0}
	raw, err := authenticator.ResponseToken(d.Key, d.DeviceID, view, authenticator.Answer{Decision: "approve", Number: c.Number, UV: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := jose.VerifyResponse(raw, &d.Key.PublicKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/device/challenges/" + c.ID + "/response"
	call, err := authenticator.DeviceToken(d.Key, d.DeviceID, "POST", path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jose.VerifyDevice(call, &d.Key.PublicKey, "POST", path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok.DeviceID = d.DeviceID
	return tok, resp
}

// TestAnswerAndRevocationAreOrdered races a device's answer with its
// revocation: a revocation that commits first makes the waiting answer fail
// with device_revoked and leaves the challenge pending; an answer whose
// authentication came first completes, and the revocation waits for it.
// Never may an answer succeed after the revocation committed.
func TestAnswerAndRevocationAreOrdered(t *testing.T) {
	t.Parallel()
	db, _ := setup(t)
	ctx := context.Background()
	tenant := defaultTenant(t, db)
	app, _, err := db.CreateApplication(ctx, admin, tenant, account.NewApplication{Name: "VPN"})
	if err != nil {
		t.Fatal(err)
	}
	create := func(user string) challenge.Challenge {
		t.Helper()
		c, _, err := db.CreateChallenge(ctx, postgres.NewChallenge{TenantID: tenant, ApplicationID: app.ID, AppName: app.Name,
			AppMatching: app.NumberMatching, Request: challenge.Request{User: user}, By: admin, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("revocation first", func(t *testing.T) {
		dev, key := enrolled(t, db, tenant, "dora")
		c := create("dora")
		tok, resp := answer(t, key, c)
		tx, err := db.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if _, err := db.RevokeDeviceTx(ctx, tx, postgres.Revocation{DeviceID: dev.ID, Reason: devices.ReasonLost, By: admin}); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := db.Respond(ctx, tok, resp); done <- err }()
		select {
		case err := <-done:
			t.Fatalf("the answer did not wait for the revocation: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; errs.CodeOf(err) != errs.DeviceRevoked {
			t.Fatalf("answer waiting on the revocation: %v", err)
		}
		if got, err := db.Challenge(ctx, tenant, "", c.ID); err != nil || got.State != challenge.StatePending {
			t.Fatalf("after a refused answer: %+v %v", got, err)
		}
	})

	t.Run("answer first", func(t *testing.T) {
		dev, key := enrolled(t, db, tenant, "emil")
		c := create("emil")
		tok, resp := answer(t, key, c)
		// Hold the user's row, which the answer locks after authenticating
		// (so after it holds the device's row): the answer is then in flight.
		tx, err := db.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, dev.UserID); err != nil {
			t.Fatal(err)
		}
		answered := make(chan error, 1)
		go func() { _, err := db.Respond(ctx, tok, resp); answered <- err }()
		waitLocked(t, db)
		revoked := make(chan error, 1)
		go func() {
			_, err := db.RevokeDevice(ctx, postgres.Revocation{DeviceID: dev.ID, Reason: devices.ReasonLost, By: admin})
			revoked <- err
		}()
		select {
		case err := <-revoked:
			t.Fatalf("the revocation did not wait for the answer in flight: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-answered; err != nil {
			t.Fatalf("the answer in flight failed: %v", err)
		}
		if err := <-revoked; err != nil {
			t.Fatal(err)
		}
		if got, err := db.Challenge(ctx, tenant, "", c.ID); err != nil || got.State != challenge.StateApproved {
			t.Fatalf("after the answer: %+v %v", got, err)
		}
	})
}

// waitLocked waits until some session of the database waits for a lock.
func waitLocked(t *testing.T, db *postgres.DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var n int
		if err := db.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("nobody waited for a lock")
}

// TestChallengeJobsAreRiverRows holds the deliver jobs a challenge's own
// statement writes to the rows River's insert writes for the same job, so
// that a River upgrade that changes its rows fails here, not in the field.
func TestChallengeJobsAreRiverRows(t *testing.T) {
	t.Parallel()
	db, pool := setup(t)
	ctx := context.Background()
	tenant := defaultTenant(t, db)
	app, _, err := db.CreateApplication(ctx, admin, tenant, account.NewApplication{Name: "VPN"})
	if err != nil {
		t.Fatal(err)
	}
	enrolledWith(t, db, tenant, "erin", "apns", "erins-token")
	c, _, err := db.CreateChallenge(ctx, postgres.NewChallenge{TenantID: tenant, ApplicationID: app.ID, AppName: app.Name,
		AppMatching: app.NumberMatching, Request: challenge.Request{User: "erin"}, By: admin, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var delivery string
	if err := pool.QueryRow(ctx, `SELECT id::text FROM deliveries WHERE challenge_id = $1`, c.ID).Scan(&delivery); err != nil {
		t.Fatal(err)
	}
	// River's own insert of the same job, from an insert-only client.
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := client.InsertManyTx(ctx, tx, []river.InsertManyParams{{Args: queue.DeliverArgs{DeliveryID: delivery}}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Every column but the id and the times, and the times' shape.
	rows, err := pool.Query(ctx, `SELECT row_to_json(r)::jsonb - 'id' - 'created_at' - 'scheduled_at',
			scheduled_at = created_at, created_at > now() - interval '1 minute'
		FROM river_job r WHERE kind = 'deliver' AND args->>'delivery_id' = $1 ORDER BY id`, delivery)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var cols map[string]any
		var dueAtOnce, fresh bool
		if err := rows.Scan(&cols, &dueAtOnce, &fresh); err != nil {
			t.Fatal(err)
		}
		if !dueAtOnce || !fresh {
			t.Errorf("job not due at once, or not new: %v %v", dueAtOnce, fresh)
		}
		b, _ := json.Marshal(cols)
		got = append(got, string(b))
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(got) != 2 {
		t.Fatalf("want the challenge's job and River's, got %d rows", len(got))
	}
	if got[0] != got[1] {
		t.Errorf("the challenge's job row differs from River's own:\n ours:  %s\n River: %s", got[0], got[1])
	}
}
