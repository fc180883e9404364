package main

// The push-delivery benchmark (-push): a burst of challenges, each pushed to
// its user's two devices (one APNs, one FCM) through the server's real
// provider clients, answered at once by the fake providers of
// internal/pushtest running in this process. It reports
//
//	commit-to-provider latency p50 and p99: the fake's arrival time of each
//	push minus, as an upper bound, the instant its challenge's create
//	request was sent and, as a lower bound, the instant the 201 arrived
//	(the commit falls between the two); and the estimate from the server's
//	own histogram (commit acknowledged to provider answered)
//
//	pushes per second: distinct challenge pushes the fakes received, over
//	the time from the first create sent to the last push received
//
// and checks that every push arrived exactly once (a push missing fails the
// run; duplicates are reported: delivery is at least once).
//
// The setup: -push-users users (2,000) with two push devices each,
// enrolled through the API (about 12 s), on the bench tenant whose
// push-bombing guard stack.go relaxes through the admin API (1000 pending
// challenges per user, a million per 1 s window). A burst of 10,000
// sign-ins then gives each user 5, near the default policy's cap of 3
// pending. With 200 users each had 50 pending at once, which the default
// policy would refuse, and what each create costs per user (the guard's
// count of the user's recent challenges, waits on the user's lock) grew
// through the burst: creates fell from about 900/s to 450/s, where with
// 2,000 users they hold steady.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/pushtest"
)

// The targets of the push benchmark.
const (
	targetPushP50ms = 10
	targetPushP99ms = 50
	targetPushRate  = 2000
)

// PushResult is one push run's figures.
type PushResult struct {
	// Commit to provider, from the create request sent (an upper bound)
	// and from its 201 received (a lower bound).
	FromSendP50ms  float64 `json:"commit_to_provider_from_send_p50_ms"`
	FromSendP99ms  float64 `json:"commit_to_provider_from_send_p99_ms"`
	FromReplyP50ms float64 `json:"commit_to_provider_from_201_p50_ms"`
	FromReplyP99ms float64 `json:"commit_to_provider_from_201_p99_ms"`
	// FromCommit* start at the challenge's commit as PostgreSQL recorded it
	// (track_commit_timestamp: taken as the commit is written, before its
	// WAL flush), so they count the wait for durability too.
	FromCommitP50ms float64 `json:"commit_to_provider_from_commit_timestamp_p50_ms"`
	FromCommitP99ms float64 `json:"commit_to_provider_from_commit_timestamp_p99_ms"`
	// The server's histogram pushmfa_push_commit_to_provider_seconds over
	// the burst, interpolated within its buckets.
	ServerHistP50ms float64 `json:"server_histogram_p50_ms"`
	ServerHistP99ms float64 `json:"server_histogram_p99_ms"`
	PushesPerSecond float64 `json:"pushes_per_second"`
	// BurstSeconds is from the first create sent to the last push received.
	BurstSeconds     float64 `json:"burst_seconds"`
	CreatesPerSecond float64 `json:"creates_per_second"` // over the creates alone
	CreateP50ms      float64 `json:"create_p50_ms"`
	CreateP99ms      float64 `json:"create_p99_ms"`
	Pushes           int     `json:"pushes"` // distinct challenge pushes received
	Missing          int     `json:"missing"`
	Duplicates       int     `json:"duplicates"`
	Refused          int     `json:"refused"`    // answered other than 200 by a fake (missing unless retried)
	Unexpected       int     `json:"unexpected"` // challenge pushes for no challenge of the burst, or the wrong token
	// CPU time per push over the burst (creates included), by process.
	ServerCPUPerPush   float64 `json:"server_cpu_ms_per_push"`
	PostgresCPUPerPush float64 `json:"postgres_cpu_ms_per_push"`
	BenchCPUPerPush    float64 `json:"bench_cpu_ms_per_push"` // clients and fakes
	// OtherCPUShare is the share of the machine's CPU that processes other
	// than the server, its cluster and mfabench used during the burst: the
	// figures are only worth comparing when it is near 0.
	OtherCPUShare float64 `json:"other_processes_cpu_share"`
	// PGTxPerChallenge is PostgreSQL transactions per challenge over the
	// burst: its create and its two deliveries, and River's fetches.
	PGTxPerChallenge float64 `json:"pg_transactions_per_challenge"`
	// The floor (floor.go), measured after a burst on the same cluster:
	// pgbench alone doing only the writes the issue fixes, its pushes a
	// second and PostgreSQL's CPU per push.
	FloorPushesPerSecond    float64 `json:"floor_pushes_per_second,omitempty"`
	FloorPostgresCPUPerPush float64 `json:"floor_postgres_cpu_ms_per_push,omitempty"`
}

// pushMain installs the fakes' CA, then runs the push benchmark. main calls
// it first, before anything loads the system roots: so this process's TLS
// clients, and the server child through SSL_CERT_FILE, trust the fakes.
func pushMain(o options) error {
	dir, err := os.MkdirTemp("", "mfabench-push")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := pushtest.InstallCA(dir)
	if err != nil {
		return err
	}
	return runPush(o, ca, dir)
}

