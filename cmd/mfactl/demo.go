package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pushmfa/pushmfa/internal/client"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// Demo objects that `make run` keeps, found again by name.
const (
	demoAppName   = "Demo"
	demoTokenName = "make run demo"
	demoUser      = "alice"
)

// demoState is what `make run` remembers between runs (mode 0600 in
// DATA_DIR), so it prints the same working credentials each time.
type demoState struct {
	AdminTokenID string `json:"admin_token_id"`
	AdminToken   string `json:"admin_token"`
	AppID        string `json:"app_id"`
	AppSecret    string `json:"app_secret"`
}

func (c *cli) demoCmd() *cobra.Command {
	demo := &cobra.Command{Use: "demo", Short: "Local demo helpers (used by make run)", Hidden: true}
	var statePath string
	var wait time.Duration
	setup := &cobra.Command{
		Use:   "setup",
		Short: "Create, idempotently, a demo application and admin token, and print how to try them",
		Long: "setup uses the bootstrap admin token (--token or MFACTL_TOKEN) to make sure a demo admin token and a\n" +
			"demo application exist and work, keeps them in --state, and prints them with commands to try.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := waitReady(ctx, c.client(), wait); err != nil {
				return err
			}
			st, err := ensureDemo(ctx, c.client(), statePath)
			if err != nil {
				return err
			}
			// A fresh activation each run, so the printed enroll command
			// works as it stands (codes are single-use and expire).
			var en wire.Enrollment
			admin := client.New(c.url, st.AdminToken)
			if err := admin.Do(ctx, "POST", "/v1/admin/users/"+demoUser+"/enrollments", nil, &en); err != nil {
				return err
			}
			printDemo(c.out, c.url, statePath, st, en.URI, freeDeviceFile(filepath.Dir(statePath)))
			return nil
		},
	}
	setup.Flags().StringVar(&statePath, "state", ".data/demo.json", "where to keep the demo credentials")
	setup.Flags().DurationVar(&wait, "wait", 60*time.Second, "how long to wait for the server to become ready")
	demo.AddCommand(setup)
	return demo
}

// freeDeviceFile names a device state file that does not exist yet, so the
// printed enroll command works on every run.
func freeDeviceFile(dir string) string {
	for i := 1; ; i++ {
		name := demoUser + "-phone.json"
		if i > 1 {
			name = fmt.Sprintf("%s-phone-%d.json", demoUser, i)
		}
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
	}
}

