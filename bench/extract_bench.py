"""Benchmark `lensdb extract` against the least possible work and against the seed's per-prompt loop.

All phases see the same model and the same first N prompts of the `capitals` prompt set.
Each measured phase runs in its own Python subprocess (this script re-invoked with
`--phase`), so its peak memory is its own; a background thread samples the process's memory
every 20 ms as (time.perf_counter(), bytes) pairs.

  floor       The least work possible: plain transformers (AutoModelForCausalLM, eval,
              eager attention), batched forward passes (lensdb's batch size, right padding
              with an attention mask, prompts longest first), every layer's residual at
              every real position (block 0's input, then each block's output, by hooks),
              the "norm" lens (layer i -> block i's input norm, last layer -> final norm),
              the unembedding of a whole chunk of layers x positions in one matmul (lensdb's
              chunk budget), then vectorised log_softmax, entropy, top-20 and KL to the
              model's final distribution. Nothing is written; results are discarded.
              Run twice: as the issue describes it (each statistic over the whole chunk,
              `lensdb_over_floor`), and with the statistics over row blocks of lensdb's own
              block size (lensdb.extract.stats.BLOCK_BYTES), which keeps the logits in cache
              and is faster on CPU (`lensdb_over_blocked_floor`, the stricter comparison).
  lensdb      lensdb.extract.engine.extract(model, lenses=--lenses, dtype=--dtype, ...)
              end to end into a temporary warehouse. Its summary's load_seconds and
              extract_seconds are reported as they are; the time compared with the floor is
              the call's wall time minus load_seconds, which also counts the final Parquet
              flush and the commit. On CUDA a thread samples the lens GPU's utilisation
              every 250 ms (NVML through pynvml, else `nvidia-smi -lms 250`): the busy share
              of the extract phase is the mean utilisation of the samples between the
              summary's loaded_at mark and the end of extract (null without CUDA).
  load        Loading alone, lensdb vs plain transformers, same device and dtype, each in a
              fresh process with its libraries (and the model's transformers module)
              imported first: lensdb.extract.model.load_model (config read before the clock
              starts) vs AutoModelForCausalLM.from_pretrained(dir, dtype=..., device_map=
              {"": device}). Seconds of the load call and the process's peak resident host
              memory during it (Linux VmHWM, reset when the load starts; imported libraries
              included). Alternating, --load-repeats times each; the fastest run and the
              smallest peak of each side are kept. `--skip-load` leaves it out.
  limit       The hardware limit: one bare matmul of every unembedding of the run (lensdb's
              record count rows x d_model x d_vocab, random weights, in chunks of lensdb's
              chunk budget) plus one pass over the logits' bytes (a max over each row), in
              half precision on CUDA (float32 on CPU, whose half-precision matmuls are
              slower than float32 ones). lensdb_over_hardware_limit = lensdb's extract
              seconds / this.
  seed-style  The original experiment re-implemented: one prompt per forward pass, then a
              Python loop over layers x positions: norm + unembedding of one residual
              vector, softmax, torch.topk, one tokenizer.decode([id]) per listed token and
              one row of the legacy records CSV (20 tokens at "verbose" positions, 5
              elsewhere), plus one pure-next-token row per layer at the last position.
              It is slow: `--seed-style-n M` runs it on the first M prompts and extrapolates
              per prompt (the output says so); `--skip-seed-style` leaves it out.

Time excludes model loading everywhere. Peak memory beyond the weights is the peak after
the model is loaded minus the reading right after loading (lensdb: the last sample at or
before its summary.timings["loaded_at"] mark). On CPU it is the anonymous part of RSS
(psutil rss - shared): safetensors weights are memory-mapped and paged in by the first
forward pass, so plain RSS would count them again after the mark (plain RSS is reported too,
as peak_rss_beyond_load_bytes). On CUDA it is torch.cuda.memory_allocated / max_memory_allocated.

Timings on a shared machine are only as good as its quiet: each phase reports the share of
the CPUs that other processes used meanwhile, and the table warns above 5 %.

Bytes on disk: the run's Parquet files versus (a) the seed-style CSVs as written (20/5 rule,
records + pure-next-token files) and (b) a CSV with the same content as lensdb's records
(top-20 at every position, the legacy records columns and dialect), written here from the
lensdb run's records table (read with pyarrow).

Models (`--shape`, random weights, fixed seed, built once into bench/out/models/):
  gpt2     GPT2Config() defaults (GPT-2 small, 124M parameters, float32) and the real GPT-2
           tokenizer.
  llama8b  Llama-3-8B's configuration (32 layers, d_model 4096, MLP 14336, 32 heads, 8 KV
           heads, RoPE theta 500000, context 8192, untied head; bfloat16 like Meta's
           checkpoint) with a vocabulary of 128,256: the GPT-2 tokenizer whose BPE
           vocabulary is padded with unreachable entries `<|extra_N|>` up to id 128,255.
           (Padding with *added* tokens instead makes the tokenizer take ~10 s to load,
           which no real 128k tokenizer does, and would be counted in lensdb's load time.)
`--scale-down` builds the same shape with 2 layers and d_model 256 (vocabulary unchanged), to
check the code paths on a small machine; its numbers say nothing about the real shape.
`--model DIR` uses any local model directory. LENSDB_BENCH_OUT moves bench/out/ (the built
models and the work folders) elsewhere.

Tokens/s is the prompts' positions (tokens, BOS included) over lensdb's extract seconds.

Run (it is not a test):

    .venv/bin/python bench/extract_bench.py --n 64 --json
    .venv/bin/python bench/extract_bench.py --n 1000 --seed-style-n 64
    .venv/bin/python bench/extract_bench.py --shape llama8b --n 256 --skip-seed-style --json
    .venv/bin/python bench/extract_bench.py --shape llama8b --n 8 --scale-down --skip-seed-style
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing lensdb
sys.path.insert(1, str(BENCH_DIR))  # gpu_sampler

from gpu_sampler import GpuSampler  # noqa: E402

OUT_DIR = Path(os.environ.get("LENSDB_BENCH_OUT") or BENCH_DIR / "out")  # models and work folders (bench/gpu_check.sh: a temp dir)
MODELS_DIR = OUT_DIR / "models"
SHAPES = {"gpt2": "gpt2-small-random", "llama8b": "llama8b-random"}
LLAMA3_VOCAB = 128_256
DTYPES = ("float32", "float16", "bfloat16")
GPT2_TOKENIZER_DIR = REPO.parent / "shared" / "fixtures" / "models" / "gpt2-tokenizer"
MODEL_SEED = 0
PROMPT_SET = "capitals"
PROMPT_KEYS = ("id", "variant", "role", "gold", "control_of", "text", "temperatures")

TOP_K = 20
LEGACY_OTHER_K = 5  # the legacy rule: 20 tokens at verbose positions, 5 elsewhere
VERBOSE_WORDS = ("germany", "berlin", "capital", "answer", "word", "simply")
COPY_COLLAPSE_PROB = 0.95
ENTROPY_COLLAPSE_BITS = 1.0
NEXT_TOKEN_MARK = "⟨NEXT⟩"
LN2 = math.log(2.0)
SAMPLE_SECONDS = 0.02
CONTENDED_SHARE = 0.05  # other processes' share of the CPUs above which timings are flagged

LEGACY_CSV = dict(delimiter=",", quotechar='"', quoting=csv.QUOTE_MINIMAL, escapechar="\\", lineterminator="\n")
RECORDS_HEADER = (
    ["prompt_id", "prompt_variant", "layer", "pos", "token", "entropy"]
    + [name for i in range(1, TOP_K + 1) for name in (f"top{i}", f"prob{i}")]
    + ["rest_mass"]
)
PURE_NEXT_TOKEN_HEADER = RECORDS_HEADER + [
    "copy_collapse",
    "entropy_collapse",
    "is_answer",
    "p_top1",
    "p_top5",
    "p_answer",
    "kl_to_final_bits",
    "answer_rank",
    "cos_to_final",
    "control_margin",
]

TARGETS = {  # name: (limit, "max" = value must not exceed it, "min" = must reach it)
    "lensdb_over_floor": (1.15, "max"),
    "seed_over_lensdb": (2.5, "min"),
    "lensdb_peak_mem_beyond_weights_bytes": (1 << 30, "max"),
    "parquet_over_csv": (0.35, "max"),
    "load_seconds_over_plain": (1.3, "max"),
    "load_peak_host_rss_over_plain": (1.2, "max"),
    "lensdb_over_hardware_limit": (4.0, "max"),  # the target for the 8B shape on an H100
    "gpu_busy_share": (0.85, "min"),  # CUDA only
}


# --------------------------------------------------------------------------- setup


def shape_model_dir(shape: str, scale_down: bool) -> Path:
    return MODELS_DIR / (SHAPES[shape] + ("-scaled-down" if scale_down else ""))


def ensure_model(model_dir: Path, tokenizer_dir: Path, shape: str = "gpt2", scale_down: bool = False) -> Path:
    """The random model of `shape` with its tokenizer, built once (on the GPU when there is one)."""
    if (model_dir / "config.json").is_file():
        return model_dir
    import torch
    from transformers import AutoModelForCausalLM

    if not (tokenizer_dir / "tokenizer.json").is_file():
        sys.exit(f"the GPT-2 tokenizer is missing: {tokenizer_dir} (pass --tokenizer DIR, or --model DIR)")
    log(f"building a random {shape}{' (scaled down)' if scale_down else ''} model in {model_dir} (once)")
    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if shape == "gpt2":
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(staging)
        config, dtype = gpt2_config(scale_down), torch.float32
    else:
        bos = write_padded_tokenizer(tokenizer_dir, staging, LLAMA3_VOCAB)
        config, dtype = llama8b_config(scale_down, bos), torch.bfloat16
    torch.manual_seed(MODEL_SEED)
    build_device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(build_device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.save_pretrained(staging)
    del model
    staging.rename(model_dir)
    return model_dir


def gpt2_config(scale_down: bool):
    from transformers import GPT2Config

    return GPT2Config(n_layer=2, n_embd=64, n_head=2) if scale_down else GPT2Config()


def llama8b_config(scale_down: bool, bos_id: int):
    """Meta-Llama-3-8B's config.json values (vocabulary 128,256)."""
    from transformers import LlamaConfig

    size = dict(hidden_size=256, intermediate_size=896, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2)
    if not scale_down:
        size = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)
    return LlamaConfig(
        **size,
        vocab_size=LLAMA3_VOCAB,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
    )


