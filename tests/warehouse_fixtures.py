"""A small, deterministic warehouse written with the real writer, for the view tests.

`build_warehouse(path)` writes four committed runs with lensdb.warehouse.writer.RunWriter
(records appended as extract does: last-position rows in `next-*.parquet`) plus two runs
that must stay invisible. Every record at a prompt's last position is written by hand
below; the other positions hold "trap" rows (top-1 = the prompt's own token at p 0.99,
answer rank 1, KL 0, raw KL vs norm 9.0) that would fire every rule if a view read them.

Runs: a-run1 (org/model-a, folder model=org%2Fmodel-a, 4 layers, lenses norm + raw,
top-5), a-run2 (org/model-a, norm + final_ln), b-run1 (model-b, 2 layers, norm, top-3,
residuals), legacy-run1 (legacy/llama-mini, source 'legacy'). Hidden: a-crashed (left in
_staging/ with a manifest) and b-crashed (in runs/ without a manifest).

Edge cases, where the golden files (tests/golden/<view>.json) show them, and why:

 1. Copy collapse at layer 0 -- v1.diagnostics (a-run1, copy0, orig, norm): L_copy 0
    (' simply', id 11, is in the context [4, 5, 11]; p1 0.97 > 0.95; p1 - p2 0.96 > 0.10),
    L_copy_H 0 (entropy 0.3 <= 1), L_semantic 2, delta_layers 2; first_kl_below_1_0 2 and
    first_kl_below_0_5 3 (KL exactly 1.0 / 0.5: "<="), first_rank_le_10 1 (rank exactly 10),
    first_rank_le_5 2.
 2. k = 2 differs from k = 1 -- (a-run1, window, orig, norm): v1.diagnostics L_copy 1
    (' France' at p 0.98); v1.diagnostics_with(0.5, 0.05, k 2) L_copy 2: the window
    [' x', ' France'] (ids 19, 7) is not contiguous in [7, 5, 13], [7, 5] at layer 2 is.
    At layer 0 the window holds one id (the legacy rolling window), so copy0/orig keeps
    L_copy 0 with k = 2; copy0/no_filler and a-run2 copy0 norm lose theirs (NULL).
 3. Whitespace / punctuation top-1 -- v1.pure_next_token (a-run1, blank, norm): ' ' p 0.99,
    ',' p 0.98, '\\n' p 0.97 at layers 0-2, all in the context: copy_collapse false; the
    first copy is ' the' at layer 3, so v1.diagnostics L_copy 3 (diagnostics_with: NULL,
    the window ['\\n', ' the'] is not in the context).
 4. Margin -- (a-run1, margin, norm): layer 0 p1 0.97, p2 0.90 (p1 - p2 = 0.07 <= 0.10; not
    a real distribution, on purpose): no copy; layer 1 p1 = float32(0.95) = 0.9499999881 is
    not > 0.95: no copy; layer 2 p1 0.951: copy, so L_copy 2. diagnostics_with (margin
    0.05, threshold 0.5): L_copy 0. Entropy exactly 1.0 at layer 1: L_copy_H 1.
 5. Unresolved gold -- (a-run1, unresolved): gold 'Rome', gold_alignment 'unresolved', no
    gold ids, so p_answer / answer_rank are NULL and is_answer is the stripped top-1 token
    = 'Rome': false for ' Italy' (layers 0, 1), true for ' Rome' (layer 2): L_semantic 2,
    first_rank_le_* NULL. The raw lens says ' Rome' only from layer 3: v1.raw_lens_summary
    first_norm_only_semantic_layer 2, risk 'high'.
 6. KL never below a threshold -- (a-run1, nogold): KL >= 1.0000001 at every layer:
    first_kl_below_0_5 / _1_0 NULL; no gold: is_answer NULL, L_semantic NULL,
    gold_alignment NULL. v1.last_layer_consistency: KL 1.5 > 0.5 -> warn_high_last_layer_kl
    true, top1_agree false (' w' vs the head's ' v').
 7. Ties in rank -- (a-run1, ties, norm, layer 1): ' x' and ' Berlin' both at 0.35, so the
    gold's rank is 1 (1 + number of strictly larger) while the top-1 is ' x': is_answer
    true, L_semantic 1 = first_rank_le_1 (raw lens: 0.40 vs 0.30, rank 2).
 8. Control with margins -- v1.control_summary (a-run1, norm, ctl, control_of copy0):
    margins -0.01, 0 (a tie: not > 0), 0.4, 0.7, 0.55 -> first_control_margin_pos 2,
    max_control_margin 0.7000000104308128 (float32 0.8 - float32 0.1 in double); raw lens
    2 / 0.6499999985098839; (b-run1, base_ctl): -0.2, 0, 0.5 -> 2 / 0.5000000223517418.
 9. Ablation -- v1.ablation_summary (a-run1, norm, copy0, no_filler): L_copy 0 -> 2,
    L_sem 2 -> 3, deltas 2 and 1; raw lens: L_copy NULL on both sides -> delta_L_copy NULL;
    legacy-run1: L_copy 1 -> NULL -> delta NULL, delta_L_sem 1.
10. Norm vs raw lens -- sampled layers for 4 layers: 0, 2, 3, 4 (1 + 4//4 = 2, 1 + 4//2 = 3,
    1 + 3*4//4 = 4); v1.raw_lens_check has layer 1 with sampled false. v1.raw_lens_summary
    (a-run1): copy0/orig KL 5.0 at layer 1 is ignored -> max 0.7 'medium'; blank max exactly
    1.0 -> 'high'; margin max exactly 0.5 -> 'medium'; nogold 0.49 -> 'low'; ties: the norm
    lens alone answers at layers 1 (ignored) and 3 -> 3, 'high'; ctl: only at layer 1 ->
    NULL, 'low'; window -> 3. legacy-run1 reads legacy_raw_lens_samples: layer 2 -> 'high'.
    a-run2 (no raw lens) and b-run1 have no rows.
11. Finals -- v1.final_predictions: a-run1 copy0/orig at temperatures 0.5 and 1.0, a-run2
    copy0 at 1.0 and 2.0; v1.last_layer_consistency compares with temperature 1.0 only.
12. Consistency rows -- v1.last_layer_consistency: temp_est / kl_after_* from the
    consistency table per lens (a-run2: cfg_softcap 30.0); a-run2 norm KL 0.7 -> warn true,
    final_ln top-1 'Berlin' vs head ' Berlin' -> top1_agree false; legacy-run1 has no
    consistency rows -> those columns NULL.
13. Legacy run -- legacy-run1: topk_ids NULL, so copy_collapse is the legacy flag: layer 0
    (' simply' at 0.99, flag false) false, layer 1 (p 0.2, flag true) true -> L_copy 1 with
    any threshold / margin / k; last_layer_consistency compares top-1 tokens (true).
14. Several models and runs -- v1.runs: 4 runs of 3 models with fixed timestamps; 'org/model-a'
    is read back from its percent-encoded folder in every table.
15. Crashed runs -- a-crashed (_staging/) and b-crashed (no manifest) are in no view
    (test_hidden_runs_never_show); their rows would copy and answer at layer 0.
16. Other -- b-run1 has top-3 lists: p_top5 is their plain sum (0.982 at base layer 0);
    top-5 lists sum ((p1 + p5) + p2 + p3) + p4 in float32. v1.residuals: b-run1's 18
    vectors of 2 floats.
17. Latest runs -- v1.latest_runs: a-run2 (org/model-a's later run of prompt set 'fixture'),
    b-run1 and legacy-run1; v1.runs marks them is_latest.
18. Vocabulary -- v1.vocab: the 32 ids of each extract run (a-run1, a-run2, b-run1; none for
    legacy-run1): piece '▁Berlin' for text ' Berlin', '<0x0A>' for '\\n', a bare '▁' (id 28)
    for '', no piece for ids 29..31.
19. Stored tuned lenses -- v1.lenses: lenses/story-lens (model-b, 2 layers: rows for layers
    0, 1, 2 with their settings; held-out KL NULL at every layer, as when the corpus had a
    single window) and lenses/tiny-lens (org/model-a, 4 layers). Hidden: a lens staged
    under _lens_training/ (a training killed before its rename) and a lens.parquet two
    folders down outside lenses/ (notes/stray/lens.parquet), which the view's glob reaches.
20. Token groups and attribution -- b-run1 only (the other runs have none, as runs without
    --track / --attribution): v1.group_tokens with a word that does not tokenize in one
    variant (token_id NULL, tokenized false); v1.token_groups at base's last position plus a
    non-last row without a best token (NULL rank and id); v1.answer_tokens / answer_mass for
    base's two answers; v1.attributions of base's top-1 token, whose contributions add up to
    logit - logit_offset, and v1.attribution_by_layer: layer 0 embed 0.25, layer 1 attn 0.5
    mlp -0.125 (cumulative 0.625), layer 2 attn 1.0 mlp 0.625 (cumulative 2.25 = 2.5 - 0.25).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lensdb.warehouse import layout, schema
from lensdb.warehouse.writer import RunWriter

# ----------------------------------------------------------------------------------------
# Vocabulary shared by every fixture model (ids -> decoded strings).
VOCAB = [
    "<s>",  # 0
    " The",  # 1
    " capital",  # 2
    " of",  # 3
    " Germany",  # 4
    " is",  # 5
    " Berlin",  # 6
    " France",  # 7
    " Paris",  # 8
    " ",  # 9   whitespace only
    ",",  # 10  punctuation only
    " simply",  # 11
    "Berlin",  # 12
    " called",  # 13
    "\n",  # 14  whitespace only
    "...",  # 15  punctuation only
    " the",  # 16
    " Italy",  # 17
    " Rome",  # 18
    " x",  # 19
    " y",  # 20
    " z",  # 21
    " w",  # 22
    " v",  # 23
    "Rome",  # 24
    " u",  # 25
    " t",  # 26
    " s",  # 27
]
D_VOCAB = 32  # ids 28..31 decode to "" (never listed)
# The tokenizer's own pieces (v1.vocab), SentencePiece style: a word-start "▁" that decoding
# turns into a space, byte pieces; id 28 is a bare "▁" (decodes to ""), 29..31 are beyond
# the tokenizer (embedding rows only: no piece).
PIECES = [("<0x0A>" if text == "\n" else text.replace(" ", "▁")) for text in VOCAB] + ["▁", None, None, None]
FILLERS = (19, 20, 21, 22, 23, 25, 26, 27)  # ids used to pad a top-k list
FILLER_PROBS = (0.002, 0.001, 0.0005, 0.00025, 0.000125, 0.0000625, 0.00003125, 0.000015625)

MODEL_A = "org/model-a"  # a '/' in the id: its folder is model=org%2Fmodel-a
MODEL_B = "model-b"
MODEL_LEGACY = "legacy/llama-mini"

RUN_A1 = "a-run1"
RUN_A2 = "a-run2"
RUN_B1 = "b-run1"
RUN_LEGACY = "legacy-run1"
RUN_STAGED = "a-crashed"  # left in _staging/ (a process killed before its commit)
RUN_NO_MANIFEST = "b-crashed"  # a folder in runs/ without a manifest
COMMITTED_RUNS = (RUN_A1, RUN_A2, RUN_B1, RUN_LEGACY)
HIDDEN_RUNS = (RUN_STAGED, RUN_NO_MANIFEST)

# ----------------------------------------------------------------------------------------
# Building blocks


@dataclass
class Layer:
    """One record at a prompt's last position (one lens, one layer)."""

    ids: list[int]  # top-k ids, probabilities descending (padded to the run's top_k)
    probs: list[float]
    entropy: float
    kl: float  # kl_to_final_bits
    cos: float = 0.5
    p_answer: float | None = None  # None: derived from the list when the gold id is listed
    rank: int | None = None  # None: derived likewise (1 + number of strictly larger probs)
    p_paired: float | None = None
    paired_rank: int | None = None
    kl_vs_norm: float | None = None  # raw / final_ln lenses only
    legacy_copy: bool | None = None  # legacy runs only


