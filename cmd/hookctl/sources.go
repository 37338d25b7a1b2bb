package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

var (
	sourceCols   = cols("ID=id", "NAME=name", "VERIFIER=verifier_kind", "EVENT TYPE=event_type_rule", "FILTER=filter", "CREATED=created_at")
	sourceFields = cols("ID=id", "NAME=name", "INGEST URL=ingest_url", "VERIFIER=verifier", "SECRET SET=secret_set",
		"PREVIOUS SECRET EXPIRES=previous_secret_expires_at", "EVENT TYPE=event_type_rule", "ORDERING KEY=ordering_key_rule",
		"EVENT ID=event_id_rule", "FILTER=filter", "FORMAT=format", "CREATED=created_at", "UPDATED=updated_at")
	rejectCols = cols("ID=id", "REASON=reason", "DETAIL=detail", "EVENT ID=event_id", "SIZE=size_bytes", "RECEIVED=received_at")
)

// describeSource adds the flattened columns tables show.
func describeSource(o map[string]any) map[string]any {
	if v, ok := o["verifier"].(map[string]any); ok {
		o["verifier_kind"] = v["kind"]
	}
	m, _ := o["mapping"].(map[string]any)
	for _, k := range []string{"event_type", "ordering_key", "event_id"} {
		o[k+"_rule"] = ruleText(m[k])
	}
	return o
}

// ruleText renders a mapping rule the way --type takes it.
func ruleText(v any) any {
	r, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	for _, k := range []string{"header", "value", "expression"} {
		if s, ok := r[k].(string); ok && s != "" {
			if k == "expression" {
				k = "expr"
			}
			return k + ":" + s
		}
	}
	return nil
}

// parseRule reads a mapping rule flag: header:NAME, value:TEXT or expr:CEL.
func parseRule(flag, s string) (map[string]string, error) {
	kind, v, ok := strings.Cut(s, ":")
	if ok && v != "" {
		switch kind {
		case "header", "value":
			return map[string]string{kind: v}, nil
		case "expr", "expression":
			return map[string]string{"expression": v}, nil
		}
	}
	return nil, fmt.Errorf("--%s %q: want header:NAME, value:TEXT or expr:CEL", flag, s)
}