def write_padded_tokenizer(source: Path, target: Path, vocab_size: int) -> int:
    """The GPT-2 tokenizer with unreachable BPE vocabulary entries <|extra_N|> up to id
    vocab_size - 1; returns its BOS id. Encoding is unchanged (no merge produces them)."""
    data = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    taken = set(vocab.values()) | {token["id"] for token in data.get("added_tokens", [])}
    for token_id in range(max(taken) + 1, vocab_size):
        vocab[f"<|extra_{token_id}|>"] = token_id
    (target / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    shutil.copyfile(source / "tokenizer_config.json", target / "tokenizer_config.json")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target)
    if len(tokenizer) != vocab_size:
        sys.exit(f"padded tokenizer has {len(tokenizer)} ids, expected {vocab_size}")
    return tokenizer.bos_token_id


def write_prompts(n: int, path: Path) -> Path:
    """The first n prompts of the capitals set as lensdb JSONL (a control follows its positive prompt)."""
    from lensdb.prompts import load_prompt_set

    prompts = load_prompt_set(PROMPT_SET).prompts
    if not 1 <= n <= len(prompts):
        sys.exit(f"--n must be between 1 and {len(prompts)}")
    with path.open("w", encoding="utf-8") as handle:
        for prompt in prompts[:n]:
            entry = {key: getattr(prompt, key) for key in PROMPT_KEYS}
            entry["temperatures"] = list(prompt.temperatures)
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return path


