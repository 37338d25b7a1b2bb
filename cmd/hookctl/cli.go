package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// DefaultURL is where hookctl finds the API when HOOKLINE_URL is unset.
const DefaultURL = "http://127.0.0.1:8080"

// app holds the global settings of one hookctl run.
type app struct {
	getenv  func(string) string
	stdout  io.Writer
	stderr  io.Writer
	baseURL string
	token   string
	tenant  string
	output  string
	timeout time.Duration
	// poll is how often `replay --wait` asks for progress.
	poll time.Duration
	// now is the clock for --since durations.
	now func() time.Time
	// terminal reports whether a writer is a terminal (live progress bar).
	terminal func(io.Writer) bool
}

func (a *app) client() *client {
	return &client{baseURL: a.baseURL, token: a.token, http: &http.Client{Timeout: a.timeout}}
}

func (a *app) json() bool { return a.output == "json" }

// tenantPath returns /v1/tenants/{tenant} + suffix, or an error without a tenant.
func (a *app) tenantPath(suffix string) (string, error) {
	if a.tenant == "" {
		return "", errors.New("no tenant: pass --tenant or set HOOKLINE_TENANT")
	}
	return "/v1/tenants/" + url.PathEscape(a.tenant) + suffix, nil
}

func newRootCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	a := &app{getenv: getenv, stdout: stdout, stderr: stderr, poll: 500 * time.Millisecond, now: time.Now, terminal: isTerminal}
	root := &cobra.Command{
		Use:   "hookctl",
		Short: "Manage a Hookline webhook platform through its HTTP API",
		Long: `hookctl manages a Hookline installation through its HTTP API.

It talks to HOOKLINE_URL (default ` + DefaultURL + `) with the bearer token in
HOOKLINE_TOKEN (the admin token or a tenant API key). Tenant-scoped commands
need --tenant or HOOKLINE_TENANT.

Exit status: 0 on success, 1 on any error, with the API problem's detail
(and the fields at fault) on stderr.

Shell completion (cobra's): load it for the current shell with
  source <(hookctl completion bash)      # bash (needs bash-completion)
  source <(hookctl completion zsh)       # zsh
  hookctl completion fish | source       # fish
and see "hookctl completion --help" to install it for good.`,
		Example: `  export HOOKLINE_TOKEN=... HOOKLINE_TENANT=acme
  hookctl endpoints create --url https://example.com/hooks --event-type 'order.*'
  hookctl events send --type order.created --data '{"id": 42}'
  hookctl dead-letters list --since 2h
  hookctl replay --reason exhausted --dry-run`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if a.output != "table" && a.output != "json" {
				return fmt.Errorf("invalid --output %q (want table or json)", a.output)
			}
			if a.token == "" {
				a.token = getenv("HOOKLINE_TOKEN") // not a flag default: help would print it
			}
			if _, err := url.ParseRequestURI(a.baseURL); err != nil {
				return fmt.Errorf("invalid --url %q", a.baseURL)
			}
			return nil
		},
	}
	envOr := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.baseURL, "url", envOr("HOOKLINE_URL", DefaultURL), "base URL of the Hookline API (env HOOKLINE_URL)")
	pf.StringVar(&a.token, "token", "", "bearer token: the admin token or a tenant API key (env HOOKLINE_TOKEN)")
	pf.StringVar(&a.tenant, "tenant", getenv("HOOKLINE_TENANT"), "tenant to act in (env HOOKLINE_TENANT)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "timeout of each HTTP request")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(a.tenantsCmd(), a.apiKeysCmd(), a.endpointsCmd(), a.eventsCmd(), a.deadLettersCmd(), a.replayCmd(), a.sourcesCmd())
	root.AddCommand(a.replaysCmd())
	addExamples(root)
	return root
}

// show prints one object.
func (a *app) show(raw json.RawMessage, cs []column) error {
	if a.json() {
		return printJSON(a.stdout, raw)
	}
	o, err := decodeObject(raw)
	if err != nil {
		return err
	}
	return printFields(a.stdout, cs, o)
}