// runPush runs the push benchmark o.runs times, prints the table and writes
// the JSON. ca must already be installed in this process's roots.
func runPush(o options, ca *pushtest.CA, dir string) error {
	o.concurrency = o.pushConcurrency
	if o.challenges < 1 || o.pushUsers < 1 || o.challenges > o.pushUsers*1000 {
		// The bench tenant's guard allows 1000 pending challenges per user
		// (stack.go).
		return fmt.Errorf("-challenges %d needs between 1 and 1000 per -push-users", o.challenges)
	}
	var results []PushResult
	var failed error
	for i := range o.runs {
		fmt.Fprintf(os.Stderr, "push run %d of %d\n", i+1, o.runs)
		r, err := pushOnce(o, ca, dir)
		if err != nil && r.Pushes == 0 {
			return err
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mfabench:", err)
			failed = err
		}
		results = append(results, r)
	}
	med := pushMedians(results)
	reportPush(os.Stdout, o, results, med)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	name := filepath.Join(o.out, "push-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	b, _ := json.MarshalIndent(map[string]any{"runs": results, "median": med, "challenges": o.challenges,
		"devices_per_challenge": 2, "users": o.pushUsers, "concurrency": o.concurrency, "offered_per_second": o.pushRate, "cores": cores(),
		"targets": map[string]float64{"p50_ms": targetPushP50ms, "p99_ms": targetPushP99ms, "pushes_per_second": targetPushRate},
	}, "", "  ")
	if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwritten to %s\n", name)
	return failed
}

// burstRec is one challenge of the burst.
type burstRec struct {
	id            string
	user          int
	sent, replied time.Time
}

// pushKey names one expected push: a challenge to one device token.
type pushKey struct{ challenge, token string }