func (a *app) sourcesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sources", Short: "Manage inbound webhook sources", Aliases: []string{"source", "src"},
		Long: `A source receives third-party webhooks (GitHub, Stripe, Standard Webhooks, any
HMAC-signed sender) at its ingest URL, verifies them and turns them into events.`}
	showSource := func(raw json.RawMessage) error {
		if a.json() {
			return printJSON(a.stdout, raw)
		}
		o, err := decodeObject(raw)
		if err != nil {
			return err
		}
		if err := printFields(a.stdout, sourceFields, describeSource(o)); err != nil {
			return err
		}
		if u, ok := o["ingest_url"].(string); ok && u != "" {
			fmt.Fprintln(a.stderr, "The ingest URL is shown only now; keep it secret (rotate it with `hookctl sources rotate-token`).")
		}
		return nil
	}

	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List sources", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/sources")
			if err != nil {
				return err
			}
			q := url.Values{}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			raw, err := a.client().do(c.Context(), http.MethodGet, path, q, nil)
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
			for _, o := range items {
				describeSource(o)
			}
			if err := printTable(a.stdout, sourceCols, items); err != nil {
				return err
			}
			if page.NextCursor != nil {
				fmt.Fprintf(a.stderr, "(more results: raise --limit, up to 500)\n")
			}
			return nil
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "most items to show (API default 50, at most 500)")
	cmd.AddCommand(list)

	cmd.AddCommand(&cobra.Command{
		Use: "get ID", Short: "Show a source (secrets and the ingest URL are not shown again)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/sources/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			return showSource(raw)
		},
	})

	var (
		name, kind, secret, username, header, algorithm, encoding, prefix  string
		signedContent, tsHeader, typeRule, keyRule, idRule, filter, format string
		tolerance                                                          int
	)
	create := &cobra.Command{
		Use:   "create --name NAME --verifier KIND [--secret S] [--type RULE] [--ordering-key RULE] [--filter CEL]",
		Short: "Create a source; prints its ingest URL once",
		Args:  cobra.NoArgs,
		Example: `  hookctl sources create --name github --verifier github --secret "$GITHUB_WEBHOOK_SECRET" \
    --type 'expr:"github." + headers["x-github-event"]' --ordering-key 'expr:body.repository.full_name'
  hookctl sources create --name stripe --verifier stripe --secret whsec_...
  hookctl sources create --name forms --verifier hmac --secret s3cret --header X-Signature \
    --prefix sha256= --type value:form.submitted`,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.tenantPath("/sources")
			if err != nil {
				return err
			}
			v := map[string]any{"kind": kind}
			set := func(flag, key, val string) {
				if c.Flags().Changed(flag) {
					v[key] = val
				}
			}
			set("secret", "secret", secret)
			set("username", "username", username)
			set("header", "header", header)
			set("algorithm", "algorithm", algorithm)
			set("encoding", "encoding", encoding)
			set("prefix", "prefix", prefix)
			set("signed-content", "signed_content", signedContent)
			set("timestamp-header", "timestamp_header", tsHeader)
			if c.Flags().Changed("tolerance") {
				v["tolerance_seconds"] = tolerance
			}
			body := map[string]any{"name": name, "verifier": v}
			mapping := map[string]any{}
			for _, r := range []struct{ flag, key, val string }{
				{"type", "event_type", typeRule}, {"ordering-key", "ordering_key", keyRule}, {"event-id", "event_id", idRule},
			} {
				if !c.Flags().Changed(r.flag) {
					continue
				}
				rule, err := parseRule(r.flag, r.val)
				if err != nil {
					return err
				}
				mapping[r.key] = rule
			}
			if len(mapping) > 0 {
				body["mapping"] = mapping
			}
			if c.Flags().Changed("filter") {
				body["filter"] = filter
			}
			if c.Flags().Changed("format") {
				body["format"] = format
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, body)
			if err != nil {
				return err
			}
			return showSource(raw)
		},
	}
	f := create.Flags()
	f.StringVar(&name, "name", "", "a name for the source")
	f.StringVar(&kind, "verifier", "", "standard_webhooks, github, stripe, hmac, basic_auth, bearer or none")
	f.StringVar(&secret, "secret", "", "the verifier's secret (basic_auth: the password; bearer: the token)")
	f.StringVar(&username, "username", "", "basic_auth: the user name")
	f.StringVar(&header, "header", "", "hmac: the header carrying the signature")
	f.StringVar(&algorithm, "algorithm", "", "hmac: sha256 (default) or sha512")
	f.StringVar(&encoding, "encoding", "", "hmac: hex (default) or base64")
	f.StringVar(&prefix, "prefix", "", `hmac: text before the signature, e.g. "sha256="`)
	f.StringVar(&signedContent, "signed-content", "", `hmac: what is signed, e.g. "{timestamp}.{body}" (default "{body}")`)
	f.StringVar(&tsHeader, "timestamp-header", "", "hmac: the header holding {timestamp} (Unix seconds)")
	f.IntVar(&tolerance, "tolerance", 0, "stripe, hmac: replay window in seconds (default 300)")
	f.StringVar(&typeRule, "type", "", "event type: header:NAME, value:TEXT or expr:CEL (default for github, stripe, standard_webhooks)")
	f.StringVar(&keyRule, "ordering-key", "", "ordering key: header:NAME, value:TEXT or expr:CEL")
	f.StringVar(&idRule, "event-id", "", "event id: header:NAME, value:TEXT or expr:CEL (default: the provider's delivery id)")
	f.StringVar(&filter, "filter", "", "CEL over body and headers; false drops the request")
	f.StringVar(&format, "format", "", "body format: json (default) or form")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("verifier")
	_ = create.RegisterFlagCompletionFunc("verifier", cobra.FixedCompletions(
		[]string{"standard_webhooks", "github", "stripe", "hmac", "basic_auth", "bearer", "none"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(create)

	cmd.AddCommand(&cobra.Command{
		Use: "delete ID", Short: "Delete a source; its ingest URL answers 404 at once", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/sources/" + url.PathEscape(args[0]))
			if err != nil {
				return err
			}
			if _, err := a.client().do(c.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			a.done("source " + args[0] + " deleted")
			return nil
		},
	})

	var newSecret string
	var grace int
	rotate := &cobra.Command{
		Use: "rotate-secret ID --secret NEW [--grace 86400]", Short: "Rotate the verifier secret; both are accepted during the grace period", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/sources/" + url.PathEscape(args[0]) + "/secret/rotate")
			if err != nil {
				return err
			}
			if newSecret == "" {
				return errors.New("--secret is required: the provider's new secret")
			}
			body := map[string]any{"secret": newSecret}
			if c.Flags().Changed("grace") {
				body["grace_seconds"] = grace
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, body)
			if err != nil {
				return err
			}
			return a.show(raw, cols("PREVIOUS SECRET EXPIRES=previous_secret_expires_at"))
		},
	}
	rotate.Flags().StringVar(&newSecret, "secret", "", "the new secret")
	rotate.Flags().IntVar(&grace, "grace", 0, "seconds the old secret stays valid (API default 86400)")
	cmd.AddCommand(rotate)

	cmd.AddCommand(&cobra.Command{
		Use: "rotate-token ID", Short: "Replace the ingest URL; the old one answers 404 at once", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/sources/" + url.PathEscape(args[0]) + "/token/rotate")
			if err != nil {
				return err
			}
			raw, err := a.client().do(c.Context(), http.MethodPost, path, nil, nil)
			if err != nil {
				return err
			}
			return showSource(raw)
		},
	})

	var reason string
	var rejLimit int
	rejects := &cobra.Command{
		Use: "rejects ID [--reason R]", Short: "Requests the source refused, filtered or found duplicate, newest first", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := a.tenantPath("/sources/" + url.PathEscape(args[0]) + "/rejects")
			if err != nil {
				return err
			}
			q := url.Values{}
			if reason != "" {
				q.Set("reason", reason)
			}
			return a.list(c.Context(), path, q, rejLimit, rejectCols)
		},
	}
	rejects.Flags().StringVar(&reason, "reason", "", "only this reason, e.g. invalid_signature, filtered, duplicate")
	rejects.Flags().IntVar(&rejLimit, "limit", 0, "most items to show (API default 50, at most 500)")
	cmd.AddCommand(rejects)
	return cmd
}
