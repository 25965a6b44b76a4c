-- kahuna's SQL interface as any PostgreSQL client sees it, in the style of an extension's
-- regression test: pg_regress runs this file through psql and compares what it prints with
-- expected/kahuna.out. tests/test_sql_regress.py runs it on the test cluster; by hand,
-- against a server where the extension is installed: make -C sql installcheck.
CREATE EXTENSION kahuna;
SELECT kahuna.version();

-- A failure as a driver reports it: the SQLSTATE (the outcome, CONTRACT.md section 2) and
-- the message.
CREATE FUNCTION outcome(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'Success';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- Create and get; the name is trimmed.
SELECT name, current_value, initial_value, increment, max_value, revision, durability
  FROM kahuna_create('orders');
SELECT outcome($$SELECT kahuna_create('orders')$$);
SELECT name, current_value, revision, created_at = updated_at AS unchanged FROM kahuna_get('  orders  ');

-- The first value is initialValue + increment; a key replays its allocation.
SELECT kahuna_next('orders', 'request-123');
SELECT kahuna_next('orders', 'request-123');
SELECT * FROM kahuna_reserve('orders', 100, 'batch-456');
SELECT * FROM kahuna_reserve('orders', 100, '  batch-456  ');
SELECT outcome($$SELECT kahuna_reserve('orders', 5, 'batch-456')$$);
SELECT * FROM kahuna_reserve('orders', 1, 'request-123');   -- next and reserve share keys
SELECT kahuna_next('orders', '   ');                        -- a blank key is no key
SELECT kahuna_next('orders', '');

-- Transactional: a rolled-back value is handed out again.
BEGIN;
SELECT kahuna_next('orders');
ROLLBACK;
SELECT kahuna_next('orders');
SELECT current_value, revision FROM kahuna_get('orders');

-- maxValue is inclusive, a run is all or nothing, and a key replays after exhaustion.
SELECT name, current_value, increment, max_value FROM kahuna_create('tickets', 10, 5, 25);
SELECT * FROM kahuna_reserve('tickets', 3, 'k');
SELECT outcome($$SELECT kahuna_reserve('tickets', 2)$$);
SELECT current_value, revision FROM kahuna_get('tickets');
SELECT * FROM kahuna_reserve('tickets', 3, 'k');

-- int64's own limit: MaxValueExceeded, never a wrap.
SELECT name, current_value FROM kahuna_create('big', 9223372036854775806);
SELECT kahuna_next('big');
SELECT outcome($$SELECT kahuna_next('big')$$);
SELECT current_value FROM kahuna_get('big');

-- Invalid input, each with a message that says what was wrong; nothing is created.
SELECT outcome($$SELECT kahuna_create('   ')$$);
SELECT outcome($$SELECT kahuna_create('a' || chr(10) || 'b')$$);
SELECT outcome($$SELECT kahuna_create(repeat('x', 1025))$$);
SELECT outcome($$SELECT kahuna_create('bad', 0, 0)$$);
SELECT outcome($$SELECT kahuna_create('bad', 10, 1, 5)$$);
SELECT outcome($$SELECT kahuna_create('bad', 0, 1, NULL, 'durable')$$);
SELECT outcome($$SELECT kahuna_reserve('orders', 0)$$);
SELECT outcome($$SELECT kahuna_reserve('orders', -1)$$);
SELECT outcome($$SELECT kahuna_next('orders', repeat('é', 513))$$);  -- 1026 bytes
SELECT outcome($$SELECT kahuna_get('bad')$$);
SELECT outcome($$SELECT kahuna_next('missing')$$);
SELECT outcome($$SELECT kahuna_delete('missing', 'Ephemeral')$$);

-- Durability is matched case-insensitively; an Ephemeral 'orders' is another sequence.
SELECT name, durability FROM kahuna_create('orders', 0, 1, NULL, 'EPHEMERAL');
SELECT kahuna_next('orders', 'request-123', 'ephemeral');
SELECT kahuna_next('orders', 'request-123', 'Persistent');

-- A batch, as the service runs concurrent calls: each call answers as if it ran alone, in order.
SELECT r.ordinality, (r.allocation).start, (r.allocation)."end", r.sqlstate, r.message
  FROM kahuna_reserve_many('tickets', ARRAY[1, 1, 1], ARRAY['k', 'new', 'new']) WITH ORDINALITY r;
SELECT r.ordinality, (r.allocation).start, (r.allocation)."end", r.sqlstate, r.message
  FROM kahuna_reserve_many('orders', ARRAY[1, 2, 5, 1], ARRAY['a', 'b', 'a', NULL]) WITH ORDINALITY r;

-- Delete answers the sequence as it was and forgets its keys: a re-created one starts afresh.
SELECT name, current_value, revision FROM kahuna_delete('orders');
SELECT name, current_value, revision FROM kahuna_create('orders', 1000);
SELECT kahuna_next('orders', 'request-123');
SELECT kahuna_next('orders', NULL, 'ephemeral');   -- the Ephemeral one is untouched

-- A caller's search_path neither breaks nor hijacks the functions: objects of the same names
-- as those they use, searched before pg_catalog, change nothing.
CREATE SCHEMA hijack;
CREATE FUNCTION hijack.octet_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION hijack.btrim(text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'orders'::text $$;
CREATE FUNCTION hijack.always(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR hijack.= (LEFTARG = text, RIGHTARG = text, FUNCTION = hijack.always);
SET search_path = hijack, pg_catalog, public;
SELECT outcome($$SELECT kahuna_next('missing')$$);
SELECT outcome($$SELECT kahuna_next('orders', repeat('é', 513))$$);
SELECT kahuna_next('  orders ');
SET search_path = '';
SELECT public.kahuna_next('orders');
RESET search_path;

-- Idempotency keys older than the retention are forgotten, and purged in batches.
SELECT kahuna.idempotency_retention();
SELECT outcome($$SELECT kahuna.set_idempotency_retention('-1 hour')$$);
SELECT kahuna.set_idempotency_retention('1 microsecond');
SELECT pg_sleep(0.01);
SELECT kahuna_next('orders', 'request-123');    -- forgotten: allocates afresh
SELECT kahuna.purge_idempotency_keys(1);
SELECT kahuna.purge_idempotency_keys();
SELECT kahuna.purge_idempotency_keys();
SELECT kahuna.set_idempotency_retention('24 hours');
