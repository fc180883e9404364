package pushtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// APNsConfig configures an APNs fake: the one team, key and app it accepts
// pushes for.
type APNsConfig struct {
	CA     *CA              // required: signs the fake's certificate
	KeyID  string           // the .p8 key id the bearer JWT must carry as "kid"
	TeamID string           // the JWT's "iss"
	Key    *ecdsa.PublicKey // verifies the bearer JWT (ES256)
	Topic  string           // the apns-topic every push must carry (the bundle id)
	Delay  time.Duration    // added to every answer (slow provider)
}

// APNs is a fake of Apple's HTTP/2 provider API (token authentication). It
// checks each request as Apple documents in "Sending notification requests
// to APNs", answers as in "Handling notification responses from APNs", and
// records every request with its answer.
type APNs struct {
	cfg     APNsConfig
	srv     *server
	scripts scripts
	log     journal[APNsPush]
	// verified keeps the claims of provider tokens whose signature checked
	// out: a provider reuses one token for up to an hour, and Apple checks
	// its signature once, not on every push. Issuer and age are checked on
	// every request.
	verified sync.Map // bearer -> providerClaims
}

// providerClaims are what the fake checks of a verified provider token.
type providerClaims struct {
	iss string
	iat time.Time
}

// APNsPush is one request the APNs fake received and what it answered.
type APNsPush struct {
	At      time.Time       // when the request arrived
	Token   string          // device token from the path
	Header  http.Header     // the request headers (authorization included)
	Payload json.RawMessage // the body, as sent (not necessarily valid JSON)
	Status  int             // what the fake answered
	Reason  string          // the reason it answered with, "" on success
	ApnsID  string          // the apns-id it answered with (on errors too)
	// Answered is false while the answer is being delayed, and stays false
	// if the client went away (or the fake closed) before it was written.
	Answered bool
}

// NewAPNs starts an APNs fake on 127.0.0.1:0, TLS with HTTP/2.
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	switch {
	case cfg.KeyID == "", cfg.TeamID == "", cfg.Topic == "":
		return nil, errors.New("pushtest: APNsConfig needs KeyID, TeamID and Topic")
	case cfg.Key == nil:
		return nil, errors.New("pushtest: APNsConfig needs the public Key of the .p8")
	}
	srv, err := listen(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("pushtest: APNs fake: %w", err)
	}
	f := &APNs{cfg: cfg, srv: srv}
	srv.serve(http.HandlerFunc(f.serve))
	return f, nil
}

// URL is the fake's origin, https://127.0.0.1:PORT: what apns2's Client.Host
// (and the server's APNS_ENDPOINT) takes.
func (f *APNs) URL() string { return f.srv.url }

// Close stops the fake. It cuts off requests in flight (their delayed
// answers are never written) and returns once their handlers are done, so
// Received is final afterwards.
func (f *APNs) Close() { f.srv.close() }

// Script queues the next answers for pushes to token, in order; once they
// are used up, pushes to token get the default answer. A push that fails the
// fake's own checks gets that check's answer and consumes nothing.
func (f *APNs) Script(token string, replies ...Reply) { f.scripts.add(token, replies) }

// SetDefault sets the answer for every push not scripted (zero Reply means
// success).
func (f *APNs) SetDefault(r Reply) { f.scripts.setDefault(r) }

// Received returns every request received, refused ones included, in
// arrival order (a copy).
func (f *APNs) Received() []APNsPush { return f.log.all(cloneAPNsPush) }

// ReceivedFor returns the requests received for one device token, in
// arrival order (a copy).
func (f *APNs) ReceivedFor(token string) []APNsPush {
	return f.log.matching(func(p *APNsPush) bool { return p.Token == token }, cloneAPNsPush)
}

func cloneAPNsPush(p APNsPush) APNsPush {
	p.Header = p.Header.Clone()
	p.Payload = bytes.Clone(p.Payload)
	return p
}

// Reset forgets what was received and scripted, and restores the default
// answer to success.
func (f *APNs) Reset() {
	f.log.reset()
	f.scripts.reset()
}

