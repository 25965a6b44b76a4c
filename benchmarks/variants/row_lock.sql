-- Experiment: kahuna.try_reserve with its advisory lock replaced by a row lock: SELECT ...
-- FOR UPDATE of the sequence's row, still taken before the key is read. Applied to the
-- installed definition, so it follows the SQL as long as the lock line is unchanged.
CREATE OR REPLACE FUNCTION pg_temp.patch(f regprocedure, old text, new text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    def text := pg_catalog.pg_get_functiondef(f);
BEGIN
    IF pg_catalog.strpos(def, old) = 0 THEN
        RAISE EXCEPTION 'this variant is out of date: % no longer contains %', f, old;
    END IF;
    EXECUTE pg_catalog.replace(def, old, new);
END
$$;

SELECT pg_temp.patch(
    'kahuna.try_reserve(text, bigint, text, text)',
    'PERFORM kahuna.lock_sequence(v_durability, v_name);',
    'PERFORM 1 FROM kahuna.sequences s
      WHERE s.durability = v_durability AND s.name_hash = v_name_hash AND s.name = v_name
        FOR UPDATE;');
