-- what:   the vocabulary pieces of some token ids of a run (v1.vocab).
-- params: $run, $ids (a list of token ids)
SELECT token_id, piece FROM v1.vocab WHERE run_id = $run AND list_contains($ids, token_id)
