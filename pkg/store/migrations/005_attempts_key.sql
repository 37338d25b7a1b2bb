-- The attempt log's indexes, for less WAL and smaller indexes per attempt.
--
-- The primary key was (delivery_id, attempt, started_at), and attempts_event
-- (tenant_id, event_id, endpoint_id) served a dead letter's attempt history.
-- Delivery ids are hashes, so every insert into the primary key landed on a
-- random leaf page: after each checkpoint most such inserts cost a full-page
-- image, and the index fell out of shared buffers as it grew. Nothing reads
-- attempts by delivery id alone, and the writer's duplicate check knows the
-- attempt's tenant, event and endpoint too (a delivery id is derived from
-- them). Now one key serves both: (tenant_id, event_id, endpoint_id,
-- delivery_id, attempt, started_at). It is unique wherever the old key was
-- (a delivery id determines the rest), answers the dead letter's history by
-- its prefix, and grows at the right end of each tenant's range for
-- generated (time-ordered) event ids. An attempt costs one index entry less.
--
-- attempts_endpoint_time was (endpoint_id, started_at DESC): each attempt
-- went in front of its endpoint's newest, at the left end of that range,
-- where B-tree page splits are even (half a page of WAL each, pages left
-- half empty). Ascending, new entries go at the right end, where splits
-- leave full pages and log little; the newest-first reads scan it backwards.
--
-- Rebuilding takes an exclusive lock on the attempt log for as long as
-- building the indexes takes; the attempt-log writer retries meanwhile.
SET lock_timeout = '5s';

ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts ADD CONSTRAINT attempts_pkey
    PRIMARY KEY (tenant_id, event_id, endpoint_id, delivery_id, attempt, started_at);
DROP INDEX attempts_event;
DROP INDEX attempts_endpoint_time;
CREATE INDEX attempts_endpoint_time ON attempts (endpoint_id, started_at);

---- create above / drop below ----

SET lock_timeout = '5s';

DROP INDEX attempts_endpoint_time;
CREATE INDEX attempts_endpoint_time ON attempts (endpoint_id, started_at DESC);
CREATE INDEX attempts_event ON attempts (tenant_id, event_id, endpoint_id);
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts ADD CONSTRAINT attempts_pkey PRIMARY KEY (delivery_id, attempt, started_at);