// list GETs one page of a list and prints its items.
func (a *app) list(ctx context.Context, path string, q url.Values, limit int, cs []column) error {
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	raw, err := a.client().do(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	var page listPage
	if err := json.Unmarshal(raw, &page); err != nil {
		return fmt.Errorf("decode list: %w", err)
	}
	if len(page.Data) == 0 {
		page.Data = json.RawMessage("[]")
	}
	if a.json() {
		return printJSON(a.stdout, page.Data)
	}
	items, err := decodeObjects(page.Data)
	if err != nil {
		return err
	}
	if err := printTable(a.stdout, cs, items); err != nil {
		return err
	}
	if page.NextCursor != nil {
		fmt.Fprintf(a.stderr, "(more results: raise --limit, up to 500)\n")
	}
	return nil
}

// done prints a confirmation in table mode; -o json prints nothing for a
// 204 answer.
func (a *app) done(msg string) {
	if !a.json() {
		fmt.Fprintln(a.stdout, msg)
	}
}

var (
	tenantCols     = cols("ID=id", "NAME=name", "CREATED=created_at")
	keyCols        = cols("ID=id", "NAME=name", "CREATED=created_at", "REVOKED=revoked_at")
	newKeyCols     = cols("ID=id", "NAME=name", "TOKEN=token")
	endpointCols   = cols("ID=id", "URL=url", "EVENT TYPES=event_types", "ORDERING=ordering", "DISABLED=disabled", "DESCRIPTION=description")
	endpointFields = cols("ID=id", "URL=url", "DESCRIPTION=description", "EVENT TYPES=event_types", "FILTER=filter",
		"ORDERING=ordering", "TIMEOUT MS=timeout_ms", "RETRY SCHEDULE=retry_schedule", "RATE LIMIT=rate_limit",
		"DISABLED=disabled", "PROPAGATE TRACE=propagate_trace", "SECRET=secret", "HEALTH=health")
	eventCols      = cols("ID=id", "TYPE=type", "ORDERING KEY=ordering_key", "ACCEPTED=accepted_at")
	sentCols       = cols("ID=id", "TYPE=type", "ACCEPTED=accepted_at", "DUPLICATE=duplicate")
	eventDelivCols = cols("ENDPOINT=endpoint_id", "STATUS=status", "ATTEMPTS=attempts", "LAST STATUS=last_status_code",
		"LAST ERROR=last_error", "DELIVERED=delivered_at")
	deadCols = cols("ID=id", "EVENT=event_id", "ENDPOINT=endpoint_id", "TYPE=event_type", "REASON=reason",
		"ATTEMPTS=attempts", "LAST STATUS=last_status_code", "DEAD AT=dead_at", "REPLAYS=replays")
	deadFields = cols("ID=id", "EVENT=event_id", "ENDPOINT=endpoint_id", "TYPE=event_type", "ORDERING KEY=ordering_key",
		"REASON=reason", "ATTEMPTS=attempts", "LAST STATUS=last_status_code", "LAST ERROR=last_error",
		"DEAD AT=dead_at", "REPLAYS=replays", "RESOLVED AT=resolved_at")
	attemptCols = cols("ATTEMPT=attempt", "STARTED=started_at", "DURATION MS=duration_ms", "STATUS=status_code",
		"ERROR=error", "SUCCEEDED=succeeded")
)

func (a *app) tenantsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Manage tenants (admin token only)", Aliases: []string{"tenant"}}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List tenants", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return a.list(c.Context(), "/v1/tenants", url.Values{}, 0, tenantCols)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "get ID", Short: "Show a tenant", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			raw, err := a.client().do(c.Context(), http.MethodGet, "/v1/tenants/"+url.PathEscape(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return a.show(raw, tenantCols)
		},
	})
	var id, name string
	create := &cobra.Command{
		Use: "create --id ID --name NAME", Short: "Create a tenant", Args: cobra.NoArgs,
		Example: `  hookctl tenants create --id acme --name "Acme Inc"`,
		RunE: func(c *cobra.Command, _ []string) error {
			raw, err := a.client().do(c.Context(), http.MethodPost, "/v1/tenants", nil, map[string]string{"id": id, "name": name})
			if err != nil {
				return err
			}
			return a.show(raw, tenantCols)
		},
	}
	create.Flags().StringVar(&id, "id", "", "tenant id ([a-z0-9][a-z0-9_-]{0,62})")
	create.Flags().StringVar(&name, "name", "", "display name")
	_ = create.MarkFlagRequired("id")
	cmd.AddCommand(create)
	cmd.AddCommand(&cobra.Command{
		Use: "delete ID", Short: "Delete a tenant and everything in it", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := a.client().do(c.Context(), http.MethodDelete, "/v1/tenants/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			a.done("tenant " + args[0] + " deleted")
			return nil
		},
	})
	return cmd
}

