-- view:    v1.control_summary, v1.ablation_summary
-- version: 1
-- what:    control_summary: per control prompt (one with control_of) and lens, the first
--          layer with control_margin > 0 and the largest margin.
--          ablation_summary: per prompt id and lens, its 'orig' variant against each other
--          variant (the seed's 'no_filler'): L_copy and L_semantic of both and the deltas
--          (variant - orig; NULL when either is NULL).
--          Post sites only (first layers count blocks; diagnostics is post-only too).
-- inputs:  v1.pure_next_token, v1.diagnostics
-- columns:
--   run_id                    the run
--   model                     the run's model
--   lens                      the lens: its kind or its alias (the kinds: lensdb extract --help, --lens)
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
WHERE control_of IS NOT NULL AND site = 'post'
GROUP BY run_id, model, lens, prompt_id, prompt_variant, control_of;

-- columns:
--   run_id            the run
--   model             the run's model
--   lens              the lens: its kind or its alias (the kinds: lensdb extract --help, --lens)
--   prompt_id         the prompt id
--   ablation_variant  the variant compared with orig (e.g. no_filler)
--   L_copy_orig       L_copy of the orig variant
--   L_sem_orig        L_semantic of the orig variant
--   L_copy_nf         L_copy of the ablation variant
--   L_sem_nf          L_semantic of the ablation variant
--   delta_L_copy      L_copy_nf - L_copy_orig (NULL when either is NULL)
--   delta_L_sem       L_sem_nf - L_sem_orig (NULL when either is NULL)
CREATE OR REPLACE VIEW v1.ablation_summary AS
-- Each variant beside the orig row of its run, lens and prompt id (at most one: diagnostics
-- has one row per variant), through a window rather than a self-join: v1.diagnostics is
-- computed once, and a filter on model (a partition column) still prunes its files.
WITH d AS (
    SELECT run_id, model, lens, prompt_id, prompt_variant, L_copy, L_semantic,
           count(*) FILTER (WHERE prompt_variant = 'orig') OVER pair AS orig_rows,
           max(L_copy) FILTER (WHERE prompt_variant = 'orig') OVER pair AS L_copy_orig,
           max(L_semantic) FILTER (WHERE prompt_variant = 'orig') OVER pair AS L_sem_orig
    FROM v1.diagnostics
    WINDOW pair AS (PARTITION BY run_id, model, lens, prompt_id)
)
SELECT run_id, model, lens, prompt_id, prompt_variant AS ablation_variant,
       L_copy_orig, L_sem_orig,
       L_copy AS L_copy_nf, L_semantic AS L_sem_nf,
       L_copy - L_copy_orig AS delta_L_copy,
       L_semantic - L_sem_orig AS delta_L_sem
FROM d
WHERE orig_rows > 0 AND prompt_variant <> 'orig';
