-- view:    v1.control_summary, v1.ablation_summary
-- version: 1
-- what:    control_summary: per control prompt (one with control_of) and lens, the first
--          layer with control_margin > 0 and the largest margin.
--          ablation_summary: per prompt id and lens, its 'orig' variant against each other
--          variant (the seed's 'no_filler'): L_copy and L_semantic of both and the deltas
--          (variant - orig; NULL when either is NULL).
-- inputs:  v1.pure_next_token, v1.diagnostics
-- columns:
--   run_id                    the run
--   model                     the run's model
--   lens                      norm, final_ln or raw
--   prompt_id                 the control prompt
--   prompt_variant            its variant
--   control_of                the prompt id it is paired with
--   first_control_margin_pos  first layer with control_margin > 0 (NULL: never)
--   max_control_margin        the largest control_margin over layers
CREATE OR REPLACE VIEW v1.control_summary AS
SELECT run_id, model, lens, prompt_id, prompt_variant, control_of,
       min(layer) FILTER (WHERE control_margin > 0) AS first_control_margin_pos,
       max(control_margin) AS max_control_margin
FROM v1.pure_next_token
WHERE control_of IS NOT NULL
GROUP BY run_id, model, lens, prompt_id, prompt_variant, control_of;

-- columns:
--   run_id            the run
--   model             the run's model
--   lens              norm, final_ln or raw
--   prompt_id         the prompt id
--   ablation_variant  the variant compared with orig (e.g. no_filler)
--   L_copy_orig       L_copy of the orig variant
--   L_sem_orig        L_semantic of the orig variant
--   L_copy_nf         L_copy of the ablation variant
--   L_sem_nf          L_semantic of the ablation variant
--   delta_L_copy      L_copy_nf - L_copy_orig (NULL when either is NULL)
--   delta_L_sem       L_sem_nf - L_sem_orig (NULL when either is NULL)
CREATE OR REPLACE VIEW v1.ablation_summary AS
WITH d AS MATERIALIZED (SELECT run_id, model, lens, prompt_id, prompt_variant, L_copy, L_semantic FROM v1.diagnostics)
SELECT o.run_id, o.model, o.lens, o.prompt_id, a.prompt_variant AS ablation_variant,
       o.L_copy AS L_copy_orig, o.L_semantic AS L_sem_orig,
       a.L_copy AS L_copy_nf, a.L_semantic AS L_sem_nf,
       a.L_copy - o.L_copy AS delta_L_copy,
       a.L_semantic - o.L_semantic AS delta_L_sem
FROM d o
JOIN d a
  ON a.run_id = o.run_id AND a.lens = o.lens AND a.prompt_id = o.prompt_id
 AND o.prompt_variant = 'orig' AND a.prompt_variant <> 'orig';
