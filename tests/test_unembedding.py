"""The unembedding strategies: the split (half-precision parts, float32 accumulation) product
equals a float32 unembedding on the same residuals, for every lens, up to a 128k vocabulary;
on the CPU and (marked `cuda`) on a GPU, where the split product runs on the tensor cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensdb.extract import lens
from lensdb.extract.unembedding import Unembedding
from lensdb.lenses import FinalNormLens, LensSpec, NormLens, RawLens

PROB_TOL = 1e-5
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


class _Model:
    """What the lenses read: a pre-norm model with RMS norms of its own (Llama-like)."""

    architecture = "pre_norm"

    def __init__(self, n_layers: int, d_model: int, generator: torch.Generator, device: str = "cpu"):
        self.n_layers = n_layers
        self.device = torch.device(device)

        def rms():
            return lens.Norm("rms", 1e-5, (1 + 0.1 * torch.randn(d_model, generator=generator)).to(device))

        self.norms = {("ln1", i): rms() for i in range(n_layers)} | {("final", -1): rms()}


def _residuals(layers: int, rows: int, d_model: int, generator) -> torch.Tensor:
    """A residual stream that grows with depth, with a few massive activations (as real models have)."""
    x = torch.randn(layers, rows, d_model, generator=generator) * torch.logspace(-1, 2, layers)[:, None, None]
    x[:, :, 3] *= 40.0
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d_model, d_vocab", [(64, 512), (256, 128_256)])
def test_split_unembedding_equals_float32(half, d_model, d_vocab, device):
    generator = torch.Generator().manual_seed(7)
    n_layers = 3
    model = _Model(n_layers, d_model, generator, device)
    weight = (torch.randn(d_vocab, d_model, generator=generator) * d_model**-0.5).to(device, half)  # the model's own half weight
    bias = (torch.randn(d_vocab, generator=generator) * 0.1).to(device)
    residuals = _residuals(n_layers + 1, 6, d_model, generator).to(device, half).float()
    layers = np.arange(n_layers + 1)
    full, split = Unembedding(weight, bias, "float32"), Unembedding(weight, bias, "split")
    assert split.description.startswith(str(half).removeprefix("torch.")) and full.description == "float32"
    for lens_class, kind in ((NormLens, "norm"), (FinalNormLens, "final_ln"), (RawLens, "raw")):
        chosen = lens_class(LensSpec(kind, kind), model)
        expected = torch.softmax(chosen.logits(residuals, layers, full).double(), dim=-1)
        got = torch.softmax(chosen.logits(residuals, layers, split).double(), dim=-1)
        assert (got - expected).abs().max().item() <= PROB_TOL, kind


def test_split_parts_reconstruct_float32():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 300, generator=generator) * torch.logspace(-6, 4, 5)[:, None]
    x[0, 0] = 0.0
    for half, bits in ((torch.float16, 21), (torch.bfloat16, 23)):
        parts, scale = lens.split_parts(x, half)
        rebuilt = sum(p.double() for p in parts) * (scale.double() if scale is not None else 1.0)
        row_max = x.abs().amax(dim=-1, keepdim=True).double()
        # every element to float32-like precision relative to its row's largest value
        assert ((rebuilt - x.double()).abs() <= row_max * 2.0**-bits).all(), half
        assert all(torch.isfinite(p.float()).all() for p in parts)


def test_split_needs_a_half_precision_weight():
    from lensdb.errors import LensdbError

    with pytest.raises(LensdbError, match="float16 or bfloat16"):
        Unembedding(torch.randn(10, 4), None, "split")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_split_run_equals_float32_run(tiny_llama, tiny_prompts, tmp_path, dtype, device):
    """End to end on a half-precision model: `--unembed split` gives the records of `--unembed float32`
    (on CUDA the split product is the tensor cores', the float32 one cuBLAS's float32 matmul)."""
    import pyarrow.dataset as ds

    from lensdb.extract.engine import extract

    tables = {}
    for strategy in ("float32", "split"):
        summary = extract(
            str(tiny_llama), prompts=str(tiny_prompts), warehouse=tmp_path / strategy, device=device, dtype=dtype, unembed=strategy
        )
        assert summary.unembed_precision.startswith("float32" if strategy == "float32" else dtype)
        table = ds.dataset(summary.path / "records").to_table().sort_by([(c, "ascending") for c in ("prompt_id", "prompt_variant", "lens", "layer", "pos")])
        tables[strategy] = table
    full, split = tables["float32"], tables["split"]
    assert full.num_rows == split.num_rows > 0
    p_full = np.array(full.column("topk_probs").to_pylist())
    p_split = np.array(split.column("topk_probs").to_pylist())
    ids_full, ids_split = np.array(full.column("topk_ids").to_pylist()), np.array(split.column("topk_ids").to_pylist())
    # ties among near-equal probabilities may order differently; the probabilities agree
    assert np.abs(np.sort(p_full, axis=1) - np.sort(p_split, axis=1)).max() <= PROB_TOL
    assert (ids_full[:, 0] == ids_split[:, 0]).mean() > 0.99
    for column in ("entropy_bits", "kl_to_final_bits", "p_answer"):
        a = np.array(full.column(column).to_pylist(), dtype=float)
        b = np.array(split.column(column).to_pylist(), dtype=float)
        assert np.allclose(a, b, atol=1e-4, equal_nan=True), column
