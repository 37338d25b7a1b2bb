package attemptlog

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// endpointStreak is what one batch says about an endpoint's failure streak.
type endpointStreak struct {
	id, tenant  string
	lastSuccess *time.Time // newest success in the batch
	// failingSince is the oldest failure after lastSuccess (after nothing
	// when the batch has no success).
	failingSince *time.Time
	lastFailure  *time.Time
}

// streaks summarises outs per endpoint, sorted by endpoint id (the order
// concurrent writers lock endpoint_health rows in).
func streaks(outs []*hooklinev1.AttemptOutcome) []endpointStreak {
	// Times are kept as values (zero: none) while scanning, so that an
	// outcome costs no allocation; one pointer per endpoint is made at the
	// end.
	type acc struct {
		id, tenant                             string
		lastSuccess, failingSince, lastFailure time.Time
	}
	by := map[string]*acc{}
	for _, o := range outs {
		s := by[o.GetEndpointId()]
		if s == nil {
			s = &acc{id: o.GetEndpointId(), tenant: o.GetTenantId()}
			by[s.id] = s
		}
		t := o.GetStartedAt().AsTime()
		if o.GetSucceeded() {
			if s.lastSuccess.IsZero() || t.After(s.lastSuccess) {
				s.lastSuccess = t
			}
		} else if s.lastFailure.IsZero() || t.After(s.lastFailure) {
			s.lastFailure = t
		}
	}
	for _, o := range outs {
		s := by[o.GetEndpointId()]
		t := o.GetStartedAt().AsTime()
		if o.GetSucceeded() || (!s.lastSuccess.IsZero() && !t.After(s.lastSuccess)) {
			continue
		}
		if s.failingSince.IsZero() || t.Before(s.failingSince) {
			s.failingSince = t
		}
	}
	ptr := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	out := make([]endpointStreak, 0, len(by))
	for _, s := range by {
		out = append(out, endpointStreak{id: s.id, tenant: s.tenant,
			lastSuccess: ptr(s.lastSuccess), failingSince: ptr(s.failingSince), lastFailure: ptr(s.lastFailure)})
	}
	slices.SortFunc(out, func(x, y endpointStreak) int { return cmp.Compare(x.id, y.id) })
	return out
}

// failingEndpoints lists the endpoints with a failed attempt in outs.
func failingEndpoints(outs []*hooklinev1.AttemptOutcome) []string {
	var ids []string
	for _, s := range streaks(outs) {
		if s.failingSince != nil {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// storeHealth merges the batch's streaks into endpoint_health. Outcomes may
// arrive out of order (a NAKed batch comes back later), so the merge works
// on times: the newest success known ends the streak, and failing_since is
// the oldest failure known to follow it. When the stored row only knows that
// its failures ended after a newer success, its last failure stands in for
// the first (the streak looks shorter, never longer).
func storeHealth(ctx context.Context, tx pgx.Tx, outs []*hooklinev1.AttemptOutcome) error {
	ss := streaks(outs)
	var (
		ids, tenants                []string
		since, success, lastFailure []*time.Time
	)
	for _, s := range ss {
		ids = append(ids, s.id)
		tenants = append(tenants, s.tenant)
		since = append(since, s.failingSince)
		success = append(success, s.lastSuccess)
		lastFailure = append(lastFailure, s.lastFailure)
	}
	if _, err := tx.Exec(ctx, upsertHealth, ids, tenants, since, success, lastFailure); err != nil {
		return fmt.Errorf("update endpoint health: %w", err)
	}
	return nil
}

const upsertHealth = `
INSERT INTO endpoint_health AS h (endpoint_id, tenant_id, failing_since, last_success_at, last_failure_at, updated_at)
SELECT u.*, now()
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
     AS u(endpoint_id, tenant_id, failing_since, last_success_at, last_failure_at)
ORDER BY u.endpoint_id
ON CONFLICT (endpoint_id) DO UPDATE SET
    failing_since = (
        SELECT LEAST(
            CASE WHEN h.failing_since > s.at THEN h.failing_since
                 WHEN h.last_failure_at > s.at THEN h.last_failure_at END,
            CASE WHEN EXCLUDED.failing_since > s.at THEN EXCLUDED.failing_since
                 WHEN EXCLUDED.last_failure_at > s.at THEN EXCLUDED.last_failure_at END)
        FROM (SELECT COALESCE(GREATEST(h.last_success_at, EXCLUDED.last_success_at), '-infinity'::timestamptz) AS at) s),
    last_success_at = GREATEST(h.last_success_at, EXCLUDED.last_success_at),
    last_failure_at = GREATEST(h.last_failure_at, EXCLUDED.last_failure_at),
    updated_at = now()`

// autoDisable disables those of ids that have failed continuously for longer
// than AutoDisableAfter and publishes the change. The streak counts from the
// endpoint's last change at the earliest, so re-enabling (or fixing) an
// endpoint gives it a full period again.
func (w *Writer) autoDisable(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := w.db.Query(ctx, disableFailing, ids, w.AutoDisableAfter.Seconds())
	if err != nil {
		return fmt.Errorf("auto-disable failing endpoints: %w", err)
	}
	type disabled struct {
		id, tenant, reason string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (disabled, error) {
		var d disabled
		err := r.Scan(&d.id, &d.tenant, &d.reason)
		return d, err
	})
	if err != nil {
		return fmt.Errorf("auto-disable failing endpoints: %w", err)
	}
	if w.Metrics != nil {
		w.Metrics.EndpointsDisabled.WithLabelValues("failing").Add(float64(len(list)))
	}
	for _, d := range list {
		w.log.Warn("endpoint disabled: failing continuously", "endpoint_id", d.id, "tenant_id", d.tenant,
			"reason", d.reason, "after", w.AutoDisableAfter.String())
		// The row is committed; publishing it is retried a few times, and
		// ingest's SyncAll at start converges KV in any case.
		var serr error
		for i := range 3 {
			if serr = w.SyncEndpoint(ctx, d.id); serr == nil {
				break
			}
			sleep(ctx, time.Duration(i+1)*500*time.Millisecond)
		}
		if serr != nil {
			w.log.Error("publish auto-disabled endpoint", "endpoint_id", d.id, "err", serr)
		}
	}
	return nil
}

const disableFailing = `
WITH due AS (
    SELECT e.id, h.failing_since
    FROM endpoints e JOIN endpoint_health h ON h.endpoint_id = e.id
    WHERE e.id = ANY($1) AND NOT e.disabled AND e.deleted_at IS NULL
      AND h.failing_since IS NOT NULL
      AND GREATEST(h.failing_since, e.updated_at) < now() - make_interval(secs => $2)
    FOR UPDATE OF e
)
UPDATE endpoints e
SET disabled = true, disabled_at = now(),
    disabled_reason = 'failing continuously since ' ||
        to_char(due.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    version = e.version + 1, updated_at = now()
FROM due
WHERE e.id = due.id AND NOT e.disabled
RETURNING e.id, e.tenant_id, e.disabled_reason`
