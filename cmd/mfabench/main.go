// Command mfabench measures the sign-in path end to end, on loopback, with
// the real server binary, a private PostgreSQL cluster and real ES256
// signatures from the reference authenticator:
//
//	(a) challenge create latency, p50 and p99
//	(b) approve-to-long-poll-wake latency, p50 and p99
//	(c) full cycles per second: create, device fetch, signed approve, and
//	    the relying party's long-poll seeing the result
//	(d) the server process's own CPU time per full cycle (from /proc) and
//	    PostgreSQL transactions per full cycle (from pg_stat_database)
//	(e) in the same run, pgbench's one-row INSERT rate on the same cluster,
//	    the ceiling of commits per second
//	(f) the server's resident memory per waiting long-poll, with -waiters
//	    of them waiting at once (waiters.go)
//
// With -push it measures push delivery instead (push.go). It prints a table
// and writes JSON under bench/results/. `make bench` runs both; -runs N
// repeats the whole measurement and reports medians.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/client"
	"github.com/pushmfa/pushmfa/internal/localpg"
	"github.com/pushmfa/pushmfa/internal/wire"
)

type options struct {
	server          string
	runs            int
	creates         int
	wakes           int
	duration        time.Duration
	concurrency     int
	waiters         int
	users           int
	out             string
	profile         string
	statements      bool
	push            bool
	challenges      int
	pushUsers       int
	pushConcurrency int
	pushRate        float64
	serverEnv       []string
	dbParams        string
	pgSettings      map[string]string
	serverLog       string
}

func main() {
	var o options
	flag.StringVar(&o.server, "server", "bin/server", "server binary")
	flag.IntVar(&o.runs, "runs", 1, "repeat the whole measurement and report medians")
	flag.IntVar(&o.creates, "creates", 1000, "challenges created for the create latency")
	flag.IntVar(&o.wakes, "wakes", 300, "approvals timed for the approve-to-wake latency")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "length of the full-cycle run")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrent full cycles")
	flag.IntVar(&o.users, "users", 64, "users (each with one enrolled device)")
	flag.IntVar(&o.waiters, "waiters", 2000, "long-polls waiting at once for the memory a waiter costs")
	flag.StringVar(&o.out, "out", "bench/results", "directory for the JSON results")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of the server during the full cycles (with -push: the burst's first -duration) to this file")
	flag.BoolVar(&o.statements, "statements", false, "print the statements run per full cycle (pg_stat_statements); with -push, per challenge, and what the server's database sessions wait on")
	flag.BoolVar(&o.push, "push", false, "measure push delivery (push.go) instead of the sign-in path")
	flag.IntVar(&o.challenges, "challenges", 10000, "with -push: challenges in the burst")
	flag.IntVar(&o.pushUsers, "push-users", 2000, "with -push: users, each with one APNs and one FCM device")
	flag.IntVar(&o.pushConcurrency, "push-concurrency", 64, "with -push: concurrent clients creating the burst's challenges")
	flag.Float64Var(&o.pushRate, "push-rate", 0, "with -push: offer challenges at this rate a second, arriving at random as from independent relying parties (0: as fast as the clients go)")
	flag.Func("server-env", "add KEY=VALUE to the server's environment (repeatable), for experiments", func(v string) error {
		if !strings.Contains(v, "=") {
			return errors.New("want KEY=VALUE")
		}
		o.serverEnv = append(o.serverEnv, v)
		return nil
	})
	flag.StringVar(&o.dbParams, "db-params", "", "add these parameters to the server's DATABASE_URL (such as pool_max_conns=32), for experiments")
	flag.StringVar(&o.serverLog, "server-log", "", "write the server's log to this file, for experiments")
	flag.Func("pg-setting", "set KEY=VALUE on the benchmark's PostgreSQL cluster (repeatable), for experiments", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return errors.New("want KEY=VALUE")
		}
		if o.pgSettings == nil {
			o.pgSettings = map[string]string{}
		}
		o.pgSettings[k] = val
		return nil
	})
	flag.Parse()
	var err error
	if o.push {
		err = pushMain(o)
	} else {
		err = run(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mfabench:", err)
		os.Exit(1)
	}
}

