package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/client"
	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/pushtest"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// The crash test's shape. Two tenants (long and short challenge lifetimes),
// each with crashUsers users of crashDevices devices, and crashChallenges
// challenges spread over all of them: 600 pushes, fanned out by 100 workers
// to providers that take crashDelay per answer, so the fan-out lasts well
// over a second and is cut in the middle by the kill.
const (
	crashUsers      = 5
	crashDevices    = 3
	crashChallenges = 200
	crashLongTTL    = 300 // seconds: outlives the whole test
	crashShortTTL   = 10  // seconds: the policy's minimum; expires while the server is down
	crashDelay      = 250 * time.Millisecond
	// crashKillAfter is how many challenge pushes the fakes must have seen
	// before the kill: some, far from all.
	crashKillAfter = 60
	// crashSettleBy bounds how long after the kill every delivery must
	// have settled. Pushes the dead process was sending in process, or
	// had sent without recording, have jobs that fall due when the
	// dispatcher's grace ends (10 s: internal/jobs' DispatchGrace); jobs
	// the dead process's River held stay "running", and the two-second
	// sweep queues a stand-in for each once it is older than any live
	// worker's job may run (17 s: pushStuckAfter), rather than River's own
	// rescuer, which waits a minute and runs on a fixed 30 s round. The
	// rest is room for a loaded machine.
	crashSettleBy = 30 * time.Second

	crashKeyID   = "CRASHKEY01"
	crashTeamID  = "CRASHTEAM1"
	crashTopic   = "com.example.pushmfa.crash"
	crashProject = "pushmfa-crash-test"
)