def L(ids, probs, H, kl, **more) -> Layer:  # noqa: N802 - short name for the tables below
    return Layer(list(ids), list(probs), H, kl, **more)


@dataclass
class Prompt:
    prompt_id: str
    context_ids: list[int]
    gold: str | None = None
    gold_first_id: int | None = None
    gold_alignment: str | None = None  # "ok" / "unresolved" / None (no gold)
    variant: str = "orig"
    role: str = "main"
    control_of: str | None = None
    paired_variant: str | None = None
    paired_gold_first_id: int | None = None
    temperatures: list[float] = field(default_factory=list)
    bos: bool = True
    last: dict[str, list[Layer]] = field(default_factory=dict)  # lens -> one Layer per layer 0..n_layers
    finals: dict[float, tuple[list[int], list[float], float]] = field(default_factory=dict)  # T -> (ids, probs, entropy)
    consistency: dict[str, dict] = field(default_factory=dict)  # lens -> consistency row values

    @property
    def token_ids(self) -> list[int]:
        return ([0] if self.bos else []) + self.context_ids

    @property
    def text(self) -> str:
        return "".join(VOCAB[i] for i in self.context_ids)


@dataclass
class Run:
    run_id: str
    model: str
    n_layers: int
    lenses: list[str]
    top_k: int
    prompts: list[Prompt]
    created_at: datetime
    source: str = "extract"
    residuals_d_model: int | None = None
    legacy_raw_samples: list[dict] = field(default_factory=list)
    last_layer_max_kl_bits: float = 0.0


