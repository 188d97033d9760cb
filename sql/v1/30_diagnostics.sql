-- view:    v1.diagnostics, v1.diagnostics_with(threshold, margin, k)
-- version: 1
-- what:    per run x prompt x lens, the first layer at which each rule fires (NULL: never):
--            L_copy (copy_collapse), L_copy_H (entropy_collapse), L_semantic (is_answer),
--            delta_layers = L_semantic - L_copy, first_kl_below_0_5 / _1_0 (kl_to_final_bits
--            <= 0.5 / 1.0), first_rank_le_1 / _5 / _10 (answer_rank <= 1 / 5 / 10),
--          and the copy rule's parameters (copy_thresh, copy_margin, copy_window_k,
--          copy_match_level).
--          Post sites only: the layers are blocks, as in the original experiment (mid
--          sites would move a first layer half a block earlier).
-- inputs:  v1.pure_next_token_with
-- columns:
--   run_id              the run
--   model               the run's model
--   prompt_id           the prompt
--   prompt_variant      the prompt's variant
--   role                the prompt's role
--   lens                the lens: its kind or its alias (the kinds: lensdb extract --help, --lens)
--   L_copy              first layer with copy_collapse (NULL: never)
--   L_copy_H            first layer with entropy_collapse
--   L_semantic          first layer with is_answer
--   delta_layers        L_semantic - L_copy
--   first_kl_below_0_5  first layer with kl_to_final_bits <= 0.5
--   first_kl_below_1_0  first layer with kl_to_final_bits <= 1.0
--   first_rank_le_1     first layer with answer_rank <= 1
--   first_rank_le_5     first layer with answer_rank <= 5
--   first_rank_le_10    first layer with answer_rank <= 10
--   gold_alignment      ok or unresolved (NULL: no gold)
--   copy_thresh         the copy rule's probability threshold
--   copy_margin         the copy rule's p1 - p2 margin
--   copy_window_k       the copy rule's window of layers
--   copy_match_level    how the window is matched (id_subsequence)
CREATE OR REPLACE MACRO v1.diagnostics_with(threshold := 0.95, margin := 0.10, k := 1) AS TABLE
SELECT run_id, model, prompt_id, prompt_variant, any_value(role) AS role, lens,
       min(layer) FILTER (WHERE copy_collapse) AS L_copy,
       min(layer) FILTER (WHERE entropy_collapse) AS L_copy_H,
       min(layer) FILTER (WHERE is_answer) AS L_semantic,
       L_semantic - L_copy AS delta_layers,
       min(layer) FILTER (WHERE kl_to_final_bits <= 0.5) AS first_kl_below_0_5,
       min(layer) FILTER (WHERE kl_to_final_bits <= 1.0) AS first_kl_below_1_0,
       min(layer) FILTER (WHERE answer_rank <= 1) AS first_rank_le_1,
       min(layer) FILTER (WHERE answer_rank <= 5) AS first_rank_le_5,
       min(layer) FILTER (WHERE answer_rank <= 10) AS first_rank_le_10,
       any_value(gold_alignment) AS gold_alignment,
       threshold::DOUBLE AS copy_thresh,
       margin::DOUBLE AS copy_margin,
       k::INTEGER AS copy_window_k,
       'id_subsequence' AS copy_match_level
FROM v1.pure_next_token_with(threshold, margin, k)
WHERE site = 'post'
GROUP BY run_id, model, prompt_id, prompt_variant, lens;

-- columns: v1.diagnostics_with
CREATE OR REPLACE VIEW v1.diagnostics AS
SELECT * FROM v1.diagnostics_with();