def read_prompts(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    return requested


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- memory


class MemorySampler:
    """Samples (time.perf_counter(), MemoryReading) in a background thread."""

    def __init__(self, device: str):
        self.device = device
        self.samples: list[tuple[float, MemoryReading]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._read = _cuda_reading if device == "cuda" else _process_reading()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> "MemoryReading":
        reading = self._read()
        self.samples.append((time.perf_counter(), reading))
        return reading

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def at(self, mark: float) -> "MemoryReading":
        """The last sample taken at or before `mark` (the first one if none was)."""
        before = [reading for t, reading in self.samples if t <= mark]
        return before[-1] if before else self.samples[0][1]

    def beyond(self, mark: float) -> dict:
        """Peak after `mark` minus the reading at `mark`, in bytes."""
        base = self.at(mark)
        after = [reading for t, reading in self.samples if t >= mark] or [base]
        peak_total = max(r.total for r in after)
        peak_private = max(r.private for r in after)
        if self.device == "cuda":
            import torch

            peak_total = peak_private = max(peak_total, torch.cuda.max_memory_allocated())
        return {
            "peak_mem_beyond_weights_bytes": peak_private - base.private,
            "peak_rss_beyond_load_bytes": peak_total - base.total,
            "memory_after_load_bytes": base.total,
        }


@dataclass(frozen=True)
class MemoryReading:
    total: int  # RSS (CUDA: memory allocated)
    private: int  # RSS less file-backed and shared pages (CUDA: memory allocated)


def _process_reading():
    """RSS and its anonymous part. Safetensors weights are memory-mapped and paged in by the
    first forward pass: they count in RSS (file-backed) but not in the anonymous part."""
    import psutil

    process = psutil.Process()

    def read() -> MemoryReading:
        info = process.memory_info()
        return MemoryReading(total=info.rss, private=info.rss - getattr(info, "shared", 0))

    return read


def _cuda_reading() -> MemoryReading:
    import torch

    allocated = torch.cuda.memory_allocated()
    return MemoryReading(total=allocated, private=allocated)


# --------------------------------------------------------------------------- the model, outside lensdb


@dataclass
class LensModel:
    """A Hugging Face causal LM with what the norm lens needs: blocks, lens norms, unembedding."""

    model: object
    tokenizer: object
    blocks: list
    lens_norms: list  # module applied at layer 0..n_layers
    unembed_weight: object  # (d_vocab, d_model), float32 (lensdb's precision strategy)
    unembed_bias: object | None
    device: str
    final_norm: object = None  # the final norm, float32
    # lensdb's `--unembed auto` on CUDA for half-precision models: the split product from the
    # model's own half weight on the tensor cores (lensdb.extract.lens.project_split)
    unembed_half: object | None = None

    def unembed(self, normalized):
        import torch.nn.functional as F

        if self.unembed_half is not None:
            from lensdb.extract.lens import project_split, tensor_core_matmul

            return project_split(normalized, self.unembed_half, self.unembed_bias, tensor_core_matmul)
        return F.linear(normalized, self.unembed_weight, self.unembed_bias)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def load_lens_model(model_dir: str, device: str, dtype: str = "float32") -> LensModel:
    """The model in `dtype` on `device`; lens norms and the unembedding in float32, as lensdb
    computes them (residuals are widened to float32 before the norm)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device_map = {"": "cuda:0" if device == "cuda" else device}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype), attn_implementation="eager", device_map=device_map)
    model = model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = model.base_model
    blocks = list(_first_attribute(base, ("h", "layers")))
    widen = (lambda module: copy.deepcopy(module).float()) if dtype != "float32" else (lambda module: module)
    input_norms = [widen(_first_attribute(block, ("ln_1", "input_layernorm"))) for block in blocks]
    final_norm = widen(_first_attribute(base, ("ln_f", "norm", "final_layernorm")))
    head = model.get_output_embeddings()
    return LensModel(
        model=model,
        tokenizer=tokenizer,
        blocks=blocks,
        lens_norms=input_norms + [final_norm],  # pre-norm: layer i -> block i's ln_1, last -> final norm
        unembed_weight=head.weight.detach().float(),
        unembed_bias=head.bias.detach().float() if getattr(head, "bias", None) is not None else None,
        device=device,
        final_norm=final_norm,
        unembed_half=head.weight.detach() if device == "cuda" and dtype != "float32" else None,
    )


def _first_attribute(obj, names: tuple[str, ...]):
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise SystemExit(f"unsupported model: {type(obj).__name__} has none of {', '.join(names)}")


def prompt_token_ids(tokenizer, text: str) -> list[int]:
    """The tokens lensdb runs: the text's ids with BOS in front (as transformer-lens prepends it)."""
    ids = list(tokenizer.encode(text))
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


def capture_residuals(lm: LensModel, input_ids, attention_mask):
    """Forward pass; returns residuals (n_layers + 1, real rows, d_model) and final logits (real rows, d_vocab)."""
    import torch

    real = attention_mask.bool()
    captured: list = [None] * (lm.n_layers + 1)

    def keep_input(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        captured[0] = hidden[real]

    def keep_output(index):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[index] = hidden[real]

        return hook

    handles = [lm.blocks[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    handles += [block.register_forward_hook(keep_output(i + 1)) for i, block in enumerate(lm.blocks)]
    try:
        with torch.inference_mode():
            logits = lm.model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(captured), logits[real].float()


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def mark_loaded(sampler: MemorySampler, device: str) -> float:
    """A time mark right after the model load, with a memory sample; on CUDA the peak counter restarts there."""
    synchronize(device)
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    mark = time.perf_counter()
    sampler.sample()
    return mark


# --------------------------------------------------------------------------- phase: floor


def run_floor_phase(args) -> dict:
    import torch

    with MemorySampler(args.device) as sampler:
        lm = load_lens_model(args.model, args.device, args.dtype)
        loaded_at = mark_loaded(sampler, args.device)
        start = time.perf_counter()
        prompts = read_prompts(Path(args.prompts))
        sequences = sorted((prompt_token_ids(lm.tokenizer, p["text"]) for p in prompts), key=len, reverse=True)
        pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        rows = 0
        with torch.inference_mode():
            for first in range(0, len(sequences), args.batch_size):
                batch = sequences[first : first + args.batch_size]
                input_ids, attention_mask = pad_right(batch, pad_id, args.device)
                residuals, final_logits = capture_residuals(lm, input_ids, attention_mask)
                rows += floor_lens_statistics(lm, residuals, final_logits, args.chunk_bytes, args.floor_block_bytes, args.lenses)
        synchronize(args.device)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "records": rows,
        "positions": sum(len(s) for s in sequences),
        "n_layers": lm.n_layers,
        **sampler.beyond(loaded_at),
        **machine_facts(args.device),
    }


def pad_right(sequences: list[list[int]], pad_id: int, device: str):
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def chunk_shape(n_rows: int, n_layers: int, d_vocab: int, chunk_bytes: int, n_lenses: int = 1) -> tuple[int, int]:
    """(positions, layers) per chunk of float32 logits of every lens, as lensdb splits a batch."""
    rows_per_chunk = max(1, chunk_bytes // (d_vocab * 4 * n_lenses))
    positions = min(n_rows, rows_per_chunk)
    return positions, min(n_layers, max(1, rows_per_chunk // positions))


def floor_lens_statistics(lm: LensModel, residuals, final_logits, chunk_bytes: int, block_bytes: int, lenses=("norm",)) -> int:
    """Lens norms + the unembedding of each chunk in one matmul per lens (every lens's logits
    alive together, as in lensdb), then the statistics over the whole chunk (block_bytes 0) or
    over row blocks of about block_bytes of logits; returns the record count."""
    import torch

    n_layers, n_rows = residuals.shape[0], residuals.shape[1]
    final_log_probs = torch.log_softmax(final_logits, dim=-1)
    d_vocab = lm.unembed_weight.shape[0]
    positions, layers = chunk_shape(n_rows, n_layers, d_vocab, chunk_bytes, len(lenses))
    for row_start in range(0, n_rows, positions):
        rows = slice(row_start, row_start + positions)
        for layer_start in range(0, n_layers, layers):
            chunk_layers = range(layer_start, min(n_layers, layer_start + layers))
            logits = {}
            for lens in lenses:
                normalized = torch.stack([lens_normalize(lm, lens, layer, residuals[layer, rows]) for layer in chunk_layers])
                logits[lens] = lm.unembed(normalized)
            for layer_index, block_rows in row_blocks(len(chunk_layers), logits[lenses[0]].shape[1], d_vocab, block_bytes):
                norm_log_probs = None
                for lens in lenses:
                    log_probs = discarded_statistics(logits[lens][layer_index, block_rows], final_log_probs[rows][block_rows], norm_log_probs)
                    if lens == "norm":
                        norm_log_probs = log_probs
    return len(lenses) * n_layers * n_rows


def lens_normalize(lm: LensModel, lens: str, layer: int, residual):
    """lensdb's lenses: norm (layer i -> block i's input norm, last layer -> final norm),
    final_ln (the final norm everywhere), raw (none); in float32."""
    residual = residual.float()
    if lens == "raw":
        return residual
    return (lm.final_norm if lens == "final_ln" else lm.lens_norms[layer])(residual)


def row_blocks(n_layers: int, n_rows: int, d_vocab: int, block_bytes: int):
    """(layer index, row slice) of the whole chunk (all layers at once), or of blocks of rows of one layer."""
    if block_bytes <= 0:
        yield slice(None), slice(None)
        return
    block = max(1, block_bytes // (d_vocab * 4))
    for layer in range(n_layers):
        for start in range(0, n_rows, block):
            yield layer, slice(start, start + block)


def discarded_statistics(logits, final_log_probs, norm_log_probs=None):
    """log_softmax, entropy, top-20, KL to the final distribution (and KL from the norm lens
    for the other lenses); the results are dropped, the log-probs returned."""
    import torch

    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    entropy_bits = -(probs * log_probs).sum(dim=-1) / LN2
    top_probs, top_ids = torch.topk(probs, TOP_K, dim=-1)
    kl_bits = (probs * (log_probs - final_log_probs)).sum(dim=-1) / LN2
    if norm_log_probs is not None:
        kl_vs_norm = (norm_log_probs.exp() * (norm_log_probs - log_probs)).sum(dim=-1) / LN2
        del kl_vs_norm
    del entropy_bits, top_probs, top_ids, kl_bits
    return log_probs


# --------------------------------------------------------------------------- phase: lensdb


def run_lensdb_phase(args) -> dict:
    import pyarrow.dataset as ds

    from lensdb.extract.engine import extract

    with MemorySampler(args.device) as sampler, GpuSampler(enabled=args.device == "cuda") as gpu:
        start = time.perf_counter()
        summary = extract(
            args.model,
            prompts=args.prompts,
            warehouse=args.warehouse,
            lenses=tuple(args.lenses),
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            progress=False,
        )
        end = time.perf_counter()
    wall_seconds = end - start
    records_dir = summary.path / "records"
    positions = sum(ds.dataset(summary.path / "prompts", format="parquet").to_table(columns=["n_tokens"]).column("n_tokens").to_pylist())
    return {
        "load_seconds": summary.load_seconds,
        "extract_seconds": summary.extract_seconds,
        "wall_seconds": wall_seconds,
        "seconds": wall_seconds - summary.load_seconds,
        "records": summary.rows.get("records", 0),
        "positions": positions,
        "rows": summary.rows,
        "run_path": str(summary.path),
        "parquet_bytes": summary.bytes_on_disk,
        "records_parquet_bytes": sum(p.stat().st_size for p in records_dir.rglob("*.parquet")),
        **sampler.beyond(summary.timings["loaded_at"]),
        "last_layer_max_kl_bits": summary.last_layer_max_kl_bits,
        "device_map": getattr(summary, "device_map", None),
        "load_peak_host_rss_bytes": getattr(summary, "load_peak_host_rss_bytes", None),
        "peak_host_rss_bytes": getattr(summary, "peak_host_rss_bytes", None),
        "gpu_busy": gpu.busy(summary.timings["loaded_at"], end),
        **machine_facts(args.device),
    }


# --------------------------------------------------------------------------- phase: load


def run_load_phase(args) -> dict:
    """One load, lensdb or plain transformers, with the libraries imported before the clock starts."""
    import psutil
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    from transformers.utils import logging as hf_logging

    from lensdb.extract.device import Placement, peak_host_memory_bytes, reset_peak_host_memory

    hf_logging.disable_progress_bar()
    dtype = getattr(torch, args.dtype)
    target = "cuda:0" if args.device == "cuda" else args.device
    config = AutoConfig.from_pretrained(args.model)
    MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # imports the model's transformers module now, for both sides
    if args.load_variant == "lensdb":
        import transformer_lens.model_bridge  # noqa: F401 - imported before the clock, like transformers

        from lensdb.extract.model import load_config, load_model, resolve_source

        source = resolve_source(str(args.model))
        lensdb_config = load_config(source)
    else:
        from transformers import AutoModelForCausalLM
    rss_before = psutil.Process().memory_info().rss
    synchronize(args.device)
    reset_peak_host_memory()
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.load_variant == "lensdb":
        loaded = load_model(source, lensdb_config, Placement(args.device, {"": target}), dtype)
    else:
        loaded = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, device_map={"": target})
    synchronize(args.device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_host_memory_bytes()
    del loaded
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # this process's CPU time: less sensitive than wall time to other processes
        "peak_host_rss_bytes": peak,
        "rss_before_load_bytes": rss_before,
        **machine_facts(args.device),
    }


# --------------------------------------------------------------------------- phase: limit


def run_limit_phase(args) -> dict:
    """One bare matmul of every unembedding of the run, plus one pass over the logits' bytes."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    d_model, d_vocab = int(text.hidden_size), int(text.vocab_size)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    device = "cuda:0" if args.device == "cuda" else args.device
    rows = args.limit_rows
    chunk = max(1, min(rows, args.chunk_bytes // (d_vocab * dtype.itemsize)))
    generator = torch.Generator(device=device).manual_seed(0)
    weight = torch.randn(d_model, d_vocab, dtype=dtype, device=device, generator=generator)
    inputs = torch.randn(chunk, d_model, dtype=dtype, device=device, generator=generator)
    with torch.inference_mode():
        (inputs @ weight).amax(dim=-1)  # warm-up: kernels chosen, memory allocated
        synchronize(args.device)
        start = time.perf_counter()
        for first in range(0, rows, chunk):
            logits = inputs[: min(chunk, rows - first)] @ weight
            logits.amax(dim=-1)
        synchronize(args.device)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": rows,
        "d_model": d_model,
        "d_vocab": d_vocab,
        "dtype": str(dtype).removeprefix("torch."),
        "tflops": 2.0 * rows * d_model * d_vocab / seconds / 1e12,
        "logits_bytes": rows * d_vocab * dtype.itemsize,
        **machine_facts(args.device),
    }


# --------------------------------------------------------------------------- phase: seed-style


@dataclass
class SeedPrompt:
    id: str
    variant: str
    input_ids: list[int]
    tokens: list[str]
    answer_id: int | None
    paired_answer_id: int | None


def prepare_seed_prompts(tokenizer, prompts: list[dict]) -> list[SeedPrompt]:
    answer_of = {(p["id"], p["variant"]): _gold_first_id(tokenizer, p.get("gold")) for p in prompts}
    prepared = []
    for p in prompts:
        ids = prompt_token_ids(tokenizer, p["text"])
        paired = (p["control_of"], p["variant"]) if p.get("control_of") else None
        prepared.append(
            SeedPrompt(
                id=p["id"],
                variant=p["variant"],
                input_ids=ids,
                tokens=[tokenizer.decode([i]) for i in ids],
                answer_id=answer_of[(p["id"], p["variant"])],
                paired_answer_id=answer_of.get(paired) if paired else None,
            )
        )
    return prepared


def _gold_first_id(tokenizer, gold: str | None) -> int | None:
    return tokenizer.encode(" " + gold, add_special_tokens=False)[0] if gold else None


def is_verbose_position(token: str, pos: int, last_pos: int) -> bool:
    """The legacy rule: the last position, or a token containing a word of interest."""
    clean = token.strip().strip(".,!?;:").lower()
    return pos == last_pos or any(word in clean for word in VERBOSE_WORDS)


def run_seed_style_phase(args) -> dict:
    import torch

    lm = load_lens_model(args.model, args.device)
    prompts = read_prompts(Path(args.prompts))[: args.seed_style_n]
    csv_dir = Path(args.csv_dir)
    csv_dir.mkdir(parents=True, exist_ok=True)
    records_path, next_token_path = csv_dir / "records.csv", csv_dir / "pure-next-token.csv"
    synchronize(args.device)
    start = time.perf_counter()
    prepared = prepare_seed_prompts(lm.tokenizer, prompts)
    with records_path.open("w", encoding="utf-8", newline="") as records_file, next_token_path.open(
        "w", encoding="utf-8", newline=""
    ) as next_token_file:
        records, next_token = csv.writer(records_file, **LEGACY_CSV), csv.writer(next_token_file, **LEGACY_CSV)
        records.writerow(RECORDS_HEADER)
        next_token.writerow(PURE_NEXT_TOKEN_HEADER)
        with torch.inference_mode():
            for prompt in prepared:
                seed_style_prompt(lm, prompt, records, next_token)
    synchronize(args.device)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "prompts_run": len(prepared),
        "records_csv_bytes": records_path.stat().st_size,
        "pure_next_token_csv_bytes": next_token_path.stat().st_size,
        **machine_facts(args.device),
    }


def seed_style_prompt(lm: LensModel, prompt: SeedPrompt, records, next_token) -> None:
    """One forward pass for one prompt, then one lens distribution per (layer, position)."""
    import torch

    input_ids = torch.tensor([prompt.input_ids], device=lm.device)
    residuals, final_logits = capture_residuals(lm, input_ids, torch.ones_like(input_ids))
    last = len(prompt.input_ids) - 1
    final_at_last = (final_logits[last], torch.log_softmax(final_logits[last], dim=-1))
    for layer in range(lm.n_layers + 1):
        for pos in range(last + 1):
            k = TOP_K if is_verbose_position(prompt.tokens[pos], pos, last) else LEGACY_OTHER_K
            row = lens_distribution(lm, layer, residuals[layer, pos], k)
            records.writerow(legacy_row(prompt, layer, pos, prompt.tokens[pos], row))
            if pos == last:
                extras = next_token_extras(prompt, row, *final_at_last)
                next_token.writerow(legacy_row(prompt, layer, pos, NEXT_TOKEN_MARK, row) + extras)


@dataclass
class LensDistribution:
    """The norm lens at one (layer, position), as the seed computed it."""

    logits: object
    probs: object
    log_probs: object
    entropy_bits: float
    top_ids: list[int]
    top_probs: list[float]
    top_tokens: list[str]


def lens_distribution(lm: LensModel, layer: int, residual, k: int) -> LensDistribution:
    """Norm + unembedding of one residual vector, softmax, top-k and one decode per listed token."""
    import torch

    logits = lm.unembed_weight @ lm.lens_norms[layer](residual)
    if lm.unembed_bias is not None:
        logits = logits + lm.unembed_bias
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    top_probs, top_ids = torch.topk(probs, k)
    top_ids = top_ids.tolist()
    return LensDistribution(
        logits=logits,
        probs=probs,
        log_probs=log_probs,
        entropy_bits=(-(probs * log_probs).sum() / LN2).item(),
        top_ids=top_ids,
        top_probs=top_probs.tolist(),
        top_tokens=[lm.tokenizer.decode([i]) for i in top_ids],
    )


def legacy_row(prompt: SeedPrompt, layer: int, pos: int, token: str, row: LensDistribution) -> list:
    """One row of the legacy records CSV: k listed tokens, the unused slots empty, then rest_mass."""
    cells = [prompt.id, prompt.variant, layer, pos, token, row.entropy_bits]
    for token_text, prob in zip(row.top_tokens, row.top_probs):
        cells += [token_text, prob]
    cells += [""] * (2 * (TOP_K - len(row.top_tokens)))
    cells.append(1.0 - sum(row.top_probs))
    return cells


def next_token_extras(prompt: SeedPrompt, row: LensDistribution, final_logits, final_log_probs) -> list:
    """The pure-next-token columns after rest_mass, for one layer at the last position."""
    import torch

    p_answer = answer_rank = control_margin = None
    if prompt.answer_id is not None:
        p_answer_tensor = row.probs[prompt.answer_id]
        p_answer = p_answer_tensor.item()
        answer_rank = int((row.probs > p_answer_tensor).sum().item()) + 1
        if prompt.paired_answer_id is not None:
            control_margin = p_answer - row.probs[prompt.paired_answer_id].item()
    kl_bits = ((row.probs * (row.log_probs - final_log_probs)).sum() / LN2).item()
    cos = torch.nn.functional.cosine_similarity(row.logits, final_logits, dim=0).item()
    top1_id, top1_prob = row.top_ids[0], row.top_probs[0]
    return [
        top1_id in prompt.input_ids and top1_prob > COPY_COLLAPSE_PROB,
        row.entropy_bits <= ENTROPY_COLLAPSE_BITS,
        top1_id == prompt.answer_id,
        top1_prob,
        sum(row.top_probs[:5]),
        p_answer,
        kl_bits,
        answer_rank,
        cos,
        control_margin,
    ]


# --------------------------------------------------------------------------- CSV with lensdb's content


def write_same_content_csv(records_dir: Path, path: Path) -> int:
    """lensdb's records as the legacy records CSV (top-20 everywhere); returns its size in bytes."""
    import pyarrow.parquet as pq

    columns = ["prompt_id", "prompt_variant", "layer", "pos", "token", "entropy_bits", "topk_tokens", "topk_probs"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, **LEGACY_CSV)
        writer.writerow(RECORDS_HEADER)
        for part in sorted(records_dir.glob("*.parquet")):
            for batch in pq.ParquetFile(part).iter_batches(columns=columns):
                for r in batch.to_pylist():
                    cells = [r["prompt_id"], r["prompt_variant"], r["layer"], r["pos"], r["token"], r["entropy_bits"]]
                    for token, prob in zip(r["topk_tokens"], r["topk_probs"]):
                        cells += [token, prob]
                    cells.append(1.0 - sum(r["topk_probs"]))
                    writer.writerow(cells)
    return path.stat().st_size


# --------------------------------------------------------------------------- orchestration


def machine_facts(device: str) -> dict:
    import torch

    facts = {"torch_threads": torch.get_num_threads(), "device": device}
    if device == "cuda":
        facts["device_name"] = torch.cuda.get_device_name()
    return facts


def run_phase(phase: str, args, work: Path, label: str | None = None, **extra) -> dict:
    """Run one phase in a fresh interpreter; its stdout goes to our stderr, its result comes back as JSON."""
    label = label or phase
    result_path = work / f"{label}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--model",
        str(args.model),
        "--prompts",
        str(work / "prompts.jsonl"),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--chunk-bytes",
        str(args.chunk_bytes),
        "--lenses",
        ",".join(args.lenses),
        "--dtype",
        args.dtype,
        "--result",
        str(result_path),
    ]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    log(f"phase {label} ...")
    with OtherCpuUse() as other:
        if args.in_process:  # the same arguments, parsed and run here (a smoke test: no fresh interpreter)
            import contextlib

            with contextlib.redirect_stdout(sys.stderr):
                phase_args = parse_args(command[2:])
                result_path.write_text(json.dumps(PHASES[phase](phase_args)))
        else:
            subprocess.run(command, check=True, stdout=sys.stderr)
    result = json.loads(result_path.read_text())
    result["other_cpu_share"] = other.share
    log(f"phase {label}: {result['seconds']:.1f} s (other processes used {other.share:.0%} of the CPUs meanwhile)")
    return result


class OtherCpuUse:
    """The share of all CPUs that processes other than this one and its children used meanwhile
    (system-wide busy time minus our own and our children's CPU time): above a few percent, timings are contended."""

    def __enter__(self) -> "OtherCpuUse":
        self.start = (time.perf_counter(), _system_busy_seconds(), _own_cpu_seconds())
        return self

    def __exit__(self, *exc) -> None:
        wall0, busy0, own0 = self.start
        wall = time.perf_counter() - wall0
        other = (_system_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)
        self.share = max(0.0, other) / (wall * (os.cpu_count() or 1))


def _system_busy_seconds() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def lens_statistics_block_bytes() -> int:
    """The row-block size of lensdb's statistics (lensdb.extract.stats.BLOCK_BYTES), else 2 MiB."""
    from lensdb.extract import stats

    return getattr(stats, "BLOCK_BYTES", 2 << 20)


def run_benchmark(args) -> dict:
    from lensdb.extract.engine import CHUNK_BYTES

    if args.model is None:
        args.model = ensure_model(shape_model_dir(args.shape, args.scale_down), Path(args.tokenizer), args.shape, args.scale_down)
    else:
        args.model = Path(args.model)
    args.chunk_bytes = CHUNK_BYTES["cpu" if args.device == "cpu" else "gpu"]  # lensdb's own, per device
    args.floor_block_bytes = lens_statistics_block_bytes()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"run-n{args.n}-", dir=OUT_DIR))
    try:
        write_prompts(args.n, work / "prompts.jsonl")
        load = None if args.skip_load else run_load_comparison(args, work)
        floor = run_phase("floor", args, work, floor_block_bytes=0)
        floor_blocked = run_phase("floor", args, work, "floor-blocked", floor_block_bytes=args.floor_block_bytes)
        lensdb_result = run_phase("lensdb", args, work, warehouse=work / "warehouse")
        limit = run_phase("limit", args, work, limit_rows=lensdb_result["records"])
        log("writing lensdb's records as a legacy CSV (top-20 everywhere) ...")
        csv_same = write_same_content_csv(Path(lensdb_result["run_path"]) / "records", work / "same-content.csv")
        seed = None
        if not args.skip_seed_style:
            seed_n = min(args.seed_style_n or args.n, args.n)
            seed = run_phase("seed-style", args, work, seed_style_n=seed_n, csv_dir=work / "seed-style")
        result = summarize(args, floor, floor_blocked, lensdb_result, seed, csv_same, work)
        result["load"] = load
        result["hardware_limit"] = limit
        result["lensdb_over_hardware_limit"] = lensdb_result["extract_seconds"] / limit["seconds"]
        result["targets"] = check_targets(result)
        return result
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_load_comparison(args, work: Path) -> dict:
    """lensdb's load vs plain transformers', alternating; the fastest time and smallest peak of each."""
    runs: dict[str, list[dict]] = {"plain": [], "lensdb": []}
    for repeat in range(args.load_repeats):
        for variant in ("plain", "lensdb"):
            runs[variant].append(run_phase("load", args, work, f"load-{variant}-{repeat}", load_variant=variant))
    best = {
        variant: {
            "seconds": min(r["seconds"] for r in results),
            "cpu_seconds": min(r["cpu_seconds"] for r in results),
            "peak_host_rss_bytes": min(r["peak_host_rss_bytes"] for r in results),
            "rss_before_load_bytes": min(r["rss_before_load_bytes"] for r in results),
            "all_seconds": [r["seconds"] for r in results],
            "other_cpu_share": max(r["other_cpu_share"] for r in results),
        }
        for variant, results in runs.items()
    }
    return {
        **best,
        "seconds_over_plain": best["lensdb"]["seconds"] / best["plain"]["seconds"],
        "cpu_seconds_over_plain": best["lensdb"]["cpu_seconds"] / best["plain"]["cpu_seconds"],
        "peak_host_rss_over_plain": best["lensdb"]["peak_host_rss_bytes"] / best["plain"]["peak_host_rss_bytes"],
        "repeats": args.load_repeats,
    }


def summarize(args, floor: dict, floor_blocked: dict, lensdb_result: dict, seed: dict | None, csv_same: int, work: Path) -> dict:
    n = args.n
    seed_summary, seed_per_prompt, csv_legacy = None, None, None
    if seed is not None:
        ran = seed["prompts_run"]
        seed_per_prompt = seed["seconds"] / ran
        legacy_bytes = seed["records_csv_bytes"] + seed["pure_next_token_csv_bytes"]
        csv_legacy = round(legacy_bytes * n / ran)
        seed_summary = {
            "prompts_run": ran,
            "extrapolated": ran < n,
            "seconds_measured": seed["seconds"],
            "seconds_per_prompt": seed_per_prompt,
            "seconds": seed_per_prompt * n,
            "records_csv_bytes_measured": seed["records_csv_bytes"],
            "pure_next_token_csv_bytes_measured": seed["pure_next_token_csv_bytes"],
        }
    lensdb_per_prompt = lensdb_result["seconds"] / n
    result = {
        "n_prompts": n,
        "batch_size": args.batch_size,
        "model": str(args.model),
        "shape": None if args.model_given else args.shape + ("-scaled-down" if args.scale_down else ""),
        "lenses": list(args.lenses),
        "dtype": args.dtype,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": lensdb_result["torch_threads"],
            "device": args.device,
            "device_name": lensdb_result.get("device_name") or platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "memory_measure": "torch.cuda.max_memory_allocated"
            if args.device == "cuda"
            else "anonymous RSS (psutil rss - shared, sampled every 20 ms): memory-mapped weights excluded",
        },
        "floor": {**_phase_times(floor["seconds"], n), "records": floor["records"], **_memory(floor)},
        "floor_blocked": {
            **_phase_times(floor_blocked["seconds"], n),
            "block_bytes": args.floor_block_bytes,
            **_memory(floor_blocked),
        },
        "lensdb": {
            **_phase_times(lensdb_result["seconds"], n),
            "load_seconds": lensdb_result["load_seconds"],
            "extract_seconds": lensdb_result["extract_seconds"],
            "wall_seconds": lensdb_result["wall_seconds"],
            "records": lensdb_result["records"],
            "positions": lensdb_result["positions"],
            "rows": lensdb_result["rows"],
            "records_parquet_bytes": lensdb_result["records_parquet_bytes"],
            **_memory(lensdb_result),
            "last_layer_max_kl_bits": lensdb_result["last_layer_max_kl_bits"],
            "device_map": lensdb_result["device_map"],
            "load_peak_host_rss_bytes": lensdb_result["load_peak_host_rss_bytes"],
            "peak_host_rss_bytes": lensdb_result["peak_host_rss_bytes"],
        },
        "seed_style": seed_summary,
        "other_cpu_share": {
            "floor": floor["other_cpu_share"],
            "floor_blocked": floor_blocked["other_cpu_share"],
            "lensdb": lensdb_result["other_cpu_share"],
            **({"seed_style": seed["other_cpu_share"]} if seed else {}),
        },
        "records_match": floor["records"] == lensdb_result["records"],
        "tokens_per_second": lensdb_result["positions"] / lensdb_result["extract_seconds"],
        "records_per_second": lensdb_result["records"] / lensdb_result["extract_seconds"],
        "gpu_busy": lensdb_result["gpu_busy"],
        "lensdb_over_floor": lensdb_result["seconds"] / floor["seconds"],
        "lensdb_extract_seconds_over_floor": lensdb_result["extract_seconds"] / floor["seconds"],
        "lensdb_over_blocked_floor": lensdb_result["seconds"] / floor_blocked["seconds"],
        "seed_over_lensdb": seed_per_prompt / lensdb_per_prompt if seed_per_prompt else None,
        "peak_mem_beyond_weights_bytes": {
            "lensdb": lensdb_result["peak_mem_beyond_weights_bytes"],
            "floor": floor["peak_mem_beyond_weights_bytes"],
        },
        "parquet_bytes": lensdb_result["parquet_bytes"],
        "csv_bytes_same_content": csv_same,
        "csv_bytes_same_content_source": "written from the lensdb run's records (pyarrow), legacy dialect, top-20 at every position",
        "csv_bytes_legacy_rule": csv_legacy,
        "csv_bytes_legacy_rule_extrapolated": bool(seed_summary and seed_summary["extrapolated"]),
        "parquet_over_csv": lensdb_result["parquet_bytes"] / csv_same,
        "records_parquet_over_csv": lensdb_result["records_parquet_bytes"] / csv_same,
        "parquet_over_csv_legacy_rule": lensdb_result["parquet_bytes"] / csv_legacy if csv_legacy else None,
    }
    if args.keep:
        result["kept"] = str(work)
    return result


def _memory(phase: dict) -> dict:
    keys = ("peak_mem_beyond_weights_bytes", "peak_rss_beyond_load_bytes", "memory_after_load_bytes")
    return {key: phase[key] for key in keys}


def _phase_times(seconds: float, n: int) -> dict:
    return {"seconds": seconds, "seconds_per_prompt": seconds / n}


def check_targets(result: dict) -> dict:
    load, busy = result.get("load"), result.get("gpu_busy")
    values = {
        "lensdb_over_floor": result["lensdb_over_floor"],
        "seed_over_lensdb": result["seed_over_lensdb"],
        "lensdb_peak_mem_beyond_weights_bytes": result["peak_mem_beyond_weights_bytes"]["lensdb"],
        "parquet_over_csv": result["parquet_over_csv"],
        "load_seconds_over_plain": load["seconds_over_plain"] if load else None,
        "load_peak_host_rss_over_plain": load["peak_host_rss_over_plain"] if load else None,
        "lensdb_over_hardware_limit": result.get("lensdb_over_hardware_limit"),
        "gpu_busy_share": busy["share"] if busy else None,
    }
    checks = {}
    for name, (limit, kind) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value <= limit if kind == "max" else value >= limit)
        checks[name] = {"value": value, "limit": limit, "kind": kind, "met": met}
    return checks


# --------------------------------------------------------------------------- report


def print_table(result: dict, stream) -> None:
    n = result["n_prompts"]
    floor, lensdb_r, seed = result["floor"], result["lensdb"], result["seed_style"]
    machine = result["machine"]
    say = lambda line="": print(line, file=stream)  # noqa: E731
    say(f"N={n} prompts, batch size {result['batch_size']}, device {machine['device']} ({machine['device_name']}), "
        f"{machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads")
    say(f"{'phase':<28}{'seconds':>10}{'s/prompt':>11}  ratio")
    say(f"{'floor':<28}{floor['seconds']:>10.2f}{floor['seconds_per_prompt']:>11.4f}  1.00")
    blocked = result["floor_blocked"]
    say(f"{'floor, row-blocked stats':<28}{blocked['seconds']:>10.2f}{blocked['seconds_per_prompt']:>11.4f}  "
        f"{blocked['seconds'] / floor['seconds']:.2f} x floor (lensdb = {result['lensdb_over_blocked_floor']:.2f} x this)")
    say(f"{'lensdb (wall - load)':<28}{lensdb_r['seconds']:>10.2f}{lensdb_r['seconds_per_prompt']:>11.4f}  "
        f"{result['lensdb_over_floor']:.2f} x floor")
    say(f"{'  summary.extract_seconds':<28}{lensdb_r['extract_seconds']:>10.2f}{lensdb_r['extract_seconds'] / n:>11.4f}  "
        f"{result['lensdb_extract_seconds_over_floor']:.2f} x floor")
    say(f"{'  summary.load_seconds':<28}{lensdb_r['load_seconds']:>10.2f}")
    if seed:
        label = "seed-style" + (f" (est. from {seed['prompts_run']})" if seed["extrapolated"] else "")
        say(f"{label:<28}{seed['seconds']:>10.2f}{seed['seconds_per_prompt']:>11.4f}  "
            f"{result['seed_over_lensdb']:.2f} x lensdb")
    else:
        say(f"{'seed-style':<28}{'skipped':>10}")
    busy = {phase: share for phase, share in result["other_cpu_share"].items() if share > CONTENDED_SHARE}
    if busy:
        say("WARNING: other processes used the CPUs during " + ", ".join(f"{k} ({v:.0%})" for k, v in busy.items())
            + ": these timings are contended; run again on a quiet machine")
    say(f"records: floor {floor['records']}, lensdb {lensdb_r['records']} ({'match' if result['records_match'] else 'MISMATCH'}); "
        f"{result['tokens_per_second']:,.0f} tokens/s, {result['records_per_second']:,.0f} records/s (lensdb extract)")
    limit = result["hardware_limit"]
    say(f"hardware limit: {limit['seconds']:.2f} s ({limit['rows']:,} x {limit['d_model']} x {limit['d_vocab']:,} {limit['dtype']} matmul "
        f"+ one pass over the logits, {limit['tflops']:.1f} TFLOP/s); lensdb extract = {result['lensdb_over_hardware_limit']:.2f} x this")
    busy = result["gpu_busy"]
    if busy:
        say(f"GPU busy during extract: {busy['share']:.0%} (idle in {busy['idle_sample_share']:.0%} of {busy['samples']} samples, {busy['source']})")
    load = result["load"]
    if load:
        plain, ours = load["plain"], load["lensdb"]
        say(f"load (best of {load['repeats']}): lensdb {ours['seconds']:.2f} s, peak host RSS {_mib(ours['peak_host_rss_bytes'])}; "
            f"plain transformers {plain['seconds']:.2f} s, {_mib(plain['peak_host_rss_bytes'])} -> "
            f"{load['seconds_over_plain']:.2f} x time ({load['cpu_seconds_over_plain']:.2f} x CPU time), {load['peak_host_rss_over_plain']:.2f} x RSS")
    mem = result["peak_mem_beyond_weights_bytes"]
    say(f"peak memory beyond weights: lensdb {_mib(mem['lensdb'])}, floor {_mib(mem['floor'])} ({machine['memory_measure']})")
    if machine["device"] != "cuda":
        say(f"  peak RSS beyond RSS after load (weights paged in lazily count here): lensdb "
            f"{_mib(lensdb_r['peak_rss_beyond_load_bytes'])}, floor {_mib(floor['peak_rss_beyond_load_bytes'])}")
    legacy = result["csv_bytes_legacy_rule"]
    legacy_text = "skipped" if legacy is None else _mib(legacy) + (" (extrapolated)" if result["csv_bytes_legacy_rule_extrapolated"] else "")
    say(f"bytes: parquet {_mib(result['parquet_bytes'])} (records {_mib(lensdb_r['records_parquet_bytes'])}), "
        f"CSV same content {_mib(result['csv_bytes_same_content'])}, CSV legacy 20/5 rule {legacy_text}")
    say(f"parquet / CSV same content: {result['parquet_over_csv']:.3f} (records only {result['records_parquet_over_csv']:.3f})")
    say("targets:")
    for name, check in result["targets"].items():
        value = check["value"]
        if value is None:
            continue
        shown = _mib(value) if name.endswith("bytes") else f"{value:.3f}"
        limit = _mib(check["limit"]) if name.endswith("bytes") else check["limit"]
        verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        say(f"  {name:<40}{shown:>12}  {'<=' if check['kind'] == 'max' else '>='} {limit}  {verdict}")


def _mib(value: int) -> str:
    return f"{value / (1 << 20):.1f} MiB"


# --------------------------------------------------------------------------- command line


PHASES = {
    "floor": run_floor_phase,
    "lensdb": run_lensdb_phase,
    "seed-style": run_seed_style_phase,
    "load": run_load_phase,
    "limit": run_limit_phase,
}


def parse_args(argv=None):

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the module docstring for the phases.")
    parser.add_argument("--n", type=int, default=64, help="the first N prompts of the capitals set (default 64)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: lensdb's for the device (8 on CPU, 32 on CUDA)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--shape", choices=tuple(SHAPES), default="gpt2", help="the random model to build and use (default gpt2)")
    parser.add_argument("--scale-down", action="store_true", help="the shape with 2 layers and d_model 256 (64 for gpt2): a smoke test of the code paths")
    parser.add_argument("--model", help="a local model directory instead of --shape")
    parser.add_argument("--lenses", default="norm", help="comma list of lenses for lensdb and the floor (default norm)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype for lensdb and the floor (default float32)")
    parser.add_argument("--skip-load", action="store_true", help="leave out the load comparison with plain transformers")
    parser.add_argument("--load-repeats", type=int, default=2, help="loads of each side in the load comparison (default 2)")
    parser.add_argument("--tokenizer", default=str(GPT2_TOKENIZER_DIR), help="the GPT-2 tokenizer for the default model")
    parser.add_argument("--skip-seed-style", action="store_true", help="leave the slow seed-style loop out")
    parser.add_argument("--seed-style-n", type=int, help="run seed-style on the first M prompts only and extrapolate to N")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (warehouse, CSVs) under bench/out/")
    parser.add_argument("--in-process", action="store_true",
                        help="run every phase in this interpreter, not a fresh one: a quick smoke test of the code paths "
                        "(bench/gpu_check.sh --dry-run); memory and load figures are then not each phase's own")
    # Internal: one phase in this process (the orchestrator runs each so; handy for profiling).
    parser.add_argument("--phase", choices=tuple(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    parser.add_argument("--csv-dir", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-bytes", type=int, default=128 << 20, help=argparse.SUPPRESS)
    parser.add_argument("--floor-block-bytes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--load-variant", choices=("plain", "lensdb"), help=argparse.SUPPRESS)
    parser.add_argument("--limit-rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.lenses = [part.strip() for part in args.lenses.split(",") if part.strip()]
    unknown = [lens for lens in args.lenses if lens not in ("norm", "final_ln", "raw")]
    if unknown or not args.lenses:
        parser.error(f"--lenses: unknown lens {', '.join(unknown) or '(none)'}: choose from norm, final_ln, raw")
    args.lenses = sorted(dict.fromkeys(args.lenses), key=lambda lens: lens != "norm")  # lensdb's order: norm first
    if args.load_repeats < 1:
        parser.error("--load-repeats must be at least 1")
    args.model_given = args.model is not None
    if args.seed_style_n is not None and args.seed_style_n < 1:
        parser.error("--seed-style-n must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    args.device = resolve_device(args.device)
    if args.batch_size is None:
        from lensdb.extract.engine import default_batch_size

        args.batch_size = default_batch_size(args.device)
    if args.phase:
        result = PHASES[args.phase](args)
        Path(args.result).write_text(json.dumps(result)) if args.result else print(json.dumps(result, indent=2))
        return
    result = run_benchmark(args)
    print_table(result, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