def _pad(ids: list[int], probs: list[float], top_k: int) -> tuple[list[int], list[float]]:
    ids, probs = list(ids), list(probs)
    fillers = [i for i in FILLERS if i not in ids]
    filler_probs = [p for p in FILLER_PROBS if p <= probs[-1]] or [probs[-1] / 2]
    while len(ids) < top_k:
        ids.append(fillers.pop(0))
        probs.append(filler_probs.pop(0) if len(filler_probs) > 1 else filler_probs[0])
    assert len(set(ids)) == len(ids) and probs == sorted(probs, reverse=True), (ids, probs)
    return ids[:top_k], probs[:top_k]


def _rank_of(token: int | None, ids: list[int], probs: list[float], p: float | None, rank: int | None):
    """(p, rank) of `token`: given values win, else from the list (1 + strictly larger probabilities)."""
    if token is None:
        return None, None
    if token in ids:
        p_listed = probs[ids.index(token)]
        return (p_listed if p is None else p), (rank if rank is not None else 1 + sum(q > p_listed for q in probs))
    assert p is not None and rank is not None, f"token {token} is not listed: give p and rank"
    return p, rank


def _trap_layer(token_id: int, answer: int | None, paired: int | None, lens: str) -> Layer:
    """Not-last positions: values that would fire every rule if a view read them."""
    return Layer(
        ids=[token_id],
        probs=[0.99],
        entropy=0.05,
        kl=0.0,
        cos=1.0,
        p_answer=0.99 if answer is not None else None,
        rank=1 if answer is not None else None,
        p_paired=0.99 if paired is not None else None,
        paired_rank=1 if paired is not None else None,
        kl_vs_norm=9.0 if lens != "norm" else None,
    )


def _records(run: Run) -> pa.Table:
    rows = []
    legacy = run.source == "legacy"
    compare_with_norm = "norm" in run.lenses and len(run.lenses) > 1
    for prompt in run.prompts:
        token_ids = prompt.token_ids
        last_pos = len(token_ids) - 1
        for lens in run.lenses:
            layers = prompt.last[lens]
            assert len(layers) == run.n_layers + 1, (run.run_id, prompt.prompt_id, lens)
            for layer in range(run.n_layers + 1):
                for pos, token_id in enumerate(token_ids):
                    is_last = pos == last_pos
                    rec = layers[layer] if is_last else _trap_layer(
                        token_id, prompt.gold_first_id, prompt.paired_gold_first_id, lens
                    )
                    ids, probs = _pad(rec.ids, rec.probs, run.top_k)
                    p_answer, rank = _rank_of(prompt.gold_first_id, ids, probs, rec.p_answer, rec.rank)
                    p_paired, paired_rank = _rank_of(
                        prompt.paired_gold_first_id, ids, probs, rec.p_paired, rec.paired_rank
                    )
                    if lens == "norm":
                        kl_vs_norm = 0.0 if compare_with_norm else None
                    else:
                        kl_vs_norm = rec.kl_vs_norm
                    rows.append(
                        {
                            "prompt_id": prompt.prompt_id,
                            "prompt_variant": prompt.variant,
                            "lens": lens,
                            "layer": layer,
                            "pos": pos,
                            "is_last_pos": is_last,
                            "token_id": None if legacy else token_id,
                            "token": VOCAB[token_id],
                            "entropy_bits": rec.entropy,
                            "topk_ids": None if legacy else ids,
                            "topk_tokens": [VOCAB[i] for i in ids],
                            "topk_probs": probs,
                            "p_answer": p_answer,
                            "answer_rank": rank,
                            "p_paired_answer": p_paired,
                            "paired_answer_rank": paired_rank,
                            "kl_to_final_bits": rec.kl,
                            "cos_to_final": rec.cos,
                            "kl_vs_norm_bits": kl_vs_norm,
                            "legacy_copy_collapse": (bool(rec.legacy_copy) if is_last else None) if legacy else None,
                        }
                    )
    return pa.Table.from_pylist(rows, schema=schema.RECORDS)


def append_records(writer: RunWriter, table: pa.Table) -> None:
    """As lensdb.extract.engine.append_records: last-position rows in a file of their own."""
    last = table.column("is_last_pos")
    writer.append("records", table.filter(last), schema.RECORDS, part="next")
    writer.append("records", table.filter(pc.invert(last)), schema.RECORDS)


