"""The unembedding every lens shares: float32 logits from a lens's normalised residuals,
by one of two precision strategies (see Unembedding)."""

from __future__ import annotations

import torch

from lensdb.errors import LensdbError
from lensdb.extract import lens as lens_math


class Unembedding:
    """Logits = x W_U (+ b_U) for float32 x, with float32 results, by one of two strategies:

    float32  one float32 matmul (a float32 copy of W_U when the model runs in half precision)
    split    x split into half-precision parts, each multiplied with the model's own
             half-precision W_U on the tensor cores with float32 accumulation (CUDA, fp16/bf16
             models): the float32 product at tensor-core speed (lens.project_split)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, strategy: str):
        """`weight` is the model's own (d_vocab, d_model) unembedding, in the model's dtype."""
        self.strategy = strategy
        self.bias = bias.detach().float() if bias is not None else None
        self.d_vocab = int(weight.shape[0])
        if strategy == "split":
            if weight.dtype not in (torch.float16, torch.bfloat16):
                raise LensdbError("the split unembedding needs a float16 or bfloat16 model")
            self.weight_half = weight.detach()
            self.weight = None
            self._matmul = lens_math.tensor_core_matmul if weight.is_cuda else None
            if weight.is_cuda:  # float32 accumulation everywhere inside the matmuls
                torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
                torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        elif strategy == "float32":
            self.weight = weight.detach().float().t().contiguous() if weight.dtype != torch.float32 else weight.detach().t()
            self.weight_half = None
        else:
            raise ValueError(f"unknown unembedding strategy {strategy!r}")

    def __call__(self, normalized: torch.Tensor) -> torch.Tensor:
        if self.strategy == "split":
            return lens_math.project_split(normalized, self.weight_half, self.bias, self._matmul)
        return lens_math.project(normalized, self.weight, self.bias)

    @property
    def description(self) -> str:
        if self.strategy == "split":
            parts = 2 if self.weight_half.dtype == torch.float16 else 3
            return f"{str(self.weight_half.dtype).removeprefix('torch.')} x{parts} split, float32 accumulation"
        return "float32"


def choose_unembedding_strategy(requested: str, weight: torch.Tensor) -> str:
    """auto: split on CUDA for half-precision models (tensor cores), else float32."""
    if requested != "auto":
        return requested
    if weight.is_cuda and weight.dtype in (torch.float16, torch.bfloat16):
        return "split"
    return "float32"