const (
	apnsPath = "/3/device/"
	// Apple's payload limits: 4 KB, 5 KB for VoIP.
	apnsMaxPayload     = 4096
	apnsMaxVoIPPayload = 5120
	// Apple's limit on apns-collapse-id.
	apnsMaxCollapseID = 64
	// How long an authentication token stays valid after its iat.
	apnsTokenLifetime = time.Hour
	// The clock skew tolerated for a JWT issued "in the future".
	clockSkew = time.Minute
	// Bodies are recorded up to this size; larger ones are refused anyway.
	maxRecordedBody = 64 << 10
)

// apnsStatus is Apple's HTTP status for each reason (the table "Understand
// error codes" of "Handling notification responses from APNs").
var apnsStatus = map[string]int{
	"BadCollapseId":               400,
	"BadDeviceToken":              400,
	"BadExpirationDate":           400,
	"BadMessageId":                400,
	"BadPriority":                 400,
	"BadTopic":                    400,
	"DeviceTokenNotForTopic":      400,
	"DuplicateHeaders":            400,
	"IdleTimeout":                 400,
	"InvalidPushType":             400,
	"MissingDeviceToken":          400,
	"MissingTopic":                400,
	"PayloadEmpty":                400,
	"TopicDisallowed":             400,
	"BadCertificate":              403,
	"BadCertificateEnvironment":   403,
	"ExpiredProviderToken":        403,
	"Forbidden":                   403,
	"InvalidProviderToken":        403,
	"MissingProviderToken":        403,
	"UnrelatedKeyIdInToken":       403,
	"BadEnvironmentKeyInToken":    403,
	"BadPath":                     404,
	"MethodNotAllowed":            405,
	"ExpiredToken":                410,
	"Unregistered":                410,
	"PayloadTooLarge":             413,
	"TooManyProviderTokenUpdates": 429,
	"TooManyRequests":             429,
	"InternalServerError":         500,
	"ServiceUnavailable":          503,
	"Shutdown":                    503,
}

// apnsGenericReason is the reason a Reply with only a Status answers.
var apnsGenericReason = map[int]string{
	403: "Forbidden",
	404: "BadPath",
	405: "MethodNotAllowed",
	410: "Unregistered",
	413: "PayloadTooLarge",
	429: "TooManyRequests",
	500: "InternalServerError",
	503: "ServiceUnavailable",
}

// apnsTopicSuffix lists Apple's apns-push-type values with what each
// requires appended to the bundle id in apns-topic ("" for none).
var apnsTopicSuffix = map[string]string{
	"alert":        "",
	"background":   "",
	"mdm":          "",
	"location":     ".location-query",
	"voip":         ".voip",
	"complication": ".complication",
	"fileprovider": ".pushkit.fileprovider",
	"liveactivity": ".push-type.liveactivity",
	"pushtotalk":   ".voip-ptt",
	"widgets":      ".push-type.widgets",
}

// apnsAnswer is what the fake answers one request.
type apnsAnswer struct {
	status     int
	reason     string
	retryAfter string
	delay      time.Duration
}

func refuse(reason string) *apnsAnswer {
	return &apnsAnswer{status: apnsStatus[reason], reason: reason}
}

// apnsReply turns a scripted Reply into an answer.
func apnsReply(r Reply) *apnsAnswer {
	a := &apnsAnswer{status: r.Status, reason: r.Reason, retryAfter: r.RetryAfter, delay: r.Delay}
	switch {
	case a.status == 0 && a.reason == "":
		a.status = http.StatusOK
	case a.status == 0:
		a.status = apnsStatus[a.reason]
		if a.status == 0 {
			a.status = http.StatusBadRequest
		}
	case a.reason == "":
		a.reason = apnsGenericReason[a.status]
	}
	if a.status == http.StatusOK {
		a.reason = ""
	}
	return a
}

