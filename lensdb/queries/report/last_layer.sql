-- what:   the report's last-layer check: per prompt of a run and lens, the last layer's lens
--         distribution against the model's own (KL, top-1 agreement, temperature and softcap fits).
-- params: $run
SELECT c.prompt_id, c.prompt_variant, c.lens, c.kl_to_final_bits, c.top1_agree, c.p_top1_lens, c.p_top1_model,
       c.temp_est, c.kl_after_temp_bits, c.cfg_softcap, c.kl_after_softcap_bits, c.warn_high_last_layer_kl
FROM v1.last_layer_consistency c JOIN v1.prompts p USING (run_id, prompt_id, prompt_variant)
WHERE c.run_id = $run ORDER BY p.prompt_index, c.lens
