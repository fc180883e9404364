package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pushmfa/pushmfa/internal/client"
)

func (c *cli) adminCmd() *cobra.Command {
	admin := &cobra.Command{Use: "admin", Short: "Admin credentials"}
	token := &cobra.Command{Use: "token", Short: "Admin tokens"}
	var name, tenant string
	create := &cobra.Command{
		Use:   "create",
		Short: "Mint an admin token (global unless --tenant is given)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := c.client().CreateToken(cmd.Context(), name, tenant)
			if err != nil {
				return err
			}
			return c.print(k, func(w io.Writer) {
				kv(w, "id", k.ID, "name", k.Name, "tenant", k.Tenant, "global", yes(k.Global), "token", k.Token)
				shownOnce(w)
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "what the token is for (required)")
	create.Flags().StringVar(&tenant, "tenant", "", "limit the token to this tenant")
	_ = create.MarkFlagRequired("name")
	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ks, err := c.client().Tokens(cmd.Context())
			if err != nil {
				return err
			}
			return c.print(ks, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tNAME\tSCOPE\tCREATED\tLAST USED\tREVOKED")
				for _, k := range ks {
					scope := "global"
					if !k.Global {
						scope = k.Tenant
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, scope, when(&k.CreatedAt), when(k.LastUsedAt), when(k.RevokedAt))
				}
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an admin token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := c.client().RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.print(k, func(w io.Writer) { kv(w, "id", k.ID, "name", k.Name, "revoked", when(k.RevokedAt)) })
		},
	}
	token.AddCommand(create, list, revoke)
	admin.AddCommand(token)
	return admin
}

func (c *cli) tenantsCmd() *cobra.Command {
	tenants := &cobra.Command{Use: "tenants", Short: "Tenants (global admins)"}
	var name string
	create := &cobra.Command{
		Use:   "create SLUG",
		Short: "Create a tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := c.client().CreateTenant(cmd.Context(), args[0], name)
			if err != nil {
				return err
			}
			return c.print(t, func(w io.Writer) { kv(w, "id", t.ID, "slug", t.Slug, "name", t.Name) })
		},
	}
	create.Flags().StringVar(&name, "name", "", "display name (default: the slug)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ts, err := c.client().Tenants(cmd.Context())
			if err != nil {
				return err
			}
			return c.print(ts, func(w io.Writer) {
				fmt.Fprintln(w, "SLUG\tNAME\tID\tCREATED")
				for _, t := range ts {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Slug, t.Name, t.ID, when(&t.CreatedAt))
				}
			})
		},
	}
	tenants.AddCommand(create, list)
	return tenants
}

func (c *cli) policyCmd() *cobra.Command {
	pol := &cobra.Command{Use: "policy", Short: "A tenant's policy"}
	var tenant string
	printPolicy := func(p map[string]any) error {
		return c.print(p, func(w io.Writer) {
			for _, k := range policyOrder {
				kv(w, k, fmt.Sprint(p[k]))
			}
		})
	}
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := c.client().Policy(cmd.Context(), tenant)
			if err != nil {
				return err
			}
			return printPolicy(p)
		},
	}
	set := &cobra.Command{
		Use:     "set FIELD=VALUE...",
		Short:   "Change policy fields",
		Example: "  mfactl policy set challenge_ttl_seconds=90 number_matching=true",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch := map[string]json.RawMessage{}
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return fmt.Errorf("%q is not FIELD=VALUE", a)
				}
				if !json.Valid([]byte(v)) {
					return fmt.Errorf("%s: %q is not a number or true/false", k, v)
				}
				patch[k] = json.RawMessage(v)
			}
			p, err := c.client().PatchPolicy(cmd.Context(), tenant, patch)
			if err != nil {
				return err
			}
			return printPolicy(p)
		},
	}
	for _, cmd := range []*cobra.Command{get, set} {
		cmd.Flags().StringVar(&tenant, "tenant", "default", "tenant slug")
	}
	pol.AddCommand(get, set)
	return pol
}

var policyOrder = []string{"challenge_ttl_seconds", "enrollment_ttl_seconds", "number_matching", "push_enabled",
	"require_user_verification", "challenges_per_window", "challenge_window_seconds", "max_pending_challenges",
	"denial_backoff_after", "fraud_lockout_after", "totp_enabled", "totp_digits", "totp_max_attempts",
	"totp_attempt_window_seconds", "max_devices"}

