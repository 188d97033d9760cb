"""The tuned-lens on-disk format: files written here by hand (torch.save of a state dict and
a config.json typed as tuned-lens writes it) against lensdb's reader, and back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lensdb.errors import TunedLensError
from lensdb.tuned.format import (
    check_fits,
    load_tuned_lens,
    save_tuned_lens,
    unembed_hash,
    zero_translators,
)
from lensdb.tuned.store import resolve_tuned_spec

N_LAYERS, D_MODEL = 3, 8


def write_lens(folder: Path, state: dict, config: dict | None = None) -> Path:
    """A lens folder as tuned-lens's TunedLens.save writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "params.pt")
    config = config or {
        "base_model_name_or_path": "hand-made",
        "d_model": D_MODEL,
        "num_hidden_layers": N_LAYERS,
        "bias": True,
        "base_model_revision": None,
        "unembed_hash": None,
        "lens_type": "linear_tuned_lens",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def random_state(seed: int = 0, n: int = N_LAYERS, d: int = D_MODEL, dtype=torch.float32) -> dict:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(n):
        state[f"{i}.weight"] = (torch.randn(d, d, generator=generator) * 0.3).to(dtype)
        state[f"{i}.bias"] = torch.randn(d, generator=generator).to(dtype)
    return state


def expected_translation(state: dict, residual: np.ndarray, layer: int) -> np.ndarray:
    """tuned-lens's transform_hidden, h + Linear(h), in float64 numpy."""
    weight = state[f"{layer}.weight"].double().numpy()
    bias = state[f"{layer}.bias"].double().numpy() if f"{layer}.bias" in state else 0.0
    return residual + residual @ weight.T + bias


def test_translate_equals_the_formula_at_every_layer(tmp_path):
    state = random_state()
    lens = load_tuned_lens(write_lens(tmp_path / "lens", state))
    assert (lens.n_layers, lens.d_model) == (N_LAYERS, D_MODEL)
    residual = np.random.default_rng(1).normal(size=(2, 5, D_MODEL))
    for layer in range(N_LAYERS):
        got = lens.translate(torch.tensor(residual, dtype=torch.float32), layer).double().numpy()
        np.testing.assert_allclose(got, expected_translation(state, residual, layer), atol=1e-5, rtol=1e-5)
    # The last layer (after the last block) has no translator: the identity.
    last = lens.translate(torch.tensor(residual, dtype=torch.float32), N_LAYERS).double().numpy()
    np.testing.assert_allclose(last, residual, atol=1e-6)
    with pytest.raises(ValueError):
        lens.translate(torch.zeros(D_MODEL), N_LAYERS + 1)


def test_whole_tuned_lens_state_dict_without_bias_and_half_precision(tmp_path):
    # A TunedLens.state_dict() (prefixed keys plus its copy of the unembedding), no bias.
    state = {k: v for k, v in random_state(2, dtype=torch.float16).items() if k.endswith("weight")}
    prefixed = {f"layer_translators.{k}": v for k, v in state.items()}
    prefixed["unembed.unembedding.weight"] = torch.zeros(11, D_MODEL)
    config = {"d_model": D_MODEL, "num_hidden_layers": N_LAYERS, "bias": False}
    lens = load_tuned_lens(write_lens(tmp_path / "lens", prefixed, config))
    residual = np.random.default_rng(3).normal(size=(4, D_MODEL))
    got = lens.translate(torch.tensor(residual, dtype=torch.float32), 1).double().numpy()
    np.testing.assert_allclose(got, expected_translation(state, residual, 1), atol=1e-5, rtol=1e-5)
    assert lens.bias.abs().max() == 0


def test_round_trip_and_hash(tmp_path):
    original = load_tuned_lens(write_lens(tmp_path / "theirs", random_state(4)))
    written = save_tuned_lens(original, tmp_path / "ours")
    again = load_tuned_lens(tmp_path / "ours")
    assert torch.equal(again.weight, original.weight) and torch.equal(again.bias, original.bias)
    assert again.sha256 == written.sha256 == hashlib.sha256((tmp_path / "ours" / "params.pt").read_bytes()).hexdigest()
    assert again.origin == str((tmp_path / "ours").resolve())
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["d_model"] == D_MODEL and config["num_hidden_layers"] == N_LAYERS
    assert config["lens_type"] == "linear_tuned_lens" and config["base_model_name_or_path"] == "hand-made"
    # Plain tuned-lens keys, as TunedLens.save writes them.
    assert sorted(torch.load(tmp_path / "ours" / "params.pt")) == sorted(random_state(4))
    # The same translators always give the same bytes (the hash names the lens).
    assert save_tuned_lens(again, tmp_path / "third").sha256 == written.sha256
    assert save_tuned_lens(zero_translators(N_LAYERS, D_MODEL), tmp_path / "zero").sha256 != written.sha256


def test_unembed_hash_is_tuned_lens_tensor_hash():
    weight = torch.randn(50, 40, generator=torch.Generator().manual_seed(5))  # (d_vocab, d_model)
    expected = hashlib.sha256(np.array_str(weight.numpy(), precision=1).encode()).hexdigest()
    assert unembed_hash(weight) == expected
    with np.printoptions(precision=6, threshold=10**9):  # a caller's print options do not matter
        assert unembed_hash(weight) == expected
    assert unembed_hash(weight + 1.0) != expected


def test_check_fits_errors_are_one_line(tmp_path):
    lens = load_tuned_lens(write_lens(tmp_path / "lens", random_state(), {"d_model": D_MODEL, "num_hidden_layers": N_LAYERS, "unembed_hash": "ab" * 32}))
    check_fits(lens, N_LAYERS, D_MODEL, "ab" * 32)
    check_fits(lens, N_LAYERS, D_MODEL, None)
    cases = [
        ((N_LAYERS, D_MODEL * 2, None), ["d_model 8", "d_model 16"]),
        ((N_LAYERS + 1, D_MODEL, None), ["3 layers", "4 layers"]),
        ((N_LAYERS, D_MODEL, "cd" * 32), ["another unembedding"]),
    ]
    for args, fragments in cases:
        with pytest.raises(TunedLensError) as caught:
            check_fits(lens, *args)
        message = str(caught.value)
        assert "\n" not in message and all(f in message for f in fragments), message


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d: (d / "params.pt").unlink(), "has no params.pt"),
        (lambda d: (d / "config.json").unlink(), "has no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "cannot read"),
        (lambda d: (d / "config.json").write_text(json.dumps({"d_model": D_MODEL})), "num_hidden_layers"),
        (lambda d: (d / "config.json").write_text(json.dumps({"d_model": D_MODEL, "num_hidden_layers": N_LAYERS, "lens_type": "other"})), "lens_type"),
        (lambda d: (d / "config.json").write_text(json.dumps({"d_model": D_MODEL, "num_hidden_layers": N_LAYERS + 1})), "missing 3.weight"),
        (lambda d: (d / "config.json").write_text(json.dumps({"d_model": D_MODEL, "num_hidden_layers": N_LAYERS - 1})), "unexpected key"),
        (lambda d: (d / "config.json").write_text(json.dumps({"d_model": D_MODEL + 1, "num_hidden_layers": N_LAYERS})), "0.weight has shape (8, 8)"),
        (lambda d: (d / "params.pt").write_bytes(b"not a checkpoint"), "cannot read"),
        (lambda d: torch.save({**random_state(), "1.bias": torch.full((D_MODEL,), float("nan"))}, d / "params.pt"), "NaN"),
    ],
)
def test_damaged_lens_folders(tmp_path, damage, fragment):
    folder = write_lens(tmp_path / "lens", random_state())
    damage(folder)
    with pytest.raises(TunedLensError) as caught:
        load_tuned_lens(folder)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_resolve_folder_or_stored_name(tmp_path, monkeypatch):
    warehouse = tmp_path / "warehouse"
    folder = write_lens(tmp_path / "mylens", random_state(6))
    assert resolve_tuned_spec(str(folder), warehouse).sha256 == load_tuned_lens(folder).sha256
    stored = write_lens(warehouse / "lenses" / "stories", random_state(7))
    lens = resolve_tuned_spec("stories", warehouse)
    assert lens.name == "stories" and lens.origin == str(stored.resolve())
    # A relative folder wins over a stored name.
    monkeypatch.chdir(tmp_path)
    assert resolve_tuned_spec("mylens", warehouse).name is None
    with pytest.raises(TunedLensError) as caught:
        resolve_tuned_spec("nothing", warehouse)
    assert "stored lenses: stories" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(TunedLensError, match="no lens named"):
        resolve_tuned_spec("norm", warehouse)


