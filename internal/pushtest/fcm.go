package pushtest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FCMConfig configures an FCM fake.
type FCMConfig struct {
	CA        *CA    // required: signs the fake's certificate
	ProjectID string // required: the Firebase project it serves
	// Delay is added to every send (slow provider); token requests are
	// answered at once.
	Delay time.Duration
}

// FCM is a fake of the FCM HTTP v1 API (projects.messages.send) and of
// Google's OAuth2 token endpoint, for one project and one service account.
// It records every send request with its answer.
type FCM struct {
	cfg     FCMConfig
	srv     *server
	scripts scripts
	log     journal[FCMPush]

	key      *rsa.PrivateKey // the service account's; signs assertions
	keyID    string
	email    string
	tokenURL string
	creds    []byte

	mu            sync.Mutex
	tokens        map[string]time.Time // access tokens issued, with expiry
	tokenRequests int
	tokensIssued  int
}

// FCMPush is one send request the FCM fake received and what it answered.
type FCMPush struct {
	At      time.Time
	Token   string          // message.token ("" for a topic or condition)
	Message json.RawMessage // the "message" object as sent
	Header  http.Header
	Status  int
	Reason  string // errorCode answered (FcmError detail), "" on success or without one
	Name    string // the message name answered on success: projects/<id>/messages/<id>
	// Answered is false while the answer is being delayed, and stays false
	// if the client went away (or the fake closed) before it was written.
	Answered bool
}

// NewFCM starts an FCM fake on 127.0.0.1:0 (TLS, h2 and http/1.1) with a
// fresh service account.
func NewFCM(cfg FCMConfig) (*FCM, error) {
	if cfg.CA == nil {
		return nil, errors.New("pushtest: FCMConfig needs a CA")
	}
	if cfg.ProjectID == "" || strings.ContainsAny(cfg.ProjectID, "/?#% ") {
		return nil, fmt.Errorf("pushtest: FCMConfig needs a plain ProjectID, not %q", cfg.ProjectID)
	}
	// 2048 bits, as Google issues them; it costs about 0.2 s under -race,
	// so tests share a fake across subtests where they can.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("pushtest: service account key: %w", err)
	}
	srv, err := listen(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("pushtest: FCM fake: %w", err)
	}
	f := &FCM{
		cfg:      cfg,
		srv:      srv,
		key:      key,
		keyID:    randomHex(20),
		email:    "firebase-adminsdk-fake@" + cfg.ProjectID + ".iam.gserviceaccount.com",
		tokenURL: srv.url + "/token",
		tokens:   make(map[string]time.Time),
	}
	if f.creds, err = f.serviceAccountJSON(); err != nil {
		srv.close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.serveToken)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", f.serveSend)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeGoogleError(w, http.StatusNotFound, "The requested URL "+r.URL.Path+" was not found on this server.", nil)
	})
	srv.serve(mux)
	return f, nil
}

// URL is the fake's origin, https://127.0.0.1:PORT.
func (f *FCM) URL() string { return f.srv.url }

// Endpoint is URL() + "/v1": what option.WithEndpoint (and the server's
// FCM_ENDPOINT) takes.
func (f *FCM) Endpoint() string { return f.srv.url + "/v1" }

// Close stops the fake. It cuts off requests in flight (their delayed
// answers are never written) and returns once their handlers are done, so
// Received is final afterwards.
func (f *FCM) Close() { f.srv.close() }

// CredentialsJSON is a Google service-account key file for the project
// whose token_uri is the fake's token endpoint and whose private key (RSA,
// made by the fake) signs the JWT assertion the SDK sends there; so the
// SDK's real credential flow runs against the fake. Write it to a file for
// a server's FCM_CREDENTIALS_FILE, or pass it to
// option.WithAuthCredentialsJSON(option.ServiceAccount, ...).
func (f *FCM) CredentialsJSON() []byte { return bytes.Clone(f.creds) }

