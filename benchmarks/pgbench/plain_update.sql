-- Floor and reference: the plain UPDATE ... RETURNING of one row in a logged table.
\set id random(1, :nseq)
UPDATE bench.counters SET v = v + 1 WHERE id = :id RETURNING v;
