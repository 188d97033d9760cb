"""Find and check a causal LM before loading it: a local directory, `demo` or a hub id
(ModelSource), its Hugging Face config, whether it is a causal LM, its size, and its
revision (a hub commit, or a local folder's content fingerprint). No torch here: the
sweep names and fingerprints models without loading them; model.py loads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lensdb.errors import ModelError, first_line
from lensdb.resources import DEMO_MODEL, demo_model_dir

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    name: str  # recorded as `model` in the warehouse
    load_from: str  # what transformers loads: a local directory or a hub id
    local_path: Path | None
    revision: str | None



def resolve_source(model: str, revision: str | None = None, name: str | None = None) -> ModelSource:
    """A local directory (must hold config.json), `demo` (the shipped model) or a hub id;
    nothing is downloaded yet."""
    path = Path(model).expanduser()
    if model == DEMO_MODEL and not path.exists():
        path = demo_model_dir()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{model} is a file, not a model directory")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: not a Hugging Face model directory")
        if revision is not None:
            raise ModelError("--revision applies to hub ids, not to local directories")
        return ModelSource(name=name or path.resolve().name, load_from=str(path.resolve()), local_path=path.resolve(), revision=None)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or not _HUB_ID.match(model):
        raise ModelError(f"no such model directory: {model}")
    return ModelSource(name=name or model, load_from=model, local_path=None, revision=revision)


def load_config(source: ModelSource):
    """The Hugging Face config; hub ids are looked up in the local cache first, then on the hub."""
    from transformers import AutoConfig

    if source.local_path is not None:
        try:
            return AutoConfig.from_pretrained(source.load_from)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot read the config of {source.load_from}: {first_line(exc)}") from None
    try:
        return AutoConfig.from_pretrained(source.load_from, revision=source.revision, local_files_only=True)
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        raise ModelError(f"{source.load_from} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; pass a local model directory")
    _check_hub_reachable(source.load_from)
    try:
        return AutoConfig.from_pretrained(source.load_from, revision=source.revision)
    except Exception as exc:  # noqa: BLE001 - mapped to one line below
        raise _hub_error(source, exc) from None


def _check_hub_reachable(model: str) -> None:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        raise ModelError(
            f"cannot reach the Hugging Face hub ({host}) to fetch {model}; pass a local model directory instead"
        ) from None


def _hub_error(source: ModelSource, exc: Exception) -> ModelError:
    names = set()
    cause: BaseException | None = exc
    while cause is not None:
        names.add(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    if "GatedRepoError" in names:
        return ModelError(f"{source.load_from} is gated on the Hugging Face hub: accept its licence and run `huggingface-cli login`")
    if "RevisionNotFoundError" in names:
        return ModelError(f"revision {source.revision!r} not found for {source.load_from}")
    if "RepositoryNotFoundError" in names or "is not a local folder and is not a valid model identifier" in str(exc):
        return ModelError(f"unknown model on the Hugging Face hub: {source.load_from}")
    if names & {"LocalEntryNotFoundError", "ConnectError", "ConnectionError", "ConnectTimeout", "gaierror"}:
        return ModelError(f"cannot reach the Hugging Face hub to fetch {source.load_from}; pass a local model directory instead")
    return ModelError(f"cannot load {source.load_from}: {first_line(exc)}")


def check_causal_lm(config, source: ModelSource) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    architectures = getattr(config, "architectures", None) or []
    encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if architectures:
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    else:
        causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if causal and not encoder:
        return
    kind = ", ".join(architectures) or model_type or "unknown"
    raise ModelError(f"{source.load_from} is not a causal language model ({kind})")


def estimate_weight_bytes(source: ModelSource, config) -> int:
    """Bytes of weights on disk for local models, else a parameter-count estimate at 2 bytes each."""
    if source.local_path is not None:
        files = [p for p in source.local_path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]
        if files:
            return sum(p.stat().st_size for p in files)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    d = getattr(text, "hidden_size", 0) or 0
    layers = getattr(text, "num_hidden_layers", 0) or 0
    vocab = getattr(text, "vocab_size", 0) or 0
    return 2 * (12 * layers * d * d + 2 * vocab * d)


def estimate_lens_bytes(config) -> int:
    """Bytes the lenses keep on the lens device beyond the weights: the float32 unembedding
    and one chunk of float32 logits (512 MiB on GPUs)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return 4 * (getattr(text, "hidden_size", 0) or 0) * (getattr(text, "vocab_size", 0) or 0) + (512 << 20)



# A local model's fingerprint covers the content of its files: whole up to this size, beyond
# it sampled (a safetensors header, both ends of every tensor, and blocks spread over the file).
WHOLE_HASH_BYTES = 64 << 20
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 256 << 10
TENSOR_END_BYTES = 4096
SAFETENSORS_HEADER_MAX = 100 << 20


def resolved_revision(source: ModelSource, config) -> str:
    """A hub model's commit; a local folder's fingerprint: its config and every file's name,
    size and content hash (content_digest), so weights changed in place make another model."""
    commit = getattr(config, "_commit_hash", None)
    if source.local_path is None:
        return commit or source.revision or "unknown"
    try:
        digest = hashlib.sha256((source.local_path / "config.json").read_bytes())
        for path in sorted(source.local_path.iterdir()):
            if path.is_file():
                size = path.stat().st_size
                digest.update(f"{path.name}:{size}:".encode())
                digest.update(content_digest(path, size))
    except OSError as exc:
        raise ModelError(f"cannot read the model folder {source.local_path}: {exc.strerror or exc}") from None
    return f"local-{digest.hexdigest()[:12]}"


def content_digest(path: Path, size: int) -> bytes:
    """sha256 of the whole file up to WHOLE_HASH_BYTES; of a larger one, its safetensors
    header, the first and last TENSOR_END_BYTES of every tensor, and SAMPLE_BLOCKS blocks at
    fixed offsets spread from its start to its end (a few MiB read per file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        if size <= WHOLE_HASH_BYTES:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
            return digest.digest()
        spans = []  # (offset, length) to hash
        header = _safetensors_header(file, size)
        if header is not None:
            digest.update(header)
            spans += _tensor_ends(header, 8 + len(header))
        block = min(SAMPLE_BLOCK_BYTES, size)
        step = (size - block) / (SAMPLE_BLOCKS - 1)
        spans += [(round(i * step), block) for i in range(SAMPLE_BLOCKS)]
        for offset, length in spans:
            file.seek(offset)
            digest.update(file.read(length))
    return digest.digest()


def _safetensors_header(file, size: int) -> bytes | None:
    """The JSON header of a safetensors file (8-byte little-endian length, then the header); None otherwise."""
    file.seek(0)
    length = int.from_bytes(file.read(8), "little")
    if not 2 <= length <= min(size - 8, SAFETENSORS_HEADER_MAX):
        return None
    header = file.read(length)
    return header if header.startswith(b"{") else None


def _tensor_ends(header: bytes, data_start: int) -> list[tuple[int, int]]:
    try:
        entries = json.loads(header)
    except ValueError:
        return []
    spans = []
    for name, entry in sorted(entries.items()) if isinstance(entries, dict) else ():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) and name != "__metadata__" else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            continue
        begin, end = data_start + offsets[0], data_start + offsets[1]
        length = min(TENSOR_END_BYTES, max(0, end - begin))
        spans += [(begin, length), (end - length, length)]
    return spans
