// Package pushtest provides fake push providers that speak the providers'
// real protocols, so tests can aim the real client libraries at them:
// github.com/sideshow/apns2 with token authentication, and the Firebase Admin
// SDK's messaging client (firebase.google.com/go/v4/messaging).
//
// [APNs] fakes Apple's HTTP/2 provider API: POST /3/device/<token> with a
// bearer JWT (ES256) and the apns-* headers, checked as Apple documents and
// answered with Apple's statuses, reasons and headers. [FCM] fakes the FCM
// HTTP v1 send method and Google's OAuth2 token endpoint: the service account
// from [FCM.CredentialsJSON] names the fake as its token_uri, so the SDK's
// real credential flow (signed JWT assertion for an access token) runs
// against the fake before each send is checked and answered in FCM's error
// shape. Both serve TLS from a throwaway [CA] on 127.0.0.1:0, record every
// request with the answer given, and answer success unless a test scripts
// otherwise ([APNs.Script], [APNs.SetDefault] and the same on [FCM]), with
// optional delays (a slow provider, a client that gives up).
//
// # In-process
//
// apns2 can be given the CA directly:
//
//	client := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: kid, TeamID: team})
//	client.Host = fake.URL()
//	client.HTTPClient.Transport.(*http2.Transport).TLSClientConfig = &tls.Config{RootCAs: ca.Pool()}
//
// The Firebase SDK cannot (a custom HTTP client would bypass its credential
// flow), so a package that tests against the FCM fake trusts the CA through
// the system pool, installed once in TestMain:
//
//	func TestMain(m *testing.M) {
//		dir, _ := os.MkdirTemp("", "pushtest")
//		ca, err := pushtest.InstallCA(dir) // sets SSL_CERT_FILE; before any TLS
//		...
//		code := m.Run()
//		os.RemoveAll(dir)
//		os.Exit(code)
//	}
//
//	fake, _ := pushtest.NewFCM(pushtest.FCMConfig{CA: ca, ProjectID: "p"})
//	app, _ := firebase.NewApp(ctx, &firebase.Config{ProjectID: "p"},
//		option.WithAuthCredentialsJSON(option.ServiceAccount, fake.CredentialsJSON()),
//		option.WithEndpoint(fake.Endpoint()))
//
// # A server in a child process
//
// A server started from such a test inherits SSL_CERT_FILE with the
// environment, so its unmodified default transports trust the fakes. Point
// it at them with its ordinary configuration: APNS_ENDPOINT=fake.URL() and a
// .p8 from [NewP8Key] (APNS_KEY_FILE, with APNS_KEY_ID, APNS_TEAM_ID and
// APNS_TOPIC matching the [APNsConfig]); FCM_ENDPOINT=fake.Endpoint(),
// FCM_PROJECT_ID, and FCM_CREDENTIALS_FILE holding [FCM.CredentialsJSON].
// The fakes run in the test process, so the test scripts answers and reads
// what the server sent.
//
// # Where the documentation is silent
//
// APNs: device tokens must be hex, as Apple's are (else BadDeviceToken); a
// topic other than the configured one (plus the suffix Apple requires for
// the push type, e.g. ".voip") is DeviceTokenNotForTopic; a body that is not
// a JSON object with an "aps" dictionary is PayloadEmpty; HTTP/1.1 gets 505
// with the fake's own reason HTTP2Required. FCM: a project the service
// account may not use is 403 PERMISSION_DENIED (as Google's IAM answers),
// unknown paths are 404 NOT_FOUND, a JSON body that does not parse as the
// request is 400 INVALID_ARGUMENT without an FcmError detail, and a token
// request without an FCM scope is refused with invalid_scope. Mind that the
// Firebase SDK retries 503s and failed token requests by itself (0, 1, 2,
// 4 s): give sends a deadline.
package pushtest
