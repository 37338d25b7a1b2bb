---- tern: disable-tx ----
-- A replay's succeeded and failed (GET /replays/{id}, each row of GET
-- /replays) were counted on every read by joining all of its items to their
-- deliveries: 1.3 s for a replay of a million dead letters, read every
-- 500 ms by `hookctl replay --wait`, and for every replay of a page.
--
-- Now an item whose delivery has reached succeeded or dead is settled: its
-- outcome is recorded on the item and added to its replay's counts, in one
-- statement (the deadletter service settles in the background, see
-- services/deadletter/settle.go). A read adds to the replay's counts the
-- items not settled yet, each looked up with its delivery as before, found
-- through replay_items_unsettled: exact at every moment, and as cheap as
-- the replay's deliveries still on their way. Items queued before this
-- migration start unsettled, and count as before until settled.
--
-- Outside a transaction, so that the index is built CONCURRENTLY (the
-- replay runner keeps writing items meanwhile), and every step may run again
-- after a failure part-way. The CHECK is NOT VALID: every existing row is
-- NULL there, and validating would read the table under an exclusive lock.
SET lock_timeout = '5s';

ALTER TABLE replays ADD COLUMN IF NOT EXISTS succeeded bigint NOT NULL DEFAULT 0;
ALTER TABLE replays ADD COLUMN IF NOT EXISTS failed bigint NOT NULL DEFAULT 0;
ALTER TABLE replay_items ADD COLUMN IF NOT EXISTS outcome text;
ALTER TABLE replay_items DROP CONSTRAINT IF EXISTS replay_items_outcome;
ALTER TABLE replay_items ADD CONSTRAINT replay_items_outcome CHECK (outcome IN ('succeeded', 'dead')) NOT VALID;
DROP INDEX CONCURRENTLY IF EXISTS replay_items_unsettled;
CREATE INDEX CONCURRENTLY replay_items_unsettled ON replay_items (replay_id) WHERE delivery_id IS NOT NULL AND outcome IS NULL;

---- create above / drop below ----
---- tern: disable-tx ----

SET lock_timeout = '5s';

DROP INDEX CONCURRENTLY IF EXISTS replay_items_unsettled;
ALTER TABLE replay_items DROP CONSTRAINT IF EXISTS replay_items_outcome;
ALTER TABLE replay_items DROP COLUMN IF EXISTS outcome;
ALTER TABLE replays DROP COLUMN IF EXISTS failed;
ALTER TABLE replays DROP COLUMN IF EXISTS succeeded;