func pushOnce(o options, ca *pushtest.CA, dir string) (PushResult, error) {
	var res PushResult
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The fakes, answering at once, and the server's configuration for them.
	p8, key, err := pushtest.NewP8Key()
	if err != nil {
		return res, err
	}
	const keyID, teamID, topic, project = "BENCHKEY01", "BENCHTEAM1", "com.pushmfa.bench", "pushmfa-bench"
	apns, err := pushtest.NewAPNs(pushtest.APNsConfig{CA: ca, KeyID: keyID, TeamID: teamID, Key: &key.PublicKey, Topic: topic})
	if err != nil {
		return res, err
	}
	defer apns.Close()
	fcm, err := pushtest.NewFCM(pushtest.FCMConfig{CA: ca, ProjectID: project})
	if err != nil {
		return res, err
	}
	defer fcm.Close()
	keyFile, credsFile, err := pushtest.WriteCredentials(dir, p8, fcm)
	if err != nil {
		return res, err
	}
	st, err := start(ctx, o, "SSL_CERT_FILE="+os.Getenv("SSL_CERT_FILE"),
		"APNS_ENDPOINT="+apns.URL(), "APNS_KEY_FILE="+keyFile, "APNS_KEY_ID="+keyID, "APNS_TEAM_ID="+teamID,
		"APNS_TOPIC="+topic, "FCM_ENDPOINT="+fcm.Endpoint(), "FCM_CREDENTIALS_FILE="+credsFile, "FCM_PROJECT_ID="+project)
	if err != nil {
		return res, err
	}
	defer st.close()

	// Each user gets an APNs device and an FCM device, enrolled a few at a
	// time. Enrolling the second notifies the first (a background push).
	apnsTok, fcmTok := make([]string, o.pushUsers), make([]string, o.pushUsers)
	enrollStart := time.Now()
	if err := parallel(8, o.pushUsers, func(i int) error {
		user := fmt.Sprintf("p%04d", i)
		apnsTok[i], fcmTok[i] = randomHex(32), "fcm-"+randomHex(48)
		if _, err := st.enroll(ctx, user, authenticator.EnrollOptions{Platform: "ios", PushProvider: "apns", PushToken: apnsTok[i]}); err != nil {
			return fmt.Errorf("enroll %s (apns): %w", user, err)
		}
		if _, err := st.enroll(ctx, user, authenticator.EnrollOptions{Platform: "android", PushProvider: "fcm", PushToken: fcmTok[i]}); err != nil {
			return fmt.Errorf("enroll %s (fcm): %w", user, err)
		}
		return nil
	}); err != nil {
		return res, err
	}
	fmt.Fprintf(os.Stderr, "enrolled %d devices in %.1f s\n", 2*o.pushUsers, time.Since(enrollStart).Seconds())
	// Let the enrollments' notifications drain so the burst starts on an
	// idle server.
	settle(apns, fcm, time.Second, 30*time.Second)
	if err := history(ctx, st); err != nil {
		return res, err
	}
	// Idle backends hold their statistics for up to 10 s: wait them out,
	// so the setup's transactions stay out of the burst's count.
	time.Sleep(statsSettle)
	// This machine may be shared: start when others leave the CPU alone.
	waitQuiet(0.1, 3*time.Second, 3*time.Minute)
	before, err := scrapeMetrics(ctx, st)
	if err != nil {
		return res, err
	}
	pgPID, err := postmasterPID(st)
	if err != nil {
		return res, err
	}
	cpu0, err := cpuSample(st.srv.Process.Pid, pgPID)
	if err != nil {
		return res, err
	}
	// pg_stat_reset zeroes pg_stat_database's counters too: reset before
	// the first sample, or the burst's transactions come out negative.
	if st.stmts != nil {
		if _, err := st.stmts.Exec(ctx, `SELECT pg_stat_statements_reset(), pg_stat_reset()`); err != nil {
			return res, err
		}
	}
	tx0, err := xacts(ctx, st.admin)
	if err != nil {
		return res, err
	}
	var waits *waitSampler
	if st.stmts != nil {
		if waits, err = sampleWaits(ctx, st); err != nil {
			return res, err
		}
	}
	profiled := make(chan error, 1)
	if o.profile != "" {
		go func() { profiled <- saveProfile(o.profile, o.duration) }()
	}

	// The burst: o.concurrency clients create challenges as fast as the
	// server takes them, round robin over the users; or, with a rate, each
	// at its own time, the gaps drawn as between independent arrivals, so
	// that some come close together as real relying parties' do.
	recs := make([]burstRec, o.challenges)
	at := arrivals(o.challenges, o.pushRate)
	fmt.Fprintf(os.Stderr, "burst of %d challenges from %d clients\n", o.challenges, o.concurrency)
	burstStart := time.Now()
	if err := parallel(o.concurrency, o.challenges, func(i int) error {
		r := &recs[i]
		r.user = i % o.pushUsers
		if at != nil {
			time.Sleep(time.Until(burstStart.Add(at[i])))
		}
		r.sent = time.Now()
		c, err := create(ctx, st.rp, fmt.Sprintf("p%04d", r.user))
		r.replied = time.Now()
		if err != nil {
			return fmt.Errorf("create %d: %w", i, err)
		}
		r.id = c.ID
		return nil
	}); err != nil {
		return res, err
	}
	createsDone := time.Now()
	if waits != nil {
		waits.stop()
	}

	// Wait for every push (or for the fakes to go quiet), without reading
	// the fakes' journals while the creates ran.
	want := 2 * o.challenges
	waitPushes(apns, fcm, want, 10*time.Second)
	cpu1, err := cpuSample(st.srv.Process.Pid, pgPID)
	if err != nil {
		return res, err
	}
	after, err := scrapeMetrics(ctx, st)
	if err != nil {
		return res, err
	}
	// PostgreSQL flushes a backend's statistics at most once a second while
	// it is busy, and up to 10 s later once it is idle: let the last in.
	time.Sleep(statsSettle)
	tx1, err := xacts(ctx, st.admin)
	if err != nil {
		return res, err
	}
	res.PGTxPerChallenge = float64(tx1-tx0) / float64(o.challenges)
	if st.stmts != nil {
		printStatements(ctx, st.stmts, int64(o.challenges), "challenge")
	}
	if o.profile != "" {
		if err := <-profiled; err != nil {
			return res, err
		}
	}

	// Match each push to its challenge and token.
	expect := make(map[pushKey]int, want) // index into recs
	for i, r := range recs {
		expect[pushKey{r.id, apnsTok[r.user]}] = i
		expect[pushKey{r.id, fcmTok[r.user]}] = i
	}
	arrived := make(map[pushKey][]time.Time, want)
	note := func(k pushKey, kind string, at time.Time, status int) {
		if kind != "challenge" {
			return // a notification
		}
		if _, ok := expect[k]; !ok {
			res.Unexpected++
			return
		}
		if status != http.StatusOK {
			// Not delivered: counts as missing unless a retry is.
			res.Refused++
			return
		}
		arrived[k] = append(arrived[k], at)
	}
	for _, p := range apns.Received() {
		kind, challenge := p.Event()
		note(pushKey{challenge, p.Token}, kind, p.At, p.Status)
	}
	for _, p := range fcm.Received() {
		kind, challenge := p.Event()
		note(pushKey{challenge, p.Token}, kind, p.At, p.Status)
	}
	commits, err := commitTimes(ctx, st)
	if err != nil {
		return res, err
	}
	var fromSend, fromReply, fromCommit []time.Duration
	last := burstStart
	for k, i := range expect {
		ats := arrived[k]
		if len(ats) == 0 {
			res.Missing++
			continue
		}
		res.Duplicates += len(ats) - 1
		at := ats[0]
		for _, t := range ats[1:] {
			if t.Before(at) {
				at = t
			}
		}
		fromSend = append(fromSend, at.Sub(recs[i].sent))
		fromReply = append(fromReply, at.Sub(recs[i].replied))
		if c, ok := commits[recs[i].id]; ok {
			fromCommit = append(fromCommit, at.Sub(c))
		}
		if at.After(last) {
			last = at
		}
	}
	res.Pushes = len(fromSend)
	if res.Pushes == 0 {
		return res, errors.New("no push arrived")
	}
	res.FromSendP50ms, res.FromSendP99ms = pct(fromSend, 50), pct(fromSend, 99)
	res.FromReplyP50ms, res.FromReplyP99ms = pct(fromReply, 50), pct(fromReply, 99)
	if len(fromCommit) != len(fromSend) {
		return res, fmt.Errorf("commit timestamps for %d of %d pushes", len(fromCommit), len(fromSend))
	}
	res.FromCommitP50ms, res.FromCommitP99ms = pct(fromCommit, 50), pct(fromCommit, 99)
	res.BurstSeconds = last.Sub(burstStart).Seconds()
	res.PushesPerSecond = float64(res.Pushes) / res.BurstSeconds
	creates := make([]time.Duration, len(recs))
	for i, r := range recs {
		creates[i] = r.replied.Sub(r.sent)
	}
	res.CreateP50ms, res.CreateP99ms = pct(creates, 50), pct(creates, 99)
	res.CreatesPerSecond = float64(o.challenges) / createsDone.Sub(burstStart).Seconds()
	delta := after.hist.minus(before.hist)
	res.ServerHistP50ms, res.ServerHistP99ms = delta.quantile(0.50)*1000, delta.quantile(0.99)*1000
	perPush := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(res.Pushes) }
	res.ServerCPUPerPush = perPush(cpu1.server - cpu0.server)
	res.PostgresCPUPerPush = perPush(cpu1.postgres - cpu0.postgres)
	res.BenchCPUPerPush = perPush(cpu1.bench - cpu0.bench)
	ours := (cpu1.server - cpu0.server) + (cpu1.postgres - cpu0.postgres) + (cpu1.bench - cpu0.bench)
	res.OtherCPUShare = max(0, (cpu1.machine-cpu0.machine-ours).Seconds()) / (cpu1.at.Sub(cpu0.at).Seconds() * float64(cores()))
	fmt.Fprintf(os.Stderr, "creates took %.2f s, last push %.2f s after the first create; CPU over %.2f s: server %.2f s, PostgreSQL %.2f s, mfabench %.2f s\n",
		createsDone.Sub(burstStart).Seconds(), res.BurstSeconds, cpu1.at.Sub(cpu0.at).Seconds(),
		(cpu1.server - cpu0.server).Seconds(), (cpu1.postgres - cpu0.postgres).Seconds(), (cpu1.bench - cpu0.bench).Seconds())
	fmt.Fprintf(os.Stderr, "server's database pool: %.0f acquires waited, %.1f s in all\n",
		after.emptyAcquires-before.emptyAcquires, after.acquireWait-before.acquireWait)
	lagProfile(os.Stderr, recs, expect, arrived, burstStart)
	if waits != nil {
		lagBySecond(os.Stderr, recs, expect, arrived, burstStart)
		waits.print(os.Stderr)
		fmt.Fprintln(os.Stderr, "PostgreSQL CPU over the burst by process (s):")
		for k, d := range byKind(cpu0.pg, cpu1.pg) {
			fmt.Fprintf(os.Stderr, "%8.2f  %s\n", d.Seconds(), k)
		}
	}

	if res.Missing > 0 || res.Refused > 0 || res.Unexpected > 0 {
		return res, fmt.Errorf("pushes: %d missing, %d refused, %d unexpected (of %d)", res.Missing, res.Refused, res.Unexpected, want)
	}
	if burst(o) {
		fmt.Fprintf(os.Stderr, "the floor: pgbench alone, %d s\n", floorSeconds)
		if res.FloorPushesPerSecond, res.FloorPostgresCPUPerPush, err = pushFloor(ctx, st, pgPID); err != nil {
			return res, err
		}
	}
	return res, nil
}

