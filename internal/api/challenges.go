package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// MaxWait is the longest long-poll.
const MaxWait = 60 * time.Second

// challengeOut is a challenge as its relying party sees it, as of now: a
// pending challenge past its time reads as expired.
func challengeOut(c challenge.Challenge, now time.Time) wire.Challenge {
	out := wire.Challenge{ID: c.ID, State: c.EffectiveState(now), User: c.UserName, Resolution: c.Resolution, Fraud: c.Fraud,
		CreatedAt: utc(c.CreatedAt), ExpiresAt: utc(c.ExpiresAt), ResolvedAt: utcp(c.ResolvedAt)}
	if c.Number != 0 {
		n := c.Number
		out.Number = &n
	}
	if out.State == challenge.StateExpired && c.State == challenge.StatePending {
		at := utc(c.ExpiresAt)
		out.Resolution, out.ResolvedAt = challenge.ResolutionExpired, &at
	}
	return out
}

// createChallenge is POST /v1/challenges.
func (h *handlers) createChallenge(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err == nil {
		err = checkMediaType(r, "application/json")
	}
	var in wire.CreateChallenge
	if err == nil {
		err = unmarshalStrict(body, &in)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := account.ValidateUserName("user", in.User); err != nil {
		writeError(w, r, err)
		return
	}
	req := challenge.Request{User: in.User, Message: in.Message}
	if in.Context != nil {
		req.IP, req.Location, req.Browser = in.Context.IP, in.Context.Location, in.Context.Browser
	}
	if in.NumberMatching != nil {
		if !*in.NumberMatching {
			writeError(w, r, errs.Invalid("number_matching", "a request can turn number matching on, never off"))
			return
		}
		req.NumberMatching = true
	}
	if err := req.Validate(); err != nil {
		writeError(w, r, err)
		return
	}
	p := principal(r)
	nc := postgres.NewChallenge{TenantID: p.TenantID, ApplicationID: p.ID, AppName: p.AppName, AppMatching: p.AppMatching,
		Request: req, By: p.Actor(), Now: h.now().UTC().Truncate(time.Second)}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if !printable(key, 255) {
			writeError(w, r, errs.Invalid("Idempotency-Key", "Idempotency-Key must be 1 to 255 printable ASCII characters"))
			return
		}
		// The body's canonical form, so spacing and key order do not matter.
		if nc.RequestDigest, err = challenge.DigestJSON(body); err != nil {
			writeError(w, r, errs.E(errs.InvalidJSON, "request body is not valid JSON"))
			return
		}
		nc.IdempotencyKey = key
	}
	// The listener's connection before the commit: the hub trusts what it
	// learns of the challenge only if that connection has held since.
	since := h.hub.Epoch()
	c, replayed, err := h.db.CreateChallenge(r.Context(), nc)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	} else {
		h.hub.Remember(c, since)
	}
	writeJSON(w, http.StatusCreated, challengeOut(c, h.now()))
}

func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// parseWait reads ?wait=: a duration such as 25s, or whole seconds.
func parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, errs.Invalid("wait", "wait must be a duration such as 25s")
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > MaxWait {
		return 0, errs.Invalid("wait", "wait must be between 0 and %s", MaxWait)
	}
	return d, nil
}

// getChallenge is GET /v1/challenges/{id}[?wait=]: the challenge's state,
// or, with wait, the state the instant it resolves (or the current state
// when the wait or the challenge's lifetime runs out). One LISTEN per
// process wakes all waiters; the instance that created the challenge
// answers from what it knows, without reading the database.
func (h *handlers) getChallenge(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	id, err := parseID(pathParam(r, "id"), "challenge")
	if err == nil {
		var wait time.Duration
		if wait, err = parseWait(r); err == nil {
			err = h.awaitChallenge(w, r, p, id, wait)
		}
	}
	if err != nil {
		writeError(w, r, err)
	}
}

