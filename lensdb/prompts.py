"""Prompt sets: YAML sets shipped in `prompts/` and user JSONL files, validated on load.

A prompt is identified by (id, variant). Schema (YAML `prompts:` entries or JSONL lines):

    id            required  string without whitespace, e.g. "pos", "capital_france"
    text          required  the prompt text (non-empty)
    variant       optional  default "orig"; e.g. "no_filler" for an ablation of the same id
    role          optional  "pos" (default), "ctl" (default when control_of is set), "test", ...
    gold          optional  the answer string, e.g. "Berlin", or a list of accepted answers,
                            e.g. ["Berlin", "berlin"]: the first is the gold of the records'
                            p_answer / answer_rank columns; all of them make the prompt's
                            answer set (v1.answer_mass)
    control_of    optional  id of the prompt this control is paired with (same variant, else "orig")
    temperatures  optional  list of temperatures at which the final distribution is also kept

A YAML set has the top-level keys `lensdb_prompt_set: 1`, `name`, optional `description`
and `prompts`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lensdb.errors import PromptError
from lensdb.resources import prompts_dir
from lensdb.textfile import read_utf8

PROMPT_SET_SCHEMA_VERSION = 1
DEFAULT_PROMPT_SET = "seed"

_ID_PATTERN = re.compile(r"^[^\s]+$")
_KEYS = {"id", "text", "variant", "role", "gold", "control_of", "temperatures"}


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    variant: str = "orig"
    role: str = "pos"
    gold: str | None = None
    control_of: str | None = None
    temperatures: tuple[float, ...] = field(default_factory=tuple)
    gold_alternatives: tuple[str, ...] = ()  # accepted answers after the first (gold)

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.variant)

    @property
    def answers(self) -> tuple[str, ...]:
        """Every accepted answer, the gold first (empty without gold)."""
        return (self.gold, *self.gold_alternatives) if self.gold else ()


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[Prompt, ...]
    source: str

    @property
    def sha256(self) -> str:
        canonical = json.dumps([_canonical(p) for p in self.prompts], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def paired_prompt(self, prompt: Prompt) -> Prompt | None:
        """The prompt a control is paired with: same id as control_of, same variant, else 'orig'."""
        if prompt.control_of is None:
            return None
        by_key = self._by_key()
        return by_key.get((prompt.control_of, prompt.variant)) or by_key.get((prompt.control_of, "orig"))

    def primary(self) -> Prompt:
        """The prompt the legacy JSON describes: the first positive 'orig' prompt, else the first prompt."""
        return next((p for p in self.prompts if p.role == "pos" and p.variant == "orig"), self.prompts[0])

    def _by_key(self) -> dict[tuple[str, str], Prompt]:
        cached = self.__dict__.get("_by_key_cache")
        if cached is None:
            cached = {p.key: p for p in self.prompts}
            object.__setattr__(self, "_by_key_cache", cached)
        return cached


def _canonical(prompt: Prompt) -> dict:
    """A prompt as the set's hash sees it: a single-answer gold hashes as it always did."""
    fields = asdict(prompt)
    if not fields["gold_alternatives"]:
        del fields["gold_alternatives"]
    return fields


def load_prompt_set(spec: str | Path | None = None) -> PromptSet:
    """Load a prompt set by name (a YAML file in prompts/) or by path (.yaml/.yml/.jsonl)."""
    spec = DEFAULT_PROMPT_SET if spec is None else str(spec)
    path = _resolve(spec)
    if path.suffix == ".jsonl":
        name, raw = path.stem, _read_jsonl(path)
    else:
        name, raw = _read_yaml(path)
    _check_text(name, str(path), "name")
    prompts = [_build_prompt(entry, where) for entry, where in raw]
    prompt_set = PromptSet(name=name, prompts=tuple(prompts), source=str(path))
    _check_set(prompt_set, [where for _, where in raw])
    return prompt_set


def default_prompt_set(model: str) -> str:
    """The set `extract` runs when none is named: the seed set, or `stories` for the demo model."""
    from lensdb.resources import DEMO_MODEL, DEMO_PROMPTS

    return DEMO_PROMPTS if model == DEMO_MODEL and not Path(model).exists() else DEFAULT_PROMPT_SET


def available_prompt_sets() -> list[str]:
    return sorted(p.stem for p in prompts_dir().glob("*.yaml"))


