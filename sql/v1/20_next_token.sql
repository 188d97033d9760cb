-- view:    v1.pure_next_token, v1.pure_next_token_with(threshold, margin, k), helper macros
-- version: 1
-- what:    every layer of every prompt's last position ("pure next token"), with the flags
--          and metrics of the original experiment:
--            copy_collapse     the top-1 ids of the last k layers (this one included) occur
--                              contiguously in the prompt's ids (without special tokens), AND
--                              p_top1 > threshold AND p_top1 - p_top2 > margin, AND the top-1
--                              token is not whitespace/punctuation only. v1 defaults: 0.95,
--                              0.10, k = 1. Imported legacy runs have no token ids: their
--                              copy_collapse is the legacy file's own flag.
--            entropy_collapse  entropy_bits <= 1.0
--            is_answer         answer_rank = 1; without a gold id, top-1 token stripped = gold
--            p_top1, p_top5    the largest probability; the 5 largest summed in float32 in
--                              the order torch's CPU sum uses ((p1+p5)+p2)+p3)+p4, as the
--                              legacy files have it
--            control_margin    p_answer - p_paired_answer, for prompts with control_of
--          Per layer and site: both sites' rows (post, and mid with --sites mid|all); the
--          copy rule's window of k layers runs over the layers of one site.
-- inputs:  v1_base.records (is_last_pos rows), v1_base.prompts

-- Python's str.isspace() characters plus ASCII punctuation (string.punctuation).
CREATE OR REPLACE MACRO v1.is_blank_or_punct(token) AS
    regexp_full_match(coalesce(token, ''), '[\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}!-/:-@\[-`{-~]*');

-- Python's str.strip(): whitespace removed at both ends.
CREATE OR REPLACE MACRO v1.strip(token) AS
    regexp_replace(token, '^[\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}]+|[\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}]+$', '', 'g');

-- Does the id list `id_window` occur contiguously in `ids`?
CREATE OR REPLACE MACRO v1.occurs_in(id_window, ids) AS
    len(id_window) > 0
    AND contains(',' || array_to_string(ids, ',') || ',', ',' || array_to_string(id_window, ',') || ',');

CREATE OR REPLACE MACRO v1.is_answer(answer_rank, top1_token, gold) AS
    CASE WHEN answer_rank IS NOT NULL THEN answer_rank = 1
         WHEN gold IS NOT NULL THEN v1.strip(top1_token) = gold END;

CREATE OR REPLACE MACRO v1.p_top5(probs) AS
    CASE WHEN len(probs) >= 5
         THEN ((((probs[1] + probs[5]) + probs[2]) + probs[3]) + probs[4])
         ELSE list_reduce(probs, lambda a, b: a + b) END;

-- 1 - the listed probabilities summed in order in float64, never below 0 (legacy rest_mass).
CREATE OR REPLACE MACRO v1.rest_mass(probs) AS
    greatest(0.0, 1.0 - list_reduce(list_transform(probs, lambda p: p::DOUBLE), lambda a, b: a + b, 0.0::DOUBLE));

