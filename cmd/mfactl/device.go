package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/client"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// defaultDeviceFile is where the reference authenticator keeps its key and
// state unless --state or MFACTL_DEVICE says otherwise.
func (c *cli) defaultDeviceFile() string {
	if p := c.env("MFACTL_DEVICE", ""); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "pushmfa-device.json"
	}
	return filepath.Join(dir, "pushmfa", "device.json")
}

func (c *cli) deviceCmd() *cobra.Command {
	dev := &cobra.Command{
		Use:   "device",
		Short: "A reference authenticator: enroll this machine as a user's device, then act as it",
		Long: "device plays an authenticator app. `device enroll URI` makes a P-256 key (kept, with the device's\n" +
			"state, in a 0600 file: --state, MFACTL_DEVICE, or the user config directory) and enrolls with the\n" +
			"server the URI names; every later call is signed by that key.",
	}
	var state string
	dev.PersistentFlags().StringVar(&state, "state", "", "the device's state file (default: MFACTL_DEVICE or the user config directory)")
	path := func() string {
		if state != "" {
			return state
		}
		return c.defaultDeviceFile()
	}
	load := func() (*authenticator.Device, error) {
		d, err := authenticator.Load(path())
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no device at %s: enroll one first (mfactl device enroll URI)", path())
		}
		return d, err
	}

	var o authenticator.EnrollOptions
	var force bool
	enroll := &cobra.Command{
		Use:   "enroll URI",
		Short: "Enroll with a pushmfa://enroll?... URI (from a QR code or the enrollment API)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(path()); err == nil && !force {
				return fmt.Errorf("%s already holds a device; use another --state, or --force to replace it", path())
			}
			d, err := authenticator.Enroll(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			if err := d.Save(path()); err != nil {
				return fmt.Errorf("enrolled as device %s but could not save it: %w", d.DeviceID, err)
			}
			return c.print(d, func(w io.Writer) {
				kv(w, "device", d.DeviceID, "server", d.Server, "name", d.Name, "state file", path())
				if d.TOTP != nil {
					kv(w, "offline codes", fmt.Sprintf("%d digits every %d s (mfactl device code)", d.TOTP.Digits, d.TOTP.Period),
						"otpauth uri", d.TOTP.URI)
				}
			})
		},
	}
	enroll.Flags().StringVar(&o.Name, "name", hostname(), "the device's display name")
	enroll.Flags().StringVar(&o.Platform, "platform", "cli", "platform (ios, android, ...)")
	enroll.Flags().StringVar(&o.PushProvider, "push-provider", "none", "apns, fcm or none (poll only)")
	enroll.Flags().StringVar(&o.PushToken, "push-token", "", "push token for apns or fcm")
	enroll.Flags().StringVar(&o.AppVersion, "app-version", "mfactl", "app version reported")
	enroll.Flags().BoolVar(&force, "force", false, "replace a device already in the state file")

	info := &cobra.Command{
		Use:   "info",
		Short: "Show this device as the server knows it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := load()
			if err != nil {
				return err
			}
			var self wire.Device
			if err := d.Call(cmd.Context(), "GET", "/v1/device", nil, &self); err != nil {
				return err
			}
			return c.print(self, func(w io.Writer) {
				kv(w, "device", self.ID, "name", self.Name, "state", self.State, "platform", self.Platform,
					"push", self.PushProvider, "last seen", when(self.LastSeenAt), "server", d.Server)
				if self.PushTokenInvalid {
					kv(w, "push token", "refused by the push service: register a new one (mfactl device push-token)")
				}
			})
		},
	}
	code := &cobra.Command{
		Use:   "code",
		Short: "Print the current offline (TOTP) code",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := load()
			if err != nil {
				return err
			}
			code, err := d.Code()
			if err != nil {
				return err
			}
			return c.print(map[string]string{"code": code}, func(w io.Writer) { fmt.Fprintln(w, code) })
		},
	}
	pushToken := &cobra.Command{
		Use:   "push-token PROVIDER [TOKEN]",
		Short: "Register a new push token (apns or fcm), or go poll-only (none)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := load()
			if err != nil {
				return err
			}
			token := ""
			if len(args) == 2 {
				token = args[1]
			}
			if err := d.SetPushToken(cmd.Context(), args[0], token); err != nil {
				return err
			}
			return c.print(map[string]string{"push_provider": args[0]}, func(w io.Writer) { kv(w, "push provider", args[0]) })
		},
	}
	remove := &cobra.Command{
		Use:   "remove",
		Short: "Deregister this device (and delete its key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := load()
			if err != nil {
				return err
			}
			if err := d.Remove(cmd.Context()); err != nil {
				return err
			}
			if err := os.Remove(path()); err != nil {
				return fmt.Errorf("deregistered, but could not delete %s: %w", path(), err)
			}
			return c.print(map[string]string{"removed": d.DeviceID}, func(w io.Writer) { kv(w, "removed", d.DeviceID) })
		},
	}
	id := &cobra.Command{
		Use:   "id",
		Short: "Print this device's id (from its state file, without asking the server)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := load()
			if err != nil {
				return err
			}
			fmt.Fprintln(c.out, d.DeviceID)
			return nil
		},
	}
	pending := &cobra.Command{
		Use:   "pending",
		Short: "List the sign-in requests waiting for an answer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := load()
			if err != nil {
				return err
			}
			cs, err := d.Pending(cmd.Context())
			if err != nil {
				return err
			}
			return c.print(cs, func(w io.Writer) {
				if len(cs) == 0 {
					fmt.Fprintln(w, "no pending sign-in requests")
					return
				}
				fmt.Fprintln(w, "ID\tAPP\tMESSAGE\tFROM\tNUMBER\tEXPIRES")
				for _, ch := range cs {
					from := ch.Context.IP
					if ch.Context.Location != "" {
						from += " (" + ch.Context.Location + ")"
					}
					number := "-"
					if ch.NumberRequired {
						number = "required"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", ch.ID, ch.Context.App, ch.Context.Message, from, number, when(&ch.ExpiresAt))
				}
			})
		},
	}
	answer := func(decision, short string) *cobra.Command {
		var number int
		var uv bool
		cmd := &cobra.Command{
			Use:   decision + " CHALLENGE_ID",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				d, err := load()
				if err != nil {
					return err
				}
				res, err := d.Respond(cmd.Context(), args[0], authenticator.Answer{Decision: decision, Number: number, UV: uv})
				if err != nil {
					return err
				}
				return c.print(res, func(w io.Writer) { kv(w, "challenge", res.ID, "state", res.State, "resolution", res.Resolution) })
			},
		}
		if decision == "approve" {
			cmd.Flags().IntVar(&number, "number", 0, "the number the sign-in page shows (when one is required)")
		}
		cmd.Flags().BoolVar(&uv, "uv", false, "claim that user verification (biometrics or PIN) happened")
		return cmd
	}
	dev.AddCommand(enroll, info, code, id, pushToken, remove, pending,
		answer("approve", "Approve a sign-in request (--number N when the sign-in page shows one)"),
		answer("deny", "Deny a sign-in request"),
		answer("fraud", "Deny a sign-in request and report it as fraud"))
	return dev
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "mfactl"
	}
	return h
}

