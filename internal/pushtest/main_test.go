package pushtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	firebase "firebase.google.com/go/v4"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"google.golang.org/api/option"
)

// installedCA is the CA TestMain put into this process's system roots: the
// Firebase SDK, which takes no root pool, trusts the FCM fake through it.
var installedCA *CA

// childEnv, when set, makes the test binary act as a server process pushing
// through the fakes of its parent (see TestChildProcess); its value lists
// the providers to push through ("apns,fcm").
const childEnv = "PUSHTEST_CHILD"

func TestMain(m *testing.M) {
	if providers := os.Getenv(childEnv); providers != "" {
		os.Exit(childMain(strings.Split(providers, ",")))
	}
	dir, err := os.MkdirTemp("", "pushtest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	installedCA, err = InstallCA(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childResult is what the child reports on stdout.
type childResult struct {
	APNsStatus int    `json:"apns_status,omitempty"`
	APNsReason string `json:"apns_reason,omitempty"`
	APNsID     string `json:"apns_id,omitempty"`
	APNsError  string `json:"apns_error,omitempty"`
	FCMName    string `json:"fcm_name,omitempty"`
	FCMError   string `json:"fcm_error,omitempty"`
}

// childMain pushes once through each provider the way the server does, from
// its configuration variables alone: no CA, no test hooks. Only the
// inherited SSL_CERT_FILE makes it trust the fakes.
func childMain(providers []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var res childResult
	if slices.Contains(providers, "apns") {
		res.APNsStatus, res.APNsReason, res.APNsID, res.APNsError = childAPNs(ctx)
	}
	if slices.Contains(providers, "fcm") {
		res.FCMName, res.FCMError = childFCM(ctx)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func childAPNs(ctx context.Context) (status int, reason, id, errText string) {
	key, err := token.AuthKeyFromFile(os.Getenv("APNS_KEY_FILE"))
	if err != nil {
		return 0, "", "", err.Error()
	}
	client := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: os.Getenv("APNS_KEY_ID"), TeamID: os.Getenv("APNS_TEAM_ID")})
	client.Host = os.Getenv("APNS_ENDPOINT")
	res, err := client.PushWithContext(ctx, &apns2.Notification{
		DeviceToken: os.Getenv("APNS_DEVICE_TOKEN"),
		Topic:       os.Getenv("APNS_TOPIC"),
		Payload:     []byte(`{"aps":{"alert":"Approve sign-in?"}}`),
	})
	if err != nil {
		return 0, "", "", err.Error()
	}
	return res.StatusCode, res.Reason, res.ApnsID, ""
}

func childFCM(ctx context.Context) (name, errText string) {
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: os.Getenv("FCM_PROJECT_ID")},
		option.WithCredentialsFile(os.Getenv("FCM_CREDENTIALS_FILE")), //nolint:staticcheck // the server's own option (internal/push/fcm.go): its flow is the one to prove
		option.WithEndpoint(os.Getenv("FCM_ENDPOINT")))
	if err != nil {
		return "", err.Error()
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return "", err.Error()
	}
	name, err = client.Send(ctx, fcmMessage(os.Getenv("FCM_DEVICE_TOKEN")))
	if err != nil {
		return "", err.Error()
	}
	return name, ""
}

// newDeviceToken returns a fresh APNs-shaped device token (32 bytes, hex).
func newDeviceToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
