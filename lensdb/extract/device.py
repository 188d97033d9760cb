"""Where the model runs: one device, or an accelerate device map across GPUs or CPU and disk.

Device policy (the seed's, extended): cuda -> mps -> cpu by a conservative memory fit;
a model too large for one GPU is spread over all visible GPUs; a model too large for the
GPUs runs on the CPU, with the weights that do not fit in host memory offloaded to disk.
dtype policy: CUDA float16 (Gemma bfloat16), MPS float16, CPU float32 (bfloat16 above 30B
parameters).

Weights are always loaded through a device map, so they go from the checkpoint straight to
their device (no full host copy of the model first). transformer-lens' bridge accepts
all-GPU maps and all-CPU/disk maps, not maps that mix a GPU with CPU or disk offload.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lensdb.errors import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HEADROOM = 1.5  # weights x 1.5 + 1 GiB must fit: activations, the float32 unembedding, allocator slack
OVERHEAD_BYTES = 1 << 30
CPU_BF16_ABOVE_BYTES = 30e9 * 2  # about 30B parameters at 2 bytes each
# Host memory kept free when the weights are split between host memory and disk.
HOST_RESERVE_BYTES = 4 << 30
DEVICE_MAPS = ("auto", "balanced")  # accelerate's own strategies; anything else is a JSON file
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


@dataclass(frozen=True)
class Placement:
    """What transformers' from_pretrained gets to place the weights, and why."""

    device_type: str  # "cpu", "cuda" or "mps": the kind of device that runs the model (dtype, batch size)
    device_map: str | dict  # {"": "cuda:0"} for one device, "auto"/"balanced", or a module -> device dict
    max_memory: dict | None = None  # accelerate budgets in bytes: {0: ..., "cpu": ...}
    offload_folder: str | None = None
    reason: str = ""  # one line: what was chosen and why

    @property
    def single_device(self) -> str | None:
        if isinstance(self.device_map, dict) and set(self.device_map) == {""}:
            return str(self.device_map[""])
        return None


def parse_max_memory(text: str | dict | None) -> dict | None:
    """`0=75GiB,1=75GiB,cpu=200GiB` -> {0: bytes, 1: bytes, "cpu": bytes} (GB = 10^9, GiB = 2^30)."""
    if text is None or isinstance(text, dict):
        return dict(text) if text else None
    budgets: dict = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        key = key.strip().lower()
        size = _SIZE.match(value) if sep else None
        if not size:
            raise ModelError(f"--max-memory: bad entry {entry!r}: expected DEVICE=SIZE such as 0=75GiB, cpu=200GiB")
        if key.isdigit():
            device: int | str = int(key)
        elif key in ("cpu", "mps", "disk"):
            device = key
        else:
            raise ModelError(f"--max-memory: unknown device {key!r} in {entry!r}: use a GPU index (0, 1, ...), cpu, mps or disk")
        if device in budgets:
            raise ModelError(f"--max-memory: device {key} is given twice")
        budgets[device] = int(float(size.group(1)) * _UNITS[(size.group(2) or "b").lower()])
    if not budgets:
        raise ModelError("--max-memory: no DEVICE=SIZE entries")
    return budgets


def read_device_map(value: str | dict) -> str | dict:
    """`auto`, `balanced`, or a JSON file holding {module name: device} (a GPU index, "cuda:N", "cpu", "disk")."""
    if isinstance(value, dict) or value in DEVICE_MAPS:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ModelError(f"--device-map: {value} is neither auto, balanced nor a JSON file")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"--device-map: cannot read {value}: {exc}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise ModelError(f"--device-map: {value} must hold a JSON object of module name -> device")
    for module, device in mapping.items():
        if not _valid_map_device(device):
            raise ModelError(f"--device-map: {value}: module {module!r} has device {device!r}: use a GPU index, \"cuda:N\", \"cpu\" or \"disk\"")
    return mapping


