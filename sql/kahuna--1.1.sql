-- kahuna 1.1: named, gap-free sequences with idempotency keys; the full install script of
-- version 1.1 (a fresh install runs this alone; an installed 1.0 takes kahuna--1.0--1.1.sql).
--
-- Installed either by `CREATE EXTENSION kahuna` or by `kahuna-pg migrate`, which runs this
-- same file with @extschema@ replaced by the target schema (public by default).
-- Tables and helpers live in schema kahuna; the five user-facing functions are prefixed
-- kahuna_ in @extschema@ so that `SELECT kahuna_next('orders')` works with the default
-- search_path.
--
-- Safety against the caller's search_path: every function either pins
-- `search_path = pg_catalog, pg_temp` and names kahuna objects with their schema, or names
-- every function, operator and type it uses with its schema (`pg_catalog.format`,
-- `OPERATOR(pg_catalog.>)`) and has no SET clause. The second kind are the small SQL
-- helpers of the allocation path: without a SET clause the planner inlines them into the
-- caller's cached plan, where a SET clause made every call parse and plan the helper's body
-- again, in every transaction.
--
-- Outcomes are SQLSTATEs (CONTRACT.md section 2):
--   42704 no such sequence, 42710 already exists, 22023 invalid input,
--   2200H maxValue or int64 would be passed.

CREATE SCHEMA kahuna;
COMMENT ON SCHEMA kahuna IS 'kahuna-pg: sequence tables and helpers; call the kahuna_* functions instead';

CREATE TYPE kahuna.durability AS ENUM ('Persistent', 'Ephemeral');

-- The public shapes of a sequence and of an allocation (a contiguous run of values).
CREATE TYPE kahuna.sequence AS (
    name text,
    current_value bigint,
    initial_value bigint,
    increment bigint,
    max_value bigint,
    revision bigint,
    durability kahuna.durability,
    created_at timestamptz,
    updated_at timestamptz
);

CREATE TYPE kahuna.allocation AS (
    name text,
    start bigint,
    "end" bigint,
    count integer,
    revision bigint
);

-- What kahuna.try_reserve answers: an allocation, or the SQLSTATE and message of why not.
-- Returned rather than raised so that a batch can fail one call without a subtransaction.
CREATE TYPE kahuna.reserve_result AS (
    allocation kahuna.allocation,
    sqlstate text,
    message text
);

-- One table for both durabilities, partitioned on it: Persistent rows live in a logged
-- partition, Ephemeral ones in an UNLOGGED partition (fast, emptied by a crash, absent on
-- standbys). The functions use one static statement for both.
--
-- The primary keys hold the SHA-256 of the name (kahuna.name_hash), not the name: a name may
-- be 1024 characters of up to 4 bytes, more than a btree entry can hold (about 2700 bytes),
-- so a key on the name itself would fail for valid names. The functions look a row up by
-- both the hash and the name, so a row is never taken for another name's. The hash is a
-- plain column written by the functions at insert, not a generated column, which PostgreSQL
-- would compute again on every allocating UPDATE.
CREATE TABLE kahuna.sequences (
    durability kahuna.durability NOT NULL,
    name text NOT NULL,
    current_value bigint NOT NULL,
    initial_value bigint NOT NULL,
    increment bigint NOT NULL CHECK (increment > 0),
    max_value bigint CHECK (max_value >= initial_value),
    revision bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    name_hash bytea NOT NULL,
    PRIMARY KEY (durability, name_hash)
) PARTITION BY LIST (durability);

-- fillfactor leaves room on each page so that the hot-row update stays a HOT update.
CREATE TABLE kahuna.sequences_persistent PARTITION OF kahuna.sequences
    FOR VALUES IN ('Persistent') WITH (fillfactor = 50);
CREATE UNLOGGED TABLE kahuna.sequences_ephemeral PARTITION OF kahuna.sequences
    FOR VALUES IN ('Ephemeral') WITH (fillfactor = 50);