// devicesCmd is the admin's view of devices.
func (c *cli) devicesCmd() *cobra.Command {
	devs := &cobra.Command{Use: "devices", Short: "Devices (admins)"}
	var reason string
	revoke := &cobra.Command{
		Use:   "revoke DEVICE_ID",
		Short: "Deregister a device: --reason lost, replaced or removed_by_admin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d wire.Device
			if err := c.client().Do(cmd.Context(), "POST", "/v1/admin/devices/"+args[0]+"/revoke", wire.Revoke{Reason: reason}, &d); err != nil {
				return err
			}
			return c.print(d, func(w io.Writer) {
				kv(w, "device", d.ID, "name", d.Name, "state", d.State, "reason", d.RevokeReason, "revoked", when(d.RevokedAt), "by", d.RevokedBy)
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "lost, replaced or removed_by_admin (required)")
	_ = revoke.MarkFlagRequired("reason")
	devs.AddCommand(revoke)
	return devs
}

// enrollUserCmd is `users enroll USER`: an activation made by an admin.
func (c *cli) enrollUserCmd(tenant *string) *cobra.Command {
	var ttl int
	var qrFile string
	cmd := &cobra.Command{
		Use:   "enroll USER",
		Short: "Create a one-time enrollment for a user and print its URI (and save its QR code with --qr)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{}
			if ttl > 0 {
				body["ttl_seconds"] = ttl
			}
			q := ""
			if *tenant != "" {
				q = "?tenant=" + url.QueryEscape(*tenant)
			}
			var e wire.Enrollment
			api := c.client()
			if err := api.Do(cmd.Context(), "POST", "/v1/admin/users/"+url.PathEscape(args[0])+"/enrollments"+q, body, &e); err != nil {
				return err
			}
			if qrFile != "" {
				var img []byte
				if err := api.Send(cmd.Context(), client.Request{Method: "GET", Path: e.QRPNG, Authorization: "Bearer " + api.Token}, &img); err != nil {
					return err
				}
				if err := os.WriteFile(qrFile, img, 0o600); err != nil {
					return err
				}
			}
			return c.print(e, func(w io.Writer) {
				kv(w, "enrollment", e.ID, "user", e.User, "expires", when(&e.ExpiresAt), "code", e.Code, "uri", e.URI, "qr code", qrFile)
				fmt.Fprintf(w, "\nOn the device: mfactl device enroll '%s'\n", e.URI)
			})
		},
	}
	cmd.Flags().IntVar(&ttl, "ttl", 0, "lifetime in seconds (default: the tenant's policy)")
	cmd.Flags().StringVar(&qrFile, "qr", "", "also save the QR code as a PNG file")
	return cmd
}
