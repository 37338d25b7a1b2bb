// Package receiver is a small webhook receiver for trying Hookline locally:
// it prints every request it gets and, given the endpoint's secret, whether
// the Standard Webhooks signature verifies.
package receiver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/signature"
)

// Run serves on addr until ctx ends. status is the code it answers with.
func Run(ctx context.Context, addr, secret string, status int, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	fmt.Fprintf(out, "receiving webhooks on http://%s/ (answering %d)\n", ln.Addr(), status)
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		verdict := "signature not checked (pass --secret)"
		if secret != "" {
			err := signature.Verify([]string{secret}, r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"),
				r.Header.Get("webhook-signature"), body, time.Now())
			if err != nil {
				verdict = "signature INVALID: " + err.Error()
			} else {
				verdict = "signature ok"
			}
		}
		mu.Lock()
		fmt.Fprintf(out, "%s %s %s webhook-id=%s %s\n  %s\n", time.Now().Format(time.TimeOnly), r.Method, r.URL.Path,
			r.Header.Get("webhook-id"), verdict, strings.TrimSpace(string(body)))
		mu.Unlock()
		w.WriteHeader(status)
	})
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	return ops.ServeListener(ctx, ln, h, log)
}
