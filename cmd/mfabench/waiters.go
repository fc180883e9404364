package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// waitersMemory is phase (f): what a waiting long-poll costs the server.
// It creates challenges, has n long-polls wait on them (each on its own
// connection, as relying parties' are), and returns the growth of the
// server's resident memory divided by n, in KiB: the goroutines, buffers
// and hub entries of the waiters, all told. Cancelling the challenges ends
// the waits.
func waitersMemory(ctx context.Context, st *stack, users, n int) (float64, error) {
	const challenges = 50
	ids := make([]string, 0, challenges)
	for i := range challenges {
		c, err := create(ctx, st.rp, fmt.Sprintf("u%03d", i%users))
		if err != nil {
			return 0, err
		}
		ids = append(ids, c.ID)
	}
	defer func() {
		for _, id := range ids {
			_ = st.rp.Do(context.WithoutCancel(ctx), "POST", "/v1/challenges/"+id+"/cancel", nil, nil)
		}
	}()
	time.Sleep(time.Second) // let the server settle after the creates
	rss0, err := residentKiB(st.srv.Process.Pid)
	if err != nil {
		return 0, err
	}
	// A transport of their own: each wait holds its connection.
	tr := &http.Transport{MaxIdleConnsPerHost: n}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", st.base+"/v1/challenges/"+ids[i%len(ids)]+"?wait=60s", nil)
			req.Header.Set("Authorization", "Bearer "+st.rp.Token)
			resp, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("long-poll: %s", resp.Status)
			}
		}()
	}
	deadline := time.Now().Add(time.Minute)
	for {
		w, err := waiting(ctx, st)
		if err != nil {
			return 0, err
		}
		if w == n {
			break
		}
		select {
		case err := <-errs:
			return 0, err
		default:
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("only %d of %d long-polls are waiting", w, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	rss1, err := residentKiB(st.srv.Process.Pid)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := st.rp.Do(ctx, "POST", "/v1/challenges/"+id+"/cancel", nil, nil); err != nil {
			return 0, err
		}
	}
	ids = nil
	wg.Wait()
	close(errs)
	for err := range errs {
		return 0, err
	}
	return float64(rss1-rss0) / float64(n), nil
}

// waiting reads pushmfa_longpoll_waiters from the server's metrics.
func waiting(ctx context.Context, st *stack) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", st.base+"/metrics", nil)
	resp, err := st.httpc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "pushmfa_longpoll_waiters "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("no pushmfa_longpoll_waiters in /metrics")
}

// residentKiB is a process's resident memory (VmRSS), in KiB.
func residentKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v))
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}