def _resolve(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = prompts_dir() / f"{spec}.yaml"
    if "/" not in spec and shipped.is_file():
        return shipped
    known = ", ".join(available_prompt_sets())
    raise PromptError(f"prompt set not found: {spec} (a path to a .yaml/.jsonl file, or one of: {known})")


def _read_jsonl(path: Path) -> list[tuple[dict, str]]:
    entries = []
    for number, line in enumerate(re.split(r"\r\n|\r|\n", read_utf8(path, error=PromptError)), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{where}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise PromptError(f"{where}: not valid JSON (nested too deeply)") from None
        if not isinstance(entry, dict):
            raise PromptError(f"{where}: expected a JSON object with keys id and text")
        entries.append((entry, where))
    if not entries:
        raise PromptError(f"{path}: no prompts in file")
    return entries


def _read_yaml(path: Path) -> tuple[str, list[tuple[dict, str]]]:
    import yaml

    try:
        document = yaml.compose(read_utf8(path, error=PromptError), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PromptError(f"{path}{line}: not valid YAML ({problem})") from None
    if document is None or not isinstance(document, yaml.MappingNode):
        raise PromptError(f"{path}: expected a mapping with keys lensdb_prompt_set, name, prompts")
    top = yaml.SafeLoader("").construct_document(document)
    version = top.get("lensdb_prompt_set")
    if version != PROMPT_SET_SCHEMA_VERSION:
        raise PromptError(f"{path}: lensdb_prompt_set must be {PROMPT_SET_SCHEMA_VERSION}, got {version!r}")
    name = top.get("name")
    if not isinstance(name, str) or not name:
        raise PromptError(f"{path}: missing 'name'")
    prompts_node = next((v for k, v in document.value if k.value == "prompts"), None)
    if not isinstance(prompts_node, yaml.SequenceNode) or not prompts_node.value:
        raise PromptError(f"{path}: 'prompts' must be a non-empty list")
    entries = []
    for node, entry in zip(prompts_node.value, top["prompts"]):
        where = f"{path}:{node.start_mark.line + 1}"
        if not isinstance(entry, dict):
            raise PromptError(f"{where}: each prompt must be a mapping with keys id and text")
        entries.append((entry, where))
    return name, entries


def _build_prompt(entry: dict, where: str) -> Prompt:
    unknown = set(entry) - _KEYS
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("id", "text"):
        if key not in entry:
            raise PromptError(f"{where}: missing '{key}'")
    prompt_id, text = entry["id"], entry["text"]
    for key, value in entry.items():
        _check_text(value, where, key)
    if not isinstance(prompt_id, str) or not _ID_PATTERN.match(prompt_id):
        raise PromptError(f"{where}: 'id' must be a non-empty string without whitespace, got {prompt_id!r}")
    if not isinstance(text, str) or not text.strip():
        raise PromptError(f"{where}: empty prompt text for id {prompt_id!r}")
    optional = _gold_answers(entry.get("gold"), where)
    for key in ("variant", "role", "control_of"):
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise PromptError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
        optional[key] = value
    if "role" not in optional:
        optional["role"] = "ctl" if "control_of" in optional else "pos"
    temperatures = entry.get("temperatures") or []
    if not isinstance(temperatures, list) or not all(
        isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0 for t in temperatures
    ):
        raise PromptError(f"{where}: 'temperatures' must be a list of positive numbers")
    return Prompt(id=prompt_id, text=text, temperatures=tuple(float(t) for t in temperatures), **optional)


def _gold_answers(gold, where: str) -> dict:
    """`gold` as a string or a non-empty list of distinct strings -> Prompt keywords."""
    if gold is None:
        return {}
    answers = gold if isinstance(gold, list) else [gold]
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise PromptError(f"{where}: 'gold' must be a non-empty string or a non-empty list of them, got {gold!r}")
    if len(set(answers)) != len(answers):
        raise PromptError(f"{where}: 'gold' lists an answer twice")
    return {"gold": answers[0], "gold_alternatives": tuple(answers[1:])} if len(answers) > 1 else {"gold": answers[0]}


def _check_text(value, where: str, key: str) -> None:
    """Strings must be storable text: JSON's "\\ud800" escapes give lone surrogates, which UTF-8
    (Parquet, tokenizers) cannot hold."""
    if isinstance(value, str):
        bad = next((i for i, char in enumerate(value) if "\ud800" <= char <= "\udfff"), None)
        if bad is not None:
            raise PromptError(f"{where}: '{key}' holds a lone surrogate (U+{ord(value[bad]):04X} at character {bad + 1}), which is not text")
    elif isinstance(value, list):
        for item in value:
            _check_text(item, where, key)


def _check_set(prompt_set: PromptSet, wheres: list[str]) -> None:
    seen: dict[tuple[str, str], str] = {}
    ids = {p.id for p in prompt_set.prompts}
    for prompt, where in zip(prompt_set.prompts, wheres):
        if prompt.key in seen:
            raise PromptError(f"{where}: duplicate prompt id {prompt.id!r} variant {prompt.variant!r} (first at {seen[prompt.key]})")
        seen[prompt.key] = where
        if prompt.control_of is not None:
            if prompt.control_of not in ids:
                raise PromptError(f"{where}: control_of names unknown prompt id {prompt.control_of!r}")
            if prompt.control_of == prompt.id:
                raise PromptError(f"{where}: a prompt cannot be its own control")
            if prompt_set.paired_prompt(prompt) is None:
                raise PromptError(
                    f"{where}: control_of {prompt.control_of!r} has neither variant {prompt.variant!r} nor 'orig'"
                )
