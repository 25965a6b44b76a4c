-- kahuna_next with the same key every call: the set-up allocated it once, so every call
-- replays the recorded value and allocates nothing.
\set id random(1, :nseq)
SELECT kahuna_next('seq-' || :id, 'replayed');
