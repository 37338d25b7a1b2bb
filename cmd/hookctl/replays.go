package main

import (
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
)

var replayFields = cols("ID=id", "STATE=state", "MATCHED=matched", "REPLAYED=replayed", "SUCCEEDED=succeeded",
	"FAILED=failed", "RATE=rate_per_second", "FILTER=filter", "CREATED BY=created_by", "CREATED=created_at",
	"FINISHED=finished_at")

var replayCols = cols("ID=id", "STATE=state", "MATCHED=matched", "REPLAYED=replayed", "SUCCEEDED=succeeded",
	"FAILED=failed", "CREATED BY=created_by", "CREATED=created_at")

// replaysCmd follows and cancels replays, and lists who started them.
func (a *app) replaysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "replays", Short: "List, follow and cancel replays (and see who started them)"}
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List replays, newest first, with who created each", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/replays")
			if err != nil {
				return err
			}
			return a.list(c.Context(), path, url.Values{}, limit, replayCols)
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "most items to show (API default 50, at most 500)")
	cmd.AddCommand(list)
	cmd.AddCommand(&cobra.Command{
		Use: "show ID", Short: "Show a replay's progress", Args: cobra.ExactArgs(1), Aliases: []string{"get"},
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/replays/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			return a.show(raw, replayFields)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "wait ID", Short: "Show a replay's progress until it is finished", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/replays/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			progress := a.stdout
			if a.json() {
				progress = a.stderr
			}
			return a.waitReplay(c.Context(), path, progress)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "cancel ID", Short: "Cancel a running replay; nothing more is sent after it answers", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/replays/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodDelete, path, nil, nil)
			if err != nil {
				return err
			}
			return a.show(raw, replayFields)
		},
	})
	return cmd
}

// examples are the --help examples of the commands that do not set their
// own, by command path.
var examples = map[string]string{
	"hookctl tenants":              "  hookctl tenants list\n  hookctl tenants create --id acme --name \"Acme Inc\"",
	"hookctl tenants list":         "  hookctl tenants list -o json",
	"hookctl tenants get":          "  hookctl tenants get acme",
	"hookctl tenants delete":       "  hookctl tenants delete acme",
	"hookctl api-keys":             "  hookctl --tenant acme api-keys create --name ci\n  hookctl --tenant acme api-keys list",
	"hookctl api-keys list":        "  hookctl --tenant acme api-keys list",
	"hookctl api-keys revoke":      "  hookctl --tenant acme api-keys revoke key_01J...",
	"hookctl endpoints":            "  hookctl endpoints list\n  hookctl endpoints create --url https://example.com/hooks --event-type 'order.*'",
	"hookctl endpoints list":       "  hookctl endpoints list --limit 100 -o json",
	"hookctl endpoints get":        "  hookctl endpoints get ep_01J...",
	"hookctl endpoints delete":     "  hookctl endpoints delete ep_01J...",
	"hookctl events":               "  hookctl events send --type order.created --data '{\"id\": 42}'\n  hookctl events list --type order.created --since 1h",
	"hookctl events get":           "  hookctl events get evt_01J...",
	"hookctl events list":          "  hookctl events list --type order.created --since 2h\n  hookctl events list --since 2026-11-22T10:00:00Z --until 1h -o json",
	"hookctl dead-letters":         "  hookctl dead-letters list --since 2h\n  hookctl dead-letters show dl_01J...",
	"hookctl dead-letters show":    "  hookctl dead-letters show dl_01J...\n  hookctl dead-letters show dl_01J... -o json",
	"hookctl dead-letters discard": "  hookctl dead-letters discard dl_01J...",
	"hookctl dead-letters replay":  "  hookctl dead-letters replay dl_01J...\n  hookctl replays wait rpl_01J...",
	"hookctl replays":              "  hookctl replays list\n  hookctl replays cancel rpl_01J...",
	"hookctl replays list":         "  hookctl replays list --limit 10 -o json",
	"hookctl replays show":         "  hookctl replays show rpl_01J...",
	"hookctl replays wait":         "  hookctl replays wait rpl_01J...",
	"hookctl replays cancel":       "  hookctl replays cancel rpl_01J...",
}

// addExamples sets the examples above on the commands under root.
func addExamples(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Example == "" {
			c.Example = examples[c.CommandPath()]
		}
		addExamples(c)
	}
}