// Result is one run's figures.
type Result struct {
	CreateP50ms       float64 `json:"create_p50_ms"`
	CreateP99ms       float64 `json:"create_p99_ms"`
	WakeP50ms         float64 `json:"approve_to_wake_p50_ms"`
	WakeP99ms         float64 `json:"approve_to_wake_p99_ms"`
	CyclesPerSecond   float64 `json:"cycles_per_second"`
	ServerCPUPerCycle float64 `json:"server_cpu_ms_per_cycle"`
	PGTxPerCycle      float64 `json:"pg_transactions_per_cycle"`
	Cycles            int64   `json:"cycles"`
	PgbenchInsertTPS  float64 `json:"pgbench_insert_tps"`
	// WaiterKiB is the server's resident memory per waiting long-poll.
	WaiterKiB float64 `json:"server_kib_per_waiting_longpoll"`
}

func run(o options) error {
	var results []Result
	for i := range o.runs {
		fmt.Fprintf(os.Stderr, "run %d of %d\n", i+1, o.runs)
		r, err := once(o)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	med := medians(results)
	report(os.Stdout, o, results, med)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	name := filepath.Join(o.out, "signin-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	b, _ := json.MarshalIndent(map[string]any{"runs": results, "median": med, "concurrency": o.concurrency,
		"duration_s": o.duration.Seconds(), "users": o.users, "cores": cores()}, "", "  ")
	if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwritten to %s\n", name)
	return nil
}

