-- kahuna_reserve of a run of 100 values, without a key.
\set id random(1, :nseq)
SELECT start FROM kahuna_reserve('seq-' || :id, 100);