func waitReady(ctx context.Context, c *client.Client, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := c.Ready(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: server at %s not ready after %s: %v", errFailed, c.BaseURL, wait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ensureDemo makes the demo credentials exist and work, reusing the ones in
// the state file when they still do.
func ensureDemo(ctx context.Context, bootstrap *client.Client, statePath string) (demoState, error) {
	var st demoState
	if b, err := os.ReadFile(statePath); err == nil {
		_ = json.Unmarshal(b, &st)
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, err
	}

	// The admin token: keep it if it still works, else mint a new one and
	// revoke any earlier demo tokens.
	admin := client.New(bootstrap.BaseURL, st.AdminToken)
	if st.AdminToken == "" || checkAdmin(ctx, admin) != nil {
		tokens, err := bootstrap.Tokens(ctx)
		if err != nil {
			return st, fmt.Errorf("list admin tokens (is MFACTL_TOKEN the bootstrap token?): %w", err)
		}
		for _, k := range tokens {
			if k.Name == demoTokenName && k.RevokedAt == nil {
				if _, err := bootstrap.RevokeToken(ctx, k.ID); err != nil {
					return st, err
				}
			}
		}
		k, err := bootstrap.CreateToken(ctx, demoTokenName, "")
		if err != nil {
			return st, err
		}
		st.AdminTokenID, st.AdminToken = k.ID, k.Token
		admin = client.New(bootstrap.BaseURL, st.AdminToken)
	}

	if _, err := admin.CreateUser(ctx, "", demoUser); err != nil && !client.IsCode(err, "conflict") {
		return st, err
	}

	// The application: keep it if its secret still works; else rotate the
	// secret of the existing demo application, or create it.
	app := client.New(bootstrap.BaseURL, st.AppSecret)
	if st.AppSecret == "" || checkApp(ctx, admin, app, st.AppID) != nil {
		apps, err := admin.Applications(ctx, "default")
		if err != nil {
			return st, err
		}
		st.AppID, st.AppSecret = "", ""
		for _, a := range apps {
			if a.Name == demoAppName {
				rotated, err := admin.RotateSecret(ctx, a.ID)
				if err != nil {
					return st, err
				}
				st.AppID, st.AppSecret = a.ID, rotated.Secret
			}
		}
		if st.AppID == "" {
			a, err := admin.CreateApplication(ctx, client.NewApplication{Name: demoAppName})
			if err != nil {
				return st, err
			}
			st.AppID, st.AppSecret = a.ID, a.Secret
		}
	}
	return st, saveState(statePath, st)
}

func checkAdmin(ctx context.Context, admin *client.Client) error {
	_, err := admin.Tokens(ctx)
	return err
}

func checkApp(ctx context.Context, admin, app *client.Client, id string) error {
	if _, err := admin.Application(ctx, id); err != nil {
		return err
	}
	_, err := app.RPUserDevices(ctx, demoUser)
	return err
}

func saveState(path string, st demoState) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func printDemo(w io.Writer, url, statePath string, st demoState, enrollURI, deviceFile string) {
	line := strings.Repeat("-", 78)
	fmt.Fprintf(w, "\n%s\npushmfa is running at %s\n(embedded PostgreSQL under DATA_DIR; pushes go to the logging provider)\n\n", line, url)
	fmt.Fprintf(w, "Demo credentials for this machine (kept in %s):\n", statePath)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  admin token\t%s\n  application\t%s (%s)\n  application secret\t%s\n  demo user\t%s\n",
		st.AdminToken, demoAppName, st.AppID, st.AppSecret, demoUser)
	_ = tw.Flush()
	fmt.Fprintf(w, "\nTry it (in another terminal, from this directory):\n  export MFACTL_URL=%s MFACTL_TOKEN=%s\n", url, st.AdminToken)
	bearer := "-H 'Authorization: Bearer " + st.AppSecret + "'"
	steps := []struct {
		title string
		cmds  [][2]string
	}{
		{"Enroll a phone for %s (the reference authenticator keeps its key in %s):", [][2]string{
			{"./bin/mfactl device enroll '" + enrollURI + "' --push-provider apns --push-token demo-apns-token --state " + deviceFile,
				"enroll (the URI is single-use); its pushes go to the server's log"},
			{"./bin/mfactl device info --state " + deviceFile, "the device, signed with its key"},
		}},
		{"Sign in: the relying party asks, the phone approves, the relying party learns it:", [][2]string{
			{"curl -s " + bearer + " -H 'Content-Type: application/json' -d '{\"user\":\"" + demoUser +
				"\",\"context\":{\"ip\":\"203.0.113.7\",\"browser\":\"curl\"}}' " + url + "/v1/challenges",
				"prints the challenge's \"id\" and the \"number\" the sign-in page shows; the server logs the push"},
			{"./bin/mfactl device pending --state " + deviceFile, "the phone sees the request (never the number)"},
			{"./bin/mfactl device approve ID --number N --state " + deviceFile, "ID and N from the first command"},
			{"curl -s " + bearer + " '" + url + "/v1/challenges/ID?wait=25s'", "long-poll: \"state\": \"approved\""},
		}},
		{"Lose the phone:", [][2]string{
			{"./bin/mfactl users devices " + demoUser, "the admin's view"},
			{"./bin/mfactl devices revoke \"$(./bin/mfactl device id --state " + deviceFile + ")\" --reason lost", "the phone is lost"},
			{"./bin/mfactl device info --state " + deviceFile, "refused: device_revoked"},
			{"./bin/mfactl users enroll " + demoUser, "a new URI for the next phone"},
		}},
		{"Administer:", [][2]string{
			{`./bin/mfactl apps create "My VPN"`, "a relying party and its secret"},
			{"./bin/mfactl users list", "the tenant's users"},
			{"./bin/mfactl policy get", "the tenant's policy"},
			{"./bin/mfactl audit list", "what happened, hash-chained"},
			{"./bin/mfactl audit verify", "check the chain"},
		}},
	}
	for i, step := range steps {
		title := step.title
		if i == 0 {
			title = fmt.Sprintf(title, demoUser, deviceFile)
		}
		fmt.Fprintf(w, "\n%s\n", title)
		for _, c := range step.cmds {
			fmt.Fprintf(w, "  # %s\n  %s\n", c[1], c[0])
		}
	}
	fmt.Fprintf(w, "\nAPI reference: %s/openapi.json   Stop with Ctrl-C.\n%s\n", url, line)
}