def test_hub_configs_spelling_unemebd_hash_are_checked_too(tmp_path):
    # Lenses on the hub spell the key `unemebd_hash`: it counts as unembed_hash, and a saved copy spells it right.
    lens = load_tuned_lens(write_lens(tmp_path / "hub", random_state(), {"d_model": D_MODEL, "num_hidden_layers": N_LAYERS, "unemebd_hash": "ab" * 32}))
    check_fits(lens, N_LAYERS, D_MODEL, "ab" * 32)
    with pytest.raises(TunedLensError, match="another unembedding"):
        check_fits(lens, N_LAYERS, D_MODEL, "cd" * 32)
    saved = json.loads((Path(save_tuned_lens(lens, tmp_path / "copy").origin) / "config.json").read_text())
    assert saved["unembed_hash"] == "ab" * 32 and "unemebd_hash" not in saved


def test_mid_translators_round_trip_and_post_files_stay_tuned_lens(tmp_path):
    lens = zero_translators(N_LAYERS, D_MODEL, sites=("post", "mid"))
    lens = type(lens)(lens.weight + 0.5, lens.bias, mid_weight=lens.mid_weight + 0.25, mid_bias=lens.mid_bias + 1.0)
    written = save_tuned_lens(lens, tmp_path / "both")
    again = load_tuned_lens(tmp_path / "both")
    assert again.sites == ("post", "mid") and again.content_sha256 == written.content_sha256
    assert torch.equal(again.mid_weight, lens.mid_weight) and torch.equal(again.mid_bias, lens.mid_bias)
    h = torch.ones(2, D_MODEL)
    assert torch.allclose(again.translate(h, 2, "mid"), h + h @ lens.mid_weight[1].T + lens.mid_bias[1])
    assert torch.allclose(again.translate(h, 2), h + h @ lens.weight[2].T)
    # The same post translators without mid ones: the same params.pt, so the same identity as tuned-lens has it.
    post_only = save_tuned_lens(type(lens)(lens.weight, lens.bias), tmp_path / "post")
    assert post_only.sha256 == written.sha256 and post_only.content_sha256 == post_only.sha256 != written.content_sha256
    with pytest.raises(TunedLensError, match="no mid-site translators"):
        post_only.translate(h, 1, "mid")
    config = json.loads((tmp_path / "both" / "config.json").read_text())
    config["lensdb_sites"] = ["mid"]
    (tmp_path / "both" / "config.json").write_text(json.dumps(config))
    with pytest.raises(TunedLensError, match="`lensdb_sites` must list post"):
        load_tuned_lens(tmp_path / "both")
