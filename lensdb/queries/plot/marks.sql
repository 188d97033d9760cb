-- what:   the v1.diagnostics layers a figure marks (L_copy, L_semantic) of one prompt and lens.
-- params: $marks (the column names: lensdb.plot.metrics.MARKS), $run, $prompt, $variant, $lens
SELECT COLUMNS(lambda c: list_contains($marks, c)) FROM v1.diagnostics
WHERE run_id = $run AND prompt_id = $prompt AND prompt_variant = $variant AND lens = $lens
