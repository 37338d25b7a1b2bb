---- tern: disable-tx ----
-- The event list's indexes were descending: (tenant_id, accepted_at DESC,
-- id DESC) and (tenant_id, type, accepted_at DESC, id DESC). Every new
-- event went in front of its tenant's newest, at the left end of that
-- range, where B-tree page splits are even: each split logged half a page
-- of WAL and left both pages half empty, so the indexes were twice their
-- size and cost about 150 bytes of WAL per event in splits alone.
-- Ascending, new events go at the right end of their range, where splits
-- leave full pages and log little; the newest-first lists scan them
-- backwards (ORDER BY accepted_at DESC, id DESC and the row comparison of
-- the cursor work the same in either direction).
--
-- Built CONCURRENTLY, outside a transaction, so that ingest keeps
-- inserting meanwhile. Every step may run again after a failure part-way:
-- a half-built index left by a failed build is dropped first.
DROP INDEX CONCURRENTLY IF EXISTS events_tenant_time_asc;
CREATE INDEX CONCURRENTLY events_tenant_time_asc ON events (tenant_id, accepted_at, id);
DROP INDEX CONCURRENTLY IF EXISTS events_tenant_time;
ALTER INDEX events_tenant_time_asc RENAME TO events_tenant_time;

DROP INDEX CONCURRENTLY IF EXISTS events_tenant_type_time_asc;
CREATE INDEX CONCURRENTLY events_tenant_type_time_asc ON events (tenant_id, type, accepted_at, id);
DROP INDEX CONCURRENTLY IF EXISTS events_tenant_type_time;
ALTER INDEX events_tenant_type_time_asc RENAME TO events_tenant_type_time;

---- create above / drop below ----
---- tern: disable-tx ----

DROP INDEX CONCURRENTLY IF EXISTS events_tenant_time_desc;
CREATE INDEX CONCURRENTLY events_tenant_time_desc ON events (tenant_id, accepted_at DESC, id DESC);
DROP INDEX CONCURRENTLY IF EXISTS events_tenant_time;
ALTER INDEX events_tenant_time_desc RENAME TO events_tenant_time;

DROP INDEX CONCURRENTLY IF EXISTS events_tenant_type_time_desc;
CREATE INDEX CONCURRENTLY events_tenant_type_time_desc ON events (tenant_id, type, accepted_at DESC, id DESC);
DROP INDEX CONCURRENTLY IF EXISTS events_tenant_type_time;
ALTER INDEX events_tenant_type_time_desc RENAME TO events_tenant_type_time;
