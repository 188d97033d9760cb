"""`extract`'s options, in one frozen config: each option is one field, with its default, its
command-line flag and help, and its checks. No torch here (the CLI and the sweep read it).

Everything else is generated from the fields:

    lensdb extract's options   lensdb.cli_options.config_options(ExtractConfig) declares them
    lensdb sweep               parses them with extract's parser; config.to_args() gives
                               each model's `lensdb extract` the same options back
    lensdb.extract(model, ...) keywords build a config (ExtractConfig.from_keywords)
    the settings hash          config.record_settings(): the fields marked `records`

Adding an option is one field here: `option(flag, default, help, ...)` says its flag
(None: library only), its help as --help shows it, its type (choices, minimum, number,
is_flag, multiple for a repeatable flag with a tuple value, folder), `records=True` when it
changes the records (then RecordSettings in lensdb/run_settings.py gets a field of the same
name; tests/test_sweep.py checks the two agree), `per_run=True` when it names one run (a
sweep refuses it). The engine reads it as `config.<name>`; tests/test_sweep.py's GIVEN
needs a non-default value for it, to check that a sweep passes it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from lensdb.errors import LensdbError
from lensdb.lenses import DEFAULT_LENSES, LensSpec, lens_identities, lens_option_help, parse_lens_specs, reference_lens
from lensdb.run_settings import LensIdentity, RecordSettings
from lensdb.token_groups import TrackSpec, parse_track_specs
from lensdb.warehouse import layout

# torch.manual_seed takes [-2**63, 2**64), the manifest stores an int64: their overlap.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")
UNEMBED_STRATEGIES = ("auto", "float32", "split")
SITES = ("post", "mid", "all")  # lensdb/extract/sites.py


@dataclass(frozen=True)
class Option:
    """How a config field appears on the command line and what it means for a run."""

    flag: str | None  # None: a library-only tuning option
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    number: bool = False  # an integer (click INTEGER)
    is_flag: bool = False
    multiple: bool = False  # repeatable: the value is a tuple, one item per use of the flag
    show_default: bool = False
    folder: bool = False  # a folder path (click.Path(file_okay=False))
    per_run: bool = False  # names one run: a sweep refuses it
    records: bool = False  # changes the records: part of the settings hash
    as_text: Callable[[Any], str] = str  # the value (one item, if multiple) as the command line writes it
    as_setting: Callable[[Any], Any] = lambda value: value  # the value as RecordSettings holds it


def option(flag: str | None, default, help: str = "", **details) -> Any:
    return field(default=default, metadata={"option": Option(flag, help, **details)})


def option_of(config_field) -> Option:
    return config_field.metadata["option"]


def _track_text(spec) -> str:
    """A --track value back as text: NAME=@FILE for a word file, else NAME=WORD,WORD,..."""
    return f"{spec.name}=@{spec.source}" if spec.source != "inline" else f"{spec.name}={','.join(spec.words)}"


def _track_setting(specs) -> tuple:
    return tuple((spec.name, spec.words) for spec in specs)  # a word file by its words, not its path


def _lens_text(specs) -> str:
    return ",".join(str(spec) for spec in (parse_lens_specs(specs) if isinstance(specs, str) else specs))


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract: every option of `lensdb extract` but MODEL, --prompts, --warehouse and --json.

    `lenses` may be given as a comma string or a list; it is held as LensSpecs. Building
    a config checks it (a bad value is one LensdbError line, before any work).
    """

    lenses: tuple[LensSpec, ...] = option("--lens", DEFAULT_LENSES, lens_option_help(), show_default=True, records=True, as_text=_lens_text)
    reference_lens: str | None = option(
        "--reference-lens", None, "The lens every other lens is compared with (kl_vs_norm_bits) [default: norm, when in the run].", records=True
    )
    unembed: str = option(
        "--unembed", "auto",
        "Unembedding precision strategy: float32 matmuls, or split (half-precision models on CUDA: float32 products from tensor-core "
        "matmuls). auto: split on CUDA for float16/bfloat16 models.",
        choices=UNEMBED_STRATEGIES, show_default=True, records=True,
    )  # fmt: skip
    top_k: int = option("--top-k", 20, "Top tokens kept per record.", minimum=1, show_default=True, records=True)
    device: str = option(
        "--device", "auto",
        "auto: one GPU, else all GPUs, else mps, else cpu (with disk offload if host memory is short), by a conservative "
        "memory-fit estimate; it says what it chose.",
        choices=DEVICES, show_default=True,
    )  # fmt: skip
    device_map: str | dict | None = option(
        "--device-map", None,
        "Spread the model over devices: auto or balanced (accelerate's strategies, over all GPUs, or CPU and disk with --device cpu), "
        "or a JSON file {module: device}.",
        metavar="auto|balanced|FILE.json",
    )  # fmt: skip
    max_memory: str | dict | None = option(
        "--max-memory", None,
        "Memory budgets per device, e.g. 0=75GiB,1=75GiB or cpu=200GiB (GPU index, cpu, mps, disk; B, KB/MB/GB, KiB/MiB/GiB); "
        "weights beyond the CPU budget go to disk.",
        metavar="DEVICE=SIZE,...",
    )  # fmt: skip
    offload_folder: str | None = option(
        "--offload-folder", None, "Folder for disk-offloaded weights that must be re-saved (non-safetensors checkpoints).",
        metavar="DIR", folder=True,
    )  # fmt: skip
    dtype: str = option(
        "--dtype", "auto", "auto: CUDA float16 (Gemma bfloat16), MPS float16, CPU float32 (bfloat16 above ~30B parameters).",
        choices=DTYPES, show_default=True, records=True,
    )  # fmt: skip
    revision: str | None = option("--revision", None, "Hub revision (branch, tag or commit) of a hub model.", records=True)
    batch_size: int | None = option("--batch-size", None, "Prompts per forward pass [default: 8 on CPU and MPS, 32 on CUDA].", minimum=1)
    keep_residuals: bool = option(
        "--keep-residuals", False, "Also store every residual vector (its own table, model dtype).", is_flag=True, records=True
    )
    sites: str = option(
        "--sites", "post",
        "Where the residual is read: post (after each block), mid (after each block's attention, before its MLP; v1.records "
        "site = 'mid') or all (both). Parallel-block models (GPT-J, GPT-NeoX, Phi, Falcon) have no mid site.",
        choices=SITES, show_default=True, records=True,
    )  # fmt: skip
    track: tuple[TrackSpec, ...] = option(
        "--track", (),
        "Track a token group (repeatable): its probability mass, best token and rank at every record (v1.token_groups), and "
        "every prompt's gold answers together (v1.answer_mass). Words inline, comma-separated, or @FILE with one word a line "
        "(UTF-8; # comments); each word counts with its first token with and without a leading space.",
        metavar="NAME=WORD,...|NAME=@FILE", multiple=True, records=True, as_text=_track_text, as_setting=_track_setting,
    )  # fmt: skip
    attribution: bool = option(
        "--attribution", False,
        "Also store the direct logit attribution of the embedding and every block's attention and MLP to the gold, final "
        "top-1 and tracked tokens (v1.attributions).",
        is_flag=True, records=True,
    )  # fmt: skip
    run_id: str | None = option("--run-id", None, "Id of the new run [default: UTC time and a random suffix].", per_run=True)
    model_name: str | None = option("--model-name", None, "Name recorded for the model [default: hub id, or the directory's name].", per_run=True)
    seed: int = option("--seed", 316, "torch seed set before loading.", number=True, show_default=True)  # the original experiment's seed
    quiet: bool = option("--quiet", False, "No progress bar; print only the run id.", is_flag=True)
    chunk_bytes: int | None = option(None, None)  # float32 logits per chunk of layers x positions [default: engine.CHUNK_BYTES]

    def __post_init__(self):
        object.__setattr__(self, "lenses", parse_lens_specs(self.lenses))
        object.__setattr__(self, "track", parse_track_specs(self.track))
        self.check()

    def check(self) -> None:
        """Raise a one-line LensdbError for an option `extract` could not store or use."""
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX:
            raise LensdbError(f"--seed {seed} is outside 64 bits (use an integer from {SEED_MIN} to {SEED_MAX})")
        if self.model_name is not None:
            try:
                layout.check_model_name(self.model_name)
            except LensdbError as exc:
                raise LensdbError(f"--model-name: {exc}") from None
        if self.run_id is not None:
            layout.check_run_id(self.run_id)
        reference_lens(self.lenses, self.reference_lens)  # raises unless --reference-lens is among the lenses
        if self.attribution and self.sites == "mid":
            raise LensdbError("--attribution reads the residual after every block: use --sites post or all with it")
        for config_field in fields(self):
            opt, value = option_of(config_field), getattr(self, config_field.name)
            if value is None or opt.flag is None:
                continue
            for item in value if opt.multiple else (value,):
                if opt.minimum is not None and item < opt.minimum:
                    raise LensdbError(f"{opt.flag} must be at least {opt.minimum}")
                if opt.choices is not None and item not in opt.choices:
                    raise LensdbError(f"{opt.flag} {item}: choose {', '.join(opt.choices[:-1])} or {opt.choices[-1]}")

    @property
    def reference(self) -> str | None:
        """The lens kl_vs_norm_bits compares with: --reference-lens, else norm when in the run."""
        return reference_lens(self.lenses, self.reference_lens)

    @classmethod
    def from_params(cls, params: dict) -> "ExtractConfig":
        """The config of a command line parsed by extract's options (cli_options.config_options)."""
        return cls(**{f.name: params[f.name] for f in fields(cls) if option_of(f).flag is not None})

    @classmethod
    def from_keywords(cls, *, progress: bool = False, reference: str | None = None, **options) -> "ExtractConfig":
        """lensdb.extract's keywords: the fields, `reference` for reference_lens and `progress`
        (default False: the library draws no progress bar) for `not quiet`."""
        if reference is not None:
            options["reference_lens"] = reference
        return cls(**{"quiet": not progress} | options)

    def to_args(self) -> list[str]:
        """The options as `lensdb extract` arguments (what a sweep gives each model)."""
        args: list[str] = []
        for config_field in fields(self):
            opt, value = option_of(config_field), getattr(self, config_field.name)
            if opt.flag is None or opt.per_run:
                if value != config_field.default:
                    what = "names one run; a sweep extracts several models" if opt.per_run else "has no command-line flag"
                    raise LensdbError(f"{opt.flag or config_field.name} {what}")
            elif opt.is_flag:
                args += [opt.flag] if value else []
            elif opt.multiple:
                args += [text for item in value for text in (opt.flag, opt.as_text(item))]
            elif value is not None:
                if isinstance(value, dict):
                    raise LensdbError(f"{opt.flag}: a sweep passes options as text (give a file, not a dict)")
                args += [opt.flag, opt.as_text(value)]
        return args

    def record_settings(self, warehouse=None, lenses: tuple[LensIdentity, ...] | None = None) -> RecordSettings:
        """The settings these options record (manifest.settings_sha256): `lenses` as extract
        loaded them, else as each lens kind identifies its spec (a tuned lens by its
        params.pt, in its folder or `warehouse`'s store): what a sweep computes before any model."""
        recorded = {f.name: option_of(f).as_setting(getattr(self, f.name)) for f in fields(self) if option_of(f).records}
        identities = lenses if lenses is not None else lens_identities(self.lenses, warehouse)
        return RecordSettings(**recorded | {"lenses": identities, "reference_lens": self.reference})


def check_model_argument(model: str) -> None:
    if not layout.is_utf8(model):
        raise LensdbError(f"MODEL {model!r} is not valid UTF-8 (lensdb stores its path or id as text)")


def check_extract_options(*, model: str, model_name: str | None, seed: int, run_id: str | None) -> None:
    """The checks of MODEL and of the options that name a run, without building a whole config."""
    ExtractConfig(seed=seed, model_name=model_name, run_id=run_id)
    check_model_argument(model)
