-- what:   the report's diagnostics table: per prompt of a run (in the prompt set's order)
--         through one lens, the layers where copying and the answer collapse, and the KL and
--         rank milestones.
-- params: $run, $lens
SELECT d.prompt_id, d.prompt_variant, d.role, d.L_copy, d.L_copy_H, d.L_semantic, d.delta_layers,
       d.first_kl_below_0_5, d.first_kl_below_1_0, d.first_rank_le_1, d.first_rank_le_5, d.first_rank_le_10, d.gold_alignment
FROM v1.diagnostics d JOIN v1.prompts p USING (run_id, prompt_id, prompt_variant)
WHERE d.run_id = $run AND d.lens = $lens ORDER BY p.prompt_index
