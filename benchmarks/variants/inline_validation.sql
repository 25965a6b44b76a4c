-- Experiment, on top of recommended.sql: the two plpgsql validation helpers of the
-- allocation path (name_problem, durability_or_null) as inlinable SQL as well, every
-- function and operator schema-qualified, so that try_reserve calls no helper at all.
CREATE OR REPLACE FUNCTION kahuna.name_problem(trimmed_name text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN trimmed_name IS NULL THEN 'name is required'
        WHEN trimmed_name OPERATOR(pg_catalog.=) '' THEN 'name must not be empty'
        WHEN pg_catalog.char_length(trimmed_name) OPERATOR(pg_catalog.>) 1024
            THEN pg_catalog.format('name must be at most 1024 characters, got %s', pg_catalog.char_length(trimmed_name))
        WHEN trimmed_name OPERATOR(pg_catalog.~) '[\u0001-\u001f\u007f-\u009f]'
            THEN 'name must not contain control characters'
    END
$$;

CREATE OR REPLACE FUNCTION kahuna.durability_or_null(durability text) RETURNS kahuna.durability
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN pg_catalog.lower(pg_catalog.btrim(coalesce(durability, 'persistent')))
             OPERATOR(pg_catalog.=) ANY ('{persistent,0,1}'::pg_catalog.text[])
            THEN 'Persistent'::kahuna.durability
        WHEN pg_catalog.lower(pg_catalog.btrim(coalesce(durability, 'persistent')))
             OPERATOR(pg_catalog.=) ANY ('{ephemeral,2}'::pg_catalog.text[])
            THEN 'Ephemeral'::kahuna.durability
    END
$$;
