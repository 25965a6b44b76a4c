-- kahuna_next with a new idempotency key each call: allocates and records the key.
-- The key is unique per client and call (client id, then a random number below 10^15).
\set id random(1, :nseq)
\set k random(1, 1000000000000000)
SELECT kahuna_next('seq-' || :id, 'key-' || :client_id || '-' || :k);