func once(o options) (Result, error) {
	var res Result
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := start(ctx, o)
	if err != nil {
		return res, err
	}
	defer st.close()
	srv, admin, stmts, rp := st.srv, st.admin, st.stmts, st.rp
	devs := make([]*authenticator.Device, o.users)
	for i := range devs {
		if devs[i], err = st.enroll(ctx, fmt.Sprintf("u%03d", i), authenticator.EnrollOptions{}); err != nil {
			return res, err
		}
	}

	// (a) create latency, one at a time.
	var creates []time.Duration
	var toAnswer []struct {
		d *authenticator.Device
		c wire.Challenge
	}
	for i := range o.creates {
		d := devs[i%len(devs)]
		start := time.Now()
		c, err := create(ctx, rp, fmt.Sprintf("u%03d", i%len(devs)))
		if err != nil {
			return res, err
		}
		creates = append(creates, time.Since(start))
		toAnswer = append(toAnswer, struct {
			d *authenticator.Device
			c wire.Challenge
		}{d, c})
	}
	res.CreateP50ms, res.CreateP99ms = pct(creates, 50), pct(creates, 99)
	// Clear them so phase (b) starts clean.
	for _, x := range toAnswer {
		_ = rp.Do(ctx, "POST", "/v1/challenges/"+x.c.ID+"/cancel", nil, nil)
	}

	// (b) approve-to-wake: a long-poll waits; the device fetches and signs;
	// the clock starts when the approval is sent and stops when the
	// long-poll returns.
	var wakes []time.Duration
	for i := range o.wakes {
		d, user := devs[i%len(devs)], fmt.Sprintf("u%03d", i%len(devs))
		c, err := create(ctx, rp, user)
		if err != nil {
			return res, err
		}
		woke := make(chan time.Time, 1)
		go func() {
			var got wire.Challenge
			_ = rp.Do(ctx, "GET", "/v1/challenges/"+c.ID+"?wait=30s", nil, &got)
			woke <- time.Now()
		}()
		view, err := d.Challenge(ctx, c.ID)
		if err != nil {
			return res, err
		}
		tok, err := authenticator.ResponseToken(d.Key, d.DeviceID, view, authenticator.Answer{Decision: "approve", Number: num(c), UV: true}, time.Now())
		if err != nil {
			return res, err
		}
		time.Sleep(2 * time.Millisecond) // let the long-poll reach its wait
		sent := time.Now()
		if err := d.Send(ctx, "POST", "/v1/device/challenges/"+c.ID+"/response", "application/jose", tok, nil); err != nil {
			return res, err
		}
		wakes = append(wakes, (<-woke).Sub(sent))
	}
	res.WakeP50ms, res.WakeP99ms = pct(wakes, 50), pct(wakes, 99)

	// (c, d) full cycles at concurrency. The server's CPU and the
	// database's transactions are sampled at two instants while the load
	// runs steadily (after a warm-up), so no idle time and no other phase
	// falls inside the window. PostgreSQL backends flush their statistics
	// about once a second while busy, so both samples lag by the same
	// fraction of a second on average and the difference is unbiased; but
	// an idle backend holds its counts for up to 10 s, and would bring the
	// earlier phases' into the window when the load wakes it: wait those
	// out first.
	time.Sleep(statsSettle)
	var cycles atomic.Int64
	var cycleErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += o.concurrency {
				select {
				case <-stop:
					return
				default:
				}
				if err := cycle(ctx, rp, devs[i%len(devs)], fmt.Sprintf("u%03d", i%len(devs))); err != nil {
					cycleErr.Store(err)
					return
				}
				cycles.Add(1)
			}
		}()
	}
	type sample struct {
		at     time.Time
		cycles int64
		cpu    time.Duration
		tx     int64
		maint  int64 // autovacuum and autoanalyze runs (with -statements)
		conns  int64 // sessions opened (with -statements)
	}
	take := func() (sample, error) {
		s := sample{at: time.Now(), cycles: cycles.Load()}
		var err error
		if s.cpu, err = cpuTime(srv.Process.Pid); err == nil {
			s.tx, err = xacts(ctx, admin)
		}
		if err == nil && stmts != nil {
			err = stmts.QueryRow(ctx, `SELECT sum(autovacuum_count + autoanalyze_count) FROM pg_stat_all_tables`).Scan(&s.maint)
			if err == nil {
				err = admin.QueryRow(ctx, `SELECT sessions FROM pg_stat_database WHERE datname = 'pushmfa'`).Scan(&s.conns)
			}
		}
		return s, err
	}
	time.Sleep(warmup)
	// pg_stat_reset zeroes pg_stat_database's counters too: reset before
	// the first sample, or the window's transactions come out negative.
	if stmts != nil {
		_, err = stmts.Exec(ctx, `SELECT pg_stat_statements_reset(), pg_stat_reset()`)
	}
	var s0 sample
	if err == nil {
		s0, err = take()
	}
	profiled := make(chan error, 1)
	if err == nil && o.profile != "" {
		go func() { profiled <- saveProfile(o.profile, o.duration) }()
	}
	if err == nil {
		time.Sleep(o.duration)
	}
	var s1 sample
	if err == nil {
		s1, err = take()
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return res, err
	}
	if err, ok := cycleErr.Load().(error); ok {
		return res, fmt.Errorf("cycle: %w", err)
	}
	if o.profile != "" {
		if err := <-profiled; err != nil {
			return res, err
		}
	}
	res.Cycles = s1.cycles - s0.cycles
	if stmts != nil {
		fmt.Fprintf(os.Stderr, "transactions in the window: %d (autovacuum and autoanalyze runs: %d, sessions opened: %d)\n",
			s1.tx-s0.tx, s1.maint-s0.maint, s1.conns-s0.conns)
		printStatements(ctx, stmts, res.Cycles, "full cycle")
		// What an idle server runs.
		time.Sleep(statsSettle)
		_, _ = stmts.Exec(ctx, `SELECT pg_stat_statements_reset(), pg_stat_reset()`)
		i0, _ := xacts(ctx, admin)
		time.Sleep(20 * time.Second)
		i1, _ := xacts(ctx, admin)
		fmt.Fprintf(os.Stderr, "\nidle for 20 s: %d transactions\n", i1-i0)
		printStatements(ctx, stmts, 20, "second")
	}
	res.CyclesPerSecond = float64(res.Cycles) / s1.at.Sub(s0.at).Seconds()
	res.ServerCPUPerCycle = (s1.cpu - s0.cpu).Seconds() * 1000 / float64(res.Cycles)
	res.PGTxPerCycle = float64(s1.tx-s0.tx) / float64(res.Cycles)

	// (f) what a waiting long-poll costs the server.
	if res.WaiterKiB, err = waitersMemory(ctx, st, o.users, o.waiters); err != nil {
		return res, fmt.Errorf("waiters: %w", err)
	}

	// (e) the commit ceiling on this cluster, in the same run.
	_ = srv.Process.Signal(os.Interrupt)
	_ = srv.Wait()
	if res.PgbenchInsertTPS, err = pgbench(ctx, st.cluster, st.password, st.dir); err != nil {
		return res, err
	}
	return res, nil
}