// TestCrashLosesNoPush runs the server binary with APNs and FCM pointed at
// slow fakes, creates 200 challenges in two tenants (one whose challenges
// outlive the test, one whose challenges expire while the server is down),
// SIGKILLs the server in the middle of the fan-out, keeps it down until the
// short challenges expired, and restarts it on the same database. Within
// crashSettleBy of the kill every device of every long-lived challenge has
// had its push (those the dead process was sending included), a push was
// repeated only where
// the dead process had not recorded it as sent, no expired challenge was
// pushed after the restart, and the deliveries table says so too (DESIGN.md:
// "a server killed at any instant loses no committed challenge and no queued
// push").
func TestCrashLosesNoPush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Now()

	apns, fcm, providerEnv := crashFakes(t)
	db := pgtest.New(t)
	env := map[string]string{
		"DATABASE_URL":          db.URL,
		"MASTER_KEY":            key(),
		"LISTEN_ADDR":           "127.0.0.1:0",
		"BOOTSTRAP_ADMIN_TOKEN": "bootstrap-" + key(),
		"SSL_CERT_FILE":         os.Getenv("SSL_CERT_FILE"),
	}
	for k, v := range providerEnv {
		env[k] = v
	}
	if env["SSL_CERT_FILE"] == "" {
		t.Fatal("SSL_CERT_FILE is not set: TestMain must install the fakes' CA (pushtest.InstallCA)")
	}

	first := startCrashServer(t, "first", env)
	base := "http://" + first.addr
	tenants := []*crashTenant{{slug: "crash-long", ttl: crashLongTTL}, {slug: "crash-short", ttl: crashShortTTL}}
	devices := crashSetUp(ctx, t, base, env["BOOTSTRAP_ADMIN_TOKEN"], tenants)
	// Enrolling a second and third device tells the others (background
	// notifications): let those settle, so the fan-out below is challenges
	// alone.
	unsettled := func() int {
		return crashCount(ctx, t, db, `SELECT count(*) FROM deliveries WHERE outcome IN ('pending', 'retrying')`)
	}
	crashAwait(t, 15*time.Second, 50*time.Millisecond, "the enrollment notifications to be delivered",
		func() bool { return unsettled() == 0 },
		func() string { return fmt.Sprintf("%d deliveries unsettled", unsettled()) })
	baseline := len(apns.Received()) + len(fcm.Received())
	t.Logf("set up %d users with %d devices each in %v", len(tenants)*crashUsers, crashDevices, time.Since(start).Round(time.Millisecond))

	// The burst: every challenge as fast as the server takes them.
	burst := time.Now()
	challenges := crashBurst(ctx, t, base, tenants)
	t.Logf("created %d challenges in %v", len(challenges), time.Since(burst).Round(time.Millisecond))
	received := func() int { return len(apns.Received()) + len(fcm.Received()) - baseline }
	crashAwait(t, 20*time.Second, time.Millisecond, fmt.Sprintf("the fakes to receive %d challenge pushes", crashKillAfter),
		func() bool { return received() >= crashKillAfter },
		func() string { return fmt.Sprintf("%d received", received()) })

	killedAt := first.kill(t)
	// What the providers had been sent and had answered at the kill.
	apnsAtKill, fcmAtKill := apns.Received(), fcm.Received()
	atKill := crashPushes(apnsAtKill, fcmAtKill)
	outcomesAtKill := crashOutcomes(ctx, t, db)
	jobsAtKill := crashJobStates(ctx, t, db)
	inFlight := 0
	for _, p := range atKill {
		if p.kind == "challenge" && !p.answeredBefore(killedAt) {
			inFlight++
		}
	}
	unsent := map[bool]int{} // by whether the challenge is short-lived
	for _, c := range challenges {
		for _, d := range devices[c.tenant.slug][c.user] {
			if outcomesAtKill[crashKey{c.id, d.id}] != "sent" {
				unsent[c.tenant.short()]++
			}
		}
	}
	t.Logf("killed after %v of fan-out: providers received %d challenge pushes, %d in flight (unanswered); "+
		"unsent: %d long-lived, %d short-lived; jobs by state: %v",
		killedAt.Sub(burst).Round(time.Millisecond), len(atKill)-baseline, inFlight, unsent[false], unsent[true],
		crashTally(jobsAtKill))
	if unsent[false] == 0 || unsent[true] == 0 {
		t.Fatalf("the fan-out of a tenant was over before the kill: the crash tested nothing (make the fakes slower)")
	}

	// Down until every short challenge expired: a prompt restart, as a
	// supervisor would do.
	restartAt := killedAt
	for _, c := range challenges {
		if c.tenant.short() && c.expires.Add(time.Second).After(restartAt) {
			restartAt = c.expires.Add(time.Second)
		}
	}
	time.Sleep(time.Until(restartAt))
	apnsBefore, fcmBefore := len(apns.Received()), len(fcm.Received())
	second := startCrashServer(t, "second", env)
	restartedAt := second.started

	crashAwait(t, time.Until(killedAt.Add(crashSettleBy)), 50*time.Millisecond,
		fmt.Sprintf("every delivery to settle within %v of the kill", crashSettleBy),
		func() bool { return unsettled() == 0 },
		func() string {
			return fmt.Sprintf("%d deliveries unsettled; jobs of challenge pushes by state: %v", unsettled(),
				crashTally(crashJobStates(ctx, t, db)))
		})
	settledAt := time.Now()
	second.kill(t)

	apnsFinal, fcmFinal := apns.Received(), fcm.Received()
	run := crashRun{
		devices: devices, challenges: challenges, before: atKill,
		late:           crashPushes(apnsFinal[len(apnsAtKill):apnsBefore], fcmFinal[len(fcmAtKill):fcmBefore]),
		after:          crashPushes(apnsFinal[apnsBefore:], fcmFinal[fcmBefore:]),
		outcomesAtKill: outcomesAtKill, outcomes: crashOutcomes(ctx, t, db),
		killedAt: killedAt, restartedAt: restartedAt,
	}
	crashReportRecovery(t, run, jobsAtKill, settledAt)
	crashCheck(t, run)
	crashCheckChallenges(ctx, t, db, challenges)
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}