// burst reports a run that measures the ceiling (clients creating as fast
// as the server takes them), not latency at an offered load.
func burst(o options) bool { return o.concurrency > 1 && o.pushRate == 0 }

// lagProfile prints, for each tenth of the burst (by create order), the
// median push latency from the create sent: a backlog that builds up shows
// as a rising line.
func lagProfile(w io.Writer, recs []burstRec, expect map[pushKey]int, arrived map[pushKey][]time.Time, start time.Time) {
	const parts = 10
	byPart := make([][]time.Duration, parts)
	for k, i := range expect {
		if ats := arrived[k]; len(ats) > 0 {
			p := i * parts / len(recs)
			byPart[p] = append(byPart[p], ats[0].Sub(recs[i].sent))
		}
	}
	fmt.Fprint(w, "push latency from create sent, p50 by tenth of the burst (ms):")
	for _, ds := range byPart {
		if len(ds) > 0 {
			fmt.Fprintf(w, " %.1f", pct(ds, 50))
		}
	}
	fmt.Fprintln(w)
}

// lagBySecond prints, for each second of the burst (by create sent), how
// many creates were sent and their pushes' median latency from it, by
// provider.
func lagBySecond(w io.Writer, recs []burstRec, expect map[pushKey]int, arrived map[pushKey][]time.Time, start time.Time) {
	var bySec [2][][]time.Duration // APNs, FCM
	for k, i := range expect {
		sec := int(recs[i].sent.Sub(start) / time.Second)
		p := 0
		if strings.HasPrefix(k.token, "fcm-") {
			p = 1
		}
		for len(bySec[p]) <= sec {
			bySec[p] = append(bySec[p], nil)
		}
		if ats := arrived[k]; len(ats) > 0 {
			bySec[p][sec] = append(bySec[p][sec], ats[0].Sub(recs[i].sent))
		}
	}
	fmt.Fprintln(w, "by second of the burst: creates sent, then the median latency from create sent of their APNs and FCM pushes (ms):")
	for sec := range bySec[0] {
		if sec < len(bySec[1]) && len(bySec[0][sec]) > 0 && len(bySec[1][sec]) > 0 {
			fmt.Fprintf(w, " %d/%.0f/%.0f", len(bySec[0][sec]), pct(bySec[0][sec], 50), pct(bySec[1][sec], 50))
		}
	}
	fmt.Fprintln(w)
}

// arrivals gives n arrival times at an average rate a second, with
// exponential gaps (a Poisson process), or nil for no rate. The seed is
// fixed, so every run offers the same load.
func arrivals(n int, rate float64) []time.Duration {
	if rate <= 0 {
		return nil
	}
	r := mrand.New(mrand.NewPCG(1, 2))
	at := make([]time.Duration, n)
	var t float64
	for i := range at {
		t += r.ExpFloat64() / rate
		at[i] = time.Duration(t * float64(time.Second))
	}
	return at
}