const (
	// warmup lets the load reach a steady state before the first sample.
	warmup = 2 * time.Second
	// statsSettle outlasts PostgreSQL's idle statistics flush interval
	// (10 s).
	statsSettle = 11 * time.Second
)

func raw(n int) json.RawMessage { return json.RawMessage(strconv.Itoa(n)) }

func create(ctx context.Context, rp *client.Client, user string) (wire.Challenge, error) {
	var c wire.Challenge
	err := rp.Do(ctx, "POST", "/v1/challenges", wire.CreateChallenge{User: user, Message: "bench",
		Context: &wire.RequestContext{IP: "203.0.113.1", Browser: "mfabench"}}, &c)
	return c, err
}

func num(c wire.Challenge) int {
	if c.Number == nil {
		return 0
	}
	return *c.Number
}

// cycle is one full sign-in: create, long-poll, device fetch, signed
// approve, and the long-poll's answer.
func cycle(ctx context.Context, rp *client.Client, d *authenticator.Device, user string) error {
	c, err := create(ctx, rp, user)
	if err != nil {
		return err
	}
	polled := make(chan error, 1)
	go func() {
		var got wire.Challenge
		err := rp.Do(ctx, "GET", "/v1/challenges/"+c.ID+"?wait=30s", nil, &got)
		if err == nil && got.State != "approved" {
			err = fmt.Errorf("long-poll saw %s", got.State)
		}
		polled <- err
	}()
	if _, err := d.Respond(ctx, c.ID, authenticator.Answer{Decision: "approve", Number: num(c), UV: true}); err != nil {
		return err
	}
	return <-polled
}

// serving reads the server's log until it says where it listens, then
// drains the rest, into the file serverLog names if any (-server-log).
func serving(r io.Reader, serverLog string) (string, error) {
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 4096)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for _, line := range bytes.Split(buf, []byte("\n")) {
			var l struct{ Msg, Addr string }
			if json.Unmarshal(line, &l) == nil && l.Msg == "serving" {
				go func() {
					var w io.Writer = io.Discard
					if serverLog != "" {
						if f, err := os.Create(serverLog); err == nil {
							defer f.Close()
							w = f
						}
					}
					_, _ = io.Copy(w, r)
				}()
				return l.Addr, nil
			}
		}
		if err != nil {
			return "", fmt.Errorf("server exited before serving: %s", buf)
		}
	}
	return "", errors.New("server not serving after 60 s")
}

// cpuTime is a process's user+system CPU time, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// xacts counts the transactions PostgreSQL has committed or rolled back in
// the server's database.
func xacts(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var n int64
	_, _ = conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`)
	err := conn.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'pushmfa'`).Scan(&n)
	return n, err
}

