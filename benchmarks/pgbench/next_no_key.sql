-- kahuna_next without an idempotency key, on one of :nseq Persistent sequences.
\set id random(1, :nseq)
SELECT kahuna_next('seq-' || :id);
