-- Deliveries held by an open circuit breaker wait for the circuit, not for a
-- time. They used to be parked with due_at = the circuit's open_until; each
-- time a probe was due every one of them was published, consumed and parked
-- again (a failed probe doubles the cool-down, so the same rows went round
-- again and again while the endpoint stayed down), and a row parked before
-- a successful probe waited for its old open_until after the endpoint had
-- recovered.
--
-- Now such a row has circuit_hold = true and due_at = the latest time it may
-- wait (its retry horizon: it is published then, and dead-lettered as
-- expired if the circuit still holds it). The dispatchers' schedulers find
-- the endpoints that have held rows through delivery_retries_circuit_hold,
-- and release one row as the probe when the circuit may be probed, and all
-- of them once it closed (or the endpoint was disabled or deleted).
SET lock_timeout = '5s';

ALTER TABLE delivery_retries ADD COLUMN circuit_hold boolean NOT NULL DEFAULT false;
CREATE INDEX delivery_retries_circuit_hold ON delivery_retries (endpoint_id, due_at) WHERE circuit_hold;

---- create above / drop below ----

SET lock_timeout = '5s';

-- An older dispatcher knows no circuit holds: it gets every held row now,
-- and holds again what its circuit still holds.
UPDATE delivery_retries SET due_at = now() WHERE circuit_hold;
DROP INDEX delivery_retries_circuit_hold;
ALTER TABLE delivery_retries DROP COLUMN circuit_hold;