def _prompts(run: Run) -> pa.Table:
    rows = []
    for index, p in enumerate(run.prompts):
        ok = p.gold_alignment == "ok"
        rows.append(
            {
                "prompt_index": index,
                "prompt_id": p.prompt_id,
                "prompt_variant": p.variant,
                "role": p.role,
                "text": p.text,
                "gold": p.gold,
                "control_of": p.control_of,
                "paired_variant": p.paired_variant,
                "temperatures": p.temperatures,
                "n_tokens": len(p.token_ids),
                "token_ids": p.token_ids,
                "tokens": [VOCAB[i] for i in p.token_ids],
                "context_ids": None if run.source == "legacy" else p.context_ids,
                "gold_alignment": p.gold_alignment,
                "gold_variant": ("with_space" if VOCAB[p.gold_first_id].startswith(" ") else "no_space") if ok else None,
                "gold_first_id": p.gold_first_id,
                "gold_answer_ids": [p.gold_first_id] if ok else None,
                "gold_pieces": [VOCAB[p.gold_first_id]] if ok else None,
                "paired_gold_first_id": p.paired_gold_first_id,
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.PROMPTS)


def _finals(run: Run) -> pa.Table:
    rows = []
    for p in run.prompts:
        assert set(p.finals) == {1.0, *p.temperatures}, p.prompt_id
        for temperature in (1.0, *p.temperatures):
            ids, probs, entropy = p.finals[temperature]
            ids, probs = _pad(ids, probs, max(run.top_k, 5))
            rows.append(
                {
                    "prompt_id": p.prompt_id,
                    "prompt_variant": p.variant,
                    "temperature": temperature,
                    "entropy_bits": entropy,
                    "topk_ids": None if run.source == "legacy" else ids,
                    "topk_tokens": [VOCAB[i] for i in ids],
                    "topk_probs": probs,
                }
            )
    return pa.Table.from_pylist(rows, schema=schema.FINALS)


def _consistency(run: Run) -> pa.Table:
    rows = [
        {"prompt_id": p.prompt_id, "prompt_variant": p.variant, "lens": lens, **values}
        for p in run.prompts
        for lens, values in p.consistency.items()
    ]
    return pa.Table.from_pylist(rows, schema=schema.CONSISTENCY)


def _residuals(run: Run) -> pa.Table:
    d = run.residuals_d_model
    rows = [
        {
            "prompt_id": p.prompt_id,
            "prompt_variant": p.variant,
            "layer": layer,
            "pos": pos,
            "resid": [float(layer) + pos / 4 + i / 8 for i in range(d)],
        }
        for p in run.prompts
        for layer in range(run.n_layers + 1)
        for pos in range(len(p.token_ids))
    ]
    return pa.Table.from_pylist(rows, schema=schema.residuals_schema(pa.float32(), d))


def manifest_table(run: Run) -> pa.Table:
    legacy = run.source == "legacy"
    row = {
        "run_id": run.run_id,
        "model": run.model,
        "model_path": None if legacy else f"/models/{run.model}",
        "model_revision": "legacy" if legacy else "local-0123abcd",
        "source": run.source,
        "status": "committed",
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": run.created_at,
        "finished_at": run.created_at.replace(second=59),
        "lensdb_version": "0.1.0",
        "torch_version": None if legacy else "2.5.0",
        "transformers_version": None if legacy else "5.0.0",
        "transformer_lens_version": None if legacy else "4.3.0",
        "model_class": "LlamaForCausalLM",
        "architecture": "pre_norm",
        "n_layers": run.n_layers,
        "d_model": run.residuals_d_model or 16,
        "n_heads": 2,
        "d_vocab": D_VOCAB,
        "n_ctx": 64,
        "dtype": "float32",
        "device": "cpu",
        "lenses": run.lenses,
        "top_k": run.top_k,
        "prompt_set": "fixture",
        "prompt_set_sha256": "0" * 64,
        "seed": 316,
        "unembed_dtype": "torch.float32",
        "use_fp32_unembed": False,
        "first_block_ln1_type": "RMSNorm",
        "final_ln_type": "RMSNorm",
        "use_norm_lens": "norm" in run.lenses,
        "layernorm_bias_fix": "not_needed_rms_model",
        "norm_alignment_fix": "using_ln2_rmsnorm_for_post_block",
        "layer0_norm_fix": "using_real_ln1_on_embeddings",
        "mixed_precision_fix": "casting_to_fp32_before_unembed",
        "layer0_position_info": "token_only_rotary_model",
        "target_prediction": "first unseen token (likely 'Berlin')",
        "last_layer_max_kl_bits": run.last_layer_max_kl_bits,
        "last_layer_top1_agreement": 1.0,
        "last_layer_flagged": run.last_layer_max_kl_bits > 1e-3,
        "legacy_blocks": ["diagnostics", "raw_lens_check", "final_prediction"] if legacy else None,
    }
    return pa.Table.from_pylist([row], schema=schema.MANIFEST)


def _vocab() -> pa.Table:
    return pa.Table.from_pydict(
        {"token_id": list(range(D_VOCAB)), "piece": PIECES, "text": VOCAB + [""] * (D_VOCAB - len(VOCAB))}, schema=schema.VOCAB
    )


def _stage(writer: RunWriter, run: Run) -> None:
    """Append every table of `run` as extract (or import-legacy) writes them."""
    writer.write("prompts", _prompts(run), schema.PROMPTS)
    if run.source == "extract":
        writer.write("vocab", _vocab(), schema.VOCAB)
    append_records(writer, _records(run))
    writer.append("finals", _finals(run), schema.FINALS)
    consistency = _consistency(run)
    if consistency.num_rows:
        writer.append("consistency", consistency, schema.CONSISTENCY)
    if run.residuals_d_model:
        writer.append("residuals", _residuals(run), schema.residuals_schema(pa.float32(), run.residuals_d_model))
    if run.legacy_raw_samples:
        writer.append(
            "legacy_raw_lens_samples",
            pa.Table.from_pylist(run.legacy_raw_samples, schema=schema.LEGACY_RAW_LENS_SAMPLES),
            schema.LEGACY_RAW_LENS_SAMPLES,
        )
    if run.run_id == RUN_B1:
        _stage_groups_and_attribution(writer)


def _stage_groups_and_attribution(writer: RunWriter) -> None:
    """b-run1 tracks one group and carries attributions (issue 20), written by hand: group
    'cities' = Rome (id 18; both variants) and Paris (8; with_space only, 'Paris' no_space
    does not tokenize); the base prompt's answers Rome and Roma (18, 17). Attributions of
    base's last position to its top-1 token 18 add up to logit - logit_offset = 2.5 - 0.25."""
    words = [("cities", "Rome", "no_space", 18, "Rome"), ("cities", "Rome", "with_space", 18, "Rome"),
             ("cities", "Paris", "no_space", None, None), ("cities", "Paris", "with_space", 8, " Paris")]
    writer.write("group_tokens", pa.Table.from_pylist(
        [dict(group_name=g, word=w, variant=v, token_id=t, token=x, tokenized=t is not None, source="inline") for g, w, v, t, x in words],
        schema=schema.GROUP_TOKENS), schema.GROUP_TOKENS)
    groups = [dict(prompt_id="base", prompt_variant="orig", lens="norm", layer=layer, site="post", pos=1, is_last_pos=True,
                   group_name="cities", mass=mass, best_rank=rank, best_token_id=18, best_token="Rome")
              for layer, mass, rank in ((0, 0.0015, 9), (1, 0.5625, 1), (2, 0.75, 1))]
    groups.append(dict(prompt_id="base", prompt_variant="orig", lens="norm", layer=0, site="post", pos=0, is_last_pos=False,
                       group_name="cities", mass=0.125, best_rank=None, best_token_id=None, best_token=None))
    writer.append("token_groups", pa.Table.from_pylist(groups, schema=schema.TOKEN_GROUPS), schema.TOKEN_GROUPS)
    answers = [("Rome", "no_space", 18, "Rome"), ("Rome", "with_space", 18, "Rome"), ("Roma", "no_space", 17, "Roma"), ("Roma", "with_space", None, None)]
    writer.write("answer_tokens", pa.Table.from_pylist(
        [dict(prompt_id="base", prompt_variant="orig", answer=a, variant=v, token_id=t, token=x, tokenized=t is not None) for a, v, t, x in answers],
        schema=schema.ANSWER_TOKENS), schema.ANSWER_TOKENS)
    writer.append("answer_mass", pa.Table.from_pylist(
        [dict(prompt_id="base", prompt_variant="orig", lens="norm", layer=layer, site="post", pos=1, is_last_pos=True, mass=mass)
         for layer, mass in ((0, 0.5), (1, 0.75), (2, 0.875))], schema=schema.ANSWER_MASS), schema.ANSWER_MASS)
    parts = [("embed", None, 0, 0.25), ("attn", 0, 1, 0.5), ("mlp", 0, 1, -0.125), ("attn", 1, 2, 1.0), ("mlp", 1, 2, 0.625)]
    attributions = [dict(prompt_id="base", prompt_variant="orig", pos=1, is_last_pos=True, target="top1", group_name=None, token_id=18,
                         token="Rome", component=c, block=b, layer=layer, contribution=value, logit=2.5, logit_offset=0.25)
                    for c, b, layer, value in parts]
    writer.append("attributions", pa.Table.from_pylist(attributions, schema=schema.ATTRIBUTIONS), schema.ATTRIBUTIONS)


def write_run(warehouse: Path, run: Run) -> Path:
    with RunWriter(warehouse, run.model, run.run_id) as writer:
        _stage(writer, run)
        return writer.commit(manifest_table(run), schema.MANIFEST)


def write_crashed_runs(warehouse: Path) -> None:
    """Two runs that must stay invisible: one still in _staging/ (manifest written, never
    renamed: a process killed just before its commit, on another host so no writer here
    cleans it up), one in runs/ without a manifest (a copy that lost its last file)."""
    staged = _copy_collapse_run(RUN_STAGED, MODEL_A)
    writer = RunWriter(warehouse, staged.model, staged.run_id)
    writer.open()
    _stage(writer, staged)
    writer.append("manifest", manifest_table(staged), schema.MANIFEST)
    for key in list(writer._writers):
        writer._flush(key)
        writer._writers.pop(key).close()
    os.rename(writer.staging, warehouse / layout.STAGING_DIR / f"{RUN_STAGED}@4194304@elsewhere")

    orphan = _copy_collapse_run(RUN_NO_MANIFEST, MODEL_B)
    writer = RunWriter(warehouse, orphan.model, orphan.run_id)
    writer.open()
    _stage(writer, orphan)
    for key in list(writer._writers):
        writer._flush(key)
        writer._writers.pop(key).close()
    writer.target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(writer.staging, writer.target)


# ----------------------------------------------------------------------------------------
# The runs

N_A = 4  # model A: layers 0..4; raw-lens sample layers 0, 2, 3, 4 (layer 1 is not sampled)


def _finals_default(top1: int, p: float = 0.8) -> dict:
    return {1.0: ([top1], [p], 1.2)}


def _run_a1() -> Run:
    """Model A, run 1: norm and raw lenses, top-5, every copy / semantic edge case."""
    prompts = [
        # Copy collapse at layer 0; the 'orig' side of the ablation; another temperature.
        Prompt(
            "copy0", [4, 5, 11], gold="Berlin", gold_first_id=6, gold_alignment="ok", temperatures=[0.5],
            last={
                "norm": [
                    L([11, 4], [0.97, 0.01], 0.3, 9.0, cos=0.1, p_answer=1e-4, rank=40),
                    L([4, 5], [0.96, 0.02], 0.5, 6.0, cos=0.2, p_answer=1e-3, rank=10),
                    L([6, 4], [0.55, 0.30], 1.5, 1.0, cos=0.6),
                    L([6, 12], [0.80, 0.10], 0.9, 0.5, cos=0.9),
                    L([6, 12], [0.85, 0.08], 0.8, 0.0, cos=1.0),
                ],
                "raw": [
                    L([11, 4], [0.90, 0.05], 0.6, 9.5, p_answer=1e-4, rank=41, kl_vs_norm=0.3),
                    L([19, 4], [0.50, 0.20], 2.0, 7.0, p_answer=1e-3, rank=12, kl_vs_norm=5.0),
                    L([6, 4], [0.40, 0.30], 1.9, 1.2, kl_vs_norm=0.7),
                    L([6, 12], [0.70, 0.10], 1.1, 0.6, kl_vs_norm=0.2),
                    L([6, 12], [0.80, 0.10], 0.9, 0.1, kl_vs_norm=0.1),
                ],
            },
            finals={1.0: ([6, 12], [0.85, 0.08], 0.8), 0.5: ([6, 12], [0.97, 0.01], 0.2)},
            consistency={
                "norm": dict(temp_est=1.0, kl_after_temp_bits=0.0, cfg_scale=None, cfg_softcap=None,
                             kl_after_scale_bits=None, kl_after_softcap_bits=None, kl_after_scale_then_softcap_bits=None),
                "raw": dict(temp_est=1.25, kl_after_temp_bits=0.05, cfg_scale=None, cfg_softcap=None,
                            kl_after_scale_bits=None, kl_after_softcap_bits=None, kl_after_scale_then_softcap_bits=None),
            },
        ),
        # The ablation variant of copy0: copies later (layer 2) and answers later (layer 3).
        Prompt(
            "copy0", [4, 5], gold="Berlin", gold_first_id=6, gold_alignment="ok", variant="no_filler",
            last={
                "norm": [
                    L([19, 20], [0.40, 0.20], 3.0, 8.0, p_answer=1e-4, rank=30),
                    L([19, 20], [0.50, 0.20], 2.5, 5.0, p_answer=1e-3, rank=20),
                    L([5, 6], [0.96, 0.01], 0.4, 3.0, p_answer=0.01, rank=7),
                    L([6, 5], [0.70, 0.10], 1.2, 0.8),
                    L([6, 5], [0.90, 0.05], 0.6, 0.0),
                ],
                "raw": [
                    L([19, 20], [0.30, 0.20], 3.5, 8.5, p_answer=1e-4, rank=33, kl_vs_norm=0.2),
                    L([19, 20], [0.40, 0.20], 3.0, 5.5, p_answer=1e-3, rank=25, kl_vs_norm=0.3),
                    L([5, 6], [0.60, 0.10], 1.4, 3.5, kl_vs_norm=0.25),
                    L([6, 5], [0.50, 0.20], 1.6, 1.1, kl_vs_norm=0.1),
                    L([6, 5], [0.85, 0.05], 0.7, 0.05, kl_vs_norm=0.05),
                ],
            },
            finals=_finals_default(6, 0.9),
        ),
        # A control prompt (of copy0): margin < 0, = 0 (a tie), then > 0 from layer 2.
        Prompt(
            "ctl", [7, 5, 11], gold="Paris", gold_first_id=8, gold_alignment="ok", role="control",
            control_of="copy0", paired_variant="orig", paired_gold_first_id=6,
            last={
                "norm": [
                    L([11, 19], [0.50, 0.10], 2.0, 7.0, p_answer=0.01, rank=50, p_paired=0.02, paired_rank=30),
                    L([6, 8], [0.30, 0.30], 2.2, 4.0),
                    L([8, 6], [0.60, 0.20], 1.4, 1.5),
                    L([8, 6], [0.80, 0.10], 0.8, 0.3),
                    L([8, 6], [0.70, 0.15], 1.0, 0.0),
                ],
                "raw": [
                    L([11, 19], [0.40, 0.10], 2.5, 7.5, p_answer=0.01, rank=60, p_paired=0.02, paired_rank=35, kl_vs_norm=0.1),
                    L([6, 8], [0.35, 0.25], 2.4, 4.5, kl_vs_norm=0.2),
                    L([8, 6], [0.50, 0.25], 1.7, 1.8, kl_vs_norm=0.3),
                    L([8, 6], [0.75, 0.10], 0.9, 0.4, kl_vs_norm=0.2),
                    L([8, 6], [0.65, 0.15], 1.1, 0.05, kl_vs_norm=0.1),
                ],
            },
            finals=_finals_default(8, 0.7),
        ),
        # k = 2: k=1 copies at layer 1, but the 2-layer window [19, 7] does not occur in the
        # prompt; [7, 5] (layer 2) does.
        Prompt(
            "window", [7, 5, 13], gold="Paris", gold_first_id=8, gold_alignment="ok",
            last={
                "norm": [
                    L([19, 20], [0.30, 0.20], 3.0, 6.0, p_answer=0.001, rank=20),
                    L([7, 19], [0.98, 0.01], 0.2, 5.0, p_answer=0.001, rank=15),
                    L([5, 19], [0.97, 0.01], 0.2, 4.0, p_answer=0.002, rank=9),
                    L([8, 5], [0.60, 0.20], 1.3, 0.9),
                    L([8, 5], [0.90, 0.05], 0.5, 0.0),
                ],
                "raw": [
                    L([19, 20], [0.30, 0.20], 3.0, 6.0, p_answer=0.001, rank=21, kl_vs_norm=0.1),
                    L([7, 19], [0.90, 0.01], 0.6, 5.0, p_answer=0.001, rank=16, kl_vs_norm=0.1),
                    L([5, 19], [0.90, 0.01], 0.6, 4.0, p_answer=0.002, rank=9, kl_vs_norm=0.1),
                    L([5, 8], [0.50, 0.30], 1.5, 1.4, kl_vs_norm=0.4),
                    L([8, 5], [0.80, 0.05], 0.7, 0.1, kl_vs_norm=0.2),
                ],
            },
            finals=_finals_default(8, 0.9),
        ),
        # Whitespace-only and punctuation-only top-1 tokens at p >= 0.97, all in the prompt:
        # never a copy. The first real copy is ' the' at layer 3.
        Prompt(
            "blank", [16, 9, 10, 14], gold="Rome", gold_first_id=18, gold_alignment="ok",
            last={
                "norm": [
                    L([9, 16], [0.99, 0.005], 0.1, 9.0, p_answer=1e-5, rank=100),
                    L([10, 16], [0.98, 0.01], 0.2, 8.0, p_answer=1e-5, rank=90),
                    L([14, 16], [0.97, 0.01], 0.2, 7.0, p_answer=1e-4, rank=50),
                    L([16, 9], [0.97, 0.01], 0.3, 3.0, p_answer=1e-3, rank=12),
                    L([18, 16], [0.60, 0.20], 1.4, 0.0),
                ],
                "raw": [
                    L([9, 16], [0.95, 0.01], 0.4, 9.0, p_answer=1e-5, rank=100, kl_vs_norm=0.5),
                    L([10, 16], [0.90, 0.01], 0.5, 8.0, p_answer=1e-5, rank=90, kl_vs_norm=0.6),
                    L([14, 16], [0.90, 0.01], 0.5, 7.0, p_answer=1e-4, rank=50, kl_vs_norm=1.0),
                    L([16, 9], [0.90, 0.01], 0.6, 3.0, p_answer=1e-3, rank=12, kl_vs_norm=0.3),
                    L([18, 16], [0.50, 0.20], 1.6, 0.1, kl_vs_norm=0.2),
                ],
            },
            finals=_finals_default(18, 0.6),
        ),
        # p1 > 0.95 with p1 - p2 <= 0.10 (layer 0; not a real distribution, on purpose);
        # p1 = float32(0.95), not > 0.95 (layer 1); p1 = float32(0.951) copies (layer 2).
        Prompt(
            "margin", [8, 5], gold="Berlin", gold_first_id=6, gold_alignment="ok",
            last={
                "norm": [
                    L([8, 5], [0.97, 0.90], 1.5, 6.0, p_answer=1e-3, rank=12),
                    L([8, 19], [0.95, 0.0], 1.0, 5.0, p_answer=1e-3, rank=11),
                    L([5, 19], [0.951, 0.02], 0.4, 4.0, p_answer=1e-3, rank=6),
                    L([6, 5], [0.50, 0.30], 1.8, 2.0),
                    L([6, 5], [0.70, 0.20], 1.2, 0.0),
                ],
                "raw": [
                    L([8, 5], [0.60, 0.30], 1.5, 6.0, p_answer=1e-3, rank=12, kl_vs_norm=0.1),
                    L([8, 19], [0.50, 0.10], 1.0, 5.0, p_answer=1e-3, rank=11, kl_vs_norm=0.1),
                    L([5, 19], [0.50, 0.02], 0.4, 4.0, p_answer=1e-3, rank=6, kl_vs_norm=0.5),
                    L([6, 5], [0.40, 0.30], 1.8, 2.0, kl_vs_norm=0.2),
                    L([6, 5], [0.60, 0.20], 1.2, 0.1, kl_vs_norm=0.1),
                ],
            },
            finals=_finals_default(6, 0.7),
        ),
        # Gold that the tokenizer could not align: no gold ids, so no p_answer / answer_rank;
        # is_answer falls back to the stripped top-1 token == 'Rome'.
        Prompt(
            "unresolved", [17, 5], gold="Rome", gold_alignment="unresolved",
            last={
                "norm": [
                    L([17, 5], [0.50, 0.20], 2.0, 6.0),
                    L([17, 18], [0.40, 0.30], 2.1, 4.0),
                    L([18, 24], [0.50, 0.30], 1.6, 2.0),
                    L([18, 24], [0.60, 0.30], 1.3, 0.4),
                    L([18, 24], [0.70, 0.20], 1.1, 0.0),
                ],
                "raw": [
                    L([17, 5], [0.40, 0.20], 2.5, 6.0, kl_vs_norm=0.1),
                    L([17, 18], [0.40, 0.30], 2.4, 4.0, kl_vs_norm=0.1),
                    L([17, 18], [0.40, 0.30], 2.4, 2.5, kl_vs_norm=0.4),
                    L([18, 17], [0.50, 0.30], 1.6, 0.8, kl_vs_norm=0.3),
                    L([18, 24], [0.60, 0.20], 1.3, 0.1, kl_vs_norm=0.2),
                ],
            },
            finals=_finals_default(18, 0.7),
        ),
        # No gold at all (is_answer NULL), KL never at or below 1.0 bit (last layer 1.5:
        # last_layer_consistency warns), the last layer disagrees with the model head.
        Prompt(
            "nogold", [19, 20], role="test",
            last={
                "norm": [
                    L([20, 19], [0.50, 0.20], 2.0, 6.0),
                    L([21, 20], [0.50, 0.20], 2.0, 5.0),
                    L([21, 20], [0.50, 0.20], 2.0, 3.0),
                    L([22, 21], [0.50, 0.20], 2.0, 1.0000001),
                    L([22, 21], [0.50, 0.20], 2.0, 1.5),
                ],
                "raw": [
                    L([20, 19], [0.40, 0.20], 2.2, 6.0, kl_vs_norm=0.1),
                    L([21, 20], [0.40, 0.20], 2.2, 5.0, kl_vs_norm=0.2),
                    L([21, 20], [0.40, 0.20], 2.2, 3.0, kl_vs_norm=0.3),
                    L([22, 21], [0.40, 0.20], 2.2, 1.5, kl_vs_norm=0.49),
                    L([22, 21], [0.40, 0.20], 2.2, 1.6, kl_vs_norm=0.45),
                ],
            },
            finals=_finals_default(23, 0.5),
        ),
        # Ties in rank: at layer 1 the gold ' Berlin' ties with ' x' (listed first), so its
        # rank is 1 although it is not top-1. The norm lens alone finds the answer at layer
        # 1 (not a sampled layer) and at layer 3 (sampled): raw_lens_summary says 3.
        Prompt(
            "ties", [1, 2, 3], gold="Berlin", gold_first_id=6, gold_alignment="ok",
            last={
                "norm": [
                    L([19, 20], [0.30, 0.20], 2.5, 5.0, p_answer=0.01, rank=11),
                    L([19, 6], [0.35, 0.35], 2.0, 3.0),
                    L([6, 19], [0.50, 0.20], 1.6, 2.0),
                    L([6, 19], [0.60, 0.20], 1.4, 1.0),
                    L([6, 19], [0.80, 0.10], 0.9, 0.0),
                ],
                "raw": [
                    L([19, 20], [0.30, 0.20], 2.5, 5.0, p_answer=0.01, rank=12, kl_vs_norm=0.2),
                    L([19, 6], [0.40, 0.30], 2.1, 3.0, kl_vs_norm=0.3),
                    L([6, 19], [0.45, 0.25], 1.8, 2.0, kl_vs_norm=0.2),
                    L([19, 6], [0.45, 0.25], 1.8, 1.2, kl_vs_norm=0.6),
                    L([6, 19], [0.70, 0.10], 1.0, 0.1, kl_vs_norm=0.2),
                ],
            },
            finals=_finals_default(6, 0.8),
        ),
    ]
    for prompt in prompts:  # consistency rows for both lenses (extract writes one per lens)
        prompt.consistency = prompt.consistency or {
            "norm": dict(temp_est=1.0, kl_after_temp_bits=0.0),
            "raw": dict(temp_est=0.8, kl_after_temp_bits=0.25),
        }
    return Run(RUN_A1, MODEL_A, N_A, ["norm", "raw"], 5, prompts, datetime(2025, 1, 2, 3, 4, 5), last_layer_max_kl_bits=2e-4)


def _copy_collapse_run(run_id: str, model: str) -> Run:
    """A run whose every row would show in the views (copy, answer, KL 0 everywhere)."""
    everything = [L([4, 6], [0.99, 0.005], 0.1, 0.0, p_answer=0.005, rank=1)] * 5
    prompt = Prompt("hidden", [4, 5], gold="Berlin", gold_first_id=6, gold_alignment="ok",
                    last={"norm": everything}, finals=_finals_default(6))
    return Run(run_id, model, N_A, ["norm"], 5, [prompt], datetime(2025, 1, 9, 0, 0, 0))


def _run_a2() -> Run:
    """Model A, run 2: norm and final_ln lenses; finals at 1.0 and 2.0; last-layer checks."""
    prompt = Prompt(
        "copy0", [4, 5, 11], gold="Berlin", gold_first_id=6, gold_alignment="ok", temperatures=[2.0],
        last={
            "norm": [
                L([19, 20], [0.20, 0.10], 4.0, 7.0, p_answer=1e-3, rank=25),
                L([11, 19], [0.99, 0.002], 0.1, 5.0, p_answer=1e-3, rank=8),
                L([6, 12], [0.40, 0.30], 1.9, 1.2),
                L([6, 12], [0.50, 0.30], 1.6, 0.9),
                L([6, 12], [0.60, 0.30], 1.3, 0.7),
            ],
            "final_ln": [
                L([19, 20], [0.25, 0.10], 3.8, 6.5, p_answer=1e-3, rank=24, kl_vs_norm=0.4),
                L([11, 19], [0.95, 0.01], 0.4, 5.0, p_answer=1e-3, rank=7, kl_vs_norm=0.3),
                L([12, 6], [0.45, 0.40], 1.6, 1.1, kl_vs_norm=0.2),
                L([12, 6], [0.50, 0.40], 1.5, 0.6, kl_vs_norm=0.1),
                L([12, 6], [0.50, 0.45], 1.4, 0.2, kl_vs_norm=0.05),
            ],
        },
        finals={1.0: ([6, 12], [0.55, 0.35], 1.3), 2.0: ([6, 12], [0.40, 0.35], 2.6)},
        consistency={
            "norm": dict(temp_est=1.1, kl_after_temp_bits=0.6, cfg_scale=None, cfg_softcap=30.0,
                         kl_after_scale_bits=None, kl_after_softcap_bits=0.65, kl_after_scale_then_softcap_bits=None),
            "final_ln": dict(temp_est=0.9, kl_after_temp_bits=0.15, cfg_scale=None, cfg_softcap=30.0,
                             kl_after_scale_bits=None, kl_after_softcap_bits=0.18, kl_after_scale_then_softcap_bits=None),
        },
    )
    return Run(RUN_A2, MODEL_A, N_A, ["norm", "final_ln"], 5, [prompt], datetime(2025, 2, 3, 4, 5, 6), last_layer_max_kl_bits=0.2)


def _run_b1() -> Run:
    """Model B: 2 layers, norm lens only, top-3 lists, a control pair, residuals (d_model 2)."""
    prompts = [
        Prompt(
            "base", [17, 5], gold="Rome", gold_first_id=18, gold_alignment="ok",
            last={"norm": [
                L([17, 5], [0.96, 0.02], 0.4, 3.0, p_answer=0.001, rank=9),
                L([18, 17], [0.50, 0.30], 1.5, 0.7),
                L([18, 17], [0.70, 0.20], 1.1, 0.0),
            ]},
            finals=_finals_default(18, 0.7),
            consistency={"norm": dict(temp_est=1.0, kl_after_temp_bits=0.0)},
        ),
        Prompt(
            "base_ctl", [7, 5], gold="Paris", gold_first_id=8, gold_alignment="ok", role="control",
            control_of="base", paired_variant="orig", paired_gold_first_id=18,
            last={"norm": [
                L([18, 8], [0.30, 0.10], 2.5, 3.0),
                L([8, 18], [0.30, 0.30], 2.0, 1.0),
                L([8, 18], [0.60, 0.10], 1.2, 0.0),
            ]},
            finals=_finals_default(8, 0.6),
            consistency={"norm": dict(temp_est=1.0, kl_after_temp_bits=0.0)},
        ),
    ]
    return Run(RUN_B1, MODEL_B, 2, ["norm"], 3, prompts, datetime(2025, 3, 4, 5, 6, 7), residuals_d_model=2)


def _legacy_sample(prompt_id, variant, layer, kl, agree, p_norm, p_raw, pa_norm, pa_raw, r_norm, r_raw):
    return {
        "prompt_id": prompt_id, "prompt_variant": variant, "layer": layer, "kl_norm_vs_raw_bits": kl,
        "top1_agree": agree, "p_top1_norm": p_norm, "p_top1_raw": p_raw, "p_answer_norm": pa_norm,
        "p_answer_raw": pa_raw, "answer_rank_norm": r_norm, "answer_rank_raw": r_raw,
        "is_answer_norm": r_norm == 1, "is_answer_raw": r_raw == 1,
    }


def _run_legacy() -> Run:
    """An imported legacy run: no token ids (topk_ids NULL), the legacy copy flag, the
    legacy raw-lens samples (no raw records), finals without ids, no consistency rows."""
    orig = Prompt(
        "pos", [4, 5, 11], gold="Berlin", gold_first_id=6, gold_alignment="ok",
        last={"norm": [
            # A top-1 that the id rule would call a copy, but the legacy flag says no ...
            L([11, 4], [0.99, 0.005], 0.1, 8.0, p_answer=1e-4, rank=30, legacy_copy=False),
            # ... and a low-probability top-1 that the legacy flag calls a copy.
            L([4, 11], [0.20, 0.10], 3.0, 6.0, p_answer=1e-3, rank=12, legacy_copy=True),
            L([5, 6], [0.40, 0.30], 2.0, 3.0, legacy_copy=False),
            L([6, 5], [0.60, 0.20], 1.5, 0.8, legacy_copy=False),
            L([6, 5], [0.80, 0.10], 0.9, 0.0, legacy_copy=False),
        ]},
        finals=_finals_default(6, 0.8),
    )
    no_filler = Prompt(
        "pos", [4, 5], gold="Berlin", gold_first_id=6, gold_alignment="ok", variant="no_filler",
        last={"norm": [
            L([19, 4], [0.30, 0.10], 3.0, 8.0, p_answer=1e-4, rank=30, legacy_copy=False),
            L([19, 4], [0.30, 0.10], 3.0, 6.0, p_answer=1e-3, rank=12, legacy_copy=False),
            L([19, 6], [0.30, 0.20], 2.5, 3.0, legacy_copy=False),
            L([19, 6], [0.40, 0.30], 2.0, 1.5, legacy_copy=False),
            L([6, 19], [0.60, 0.10], 1.2, 0.0, legacy_copy=False),
        ]},
        finals=_finals_default(6, 0.6),
    )
    samples = [
        _legacy_sample("pos", "orig", 0, 0.2, True, 0.99, 0.9, 1e-4, 2e-4, 30, 28),
        _legacy_sample("pos", "orig", 2, 0.8, False, 0.4, 0.5, 0.3, 0.1, 1, 3),
        _legacy_sample("pos", "orig", 3, 0.3, True, 0.6, 0.5, 0.6, 0.5, 1, 1),
        _legacy_sample("pos", "orig", 4, 0.1, True, 0.8, 0.7, 0.8, 0.7, 1, 1),
    ]
    return Run(RUN_LEGACY, MODEL_LEGACY, N_A, ["norm"], 5, [orig, no_filler], datetime(2024, 8, 30, 12, 0, 0),
               source="legacy", legacy_raw_samples=samples)


def fixture_runs() -> list[Run]:
    return [_run_a1(), _run_a2(), _run_b1(), _run_legacy()]


def build_warehouse(warehouse: Path) -> Path:
    """Write the fixture warehouse into `warehouse` (a new folder); returns it."""
    warehouse = Path(warehouse)
    warehouse.mkdir(parents=True)
    for run in fixture_runs():
        write_run(warehouse, run)
    write_crashed_runs(warehouse)
    write_stored_lenses(warehouse)
    return warehouse


def _lens_rows(lens: str, model: str, n_layers: int, kl: list[float | None], logit_kl: list[float | None]) -> list[dict]:
    common = {
        "lens": lens,
        "model": model,
        "model_path": None,
        "model_revision": "rev-" + lens,
        "created_at": datetime(2026, 1, 2, 3, 4, 5),
        "lensdb_version": "0.1.0",
        "torch_version": "2.13.0",
        "device": "cpu",
        "dtype": "float32",
        "n_layers": n_layers,
        "d_model": 2,
        "lens_sha256": "0" * 63 + str(n_layers),
        "unembed_hash": "f" * 64,
        "corpus": "/corpora/" + lens + ".jsonl",
        "corpus_sha256": "e" * 64,
        "train_tokens": 1024 * n_layers,
        "eval_tokens": 128 if kl[0] is not None else 0,
        "steps": 250,
        "tokens_per_step": 256,
        "seq_len": 128,
        "lr": 1.0,
        "momentum": 0.9,
        "weight_decay": 0.001,
        "seed": 42,
        "train_seconds": 1.5,
    }
    return [
        {**common, "layer": layer, "kl_bits": kl[layer], "final_ln_kl_bits": logit_kl[layer], "train_kl_bits": 0.25 * (n_layers - layer) if layer < n_layers else None}
        for layer in range(n_layers + 1)
    ]


def write_stored_lenses(warehouse: Path) -> None:
    import pyarrow.parquet as pq

    from lensdb.tuned import store

    def write(folder: Path, rows: list[dict]) -> None:
        folder.mkdir(parents=True)
        pq.write_table(store.lens_table(rows).replace_schema_metadata(schema.with_metadata(schema.LENSES, "lenses").metadata), folder / store.TABLE_FILE)

    write(warehouse / "lenses" / "story-lens", _lens_rows("story-lens", MODEL_B, 2, [None] * 3, [None] * 3))
    write(warehouse / "lenses" / "tiny-lens", _lens_rows("tiny-lens", MODEL_A, 4, [3.5, 2.0, 1.25, 0.5, 0.0], [30.0, 12.0, 4.0, 1.0, 0.0]))
    write(warehouse / store.TRAINING_DIR / "ghost" / "lens", _lens_rows("ghost", MODEL_B, 2, [9.0] * 3, [9.0] * 3))
    write(warehouse / "notes" / "stray", _lens_rows("stray", MODEL_B, 2, [9.0] * 3, [9.0] * 3))


if __name__ == "__main__":  # pragma: no cover - handy for a look: python -m tests.warehouse_fixtures DIR
    import sys

    print(build_warehouse(Path(sys.argv[1])))
