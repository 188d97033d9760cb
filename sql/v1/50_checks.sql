-- view:    v1.raw_lens_check, v1.raw_lens_summary, v1.last_layer_consistency
-- version: 1
-- what:    raw_lens_check: norm lens vs raw lens at each prompt's last position, per layer:
--          KL(norm || raw) in bits, top-1 agreement, p_top1 / p_answer / answer_rank /
--          is_answer of both; `sampled` marks the legacy sample layers (0, and 1 + c for c
--          in n//4, n//2, 3n//4). Imported legacy runs carry only their sampled rows.
--          raw_lens_summary: over the sampled layers, the first layer where only the norm
--          lens finds the answer, the largest KL, and lens_artifact_risk (high: such a layer
--          exists or max KL >= 1.0; medium: max KL >= 0.5; else low).
--          last_layer_consistency: each lens at the last layer vs the model's own head, at
--          the last position (warn_high_last_layer_kl: KL > 0.5 bits, the legacy rule).
--          Post sites only: the legacy check samples blocks, and the model's head reads the
--          residual after the last block.
-- inputs:  v1_base.records, v1_base.prompts, v1_base.finals, v1_base.consistency,
--          v1_base.legacy_raw_lens_samples, v1_base.manifest
-- columns:
--   run_id               the run
--   model                the run's model
--   prompt_id            the prompt
--   prompt_variant       the prompt's variant
--   layer                the layer
--   sampled              one of the legacy sample layers (0, 1 + n//4, 1 + n//2, 1 + 3n//4)
--   kl_norm_vs_raw_bits  KL(norm lens || raw lens) at the last position, bits
--   top1_agree           both lenses have the same top-1 token
--   p_top1_norm          top-1 probability, norm lens
--   p_top1_raw           top-1 probability, raw lens
--   p_answer_norm        gold first token probability, norm lens
--   p_answer_raw         gold first token probability, raw lens
--   answer_rank_norm     gold first token rank, norm lens
--   answer_rank_raw      gold first token rank, raw lens
--   is_answer_norm       is_answer of the norm lens
--   is_answer_raw        is_answer of the raw lens
CREATE OR REPLACE VIEW v1.raw_lens_check AS
WITH last_position AS (
    -- model in the join (a run has one), so that a filter on it reaches both scans
    SELECT r.run_id, r.model, r.prompt_id, r.prompt_variant, r.layer, r.lens, r.kl_vs_norm_bits,
           r.topk_ids[1] AS top1_id, r.topk_probs[1]::DOUBLE AS p_top1, r.p_answer::DOUBLE AS p_answer,
           r.answer_rank, v1.is_answer(r.answer_rank, r.topk_tokens[1], p.gold) AS is_answer
    FROM v1_base.records r
    JOIN v1_base.prompts p USING (run_id, model, prompt_id, prompt_variant)
    WHERE r.is_last_pos AND r.lens IN ('norm', 'raw') AND r.site = 'post'
), pairs AS (
    -- A layer's norm and raw rows side by side (one of each: a prompt has one last position),
    -- grouped in one pass over the records rather than joined (a self-join would read them
    -- twice, or through a materialized CTE that no filter on model or run_id reaches).
    SELECT run_id, model, prompt_id, prompt_variant, layer,
           any_value(kl_vs_norm_bits) FILTER (WHERE lens = 'raw') AS kl_norm_vs_raw_bits,
           any_value(top1_id) FILTER (WHERE lens = 'norm') = any_value(top1_id) FILTER (WHERE lens = 'raw') AS top1_agree,
           any_value(p_top1) FILTER (WHERE lens = 'norm') AS p_top1_norm,
           any_value(p_top1) FILTER (WHERE lens = 'raw') AS p_top1_raw,
           any_value(p_answer) FILTER (WHERE lens = 'norm') AS p_answer_norm,
           any_value(p_answer) FILTER (WHERE lens = 'raw') AS p_answer_raw,
           any_value(answer_rank) FILTER (WHERE lens = 'norm') AS answer_rank_norm,
           any_value(answer_rank) FILTER (WHERE lens = 'raw') AS answer_rank_raw,
           any_value(is_answer) FILTER (WHERE lens = 'norm') AS is_answer_norm,
           any_value(is_answer) FILTER (WHERE lens = 'raw') AS is_answer_raw
    FROM last_position
    GROUP BY run_id, model, prompt_id, prompt_variant, layer
    HAVING count(*) FILTER (WHERE lens = 'norm') > 0 AND count(*) FILTER (WHERE lens = 'raw') > 0
    UNION ALL BY NAME
    SELECT run_id, model, prompt_id, prompt_variant, layer, kl_norm_vs_raw_bits, top1_agree,
           p_top1_norm, p_top1_raw, p_answer_norm, p_answer_raw, answer_rank_norm, answer_rank_raw,
           is_answer_norm, is_answer_raw
    FROM v1_base.legacy_raw_lens_samples
)
SELECT p.run_id, p.model, p.prompt_id, p.prompt_variant, p.layer,
       p.layer = 0 OR p.layer IN (1 + m.n_layers // 4, 1 + m.n_layers // 2, 1 + (3 * m.n_layers) // 4) AS sampled,
       p.kl_norm_vs_raw_bits, p.top1_agree, p.p_top1_norm, p.p_top1_raw, p.p_answer_norm, p.p_answer_raw,
       p.answer_rank_norm, p.answer_rank_raw, p.is_answer_norm, p.is_answer_raw
FROM pairs p
JOIN v1_base.manifest m USING (run_id, model);

-- columns:
--   run_id                          the run
--   model                           the run's model
--   prompt_id                       the prompt
--   prompt_variant                  the prompt's variant
--   first_norm_only_semantic_layer  first sampled layer where only the norm lens finds the answer
--   max_kl_norm_vs_raw_bits         the largest KL(norm || raw) over the sampled layers, bits
--   lens_artifact_risk              high, medium or low (see this file's header)
CREATE OR REPLACE VIEW v1.raw_lens_summary AS
SELECT run_id, model, prompt_id, prompt_variant,
       min(layer) FILTER (WHERE is_answer_norm AND NOT is_answer_raw) AS first_norm_only_semantic_layer,
       max(kl_norm_vs_raw_bits) AS max_kl_norm_vs_raw_bits,
       CASE WHEN first_norm_only_semantic_layer IS NOT NULL OR max_kl_norm_vs_raw_bits >= 1.0 THEN 'high'
            WHEN max_kl_norm_vs_raw_bits >= 0.5 THEN 'medium'
            ELSE 'low' END AS lens_artifact_risk
FROM v1.raw_lens_check
WHERE sampled
GROUP BY run_id, model, prompt_id, prompt_variant;

-- columns:
--   run_id                            the run
--   model                             the run's model
--   prompt_id                         the prompt
--   prompt_variant                    the prompt's variant
--   lens                              the lens: its kind or its alias (the kinds: lensdb extract --help, --lens)
--   kl_to_final_bits                  KL(lens at the last layer || model head), bits
--   top1_agree                        the lens and the head have the same top-1 token
--   p_top1_lens                       top-1 probability of the lens
--   p_top1_model                      top-1 probability of the head
--   p_answer_lens                     gold first token probability of the lens
--   answer_rank_lens                  gold first token rank of the lens
--   temp_est                          the best scalar temperature for the lens logits
--   kl_after_temp_bits                KL after that temperature, bits
--   cfg_scale                         the config's final logit scale, if any
--   cfg_softcap                       the config's final logit softcap, if any
--   kl_after_scale_bits               KL after the scale, bits
--   kl_after_softcap_bits             KL after the softcap, bits
--   kl_after_scale_then_softcap_bits  KL after both, bits
--   warn_high_last_layer_kl           kl_to_final_bits > 0.5 (the legacy rule)
CREATE OR REPLACE VIEW v1.last_layer_consistency AS
SELECT r.run_id, r.model, r.prompt_id, r.prompt_variant, r.lens,
       r.kl_to_final_bits,
       CASE WHEN r.topk_ids IS NOT NULL AND f.topk_ids IS NOT NULL THEN r.topk_ids[1] = f.topk_ids[1]
            ELSE r.topk_tokens[1] = f.topk_tokens[1] END AS top1_agree,
       r.topk_probs[1]::DOUBLE AS p_top1_lens,
       f.topk_probs[1]::DOUBLE AS p_top1_model,
       r.p_answer::DOUBLE AS p_answer_lens,
       r.answer_rank AS answer_rank_lens,
       c.temp_est, c.kl_after_temp_bits, c.cfg_scale, c.cfg_softcap,
       c.kl_after_scale_bits, c.kl_after_softcap_bits, c.kl_after_scale_then_softcap_bits,
       r.kl_to_final_bits > 0.5 AS warn_high_last_layer_kl
FROM v1_base.records r  -- model in every join (a run has one): a filter on it reaches every scan
JOIN v1_base.manifest m ON m.run_id = r.run_id AND m.model = r.model AND r.layer = m.n_layers
JOIN v1_base.finals f
  ON f.run_id = r.run_id AND f.model = r.model AND f.prompt_id = r.prompt_id AND f.prompt_variant = r.prompt_variant
 AND f.temperature = 1.0
LEFT JOIN v1_base.consistency c
  ON c.run_id = r.run_id AND c.model = r.model AND c.prompt_id = r.prompt_id AND c.prompt_variant = r.prompt_variant
 AND c.lens = r.lens
WHERE r.is_last_pos AND r.site = 'post';
