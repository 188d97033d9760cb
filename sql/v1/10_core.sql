-- view:    v1.runs, v1.latest_runs, v1.prompts, v1.records, v1.residuals, v1.final_predictions,
--          v1.vocab
-- version: 1
-- what:    the stored data of committed runs, one row per run / prompt / record /
--          residual vector / final distribution (temperature 1.0 is the model's own) /
--          vocabulary id. latest_runs: the latest committed run of each model and prompt set.
--          records and residuals: every site (post, and mid with --sites mid|all).
-- inputs:  v1_base.*
CREATE SCHEMA IF NOT EXISTS v1;

-- columns:
--   run_id                     the run's id (UTC start time and a random suffix, or --run-id)
--   model                      hub id, local directory name or --model-name
--   model_path                 absolute path of a local model directory (NULL for hub models)
--   model_revision             hub commit hash, or local-<fingerprint> of a local directory
--   source                     extract, or legacy (import-legacy)
--   status                     committed (the views show nothing else)
--   schema_version             warehouse schema version the run was written with
--   created_at                 start of the run, UTC
--   finished_at                end of the run (its commit), UTC
--   lensdb_version             lensdb version that wrote the run
--   torch_version              torch version (extract runs)
--   transformers_version       transformers version (extract runs)
--   transformer_lens_version   transformer-lens version (extract runs)
--   model_class                Hugging Face architecture, e.g. LlamaForCausalLM
--   architecture               pre_norm or post_norm
--   n_layers                   transformer blocks; records have layers 0..n_layers
--   d_model                    residual stream width
--   n_heads                    attention heads per block
--   d_vocab                    vocabulary size of the unembedding
--   n_ctx                      context length of the model
--   dtype                      dtype the model ran in
--   device                     device the model ran on
--   lenses                     lenses extracted (norm, final_ln, raw)
--   top_k                      tokens kept per record
--   prompt_set                 prompt set name (legacy for imported runs)
--   prompt_set_sha256          hash of the prompt set's prompts
--   seed                       torch seed set before loading
--   unembed_dtype              dtype of the unembedding matmul
--   use_fp32_unembed           the unembedding ran in float32 while the model did not
--   first_block_ln1_type       norm class of block 0's first norm
--   final_ln_type              norm class of the final norm
--   use_norm_lens              the norm lens was used (legacy diagnostics field)
--   layernorm_bias_fix         legacy provenance string
--   norm_alignment_fix         legacy provenance string
--   layer0_norm_fix            legacy provenance string
--   mixed_precision_fix        legacy provenance string
--   layer0_position_info       legacy provenance string: what layer 0 holds
--   target_prediction          legacy provenance string: what the records predict
--   last_layer_max_kl_bits     final_ln lens at the last layer vs the model head: largest KL over prompts
--   last_layer_top1_agreement  same: share of prompts whose top-1 token agrees
--   last_layer_flagged         that KL is above 1e-3 bits (e.g. a soft-capped head)
--   legacy_blocks              imported runs: the JSON blocks the legacy file had
--   source_files_sha256        imported runs: hash of the legacy files (import-legacy skips a repeat)
--   lens_details               JSON list of the run's lenses: name, kind, spec (tuned: sha256, origin, sites)
--   reference_lens             the lens kl_vs_norm_bits compares with (norm by default; NULL: none)
--   unembed_precision          how lens logits were computed: float32, or a half-precision split
--   settings_sha256            hash of the options that change records (lensdb sweep skips a repeat)
--   world_size                 processes that extracted the run (torchrun ranks; NULL: legacy)
--   device_map                 JSON: module -> device (cuda:0, cpu, disk) where the weights were placed
--   load_seconds               config, weights and bridge, up to the first prompt
--   load_peak_host_rss_bytes   peak resident host memory while loading
--   peak_host_rss_bytes        peak resident host memory of the run, load included
--   is_latest                  the latest committed run of its model and prompt set
CREATE OR REPLACE VIEW v1.runs AS
SELECT * FROM v1_base.manifest;

-- columns: v1.runs
CREATE OR REPLACE VIEW v1.latest_runs AS
SELECT * FROM v1_base.manifest WHERE is_latest;

-- columns:
--   run_id                the run
--   model                 the run's model
--   prompt_id             the prompt's id in its set
--   prompt_variant        variant of the id (orig, or e.g. no_filler for an ablation)
--   role                  pos, ctl (a control), test, ...
--   text                  the prompt text
--   gold                  the expected answer string (NULL: none)
--   gold_first_id         the gold answer's first token id (p_answer and answer_rank use it)
--   gold_alignment        ok, or unresolved (the answer could not be tokenized after the prompt)
--   n_tokens              tokens of the prompt, special tokens included
--   prompt_index          position of the prompt in its set
--   control_of            the prompt id a control is paired with
--   paired_variant        the variant of that paired prompt
--   temperatures          extra temperatures of v1.final_predictions
--   token_ids             the model's input ids
--   tokens                those ids decoded one by one
--   context_ids           the text's ids without special tokens (copy collapse looks here)
--   gold_variant          with_space or no_space: how the answer was tokenized
--   gold_answer_ids       every token id of the answer
--   gold_pieces           the answer's tokenizer pieces
--   paired_gold_first_id  the paired prompt's gold first id (p_paired_answer uses it)
CREATE OR REPLACE VIEW v1.prompts AS
SELECT run_id, model, prompt_id, prompt_variant, role, text, gold, gold_first_id, gold_alignment, n_tokens,
       prompt_index, control_of, paired_variant, temperatures, token_ids, tokens, context_ids,
       gold_variant, gold_answer_ids, gold_pieces, paired_gold_first_id
FROM v1_base.prompts;

-- columns:
--   run_id              the run
--   model               the run's model
--   prompt_id           the prompt
--   prompt_variant      the prompt's variant
--   lens                the lens: its kind or its alias (the kinds: lensdb extract --help, --lens)
--   layer               0 = embeddings, i = the residual after block i-1 (mid: block i-1's)
--   site                post (after the block) or mid (after its attention, before its MLP)
--   pos                 token position in the prompt (0-based)
--   token_id            the input token at this position
--   token               that token decoded (NULL in imported runs' last positions)
--   entropy_bits        entropy of the lens distribution, bits
--   topk_ids            top-k token ids, most probable first (NULL in imported runs)
--   topk_tokens         those tokens decoded (raw pieces: v1.vocab)
--   topk_probs          their probabilities
--   p_answer            probability of the prompt's gold first token
--   answer_rank         its rank: 1 + the number of tokens with a larger probability
--   kl_to_final_bits    KL(this layer || the model's final distribution), bits
--   cos_to_final        cosine of this layer's logits and the model's final logits
--   p_paired_answer     probability of the paired prompt's gold first token (controls)
--   paired_answer_rank  its rank
--   kl_vs_norm_bits     KL(norm lens || this lens) at the same layer and position, bits
--   is_last_pos         the prompt's last position (the next-token prediction)
CREATE OR REPLACE VIEW v1.records AS
SELECT run_id, model, prompt_id, prompt_variant, lens, layer, site, pos, token_id, token, entropy_bits,
       topk_ids, topk_tokens, topk_probs, p_answer, answer_rank, kl_to_final_bits, cos_to_final,
       p_paired_answer, paired_answer_rank, kl_vs_norm_bits, is_last_pos
FROM v1_base.records;

-- columns:
--   run_id          the run
--   model           the run's model
--   prompt_id       the prompt
--   prompt_variant  the prompt's variant
--   layer           0 = embeddings, i = the residual after block i-1 (mid: block i-1's)
--   site            post (after the block) or mid (after its attention, before its MLP)
--   pos             token position
--   resid           the residual vector (model dtype; bfloat16 widened to float32)
CREATE OR REPLACE VIEW v1.residuals AS
SELECT run_id, model, prompt_id, prompt_variant, layer, site, pos, resid
FROM v1_base.residuals;

-- columns:
--   run_id          the run
--   model           the run's model
--   prompt_id       the prompt
--   prompt_variant  the prompt's variant
--   role            the prompt's role
--   prompt_index    position of the prompt in its set
--   text            the prompt text
--   temperature     1.0: the model's own distribution; others: logits / temperature
--   entropy_bits    entropy of that distribution, bits
--   topk_ids        top token ids, most probable first
--   topk_tokens     those tokens decoded
--   topk_probs      their probabilities
CREATE OR REPLACE VIEW v1.final_predictions AS
SELECT f.run_id, f.model, f.prompt_id, f.prompt_variant, p.role, p.prompt_index, p.text, f.temperature,
       f.entropy_bits, f.topk_ids, f.topk_tokens, f.topk_probs
FROM v1_base.finals f  -- model in the join (a run has one), so that a filter on it reaches both scans
JOIN v1_base.prompts p USING (run_id, model, prompt_id, prompt_variant);

-- columns:
--   run_id    the run (extract runs; imported runs have no token ids)
--   model     the run's model
--   token_id  vocabulary id (join with token_id / topk_ids of other views)
--   piece     the tokenizer's own piece, e.g. '▁Lily' or 'Ġthe' (NULL beyond the tokenizer)
--   text      the id decoded on its own, as token / topk_tokens hold it ('▁' decodes to '')
CREATE OR REPLACE VIEW v1.vocab AS
SELECT run_id, model, token_id, piece, text
FROM v1_base.vocab;