func (f *APNs) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody))
	rec := &APNsPush{At: time.Now(), Header: r.Header.Clone(), Payload: body}
	if token, ok := strings.CutPrefix(r.URL.Path, apnsPath); ok {
		rec.Token = token
	}

	a := f.check(r, rec.Token, body)
	if a == nil {
		// Only a request Apple would accept reaches the script.
		a = apnsReply(f.scripts.take(rec.Token))
	}
	rec.Status, rec.Reason = a.status, a.reason
	// Apple echoes the request's apns-id, or makes one up (on errors too).
	rec.ApnsID = r.Header.Get("apns-id")
	if rec.ApnsID == "" || a.reason == "BadMessageId" {
		rec.ApnsID = uuid.NewString()
	}
	f.log.add(rec)

	f.srv.delay(r.Context(), f.cfg.Delay+a.delay)
	h := w.Header()
	h.Set("apns-id", rec.ApnsID)
	if a.retryAfter != "" {
		h.Set("Retry-After", a.retryAfter)
	}
	if a.status == http.StatusOK {
		// Only the development environment sends apns-unique-id; a fake is
		// one, and apns2 surfaces it.
		h.Set("apns-unique-id", uuid.NewString())
		w.WriteHeader(http.StatusOK)
	} else {
		body := map[string]any{"reason": a.reason}
		if a.status == http.StatusGone {
			// Since when the token is no longer valid, in milliseconds.
			body["timestamp"] = time.Now().UnixMilli()
		}
		h.Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_ = json.NewEncoder(w).Encode(body)
	}
	if answered(w, r) {
		f.log.update(func() { rec.Answered = true })
	}
}

// check applies Apple's rules to a request: path, then authentication, then
// headers and payload. It returns nil for a request APNs would accept.
func (f *APNs) check(r *http.Request, token string, body []byte) *apnsAnswer {
	if r.ProtoMajor != 2 {
		// APNs speaks only HTTP/2 (it refuses anything else at ALPN). The
		// fake offers http/1.1 as well, to say so plainly; the reason is
		// the fake's own, Apple has none.
		return &apnsAnswer{status: http.StatusHTTPVersionNotSupported, reason: "HTTP2Required"}
	}
	if r.Method != http.MethodPost {
		return refuse("MethodNotAllowed")
	}
	if !strings.HasPrefix(r.URL.Path, apnsPath) || strings.Contains(token, "/") {
		return refuse("BadPath")
	}
	if token == "" {
		return refuse("MissingDeviceToken")
	}
	for _, name := range []string{"Authorization", "Apns-Topic", "Apns-Push-Type", "Apns-Priority", "Apns-Expiration", "Apns-Collapse-Id", "Apns-Id"} {
		if len(r.Header.Values(name)) > 1 {
			return refuse("DuplicateHeaders")
		}
	}
	if reason := f.checkAuth(r.Header.Get("Authorization")); reason != "" {
		return refuse(reason)
	}

	pushType := r.Header.Get("apns-push-type")
	suffix, known := apnsTopicSuffix[pushType]
	if pushType != "" && !known {
		return refuse("InvalidPushType")
	}
	switch topic := r.Header.Get("apns-topic"); {
	case topic == "":
		return refuse("MissingTopic")
	case topic != f.cfg.Topic+suffix:
		// The fake knows one app: its device tokens belong to Topic, so
		// another topic is DeviceTokenNotForTopic (the reason APNs gives
		// for a token of another app of the team).
		return refuse("DeviceTokenNotForTopic")
	}
	// Apple documents priorities 10 (immediate), 5 (power-considerate) and
	// 1 (power-prioritized); background pushes must not use 10.
	switch p := r.Header.Get("apns-priority"); p {
	case "", "5", "1":
	case "10":
		if pushType == "background" {
			return refuse("BadPriority")
		}
	default:
		return refuse("BadPriority")
	}
	if e := r.Header.Get("apns-expiration"); e != "" {
		if _, err := strconv.ParseUint(e, 10, 64); err != nil {
			return refuse("BadExpirationDate")
		}
	}
	if len(r.Header.Get("apns-collapse-id")) > apnsMaxCollapseID {
		return refuse("BadCollapseId")
	}
	if id := r.Header.Get("apns-id"); id != "" && !canonicalUUID(id) {
		return refuse("BadMessageId")
	}
	if !deviceToken(token) {
		return refuse("BadDeviceToken")
	}

	limit := apnsMaxPayload
	if pushType == "voip" {
		limit = apnsMaxVoIPPayload
	}
	if len(body) > limit {
		return refuse("PayloadTooLarge")
	}
	if !apnsPayload(body, pushType) {
		// Apple lists no reason for a malformed payload; PayloadEmpty is
		// the nearest ("The message payload is empty"): there is no
		// notification in it.
		return refuse("PayloadEmpty")
	}
	return nil
}

