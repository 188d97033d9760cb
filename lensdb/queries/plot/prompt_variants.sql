-- what:   the variants of one prompt of a run, by name.
-- params: $run, $prompt
SELECT prompt_variant FROM v1.prompts WHERE run_id = $run AND prompt_id = $prompt ORDER BY prompt_variant
