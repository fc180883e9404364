package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/postgres"
)

// enrolled registers a poll-only device for a new user with a real key and
// returns the device and its key.
func enrolled(t *testing.T, db *postgres.DB, tenantID, user string) (devices.Device, *authenticator.Device) {
	t.Helper()
	return enrolledWith(t, db, tenantID, user, "none", "")
}

// enrolledWith enrolls a device with a push provider and token.
func enrolledWith(t *testing.T, db *postgres.DB, tenantID, user, provider, token string) (devices.Device, *authenticator.Device) {
	t.Helper()
	ctx := context.Background()
	_, code, err := db.CreateEnrollment(ctx, postgres.NewEnrollment{TenantID: tenantID, UserName: user, By: admin})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := authenticator.NewKey()
	tok, err := authenticator.EnrollToken(key, authenticator.EnrollRequest{Code: code, Platform: "ios", PushProvider: provider,
		PushToken: token, Name: "p"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v, err := jose.VerifyEnroll(tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out, err := db.CompleteEnrollment(ctx, postgres.NewDevice{Token: v, Platform: "ios", PushProvider: provider,
		PushToken: token, Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	return out.Device, &authenticator.Device{DeviceID: out.Device.ID, Key: key}
}

func callToken(t *testing.T, d *authenticator.Device) jose.Device {
	t.Helper()
	raw, err := authenticator.DeviceToken(d.Key, d.DeviceID, "GET", "/v1/device", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jose.VerifyDevice(raw, &d.Key.PublicKey, "GET", "/v1/device", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok.DeviceID = d.DeviceID
	return tok
}

// TestRevocationWhileACallIsInFlight checks both orders: a call already
// inside its transaction completes and the revocation waits for it; a
// revocation already committing makes the waiting call fail with
// device_revoked. Never may a call succeed after the revocation committed.
func TestRevocationWhileACallIsInFlight(t *testing.T) {
	t.Parallel()
	db, _ := setup(t)
	ctx := context.Background()
	tenant := defaultTenant(t, db)

	t.Run("call first", func(t *testing.T) {
		dev, key := enrolled(t, db, tenant, "alice")
		inCall, release := make(chan struct{}), make(chan struct{})
		callDone := make(chan error, 1)
		go func() {
			callDone <- db.DeviceCall(ctx, callToken(t, key), func(pgx.Tx, devices.Device) error {
				close(inCall)
				<-release // the answer is being worked on
				return nil
			})
		}()
		<-inCall
		revoked := make(chan time.Time, 1)
		go func() {
			if _, err := db.RevokeDevice(ctx, postgres.Revocation{DeviceID: dev.ID, Reason: devices.ReasonLost, By: admin}); err != nil {
				t.Error(err)
			}
			revoked <- time.Now()
		}()
		select {
		case <-revoked:
			t.Fatal("the revocation did not wait for the call in flight")
		case <-time.After(200 * time.Millisecond):
		}
		finished := time.Now()
		close(release)
		if err := <-callDone; err != nil {
			t.Fatalf("the call in flight failed: %v", err)
		}
		if at := <-revoked; at.Before(finished) {
			t.Fatal("revoked before the call finished")
		}
		err := db.DeviceCall(ctx, callToken(t, key), func(pgx.Tx, devices.Device) error { return nil })
		if errs.CodeOf(err) != errs.DeviceRevoked {
			t.Fatalf("call after revocation: %v", err)
		}
	})

	t.Run("revocation first", func(t *testing.T) {
		dev, key := enrolled(t, db, tenant, "bob")
		tx, err := db.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if _, err := db.RevokeDeviceTx(ctx, tx, postgres.Revocation{DeviceID: dev.ID, Reason: devices.ReasonLost, By: admin}); err != nil {
			t.Fatal(err)
		}
		callDone := make(chan error, 1)
		ran := false
		go func() {
			callDone <- db.DeviceCall(ctx, callToken(t, key), func(pgx.Tx, devices.Device) error { ran = true; return nil })
		}()
		select {
		case err := <-callDone:
			t.Fatalf("the call did not wait for the revocation: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		err = <-callDone
		if errs.CodeOf(err) != errs.DeviceRevoked || ran {
			t.Fatalf("call waiting on the revocation: %v (ran %v)", err, ran)
		}
	})
}

func TestAuthenticateDeviceRefusesReplays(t *testing.T) {
	t.Parallel()
	db, _ := setup(t)
	ctx := context.Background()
	_, key := enrolled(t, db, defaultTenant(t, db), "carol")
	tok := callToken(t, key)
	if err := db.DeviceCall(ctx, tok, func(pgx.Tx, devices.Device) error { return nil }); err != nil {
		t.Fatal(err)
	}
	err := db.DeviceCall(ctx, tok, func(pgx.Tx, devices.Device) error { return nil })
	if !errors.Is(err, errs.ErrUnauthorized) {
		t.Fatalf("replay: %v", err)
	}
	// A token whose call failed is spent all the same: it cannot be
	// replayed with another body. The failed call's own work is undone.
	tok2 := callToken(t, key)
	boom := errors.New("boom")
	if err := db.DeviceCall(ctx, tok2, func(tx pgx.Tx, d devices.Device) error {
		if _, err := tx.Exec(ctx, `UPDATE devices SET name = 'changed' WHERE id = $1`, d.ID); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := db.DeviceCall(ctx, tok2, func(pgx.Tx, devices.Device) error { return nil }); !errors.Is(err, errs.ErrUnauthorized) {
		t.Fatalf("replay of a failed call's token: %v", err)
	}
	d, err := db.Device(ctx, "", key.DeviceID)
	if err != nil || d.Name != "p" {
		t.Fatalf("the failed call's work was kept: %q %v", d.Name, err)
	}

	// A statement that fails inside the call leaves the transaction
	// usable for the commit of the authentication (the savepoint), and
	// the connection goes back to the pool clean.
	tok3 := callToken(t, key)
	if err := db.DeviceCall(ctx, tok3, func(tx pgx.Tx, d devices.Device) error {
		_, err := tx.Exec(ctx, `SELECT 1 / 0`)
		return err
	}); err == nil || errs.CodeOf(err) != errs.Internal {
		t.Fatalf("failed statement: %v", err)
	}
	if err := db.DeviceCall(ctx, tok3, func(pgx.Tx, devices.Device) error { return nil }); !errors.Is(err, errs.ErrUnauthorized) {
		t.Fatalf("replay of a token whose statement failed: %v", err)
	}
	if n := db.Pool().Stat().AcquiredConns(); n != 0 {
		t.Fatalf("%d connections still held after the calls", n)
	}
	if _, err := db.Pool().Exec(ctx, `SELECT 1`); err != nil {
		t.Fatalf("pool unusable after the calls: %v", err)
	}
}

// TestDeviceLimitUnderConcurrency races many enrollments of one user, each
// with its own code: the policy's limit holds.
func TestDeviceLimitUnderConcurrency(t *testing.T) {
	t.Parallel()
	db, pool := setup(t)
	ctx := context.Background()
	tenant := defaultTenant(t, db)
	if _, err := pool.Exec(ctx, `UPDATE policies SET max_devices = 1 WHERE tenant_id = $1`, tenant); err != nil {
		t.Fatal(err)
	}
	const racers = 8
	var toks []jose.Enroll
	for range racers {
		_, code, err := db.CreateEnrollment(ctx, postgres.NewEnrollment{TenantID: tenant, UserName: "mallory", By: admin})
		if err != nil {
			t.Fatal(err)
		}
		key, _ := authenticator.NewKey()
		raw, _ := authenticator.EnrollToken(key, authenticator.EnrollRequest{Code: code, Platform: "ios", PushProvider: "none", Name: "p"}, time.Now())
		v, err := jose.VerifyEnroll(raw, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, v)
	}
	errc := make(chan error, racers)
	start := make(chan struct{})
	for _, v := range toks {
		go func() {
			<-start
			_, err := db.CompleteEnrollment(ctx, postgres.NewDevice{Token: v, Platform: "ios", PushProvider: "none", Name: "p"})
			errc <- err
		}()
	}
	close(start)
	won := 0
	for range racers {
		err := <-errc
		switch {
		case err == nil:
			won++
		case errs.CodeOf(err) == errs.DeviceLimit:
		default:
			t.Errorf("unexpected: %v", err)
		}
	}
	var active int
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM devices WHERE state = 'active'`).Scan(&active)
	if won != 1 || active != 1 {
		t.Fatalf("%d enrollments won, %d active devices; the limit is 1", won, active)
	}
}