func (a *app) apiKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "api-keys", Short: "Manage a tenant's API keys (admin token only)", Aliases: []string{"api-key", "keys"}}
	var name string
	create := &cobra.Command{
		Use: "create --name NAME", Short: "Create an API key; its token is shown only once", Args: cobra.NoArgs,
		Example: `  hookctl --tenant acme api-keys create --name ci`,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/api-keys")
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, map[string]string{"name": name})
			if err != nil {
				return err
			}
			return a.show(raw, newKeyCols)
		},
	}
	create.Flags().StringVar(&name, "name", "", "a name for the key")
	cmd.AddCommand(create)
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List API keys (without tokens)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/api-keys")
			if err != nil {
				return err
			}
			return a.list(c.Context(), path, url.Values{}, 0, keyCols)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "revoke ID", Short: "Revoke an API key at once", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/api-keys/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			if _, err := a.client().do(c.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			a.done("API key " + args[0] + " revoked")
			return nil
		},
	})
	return cmd
}

func (a *app) endpointsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "endpoints", Short: "Manage a tenant's endpoints", Aliases: []string{"endpoint", "ep"}}
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List endpoints", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/endpoints")
			if err != nil {
				return err
			}
			return a.list(c.Context(), path, url.Values{}, limit, endpointCols)
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "most items to show (API default 50, at most 500)")
	cmd.AddCommand(list)
	cmd.AddCommand(&cobra.Command{
		Use: "get ID", Short: "Show an endpoint with its secret and health", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/endpoints/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			return a.show(raw, endpointFields)
		},
	})
	var (
		epURL, description string
		eventTypes         []string
	)
	create := &cobra.Command{
		Use: "create --url URL [--event-type TYPE ...] [--description TEXT]", Short: "Create an endpoint", Args: cobra.NoArgs,
		Example: `  hookctl endpoints create --url https://example.com/hooks --event-type 'order.*' --event-type user.deleted`,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/endpoints")
			if err != nil {
				return err
			}
			body := map[string]any{"url": epURL}
			if len(eventTypes) > 0 {
				body["event_types"] = eventTypes
			}
			if c.Flags().Changed("description") {
				body["description"] = description
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, body)
			if err != nil {
				return err
			}
			return a.show(raw, endpointFields)
		},
	}
	create.Flags().StringVar(&epURL, "url", "", "http or https URL to deliver to")
	create.Flags().StringArrayVar(&eventTypes, "event-type", nil, "event type to receive (repeatable; none: all)")
	create.Flags().StringVar(&description, "description", "", "free text")
	_ = create.MarkFlagRequired("url")
	cmd.AddCommand(create)
	cmd.AddCommand(&cobra.Command{
		Use: "delete ID", Short: "Delete an endpoint", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/endpoints/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			if _, err := a.client().do(c.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			a.done("endpoint " + args[0] + " deleted")
			return nil
		},
	})
	return cmd
}

func (a *app) eventsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Send and inspect events", Aliases: []string{"event"}}
	var typ, data, id, key string
	send := &cobra.Command{
		Use: "send --type TYPE --data JSON [--id ID] [--ordering-key KEY]", Short: "Send an event", Args: cobra.NoArgs,
		Example: `  hookctl events send --type order.created --data '{"amount": 100}' --ordering-key customer-42`,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/events")
			if err != nil {
				return err
			}
			if !json.Valid([]byte(data)) {
				return errors.New("--data is not valid JSON")
			}
			body := map[string]any{"type": typ, "data": json.RawMessage(data)}
			if id != "" {
				body["id"] = id
			}
			if key != "" {
				body["ordering_key"] = key
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, body)
			if err != nil {
				return err
			}
			return a.show(raw, sentCols)
		},
	}
	send.Flags().StringVar(&typ, "type", "", "event type, e.g. order.created")
	send.Flags().StringVar(&data, "data", "", "event payload (JSON)")
	send.Flags().StringVar(&id, "id", "", "event id (also the webhook-id); generated when empty")
	send.Flags().StringVar(&key, "ordering-key", "", "events sharing a key are delivered in order")
	_ = send.MarkFlagRequired("type")
	_ = send.MarkFlagRequired("data")
	cmd.AddCommand(send)

	cmd.AddCommand(&cobra.Command{
		Use: "get ID", Short: "Show an event and its deliveries", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/events/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			o, err := decodeObject(raw)
			if err != nil {
				return err
			}
			if err := printFields(a.stdout, append(eventCols, cols("DATA=data")...), o); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout)
			return printTable(a.stdout, eventDelivCols, objects(o["deliveries"]))
		},
	})
	var since, until string
	var limit int
	list := &cobra.Command{
		Use: "list [--type TYPE] [--since 2h] [--until TIME]", Short: "List events, newest first", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/events")
			if err != nil {
				return err
			}
			q := url.Values{}
			if typ != "" {
				q.Set("type", typ)
			}
			if err := a.setTime(q, "since", since); err != nil {
				return err
			}
			if err := a.setTime(q, "until", until); err != nil {
				return err
			}
			return a.list(c.Context(), path, q, limit, eventCols)
		},
	}
	list.Flags().StringVar(&typ, "type", "", "only events of this type")
	list.Flags().StringVar(&since, "since", "", "only events accepted since: a duration back from now (2h, 7d) or an RFC 3339 time")
	list.Flags().StringVar(&until, "until", "", "only events accepted before: a duration back from now or an RFC 3339 time")
	list.Flags().IntVar(&limit, "limit", 0, "most items to show (API default 50, at most 500)")
	cmd.AddCommand(list)
	return cmd
}