// parallel runs f(0..n-1) on k goroutines and returns the first error.
func parallel(k, n int, f func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	var stop atomic.Bool
	for range min(k, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					stop.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// received counts the requests both fakes have received.
func received(apns *pushtest.APNs, fcm *pushtest.FCM) int {
	return len(apns.Received()) + len(fcm.Received())
}

// settle waits until the fakes have received nothing new for quiet (at most
// limit).
func settle(apns *pushtest.APNs, fcm *pushtest.FCM, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	n, since := received(apns, fcm), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < quiet {
		time.Sleep(100 * time.Millisecond)
		if m := received(apns, fcm); m != n {
			n, since = m, time.Now()
		}
	}
}

// waitPushes waits until the fakes have received want challenge pushes
// beyond what they had, plus a moment for duplicates, or until nothing new
// arrived for quiet. Reading the journals copies them, so it polls slowly:
// the arrival times are the fakes' own, not when they are read.
func waitPushes(apns *pushtest.APNs, fcm *pushtest.FCM, want int, quiet time.Duration) {
	count := func() int {
		n := 0
		for _, p := range apns.Received() {
			if strings.Contains(string(p.Payload), `"type":"challenge"`) {
				n++
			}
		}
		for _, p := range fcm.Received() {
			if strings.Contains(string(p.Message), `"type":"challenge"`) {
				n++
			}
		}
		return n
	}
	n, since := count(), time.Now()
	for n < want && time.Since(since) < quiet {
		time.Sleep(250 * time.Millisecond)
		if m := count(); m != n {
			n, since = m, time.Now()
		}
	}
	if n >= want {
		time.Sleep(500 * time.Millisecond) // a late duplicate would show
	}
}

// histogram is the server's commit-to-provider histogram, both providers
// summed: cumulative counts by upper bound.
type histogram struct {
	bounds []float64
	counts []float64
}

// metricsSample is what the bench reads from the server's /metrics.
type metricsSample struct {
	hist histogram
	// The pool's acquires that had to wait, and the time they waited.
	emptyAcquires, acquireWait float64
}

// scrapeMetrics reads pushmfa_push_commit_to_provider_seconds (both
// providers summed) and the pool's waits from /metrics.
func scrapeMetrics(ctx context.Context, st *stack) (metricsSample, error) {
	var m metricsSample
	req, _ := http.NewRequestWithContext(ctx, "GET", st.base+"/metrics", nil)
	resp, err := st.httpc.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sums := map[float64]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	value := func(s string) float64 {
		f := strings.Fields(s)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		return v
	}
	const prefix = "pushmfa_push_commit_to_provider_seconds_bucket{"
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "pushmfa_db_pool_empty_acquires_total "):
			m.emptyAcquires = value(line)
		case strings.HasPrefix(line, "pushmfa_db_pool_acquire_wait_seconds_total "):
			m.acquireWait = value(line)
		case strings.HasPrefix(line, prefix):
			labels, _, ok := strings.Cut(line[len(prefix):], "} ")
			_, le, ok2 := strings.Cut(labels, `le="`)
			if !ok || !ok2 {
				continue
			}
			bound, err := strconv.ParseFloat(strings.TrimSuffix(le, `"`), 64) // +Inf parses too
			if err == nil {
				sums[bound] += value(line)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	for b := range sums {
		m.hist.bounds = append(m.hist.bounds, b)
	}
	sort.Float64s(m.hist.bounds)
	for _, b := range m.hist.bounds {
		m.hist.counts = append(m.hist.counts, sums[b])
	}
	return m, nil
}

// minus is what was observed between two scrapes.
func (h histogram) minus(earlier histogram) histogram {
	prev := map[float64]float64{}
	for i, b := range earlier.bounds {
		prev[b] = earlier.counts[i]
	}
	out := histogram{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i, b := range h.bounds {
		out.counts[i] = h.counts[i] - prev[b]
	}
	return out
}

// quantile estimates the q quantile as Prometheus's histogram_quantile
// does: linearly within the bucket it falls in.
func (h histogram) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return 0 // nothing observed
	}
	rank := q * h.counts[len(h.counts)-1]
	lower, below := 0.0, 0.0
	for i, b := range h.bounds {
		if h.counts[i] >= rank {
			if math.IsInf(b, 1) {
				return lower
			}
			in := h.counts[i] - below
			if in == 0 {
				return b
			}
			return lower + (b-lower)*(rank-below)/in
		}
		lower, below = b, h.counts[i]
	}
	return lower
}

// cpu is a sample of the CPU time used so far by the server, the
// PostgreSQL cluster (the postmaster, its live children, and those it has
// reaped) and this process.
type cpu struct {
	at                      time.Time
	server, postgres, bench time.Duration
	pg                      map[int]proc
	machine                 time.Duration // every process's, from /proc/stat
}

func cpuSample(server, postmaster int) (cpu, error) {
	s := cpu{at: time.Now()}
	var err error
	if s.server, err = cpuTime(server); err != nil {
		return s, err
	}
	if s.bench, err = cpuTime(os.Getpid()); err != nil {
		return s, err
	}
	if s.postgres, s.pg, err = treeCPU(postmaster); err != nil {
		return s, err
	}
	s.machine, err = machineCPU()
	return s, err
}

// waitQuiet waits, at most limit, until the machine's CPU has been busy
// (our idle server included) less than share of the time for window.
func waitQuiet(share float64, window, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		c0, err := machineCPU()
		time.Sleep(window)
		c1, err1 := machineCPU()
		if err != nil || err1 != nil {
			return
		}
		busy := (c1 - c0).Seconds() / (window.Seconds() * float64(cores()))
		if busy < share {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "the machine is still %.0f%% busy with other work; measuring anyway\n", busy*100)
			return
		}
	}
}

// machineCPU is the CPU time all processes have used, from /proc/stat:
// user, nice, system, irq, softirq and steal.
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: no cpu line")
	}
	var n int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		n += v
	}
	return time.Duration(n) * time.Second / 100, nil
}

