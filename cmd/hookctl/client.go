package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// apiError is an error answer of the API; Error returns the problem's
// detail, which is what hookctl prints.
type apiError struct {
	Status int
	Detail string
	Fields []fieldError
}

type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Detail }

// client speaks the Hookline HTTP API.
type client struct {
	baseURL string
	token   string
	http    *http.Client
}

// do sends a request and returns the response body (nil for 204). body, when
// not nil, is sent as JSON. A non-2xx answer is an *apiError.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body any) (json.RawMessage, error) {
	u := strings.TrimRight(c.baseURL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read response of %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, problemOf(resp.StatusCode, out)
	}
	if resp.StatusCode == http.StatusNoContent || len(bytes.TrimSpace(out)) == 0 {
		return nil, nil
	}
	if !json.Valid(out) {
		return nil, fmt.Errorf("%s %s: the server answered something other than JSON", method, path)
	}
	return out, nil
}

func problemOf(status int, body []byte) *apiError {
	var p struct {
		Title  string       `json:"title"`
		Detail string       `json:"detail"`
		Errors []fieldError `json:"errors"`
	}
	e := &apiError{Status: status}
	if json.Unmarshal(body, &p) == nil && (p.Detail != "" || p.Title != "") {
		e.Detail, e.Fields = p.Detail, p.Errors
		if e.Detail == "" {
			e.Detail = p.Title
		}
		return e
	}
	e.Detail = fmt.Sprintf("%d %s", status, http.StatusText(status))
	if s := strings.TrimSpace(string(body)); s != "" && len(s) < 200 {
		e.Detail += ": " + s
	}
	return e
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