-- An idempotency entry records the allocation a key received, to be answered again on a
-- replay. No foreign key: kahuna_delete removes a sequence's entries itself, and the
-- allocation path already holds the sequence's lock, so an RI trigger would only cost.
CREATE TABLE kahuna.idempotency_keys (
    durability kahuna.durability NOT NULL,
    name text NOT NULL,
    key text NOT NULL,
    start bigint NOT NULL,
    "end" bigint NOT NULL,
    count integer NOT NULL,
    revision bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    name_hash bytea NOT NULL,
    PRIMARY KEY (durability, name_hash, key)
) PARTITION BY LIST (durability);

CREATE TABLE kahuna.idempotency_keys_persistent PARTITION OF kahuna.idempotency_keys
    FOR VALUES IN ('Persistent');
CREATE UNLOGGED TABLE kahuna.idempotency_keys_ephemeral PARTITION OF kahuna.idempotency_keys
    FOR VALUES IN ('Ephemeral');

-- For kahuna.purge_idempotency_keys, which deletes the oldest entries first.
CREATE INDEX idempotency_keys_created_at ON kahuna.idempotency_keys (created_at);

-- Settings, at most one row; absent means the defaults. Kept empty at install so that a
-- pg_dump of the extension restores the row without a conflict.
CREATE TABLE kahuna.settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    idempotency_retention interval NOT NULL CHECK (idempotency_retention > interval '0')
);

-- pg_dump keeps the data of extension tables only when they are marked; the marking is
-- possible only inside CREATE EXTENSION, which is when the extension's row exists.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'kahuna') THEN
        PERFORM pg_catalog.pg_extension_config_dump('kahuna.sequences_persistent', '');
        PERFORM pg_catalog.pg_extension_config_dump('kahuna.sequences_ephemeral', '');
        PERFORM pg_catalog.pg_extension_config_dump('kahuna.idempotency_keys_persistent', '');
        PERFORM pg_catalog.pg_extension_config_dump('kahuna.idempotency_keys_ephemeral', '');
        PERFORM pg_catalog.pg_extension_config_dump('kahuna.settings', '');
    END IF;
END
$$;

------------------------------------------------------------------------------------------
-- Version and settings
------------------------------------------------------------------------------------------

CREATE FUNCTION kahuna.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '1.1'::pg_catalog.text $$;
COMMENT ON FUNCTION kahuna.version() IS 'the installed version of the kahuna schema';

-- plpgsql, whose plan is cached: a SQL function with a sub-select is never inlined.
CREATE FUNCTION kahuna.idempotency_retention() RETURNS interval
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce((SELECT s.idempotency_retention FROM kahuna.settings s), interval '24 hours');
END
$$;
COMMENT ON FUNCTION kahuna.idempotency_retention() IS
    'how long an idempotency key is replayed (default 24 hours)';

CREATE FUNCTION kahuna.set_idempotency_retention(retention interval) RETURNS interval
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF retention IS NULL OR retention <= interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('idempotency retention must be a positive interval, got %s',
                             coalesce(retention::text, 'NULL'));
    END IF;
    INSERT INTO kahuna.settings AS s (singleton, idempotency_retention) VALUES (true, retention)
    ON CONFLICT (singleton) DO UPDATE SET idempotency_retention = excluded.idempotency_retention;
    RETURN retention;
END
$$;
COMMENT ON FUNCTION kahuna.set_idempotency_retention(interval) IS
    'sets how long idempotency keys are replayed; returns the new retention';

------------------------------------------------------------------------------------------
-- Validation. Each *_problem function returns NULL when the value is fine, else the
-- message of an InvalidInput (22023); the checked_* functions raise it.
------------------------------------------------------------------------------------------

-- The key of a name in the primary keys. STABLE, not IMMUTABLE, like convert_to (which only
-- depends on the database's encoding, fixed at its creation), so that it is inlined.
CREATE FUNCTION kahuna.name_hash(name text) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to(name, 'UTF8')) $$;

