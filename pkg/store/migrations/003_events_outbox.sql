-- The transactional outbox of ingest, as a table of its own. An event was
-- inserted with published = false and, once JetStream acknowledged it,
-- updated to true; events_unpublished indexed that column, so the update was
-- never HOT: a whole new 1 KiB tuple and five index entries per event. Now
-- ingest inserts a small event_outbox row in the same statement as the event
-- and deletes it once JetStream acknowledged the event; an event without an
-- outbox row is published. The relay claims outbox rows older than a few
-- seconds (FOR UPDATE SKIP LOCKED) and republishes their events.
--
-- There is no foreign key to events: its check would lock (and dirty) the
-- event row just inserted. A row whose event is gone (its tenant was
-- deleted) is dropped by the relay. A row's accepted_at is its event's.
--
-- events.published stays, and so does events_unpublished: ingest now
-- inserts true, so new rows never enter that partial index and cost it
-- nothing, while a row an old replica leaves unpublished during a rolling
-- upgrade (it crashed between its insert and its publish) is still found
-- through it: the relay adopts such rows into the outbox.
SET lock_timeout = '5s';

-- One index: the relay reads rows oldest first, and the event's accepted_at
-- is known wherever a row is looked up or deleted, so a second index on
-- (tenant_id, id) would only add work to every insert and delete.
CREATE TABLE event_outbox (
    accepted_at  timestamptz NOT NULL,
    tenant_id    text NOT NULL,
    id           text NOT NULL,
    PRIMARY KEY (accepted_at, tenant_id, id)
);

INSERT INTO event_outbox (accepted_at, tenant_id, id)
SELECT accepted_at, tenant_id, id FROM events WHERE NOT published;
UPDATE events SET published = true WHERE NOT published;

---- create above / drop below ----

SET lock_timeout = '5s';

UPDATE events e SET published = false
FROM event_outbox o
WHERE e.accepted_at = o.accepted_at AND e.tenant_id = o.tenant_id AND e.id = o.id;
DROP TABLE event_outbox;