func printApp(w io.Writer, a client.Application) {
	kv(w, "id", a.ID, "name", a.Name, "tenant", a.Tenant, "number matching", a.NumberMatching,
		"webhook", a.WebhookURL, "duo ikey", a.DuoIKey, "created", when(&a.CreatedAt), "secret rotated", when(a.SecretRotatedAt),
		"secret", a.Secret, "webhook secret", a.WebhookSecret, "duo skey", a.DuoSKey)
	if a.Secret != "" || a.WebhookSecret != "" || a.DuoSKey != "" {
		shownOnce(w)
	}
}

func (c *cli) appsCmd() *cobra.Command {
	apps := &cobra.Command{Use: "apps", Short: "Applications (relying parties)"}
	var in client.NewApplication
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an application; prints its secret once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in.Name = args[0]
			a, err := c.client().CreateApplication(cmd.Context(), in)
			if err != nil {
				return err
			}
			return c.print(a, func(w io.Writer) { printApp(w, a) })
		},
	}
	create.Flags().StringVar(&in.Tenant, "tenant", "", "tenant slug (default: yours)")
	create.Flags().StringVar(&in.WebhookURL, "webhook-url", "", "https URL to call when a challenge resolves")
	create.Flags().BoolVar(&in.Duo, "duo", false, "also issue Duo Auth API credentials")
	create.Flags().StringVar(&in.NumberMatching, "number-matching", "", "required, when_supported or off")

	var listTenant string
	list := &cobra.Command{
		Use:   "list",
		Short: "List applications",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			as, err := c.client().Applications(cmd.Context(), listTenant)
			if err != nil {
				return err
			}
			return c.print(as, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tTENANT\tNAME\tMATCHING\tDUO\tWEBHOOK")
				for _, a := range as {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Tenant, a.Name, a.NumberMatching, yes(a.Duo), a.WebhookURL)
				}
			})
		},
	}
	list.Flags().StringVar(&listTenant, "tenant", "", "only this tenant")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show an application",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.client().Application(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.print(a, func(w io.Writer) { printApp(w, a) })
		},
	}
	var newName, matching, webhook string
	update := &cobra.Command{
		Use:   "update ID",
		Short: "Change an application's name, number matching or webhook (--webhook-url '' removes it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p client.ApplicationPatch
			if cmd.Flags().Changed("name") {
				p.Name = &newName
			}
			if cmd.Flags().Changed("number-matching") {
				p.NumberMatching = &matching
			}
			if cmd.Flags().Changed("webhook-url") {
				p.WebhookURL = &webhook
			}
			a, err := c.client().UpdateApplication(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			return c.print(a, func(w io.Writer) { printApp(w, a) })
		},
	}
	update.Flags().StringVar(&newName, "name", "", "new name")
	update.Flags().StringVar(&matching, "number-matching", "", "required, when_supported or off")
	update.Flags().StringVar(&webhook, "webhook-url", "", "new webhook URL")
	rotate := &cobra.Command{
		Use:   "rotate-secret ID",
		Short: "Replace an application's secret (the old one stops working at once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.client().RotateSecret(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.print(a, func(w io.Writer) { printApp(w, a) })
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an application",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.client().DeleteApplication(cmd.Context(), args[0]); err != nil {
				return err
			}
			return c.print(map[string]string{"deleted": args[0]}, func(w io.Writer) { kv(w, "deleted", args[0]) })
		},
	}
	apps.AddCommand(create, list, get, update, rotate, del)
	return apps
}

func printUser(w io.Writer, u client.User) {
	kv(w, "id", u.ID, "user", u.User, "tenant", u.Tenant, "created", when(&u.CreatedAt), "locked", yes(u.Locked),
		"locked at", when(u.LockedAt), "lock reason", u.LockReason)
}

