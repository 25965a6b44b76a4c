-- Floor: a native PostgreSQL sequence (not transactional, WAL-logged every 32 values).
\set id random(1, :nseq)
SELECT nextval(('bench.s' || :id)::regclass);
