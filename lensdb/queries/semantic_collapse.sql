-- what: cross-model table: per run and prompt (norm lens), where copying and the answer
--       collapse, relative depth of semantic collapse, and the KL and rank milestones.
SELECT d.model, d.run_id, d.prompt_id, d.prompt_variant, d.role,
       d.L_copy, d.L_copy_H, d.L_semantic, r.n_layers,
       round(d.L_semantic / r.n_layers, 3) AS L_semantic_frac,
       d.first_kl_below_1_0, d.first_rank_le_1, d.first_rank_le_5, d.gold_alignment
FROM v1.diagnostics d
JOIN v1.runs r USING (run_id)
WHERE d.lens = 'norm'
ORDER BY d.model, d.run_id, d.prompt_id, d.prompt_variant;