func (c *cli) usersCmd() *cobra.Command {
	users := &cobra.Command{Use: "users", Short: "Users"}
	var tenant string
	create := &cobra.Command{
		Use:   "create USER",
		Short: "Create a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := c.client().CreateUser(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) { printUser(w, u) })
		},
	}
	var limit int
	var all bool
	var cursor string
	list := &cobra.Command{
		Use:   "list",
		Short: "List users by name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var users []client.User
			next := cursor
			for {
				page, err := c.client().Users(cmd.Context(), tenant, limit, next)
				if err != nil {
					return err
				}
				users = append(users, page.Users...)
				next = page.NextCursor
				if !all || next == "" {
					break
				}
			}
			return c.print(client.UsersPage{Users: users, NextCursor: next}, func(w io.Writer) {
				fmt.Fprintln(w, "USER\tID\tLOCKED\tCREATED")
				for _, u := range users {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", u.User, u.ID, yes(u.Locked), when(&u.CreatedAt))
				}
				if next != "" {
					fmt.Fprintf(w, "\nmore: --cursor %s (or --all)\n", next)
				}
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "users per page (1 to 1000)")
	list.Flags().BoolVar(&all, "all", false, "fetch every page")
	list.Flags().StringVar(&cursor, "cursor", "", "continue from a previous page")

	get := &cobra.Command{
		Use:   "get USER",
		Short: "Show a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := c.client().User(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) { printUser(w, u) })
		},
	}
	lockCmd := func(use, short string, lock bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " USER",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				u, err := c.client().SetLocked(cmd.Context(), tenant, args[0], lock)
				if err != nil {
					return err
				}
				return c.print(u, func(w io.Writer) { printUser(w, u) })
			},
		}
	}
	devices := &cobra.Command{
		Use:   "devices USER",
		Short: "List a user's devices",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := c.client().UserDevices(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			return c.print(ds, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tNAME\tPLATFORM\tPUSH\tSTATE\tLAST SEEN\tREVOKED\tREASON")
				for _, d := range ds {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Name, d.Platform, d.PushProvider, d.State,
						when(d.LastSeenAt), when(d.RevokedAt), d.RevokeReason)
				}
			})
		},
	}
	cmds := []*cobra.Command{create, list, get, lockCmd("lock", "Lock a user's push challenges", true),
		lockCmd("unlock", "Unlock a user", false), devices, c.enrollUserCmd(&tenant)}
	for _, cmd := range cmds {
		cmd.Flags().StringVar(&tenant, "tenant", "", "tenant slug (default: yours)")
	}
	users.AddCommand(cmds...)
	return users
}

func (c *cli) auditCmd() *cobra.Command {
	auditCmd := &cobra.Command{Use: "audit", Short: "The audit log"}
	var q client.AuditQuery
	var since, until string
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit events, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if q.Since, err = parseWhen(since); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if q.Until, err = parseWhen(until); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			page, err := c.client().Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			return c.print(page, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tSEQ\tTIME\tTYPE\tACTOR\tDATA")
				for _, e := range page.Events {
					seq := "-"
					if e.Seq != nil {
						seq = fmt.Sprint(*e.Seq)
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s:%s\t%s\n", e.ID, seq, when(&e.OccurredAt), e.Type, e.Actor.Type, e.Actor.ID, e.Data)
				}
				if page.NextCursor != "" {
					fmt.Fprintf(w, "\nolder: --cursor %s\n", page.NextCursor)
				}
			})
		},
	}
	list.Flags().StringVar(&q.Tenant, "tenant", "", "tenant slug (default: yours)")
	list.Flags().StringVar(&q.User, "user", "", "only events about this user")
	list.Flags().StringVar(&q.Type, "type", "", "only events of this type (e.g. user.locked)")
	list.Flags().StringVar(&since, "since", "", "only events since (RFC 3339 time or a duration such as 24h)")
	list.Flags().StringVar(&until, "until", "", "only events before (RFC 3339 time or a duration ago)")
	list.Flags().IntVar(&q.Limit, "limit", 50, "events per page (1 to 1000)")
	list.Flags().StringVar(&q.Cursor, "cursor", "", "continue from a previous page")

	var tenant string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit hash chain; exit 1 when it is broken",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := c.client().VerifyAudit(cmd.Context(), tenant)
			if err != nil {
				return err
			}
			if err := c.print(v, func(w io.Writer) {
				kv(w, "tenant", v.Tenant, "valid", yes(v.Valid), "events", fmt.Sprint(v.Events), "unsealed", fmt.Sprint(v.Unsealed),
					"head seq", fmt.Sprint(v.HeadSeq), "head hash", v.HeadHash)
				if b := v.FirstBroken; b != nil {
					kv(w, "first broken", fmt.Sprintf("seq %d (event %d): %s", b.Seq, b.EventID, b.Reason))
				}
			}); err != nil {
				return err
			}
			if !v.Valid {
				return fmt.Errorf("%w: the audit chain of %s is broken", errFailed, v.Tenant)
			}
			return nil
		},
	}
	verify.Flags().StringVar(&tenant, "tenant", "", "tenant slug (default: yours)")
	auditCmd.AddCommand(list, verify)
	return auditCmd
}

// parseWhen takes an RFC 3339 time, or a duration meaning that long ago.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
	}
	return t, nil
}
