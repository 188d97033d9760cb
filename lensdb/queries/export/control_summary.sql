-- what:   the v1.control_summary row of one control prompt and lens (the JSON's control_summary block).
-- params: $run, $id (a prompt id), $variant, $lens
SELECT * FROM v1.control_summary WHERE run_id = $run AND prompt_id = $id AND prompt_variant = $variant AND lens = $lens
