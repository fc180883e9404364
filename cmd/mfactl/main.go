// Command mfactl administers a pushmfa server through its HTTP API (and never
// its database): tenants, policies, applications, users, devices, admin
// tokens and the audit log. `mfactl device` is a reference authenticator.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pushmfa/pushmfa/internal/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}

// Main runs mfactl with args and returns the exit code: 0 on success, 1 when
// the server refused or failed, 2 on a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) (string, bool)) int {
	app := &cli{out: stdout, getenv: getenv}
	root := app.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "mfactl:", err)
	var apiErr *client.Error
	if errors.As(err, &apiErr) || errors.Is(err, errFailed) {
		return 1
	}
	return 2
}

// errFailed marks a command that ran but whose outcome is a failure (an
// invalid audit chain, a server that is not ready).
var errFailed = errors.New("failed")

type cli struct {
	out    io.Writer
	getenv func(string) (string, bool)
	url    string
	token  string
	json   bool
}

func (c *cli) env(name, def string) string {
	if v, ok := c.getenv(name); ok && v != "" {
		return v
	}
	return def
}

func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "mfactl",
		Short:         "Administer a pushmfa server",
		Long:          "mfactl administers a pushmfa server through its HTTP API.\n\nThe server URL and admin token come from --url/--token or MFACTL_URL/MFACTL_TOKEN.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&c.url, "url", c.env("MFACTL_URL", "http://127.0.0.1:8080"), "server URL (MFACTL_URL)")
	root.PersistentFlags().StringVar(&c.token, "token", "", "admin token (MFACTL_TOKEN)")
	root.PersistentFlags().BoolVar(&c.json, "json", false, "print replies as JSON")
	root.AddCommand(c.statusCmd(), c.adminCmd(), c.tenantsCmd(), c.policyCmd(), c.appsCmd(), c.usersCmd(), c.auditCmd(),
		c.devicesCmd(), c.deviceCmd(), c.demoCmd())
	return root
}

// client returns an API client with the admin token.
func (c *cli) client() *client.Client {
	token := c.token
	if token == "" {
		token = c.env("MFACTL_TOKEN", "")
	}
	return client.New(c.url, token)
}

// print writes v as JSON with --json, else with the text printer.
func (c *cli) print(v any, text func(w io.Writer)) error {
	if c.json {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

// kv prints aligned "key: value" lines, skipping empty values.
func kv(w io.Writer, pairs ...string) {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			fmt.Fprintf(w, "%s:\t%s\n", pairs[i], pairs[i+1])
		}
	}
}

func when(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Check that the server is ready (exit 0) or not (exit 1)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.client().Ready(cmd.Context()); err != nil {
				return fmt.Errorf("%w: server at %s is not ready: %v", errFailed, c.url, err)
			}
			fmt.Fprintf(c.out, "server at %s is ready\n", c.url)
			return nil
		},
	}
}

// shownOnce warns that a secret is printed this one time.
func shownOnce(w io.Writer) {
	fmt.Fprintln(w, "\nSecrets above are shown this once: store them now.")
}
