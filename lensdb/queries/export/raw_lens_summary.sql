-- what:   the v1.raw_lens_summary row of one prompt (the raw_lens_check block's summary).
-- params: $run, $id (a prompt id), $variant
SELECT * FROM v1.raw_lens_summary WHERE run_id = $run AND prompt_id = $id AND prompt_variant = $variant