def choose_placement(
    requested: str,
    weight_bytes: int,
    *,
    device_map: str | dict | None = None,
    max_memory: str | dict | None = None,
    offload_folder: str | Path | None = None,
    lens_bytes: int = 0,
) -> Placement:
    """The placement for `--device`, `--device-map`, `--max-memory` and `--offload-folder`.

    `lens_bytes`: what the lens device holds beyond its share of the weights (the float32
    unembedding); GPU budgets computed here keep it free on the last GPU, which accelerate
    gives the unembedding."""
    budgets = parse_max_memory(max_memory)
    mapping = read_device_map(device_map) if device_map is not None else None
    folder = str(Path(offload_folder).expanduser()) if offload_folder is not None else None
    _check_budget_devices(budgets)
    if isinstance(mapping, dict):
        kinds = {_map_device_type(device) for device in mapping.values()}
        device_type = "cuda" if "cuda" in kinds else ("mps" if "mps" in kinds else "cpu")
        if requested not in ("auto", device_type):
            raise ModelError(f"--device {requested} contradicts the --device-map file, which places modules on {device_type}")
        if device_type == "cuda":
            _require_cuda("--device-map")
        return Placement(device_type, mapping, budgets, folder, reason=f"device map from {device_map}")
    if requested == "auto" and mapping is None and budgets is None:
        return auto_placement(weight_bytes, folder, lens_bytes)
    device_type = _requested_type(requested, mapping, budgets)
    if mapping is None and budgets is None:
        return Placement(device_type, {"": _single_device(device_type)}, None, folder, reason=f"{device_type} as requested")
    if device_type == "cuda":
        # Only GPU budgets: transformer-lens cannot run a GPU map that offloads to CPU or disk.
        budgets = budgets or _gpu_budgets(lens_bytes)
        return Placement("cuda", mapping or "auto", budgets, folder, reason=f"{mapping or 'auto'} map over GPUs {_budget_text(budgets)}")
    if any(isinstance(key, int) for key in budgets or {}):
        raise ModelError(f"--max-memory names a GPU but the model runs on {device_type}")
    if device_type == "cpu":
        budgets = budgets or {"cpu": _host_available_bytes()}
        return Placement("cpu", mapping or "auto", budgets, folder, reason=f"{mapping or 'auto'} map over {_budget_text(budgets)} (the rest on disk)")
    return Placement(device_type, mapping or "auto", budgets, folder, reason=f"{mapping or 'auto'} map on {device_type}")


def auto_placement(weight_bytes: int, offload_folder: str | None = None, lens_bytes: int = 0) -> Placement:
    """One GPU if the model fits one, else all GPUs if it fits them together, else MPS, else the
    CPU, with disk offload for the weights host memory cannot hold."""
    needed = weight_bytes * HEADROOM + OVERHEAD_BYTES
    weights = _gib(weight_bytes)
    if torch.cuda.is_available():
        free = _cuda_free_bytes()
        best = max(range(len(free)), key=free.__getitem__)
        if free[best] >= needed:
            return Placement("cuda", {"": f"cuda:{best}"}, None, offload_folder,
                             reason=f"device auto: cuda:{best} ({weights} of weights, {_gib(free[best])} free)")
        budgets = _gpu_budgets(lens_bytes)
        if len(free) > 1 and sum(budgets.values()) >= weight_bytes * HEADROOM:
            return Placement("cuda", "auto", budgets, offload_folder,
                             reason=f"device auto: {len(free)} GPUs ({weights} of weights, {_gib(sum(free))} free in all)")
        gpu_note = f"does not fit the GPUs ({_gib(sum(free))} free)"
    else:
        gpu_note = "no CUDA device"
    if _mps_available():
        recommended = getattr(torch.mps, "recommended_max_memory", lambda: 0)()
        if recommended >= needed:
            return Placement("mps", {"": "mps"}, None, offload_folder, reason=f"device auto: mps ({weights} of weights)")
    available = _host_available_bytes()
    if weight_bytes + OVERHEAD_BYTES <= available:
        return Placement("cpu", {"": "cpu"}, None, offload_folder,
                         reason=f"device auto: cpu ({weights} of weights, {_gib(available)} of host memory available; {gpu_note})")
    budget = max(0, available - HOST_RESERVE_BYTES)
    return Placement("cpu", "auto", {"cpu": budget}, offload_folder,
                     reason=f"device auto: cpu with disk offload ({weights} of weights, {_gib(budget)} in host memory; {gpu_note})")


