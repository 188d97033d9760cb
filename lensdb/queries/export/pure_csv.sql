-- what:   the pure-next-token CSV's rows: the last position of every prompt but the test
--         prompts, per layer (post sites: the legacy files know no other) of one lens: the narrow top-k, its rest mass and the metrics.
-- params: $metric_columns (lensdb.legacy.format.PURE_METRIC_COLUMNS), $run, $lens,
--         $test_role ('test'), $narrow_k
SELECT n.prompt_id, n.prompt_variant, n.layer, n.pos, n.entropy_bits,
       list_slice(n.topk_tokens, 1, $narrow_k) AS topk_tokens,
       list_slice(n.topk_probs, 1, $narrow_k) AS topk_probs,
       v1.rest_mass(list_slice(n.topk_probs, 1, $narrow_k)) AS rest_mass,
       COLUMNS(lambda c: list_contains($metric_columns, c))
FROM v1.pure_next_token n
JOIN v1.prompts p USING (run_id, prompt_id, prompt_variant)
WHERE n.run_id = $run AND n.lens = $lens AND n.site = 'post' AND p.role <> $test_role
ORDER BY p.prompt_index, n.layer
