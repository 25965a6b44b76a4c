-- Experiment: every kahuna function without its `SET search_path = pg_catalog, pg_temp`
-- clause, to measure what the clauses cost. NOT safe as it stands: the functions would then
-- resolve names in the caller's search_path.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
          FROM pg_catalog.pg_proc p
         WHERE p.proconfig IS NOT NULL
           AND (p.pronamespace = 'kahuna'::regnamespace OR p.proname LIKE 'kahuna\_%')
    LOOP
        EXECUTE format('ALTER FUNCTION %s RESET search_path', f);
    END LOOP;
END
$$;
