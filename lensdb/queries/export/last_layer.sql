-- what:   the v1.last_layer_consistency row of one prompt and lens (the JSON's
--         diagnostics.last_layer_consistency block).
-- params: $run, $id (a prompt id), $variant, $lens
SELECT * FROM v1.last_layer_consistency WHERE run_id = $run AND prompt_id = $id AND prompt_variant = $variant AND lens = $lens
