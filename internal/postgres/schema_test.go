package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestSchemaRefusesBadRows holds the database to its rules on the tables
// every sign-in writes: each bad write fails with check_violation, naming
// the rule it broke (a rule tying columns together by its table's prefix).
func TestSchemaRefusesBadRows(t *testing.T) {
	t.Parallel()
	s := newHandoffSetup(t)
	ctx := context.Background()
	c := s.create(t)
	delivery := s.held.take()[0].Message.DeliveryID

	// A copy of the challenge, with columns replaced (pairs of a column
	// and its SQL).
	challengeWith := func(replace ...string) string {
		cols := []string{"id", "gen_random_uuid()", "tenant_id", "tenant_id", "application_id", "application_id",
			"user_id", "user_id", "expires_at", "expires_at", "context", "context", "context_digest", "context_digest",
			"nonce", "nonce", "number", "42", "state", "'pending'", "resolution", "NULL", "resolved_at", "NULL",
			"source", "'api'", "idempotency_key", "NULL", "request_digest", "NULL"}
		for i := 0; i < len(replace); i += 2 {
			for j := 0; j < len(cols); j += 2 {
				if cols[j] == replace[i] {
					cols[j+1] = replace[i+1]
				}
			}
		}
		var names, values []string
		for j := 0; j < len(cols); j += 2 {
			names, values = append(names, cols[j]), append(values, cols[j+1])
		}
		return `INSERT INTO challenges (` + strings.Join(names, ", ") + `) SELECT ` + strings.Join(values, ", ") +
			` FROM challenges WHERE id = '` + c.ID + `'`
	}
	auditWith := func(column, value string) string {
		cols := map[string]string{"type": "'challenge.created'", "actor_type": "'system'", "actor_id": "'test'", "data": "'{}'"}
		cols[column] = value
		return `INSERT INTO audit_events (tenant_id, type, actor_type, actor_id, data) VALUES ('` + s.tenant + `', ` +
			cols["type"] + `, ` + cols["actor_type"] + `, ` + cols["actor_id"] + `, ` + cols["data"] + `)`
	}
	sealedWith := func(seq, prev, hash string) string {
		return `UPDATE audit_events SET seq = ` + seq + `, prev_hash = ` + prev + `, hash = ` + hash + `, sealed_at = now()
			WHERE id = (SELECT min(id) FROM audit_events WHERE seq IS NULL)`
	}
	deliveryWith := func(set string) string { return `UPDATE deliveries SET ` + set + ` WHERE id = '` + delivery + `'` }
	digest := `'\x` + strings.Repeat("ab", 32) + `'::bytea`

	for _, tc := range []struct {
		name, sql string
		rule      string // "" for a valid write
	}{
		{"a valid copy of the challenge", challengeWith(), ""},
		{"a valid resolved copy", challengeWith("state", "'denied'", "resolution", "'deny'", "resolved_at", "now()"), ""},
		{"challenge state unknown", challengeWith("state", "'maybe'", "resolution", "'deny'", "resolved_at", "now()"),
			"challenges_state_check"},
		// Every state but pending restricts the resolution by a rule of
		// the row, which PostgreSQL checks first (by name).
		{"challenge resolution unknown", challengeWith("state", "'denied'", "resolution", "'perhaps'", "resolved_at", "now()"),
			"challenges_*"},
		{"challenge source unknown", challengeWith("source", "'smtp'"), "challenges_source_check"},
		{"number below 10", challengeWith("number", "9"), "challenges_number_check"},
		{"number above 99", challengeWith("number", "100"), "challenges_number_check"},
		{"empty idempotency key", challengeWith("idempotency_key", "''", "request_digest", "context_digest"), "challenges_idempotency_key_check"},
		{"context not an object", challengeWith("context", `'["app"]'`), "challenges_context_check"},
		{"context digest not 32 bytes", challengeWith("context_digest", `'\x0102'::bytea`), "challenges_context_digest_check"},
		{"nonce under 16 bytes", challengeWith("nonce", `'\x0102'::bytea`), "challenges_nonce_check"},
		{"resolved but still pending", challengeWith("resolution", "'deny'"), "challenges_check*"},
		{"approved without a device", challengeWith("state", "'approved'", "resolution", "'approve'", "resolved_at", "now()"),
			"challenges_check*"},
		{"a valid delivery outcome", deliveryWith("outcome = 'retrying', attempts = 1"), ""},
		{"delivery outcome unknown", deliveryWith("outcome = 'lost'"), "deliveries_outcome_check"},
		{"delivery provider unknown", deliveryWith("provider = 'sms'"), "deliveries_provider_check"},
		{"negative attempts", deliveryWith("attempts = -1"), "deliveries_attempts_check"},
		{"reason too long", deliveryWith("reason = repeat('x', 513)"), "deliveries_reason_check"},
		{"provider message id too long", deliveryWith("provider_message_id = repeat('x', 257)"), "deliveries_provider_message_id_check"},
		{"sent without a time", deliveryWith("outcome = 'sent'"), "deliveries_check*"},
		{"delivery kind unknown", `INSERT INTO deliveries (id, tenant_id, device_id, kind, notification, provider)
			SELECT gen_random_uuid(), tenant_id, device_id, 'email', 'x', provider FROM deliveries WHERE id = '` + delivery + `'`,
			"deliveries_*"},
		{"notification name too long", `INSERT INTO deliveries (id, tenant_id, device_id, kind, notification, provider)
			SELECT gen_random_uuid(), tenant_id, device_id, 'notification', repeat('n', 65), provider FROM deliveries WHERE id = '` + delivery + `'`,
			"deliveries_notification_check"},
		{"a valid audit event", auditWith("type", "'challenge.created'"), ""},
		{"audit type malformed", auditWith("type", "'Created'"), "audit_events_type_check"},
		{"audit actor type unknown", auditWith("actor_type", "'robot'"), "audit_events_actor_type_check"},
		{"audit actor id empty", auditWith("actor_id", "''"), "audit_events_actor_id_check"},
		{"audit data not an object", auditWith("data", "'[1]'"), "audit_events_data_check"},
		{"audit seq zero", sealedWith("0", digest, digest), "audit_events_seq_check"},
		{"audit hash short", sealedWith("1", digest, `'\x01'::bytea`), "audit_events_hash_check"},
		{"audit sealed without a hash", sealedWith("1", digest, "NULL"), "audit_events_check*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each write in a transaction of its own, rolled back.
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck // rolled back whatever happened
			_, err = tx.Exec(ctx, tc.sql)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("a valid write was refused: %v", err)
				}
				return
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "23514" {
				t.Fatalf("got %v, want check_violation of %s", err, tc.rule)
			}
			if prefix, ok := strings.CutSuffix(tc.rule, "*"); ok && strings.HasPrefix(pgErr.ConstraintName, prefix) {
				return
			}
			if pgErr.ConstraintName != tc.rule {
				t.Errorf("broke %q, want %q", pgErr.ConstraintName, tc.rule)
			}
		})
	}
}
