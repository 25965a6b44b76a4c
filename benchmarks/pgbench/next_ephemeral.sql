-- kahuna_next without a key on an Ephemeral sequence (UNLOGGED table).
\set id random(1, :nseq)
SELECT kahuna_next('seq-' || :id, NULL, 'ephemeral');
