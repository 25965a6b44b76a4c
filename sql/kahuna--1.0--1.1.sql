-- kahuna 1.0 -> 1.1: kahuna_reserve_many, the batch form of kahuna_reserve.
--
-- A server that receives many concurrent allocations for one sequence runs them in one
-- transaction through this function: one commit (one WAL flush) for the whole batch
-- instead of one per call. The answer equals running the calls one after another in
-- array order: each gets its own outcome, and a failed call (bad key, key replayed with
-- another count, maxValue reached) fails alone without undoing the others.

CREATE OR REPLACE FUNCTION kahuna.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '1.1'::pg_catalog.text $$;

CREATE FUNCTION @extschema@.kahuna_reserve_many(
    name text,
    counts bigint[],
    idempotency_keys text[] DEFAULT NULL,
    durability text DEFAULT 'persistent'
) RETURNS SETOF kahuna.reserve_result
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF counts IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'counts is required';
    END IF;
    IF array_ndims(counts) > 1 OR array_ndims(idempotency_keys) > 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'counts and idempotency_keys must be one-dimensional arrays';
    END IF;
    IF idempotency_keys IS NOT NULL AND cardinality(idempotency_keys) <> cardinality(counts) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('idempotency_keys must have one entry per count: %s counts, %s keys',
                             cardinality(counts), cardinality(idempotency_keys));
    END IF;
    -- Subscripts from array_lower: an array may start at another index than 1.
    FOR i IN 0 .. cardinality(counts) - 1 LOOP
        RETURN NEXT kahuna.try_reserve(
            kahuna_reserve_many.name,
            counts[array_lower(counts, 1) + i],
            idempotency_keys[array_lower(idempotency_keys, 1) + i],
            kahuna_reserve_many.durability);
    END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.kahuna_reserve_many(text, bigint[], text[], text) IS
    'runs kahuna_reserve(name, counts[i], idempotency_keys[i], durability) for each i, in order, in one transaction; '
    'answers one row per call: the allocation, or the sqlstate and message it failed with';
