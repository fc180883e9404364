package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// floorScript is, per challenge, the writes the push-delivery issue fixes
// and nothing else: the challenge's row with a delivery row and a River job
// for each of the user's two devices, in one transaction; then, as if sent,
// the deliveries' outcomes and the jobs' completion, in a second. No reads
// for the guard, no audit event, no River fetch: a lower bound on what any
// server built that way asks of PostgreSQL. The challenges are written
// cancelled and the jobs go to a queue no worker serves, so that the server
// running beside it sends nothing and sweeps nothing.
const floorScript = `\set n random(1, :users)
BEGIN;
WITH b AS (SELECT * FROM bench_floor_users WHERE n = :n),
ch AS (INSERT INTO challenges (id, tenant_id, application_id, user_id, state, resolution, resolved_at,
		expires_at, context, context_digest, nonce, number)
	SELECT gen_random_uuid(), tenant_id, app, user_id, 'cancelled', 'cancelled', now(), now() + interval '60 s',
		'{"app":"bench","ip":"192.0.2.1","browser":"Firefox on Linux"}', sha256('context'), sha256('nonce'), 42
	FROM b RETURNING id, tenant_id),
dl AS (INSERT INTO deliveries (id, tenant_id, device_id, challenge_id, kind, provider)
	SELECT gen_random_uuid(), ch.tenant_id, d.id, ch.id, 'challenge', d.provider
	FROM ch, b, unnest(ARRAY[b.d1, b.d2], ARRAY['apns', 'fcm']) AS d(id, provider) RETURNING id),
j AS (INSERT INTO river_job (args, kind, queue, max_attempts)
	SELECT jsonb_build_object('delivery_id', id), 'deliver', 'bench_floor', 10 FROM dl RETURNING id)
SELECT (SELECT id FROM ch) AS cid, (SELECT min(id) FROM j) AS j1, (SELECT max(id) FROM j) AS j2
\gset
COMMIT;
BEGIN;
UPDATE deliveries SET outcome = 'sent', sent_at = now(), attempts = 1, provider_message_id = 'bench', updated_at = now()
	WHERE challenge_id = :cid;
UPDATE river_job SET state = 'completed', attempt = 1, attempted_at = now(), finalized_at = now() WHERE id IN (:j1, :j2);
COMMIT;
`

// floorSeconds is how long pgbench runs the floor.
const floorSeconds = 10

// pushFloor runs floorScript with pgbench (a C client, no server in the
// way) on the same cluster, over the burst's own users and devices, from 16
// clients for floorSeconds. It returns the pushes a second it reached, a
// ceiling no server built to the issue could pass on this machine with the
// whole of it, and PostgreSQL's CPU per push, a floor under the burst's.
func pushFloor(ctx context.Context, st *stack, pgPID int) (pushesPerSecond, pgCPUPerPush float64, err error) {
	conn, err := pgx.Connect(ctx, st.cluster.URL("pushmfa"))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.Background())
	var users int
	for _, q := range []string{`DROP TABLE IF EXISTS bench_floor_users`,
		`CREATE TABLE bench_floor_users AS
		SELECT row_number() OVER () AS n, u.tenant_id, u.id AS user_id,
			(SELECT id FROM applications a WHERE a.tenant_id = u.tenant_id AND a.deleted_at IS NULL LIMIT 1) AS app,
			(SELECT id FROM devices d WHERE d.user_id = u.id AND d.push_provider = 'apns' AND d.state = 'active' LIMIT 1) AS d1,
			(SELECT id FROM devices d WHERE d.user_id = u.id AND d.push_provider = 'fcm' AND d.state = 'active' LIMIT 1) AS d2
		FROM users u WHERE EXISTS (SELECT 1 FROM devices d WHERE d.user_id = u.id AND d.push_provider = 'apns' AND d.state = 'active')
			AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = u.id AND d.push_provider = 'fcm' AND d.state = 'active')`,
		`CREATE UNIQUE INDEX ON bench_floor_users (n)`,
		`ANALYZE bench_floor_users`,
	} {
		if _, err = conn.Exec(ctx, q); err != nil {
			break
		}
	}
	if err == nil {
		err = conn.QueryRow(ctx, `SELECT count(*) FROM bench_floor_users`).Scan(&users)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("floor users: %w", err)
	}
	if users == 0 {
		return 0, 0, fmt.Errorf("floor: no user with an APNs and an FCM device")
	}
	script := filepath.Join(st.dir, "floor.sql")
	if err := os.WriteFile(script, []byte(floorScript), 0o644); err != nil {
		return 0, 0, err
	}
	cpu0, err := cpuSample(st.srv.Process.Pid, pgPID)
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", "16", "-j", "2",
		"-T", strconv.Itoa(floorSeconds), "-D", "users="+strconv.Itoa(users), "-f", script,
		"-h", "127.0.0.1", "-p", strconv.Itoa(st.cluster.Port()), "-U", "postgres", "pushmfa")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+st.password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench (floor): %v\n%s", err, out)
	}
	// The backends have exited: once reaped, their CPU is the postmaster's.
	time.Sleep(500 * time.Millisecond)
	cpu1, err := cpuSample(st.srv.Process.Pid, pgPID)
	if err != nil {
		return 0, 0, err
	}
	var tps float64
	var scripts int64
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "tps = "):
			tps, err = strconv.ParseFloat(f[2], 64)
		case strings.HasPrefix(line, "number of transactions actually processed:"):
			scripts, err = strconv.ParseInt(strings.Split(f[len(f)-1], "/")[0], 10, 64)
		case strings.Contains(line, "number of failed transactions:") && !strings.Contains(line, ": 0 "):
			err = fmt.Errorf("pgbench (floor): %s", line)
		}
		if err != nil {
			return 0, 0, err
		}
	}
	if tps == 0 || scripts == 0 {
		return 0, 0, fmt.Errorf("pgbench (floor) printed no rate:\n%s", out)
	}
	pushes := float64(2 * scripts)
	return 2 * tps, (cpu1.postgres - cpu0.postgres).Seconds() * 1000 / pushes, nil
}