// Script queues the next answers for sends to token (message.token), in
// order; once they are used up, sends to it get the default answer. Sends
// to a topic or condition count as sends to token "". A send the fake refuses
// on its own (authentication, project, malformed message) consumes nothing.
func (f *FCM) Script(token string, replies ...Reply) { f.scripts.add(token, replies) }

// SetDefault sets the answer for every send not scripted (zero Reply means
// success).
func (f *FCM) SetDefault(r Reply) { f.scripts.setDefault(r) }

// Received returns every send request received, refused ones included, in
// arrival order (a copy).
func (f *FCM) Received() []FCMPush { return f.log.all(cloneFCMPush) }

// ReceivedFor returns the send requests received for one device token
// (message.token), in arrival order (a copy).
func (f *FCM) ReceivedFor(token string) []FCMPush {
	return f.log.matching(func(p *FCMPush) bool { return p.Token == token }, cloneFCMPush)
}

func cloneFCMPush(p FCMPush) FCMPush {
	p.Header = p.Header.Clone()
	p.Message = bytes.Clone(p.Message)
	return p
}

// Reset forgets what was received and scripted, restores the default answer
// to success and zeroes the token counts. Access tokens already issued stay
// valid.
func (f *FCM) Reset() {
	f.log.reset()
	f.scripts.reset()
	f.mu.Lock()
	f.tokenRequests, f.tokensIssued = 0, 0
	f.mu.Unlock()
}

// TokenRequests is how many requests the OAuth2 token endpoint received,
// refused ones included.
func (f *FCM) TokenRequests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenRequests
}

// TokensIssued is how many access tokens the token endpoint issued: fewer
// than TokenRequests when it refused some.
func (f *FCM) TokensIssued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokensIssued
}

const (
	fcmScope           = "https://www.googleapis.com/auth/firebase.messaging"
	cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"
	jwtBearerGrant     = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	accessTokenTTL     = time.Hour
	// Google refuses assertions meant to live longer than an hour.
	maxAssertionTTL = time.Hour
	fcmErrorType    = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
	// FCM answers this name to a validate_only send.
	dryRunMessageID = "fake_message_id"
)

// fcmErrors is, per FcmError errorCode, the HTTP status and message FCM
// answers with (FCM's ErrorCode reference). The google.rpc status is the
// canonical one for the HTTP status: UNREGISTERED is 404 NOT_FOUND,
// QUOTA_EXCEEDED 429 RESOURCE_EXHAUSTED, SENDER_ID_MISMATCH 403
// PERMISSION_DENIED, THIRD_PARTY_AUTH_ERROR 401 UNAUTHENTICATED.
var fcmErrors = map[string]struct {
	status  int
	message string
}{
	"UNSPECIFIED_ERROR":      {500, "Unspecified error."},
	"INVALID_ARGUMENT":       {400, "The registration token is not a valid FCM registration token"},
	"UNREGISTERED":           {404, "Requested entity was not found."},
	"SENDER_ID_MISMATCH":     {403, "SenderId mismatch"},
	"QUOTA_EXCEEDED":         {429, "Quota exceeded for this device."},
	"UNAVAILABLE":            {503, "The service is currently unavailable."},
	"INTERNAL":               {500, "Internal error encountered."},
	"THIRD_PARTY_AUTH_ERROR": {401, "Auth error from APNS or Web Push Service"},
}

