-- what:   the report's control margins: per control prompt of a run and one lens, the first
--         layer with a positive margin and the largest margin.
-- params: $run, $lens
SELECT prompt_id, prompt_variant, control_of, first_control_margin_pos, max_control_margin
FROM v1.control_summary WHERE run_id = $run AND lens = $lens ORDER BY prompt_id, prompt_variant