// crashFakes starts slow APNs and FCM fakes trusted through the CA that
// TestMain installed, and returns the server's variables for them.
func crashFakes(t *testing.T) (*pushtest.APNs, *pushtest.FCM, map[string]string) {
	t.Helper()
	p8, p8Key, err := pushtest.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	apns, err := pushtest.NewAPNs(pushtest.APNsConfig{CA: ca, KeyID: crashKeyID, TeamID: crashTeamID, Key: &p8Key.PublicKey,
		Topic: crashTopic, Delay: crashDelay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apns.Close)
	fcm, err := pushtest.NewFCM(pushtest.FCMConfig{CA: ca, ProjectID: crashProject, Delay: crashDelay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fcm.Close)
	dir := t.TempDir()
	keyFile, credsFile, err := pushtest.WriteCredentials(dir, p8, fcm)
	if err != nil {
		t.Fatal(err)
	}
	return apns, fcm, map[string]string{
		"APNS_ENDPOINT":        apns.URL(),
		"APNS_KEY_FILE":        keyFile,
		"APNS_KEY_ID":          crashKeyID,
		"APNS_TEAM_ID":         crashTeamID,
		"APNS_TOPIC":           crashTopic,
		"FCM_ENDPOINT":         fcm.Endpoint(),
		"FCM_CREDENTIALS_FILE": credsFile,
		"FCM_PROJECT_ID":       crashProject,
	}
}

// crashServer is one run of the server binary.
type crashServer struct {
	name    string
	cmd     *exec.Cmd
	addr    string
	started time.Time
	logs    *crashLog
	exited  chan struct{}
}

// startCrashServer runs the binary with exactly env (plus PATH) and returns
// once it serves. The process is killed when the test ends, and its log is
// shown if the test failed.
func startCrashServer(t *testing.T, name string, env map[string]string) *crashServer {
	t.Helper()
	s := &crashServer{name: name, cmd: exec.Command(binary), logs: &crashLog{serving: make(chan string, 1)},
		exited: make(chan struct{})}
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.started = time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.kill(t)
		if t.Failed() {
			t.Logf("log of the %s server (last lines):\n%s", s.name, s.logs.tail(40))
		}
	})
	select {
	case s.addr = <-s.logs.serving:
	case <-s.exited:
		t.Fatalf("the %s server exited before serving: %s", name, s.logs.tail(40))
	case <-time.After(30 * time.Second):
		t.Fatalf("the %s server did not serve within 30 s: %s", name, s.logs.tail(40))
	}
	return s
}

// kill SIGKILLs the process (no shutdown of any kind) and returns once it
// is gone, with the time of the kill.
func (s *crashServer) kill(t *testing.T) time.Time {
	t.Helper()
	at := time.Now()
	select {
	case <-s.exited:
		return at
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("the %s server still runs 10 s after SIGKILL", s.name)
	}
	return at
}

// crashLog keeps a server's output and reports the address it serves on.
type crashLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	serving chan string
}

