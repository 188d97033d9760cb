"""The legacy output files' format: names, CSV columns, the CSV dialect, fixed counts.

Shared by the importer (legacy files -> warehouse tables) and the exporter (v1 views ->
legacy files). The metrics themselves are defined once, in the v1 SQL views; this module
holds only what the files look like.
"""

from __future__ import annotations

# File names: `<stem>` is the model id after its last '/'.
JSON_SUFFIX = ".json"
RECORDS_SUFFIX = "-records.csv"
PURE_SUFFIX = "-pure-next-token.csv"
FILE_PREFIX = "output-"

LENS = "norm"  # the legacy experiment's lens

# Top tokens listed: records CSV rows at "verbose" positions and every top-k column group.
WIDE_TOP_K = 20
NARROW_TOP_K = 5  # records CSV elsewhere, and every pure-next-token row
VERBOSE_WORDS = ("Germany", "Berlin", "capital", "Answer", "word", "simply")
VERBOSE_STRIP = ".,!?;:"
NEXT_TOKEN = "⟨NEXT⟩"  # the pure CSV's token column

# Fixed sizes of the JSON's lists.
FINAL_TOP_K = 20
TEST_PROMPT_TOP_K = 10
TEMPERATURE_TOP_K = 15

# The stylistic ablation drops the positive prompt's final word.
FILLER = " simply"
NO_FILLER_VARIANT = "no_filler"
ORIG_VARIANT = "orig"
POS_ID, CTL_ID = "pos", "ctl"
POS_ROLE, CTL_ROLE, TEST_ROLE = "pos", "ctl", "test"

LEADING_COLUMNS = ("prompt_id", "prompt_variant", "layer", "pos", "token", "entropy")
TOP_COLUMNS = tuple(name for i in range(1, WIDE_TOP_K + 1) for name in (f"top{i}", f"prob{i}"))
PURE_METRIC_COLUMNS = (
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
)

# JSON blocks, in the order the legacy files have them. Blocks the older files lack are
# recorded per imported run (manifest.legacy_blocks); the nested last_layer_consistency
# block is recorded as "diagnostics.last_layer_consistency".
JSON_BLOCKS = (
    "prompt",
    "test_prompts",
    "temperature_exploration",
    "diagnostics",
    "final_prediction",
    "model_stats",
    "raw_lens_check",
    "ablation_summary",
    "control_prompt",
    "control_summary",
    "gold_answer",
)
LAST_LAYER_BLOCK = "diagnostics.last_layer_consistency"
REQUIRED_JSON_BLOCKS = ("prompt", "diagnostics", "final_prediction", "model_stats")

# diagnostics keys copied to and from manifest columns of the same name.
PROVENANCE_KEYS = (
    "device",
    "use_norm_lens",
    "use_fp32_unembed",
    "unembed_dtype",
    "first_block_ln1_type",
    "final_ln_type",
    "layernorm_bias_fix",
    "norm_alignment_fix",
    "layer0_norm_fix",
    "mixed_precision_fix",
    "layer0_position_info",
)
RAW_LENS_SAMPLE_KEYS = (
    "layer",
    "kl_norm_vs_raw_bits",
    "top1_agree",
    "p_top1_norm",
    "p_top1_raw",
    "p_answer_norm",
    "p_answer_raw",
    "answer_rank_norm",
    "answer_rank_raw",
    "is_answer_norm",
    "is_answer_raw",
)
# model_stats key -> manifest column
MODEL_STATS = (
    ("num_layers", "n_layers"),
    ("d_model", "d_model"),
    ("n_heads", "n_heads"),
    ("d_vocab", "d_vocab"),
    ("n_ctx", "n_ctx"),
    ("architecture", "architecture"),
)


def file_stem(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def json_name(stem: str) -> str:
    return f"{FILE_PREFIX}{stem}{JSON_SUFFIX}"


def records_name(stem: str) -> str:
    return f"{FILE_PREFIX}{stem}{RECORDS_SUFFIX}"


def pure_name(stem: str) -> str:
    return f"{FILE_PREFIX}{stem}{PURE_SUFFIX}"


def legacy_file(name: str) -> tuple[str, str] | None:
    """(model stem, "json" | "records" | "pure") of a legacy file name, None for other files."""
    if not name.startswith(FILE_PREFIX):
        return None
    for kind, suffix in (("records", RECORDS_SUFFIX), ("pure", PURE_SUFFIX), ("json", JSON_SUFFIX)):
        if name.endswith(suffix) and len(name) > len(FILE_PREFIX) + len(suffix):
            return name[len(FILE_PREFIX) : -len(suffix)], kind
    return None


def records_header(with_variant: bool = True) -> tuple[str, ...]:
    return _without_variant((*LEADING_COLUMNS, *TOP_COLUMNS, "rest_mass"), with_variant)


def pure_header(with_variant: bool = True) -> tuple[str, ...]:
    return _without_variant((*LEADING_COLUMNS, *TOP_COLUMNS, "rest_mass", *PURE_METRIC_COLUMNS), with_variant)


def _without_variant(columns: tuple[str, ...], with_variant: bool) -> tuple[str, ...]:
    return columns if with_variant else tuple(c for c in columns if c != "prompt_variant")


def is_verbose(token: str | None, is_last_pos: bool) -> bool:
    """Records CSV rows listing WIDE_TOP_K tokens: the last position, or a token holding a key word."""
    if is_last_pos:
        return True
    text = (token or "").lower().strip(VERBOSE_STRIP)
    return any(word.lower() in text for word in VERBOSE_WORDS)


def without_filler(text: str) -> str:
    """The no-filler ablation of the positive prompt."""
    return text.removesuffix(FILLER)


def seed_test_id(index: int) -> str:
    """test_01, test_02, ... (the ids of prompts/seed.yaml)."""
    return f"test_{index + 1:02d}"


# CSV dialect: the original's csv.writer(quotechar='"', quoting=QUOTE_MINIMAL, escapechar="\\",
# lineterminator="\n"), except that a field holding "\r" is quoted too (as the files have it).
CSV_ESCAPE = "\\"
_NEEDS_QUOTES = (",", '"', "\n", "\r")


def csv_field(value) -> str:
    """One CSV field: floats as repr, booleans True/False, None empty, text quoted when needed."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    text = str(value).replace(CSV_ESCAPE, CSV_ESCAPE * 2)
    if any(char in text for char in _NEEDS_QUOTES):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(values) -> str:
    return ",".join(csv_field(value) for value in values) + "\n"


def top_columns(tokens: list[str], probs: list[float]) -> list:
    """The top1, prob1, ..., top20, prob20 fields; unused ones empty."""
    fields: list = []
    for token, prob in zip(tokens, probs):
        fields += [token, prob]
    return fields + [None] * (2 * WIDE_TOP_K - len(fields))