func (h *handlers) awaitChallenge(w http.ResponseWriter, r *http.Request, p account.Principal, id string, wait time.Duration) error {
	ctx := r.Context()
	deadline := h.now().Add(wait)
	read := func() (challenge.Challenge, error) {
		if c, ok := h.hub.Lookup(id); ok && c.TenantID == p.TenantID && c.ApplicationID == p.ID {
			return c, nil
		}
		if wait == 0 {
			return h.db.Challenge(ctx, p.TenantID, p.ID, id)
		}
		// Created elsewhere (or before a reconnect): say that a remote
		// instance waits, so its resolution is NOTIFYed.
		return h.db.WaitOnChallenge(ctx, p.TenantID, p.ID, id)
	}
	for {
		// Watch before reading, so a change between the two is not lost.
		waiter := h.hub.Watch(id)
		c, err := read()
		if err != nil {
			h.hub.Unwatch(waiter)
			return err
		}
		now := h.now()
		until := deadline
		if c.ExpiresAt.Before(until) {
			until = c.ExpiresAt
		}
		if wait == 0 || c.EffectiveState(now) != challenge.StatePending || !now.Before(until) {
			h.hub.Unwatch(waiter)
			writeJSON(w, http.StatusOK, challengeOut(c, now))
			return nil
		}
		timer := time.NewTimer(until.Sub(now))
		select {
		case ch := <-waiter.C:
			timer.Stop()
			h.hub.Unwatch(waiter)
			writeJSON(w, http.StatusOK, challengeOut(ch.Apply(c), h.now()))
			return nil
		case <-timer.C:
			h.hub.Unwatch(waiter)
			writeJSON(w, http.StatusOK, challengeOut(c, h.now()))
			return nil
		case <-waiter.Reset:
			// The listener reconnected: changes may have been missed. Read
			// again (the loop re-watches first).
			timer.Stop()
			h.hub.Unwatch(waiter)
		case <-ctx.Done():
			timer.Stop()
			h.hub.Unwatch(waiter)
			return nil
		}
	}
}

// cancelChallenge is POST /v1/challenges/{id}/cancel.
func (h *handlers) cancelChallenge(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	id, err := parseID(pathParam(r, "id"), "challenge")
	if err == nil {
		err = decodeJSON(w, r, &struct{}{}, true)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	c, err := h.db.Cancel(r.Context(), p.TenantID, p.ID, id, p.Actor())
	if err != nil {
		// Had it committed after all (a lost reply to COMMIT), what this
		// instance knows of the challenge would be stale.
		h.hub.Forget(id)
		writeError(w, r, err)
		return
	}
	h.hub.Publish(postgres.Change(c))
	writeJSON(w, http.StatusOK, challengeOut(c, h.now()))
}

// verifyCode is POST /v1/users/{user}/verify-code.
func (h *handlers) verifyCode(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	var in wire.VerifyCode
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	name := pathParam(r, "user")
	if account.ValidateUserName("user", name) != nil {
		writeError(w, r, errs.NotFoundf("user not found"))
		return
	}
	if len(in.Code) == 0 || len(in.Code) > 16 {
		writeError(w, r, errs.Invalid("code", "code must be the 6 or 8 digits the app shows"))
		return
	}
	valid, err := h.db.VerifyCode(r.Context(), p.TenantID, name, strings.TrimSpace(in.Code), p.Actor(), h.now())
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.CodeResult{Valid: valid})
}

// ---- device side ----

func deviceChallengeOut(c challenge.Challenge, now time.Time, full bool) wire.DeviceChallenge {
	out := wire.DeviceChallenge{ID: c.ID, State: c.EffectiveState(now), NumberRequired: c.Number != 0, ExpiresAt: utc(c.ExpiresAt),
		Context: wire.ChallengeContext(c.Context)}
	if full {
		out.Nonce = base64.RawURLEncoding.EncodeToString(c.Nonce)
		out.ContextDigest = challenge.EncodeDigest(c.ContextDigest)
	}
	return out
}

// deviceChallenges is GET /v1/device/challenges: the user's pending ones.
func (h *handlers) deviceChallenges(w http.ResponseWriter, r *http.Request, tok jose.Device) (int, any, error) {
	d, cs, err := h.db.DeviceChallenges(r.Context(), tok)
	tellDevice(w, d)
	if err != nil {
		return 0, nil, err
	}
	out := wire.DeviceChallenges{Challenges: make([]wire.DeviceChallenge, len(cs))}
	now := h.now()
	for i, c := range cs {
		out.Challenges[i] = deviceChallengeOut(c, now, false)
	}
	return http.StatusOK, out, nil
}

// deviceChallenge is GET /v1/device/challenges/{id}: what the app displays
// and what its answer must repeat (never the number itself).
func (h *handlers) deviceChallenge(w http.ResponseWriter, r *http.Request, tok jose.Device) (int, any, error) {
	id, err := parseID(pathParam(r, "id"), "challenge")
	if err != nil {
		return 0, nil, h.dev.refuse(r.Context(), tok, err)
	}
	d, c, err := h.db.FetchChallenge(r.Context(), tok, id)
	tellDevice(w, d)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, deviceChallengeOut(c, h.now(), true), nil
}

