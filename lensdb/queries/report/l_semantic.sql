-- what:   the cross-model table's median L_semantic of a run's 'orig' prompts through one
--         lens, how many prompts have an L_semantic, and how many prompts there are.
-- params: $run, $lens
SELECT quantile_cont(L_semantic, 0.5) AS median_L_semantic, count(L_semantic) AS prompts_with_L_semantic, count(*) AS prompts
FROM v1.diagnostics WHERE run_id = $run AND lens = $lens AND prompt_variant = 'orig'
