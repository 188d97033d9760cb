"""Pure lens functions: norm selection per architecture, the norms themselves, the projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensdb.extract import lens
from lensdb.extract.unembedding import Unembedding
from lensdb.lenses import FinalNormLens, LensSpec, NormLens, norm_for
from lensdb.extract.stats import NO_TOKEN, chunk_statistics, count_above, count_above_numpy, count_above_torch, head_consistency, kl_bits


@pytest.mark.parametrize(
    "architecture, layer, expected",
    [
        ("pre_norm", 0, ("ln1", 0)),
        ("pre_norm", 1, ("ln1", 1)),
        ("pre_norm", 3, ("ln1", 3)),
        ("pre_norm", 4, ("final", -1)),
        ("post_norm", 0, ("ln1", 0)),
        ("post_norm", 1, ("ln2", 0)),
        ("post_norm", 4, ("ln2", 3)),
    ],
)
def test_norm_lens_selection(architecture, layer, expected):
    assert norm_for("norm", layer, 4, architecture) == expected


def test_other_lenses_ignore_architecture():
    for architecture in ("pre_norm", "post_norm"):
        assert [norm_for("final_ln", i, 4, architecture) for i in range(5)] == [("final", -1)] * 5
        assert [norm_for("raw", i, 4, architecture) for i in range(5)] == [None] * 5
        # a tuned lens translates first, then applies the final norm like final_ln
        assert [norm_for("tuned", i, 4, architecture) for i in range(5)] == [("final", -1)] * 5
    with pytest.raises(ValueError):
        norm_for("logit", 0, 4, "pre_norm")


def test_rms_norm_has_epsilon_inside_the_square_root():
    x = torch.tensor([[3.0, 4.0]])
    weight = torch.tensor([2.0, 0.5])
    out = lens.apply_norm(x, lens.Norm("rms", eps=1.0, weight=weight))
    expected = x / torch.sqrt((x**2).mean() + 1.0) * weight
    assert torch.allclose(out, expected)


def test_norms_match_torch_and_compute_in_float32():
    torch.manual_seed(0)
    x = torch.randn(5, 16, dtype=torch.float16)
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    layer = lens.apply_norm(x, lens.Norm("layer", 1e-5, w, b))
    assert layer.dtype == torch.float32
    assert torch.allclose(layer, torch.nn.functional.layer_norm(x.float(), (16,), w, b, 1e-5), atol=1e-5)
    rms = lens.apply_norm(x, lens.Norm("rms", 1e-6, w))
    assert torch.allclose(rms, torch.nn.functional.rms_norm(x.float(), (16,), w, 1e-6), atol=1e-5)
    assert torch.equal(lens.apply_norm(x, None), x.float())


def test_projection_applies_the_bias():
    x, w, b = torch.randn(2, 3, 4), torch.randn(4, 7), torch.randn(7)
    assert torch.allclose(lens.project(x, w, b), x @ w + b, atol=1e-6)
    assert torch.allclose(lens.project(x, w, None), x @ w, atol=1e-6)


class _PostNormModel:
    """Just what a lens reads: a post-norm model whose norms scale by recognisable factors."""

    n_layers = 2
    architecture = "post_norm"

    def __init__(self):
        def scaled(factor):
            return lens.Norm("rms", 0.0, torch.full((4,), float(factor)))

        self.norms = {("ln1", 0): scaled(10), ("ln1", 1): scaled(11), ("ln2", 0): scaled(20), ("ln2", 1): scaled(21), ("final", -1): None}


def test_post_norm_model_uses_each_blocks_own_second_norm():
    residual = torch.ones(3, 1, 4)  # rms 1: the norm leaves only its scale
    model, identity = _PostNormModel(), Unembedding(torch.eye(4), None, "float32")
    logits = NormLens(LensSpec("norm", "norm"), model).logits(residual, np.arange(3), identity)
    assert logits[:, 0, 0].tolist() == [10.0, 20.0, 21.0]
    assert torch.equal(FinalNormLens(LensSpec("final_ln", "final_ln"), model).logits(residual, np.arange(3), identity), residual)


# one row per block, uneven blocks, one block per layer, the whole chunk at once (GPUs)
@pytest.mark.parametrize("block_bytes", [50 * 4, 3 * 50 * 4, 1 << 20, None])
def test_statistics_against_plain_definitions(block_bytes):
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 50) * 3
    raw = torch.randn(2, 7, 50) * 3
    final = torch.randn(7, 50) * 3
    answers = torch.tensor([4, NO_TOKEN, 7, 7, 0, 49, 3])
    paired = torch.tensor([NO_TOKEN, 2, 7, 1, 1, 1, NO_TOKEN])
    results = chunk_statistics(
        {"norm": logits, "raw": raw},
        final_log_probs=torch.log_softmax(final, -1),
        final_logits_unit=final / final.norm(dim=-1, keepdim=True),
        answer_ids=answers,
        paired_ids=paired,
        top_k=5,
        reference="norm",
        block_bytes=block_bytes,
    )
    q = torch.softmax(final.double(), -1)
    p_norm = torch.softmax(logits.double(), -1)
    for lens_name, z in (("norm", logits), ("raw", raw)):
        stats = results[lens_name]
        p = torch.softmax(z.double(), -1)
        assert torch.allclose(stats.entropy_bits.double(), -(p * p.log2()).sum(-1), atol=1e-5)
        assert torch.allclose(stats.kl_to_final_bits, (p * (p.log2() - q.log2())).sum(-1), atol=1e-5)
        assert torch.allclose(stats.topk_probs.double(), p.sort(-1, descending=True).values[..., :5], atol=1e-6)
        assert torch.equal(stats.topk_ids, z.topk(5, dim=-1).indices)
        for ids, p_out, rank_out in ((answers, stats.p_answer, stats.answer_rank), (paired, stats.p_paired_answer, stats.paired_answer_rank)):
            for position, token in enumerate(ids.tolist()):
                if token == NO_TOKEN:
                    assert torch.isnan(p_out[:, position]).all() and (rank_out[:, position] == NO_TOKEN).all()
                    continue
                target = p[:, position, token]
                assert torch.allclose(p_out[:, position].double(), target, atol=1e-6)
                assert torch.equal(rank_out[:, position].long(), 1 + (p[:, position] > target[:, None]).sum(-1))
        cos = torch.nn.functional.cosine_similarity(z, final.expand_as(z), dim=-1)
        assert torch.allclose(stats.cos_to_final, cos, atol=1e-6)
        expected = torch.zeros_like(stats.kl_to_final_bits) if lens_name == "norm" else (p_norm * (p_norm.log2() - p.log2())).sum(-1)
        assert torch.allclose(stats.kl_vs_reference_bits, expected, atol=1e-5)
    alone = chunk_statistics(
        {"raw": raw}, final_log_probs=torch.log_softmax(final, -1), final_logits_unit=final / final.norm(dim=-1, keepdim=True),
        answer_ids=answers, paired_ids=paired, top_k=5, reference="norm",
    )
    assert alone["raw"].kl_vs_reference_bits is None


@pytest.mark.parametrize("count_above", [count_above_numpy, count_above_torch])
def test_count_above_counts_strictly_larger_values(count_above):
    torch.manual_seed(3)
    values = torch.randn(2, 5, 40).round(decimals=1)  # many ties
    values[0, 1, 3] = float("nan")
    thresholds = torch.cat([values[..., :3], torch.tensor([-10.0, 10.0, float("nan")]).expand(2, 5, 3)], dim=-1)
    counts = count_above(values, thresholds)
    assert counts.dtype == torch.int32 and counts.shape == (2, 5, 6)
    for index in np.ndindex(2, 5):
        row = values[index].tolist()
        for column, limit in enumerate(thresholds[index].tolist()):
            assert counts[index][column] == sum(value > limit for value in row)  # NaN is above nothing, nothing is above NaN
    assert count_above(values[0], thresholds[0, :, :1]).shape == (5, 1)


def test_count_above_takes_bfloat16_on_cpu():
    values = torch.tensor([[0.5, 0.25, 0.25, 0.0]], dtype=torch.bfloat16)
    assert count_above(values, values).tolist() == [[0, 1, 1, 3]]


@pytest.mark.parametrize("one_row_at_a_time", [True, False])
def test_head_consistency_finds_the_temperature(one_row_at_a_time):
    torch.manual_seed(2)
    z = torch.randn(3, 100) * 4
    grid = torch.logspace(-1, 1, 25)
    true_temperatures = [float(grid[17]), float(grid[3]), 1.0]
    head = torch.log_softmax(z / torch.tensor(true_temperatures)[:, None], -1)
    fit = head_consistency(z, head, scale=None, softcap=None, one_row_at_a_time=one_row_at_a_time)
    assert fit.temp_est.tolist() == pytest.approx(true_temperatures)
    assert fit.kl_after_temp_bits.max() < 1e-6
    assert fit.kl_after_scale_bits is None and fit.kl_after_softcap_bits is None
    capped = torch.log_softmax(torch.tanh(z / 3.0) * 3.0, -1)
    fit = head_consistency(z, capped, scale=2.0, softcap=3.0, one_row_at_a_time=one_row_at_a_time)
    assert fit.kl_after_softcap_bits.max() < 1e-6
    expected = kl_bits(torch.log_softmax(z / 2.0, -1), capped).tolist()
    assert fit.kl_after_scale_bits.tolist() == pytest.approx(expected)
    assert fit.kl_after_scale_then_softcap_bits.shape == (3,)


# every block size: one row, uneven blocks, a layer, the whole chunk (GPUs)
@pytest.mark.parametrize("block_bytes", [50 * 4, 3 * 50 * 4, 1 << 20, None])
def test_group_statistics_against_plain_definitions(block_bytes):
    from lensdb.extract.groups import GroupTracker

    torch.manual_seed(2)
    logits = torch.randn(3, 7, 50) * 3
    logits[1, 2, 11] = logits[1, 2, 12] = logits[1, 2].max() + 1  # a tie at the top, inside a group
    final = torch.randn(7, 50)
    index = torch.tensor([[11, 12, 30], [5, 0, 0], [0, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])  # the last group has no token
    answer_index = torch.randint(0, 50, (7, 2))
    answer_mask = torch.tensor([[True, True], [True, False], [False, False]] + [[True, True]] * 4)
    tracker = GroupTracker(index, mask, answer_index, answer_mask, answer_mask.any(dim=-1))
    stats = chunk_statistics(
        {"norm": logits}, final_log_probs=torch.log_softmax(final, -1), final_logits_unit=final / final.norm(dim=-1, keepdim=True),
        answer_ids=torch.full((7,), NO_TOKEN), paired_ids=torch.full((7,), NO_TOKEN), top_k=5, block_bytes=block_bytes, groups=tracker,
    )["norm"].groups
    p = torch.softmax(logits.double(), -1)
    assert stats.gathered is None  # dropped once the chunk is done: it never leaves the device
    for layer, position in np.ndindex(3, 7):
        row = p[layer, position]
        for group in range(3):
            ids = index[group][mask[group]]
            if len(ids) == 0:
                assert stats.mass[layer, position, group] == 0
                assert stats.best_id[layer, position, group] == NO_TOKEN and stats.best_rank[layer, position, group] == NO_TOKEN
                continue
            assert stats.mass[layer, position, group].item() == pytest.approx(row[ids].sum().item(), abs=1e-6)
            best = int(stats.best_id[layer, position, group])
            assert best in ids.tolist() and row[best] == row[ids].max()
            assert stats.best_rank[layer, position, group] == 1 + (row > row[best]).sum()
        answers = answer_index[position][answer_mask[position]]
        expected = row[answers].sum().item() if len(answers) else float("nan")
        assert stats.answer_mass[layer, position].item() == pytest.approx(expected, abs=1e-6, nan_ok=True)
    assert stats.best_rank[1, 2, 0] == 1  # the tied top tokens both rank first
