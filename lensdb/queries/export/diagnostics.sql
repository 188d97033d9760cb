-- what:   the v1.diagnostics row of one prompt and lens (the JSON's diagnostics block).
-- params: $run, $id (a prompt id), $variant, $lens
SELECT * FROM v1.diagnostics WHERE run_id = $run AND prompt_id = $id AND prompt_variant = $variant AND lens = $lens
