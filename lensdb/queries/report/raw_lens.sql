-- what:   the report's raw-vs-norm table: per prompt of a run (in the prompt set's order), the
--         first layer only the norm lens reads the answer at, the largest KL(norm || raw)
--         and the artifact risk.
-- params: $run
SELECT s.prompt_id, s.prompt_variant, s.first_norm_only_semantic_layer, s.max_kl_norm_vs_raw_bits, s.lens_artifact_risk
FROM v1.raw_lens_summary s JOIN v1.prompts p USING (run_id, prompt_id, prompt_variant)
WHERE s.run_id = $run ORDER BY p.prompt_index
