-- Hookline's schema: the control plane (tenants, keys, endpoints), the event
-- log, delivery state, the attempt log, dead letters, parked retries and
-- rejected NATS messages. One schema shared by every service.
SET lock_timeout = '5s';

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    -- SHA-256 of the token: tokens carry 256 random bits, so a fast hash is
    -- safe and keeps authentication cheap on every request.
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE endpoints (
    id                          text PRIMARY KEY,
    tenant_id                   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                         text NOT NULL,
    description                 text NOT NULL DEFAULT '',
    event_types                 text[] NOT NULL DEFAULT '{}',
    filter                      text,
    headers                     jsonb NOT NULL DEFAULT '{}',
    secret                      text NOT NULL,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    timeout_ms                  integer NOT NULL DEFAULT 15000,
    retry_schedule              text[] NOT NULL,
    rate_limit                  integer NOT NULL DEFAULT 0,
    ordering                    text NOT NULL DEFAULT 'key',
    disabled                    boolean NOT NULL DEFAULT false,
    disabled_at                 timestamptz,
    disabled_reason             text,
    propagate_trace             boolean NOT NULL DEFAULT true,
    version                     bigint NOT NULL DEFAULT 1,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id) WHERE deleted_at IS NULL;

CREATE TABLE events (
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id               text NOT NULL,
    type             text NOT NULL,
    data             json NOT NULL,
    ordering_key     text,
    idempotency_key  text,
    source           text NOT NULL DEFAULT 'http',
    -- only_endpoint_id restricts fan-out to one endpoint (test events).
    only_endpoint_id text,
    accepted_at      timestamptz NOT NULL,
    -- published is false until JetStream acknowledged the event; the outbox
    -- relay republishes rows left false by a crash.
    published        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX events_idempotency_key ON events (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_tenant_time ON events (tenant_id, accepted_at DESC, id DESC);
CREATE INDEX events_tenant_type_time ON events (tenant_id, type, accepted_at DESC, id DESC);
CREATE INDEX events_unpublished ON events (accepted_at) WHERE NOT published;

CREATE TABLE deliveries (
    id                text PRIMARY KEY,
    tenant_id         text NOT NULL,
    event_id          text NOT NULL,
    endpoint_id       text NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    delivered_at      timestamptz,
    replay_id         text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_event ON deliveries (tenant_id, event_id, created_at);

-- The attempt log, partitioned by day on started_at so that retention drops
-- whole partitions (HOOKLINE_ATTEMPT_RETENTION) instead of deleting rows. The
-- attempt-log writer creates the partitions attempts_pYYYYMMDD (UTC days) a
-- few days ahead; a row no partition covers lands in attempts_default and is
-- moved when its day's partition is created. A partitioned table's primary
-- key must contain the partition key, so (delivery_id, attempt) alone is not
-- unique here: the writer keeps it unique (see services/dispatcher/internal/attemptlog).
CREATE TABLE attempts (
    delivery_id    text NOT NULL,
    attempt        integer NOT NULL,
    tenant_id      text NOT NULL,
    event_id       text NOT NULL,
    endpoint_id    text NOT NULL,
    started_at     timestamptz NOT NULL,
    duration_ms    integer NOT NULL,
    status_code    integer,
    error          text,
    response_body  text,
    succeeded      boolean NOT NULL,
    PRIMARY KEY (delivery_id, attempt, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE attempts_default PARTITION OF attempts DEFAULT;
CREATE INDEX attempts_endpoint_time ON attempts (endpoint_id, started_at DESC);
CREATE INDEX attempts_event ON attempts (tenant_id, event_id, endpoint_id);

-- Per endpoint, since when it has failed without a success in between (null
-- while its latest attempt succeeded); the attempt-log writer keeps it and
-- disables an endpoint failing longer than HOOKLINE_AUTO_DISABLE_AFTER.
CREATE TABLE endpoint_health (
    endpoint_id      text PRIMARY KEY,
    tenant_id        text NOT NULL,
    failing_since    timestamptz,
    last_success_at  timestamptz,
    last_failure_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id                text PRIMARY KEY,
    tenant_id         text NOT NULL,
    delivery_id       text NOT NULL UNIQUE,
    event_id          text NOT NULL,
    endpoint_id       text NOT NULL,
    event_type        text NOT NULL,
    ordering_key      text,
    reason            text NOT NULL,
    attempts          integer NOT NULL,
    last_status_code  integer,
    last_error        text,
    dead_at           timestamptz NOT NULL,
    replays           integer NOT NULL DEFAULT 0,
    resolved_at       timestamptz,
    discarded_at      timestamptz,
    discarded_by      text,
    -- the W3C traceparent of the span that stored it: a replay starts a new
    -- trace linked to this one.
    traceparent       text
);
CREATE INDEX dead_letters_tenant_time ON dead_letters (tenant_id, dead_at DESC, id DESC) WHERE discarded_at IS NULL;
CREATE INDEX dead_letters_endpoint_time ON dead_letters (tenant_id, endpoint_id, dead_at DESC, id DESC) WHERE discarded_at IS NULL;
CREATE INDEX dead_letters_type_time ON dead_letters (tenant_id, event_type, dead_at DESC, id DESC) WHERE discarded_at IS NULL;
CREATE INDEX dead_letters_reason_time ON dead_letters (tenant_id, reason, dead_at DESC, id DESC) WHERE discarded_at IS NULL;

-- Deliveries waiting for a later attempt. The dispatcher acknowledges the
-- JetStream message once the row is written, so a wait of hours holds no ack
-- slot and survives restarts; the retry scheduler republishes due rows.
CREATE TABLE delivery_retries (
    delivery_id  text PRIMARY KEY,
    tenant_id    text NOT NULL,
    endpoint_id  text NOT NULL,
    due_at       timestamptz NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_retries_due ON delivery_retries (due_at);

-- NATS messages that failed validation (CONTRACT 4).
CREATE TABLE rejected_events (
    id           text PRIMARY KEY,
    tenant_id    text,
    subject      text NOT NULL,
    event_type   text,
    event_id     text,
    reason       text NOT NULL,
    detail       text NOT NULL,
    size_bytes   integer NOT NULL,
    payload      bytea,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_events_time ON rejected_events (received_at DESC, id DESC);

-- Replays of dead letters (deadletter service). A replay's items are the dead
-- letters it matched; delivery_id is set once that item's new delivery is
-- queued, so a runner restarted mid-replay resumes without resending.
CREATE TABLE replays (
    id               text PRIMARY KEY,
    tenant_id        text NOT NULL,
    filter           jsonb NOT NULL DEFAULT '{}',
    rate_per_second  integer NOT NULL DEFAULT 50,
    dry_run          boolean NOT NULL DEFAULT false,
    state            text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'cancelled', 'failed')),
    matched          integer NOT NULL DEFAULT 0,
    replayed         integer NOT NULL DEFAULT 0,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX replays_tenant_time ON replays (tenant_id, created_at DESC, id DESC);
CREATE INDEX replays_running ON replays (created_at) WHERE state = 'running';

CREATE TABLE replay_items (
    replay_id       text NOT NULL REFERENCES replays (id) ON DELETE CASCADE,
    dead_letter_id  text NOT NULL,
    delivery_id     text,
    -- done_at is set once the item is handled: sent, or skipped because the
    -- dead letter was discarded or already has a replay delivery pending.
    done_at         timestamptz,
    PRIMARY KEY (replay_id, dead_letter_id)
);
CREATE INDEX replay_items_dead_letter ON replay_items (dead_letter_id);
CREATE INDEX deliveries_replay ON deliveries (replay_id, status) WHERE replay_id IS NOT NULL;

-- Who discarded or replayed what (CONTRACT 2.4).
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_time ON audit_log (tenant_id, at DESC);

-- Per-key ordering (docs/design/ordering.md). A key whose head delivery waits
-- for a retry, or for an open circuit, is blocked: its row says when it is due
-- and which dispatcher replica holds the lease to drain it; the head and every
-- later delivery of that key are parked in stream order until drained.
CREATE TABLE blocked_keys (
    endpoint_id  text NOT NULL,
    key_token    text NOT NULL,
    tenant_id    text NOT NULL,
    due_at       timestamptz NOT NULL,
    lease_owner  text,
    lease_until  timestamptz,
    blocked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, key_token)
);
CREATE INDEX blocked_keys_due ON blocked_keys (due_at);

CREATE TABLE parked_deliveries (
    endpoint_id  text NOT NULL,
    key_token    text NOT NULL,
    -- seq is the delivery's HOOKLINE_DELIVERIES stream sequence: the order.
    seq          bigint NOT NULL,
    delivery_id  text NOT NULL,
    payload      bytea NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, key_token, seq)
);

-- Circuit breaker state shared by every dispatcher replica (CONTRACT 2.2
-- health.circuit; no row means closed).
CREATE TABLE endpoint_circuits (
    endpoint_id  text PRIMARY KEY,
    circuit      text NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half_open')),
    changed_at   timestamptz NOT NULL DEFAULT now(),
    open_until   timestamptz,
    -- opens counts consecutive openings without a successful probe.
    opens        integer NOT NULL DEFAULT 0,
    probe_owner  text,
    probe_until  timestamptz
);

-- Inbound webhooks (docs/sources.md): a source turns requests to
-- POST /v1/in/{token} into events. The token is stored only as its SHA-256
-- (it carries 256 random bits, like API keys); verifier secrets are sealed
-- with pkg/secretbox (additional data: the source id). Rejected requests go
-- to rejected_events with subject 'source:<id>'.
CREATE TABLE sources (
    id                          text PRIMARY KEY,
    tenant_id                   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                        text NOT NULL,
    token_hash                  bytea NOT NULL UNIQUE,
    verifier                    jsonb NOT NULL,
    secret                      text,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    mapping                     jsonb NOT NULL,
    filter                      text,
    format                      text NOT NULL DEFAULT 'json',
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sources_tenant ON sources (tenant_id, created_at, id);
CREATE INDEX rejected_events_subject ON rejected_events (tenant_id, subject, received_at DESC, id DESC);

-- The W3C traceparent of the trace a parked delivery came from: its later
-- attempt starts a new trace linked to this one (pkg/telemetry.LinkTo).
ALTER TABLE delivery_retries ADD COLUMN traceparent text;
ALTER TABLE parked_deliveries ADD COLUMN traceparent text;

---- create above / drop below ----

ALTER TABLE parked_deliveries DROP COLUMN traceparent;
ALTER TABLE delivery_retries DROP COLUMN traceparent;

DROP INDEX rejected_events_subject;
DROP TABLE sources;
DROP TABLE endpoint_circuits;
DROP TABLE parked_deliveries;
DROP TABLE blocked_keys;
DROP TABLE audit_log;
DROP INDEX deliveries_replay;
DROP TABLE replay_items;
DROP TABLE replays;
DROP TABLE rejected_events;
DROP TABLE delivery_retries;
DROP TABLE dead_letters;
DROP TABLE endpoint_health;
DROP TABLE attempts;
DROP TABLE deliveries;
DROP TABLE events;
DROP TABLE endpoints;
DROP TABLE api_keys;
DROP TABLE tenants;