// treeCPU is a process's CPU time, its reaped children's, and that of its
// live children, which it also returns by pid with their titles.
func treeCPU(pid int) (time.Duration, map[int]proc, error) {
	stat := func(pid int) ([]string, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, err
		}
		// Fields after the command: state is [0], ppid [1], utime [11].
		i := strings.LastIndexByte(string(b), ')')
		return strings.Fields(string(b[i+2:])), nil
	}
	ticks := func(f []string, from, to int) time.Duration {
		var n int64
		for i := from; i <= to; i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			n += v
		}
		return time.Duration(n) * time.Second / 100 // USER_HZ
	}
	f, err := stat(pid)
	if err != nil {
		return 0, nil, err
	}
	total := ticks(f, 11, 14) // utime, stime, cutime, cstime
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	parent := strconv.Itoa(pid)
	children := map[int]proc{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if f, err := stat(child); err == nil && f[1] == parent {
			t := ticks(f, 11, 12)
			total += t
			title, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child))
			children[child] = proc{title: processKind(string(title)), cpu: t}
		}
	}
	return total, children, nil
}

// proc is one PostgreSQL process: what kind, and its CPU time so far.
type proc struct {
	title string
	cpu   time.Duration
}

// processKind names a PostgreSQL process from its title: the background
// process, or "backend (application)" for a session.
func processKind(title string) string {
	title = strings.TrimRight(strings.ReplaceAll(title, "\x00", " "), " ")
	rest, ok := strings.CutPrefix(title, "postgres: ")
	if !ok {
		return title
	}
	f := strings.Fields(rest)
	// A session: "user database host(port) state".
	if len(f) >= 3 && strings.Contains(f[2], "(") {
		return "backend of database " + f[1]
	}
	return rest
}

// byKind sums the CPU time each kind of process used between two samples.
func byKind(before, after map[int]proc) map[string]time.Duration {
	out := map[string]time.Duration{}
	for pid, p := range after {
		out[p.title] += p.cpu - before[pid].cpu
	}
	return out
}