func objects(v any) []map[string]any {
	arr, _ := v.([]any)
	out := make([]map[string]any, 0, len(arr))
	for _, e := range arr {
		if o, ok := e.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}

// parseSince reads a duration back from now ("2h", "30m", "7d") or an
// RFC 3339 time and returns the time in RFC 3339, UTC.
func parseSince(v string, now time.Time) (string, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC().Format(time.RFC3339Nano), nil
	}
	d, err := time.ParseDuration(v)
	if days, ok := strings.CutSuffix(v, "d"); ok && err != nil {
		n, nerr := strconv.ParseFloat(days, 64)
		if nerr == nil {
			d, err = time.Duration(n*24*float64(time.Hour)), nil
		}
	}
	if err != nil || d < 0 {
		return "", fmt.Errorf("invalid time %q (want a duration such as 2h or 7d, or an RFC 3339 time)", v)
	}
	return now.Add(-d).UTC().Format(time.RFC3339), nil
}

func (a *app) setTime(q url.Values, name, v string) error {
	if v == "" {
		return nil
	}
	t, err := parseSince(v, a.now())
	if err != nil {
		return fmt.Errorf("--%s: %w", name, err)
	}
	q.Set(name, t)
	return nil
}

// deadFilter is the dead-letter selection shared by `dead-letters list` and
// `replay`.
type deadFilter struct {
	endpoint, typ, reason, since, until string
	includeResolved                     bool
}

func (f *deadFilter) flags(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.endpoint, "endpoint", "", "only dead letters of this endpoint id")
	fl.StringVar(&f.typ, "type", "", "only dead letters of this event type")
	fl.StringVar(&f.reason, "reason", "", "only this reason: exhausted, non_retryable_status, endpoint_disabled, endpoint_deleted, destination_blocked, expired")
	fl.StringVar(&f.since, "since", "", "only dead since: a duration back from now (2h, 7d) or an RFC 3339 time")
	fl.StringVar(&f.until, "until", "", "only dead before: a duration back from now or an RFC 3339 time")
	fl.BoolVar(&f.includeResolved, "include-resolved", false, "include dead letters a replay has since delivered")
	_ = c.RegisterFlagCompletionFunc("reason", cobra.FixedCompletions([]string{
		"exhausted", "non_retryable_status", "endpoint_disabled", "endpoint_deleted", "destination_blocked", "expired",
	}, cobra.ShellCompDirectiveNoFileComp))
}

func (a *app) deadLettersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dead-letters", Short: "Inspect and discard dead letters", Aliases: []string{"dead-letter", "dl"}}
	var f deadFilter
	var limit int
	list := &cobra.Command{
		Use: "list [--endpoint E] [--type T] [--reason R] [--since 2h]", Short: "List dead letters, newest first", Args: cobra.NoArgs,
		Example: `  hookctl dead-letters list --since 2h --reason exhausted
  hookctl dead-letters list --endpoint ep_01J... -o json`,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/dead-letters")
			if err != nil {
				return err
			}
			q := url.Values{}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("endpoint_id", f.endpoint)
			set("event_type", f.typ)
			set("reason", f.reason)
			if f.includeResolved {
				q.Set("include_resolved", "true")
			}
			if err := a.setTime(q, "since", f.since); err != nil {
				return err
			}
			if err := a.setTime(q, "until", f.until); err != nil {
				return err
			}
			return a.list(c.Context(), path, q, limit, deadCols)
		},
	}
	f.flags(list)
	list.Flags().IntVar(&limit, "limit", 0, "most items to show (API default 50, at most 500)")
	cmd.AddCommand(list)

	cmd.AddCommand(&cobra.Command{
		Use: "show ID", Short: "Show a dead letter with its payload and attempt history", Args: cobra.ExactArgs(1),
		Aliases: []string{"get"},
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/dead-letters/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			o, err := decodeObject(raw)
			if err != nil {
				return err
			}
			if err := printFields(a.stdout, append(deadFields, cols("DATA=data")...), o); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "\nATTEMPT HISTORY")
			return printTable(a.stdout, attemptCols, objects(o["attempt_history"]))
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "discard ID", Short: "Discard a dead letter", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/dead-letters/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			if _, err := a.client().do(c.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			a.done("dead letter " + args[0] + " discarded")
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "replay ID", Short: "Replay one dead letter", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/dead-letters/" + url.PathEscape(args[0]) + "/replay")
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, nil)
			if err != nil {
				return err
			}
			return a.show(raw, cols("REPLAY=replay_id"))
		},
	})
	return cmd
}

