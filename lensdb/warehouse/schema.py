"""The warehouse's Parquet tables, schema version 1.

Every run is one folder `runs/model=<model key>/run=<run id>/` holding one folder per
table (`<table>/part-NNNNN.parquet`). Columns that hold probabilities and entropies
are float32 (as the model computes them); KL divergences and other derived scalars
are float64. Every file carries `lensdb.schema_version` and `lensdb.table` in its
key-value metadata.

Tables (one row per ...):
  manifest                the run
  prompts                 prompt
  records                 prompt x lens x layer x position, at post sites (after each block)
  records_mid             the same at mid sites (after a block's attention, before its MLP:
                          --sites mid|all); layer = the block's number + 1. The site is the
                          table, not a column, so that the files of earlier runs (no such
                          column) still read under the views' first-file schema; v1.records
                          shows both with a `site` column
  finals                  prompt x temperature: the model's own next-token distribution
  consistency             prompt x lens: last-layer lens vs model head, the parts SQL cannot derive
  legacy_raw_lens_samples imported runs only: the legacy raw-vs-norm samples (raw records absent)
  residuals               prompt x layer x position (only with --keep-residuals); residuals_mid
                          the same at mid sites
  vocab                   vocabulary id: the tokenizer's piece and the decoded text (extract runs)
  group_tokens            tracked group x word x spacing variant: its first token (only with --track)
  token_groups            prompt x lens x layer x position x tracked group: mass, best token and rank
  answer_tokens           prompt x accepted answer x spacing variant: its first token (answer sets)
  answer_mass             prompt x lens x layer x position: the mass of the prompt's answer set
  attributions            prompt x position x target token x component: direct logit attribution (--attribution)

Outside runs, `lenses/<name>/lens.parquet` (LENSES, one row per layer) describes a tuned
lens stored by `lensdb train-lens --name` next to its config.json and params.pt.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

_str = pa.string()
_i32 = pa.int32()
_f32 = pa.float32()
_f64 = pa.float64()
_bool = pa.bool_()
_ts = pa.timestamp("us")  # UTC, tz-naive (timezone-aware values need pytz in DuckDB's Python client)

MANIFEST = pa.schema(
    [
        ("run_id", _str),
        ("model", _str),  # hub id, or the directory name of a local model (or --model-name)
        ("model_path", _str),  # absolute path of a local model directory
        ("model_revision", _str),  # hub commit hash, or "local-<fingerprint>"
        ("source", _str),  # "extract" or "legacy"
        ("status", _str),  # "committed"
        ("schema_version", _i32),
        ("created_at", _ts),
        ("finished_at", _ts),
        ("lensdb_version", _str),
        ("torch_version", _str),
        ("transformers_version", _str),
        ("transformer_lens_version", _str),
        ("model_class", _str),  # Hugging Face architecture, e.g. LlamaForCausalLM
        ("architecture", _str),  # "pre_norm" or "post_norm"
        ("n_layers", _i32),
        ("d_model", _i32),
        ("n_heads", _i32),
        ("d_vocab", _i32),
        ("n_ctx", _i32),
        ("dtype", _str),
        ("device", _str),
        ("lenses", pa.list_(_str)),
        ("top_k", _i32),
        ("prompt_set", _str),
        ("prompt_set_sha256", _str),
        ("seed", pa.int64()),
        ("unembed_dtype", _str),
        ("use_fp32_unembed", _bool),
        ("first_block_ln1_type", _str),
        ("final_ln_type", _str),
        # Provenance strings of the legacy JSON's diagnostics block.
        ("use_norm_lens", _bool),
        ("layernorm_bias_fix", _str),
        ("norm_alignment_fix", _str),
        ("layer0_norm_fix", _str),
        ("mixed_precision_fix", _str),
        ("layer0_position_info", _str),
        ("target_prediction", _str),
        # Last-layer consistency of the final-norm lens vs the model head, over all prompts.
        ("last_layer_max_kl_bits", _f64),
        ("last_layer_top1_agreement", _f64),
        ("last_layer_flagged", _bool),
        ("legacy_blocks", pa.list_(_str)),  # JSON blocks an imported legacy file had
        # The lens family: what each lens of the run is (JSON list of {name, kind, spec, sha256?,
        # origin?}) and the lens kl_vs_norm_bits compares with (norm by default; null: none).
        ("lens_details", _str),
        ("reference_lens", _str),
        ("unembed_precision", _str),  # "float32", or e.g. "float16 x2 split, float32 accumulation"
        ("source_files_sha256", _str),  # imported runs: sha256 of the legacy files' bytes (import-legacy skips a repeat)
        # Hash of the options that change the records (lensdb/run_settings.py); `lensdb sweep`
        # skips a model with a run of the same prompt-set and settings hashes. Null: legacy.
        ("settings_sha256", _str),
        ("world_size", _i32),  # processes that extracted the run (torchrun ranks); null: legacy
        # Where and how the model was loaded (extract runs; null for imported runs).
        ("device_map", _str),  # JSON object: module name -> device ("cuda:0", "cpu", "disk"); {"": device} for one device
        ("load_seconds", _f64),  # config, weights and bridge, up to the first prompt
        ("load_peak_host_rss_bytes", pa.int64()),  # peak resident host memory while loading
        ("peak_host_rss_bytes", pa.int64()),  # peak resident host memory of the run, load included
    ]
)

PROMPTS = pa.schema(
    [
        ("prompt_index", _i32),
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("role", _str),
        ("text", _str),
        ("gold", _str),
        ("control_of", _str),
        ("paired_variant", _str),  # variant of the prompt named by control_of
        ("temperatures", pa.list_(_f64)),
        ("n_tokens", _i32),
        ("token_ids", pa.list_(_i32)),
        ("tokens", pa.list_(_str)),
        ("context_ids", pa.list_(_i32)),  # the text's ids without special tokens (copy collapse, gold)
        ("gold_alignment", _str),  # "ok" or "unresolved"; null without gold
        ("gold_variant", _str),  # "with_space" or "no_space"
        ("gold_first_id", _i32),
        ("gold_answer_ids", pa.list_(_i32)),
        ("gold_pieces", pa.list_(_str)),
        ("paired_gold_first_id", _i32),
    ]
)

RECORDS = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("lens", _str),  # "norm", "final_ln" or "raw"
        ("layer", _i32),  # 0 = embeddings, i = after block i-1
        ("pos", _i32),
        ("is_last_pos", _bool),  # the prompt's last position ("pure next token"); stored in row groups of their own
        ("token_id", _i32),
        ("token", _str),
        ("entropy_bits", _f32),
        ("topk_ids", pa.list_(_i32)),
        ("topk_tokens", pa.list_(_str)),
        ("topk_probs", pa.list_(_f32)),
        ("p_answer", _f32),  # probability of the prompt's gold first token
        ("answer_rank", _i32),  # 1 + number of tokens with strictly larger probability
        ("p_paired_answer", _f32),  # same for the gold first token of the prompt named by control_of
        ("paired_answer_rank", _i32),
        ("kl_to_final_bits", _f64),  # KL(layer || model's final distribution at this position)
        ("cos_to_final", _f32),  # cosine of this layer's logits and the model's final logits
        ("kl_vs_norm_bits", _f64),  # KL(norm lens || this lens) at the same layer and position
        ("legacy_copy_collapse", _bool),  # imported runs only: the legacy flag (token ids unknown)
    ]
)

FINALS = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("temperature", _f64),  # 1.0 = the model's own distribution
        ("entropy_bits", _f32),
        ("topk_ids", pa.list_(_i32)),
        ("topk_tokens", pa.list_(_str)),
        ("topk_probs", pa.list_(_f32)),
    ]
)

CONSISTENCY = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("lens", _str),
        ("temp_est", _f64),  # best scalar temperature of the last-layer lens logits
        ("kl_after_temp_bits", _f64),
        ("cfg_scale", _f64),  # the config's final logit scale, if any
        ("cfg_softcap", _f64),  # the config's final logit softcap, if any
        ("kl_after_scale_bits", _f64),
        ("kl_after_softcap_bits", _f64),
        ("kl_after_scale_then_softcap_bits", _f64),
    ]
)

LEGACY_RAW_LENS_SAMPLES = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("layer", _i32),
        ("kl_norm_vs_raw_bits", _f64),
        ("top1_agree", _bool),
        ("p_top1_norm", _f64),
        ("p_top1_raw", _f64),
        ("p_answer_norm", _f64),
        ("p_answer_raw", _f64),
        ("answer_rank_norm", _i32),
        ("answer_rank_raw", _i32),
        ("is_answer_norm", _bool),
        ("is_answer_raw", _bool),
    ]
)


# Records keep decoded strings (what the legacy files show); the raw pieces keep what decoding
# loses, e.g. SentencePiece's word-start marker ("▁Lily" decodes to "Lily", "▁" to "").
VOCAB = pa.schema(
    [
        ("token_id", _i32),
        ("piece", _str),  # tokenizer.convert_ids_to_tokens(id); null for ids beyond the tokenizer
        ("text", _str),  # the id decoded on its own, as records' token / topk_tokens hold it
    ]
)

# A stored tuned lens: one row per layer 0..n_layers (and per mid site 1..n_layers), its training settings repeated.
LENSES = pa.schema(
    [
        ("lens", _str),  # the name it is stored under (`lenses/<lens>/`)
        ("model", _str),
        ("model_path", _str),
        ("model_revision", _str),
        ("created_at", _ts),
        ("lensdb_version", _str),
        ("torch_version", _str),
        ("device", _str),
        ("dtype", _str),  # the model's dtype in training (the translators are float32)
        ("n_layers", _i32),
        ("d_model", _i32),
        ("lens_sha256", _str),  # sha256 of params.pt
        ("unembed_hash", _str),  # tuned-lens's fingerprint of the unembedding
        ("corpus", _str),  # the --text file
        ("corpus_sha256", _str),
        ("train_tokens", pa.int64()),  # tokens of the training windows (one pass)
        ("eval_tokens", pa.int64()),  # tokens of the held-out windows
        ("steps", _i32),
        ("tokens_per_step", pa.int64()),
        ("seq_len", _i32),
        ("lr", _f64),  # --lr: tuned-lens's lr scale; SGD runs at lr x (1 - momentum)
        ("momentum", _f64),
        ("weight_decay", _f64),
        ("seed", pa.int64()),
        ("train_seconds", _f64),
        ("layer", _i32),  # 0 = embeddings, i = after block i-1; n_layers: identity translator
        ("kl_bits", _f64),  # held-out mean KL(model's final distribution || tuned lens), bits
        ("final_ln_kl_bits", _f64),  # the same for the final_ln logit lens
        ("train_kl_bits", _f64),  # mean KL(final || tuned lens) over the last training step; NULL at n_layers
        ("site", _str),  # post, or mid (train-lens --sites all: block layer-1's residual between attention and MLP)
    ]
)


# Token groups (--track, lensdb/extract/groups.py). Words resolve to their first token in both
# spacing variants; a word that does not tokenize has a null token_id (tokenized = false).
GROUP_TOKENS = pa.schema(
    [
        ("group_name", _str),  # the --track NAME
        ("word", _str),
        ("variant", _str),  # "no_space" (the word as given) or "with_space" (" " + word)
        ("token_id", _i32),  # its first non-blank token; null: the word does not tokenize
        ("token", _str),  # that id decoded on its own
        ("tokenized", _bool),
        ("source", _str),  # "inline" or the word file's path
    ]
)

TOKEN_GROUPS = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("lens", _str),
        ("layer", _i32),
        ("site", _str),  # "post": the residual after the block (as records.layer counts)
        ("pos", _i32),
        ("is_last_pos", _bool),
        ("group_name", _str),  # the --track NAME
        ("mass", _f32),  # total probability of the group's tokens over the full distribution
        ("best_rank", _i32),  # rank of the group's most probable token (1 + tokens strictly above); null: no token
        ("best_token_id", _i32),  # the group's most probable token; null: the group has no token
        ("best_token", _str),
    ]
)

# A prompt's answer set: every accepted gold answer (prompts.gold, a string or a list) in
# both spacing variants, resolved as tracked words are.
ANSWER_TOKENS = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("answer", _str),
        ("variant", _str),  # "no_space" or "with_space"
        ("token_id", _i32),  # null: the answer does not tokenize
        ("token", _str),
        ("tokenized", _bool),
    ]
)

ANSWER_MASS = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("lens", _str),
        ("layer", _i32),
        ("site", _str),
        ("pos", _i32),
        ("is_last_pos", _bool),
        ("mass", _f32),  # total probability of the distinct tokens of the prompt's answer set
    ]
)


# Direct logit attribution (--attribution, lensdb/extract/attribution.py): per component, what
# it adds to the residual stream read through the final norm with its last-layer scale.
# sum(contribution) over a (prompt, pos, target) = logit - logit_offset.
ATTRIBUTIONS = pa.schema(
    [
        ("prompt_id", _str),
        ("prompt_variant", _str),
        ("pos", _i32),
        ("is_last_pos", _bool),
        ("target", _str),  # "gold" (the prompt's gold first token), "top1" (the model's own top token here) or "group"
        ("group_name", _str),  # target "group": the tracked group whose most probable final token this is
        ("token_id", _i32),
        ("token", _str),
        ("component", _str),  # "embed", "attn" or "mlp"
        ("block", _i32),  # the block of attn / mlp (0-based); null for embed
        ("layer", _i32),  # where it lands: 0 for embed, block + 1 for attn (mid site) and mlp (post site)
        ("contribution", _f32),  # W_U[:, t] . (g * centre(component) / sigma_final), logit units
        ("logit", _f32),  # the token's logit through the final norm at the last layer (before any softcap)
        ("logit_offset", _f32),  # beta . W_U[:, t] + b_U[t]: the part of the logit no component writes
    ]
)


def residuals_schema(value_type: pa.DataType, d_model: int) -> pa.Schema:
    return pa.schema(
        [
            ("prompt_id", _str),
            ("prompt_variant", _str),
            ("layer", _i32),
            ("pos", _i32),
            ("resid", pa.list_(value_type, d_model)),
        ]
    )


TABLES: dict[str, pa.Schema] = {
    "manifest": MANIFEST,
    "prompts": PROMPTS,
    "records": RECORDS,
    "records_mid": RECORDS,
    "finals": FINALS,
    "consistency": CONSISTENCY,
    "legacy_raw_lens_samples": LEGACY_RAW_LENS_SAMPLES,
    "residuals": residuals_schema(_f32, 1),
    "residuals_mid": residuals_schema(_f32, 1),
    "vocab": VOCAB,
    "group_tokens": GROUP_TOKENS,
    "token_groups": TOKEN_GROUPS,
    "answer_tokens": ANSWER_TOKENS,
    "answer_mass": ANSWER_MASS,
    "attributions": ATTRIBUTIONS,
}


def with_metadata(schema: pa.Schema, table: str) -> pa.Schema:
    return schema.with_metadata({b"lensdb.schema_version": str(SCHEMA_VERSION).encode(), b"lensdb.table": table.encode()})


def parquet_bytes(table: pa.Table, **options) -> bytes:
    """A table as the bytes of one Parquet file."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()