func (l *crashLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		var line struct{ Msg, Addr string }
		if json.Unmarshal(l.partial[:i], &line) == nil && line.Msg == "serving" {
			select {
			case l.serving <- line.Addr:
			default:
			}
		}
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *crashLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(l.buf.String()), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// crashTenant is a tenant of the test and its application's secret.
type crashTenant struct {
	slug   string
	ttl    int
	secret string
}

func (c *crashTenant) short() bool { return c.ttl == crashShortTTL }

// crashDevice is an enrolled device and the push token it gave.
type crashDevice struct {
	id, provider, token string
}

// crashSetUp makes each tenant (policy: its challenge lifetime, and a
// push-bombing guard the burst cannot trip), an application, and users
// with three devices each, APNs and FCM mixed. It returns the devices by
// tenant and user index.
func crashSetUp(ctx context.Context, t *testing.T, base, bootstrap string, tenants []*crashTenant) map[string][][]crashDevice {
	t.Helper()
	admin := client.New(base, bootstrap)
	for _, tn := range tenants {
		if err := admin.Do(ctx, "POST", "/v1/admin/tenants", map[string]any{"slug": tn.slug}, nil); err != nil {
			t.Fatalf("create tenant %s: %v", tn.slug, err)
		}
		if err := admin.Do(ctx, "PATCH", "/v1/admin/tenants/"+tn.slug+"/policy", map[string]any{
			"challenge_ttl_seconds": tn.ttl, "max_pending_challenges": 1000, "challenges_per_window": 1000000,
		}, nil); err != nil {
			t.Fatalf("policy of %s: %v", tn.slug, err)
		}
		var app struct{ Secret string }
		if err := admin.Do(ctx, "POST", "/v1/admin/applications", map[string]any{"name": "VPN", "tenant": tn.slug}, &app); err != nil {
			t.Fatalf("application of %s: %v", tn.slug, err)
		}
		tn.secret = app.Secret
	}

	out := map[string][][]crashDevice{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, len(tenants)*crashUsers)
	for _, tn := range tenants {
		out[tn.slug] = make([][]crashDevice, crashUsers)
		for u := range crashUsers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ds, err := crashEnrollUser(ctx, base, tn.secret, u)
				if err != nil {
					errc <- fmt.Errorf("%s user %d: %w", tn.slug, u, err)
					return
				}
				mu.Lock()
				out[tn.slug][u] = ds
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	return out
}

func crashUser(u int) string { return fmt.Sprintf("user-%d", u) }

// crashEnrollUser enrolls user u's devices one after the other: an APNs
// phone, an FCM phone, and a third on APNs or FCM by turns.
func crashEnrollUser(ctx context.Context, base, secret string, u int) ([]crashDevice, error) {
	rp := client.New(base, secret)
	var ds []crashDevice
	for i := range crashDevices {
		provider := "apns"
		if i == 1 || i == 2 && u%2 == 1 {
			provider = "fcm"
		}
		var en struct{ URI string }
		if err := rp.Do(ctx, "POST", "/v1/enrollments", map[string]any{"user": crashUser(u)}, &en); err != nil {
			return nil, fmt.Errorf("enrollment: %w", err)
		}
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		tok, platform := hex.EncodeToString(b), "ios" // APNs tokens are hex
		if provider == "fcm" {
			tok, platform = "fcm-"+tok, "android"
		}
		d, err := authenticator.Enroll(ctx, en.URI, authenticator.EnrollOptions{Name: fmt.Sprintf("device %d", i),
			Platform: platform, PushProvider: provider, PushToken: tok})
		if err != nil {
			return nil, fmt.Errorf("enroll device %d: %w", i, err)
		}
		ds = append(ds, crashDevice{id: d.DeviceID, provider: provider, token: tok})
	}
	return ds, nil
}

// crashChallenge is a challenge the burst created.
type crashChallenge struct {
	id      string
	tenant  *crashTenant
	user    int
	expires time.Time
}

// crashBurst creates crashChallenges challenges, alternating tenants and
// going round the users, from 25 concurrent relying-party requests.
func crashBurst(ctx context.Context, t *testing.T, base string, tenants []*crashTenant) []crashChallenge {
	t.Helper()
	out := make([]crashChallenge, crashChallenges)
	next := make(chan int)
	errc := make(chan error, crashChallenges)
	var wg sync.WaitGroup
	for range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				tn, u := tenants[i%len(tenants)], (i/len(tenants))%crashUsers
				var c wire.Challenge
				err := client.New(base, tn.secret).Do(ctx, "POST", "/v1/challenges",
					map[string]any{"user": crashUser(u), "message": "Sign in to VPN"}, &c)
				if err != nil {
					errc <- fmt.Errorf("challenge %d (%s, %s): %w", i, tn.slug, crashUser(u), err)
					continue
				}
				if ttl := c.ExpiresAt.Sub(c.CreatedAt); ttl != time.Duration(tn.ttl)*time.Second {
					errc <- fmt.Errorf("challenge %d (%s) lives %v, not the policy's %d s", i, tn.slug, ttl, tn.ttl)
				}
				out[i] = crashChallenge{id: c.ID, tenant: tn, user: u, expires: c.ExpiresAt}
			}
		}()
	}
	for i := range crashChallenges {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// crashPush is one request a fake received.
type crashPush struct {
	provider, token string
	kind, challenge string // the payload's type and challenge_id
	status          int
	at              time.Time
	answered        bool
	raw             string // the payload or message as received
}

// answeredBefore reports whether the provider answered the push before t.
// The fake's Answered alone does not say: a fake whose delay ends just
// after the kill may still write its answer into the dead client's
// connection before it notices the connection is gone.
func (p crashPush) answeredBefore(t time.Time) bool {
	return p.answered && p.at.Add(crashDelay).Before(t)
}

// crashPushes reads what the fakes received.
func crashPushes(apns []pushtest.APNsPush, fcm []pushtest.FCMPush) []crashPush {
	var out []crashPush
	for _, p := range apns {
		kind, challenge := p.Event()
		out = append(out, crashPush{provider: "apns", token: p.Token, kind: kind, challenge: challenge,
			status: p.Status, at: p.At, answered: p.Answered, raw: string(p.Payload)})
	}
	for _, p := range fcm {
		kind, challenge := p.Event()
		out = append(out, crashPush{provider: "fcm", token: p.Token, kind: kind, challenge: challenge,
			status: p.Status, at: p.At, answered: p.Answered, raw: string(p.Message)})
	}
	return out
}

// crashCheckChallenges checks that every challenge survived the crash:
// the long-lived still pending, the short-lived over.
func crashCheckChallenges(ctx context.Context, t *testing.T, db *pgtest.DB, challenges []crashChallenge) {
	t.Helper()
	rows, err := db.Pool.Query(ctx, `SELECT id::text, state, state = 'pending' AND expires_at > now() FROM challenges`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type row struct {
		state string
		live  bool
	}
	stored := map[string]row{}
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.state, &r.live); err != nil {
			t.Fatal(err)
		}
		stored[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range challenges {
		r, ok := stored[c.id]
		switch {
		case !ok:
			t.Errorf("challenge %s (%s) was lost", c.id, c.tenant.slug)
		case c.tenant.short() == r.live:
			t.Errorf("challenge %s (%s, expires %v) is %s (live: %v) after the restart", c.id, c.tenant.slug,
				c.expires.Format(time.RFC3339), r.state, r.live)
		}
	}
}

// crashKey names a delivery: a challenge and a device.
type crashKey struct{ challenge, device string }

// crashOutcomes reads the outcome of every challenge delivery.
func crashOutcomes(ctx context.Context, t *testing.T, db *pgtest.DB) map[crashKey]string {
	t.Helper()
	return crashByDelivery(ctx, t, db, `SELECT challenge_id::text, device_id::text, outcome FROM deliveries WHERE kind = 'challenge'`)
}

// crashJobStates reads the River state of each challenge delivery's job,
// by challenge and device (for the report on how each was recovered).
func crashJobStates(ctx context.Context, t *testing.T, db *pgtest.DB) map[crashKey]string {
	t.Helper()
	return crashByDelivery(ctx, t, db, `SELECT x.challenge_id::text, x.device_id::text, j.state::text
		FROM river_job j JOIN deliveries x ON x.id::text = j.args->>'delivery_id'
		WHERE j.kind = 'deliver' AND x.kind = 'challenge'`)
}

// crashByDelivery runs a query of (challenge id, device id, value) rows.
func crashByDelivery(ctx context.Context, t *testing.T, db *pgtest.DB, sql string) map[crashKey]string {
	t.Helper()
	rows, err := db.Pool.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[crashKey]string{}
	for rows.Next() {
		var k crashKey
		var v string
		if err := rows.Scan(&k.challenge, &k.device, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func crashTally(m map[crashKey]string) map[string]int {
	out := map[string]int{}
	for _, v := range m {
		out[v]++
	}
	return out
}

func crashCount(ctx context.Context, t *testing.T, db *pgtest.DB, sql string) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// crashAwait polls cond every poll until it holds, and fails the test with
// what state says once timeout has passed.
func crashAwait(t *testing.T, timeout, poll time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(poll) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %s", timeout, what, state())
		}
	}
}

// crashReportRecovery logs how long after the kill and the restart the
// restarted server pushed what the dead one left: jobs still queued at the
// kill, and jobs it had running (which River must rescue first).
func crashReportRecovery(t *testing.T, r crashRun, jobsAtKill map[crashKey]string, settledAt time.Time) {
	t.Helper()
	byToken := map[string]string{}
	for _, users := range r.devices {
		for _, ds := range users {
			for _, d := range ds {
				byToken[d.token] = d.id
			}
		}
	}
	type span struct {
		n           int
		first, last time.Time
	}
	spans := map[string]*span{}
	for _, p := range r.after {
		if p.kind != "challenge" {
			continue
		}
		state := jobsAtKill[crashKey{p.challenge, byToken[p.token]}]
		s := spans[state]
		if s == nil {
			s = &span{first: p.at}
			spans[state] = s
		}
		s.n++
		if p.at.Before(s.first) {
			s.first = p.at
		}
		if p.at.After(s.last) {
			s.last = p.at
		}
	}
	killedAt := r.killedAt
	round := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	t.Logf("recovery: restarted %v after the kill; every delivery settled %v after the restart (%v after the kill)",
		round(r.restartedAt.Sub(killedAt)), round(settledAt.Sub(r.restartedAt)), round(settledAt.Sub(killedAt)))
	for _, state := range slices.Sorted(maps.Keys(spans)) {
		s := spans[state]
		t.Logf("recovery: %d pushes whose job was %q at the kill, sent %v to %v after the restart (%v to %v after the kill)",
			s.n, state, round(s.first.Sub(r.restartedAt)), round(s.last.Sub(r.restartedAt)),
			round(s.first.Sub(killedAt)), round(s.last.Sub(killedAt)))
	}
}

// crashRun is what the checks look at.
type crashRun struct {
	devices    map[string][][]crashDevice
	challenges []crashChallenge
	// before: pushes the providers had received at the kill (answered as
	// of then); late: received after the kill snapshot but before the
	// restart (the dead process's last bytes, if any); after: received
	// from the restarted server.
	before, late, after   []crashPush
	outcomesAtKill        map[crashKey]string
	outcomes              map[crashKey]string
	killedAt, restartedAt time.Time
}

// crashCheck asserts what a crash may and may not do to pushes.
func crashCheck(t *testing.T, r crashRun) {
	t.Helper()
	byToken := map[string]crashDevice{}
	for _, users := range r.devices {
		for _, ds := range users {
			for _, d := range ds {
				byToken[d.token] = d
			}
		}
	}
	byID := map[string]*crashChallenge{}
	for i := range r.challenges {
		byID[r.challenges[i].id] = &r.challenges[i]
	}
	type sends struct{ before, after []crashPush }
	got := map[crashKey]*sends{}
	cutOff := 0
	record := func(p crashPush, after bool) {
		switch {
		case p.status != 200 && !after && p.at.After(r.killedAt.Add(-time.Second)) && !p.answeredBefore(r.killedAt):
			// The kill cut the request off: the fake read it incomplete
			// (an empty body) and refused it, to nobody.
			cutOff++
			return
		case p.status != 200:
			t.Errorf("the %s fake refused a push (%d) to %s at %v: the server sent something a provider would refuse: %q",
				p.provider, p.status, p.token, p.at.Format(time.RFC3339Nano), p.raw)
			return
		case p.kind == "notification":
			return // background notifications: not this test's subject
		case p.kind != "challenge":
			t.Errorf("the %s fake received a push of kind %q: %q", p.provider, p.kind, p.raw)
			return
		}
		d, ok := byToken[p.token]
		c := byID[p.challenge]
		if !ok || c == nil {
			t.Errorf("push for challenge %q to unknown token %q", p.challenge, p.token)
			return
		}
		k := crashKey{c.id, d.id}
		if got[k] == nil {
			got[k] = &sends{}
		}
		if after {
			got[k].after = append(got[k].after, p)
		} else {
			got[k].before = append(got[k].before, p)
		}
	}
	for _, p := range r.before {
		record(p, false)
	}
	var lateBy time.Duration
	for _, p := range r.late {
		// Sent by the dead process, recorded by the fake only after the
		// kill: in flight at the kill.
		lateBy = max(lateBy, p.at.Sub(r.killedAt))
		record(p, false)
	}
	if cutOff > 0 {
		t.Logf("%d pushes were cut off by the kill halfway through the request", cutOff)
	}
	if len(r.late) > 0 {
		t.Logf("%d pushes of the killed server were recorded by the fakes after the kill (up to %v after it)",
			len(r.late), lateBy.Round(time.Millisecond))
	}
	for _, p := range r.after {
		record(p, true)
	}

	var lost, resentInFlight, resentAnswered int
	var oldestAnswered time.Duration
	for i := range r.challenges {
		c := &r.challenges[i]
		for _, d := range r.devices[c.tenant.slug][c.user] {
			k := crashKey{c.id, d.id}
			s := got[k]
			if s == nil {
				s = &sends{}
			}
			atKill, final := r.outcomesAtKill[k], r.outcomes[k]
			if atKill == "sent" && len(s.before) == 0 {
				t.Errorf("challenge %s: delivery to device %s recorded sent before the kill, but the %s fake never received it",
					c.id, d.id, d.provider)
			}
			switch {
			case final == "":
				t.Errorf("challenge %s (%s): no delivery row for device %s: a committed push was lost", c.id, c.tenant.slug, d.id)
				continue
			case len(s.before) > 1:
				t.Errorf("challenge %s: device %s (%s) got %d pushes before any crash", c.id, d.id, d.provider, len(s.before))
			case len(s.after) > 1:
				t.Errorf("challenge %s: device %s (%s) got %d pushes from the restarted server", c.id, d.id, d.provider, len(s.after))
			}
			if c.tenant.short() {
				// Expired while the server was down: nothing may be sent
				// after the restart, and what was not sent is skipped.
				if len(s.after) > 0 {
					t.Errorf("challenge %s expired at %v but was pushed to device %s (%s) at %v, after the restart",
						c.id, c.expires.Format(time.RFC3339Nano), d.id, d.provider, s.after[0].at.Format(time.RFC3339Nano))
				}
				want := "skipped"
				if atKill == "sent" {
					want = "sent"
				}
				if final != want {
					t.Errorf("expired challenge %s, device %s: delivery %s (at the kill: %s), want %s", c.id, d.id, final, atKill, want)
				}
				continue
			}
			if len(s.before)+len(s.after) == 0 {
				lost++
				t.Errorf("challenge %s (expires %v): device %s (%s) never got its push; delivery %s (at the kill: %s)",
					c.id, c.expires.Format(time.RFC3339), d.id, d.provider, final, atKill)
			}
			if final != "sent" {
				t.Errorf("challenge %s, device %s: delivery %s, want sent (at the kill: %s)", c.id, d.id, final, atKill)
			}
			if len(s.before) > 0 && len(s.after) > 0 {
				prior := s.before[0]
				switch {
				case atKill == "sent":
					t.Errorf("challenge %s: device %s (%s) was pushed again after the restart although the delivery was recorded sent before the kill",
						c.id, d.id, d.provider)
				case !prior.answeredBefore(r.killedAt):
					resentInFlight++
				case r.killedAt.Sub(prior.at) > crashDelay+5*time.Second:
					t.Errorf("challenge %s: device %s (%s) was pushed again after the restart, although the provider answered "+
						"the first push (received %v before the kill) long before the kill", c.id, d.id, d.provider,
						r.killedAt.Sub(prior.at).Round(time.Millisecond))
				default:
					// Answered by the provider but not yet recorded when
					// the process died: delivery is at least once, and the
					// collapse id makes the repeat harmless.
					resentAnswered++
					oldestAnswered = max(oldestAnswered, r.killedAt.Sub(prior.at))
				}
			}
		}
	}
	t.Logf("long-lived pushes repeated after the restart: %d whose first send was in flight at the kill, %d answered by the provider but not yet recorded; %d lost",
		resentInFlight, resentAnswered, lost)
	if resentAnswered > 0 {
		t.Logf("note: %d pushes were answered by the provider before the kill (the oldest about %v before it) but not yet "+
			"recorded sent: at-least-once delivery resent them", resentAnswered, (oldestAnswered - crashDelay).Round(time.Millisecond))
	}
}
