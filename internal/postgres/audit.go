package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/audit"
)

// insertAudit records an event in the caller's transaction, unsealed: the
// writer takes no lock and never waits for other writers.
func insertAudit(ctx context.Context, q querier, tenantID string, e audit.Event) error {
	data := e.Data
	if len(data) == 0 {
		data = []byte("{}")
	}
	_, err := q.Exec(ctx, `INSERT INTO audit_events (tenant_id, type, actor_type, actor_id, user_id, data)
		VALUES ($1, $2, $3, $4, nullif($5, '')::uuid, $6)`, tenantID, e.Type, e.Actor.Type, e.Actor.ID, e.UserID, string(data))
	if err != nil {
		return fmt.Errorf("write audit event %s: %w", e.Type, err)
	}
	return nil
}

const auditColumns = `id, tenant_id, occurred_at, type, actor_type, actor_id, coalesce(user_id::text, ''),
	data::text, coalesce(seq, 0), prev_hash, hash`

func scanAudit(r pgx.Row) (audit.Event, error) {
	var e audit.Event
	var data string
	err := r.Scan(&e.ID, &e.TenantID, &e.OccurredAt, &e.Type, &e.Actor.Type, &e.Actor.ID, &e.UserID,
		&data, &e.Seq, &e.PrevHash, &e.Hash)
	e.Data = []byte(data)
	return e, err
}

// AuditFilter selects audit events of one tenant.
type AuditFilter struct {
	TenantID string
	UserID   string // "" for all
	Type     string // "" for all
	Since    time.Time
	Until    time.Time
	// Before pages backwards: only events with a smaller id (0 = from the newest).
	Before int64
	Limit  int
}

// AuditEvents lists a tenant's events, newest first, and whether older ones
// remain.
func (db *DB) AuditEvents(ctx context.Context, f AuditFilter) ([]audit.Event, bool, error) {
	since, until := f.Since, f.Until
	if since.IsZero() {
		since = time.Unix(0, 0)
	}
	if until.IsZero() {
		until = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	before := f.Before
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := db.pool.Query(ctx, `SELECT `+auditColumns+` FROM audit_events
		WHERE tenant_id = $1 AND ($2 = '' OR user_id::text = $2) AND ($3 = '' OR type = $3)
		  AND occurred_at >= $4 AND occurred_at < $5 AND id < $6
		ORDER BY id DESC LIMIT $7`, f.TenantID, f.UserID, f.Type, since, until, before, f.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list audit events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (audit.Event, error) { return scanAudit(r) })
	if err != nil {
		return nil, false, fmt.Errorf("list audit events: %w", err)
	}
	if len(events) > f.Limit {
		return events[:f.Limit], true, nil
	}
	return events, false, nil
}

// TenantsWithUnsealedAudit lists the tenants that have events to seal.
func (db *DB) TenantsWithUnsealedAudit(ctx context.Context) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT DISTINCT tenant_id::text FROM audit_events WHERE seq IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("find unsealed audit events: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// AuditHead is the end of a tenant's chain.
type AuditHead struct {
	TenantID   string
	TenantSlug string
	Seq        int64
	Hash       []byte
}

// sealBatch bounds one sealing transaction; the sealer loops until done.
const sealBatch = 1000

// SealAudit chains a tenant's unsealed events, oldest first, and returns how
// many it sealed and the chain's head. A transaction-scoped advisory lock per
// tenant makes sealers take turns, so the chain never forks even when several
// run at once.
func (db *DB) SealAudit(ctx context.Context, tenantID string) (int, AuditHead, error) {
	total := 0
	head := AuditHead{TenantID: tenantID}
	for {
		n := 0
		err := db.Transact(ctx, func(tx pgx.Tx) error {
			n = 0
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('pushmfa:audit:' || $1, 0))`, tenantID); err != nil {
				return err
			}
			head = AuditHead{TenantID: tenantID, Hash: audit.Genesis}
			err := tx.QueryRow(ctx, `SELECT t.slug, coalesce(e.seq, 0), coalesce(e.hash, $2)
				FROM tenants t LEFT JOIN LATERAL (SELECT seq, hash FROM audit_events
					WHERE tenant_id = t.id AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1) e ON true
				WHERE t.id = $1`, tenantID, audit.Genesis).Scan(&head.TenantSlug, &head.Seq, &head.Hash)
			if err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT `+auditColumns+` FROM audit_events
				WHERE tenant_id = $1 AND seq IS NULL ORDER BY id LIMIT $2`, tenantID, sealBatch)
			if err != nil {
				return err
			}
			events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (audit.Event, error) { return scanAudit(r) })
			if err != nil || len(events) == 0 {
				return err
			}
			ids, seqs := make([]int64, len(events)), make([]int64, len(events))
			prevs, hashes := make([][]byte, len(events)), make([][]byte, len(events))
			for i, e := range events {
				e.Seq = head.Seq + 1
				h, err := audit.Link(head.Hash, e)
				if err != nil {
					return err
				}
				ids[i], seqs[i], prevs[i], hashes[i] = e.ID, e.Seq, head.Hash, h
				head.Seq, head.Hash = e.Seq, h
			}
			_, err = tx.Exec(ctx, `UPDATE audit_events a SET seq = v.seq, prev_hash = v.prev, hash = v.hash, sealed_at = now()
				FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[]) AS v(id, seq, prev, hash)
				WHERE a.id = v.id`, ids, seqs, prevs, hashes)
			n = len(events)
			return err
		})
		if err != nil {
			return total, head, fmt.Errorf("seal audit events of tenant %s: %w", tenantID, err)
		}
		total += n
		if n < sealBatch {
			return total, head, nil
		}
	}
}