// rpcStatus is the canonical google.rpc status for an HTTP status
// (google/rpc/code.proto).
func rpcStatus(status int) string {
	switch status {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 412:
		return "FAILED_PRECONDITION"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 500:
		return "INTERNAL"
	case 501:
		return "UNIMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	}
	return "UNKNOWN"
}

// fcmAnswer is what the fake answers one send.
type fcmAnswer struct {
	status     int
	message    string
	errorCode  string // FcmError detail, if any
	details    []any  // other details (BadRequest, ErrorInfo)
	retryAfter string
	delay      time.Duration
	header     http.Header
}

func (a *fcmAnswer) ok() bool { return a.status == http.StatusOK }

// fcmReply turns a scripted Reply into an answer.
func fcmReply(r Reply) *fcmAnswer {
	a := &fcmAnswer{status: r.Status, errorCode: r.Reason, retryAfter: r.RetryAfter, delay: r.Delay}
	if a.errorCode == "" {
		if a.status == 0 {
			a.status = http.StatusOK
		}
		if !a.ok() {
			a.message = http.StatusText(a.status)
			if a.status == http.StatusForbidden {
				a.message = "The caller does not have permission"
			}
		}
		return a
	}
	e, known := fcmErrors[a.errorCode]
	if !known {
		e.status, e.message = http.StatusInternalServerError, "Unknown error."
	}
	if a.status == 0 {
		a.status = e.status
	}
	if a.ok() {
		a.errorCode = ""
	}
	a.message = e.message
	if r.Message != "" {
		a.message = r.Message
	}
	return a
}

func fcmRefuse(status int, errorCode, message string) *fcmAnswer {
	return &fcmAnswer{status: status, errorCode: errorCode, message: message}
}

func (f *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody))
	rec := &FCMPush{At: time.Now(), Header: r.Header.Clone()}
	// Record what was sent even when it is refused below.
	var req struct{ Message json.RawMessage }
	if json.Unmarshal(body, &req) == nil {
		rec.Message = req.Message
		var msg struct{ Token any }
		_ = json.Unmarshal(req.Message, &msg)
		rec.Token, _ = msg.Token.(string)
	}
	validateOnly, a := f.checkSend(r, body)
	if a == nil {
		a = fcmReply(f.scripts.take(rec.Token))
	}
	rec.Status = a.status
	rec.Reason = a.errorCode
	if a.ok() {
		id := dryRunMessageID
		if !validateOnly {
			id = messageID()
		}
		rec.Name = "projects/" + f.cfg.ProjectID + "/messages/" + id
	}
	f.log.add(rec)

	f.srv.delay(r.Context(), f.cfg.Delay+a.delay)
	for k, v := range a.header {
		w.Header()[k] = v
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	if a.ok() {
		writeJSON(w, http.StatusOK, map[string]string{"name": rec.Name})
	} else {
		details := a.details
		if a.errorCode != "" {
			details = append(details, map[string]string{"@type": fcmErrorType, "errorCode": a.errorCode})
		}
		writeGoogleError(w, a.status, a.message, details)
	}
	if answered(w, r) {
		f.log.update(func() { rec.Answered = true })
	}
}

// checkSend refuses what FCM itself would, in its order: credentials, then
// the project, then the request body.
func (f *FCM) checkSend(r *http.Request, body []byte) (validateOnly bool, refused *fcmAnswer) {
	if a := f.checkAccessToken(r.Header.Get("Authorization")); a != nil {
		return false, a
	}
	if p := r.PathValue("project"); p != f.cfg.ProjectID {
		// Google's IAM answers 403, not 404, for a project the caller may
		// not use, so as not to reveal whether it exists; FCM does too.
		a := fcmRefuse(http.StatusForbidden, "",
			"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/"+p+"' (or it may not exist).")
		a.details = []any{map[string]any{
			"@type":    "type.googleapis.com/google.rpc.ErrorInfo",
			"reason":   "IAM_PERMISSION_DENIED",
			"domain":   "cloudresourcemanager.googleapis.com",
			"metadata": map[string]string{"permission": "cloudmessaging.messages.create", "resource": "projects/" + p},
		}}
		return false, a
	}

	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return false, badRequest("Invalid JSON payload received. "+err.Error(), "")
	}
	for k := range req {
		// Google's JSON mapping accepts both the proto and the lowerCamel name.
		if k != "message" && k != "validate_only" && k != "validateOnly" {
			return false, badRequest(fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", k), "")
		}
	}
	for _, k := range []string{"validate_only", "validateOnly"} {
		if v, ok := req[k]; ok && json.Unmarshal(v, &validateOnly) != nil {
			return false, badRequest(fmt.Sprintf("Invalid value at '%s' (TYPE_BOOL), %s", k, v), k)
		}
	}
	if a := checkMessage(req["message"]); a != nil {
		return false, a
	}
	return validateOnly, nil
}

