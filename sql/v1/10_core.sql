-- view:    v1.runs, v1.prompts, v1.records, v1.residuals, v1.final_predictions
-- version: 1
-- what:    the stored data of committed runs, one row per run / prompt / record /
--          residual vector / final distribution (temperature 1.0 is the model's own).
-- inputs:  v1_base.*
CREATE SCHEMA IF NOT EXISTS v1;

CREATE OR REPLACE VIEW v1.runs AS
SELECT * FROM v1_base.manifest;

CREATE OR REPLACE VIEW v1.prompts AS
SELECT run_id, model, prompt_id, prompt_variant, role, text, gold, gold_first_id, gold_alignment, n_tokens,
       prompt_index, control_of, paired_variant, temperatures, token_ids, tokens, context_ids,
       gold_variant, gold_answer_ids, gold_pieces, paired_gold_first_id
FROM v1_base.prompts;

CREATE OR REPLACE VIEW v1.records AS
SELECT run_id, model, prompt_id, prompt_variant, lens, layer, pos, token_id, token, entropy_bits,
       topk_ids, topk_tokens, topk_probs, p_answer, answer_rank, kl_to_final_bits, cos_to_final,
       p_paired_answer, paired_answer_rank, kl_vs_norm_bits, is_last_pos
FROM v1_base.records;

CREATE OR REPLACE VIEW v1.residuals AS
SELECT run_id, model, prompt_id, prompt_variant, layer, pos, resid
FROM v1_base.residuals;

CREATE OR REPLACE VIEW v1.final_predictions AS
SELECT f.run_id, f.model, f.prompt_id, f.prompt_variant, p.role, p.prompt_index, p.text, f.temperature,
       f.entropy_bits, f.topk_ids, f.topk_tokens, f.topk_probs
FROM v1_base.finals f
JOIN v1_base.prompts p USING (run_id, prompt_id, prompt_variant);
