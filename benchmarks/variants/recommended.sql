-- Experiment: the changes recommended for sql/kahuna--1.0.sql after measuring with
-- benchmarks/sql_bench.py, applied over the installed schema. Same semantics and the same
-- lock order; only what each call costs the server changes:
--
-- 1. kahuna.try_reserve keeps generic plans (plan_cache_mode = force_generic_plan): its
--    statements name partitioned tables, for which the plan cache otherwise plans every call.
-- 2. The small SQL helpers of the allocation path lose their SET clause and name every
--    function, operator and type with its schema instead, so the planner inlines them into
--    try_reserve's cached plan; with the SET clause each call parsed and planned the body
--    again in every transaction. They become STABLE, like pg_catalog.format which they call
--    (an IMMUTABLE function whose body is STABLE is never inlined), and WHERE becomes CASE
--    (a body with WHERE is never inlined).
-- 3. kahuna.idempotency_retention, which has a sub-select and so cannot be inlined, becomes
--    plpgsql, whose plan is cached for the session.
-- 4. kahuna_next and kahuna_reserve become plpgsql: a SQL function with a SET clause, or
--    called in FROM, parses and plans its body on every call.

ALTER FUNCTION kahuna.try_reserve(text, bigint, text, text) SET plan_cache_mode = force_generic_plan;

CREATE OR REPLACE FUNCTION kahuna.idempotency_retention() RETURNS interval
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce((SELECT s.idempotency_retention FROM kahuna.settings s), interval '24 hours');
END
$$;

CREATE OR REPLACE FUNCTION kahuna.durability_problem(durability text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN kahuna.durability_or_null(durability) IS NULL
                THEN pg_catalog.format('durability must be Persistent or Ephemeral, got %L', durability)
           END
$$;

CREATE OR REPLACE FUNCTION kahuna.count_problem(count bigint) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN count IS NULL OR count OPERATOR(pg_catalog.<) 1
                     OR count OPERATOR(pg_catalog.>) 2147483647
                THEN pg_catalog.format('count must be between 1 and 2147483647, got %s',
                                       coalesce(count::pg_catalog.text, 'NULL'))
           END
$$;

CREATE OR REPLACE FUNCTION kahuna.key_problem(trimmed_key text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.octet_length(trimmed_key) OPERATOR(pg_catalog.>) 1024
                THEN pg_catalog.format('idempotency key must be at most 1024 bytes in UTF-8, got %s',
                                       pg_catalog.octet_length(trimmed_key))
           END
$$;

CREATE OR REPLACE FUNCTION kahuna.lock_sequence(durability kahuna.durability, name text) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(
        7007, pg_catalog.hashtext(durability::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) name))
$$;

CREATE OR REPLACE FUNCTION public.kahuna_reserve(
    name text,
    count integer,
    idempotency_key text DEFAULT NULL,
    durability text DEFAULT 'persistent'
) RETURNS kahuna.allocation
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN kahuna.allocation_or_raise(kahuna.try_reserve(
        kahuna_reserve.name, kahuna_reserve.count, kahuna_reserve.idempotency_key, kahuna_reserve.durability));
END
$$;

CREATE OR REPLACE FUNCTION public.kahuna_next(
    name text,
    idempotency_key text DEFAULT NULL,
    durability text DEFAULT 'persistent'
) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (kahuna.allocation_or_raise(kahuna.try_reserve(
        kahuna_next.name, 1, kahuna_next.idempotency_key, kahuna_next.durability))).start;
END
$$;