-- White space trimmed from names and keys: ASCII space, tab, newline, CR, VT, FF.
-- (VT is written \x0B: PostgreSQL's E'' strings have no \v, which would be the letter v.)
CREATE FUNCTION kahuna.trimmed(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT pg_catalog.btrim(value, E' \t\n\r\f\x0B') $$;

CREATE FUNCTION kahuna.name_problem(trimmed_name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF trimmed_name IS NULL THEN
        RETURN 'name is required';
    ELSIF trimmed_name = '' THEN
        RETURN 'name must not be empty';
    ELSIF char_length(trimmed_name) > 1024 THEN
        RETURN format('name must be at most 1024 characters, got %s', char_length(trimmed_name));
    ELSIF trimmed_name ~ '[\u0001-\u001f\u007f-\u009f]' THEN
        RETURN 'name must not contain control characters';
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION kahuna.checked_name(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trimmed_name text := kahuna.trimmed(name);
    problem text := kahuna.name_problem(trimmed_name);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = problem;
    END IF;
    RETURN trimmed_name;
END
$$;
COMMENT ON FUNCTION kahuna.checked_name(text) IS
    'the name trimmed of surrounding white space, or 22023 if it is not a valid sequence name';

-- Durability: 'persistent' or 'ephemeral' in any case; the gRPC enum numbers are accepted
-- too ('0' unspecified and '1' Persistent, '2' Ephemeral). NULL means the default.
CREATE FUNCTION kahuna.durability_or_null(durability text) RETURNS kahuna.durability
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE lower(btrim(coalesce(durability, 'persistent')))
        WHEN 'persistent', '0', '1' THEN RETURN 'Persistent'::kahuna.durability;
        WHEN 'ephemeral', '2' THEN RETURN 'Ephemeral'::kahuna.durability;
        ELSE RETURN NULL;
    END CASE;
END
$$;

-- This and the next two *_problem functions are inlined into their caller: no SET clause,
-- every name schema-qualified, a CASE rather than a WHERE (a body with WHERE is never
-- inlined), and STABLE like pg_catalog.format (an IMMUTABLE function whose body is only
-- STABLE is never inlined either).
CREATE FUNCTION kahuna.durability_problem(durability text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN kahuna.durability_or_null(durability) IS NULL
                THEN pg_catalog.format('durability must be Persistent or Ephemeral, got %L', durability)
           END
$$;

CREATE FUNCTION kahuna.checked_durability(durability text) RETURNS kahuna.durability
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parsed kahuna.durability := kahuna.durability_or_null(durability);
BEGIN
    IF parsed IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = kahuna.durability_problem(durability);
    END IF;
    RETURN parsed;
END
$$;

CREATE FUNCTION kahuna.count_problem(count bigint) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN count IS NULL OR count OPERATOR(pg_catalog.<) 1
                     OR count OPERATOR(pg_catalog.>) 2147483647
                THEN pg_catalog.format('count must be between 1 and 2147483647, got %s',
                                       coalesce(count::pg_catalog.text, 'NULL'))
           END
$$;

-- A key that is NULL, empty or only white space means no key: the trimmed key is NULL.
CREATE FUNCTION kahuna.key_problem(trimmed_key text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.octet_length(trimmed_key) OPERATOR(pg_catalog.>) 1024
                THEN pg_catalog.format('idempotency key must be at most 1024 bytes in UTF-8, got %s',
                                       pg_catalog.octet_length(trimmed_key))
           END
$$;

-- The advisory lock that serialises allocations on one sequence. Callers queue in the lock
-- manager, in order, instead of piling onto the row's tuple lock. The two-key form keeps
-- kahuna's locks (class 7007) apart from an application's single-key advisory locks.
-- Inlined into its caller, like the *_problem functions.
CREATE FUNCTION kahuna.lock_sequence(durability kahuna.durability, name text) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(
        7007, pg_catalog.hashtext(durability::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) name))
$$;

------------------------------------------------------------------------------------------
-- Allocation
------------------------------------------------------------------------------------------

-- The one allocation rule, shared by kahuna_next, kahuna_reserve (and batches of them):
-- validate, replay a recorded key, or hand out the next `count` values as one run and
-- record the key, all in the caller's transaction. Failures are returned, not raised.
--
-- Generic plans (plan_cache_mode): its statements name the partitioned tables, for which the
-- plan cache would otherwise plan every call again (a generic plan's estimate counts both
-- partitions, so it never looks cheaper than a custom one); a generic plan prunes the other
-- partition when it starts.
CREATE FUNCTION kahuna.try_reserve(name text, count bigint, idempotency_key text, durability text)
RETURNS kahuna.reserve_result
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_name text := kahuna.trimmed(try_reserve.name);
    v_name_hash bytea := kahuna.name_hash(v_name);
    v_key text := nullif(kahuna.trimmed(try_reserve.idempotency_key), '');
    v_count bigint := try_reserve.count;
    v_durability kahuna.durability := kahuna.durability_or_null(try_reserve.durability);
    v_problem text;
    v_entry record;
    v_current bigint;
    v_increment bigint;
    v_revision bigint;
    v_start bigint;
    v_max bigint;
    result kahuna.reserve_result;
BEGIN
    v_problem := coalesce(kahuna.name_problem(v_name),
                          kahuna.durability_problem(try_reserve.durability),
                          kahuna.count_problem(v_count),
                          kahuna.key_problem(v_key));
    IF v_problem IS NOT NULL THEN
        result.sqlstate := '22023';
        result.message := v_problem;
        RETURN result;
    END IF;

    -- Queue behind any allocation in flight on this sequence, then read the key: a
    -- concurrent first use of the same key has committed by now, so it is seen and replayed.
    PERFORM kahuna.lock_sequence(v_durability, v_name);

    IF v_key IS NOT NULL THEN
        SELECT k.start, k."end", k.count, k.revision, k.created_at INTO v_entry
          FROM kahuna.idempotency_keys k
         WHERE k.durability = v_durability AND k.name_hash = v_name_hash AND k.name = v_name
           AND k.key = v_key;
        IF FOUND AND v_entry.created_at > now() - kahuna.idempotency_retention() THEN
            IF v_entry.count <> v_count THEN
                result.sqlstate := '22023';
                result.message := format(
                    'idempotency key %L was used with count %s, not %s', v_key, v_entry.count, v_count);
                RETURN result;
            END IF;
            result.allocation := ROW(v_name, v_entry.start, v_entry."end", v_entry.count,
                                     v_entry.revision)::kahuna.allocation;
            RETURN result;
        END IF;
    END IF;

    -- All or nothing: the run's end, computed in numeric so that it cannot overflow, must
    -- not pass maxValue or int64. (The end fits in bigint then, but increment * count may
    -- not, when current_value is negative: hence numeric in SET too.)
    UPDATE kahuna.sequences s
       SET current_value = (s.current_value::numeric + s.increment::numeric * v_count)::bigint,
           revision = s.revision + 1,
           updated_at = now()
     WHERE s.durability = v_durability AND s.name_hash = v_name_hash AND s.name = v_name
       AND s.current_value::numeric + s.increment::numeric * v_count
           <= coalesce(s.max_value, 9223372036854775807)
    RETURNING s.current_value, s.increment, s.revision INTO v_current, v_increment, v_revision;

    IF NOT FOUND THEN
        SELECT s.current_value, s.increment, s.max_value INTO v_current, v_increment, v_max
          FROM kahuna.sequences s
         WHERE s.durability = v_durability AND s.name_hash = v_name_hash AND s.name = v_name;
        IF NOT FOUND THEN
            result.sqlstate := '42704';
            result.message := format('sequence %L (%s) does not exist', v_name, v_durability);
        ELSE
            result.sqlstate := '2200H';
            result.message := format(
                'sequence %L (%s) cannot hand out %s more value(s): current value %s, increment %s, max value %s',
                v_name, v_durability, v_count, v_current, v_increment,
                coalesce(v_max::text, '9223372036854775807 (int64)'));
        END IF;
        RETURN result;
    END IF;

    v_start := (v_current::numeric - v_increment::numeric * (v_count - 1))::bigint;
    result.allocation := ROW(v_name, v_start, v_current, v_count, v_revision)::kahuna.allocation;

    IF v_key IS NOT NULL THEN
        -- An expired entry of the same key is replaced: after the retention it allocates afresh.
        INSERT INTO kahuna.idempotency_keys AS k
               (durability, name, name_hash, key, start, "end", count, revision, created_at)
        VALUES (v_durability, v_name, v_name_hash, v_key, v_start, v_current, v_count, v_revision, now())
        ON CONFLICT (durability, name_hash, key) DO UPDATE
           SET start = excluded.start, "end" = excluded."end", count = excluded.count,
               revision = excluded.revision, created_at = excluded.created_at;
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION kahuna.try_reserve(text, bigint, text, text) IS
    'allocates like kahuna_reserve, but returns a failure as (sqlstate, message) instead of raising it';

-- Raises the failure of a reserve_result, or returns its allocation.
CREATE FUNCTION kahuna.allocation_or_raise(result kahuna.reserve_result) RETURNS kahuna.allocation
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF result.sqlstate IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = result.sqlstate, MESSAGE = result.message;
    END IF;
    RETURN result.allocation;
END
$$;

------------------------------------------------------------------------------------------
-- The user-facing functions
------------------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.kahuna_create(
    name text,
    initial_value bigint DEFAULT 0,
    increment bigint DEFAULT 1,
    max_value bigint DEFAULT NULL,
    durability text DEFAULT 'persistent'
) RETURNS kahuna.sequence
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_name text := kahuna.checked_name(kahuna_create.name);
    v_durability kahuna.durability := kahuna.checked_durability(kahuna_create.durability);
    -- NULL means the default, so that a client can pass an absent field through unchanged.
    v_initial bigint := coalesce(kahuna_create.initial_value, 0);
    v_increment bigint := coalesce(kahuna_create.increment, 1);
    v_max bigint := kahuna_create.max_value;
    result kahuna.sequence;
BEGIN
    IF v_increment <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('increment must be greater than 0, got %s', v_increment);
    END IF;
    IF v_max < v_initial THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('maxValue (%s) must not be less than initialValue (%s)', v_max, v_initial);
    END IF;

    INSERT INTO kahuna.sequences AS s
           (durability, name, name_hash, current_value, initial_value, increment, max_value)
    VALUES (v_durability, v_name, kahuna.name_hash(v_name), v_initial, v_initial, v_increment, v_max)
    ON CONFLICT (durability, name_hash) DO NOTHING
    RETURNING s.name, s.current_value, s.initial_value, s.increment, s.max_value, s.revision,
              s.durability, s.created_at, s.updated_at
         INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
            MESSAGE = format('sequence %L (%s) already exists', v_name, v_durability);
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.kahuna_create(text, bigint, bigint, bigint, text) IS
    'creates a sequence; its first value will be initial_value + increment';

CREATE FUNCTION @extschema@.kahuna_get(name text, durability text DEFAULT 'persistent')
RETURNS kahuna.sequence
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_name text := kahuna.checked_name(kahuna_get.name);
    v_durability kahuna.durability := kahuna.checked_durability(kahuna_get.durability);
    result kahuna.sequence;
BEGIN
    SELECT s.name, s.current_value, s.initial_value, s.increment, s.max_value, s.revision,
           s.durability, s.created_at, s.updated_at
      INTO result
      FROM kahuna.sequences s
     WHERE s.durability = v_durability AND s.name_hash = kahuna.name_hash(v_name) AND s.name = v_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('sequence %L (%s) does not exist', v_name, v_durability);
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.kahuna_get(text, text) IS 'reads a sequence';

CREATE FUNCTION @extschema@.kahuna_reserve(
    name text,
    count integer,
    idempotency_key text DEFAULT NULL,
    durability text DEFAULT 'persistent'
) RETURNS kahuna.allocation
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- plpgsql, not SQL: a SQL function with a SET clause, or called in FROM, parses and plans
    -- its body on every call, where plpgsql keeps its plans for the session.
    RETURN kahuna.allocation_or_raise(kahuna.try_reserve(
        kahuna_reserve.name, kahuna_reserve.count, kahuna_reserve.idempotency_key, kahuna_reserve.durability));
END
$$;
COMMENT ON FUNCTION @extschema@.kahuna_reserve(text, integer, text, text) IS
    'hands out count values as one contiguous run; a repeated idempotency key answers the same run';

CREATE FUNCTION @extschema@.kahuna_next(
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
COMMENT ON FUNCTION @extschema@.kahuna_next(text, text, text) IS
    'hands out the next value: kahuna_reserve(name, 1, idempotency_key, durability)';

CREATE FUNCTION @extschema@.kahuna_delete(name text, durability text DEFAULT 'persistent')
RETURNS kahuna.sequence
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_name text := kahuna.checked_name(kahuna_delete.name);
    v_durability kahuna.durability := kahuna.checked_durability(kahuna_delete.durability);
    result kahuna.sequence;
BEGIN
    PERFORM kahuna.lock_sequence(v_durability, v_name);
    DELETE FROM kahuna.sequences s
     WHERE s.durability = v_durability AND s.name_hash = kahuna.name_hash(v_name) AND s.name = v_name
    RETURNING s.name, s.current_value, s.initial_value, s.increment, s.max_value, s.revision,
              s.durability, s.created_at, s.updated_at
         INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'undefined_object',
            MESSAGE = format('sequence %L (%s) does not exist', v_name, v_durability);
    END IF;
    -- A re-created sequence of the same name must not replay the old one's keys.
    DELETE FROM kahuna.idempotency_keys k
     WHERE k.durability = v_durability AND k.name_hash = kahuna.name_hash(v_name) AND k.name = v_name;
    RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.kahuna_delete(text, text) IS
    'deletes a sequence and its idempotency keys; returns the sequence as it was';

------------------------------------------------------------------------------------------
-- Batches: many allocations on one sequence in one transaction (since 1.1)
------------------------------------------------------------------------------------------

-- A server that receives many concurrent allocations for one sequence runs them in one
-- transaction through this function: one commit (one WAL flush) for the whole batch
-- instead of one per call. The answer equals running the calls one after another in
-- array order: each gets its own outcome, and a failed call (bad key, key replayed with
-- another count, maxValue reached) fails alone without undoing the others.
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

------------------------------------------------------------------------------------------
-- Maintenance
------------------------------------------------------------------------------------------

CREATE FUNCTION kahuna.purge_idempotency_keys(batch_size integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    purged integer;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('batch_size must be at least 1, got %s', coalesce(batch_size::text, 'NULL'));
    END IF;
    WITH doomed AS (
        SELECT k.tableoid, k.ctid
          FROM kahuna.idempotency_keys k
         WHERE k.created_at <= now() - kahuna.idempotency_retention()
         ORDER BY k.created_at
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED
    )
    DELETE FROM kahuna.idempotency_keys k
     USING doomed d
     WHERE k.tableoid = d.tableoid AND k.ctid = d.ctid;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
COMMENT ON FUNCTION kahuna.purge_idempotency_keys(integer) IS
    'deletes at most batch_size expired idempotency keys, oldest first; call until it returns 0';