// checkAuth verifies the provider authentication token (a JWT, ES256, with
// the key id as kid, the team id as iss and an iat within the last hour) and
// returns Apple's reason for refusing it, or "".
func (f *APNs) checkAuth(header string) string {
	if header == "" {
		return "MissingProviderToken"
	}
	scheme, bearer, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "bearer") || bearer == "" {
		return "MissingProviderToken"
	}
	pc, ok := f.verified.Load(bearer)
	if !ok {
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(bearer, claims, func(t *jwt.Token) (any, error) {
			if kid, _ := t.Header["kid"].(string); kid != f.cfg.KeyID {
				return nil, fmt.Errorf("kid %q is not the key's", kid)
			}
			return f.cfg.Key, nil
		}, jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}), jwt.WithoutClaimsValidation())
		if err != nil {
			return "InvalidProviderToken"
		}
		iss, _ := claims.GetIssuer()
		iat, err := claims.GetIssuedAt()
		if err != nil || iat == nil {
			return "InvalidProviderToken"
		}
		pc, _ = f.verified.LoadOrStore(bearer, providerClaims{iss: iss, iat: iat.Time})
	}
	claims := pc.(providerClaims)
	if claims.iss != f.cfg.TeamID {
		return "InvalidProviderToken"
	}
	iat := claims.iat
	now := time.Now()
	switch {
	case iat.After(now.Add(clockSkew)):
		return "InvalidProviderToken"
	case iat.Before(now.Add(-apnsTokenLifetime)):
		return "ExpiredProviderToken"
	}
	return ""
}

// canonicalUUID reports whether s is a UUID in its 8-4-4-4-12 form, the only
// one Apple accepts as apns-id.
func canonicalUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// deviceToken reports whether s looks like an APNs device token: hex bytes.
// Apple warns tokens may change length, so only the form is checked.
func deviceToken(s string) bool {
	if len(s)%2 != 0 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// apnsPayload reports whether body is a JSON object with an "aps"
// dictionary (MDM pushes carry an "mdm" key instead).
func apnsPayload(body []byte, pushType string) bool {
	var payload map[string]json.RawMessage
	if json.Unmarshal(body, &payload) != nil || payload == nil {
		return false
	}
	if pushType == "mdm" {
		return len(payload) > 0
	}
	var aps map[string]json.RawMessage
	return json.Unmarshal(payload["aps"], &aps) == nil && aps != nil
}

// NewP8Key makes an APNs token signing key the way Apple issues them: a
// P-256 key as a PKCS#8 "PRIVATE KEY" PEM block (a .p8 file), which apns2's
// token.AuthKeyFromFile and AuthKeyFromBytes load. It returns the key too;
// give its public half to APNsConfig.Key.
func NewP8Key() (p8 []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pushtest: APNs key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pushtest: encode APNs key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), key, nil
}

// Event is what the push says: its type and the challenge it names (""
// for none), from the payload.
func (p APNsPush) Event() (kind, challengeID string) {
	var body struct {
		Type        string `json:"type"`
		ChallengeID string `json:"challenge_id"`
	}
	_ = json.Unmarshal(p.Payload, &body) // the fake checked its shape
	return body.Type, body.ChallengeID
}
