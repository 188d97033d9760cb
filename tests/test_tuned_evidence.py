"""Evidence that `train-lens` works: a tuned lens for the real stories260K model, trained on
stories the model itself writes, decodes every layer below the last closer to the model's
final distribution than the final_ln logit lens does, on stories it has not seen.

Everything but the training is computed here without lensdb: the text (Hugging Face
`generate`), the residuals (tests/reference.py), the final norm and head (the model's own
modules) and the translators (read from params.pt with torch.load).
`pytest -s` prints the KL-by-layer table shown in the README.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from lensdb.prompts import load_prompt_set
from tests.cli_helpers import run_cli
from tests.reference import load_hf, residual_stream

SEED, TRAIN, HELD_OUT, NEW_TOKENS = 1, 24, 3, 96


def generate_stories(model_dir, seed: int, per_prompt: int, new_tokens: int) -> list[list[str]]:
    """For each prompt of the `stories` set, `per_prompt` stories the model writes after it
    (sampled at temperature 1; all prompts in one left-padded batch)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    tokenizer.pad_token = tokenizer.eos_token  # masked out; the stories are decoded without it
    model = load_hf(str(model_dir))
    texts = [p.text for p in load_prompt_set("stories").prompts]
    batch = tokenizer([t for t in texts for _ in range(per_prompt)], return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            **batch, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=None
        )
    stories = tokenizer.batch_decode(out, skip_special_tokens=True)
    return [stories[i * per_prompt : (i + 1) * per_prompt] for i in range(len(texts))]


def kl_by_layer(model_dir, stories: list[str], state: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean KL(final || lens) and KL(lens || final) in bits per layer over every token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = load_hf(str(model_dir))
    n_layers = model.config.num_hidden_layers
    forward, backward, count = np.zeros(n_layers + 1), np.zeros(n_layers + 1), 0
    for story in stories:
        ids = tokenizer(story).input_ids  # with BOS, as lensdb's prompts
        residuals, logits = residual_stream(str(model_dir), ids)
        with torch.no_grad():
            final = torch.log_softmax(logits.double(), dim=-1)
            for layer, h in enumerate(residuals):
                if state is not None and layer < n_layers:
                    h = h + h @ state[f"{layer}.weight"].T + state[f"{layer}.bias"]
                lens = torch.log_softmax(model.lm_head(model.model.norm(h)).double(), dim=-1)
                forward[layer] += (final.exp() * (final - lens)).sum().item()
                backward[layer] += (lens.exp() * (lens - final)).sum().item()
        count += len(ids)
    return forward / count / math.log(2), backward / count / math.log(2)


def test_tuned_lens_beats_the_logit_lens_on_held_out_stories(stories_model, tmp_path):
    # Independent samples: per prompt, the last HELD_OUT stories are kept for evaluation.
    by_prompt = generate_stories(stories_model, SEED, TRAIN + HELD_OUT, NEW_TOKENS)
    corpus = tmp_path / "stories.jsonl"
    corpus.write_text("".join(json.dumps({"text": s}) + "\n" for stories in by_prompt for s in stories[:TRAIN]))
    held_out = [s for stories in by_prompt for s in stories[TRAIN:]]
    out = tmp_path / "lens"
    result = run_cli("train-lens", stories_model, "--text", corpus, "--out", out, "--seq-len", 128, "--steps", 100, "--quiet")
    assert result.exit_code == 0, result.output

    state = torch.load(out / "params.pt")
    tuned, tuned_reverse = kl_by_layer(stories_model, held_out, state)
    logit, logit_reverse = kl_by_layer(stories_model, held_out, None)
    n_layers = len(tuned) - 1
    print("\n| layer | tuned | final_ln | tuned (reverse) | final_ln (reverse) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for layer in range(n_layers + 1):
        print(f"| {layer} | {tuned[layer]:.2f} | {logit[layer]:.2f} | {tuned_reverse[layer]:.2f} | {logit_reverse[layer]:.2f} |")

    # Lower at every layer below the last, in both directions of the KL.
    assert all(tuned[:n_layers] < logit[:n_layers]), (tuned, logit)
    assert all(tuned_reverse[:n_layers] < logit_reverse[:n_layers]), (tuned_reverse, logit_reverse)
    # By a clear margin in the middle of the model: less than half.
    middle = slice(1, n_layers - 1)
    assert all(tuned[middle] < 0.5 * logit[middle]), (tuned, logit)
    # The last layer: no translator, both lenses are the model's head.
    assert tuned[n_layers] < 1e-6 and logit[n_layers] < 1e-6
