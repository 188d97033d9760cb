"""Device and dtype policy (the seed's): cuda -> mps -> cpu by a conservative memory fit;
CUDA float16 (Gemma bfloat16), MPS float16, CPU float32 (bfloat16 above 30B parameters)."""

from __future__ import annotations

import torch

from lensdb.errors import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HEADROOM = 1.5  # weights x 1.5 + 1 GiB must fit: activations, the float32 unembedding, allocator slack
OVERHEAD_BYTES = 1 << 30
CPU_BF16_ABOVE_BYTES = 30e9 * 2  # about 30B parameters at 2 bytes each


def choose_device(requested: str, weight_bytes: int) -> torch.device:
    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ModelError("--device cuda: no CUDA device is available")
        if requested == "mps" and not _mps_available():
            raise ModelError("--device mps: MPS is not available")
        return torch.device(requested)
    needed = weight_bytes * HEADROOM + OVERHEAD_BYTES
    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        if free >= needed:
            return torch.device("cuda")
    if _mps_available():
        recommended = getattr(torch.mps, "recommended_max_memory", lambda: 0)()
        if recommended >= needed:
            return torch.device("mps")
    return torch.device("cpu")


def choose_dtype(requested: str, device: torch.device, model_type: str | None, weight_bytes: int) -> torch.dtype:
    if requested != "auto":
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if model_type and model_type.startswith("gemma") else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if weight_bytes > CPU_BF16_ABOVE_BYTES else torch.float32


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