// respond is POST /v1/device/challenges/{id}/response: the body is a
// response+jwt signed by the same device. Its signature is checked before
// the database is asked anything; a refused body still spends the call's
// token.
func (h *handlers) respond(w http.ResponseWriter, r *http.Request, tok jose.Device) (int, any, error) {
	resp, err := h.verifyResponse(w, r, tok)
	if err != nil {
		return 0, nil, h.dev.refuse(r.Context(), tok, err)
	}
	ans, err := h.db.Respond(r.Context(), tok, resp)
	tellDevice(w, ans.Device)
	if err != nil {
		// Had it committed after all (a lost reply to COMMIT), what this
		// instance knows of the challenge would be stale.
		h.hub.Forget(resp.Claims.Challenge)
		return 0, nil, err
	}
	c := ans.Challenge
	// Wake this instance's long-polls; others learn by NOTIFY when they may
	// be waiting.
	h.hub.Publish(postgres.Change(c))
	if ans.PushSentAt != nil && h.metrics != nil {
		h.metrics.PushToAnswer.Observe(c.ResolvedAt.Sub(*ans.PushSentAt).Seconds())
	}
	return http.StatusOK, wire.ResponseResult{ID: c.ID, State: c.State, Resolution: c.Resolution}, nil
}

// verifyResponse reads and verifies a response+jwt for the challenge of the
// path, signed by the calling device.
func (h *handlers) verifyResponse(w http.ResponseWriter, r *http.Request, tok jose.Device) (jose.Response, error) {
	id, err := parseID(pathParam(r, "id"), "challenge")
	if err != nil {
		return jose.Response{}, err
	}
	body, err := readBody(w, r)
	if err == nil {
		err = checkMediaType(r, "application/jose")
	}
	if err != nil {
		return jose.Response{}, err
	}
	key, err := h.dev.key(r.Context(), tok.DeviceID)
	if err != nil {
		return jose.Response{}, err
	}
	resp, err := jose.VerifyResponse(strings.TrimSpace(string(body)), key.Key, h.now())
	var je *jose.Error
	switch {
	case errors.As(err, &je):
		return resp, errs.E(errs.InvalidJWS, "%s", je.Reason)
	case err != nil:
		return resp, err
	case resp.DeviceID != tok.DeviceID:
		return resp, errs.E(errs.InvalidJWS, "the response must be signed by the calling device (kid)")
	case resp.Claims.Challenge != id:
		return resp, errs.E(challenge.InvalidResponse, "chl names another challenge")
	}
	return resp, nil
}

// ---- admin ----

// adminChallenge is GET /v1/admin/challenges/{id}.
func (h *handlers) adminChallenge(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "challenge")
	if err != nil {
		writeError(w, r, err)
		return
	}
	c, err := h.db.Challenge(r.Context(), scope(principal(r)), "", id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, challengeOut(c, h.now()))
}

// adminChallengeWebhooks is GET /v1/admin/challenges/{id}/webhooks: every
// webhook delivery of the challenge and its attempts.
func (h *handlers) adminChallengeWebhooks(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "challenge")
	if err != nil {
		writeError(w, r, err)
		return
	}
	ws, err := h.db.WebhookDeliveries(r.Context(), scope(principal(r)), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]wire.WebhookDelivery, len(ws))
	for i, x := range ws {
		out[i] = wire.WebhookDelivery{ID: x.ID, Outcome: x.Outcome, Attempts: x.Attempts, LastStatus: x.LastStatus,
			LastError: x.LastError, CreatedAt: utc(x.CreatedAt), UpdatedAt: utc(x.UpdatedAt), DeliveredAt: utcp(x.DeliveredAt)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

// adminChallengeTimeline is GET /v1/admin/challenges/{id}/timeline: created,
// each push handed to its provider (with the provider's id) or why not,
// each device's fetch, and the outcome.
func (h *handlers) adminChallengeTimeline(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "challenge")
	if err != nil {
		writeError(w, r, err)
		return
	}
	c, pushes, fetches, err := h.db.ChallengeTimeline(r.Context(), scope(principal(r)), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	now := h.now()
	events := challenge.Timeline(c, pushes, fetches, now)
	out := wire.Timeline{Challenge: challengeOut(c, now), Events: make([]wire.TimelineEvent, len(events))}
	for i, e := range events {
		out.Events[i] = wire.TimelineEvent{At: utc(e.At), Event: e.Event, DeviceID: e.DeviceID, DeliveryID: e.DeliveryID,
			Push: e.Push, Provider: e.Provider, ProviderMessageID: e.ProviderMessageID, Reason: e.Reason, Attempts: e.Attempts,
			State: e.State, Resolution: e.Resolution}
	}
	writeJSON(w, http.StatusOK, out)
}