-- columns:
--   run_id              the run
--   model               the run's model
--   prompt_id           the prompt
--   prompt_variant      the prompt's variant
--   role                the prompt's role (pos, ctl, test, ...)
--   lens                the lens: its kind or its alias (the kinds: lensdb extract --help, --lens)
--   layer               0 = embeddings, i = the residual after block i-1 (mid: block i-1's)
--   site                post (after the block) or mid (after its attention, before its MLP)
--   pos                 the prompt's last position
--   entropy_bits        entropy of the lens distribution, bits
--   topk_ids            top-k token ids, most probable first (NULL in imported runs)
--   topk_tokens         those tokens decoded
--   topk_probs          their probabilities
--   copy_collapse       the copy rule fires (see this file's header)
--   entropy_collapse    entropy_bits <= 1.0
--   is_answer           answer_rank = 1; without a gold id, the stripped top-1 token = gold
--   p_top1              the largest probability
--   p_top5              the 5 largest summed (float32, in the legacy order)
--   p_answer            probability of the gold first token
--   kl_to_final_bits    KL(this layer || the model's final distribution), bits
--   answer_rank         rank of the gold first token (1 = top)
--   cos_to_final        cosine of this layer's logits and the model's final logits
--   control_margin      p_answer - p_paired_answer, for prompts with control_of
--   p_paired_answer     probability of the paired prompt's gold first token
--   paired_answer_rank  its rank
--   kl_vs_norm_bits     KL(norm lens || this lens), bits
--   gold                the expected answer string
--   gold_alignment      ok or unresolved (NULL: no gold)
--   control_of          the prompt id a control is paired with
CREATE OR REPLACE MACRO v1.pure_next_token_with(threshold := 0.95, margin := 0.10, k := 1) AS TABLE
WITH history AS (  -- only for k <> 1, and narrow: a window sorts all of its input
    SELECT run_id, model, prompt_id, prompt_variant, lens, layer, site,
           list(topk_ids[1]) OVER (PARTITION BY run_id, model, prompt_id, prompt_variant, lens, site
                                   ORDER BY layer ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS top1_history
    FROM v1_base.records
    WHERE is_last_pos AND k <> 1
), last_position AS (
    SELECT r.run_id, r.model, r.prompt_id, r.prompt_variant, p.role, r.lens, r.layer, r.site, r.pos,
           r.entropy_bits, r.topk_ids, r.topk_tokens, r.topk_probs, r.p_answer, r.answer_rank,
           r.p_paired_answer, r.paired_answer_rank, r.kl_to_final_bits, r.cos_to_final, r.kl_vs_norm_bits,
           r.legacy_copy_collapse, p.context_ids, p.gold, p.gold_alignment, p.control_of,
           CASE WHEN k = 1 THEN [r.topk_ids[1]] ELSE h.top1_history END AS top1_history  -- k = 1: no window
    FROM v1_base.records r
    -- model in every join (a run has one), so that a filter on it reaches every scan
    JOIN v1_base.prompts p USING (run_id, model, prompt_id, prompt_variant)
    LEFT JOIN history h USING (run_id, model, prompt_id, prompt_variant, lens, layer, site)
    WHERE r.is_last_pos
)
SELECT run_id, model, prompt_id, prompt_variant, role, lens, layer, site, pos, entropy_bits,
       topk_ids, topk_tokens, topk_probs,
       -- The token and id tests (a regex, string matching) run only where the probabilities pass.
       CASE WHEN topk_ids IS NULL THEN legacy_copy_collapse
            WHEN coalesce(topk_probs[1]::DOUBLE > threshold::DOUBLE
                          AND topk_probs[1]::DOUBLE - coalesce(topk_probs[2], 0)::DOUBLE > margin::DOUBLE, false)
            THEN coalesce(
                NOT v1.is_blank_or_punct(topk_tokens[1])
                AND v1.occurs_in(list_slice(top1_history, greatest(1, len(top1_history) - k + 1), len(top1_history)),
                                 context_ids),
                false)
            ELSE false
       END AS copy_collapse,
       entropy_bits <= 1.0 AS entropy_collapse,
       v1.is_answer(answer_rank, topk_tokens[1], gold) AS is_answer,
       topk_probs[1] AS p_top1,
       v1.p_top5(topk_probs) AS p_top5,
       p_answer, kl_to_final_bits, answer_rank, cos_to_final,
       CASE WHEN control_of IS NOT NULL THEN p_answer::DOUBLE - p_paired_answer::DOUBLE END AS control_margin,
       p_paired_answer, paired_answer_rank, kl_vs_norm_bits, gold, gold_alignment, control_of
FROM last_position;

-- columns: v1.pure_next_token_with
CREATE OR REPLACE VIEW v1.pure_next_token AS
SELECT * FROM v1.pure_next_token_with();
