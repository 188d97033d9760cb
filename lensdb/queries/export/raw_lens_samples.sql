-- what:   the sampled layers of one prompt's raw-vs-norm check (the raw_lens_check block's samples).
-- params: $run, $id (a prompt id), $variant
SELECT * FROM v1.raw_lens_check WHERE run_id = $run AND prompt_id = $id AND prompt_variant = $variant AND sampled ORDER BY layer