// messageFields are the fields of an FCM v1 Message, in both spellings.
var messageFields = []string{"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "fcmOptions", "token", "topic", "condition"}

// checkMessage checks the fields of a Message FCM parses before anything
// else: known fields, string data, and exactly one target.
func checkMessage(raw json.RawMessage) *fcmAnswer {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msg); err != nil || msg == nil {
		return fcmRefuse(http.StatusBadRequest, "INVALID_ARGUMENT", "Request contains an invalid argument: message is required.")
	}
	for k := range msg {
		if !slices.Contains(messageFields, k) {
			return badRequest(fmt.Sprintf("Invalid JSON payload received. Unknown name %q at 'message': Cannot find field.", k), "message")
		}
	}
	if d, ok := msg["data"]; ok {
		var data map[string]string
		if json.Unmarshal(d, &data) != nil {
			return badRequest("Invalid value at 'message.data' (map<string, string>): every value must be a string.", "message.data")
		}
	}
	targets := 0
	for _, k := range []string{"token", "topic", "condition"} {
		v, ok := msg[k]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return badRequest(fmt.Sprintf("Invalid value at 'message.%s' (TYPE_STRING), %s", k, v), "message."+k)
		}
		if s != "" {
			targets++
		}
	}
	if targets != 1 {
		return fcmRefuse(http.StatusBadRequest, "INVALID_ARGUMENT",
			"Request contains an invalid argument: exactly one of message.token, message.topic or message.condition must be set.")
	}
	return nil
}

// badRequest is Google's answer to a body that does not parse as the
// request message: 400 with a BadRequest detail and no FcmError, since it
// never reaches FCM.
func badRequest(message, field string) *fcmAnswer {
	a := fcmRefuse(http.StatusBadRequest, "", message)
	a.details = []any{map[string]any{
		"@type":           "type.googleapis.com/google.rpc.BadRequest",
		"fieldViolations": []map[string]string{{"field": field, "description": message}},
	}}
	return a
}

// checkAccessToken refuses a send without an access token this fake issued
// and that has not expired, as Google's front end does: 401 UNAUTHENTICATED.
func (f *FCM) checkAccessToken(header string) *fcmAnswer {
	scheme, token, _ := strings.Cut(header, " ")
	message := ""
	switch {
	case header == "":
		message = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	case !strings.EqualFold(scheme, "Bearer") || !f.validToken(token):
		message = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	default:
		return nil
	}
	a := fcmRefuse(http.StatusUnauthorized, "", message)
	a.header = http.Header{"Www-Authenticate": {`Bearer realm="https://accounts.google.com/"`}}
	return a
}

func (f *FCM) validToken(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	exp, ok := f.tokens[token]
	return ok && time.Now().Before(exp)
}

// serveToken is Google's OAuth2 token endpoint for the JWT bearer grant
// (RFC 7523): it verifies the service account's signed assertion and issues
// an access token the send endpoint then accepts.
func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.tokenRequests++
	f.mu.Unlock()

	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request", "Malformed form: "+err.Error())
		return
	}
	if g := r.PostForm.Get("grant_type"); g != jwtBearerGrant {
		oauthError(w, "unsupported_grant_type", "Invalid grant_type: "+g)
		return
	}
	assertion := r.PostForm.Get("assertion")
	if assertion == "" {
		oauthError(w, "invalid_request", "Missing required parameter: assertion")
		return
	}
	if code, desc := f.checkAssertion(assertion); code != "" {
		oauthError(w, code, desc)
		return
	}
	token := "ya29.fake-" + randomHex(24)
	f.mu.Lock()
	f.tokens[token] = time.Now().Add(accessTokenTTL)
	f.tokensIssued++
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"expires_in":   int(accessTokenTTL.Seconds()),
		"token_type":   "Bearer",
	})
}