// postmasterPID reads the cluster's postmaster.pid.
func postmasterPID(st *stack) (int, error) {
	b, err := os.ReadFile(filepath.Join(st.cluster.Dir(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func pushMedians(rs []PushResult) PushResult {
	pick := func(f func(PushResult) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = f(r)
		}
		sort.Float64s(vs)
		return vs[len(vs)/2]
	}
	pickInt := func(f func(PushResult) int) int {
		return int(pick(func(r PushResult) float64 { return float64(f(r)) }))
	}
	return PushResult{
		FromSendP50ms:           pick(func(r PushResult) float64 { return r.FromSendP50ms }),
		FromSendP99ms:           pick(func(r PushResult) float64 { return r.FromSendP99ms }),
		FromReplyP50ms:          pick(func(r PushResult) float64 { return r.FromReplyP50ms }),
		FromReplyP99ms:          pick(func(r PushResult) float64 { return r.FromReplyP99ms }),
		FromCommitP50ms:         pick(func(r PushResult) float64 { return r.FromCommitP50ms }),
		FromCommitP99ms:         pick(func(r PushResult) float64 { return r.FromCommitP99ms }),
		ServerHistP50ms:         pick(func(r PushResult) float64 { return r.ServerHistP50ms }),
		ServerHistP99ms:         pick(func(r PushResult) float64 { return r.ServerHistP99ms }),
		PushesPerSecond:         pick(func(r PushResult) float64 { return r.PushesPerSecond }),
		BurstSeconds:            pick(func(r PushResult) float64 { return r.BurstSeconds }),
		CreatesPerSecond:        pick(func(r PushResult) float64 { return r.CreatesPerSecond }),
		CreateP50ms:             pick(func(r PushResult) float64 { return r.CreateP50ms }),
		CreateP99ms:             pick(func(r PushResult) float64 { return r.CreateP99ms }),
		Pushes:                  pickInt(func(r PushResult) int { return r.Pushes }),
		Missing:                 pickInt(func(r PushResult) int { return r.Missing }),
		Duplicates:              pickInt(func(r PushResult) int { return r.Duplicates }),
		Refused:                 pickInt(func(r PushResult) int { return r.Refused }),
		Unexpected:              pickInt(func(r PushResult) int { return r.Unexpected }),
		ServerCPUPerPush:        pick(func(r PushResult) float64 { return r.ServerCPUPerPush }),
		PostgresCPUPerPush:      pick(func(r PushResult) float64 { return r.PostgresCPUPerPush }),
		BenchCPUPerPush:         pick(func(r PushResult) float64 { return r.BenchCPUPerPush }),
		OtherCPUShare:           pick(func(r PushResult) float64 { return r.OtherCPUShare }),
		PGTxPerChallenge:        pick(func(r PushResult) float64 { return r.PGTxPerChallenge }),
		FloorPushesPerSecond:    pick(func(r PushResult) float64 { return r.FloorPushesPerSecond }),
		FloorPostgresCPUPerPush: pick(func(r PushResult) float64 { return r.FloorPostgresCPUPerPush }),
	}
}

func reportPush(w io.Writer, o options, rs []PushResult, m PushResult) {
	load := fmt.Sprintf("a burst of %d challenges", o.challenges)
	if o.pushRate > 0 {
		load = fmt.Sprintf("%d challenges offered at %.0f/s with random gaps", o.challenges, o.pushRate)
	}
	fmt.Fprintf(w, "push-delivery benchmark: %d run(s), %d cores, %s x 2 devices (%d users, one APNs and one FCM device each), %d concurrent clients, fake providers answering at once\n\n",
		len(rs), cores(), load, o.pushUsers, o.concurrency)
	// verdict compares a bound pair with a maximum: met when the upper
	// bound is within it, missed when even the lower bound is above it.
	verdict := func(upper, lower, max float64) string {
		switch {
		case upper <= max:
			return "met"
		case lower > max:
			return "MISSED"
		}
		return "undecided"
	}
	row := func(name, target string, v func(PushResult) float64, unit, format string) {
		fmt.Fprintf(w, "%-52s "+format+" %-4s", name, v(m), unit)
		fmt.Fprintf(w, "  %-22s", target)
		if len(rs) > 1 {
			fmt.Fprint(w, "  runs:")
			for _, r := range rs {
				fmt.Fprintf(w, " "+strings.TrimSpace(format), v(r))
			}
		}
		fmt.Fprintln(w)
	}
	const ms, n = "%10.3f", "%10.0f"
	// The commit timestamp precedes the commit's flush and reply: latency
	// from it bounds commit-to-provider from above, and tighter than the
	// create sent (which adds the wait for a connection and the statements).
	p50 := verdict(m.FromCommitP50ms, m.FromReplyP50ms, targetPushP50ms)
	p99 := verdict(m.FromCommitP99ms, m.FromReplyP99ms, targetPushP99ms)
	rate := "met"
	switch {
	case !burst(o):
		// One client creating challenges one after another, or a rate
		// offered, measures latency at a load the machine sustains, not
		// the ceiling.
		rate = "n/a (load offered)"
	case m.PushesPerSecond < targetPushRate:
		rate = "MISSED"
	}
	row("commit-to-provider p50, from the commit timestamp (upper)", fmt.Sprintf("<= %d ms: %s", targetPushP50ms, p50), func(r PushResult) float64 { return r.FromCommitP50ms }, "ms", ms)
	row("commit-to-provider p50, from 201 received (lower)", "", func(r PushResult) float64 { return r.FromReplyP50ms }, "ms", ms)
	row("commit-to-provider p99, from the commit timestamp (upper)", fmt.Sprintf("<= %d ms: %s", targetPushP99ms, p99), func(r PushResult) float64 { return r.FromCommitP99ms }, "ms", ms)
	row("commit-to-provider p99, from 201 received (lower)", "", func(r PushResult) float64 { return r.FromReplyP99ms }, "ms", ms)
	row("    push p50 from create sent (the client's view)", "", func(r PushResult) float64 { return r.FromSendP50ms }, "ms", ms)
	row("    push p99 from create sent (the client's view)", "", func(r PushResult) float64 { return r.FromSendP99ms }, "ms", ms)
	row("server histogram p50 (commit acknowledged to provider)", "", func(r PushResult) float64 { return r.ServerHistP50ms }, "ms", ms)
	row("server histogram p99 (commit acknowledged to provider)", "", func(r PushResult) float64 { return r.ServerHistP99ms }, "ms", ms)
	row("pushes per second (first create to last push)", fmt.Sprintf(">= %d /s: %s", targetPushRate, rate), func(r PushResult) float64 { return r.PushesPerSecond }, "/s", n)
	row("    burst: first create sent to last push received", "", func(r PushResult) float64 { return r.BurstSeconds }, "s", ms)
	row("    creates per second (the creates alone)", "", func(r PushResult) float64 { return r.CreatesPerSecond }, "/s", n)
	row("    create latency p50 during the burst", "", func(r PushResult) float64 { return r.CreateP50ms }, "ms", ms)
	row("    create latency p99 during the burst", "", func(r PushResult) float64 { return r.CreateP99ms }, "ms", ms)
	row("    server CPU per push", "", func(r PushResult) float64 { return r.ServerCPUPerPush }, "ms", ms)
	row("    PostgreSQL CPU per push", "", func(r PushResult) float64 { return r.PostgresCPUPerPush }, "ms", ms)
	row("    mfabench CPU per push (clients and fakes)", "", func(r PushResult) float64 { return r.BenchCPUPerPush }, "ms", ms)
	row("    other processes' share of the machine's CPU", "(should be near 0)", func(r PushResult) float64 { return r.OtherCPUShare }, "", ms)
	row("    PostgreSQL transactions per challenge", "", func(r PushResult) float64 { return r.PGTxPerChallenge }, "", ms)
	if burst(o) {
		row("floor: pgbench alone, the issue's writes only", "(pushes/s: a ceiling)", func(r PushResult) float64 { return r.FloorPushesPerSecond }, "/s", n)
		row("    PostgreSQL CPU per push at the floor", "", func(r PushResult) float64 { return r.FloorPostgresCPUPerPush }, "ms", ms)
	}
	row("pushes received, distinct", fmt.Sprintf("= %d", 2*o.challenges), func(r PushResult) float64 { return float64(r.Pushes) }, "", n)
	row("    missing", "= 0", func(r PushResult) float64 { return float64(r.Missing) }, "", n)
	row("    duplicates", "= 0", func(r PushResult) float64 { return float64(r.Duplicates) }, "", n)
	row("    refused by a fake, or unexpected", "= 0", func(r PushResult) float64 { return float64(r.Refused + r.Unexpected) }, "", n)
	fmt.Fprintln(w, "\nThe commit falls between PostgreSQL's commit timestamp (taken as the commit record is written, before its flush)")
	fmt.Fprintln(w, "and the 201: the true commit-to-provider time lies between the two rows; a target is met when the upper bound")
	fmt.Fprintln(w, "meets it, missed when even the lower bound does not. From create sent adds the create's wait for a connection")
	fmt.Fprintln(w, "and its statements. The server's histogram is its own view: from the moment it saw PostgreSQL acknowledge")
	fmt.Fprintln(w, "the commit to the provider's answer reaching it (so it includes the answer's way back, which the fakes'")
	fmt.Fprintln(w, "arrival times do not), interpolated within its buckets (1, 2.5, 5, 10, 25, 50, 100 ms, ...).")
	if burst(o) {
		fmt.Fprintln(w, "The floor is pgbench on the same cluster doing, per challenge, only its row, a delivery row and a River job")
		fmt.Fprintln(w, "per device, then the outcomes and the jobs' completion (cmd/mfabench/floor.go), with the machine to itself:")
		fmt.Fprintln(w, "no server, no clients, no fakes. Its rate bounds any server built that way on this machine from above.")
	}
}

// waitSampler samples what the server's database sessions are doing
// (pg_stat_activity) every 20 ms while the creates run.
type waitSampler struct {
	done    chan struct{}
	stopped chan struct{}
	samples int
	counts  map[string]int
}

func sampleWaits(ctx context.Context, st *stack) (*waitSampler, error) {
	conn, err := pgx.Connect(ctx, st.cluster.URL("postgres"))
	if err != nil {
		return nil, err
	}
	w := &waitSampler{done: make(chan struct{}), stopped: make(chan struct{}), counts: map[string]int{}}
	go func() {
		defer close(w.stopped)
		defer conn.Close(context.Background())
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-t.C:
			}
			// The server's sessions by state and wait, and what autovacuum
			// and the checkpointer are doing.
			rows, err := conn.Query(ctx, `SELECT CASE WHEN backend_type = 'autovacuum worker' THEN left(query, 60)
					WHEN backend_type = 'checkpointer' THEN 'checkpointer ' || coalesce(wait_event, 'on CPU')
					ELSE state || ' ' || coalesce(wait_event_type || ':' || wait_event, 'on CPU') END
				FROM pg_stat_activity
				WHERE datname = 'pushmfa' AND application_name = 'pushmfa' AND state <> 'idle'
					OR backend_type = 'autovacuum worker'
					OR backend_type = 'checkpointer' AND wait_event IS DISTINCT FROM 'CheckpointerMain'`)
			if err != nil {
				return
			}
			for rows.Next() {
				var s string
				if rows.Scan(&s) == nil {
					w.counts[s]++
				}
			}
			rows.Close()
			w.samples++
		}
	}()
	return w, nil
}

func (w *waitSampler) stop() {
	close(w.done)
	<-w.stopped
}

// print shows the average number of the server's sessions in each state.
func (w *waitSampler) print(out io.Writer) {
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range w.counts {
		all = append(all, kv{k, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	fmt.Fprintf(out, "server's sessions (and autovacuum, checkpointer) while the creates ran (%d samples), average number by state:\n", w.samples)
	for _, x := range all {
		fmt.Fprintf(out, "%8.2f  %s\n", float64(x.n)/float64(max(w.samples, 1)), x.k)
	}
}

// commitTimes returns when each pending challenge's creating transaction
// committed, by PostgreSQL's own clock (the bench's cluster tracks commit
// timestamps). A pending challenge was never updated, so its row's xmin is
// the creating transaction's.
func commitTimes(ctx context.Context, st *stack) (map[string]time.Time, error) {
	conn, err := pgx.Connect(ctx, st.cluster.URL("pushmfa"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id::text, pg_xact_commit_timestamp(xmin) FROM challenges WHERE state = 'pending'`)
	if err != nil {
		return nil, fmt.Errorf("commit timestamps: %w", err)
	}
	out := map[string]time.Time{}
	var id string
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error { out[id] = at; return nil })
	return out, err
}

// historyPerUser is how many past sign-ins history gives each user.
const historyPerUser = 10

// history gives the database the past a running service has: for each
// user, historyPerUser sign-ins of a day ago (expired, outside every guard
// window) with their pushes, then fresh statistics. On tables that are
// empty, or grew since the planner last looked, PostgreSQL's cached plans
// (its own foreign-key checks' among them) scan whole tables for single
// rows: a burst on a new database measures that, not the service. With
// ANALYZE on the empty tables alone, the burst fell to 350 pushes/s. With
// this history, the settling of pushes as one joined statement a batch
// took seconds (the planner trusted statistics in which nearly every
// delivery is settled): the bench now sees what a service with a past
// would.
func history(ctx context.Context, st *stack) error {
	conn, err := pgx.Connect(ctx, st.cluster.URL("pushmfa"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`INSERT INTO challenges (id, tenant_id, application_id, user_id, state, resolution, resolved_at, created_at,
			expires_at, context, context_digest, nonce)
		SELECT gen_random_uuid(), u.tenant_id, a.id, u.id, 'expired', 'expired', now() - interval '1 day' + interval '60 s',
			now() - interval '1 day', now() - interval '1 day' + interval '60 s', '{"app":"history"}', sha256('context'), sha256('nonce')
		FROM users u JOIN LATERAL (SELECT id FROM applications a WHERE a.tenant_id = u.tenant_id AND a.deleted_at IS NULL LIMIT 1) a ON true,
			generate_series(1, ` + strconv.Itoa(historyPerUser) + `)
		WHERE EXISTS (SELECT 1 FROM devices d WHERE d.user_id = u.id)`,
		`INSERT INTO deliveries (id, tenant_id, device_id, challenge_id, kind, provider, outcome, attempts, sent_at, created_at, updated_at)
		SELECT gen_random_uuid(), c.tenant_id, d.id, c.id, 'challenge', d.push_provider, 'sent', 1, c.created_at, c.created_at, c.created_at
		FROM challenges c JOIN devices d ON d.user_id = c.user_id AND d.state = 'active' AND d.push_provider <> 'none'
		WHERE c.state = 'expired'`,
		`ANALYZE`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("history: %w", err)
		}
	}
	return nil
}
