-- Deliveries held by an open circuit breaker wait for the circuit, not for a
-- time. They used to be parked in delivery_retries with due_at = the
-- circuit's open_until, a row holding the whole Delivery (the event's data
-- included); each time a probe was due every one of them was published,
-- consumed and parked again (a failed probe doubles the cool-down, so the
-- same rows went round again and again while the endpoint stayed down), and
-- a row parked before a successful probe waited for its old open_until after
-- the endpoint had recovered.
--
-- Now a delivery that fan-out holds (its endpoint's circuit is not closed)
-- is only its deliveries row, with circuit_hold set and the trace context
-- of its fan-out; the release rebuilds the Delivery from that row and its
-- event. One a dispatcher holds (it has attempts to remember) is a
-- delivery_retries row with circuit_hold set and due_at = the latest it may
-- wait, its retry horizon. The dispatchers' schedulers find the endpoints
-- that have held deliveries through the two partial indexes, and release the
-- oldest as the probe when the circuit may be probed, all of them once it
-- closed (or the endpoint was disabled or deleted), and any past its horizon
-- (to be dead-lettered as expired).
SET lock_timeout = '5s';

ALTER TABLE delivery_retries ADD COLUMN circuit_hold boolean NOT NULL DEFAULT false;
CREATE INDEX delivery_retries_circuit_hold ON delivery_retries (endpoint_id, due_at) WHERE circuit_hold;

ALTER TABLE deliveries ADD COLUMN circuit_hold boolean NOT NULL DEFAULT false;
ALTER TABLE deliveries ADD COLUMN traceparent text;
CREATE INDEX deliveries_circuit_hold ON deliveries (endpoint_id, created_at) WHERE circuit_hold;

---- create above / drop below ----

SET lock_timeout = '5s';

-- A held deliveries row has no Delivery stored anywhere that an older
-- dispatcher could publish: going down past this migration waits until no
-- delivery is held (the circuits closed, or the endpoints were disabled).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM deliveries WHERE circuit_hold) THEN
        RAISE EXCEPTION 'deliveries are held for open circuits: wait until their circuits close (or disable those endpoints) before migrating down';
    END IF;
END $$;
DROP INDEX deliveries_circuit_hold;
ALTER TABLE deliveries DROP COLUMN traceparent;
ALTER TABLE deliveries DROP COLUMN circuit_hold;

-- An older dispatcher knows no circuit holds: it gets every held retry row
-- now, and holds again what its circuit still holds.
UPDATE delivery_retries SET due_at = now() WHERE circuit_hold;
DROP INDEX delivery_retries_circuit_hold;
ALTER TABLE delivery_retries DROP COLUMN circuit_hold;