def choose_device(requested: str, weight_bytes: int) -> torch.device:
    """The single device auto-pick would use (kept for callers that place a model whole)."""
    placement = choose_placement(requested, weight_bytes)
    return torch.device(placement.single_device or placement.device_type)


def choose_dtype(requested: str, device: torch.device | str, model_type: str | None, weight_bytes: int) -> torch.dtype:
    if requested != "auto":
        return DTYPES[requested]
    device_type = getattr(device, "type", device)
    if device_type == "cuda":
        return torch.bfloat16 if model_type and model_type.startswith("gemma") else torch.float16
    if device_type == "mps":
        return torch.float16
    return torch.bfloat16 if weight_bytes > CPU_BF16_ABOVE_BYTES else torch.float32


def _requested_type(requested: str, mapping, budgets) -> str:
    if requested == "auto":
        gpu_budgets = any(isinstance(key, int) for key in budgets or {})
        if torch.cuda.is_available() and (gpu_budgets or budgets is None):
            return "cuda"
        if gpu_budgets:
            _require_cuda("--max-memory")
        return "cpu"
    if requested == "cuda":
        _require_cuda("--device cuda")
    if requested == "mps" and not _mps_available():
        raise ModelError("--device mps: MPS is not available")
    return requested


def _gpu_budgets(lens_bytes: int = 0) -> dict[int, int]:
    """Free memory of every GPU less the 1 GiB reserve (activations, allocator slack); the last
    GPU, where accelerate puts the unembedding, also keeps `lens_bytes` free for the lenses."""
    free = _cuda_free_bytes()
    budgets = {i: max(0, bytes_free - OVERHEAD_BYTES) for i, bytes_free in enumerate(free)}
    if budgets:
        budgets[len(free) - 1] = max(0, budgets[len(free) - 1] - lens_bytes)
    return budgets


def _single_device(device_type: str) -> str:
    return "cuda:0" if device_type == "cuda" else device_type


def _check_budget_devices(budgets: dict | None) -> None:
    gpus = sorted(key for key in budgets or {} if isinstance(key, int))
    if not gpus:
        return
    if any(key in ("cpu", "disk") for key in budgets):
        raise ModelError("--max-memory mixes GPUs with cpu/disk: transformer-lens runs a model on GPUs only or on the CPU (with disk offload) only")
    _require_cuda("--max-memory")
    count = torch.cuda.device_count()
    if gpus[-1] >= count:
        raise ModelError(f"--max-memory names GPU {gpus[-1]} but {count} CUDA device(s) are visible")


def _require_cuda(option: str) -> None:
    if not torch.cuda.is_available():
        raise ModelError(f"{option}: no CUDA device is available")


def _valid_map_device(device) -> bool:
    if isinstance(device, bool):
        return False
    if isinstance(device, int):
        return device >= 0
    return isinstance(device, str) and (device in ("cpu", "disk", "mps", "cuda") or re.fullmatch(r"cuda:\d+", device) is not None)


def _map_device_type(device) -> str:
    if isinstance(device, int) or str(device).startswith("cuda"):
        return "cuda"
    return "mps" if device == "mps" else "cpu"


def _cuda_free_bytes() -> list[int]:
    return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]


def _host_available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _budget_text(budgets: dict) -> str:
    return ", ".join(f"{'cuda:' if isinstance(k, int) else ''}{k} {_gib(v)}" for k, v in budgets.items())


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def reset_peak_host_memory() -> bool:
    """Restart the process's peak resident memory count (Linux: /proc/self/clear_refs), so the
    next peak_host_memory_bytes() covers what follows only; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_host_memory_bytes() -> int:
    """Peak resident memory of this process since the last reset (Linux VmHWM), else since it
    started (getrusage ru_maxrss)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
