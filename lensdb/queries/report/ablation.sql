-- what:   the report's ablation deltas: per prompt of a run and ablation variant through one
--         lens, L_copy and L_semantic of the orig prompt and of the variant, and the deltas.
-- params: $run, $lens
SELECT prompt_id, ablation_variant, L_copy_orig, L_copy_nf AS L_copy_variant, delta_L_copy,
       L_sem_orig, L_sem_nf AS L_sem_variant, delta_L_sem
FROM v1.ablation_summary WHERE run_id = $run AND lens = $lens ORDER BY prompt_id, ablation_variant
