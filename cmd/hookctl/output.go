package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// column is one column of a table: a header and the JSON field it shows.
type column struct {
	header string
	field  string
}

func cols(spec ...string) []column {
	out := make([]column, 0, len(spec))
	for _, s := range spec {
		h, f, _ := strings.Cut(s, "=")
		out = append(out, column{header: h, field: f})
	}
	return out
}

// printJSON pretty-prints raw.
func printJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("format JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printTable prints objects as a table with columns cs.
func printTable(w io.Writer, cs []column, objects []map[string]any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	headers := make([]string, len(cs))
	for i, c := range cs {
		headers[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, o := range objects {
		cells := make([]string, len(cs))
		for i, c := range cs {
			cells[i] = cell(o[c.field])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// printFields prints one object as "NAME  value" lines.
func printFields(w io.Writer, cs []column, o map[string]any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\n", c.header, cell(o[c.field]))
	}
	return tw.Flush()
}

// cell renders a JSON value for a table: null as "-".
func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		if v == "" {
			return `""`
		}
		return strings.ReplaceAll(v, "\n", " ")
	case json.Number:
		return v.String()
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case []any:
		if len(v) == 0 {
			return "-"
		}
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = cell(e)
		}
		return strings.Join(parts, ",")
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func decodeObject(raw json.RawMessage) (map[string]any, error) {
	var o map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	return o, nil
}

// listPage is a list answer.
type listPage struct {
	Data       json.RawMessage `json:"data"`
	NextCursor *string         `json:"next_cursor"`
}

func decodeObjects(raw json.RawMessage) ([]map[string]any, error) {
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	return out, nil
}