// pgbench runs a one-row INSERT transaction on the same cluster and
// returns its rate.
func pgbench(ctx context.Context, cluster *localpg.Cluster, password, dir string) (float64, error) {
	admin, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		return 0, err
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, v int, at timestamptz DEFAULT now())`); err != nil {
		return 0, err
	}
	script := filepath.Join(dir, "insert.sql")
	if err := os.WriteFile(script, []byte("INSERT INTO bench_insert (v) VALUES (1);\n"), 0o644); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-c", "8", "-j", "2", "-T", "10", "-f", script,
		"-h", "127.0.0.1", "-p", strconv.Itoa(cluster.Port()), "-U", "postgres", "postgres")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "tps = ") {
			f := strings.Fields(line)
			return strconv.ParseFloat(f[2], 64)
		}
	}
	return 0, fmt.Errorf("pgbench printed no tps:\n%s", out)
}

func pct(ds []time.Duration, p int) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return float64(s[i].Microseconds()) / 1000
}

func medians(rs []Result) Result {
	pick := func(f func(Result) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = f(r)
		}
		sort.Float64s(vs)
		return vs[len(vs)/2]
	}
	return Result{
		CreateP50ms:       pick(func(r Result) float64 { return r.CreateP50ms }),
		CreateP99ms:       pick(func(r Result) float64 { return r.CreateP99ms }),
		WakeP50ms:         pick(func(r Result) float64 { return r.WakeP50ms }),
		WakeP99ms:         pick(func(r Result) float64 { return r.WakeP99ms }),
		CyclesPerSecond:   pick(func(r Result) float64 { return r.CyclesPerSecond }),
		ServerCPUPerCycle: pick(func(r Result) float64 { return r.ServerCPUPerCycle }),
		PGTxPerCycle:      pick(func(r Result) float64 { return r.PGTxPerCycle }),
		Cycles:            int64(pick(func(r Result) float64 { return float64(r.Cycles) })),
		PgbenchInsertTPS:  pick(func(r Result) float64 { return r.PgbenchInsertTPS }),
		WaiterKiB:         pick(func(r Result) float64 { return r.WaiterKiB }),
	}
}

func report(w io.Writer, o options, rs []Result, m Result) {
	fmt.Fprintf(w, "sign-in benchmark: %d run(s), %d cores, %d concurrent cycles for %s, %d users\n\n", len(rs), cores(), o.concurrency, o.duration, o.users)
	row := func(name, target string, v func(Result) float64, unit string) {
		fmt.Fprintf(w, "%-44s %10.3f %-6s", name, v(m), unit)
		if target != "" {
			fmt.Fprintf(w, "  (target %s)", target)
		}
		if len(rs) > 1 {
			fmt.Fprint(w, "  runs:")
			for _, r := range rs {
				fmt.Fprintf(w, " %.3f", v(r))
			}
		}
		fmt.Fprintln(w)
	}
	row("(a) challenge create latency p50", "", func(r Result) float64 { return r.CreateP50ms }, "ms")
	row("(a) challenge create latency p99", "<= 25 ms", func(r Result) float64 { return r.CreateP99ms }, "ms")
	row("(b) approve-to-long-poll-wake p50", "<= 5 ms", func(r Result) float64 { return r.WakeP50ms }, "ms")
	row("(b) approve-to-long-poll-wake p99", "", func(r Result) float64 { return r.WakeP99ms }, "ms")
	row("(c) full cycles per second", "", func(r Result) float64 { return r.CyclesPerSecond }, "/s")
	row("(d) server CPU per full cycle", "<= 1 ms", func(r Result) float64 { return r.ServerCPUPerCycle }, "ms")
	row("(d) PostgreSQL transactions per full cycle", "<= 3", func(r Result) float64 { return r.PGTxPerCycle }, "")
	row("(e) pgbench one-row INSERT, same cluster", "", func(r Result) float64 { return r.PgbenchInsertTPS }, "tx/s")
	fmt.Fprintf(w, "%-44s %10.3f %-6s  (cycles/s x transactions per cycle, against (e))\n", "    commit rate the cycles used",
		m.CyclesPerSecond*m.PGTxPerCycle, "tx/s")
	row(fmt.Sprintf("(f) server memory per waiting long-poll (%d)", o.waiters), "", func(r Result) float64 { return r.WaiterKiB }, "KiB")
}

func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func cores() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

// saveProfile fetches a CPU profile of the server over most of the run.
func saveProfile(path string, d time.Duration) error {
	secs := max(int(d.Seconds())-2, 1)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:6061/debug/pprof/profile?seconds=%d", secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// printStatements lists what the database ran per full cycle (or per
// whatever n counts).
func printStatements(ctx context.Context, conn *pgx.Conn, n int64, per string) {
	rows, err := conn.Query(ctx, `SELECT calls, plans, total_exec_time, max_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'pushmfa') ORDER BY calls DESC LIMIT 40`)
	if err != nil {
		fmt.Fprintln(os.Stderr, "statements:", err)
		return
	}
	defer rows.Close()
	// Plans are counted only with pg_stat_statements.track_planning on
	// (-pg-setting): a statement planned at every call shows 1.000.
	fmt.Fprintf(os.Stderr, "\nstatements per %s (%d), plans per call, with the mean and the longest execution time:\n", per, n)
	for rows.Next() {
		var calls, plans int64
		var total, longest float64
		var q string
		_ = rows.Scan(&calls, &plans, &total, &longest, &q)
		fmt.Fprintf(os.Stderr, "%8.3f %5.3f %8.3f %8.1f ms  %s\n", float64(calls)/float64(n), float64(plans)/float64(max(calls, 1)),
			total/float64(max(calls, 1)), longest, q)
	}
	rows.Close()
	// How the tables were read: rows read by sequential scans grow with a
	// table, so a hot statement planned to scan one shows here.
	trows, err := conn.Query(ctx, `SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup, n_dead_tup,
			autoanalyze_count + analyze_count, pg_total_relation_size(relid) / 1024 FROM pg_stat_user_tables
		WHERE seq_tup_read > 0 OR idx_scan > 0 ORDER BY seq_tup_read DESC LIMIT 12`)
	if err != nil {
		fmt.Fprintln(os.Stderr, "table scans:", err)
		return
	}
	defer trows.Close()
	fmt.Fprintf(os.Stderr, "\ntables since the reset, per %s: sequential scans, rows they read, index scans; live and dead rows, analyzes, KiB with indexes:\n", per)
	for trows.Next() {
		var name string
		var seq, seqRows, idx, live, dead, analyzed, kib int64
		_ = trows.Scan(&name, &seq, &seqRows, &idx, &live, &dead, &analyzed, &kib)
		fmt.Fprintf(os.Stderr, "%-22s %8.3f %10.1f %8.3f   %8d %8d %3d %9d\n", name, float64(seq)/float64(n), float64(seqRows)/float64(n),
			float64(idx)/float64(n), live, dead, analyzed, kib)
	}
	trows.Close()
	// Index entries read per scan: a statement whose plan walks an index by
	// a leading column it does not bind (a generic plan, a foreign key's
	// check) reads many entries a scan.
	irows, err := conn.Query(ctx, `SELECT relname, indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes
		WHERE idx_scan > 0 ORDER BY idx_tup_read DESC LIMIT 12`)
	if err != nil {
		fmt.Fprintln(os.Stderr, "index scans:", err)
		return
	}
	defer irows.Close()
	fmt.Fprintf(os.Stderr, "\nindexes since the reset, per %s: scans, entries read, rows fetched; entries read a scan:\n", per)
	for irows.Next() {
		var table, index string
		var scans, read, fetched int64
		_ = irows.Scan(&table, &index, &scans, &read, &fetched)
		fmt.Fprintf(os.Stderr, "%-44s %8.3f %10.1f %8.3f   %8.1f\n", table+"."+index, float64(scans)/float64(n), float64(read)/float64(n),
			float64(fetched)/float64(n), float64(read)/float64(max(scans, 1)))
	}
	var wal, buffers string
	if err := conn.QueryRow(ctx, `SELECT pg_size_pretty(pg_current_wal_lsn() - '0/0'::pg_lsn), current_setting('shared_buffers')`).Scan(&wal, &buffers); err == nil {
		fmt.Fprintf(os.Stderr, "WAL written since the cluster began: %s; shared_buffers %s\n", wal, buffers)
	}
}
