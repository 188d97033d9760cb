-- what:   the median L_semantic over a run's prompts of one lens and variant (a curve's
--         dashed line), and how many prompts have one.
-- params: $run, $lens, $variant, $prompts (a list of prompt ids, or NULL for every prompt)
SELECT quantile_cont(L_semantic, 0.5) AS l_semantic, count(L_semantic) AS n
FROM v1.diagnostics
WHERE run_id = $run AND lens = $lens AND prompt_variant = $variant
  AND ($prompts IS NULL OR list_contains($prompts, prompt_id))