func (a *app) replayCmd() *cobra.Command {
	var (
		f      deadFilter
		rate   int
		dryRun bool
		wait   bool
	)
	cmd := &cobra.Command{
		Use:   "replay [--endpoint E] [--type T] [--reason R] [--since 2h] [--until TIME] [--rate 50] [--dry-run] [--wait]",
		Short: "Replay the dead letters that match a filter",
		Long: `replay queues every matching dead letter again, as a new delivery of the
same event to the same endpoint, at most --rate per second. --dry-run only
counts them; --wait follows the replay until it is finished.`,
		Example: `  hookctl replay --reason exhausted --since 2h --dry-run
  hookctl replay --endpoint ep_01J... --rate 10 --wait`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/replays")
			if err != nil {
				return err
			}
			filter := map[string]any{}
			set := func(k, v string) {
				if v != "" {
					filter[k] = v
				}
			}
			set("endpoint_id", f.endpoint)
			set("event_type", f.typ)
			set("reason", f.reason)
			now := a.now()
			for _, t := range []struct{ name, v string }{{"since", f.since}, {"until", f.until}} {
				if t.v == "" {
					continue
				}
				s, err := parseSince(t.v, now)
				if err != nil {
					return fmt.Errorf("--%s: %w", t.name, err)
				}
				filter[t.name] = s
			}
			if f.includeResolved {
				filter["include_resolved"] = true
			}
			body := map[string]any{"filter": filter, "rate_per_second": rate}
			if dryRun {
				body["dry_run"] = true
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, body)
			if err != nil {
				return err
			}
			var rp struct {
				ID      string `json:"id"`
				State   string `json:"state"`
				Matched int    `json:"matched"`
			}
			if err := json.Unmarshal(raw, &rp); err != nil {
				return fmt.Errorf("decode replay: %w", err)
			}
			if !wait || dryRun {
				if a.json() {
					return printJSON(a.stdout, raw)
				}
				fmt.Fprintf(a.stdout, "%d dead letters match\n", rp.Matched)
				if !dryRun {
					fmt.Fprintf(a.stdout, "replay %s %s\n", rp.ID, rp.State)
				}
				return nil
			}
			progress := a.stdout
			if a.json() {
				progress = a.stderr
			} else {
				fmt.Fprintf(a.stdout, "%d dead letters match\n", rp.Matched)
			}
			return a.waitReplay(c.Context(), path+"/"+url.PathEscape(rp.ID), progress)
		},
	}
	f.flags(cmd)
	cmd.Flags().IntVar(&rate, "rate", 50, "most dead letters queued per second")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only count the matching dead letters")
	cmd.Flags().BoolVar(&wait, "wait", false, "show progress until the replay is finished")
	return cmd
}

// waitReplay polls a replay until it is finished, showing its progress (a
// live bar on a terminal, a line per change otherwise); -o json then prints
// the final replay object on stdout.
func (a *app) waitReplay(ctx context.Context, path string, progress io.Writer) error {
	view := newProgressView(progress, a.terminal(progress))
	for {
		raw, err := a.client().do(ctx, http.MethodGet, path, nil, nil)
		if err != nil {
			return err
		}
		var rp replayProgress
		if err := json.Unmarshal(raw, &rp); err != nil {
			return fmt.Errorf("decode replay: %w", err)
		}
		switch rp.State {
		case "done":
			view.finish(rp)
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			return nil
		case "cancelled", "failed":
			view.finish(rp)
			if a.json() {
				if err := printJSON(a.stdout, raw); err != nil {
					return err
				}
			}
			return fmt.Errorf("replay %s %s", rp.ID, rp.State)
		}
		view.update(rp)
		t := time.NewTimer(a.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