// checkAssertion verifies the JWT assertion as Google does (RFC 7523 §3):
// RS256 by the service account's key, iss its email, aud the token URI, a
// lifetime of at most an hour that has not ended, and a scope that allows
// FCM. It returns the OAuth2 error code and description, or "".
func (f *FCM) checkAssertion(assertion string) (code, desc string) {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		if kid, ok := t.Header["kid"].(string); ok && kid != f.keyID {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		return &f.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}), jwt.WithoutClaimsValidation())
	if err != nil {
		return "invalid_grant", "Invalid JWT Signature."
	}
	if iss, _ := claims.GetIssuer(); iss != f.email {
		return "invalid_grant", "Invalid email or User ID"
	}
	if aud, _ := claims.GetAudience(); !slices.Contains(aud, f.tokenURL) {
		return "invalid_grant", "Invalid JWT: Failed audience check. The right audience is " + f.tokenURL
	}
	iat, errIat := claims.GetIssuedAt()
	exp, errExp := claims.GetExpirationTime()
	now := time.Now()
	if errIat != nil || errExp != nil || iat == nil || exp == nil ||
		!exp.After(now) || iat.After(now.Add(clockSkew)) || exp.Sub(iat.Time) > maxAssertionTTL {
		return "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	}
	scope, _ := claims["scope"].(string)
	scopes := strings.Fields(scope)
	if !slices.Contains(scopes, fcmScope) && !slices.Contains(scopes, cloudPlatformScope) {
		// Google answers invalid_scope here, not invalid_grant.
		return "invalid_scope", "Invalid OAuth scope or ID token audience provided."
	}
	return "", ""
}

// serviceAccountJSON is the key file Google issues for a service account,
// without the URLs of Google's that no client of the fake needs.
func (f *FCM) serviceAccountJSON() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(f.key)
	if err != nil {
		return nil, fmt.Errorf("pushtest: encode service account key: %w", err)
	}
	clientID, err := rand.Int(rand.Reader, new(big.Int).Exp(big.NewInt(10), big.NewInt(21), nil))
	if err != nil {
		return nil, fmt.Errorf("pushtest: service account id: %w", err)
	}
	b, err := json.MarshalIndent(map[string]string{
		"type":            "service_account",
		"project_id":      f.cfg.ProjectID,
		"private_key_id":  f.keyID,
		"private_key":     string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":    f.email,
		"client_id":       clientID.String(),
		"token_uri":       f.tokenURL,
		"universe_domain": "googleapis.com",
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("pushtest: service account JSON: %w", err)
	}
	return b, nil
}

// writeGoogleError writes Google's JSON error body: google.rpc.Status as
// the REST mapping shows it, with the canonical status for the HTTP one.
func writeGoogleError(w http.ResponseWriter, status int, message string, details []any) {
	body := map[string]any{"code": status, "message": message, "status": rpcStatus(status)}
	if len(details) > 0 {
		body["details"] = details
	}
	writeJSON(w, status, map[string]any{"error": body})
}

func oauthError(w http.ResponseWriter, code, desc string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// messageID imitates FCM's message ids ("0:1500415314455276%31bd1c9631bd1c96"),
// unique enough for a test run.
func messageID() string {
	return fmt.Sprintf("0:%d%%%s", time.Now().UnixMicro(), randomHex(8))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// Event is what the push says: its type and the challenge it names (""
// for none), from the message's data.
func (p FCMPush) Event() (kind, challengeID string) {
	var msg struct {
		Data struct {
			Type        string `json:"type"`
			ChallengeID string `json:"challenge_id"`
		} `json:"data"`
	}
	_ = json.Unmarshal(p.Message, &msg) // the fake checked its shape
	return msg.Data.Type, msg.Data.ChallengeID
}

// WriteCredentials writes an APNs .p8 key and the FCM fake's service
// account into dir, for a server's APNS_KEY_FILE and FCM_CREDENTIALS_FILE.
func WriteCredentials(dir string, p8 []byte, fcm *FCM) (keyFile, credsFile string, err error) {
	keyFile, credsFile = filepath.Join(dir, "AuthKey.p8"), filepath.Join(dir, "service-account.json")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(credsFile, fcm.CredentialsJSON(), 0o600); err != nil {
		return "", "", err
	}
	return keyFile, credsFile, nil
}