// AuditVerification is the outcome of checking a tenant's chain.
type AuditVerification struct {
	// Events is the number of sealed events checked.
	Events int64
	// Unsealed is the number of events the sealer has yet to chain.
	Unsealed int64
	// HeadSeq and HeadHash are the chain's stored end.
	HeadSeq  int64
	HeadHash []byte
	// Broken is the first broken link, nil when the chain is intact.
	Broken *audit.Break
}

// VerifyAudit walks a tenant's sealed events in order and recomputes every
// link.
func (db *DB) VerifyAudit(ctx context.Context, tenantID string) (AuditVerification, error) {
	var out AuditVerification
	err := pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND seq IS NULL`, tenantID).
			Scan(&out.Unsealed); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT `+auditColumns+` FROM audit_events
			WHERE tenant_id = $1 AND seq IS NOT NULL ORDER BY seq`, tenantID)
		if err != nil {
			return err
		}
		defer rows.Close()
		v := audit.NewVerifier()
		out.HeadHash = audit.Genesis
		for rows.Next() {
			e, err := scanAudit(rows)
			if err != nil {
				return err
			}
			v.Add(e)
			out.Events++
			out.HeadSeq, out.HeadHash = e.Seq, e.Hash
		}
		if err := rows.Err(); err != nil {
			return err
		}
		_, _, out.Broken = v.Result()
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("verify audit chain: %w", err)
	}
	return out, nil
}

// AuditEvent returns one event of a tenant by id (for tests and the console).
func (db *DB) AuditEvent(ctx context.Context, tenantID string, id int64) (audit.Event, error) {
	e, err := scanAudit(db.pool.QueryRow(ctx, `SELECT `+auditColumns+` FROM audit_events WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, fmt.Errorf("audit event %d: %w", id, err)
	}
	return e, err
}

// AuditHeads returns every tenant's chain head (genesis for an empty chain).
func (db *DB) AuditHeads(ctx context.Context) ([]AuditHead, error) {
	rows, err := db.pool.Query(ctx, `SELECT t.id, t.slug, coalesce(e.seq, 0), coalesce(e.hash, $1)
		FROM tenants t LEFT JOIN LATERAL (SELECT seq, hash FROM audit_events
			WHERE tenant_id = t.id AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1) e ON true
		ORDER BY t.slug`, audit.Genesis)
	if err != nil {
		return nil, fmt.Errorf("read audit heads: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditHead, error) {
		var h AuditHead
		return h, r.Scan(&h.TenantID, &h.TenantSlug, &h.Seq, &h.Hash)
	})
}
