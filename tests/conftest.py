"""Shared fixtures: tiny random models with tokenizers built here, the shipped demo model, and the shared real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lensdb.resources import demo_model_dir
from tests.object_store import s3_env, s3_server  # noqa: F401 - fixtures for every test module

REPO = Path(__file__).resolve().parent.parent
# ../shared beside the checkout; LENSDB_TEST_SHARED points elsewhere (bench/gpu_check.sh: the
# copy that bench/gpu_wheels.sh puts in the carried .whl/ folder, since ../shared does not travel).
SHARED = Path(os.environ.get("LENSDB_TEST_SHARED") or REPO.parent / "shared")
SHARED_STORIES = SHARED / "fixtures" / "models" / "stories260K"
STORIES = demo_model_dir()  # the shipped copy of the shared fixture (tests/test_demo.py compares them)
GPT2_TOKENIZER = SHARED / "fixtures" / "models" / "gpt2-tokenizer"
LEGACY_RUN = SHARED / "fixtures" / "legacy-run-2025-08-30"

CORPUS = [
    "Give the city name only, plain text. The capital of Germany is called simply Berlin.",
    "Give the city name only, plain text. The capital of France is called simply Paris.",
    "Once upon a time, there was a little girl named Lily. Lily loved her mom. One day, she saw Tom.",
    "Tom loved his dog. One day, he saw a big red ball in the park and the sun was warm.",
    "Answer with one word: the capital city of Italy is Rome, of Spain is Madrid.",
]

# Prompts of different lengths, with a control pair, a gold that needs two tokens and one
# that cannot be aligned ('@' is removed by the word-level tokenizer's normaliser).
TINY_PROMPTS = [
    {"id": "pos", "text": "Give the city name only, plain text. The capital of Germany is called simply", "gold": "Berlin", "temperatures": [0.5, 2.0]},
    {"id": "pos", "variant": "no_filler", "text": "Give the city name only, plain text. The capital of Germany is called", "gold": "Berlin"},
    {"id": "ctl", "text": "Give the city name only, plain text. The capital of France is called simply", "gold": "Paris", "control_of": "pos"},
    {"id": "story", "text": "Once upon a time, there was a little girl named Lily. Lily loved her mom. One day,", "gold": "Lily"},
    {"id": "short", "text": "Tom loved", "role": "test"},
    {"id": "nogold", "text": "The sun was warm", "gold": "@@"},
]


def write_jsonl(path: Path, prompts: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    return path


def rewrite_tensor_in_place(model_dir: Path, tensor: str, factor: float = 2.0) -> None:
    """Scale one weight of `model_dir`'s model.safetensors and write the file again: same
    header, same size, other content (a model whose weights changed in place)."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    size = path.stat().st_size
    weights = load_file(path)
    weights[tensor] = weights[tensor] * factor
    save_file(weights, path, metadata={"format": "pt"})
    assert path.stat().st_size == size


def _byte_bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 10, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def _word_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab=None, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Replace("@", "")
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_tiny_llama(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _word_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norm weights, so a wrong norm choice shows
        for module in model.modules():
            if type(module).__name__.endswith("RMSNorm"):
                module.weight.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_gemma2(path: Path, seed: int = 0, softcap: float = 3.0) -> Path:
    """Gemma-2: norms scale by (1 + w), embeddings by sqrt(d_model), final logits are soft-capped."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tokenizer = _word_tokenizer()
    torch.manual_seed(seed)
    config = Gemma2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or 0,
        final_logit_softcapping=softcap,
        tie_word_embeddings=False,
    )
    model = Gemma2ForCausalLM(config)
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__.endswith("RMSNorm"):
                module.weight.uniform_(-0.5, 0.5)
        model.lm_head.weight.mul_(40.0)  # logits large enough for the softcap to matter
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_gpt2(path: Path, seed: int = 0, tokenizer=None) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tokenizer or _byte_bpe_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=3,
        n_embd=32,
        n_head=4,
        vocab_size=len(tokenizer),
        n_positions=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    return save_with_random_layernorms(model, tokenizer, path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_gemma2(tmp_path_factory) -> Path:
    return build_tiny_gemma2(tmp_path_factory.mktemp("models") / "tiny-gemma2")


@pytest.fixture(scope="session")
def stories_model() -> Path:
    return STORIES


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return tmp_path / "warehouse"


@pytest.fixture(scope="session")
def tiny_prompts(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "tiny.jsonl", TINY_PROMPTS)


def pytest_runtest_setup(item):
    """`cuda` tests skip without a CUDA device, `multi_gpu` tests with fewer than two."""
    need = 2 if item.get_closest_marker("multi_gpu") else 1 if item.get_closest_marker("cuda") else 0
    if need:
        import torch

        if torch.cuda.device_count() < need:
            pytest.skip("no CUDA device" if need == 1 else f"needs at least {need} CUDA devices")


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.json from the fixture warehouse (then review the diff by hand)",
    )


def save_with_random_layernorms(model, tokenizer, path: Path) -> Path:
    """Give every LayerNorm a non-trivial scale and bias (so that a lens that skipped one
    would show), then save the model and its tokenizer to `path`."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
