"""Checks for the exercises of notebooks 05 (QLoRA from scratch) and 06 (the QLoRA fine-tune of Llama-2).

Same pattern as the checks of notebooks 00-04: a stub still raising NotImplementedError gets "not done
yet", a right answer "correct", a wrong one an AssertionError that says what to look at.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from .concepts import _call, _check, _close, _is_tensor

__all__ = [
    # 05 QLoRA from scratch
    "check_qlora_forward", "check_nf4_bytes",
    # 06 QLoRA fine-tune of Llama-2
    "check_pad_token", "check_sampling_probs", "check_training_bytes",
]


# ----------------------------------------------------------------------------- 05 QLoRA from scratch


def _qlora_layer(seed: int, out_features: int, in_features: int):
    from ..qlora import QLoRALinear

    g = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(in_features, out_features)
    with torch.no_grad():
        base.weight.copy_(torch.randn(out_features, in_features, generator=g) * 0.05)
        base.bias.copy_(torch.randn(out_features, generator=g) * 0.1)
    layer = QLoRALinear(base, r=4, lora_alpha=8)
    with torch.no_grad():  # a trained-looking adapter: B no longer zero
        layer.lora_B.weight.copy_(torch.randn(out_features, 4, generator=g) * 0.05)
    return layer, torch.randn(3, in_features, generator=g)


@_check("Exercise 05.1 · qlora_forward")
def check_qlora_forward(fn) -> str:
    """fn(layer, x) -> what the QLoRALinear `layer` outputs for x, computed from its parts."""
    for seed, (out_f, in_f) in enumerate([(48, 64), (96, 128)]):
        layer, x = _qlora_layer(seed, out_f, in_f)
        with torch.no_grad():
            want = layer(x)
            got = _call(fn, layer, x)
            _is_tensor(got, "qlora_forward's result")
            assert got.shape == want.shape, f"the output should have shape {tuple(want.shape)}, got {tuple(got.shape)}."
            w = layer.base_layer.dequantize()
            base_only = x @ w.T + layer.base_layer.bias
            delta = x @ layer.lora_A.weight.T @ layer.lora_B.weight.T
            if torch.allclose(got, base_only, atol=1e-5):
                raise AssertionError("that is the 4-bit base alone: add the LoRA path lora_B(lora_A(x)) · scaling.")
            if torch.allclose(got, base_only + delta, atol=1e-5):
                raise AssertionError(f"the LoRA path must be multiplied by layer.scaling (α/r = {layer.scaling:g}).")
            if torch.allclose(got, x @ w.T + delta * layer.scaling, atol=1e-5):
                raise AssertionError("the base layer has a bias: add layer.base_layer.bias.")
            assert torch.allclose(got, want, atol=1e-5), (
                "the output differs from layer(x): dequantize the base weight (layer.base_layer.dequantize(), "
                "shape (out, in)), then x @ W.T + bias + (x @ A.T @ B.T) · scaling.")
    return "A QLoRA layer computes dequant(W)·x + b + (α/r)·B·A·x: 4-bit storage, ordinary matmuls."


@_check("Exercise 05.2 · nf4_bytes")
def check_nf4_bytes(fn) -> str:
    """fn(n_weights, blocksize, double_quant) -> bytes NF4 storage takes, constants included."""
    from ..nf4 import quantize_nf4

    for n, blocksize, dq in [(192 * 192, 64, True), (192 * 192, 64, False), (512 * 192, 64, True),
                             (4096 * 11008, 64, True), (1000, 64, True), (1000, 128, False)]:
        if n <= 512 * 192:
            want = quantize_nf4(torch.randn(n), blocksize, dq).nbytes
        else:  # counted, not quantized: 45M weights would take a while
            blocks = math.ceil(n / blocksize)
            want = math.ceil(n / 2) + (blocks + 4 * math.ceil(blocks / 256) + 4 if dq else 4 * blocks)
        got = _call(fn, n, blocksize, dq)
        assert isinstance(got, (int, float)), f"return a number of bytes, got {type(got).__name__}."
        if _close(got, math.ceil(n / 2)):
            raise AssertionError(f"nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: that counts the 4-bit codes only; "
                                 "every block also stores its absmax scale.")
        if _close(got, n * 4) or _close(got, 8 * want):
            raise AssertionError(f"nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: count bytes (8 bits), not bits.")
        assert _close(got, want, rel=1e-6), (
            f"nf4_bytes({n:,}, blocksize={blocksize}, double_quant={dq}) = {got:,}, expected {want:,}: two codes per "
            "byte, then per block a 4-byte fp32 absmax, or with double quantization a 1-byte code plus one fp32 "
            "scale per 256 blocks and one fp32 offset.")
    return "4.5 bits per weight at blocksize 64, about 4.127 with double quantization (QLoRA §3)."


# ----------------------------------------------------------------------------- 06 the QLoRA fine-tune


def _tokenizer(pad, eos="</s>", unk="<unk>"):
    ids = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, None: None}
    return SimpleNamespace(pad_token=pad, pad_token_id=ids[pad], eos_token=eos, eos_token_id=ids[eos],
                           unk_token=unk, unk_token_id=ids[unk])


@_check("Exercise 06.1 · pad_token_for")
def check_pad_token(fn) -> str:
    """fn(tokenizer) -> the token string to pad with (never the EOS token)."""
    cases = [(_tokenizer("<pad>"), "<pad>", "the tokenizer has its own pad token: keep it"),
             (_tokenizer(None), "<unk>", "no pad token (Llama-2's case): pad with <unk>"),
             (_tokenizer("</s>"), "<unk>", "pad = eos (the classic recipe): replace it with <unk>")]
    for tok, want, why in cases:
        got = _call(fn, tok)
        assert got != tok.eos_token, ("padding with the EOS token hides every EOS where padding is masked, so the "
                                      "model never learns to stop; pick another token.")
        assert got == want, f"{why} — expected {want!r}, got {got!r}."
    return "Pad with a token the model never has to predict: <pad> if it exists, else <unk>; never </s>."


@_check("Exercise 06.2 · sampling_probs")
def check_sampling_probs(fn) -> str:
    """fn(logits, temperature, top_k) -> the probabilities generate(do_sample=True, temperature, top_k) samples from.

    The reference is transformers' own pair of logits warpers, TemperatureLogitsWarper then TopKLogitsWarper.
    """
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.25, -0.5])  # (vocab,) no ties, so top-k is unambiguous
    for t, k in [(0.5, 3), (1.0, None), (2.0, 2), (1.5, 1)]:
        scaled = TemperatureLogitsWarper(t)(None, logits[None].clone())
        want = (TopKLogitsWarper(k)(None, scaled) if k else scaled).softmax(-1)[0]
        got = _call(fn, logits.clone(), t, k)
        _is_tensor(got, "sampling_probs' result")
        assert got.shape == logits.shape, f"return one probability per token, shape {tuple(logits.shape)}; got {tuple(got.shape)}."
        if torch.allclose(got, want, atol=1e-5):
            continue
        if k:
            full = torch.softmax(logits / t, dim=-1)
            cut = torch.where(full >= full.topk(k).values[-1], full, torch.zeros_like(full))  # not renormalised
            if torch.allclose(got, cut, atol=1e-5):
                raise AssertionError(f"with top_k={k} your probabilities sum to {float(got.sum()):.3f}: after dropping "
                                     "all but the k likeliest tokens, renormalise (a softmax over the kept logits, "
                                     "the others set to -inf), so that the kept ones sum to 1.")
        assert torch.isclose(got.sum(), torch.tensor(1.0), atol=1e-5), f"probabilities sum to 1; yours sum to {float(got.sum()):.4f}."
        if t != 1.0 and torch.allclose(got, (TopKLogitsWarper(k)(None, logits[None] * t) if k else logits[None] * t)
                                       .softmax(-1)[0], atol=1e-5):
            raise AssertionError("divide the logits by the temperature, don't multiply: T < 1 must sharpen.")
        if t != 1.0 and torch.allclose(got, (TopKLogitsWarper(k)(None, logits[None].clone()) if k else logits[None])
                                       .softmax(-1)[0], atol=1e-5):
            raise AssertionError(f"at temperature {t} the result is the T = 1 distribution: divide the logits by T.")
        kept = int((got > 0).sum())
        if k and kept != k:
            raise AssertionError(f"top_k={k} keeps the {k} likeliest tokens and gives every other token probability 0; "
                                 f"yours gives {kept} tokens a non-zero probability.")
        assert torch.allclose(got, want, atol=1e-5), f"at T={t}, top_k={k} expected {want.tolist()}, got {got.tolist()}."
    return ("softmax(logits / T) over the k likeliest tokens only: T reshapes the distribution, top_k cuts its tail, "
            "exactly as transformers' TemperatureLogitsWarper and TopKLogitsWarper do.")


@_check("Exercise 06.3 · training_bytes")
def check_training_bytes(fn) -> str:
    """fn(n_trainable, optimizer) -> bytes of the LoRA weights, their gradients and optimizer state (all fp32)."""
    for n, optim, per_param in [(233_472, "adamw", 16), (159_907_840, "adamw", 16), (1000, "adamw_8bit", 10),
                                (1000, "sgd", 8)]:
        got = _call(fn, n, optim)
        assert isinstance(got, (int, float)), f"return a number of bytes, got {type(got).__name__}."
        if optim == "adamw" and _close(got, 12 * n):
            raise AssertionError("that is 12 bytes per parameter, three fp32 tensors; training keeps four for each "
                                 "LoRA weight: the weight, its gradient, and AdamW's two moments m and v. Which one "
                                 "is missing? (Most often the gradient, as large as the weight itself.)")
        if optim == "adamw" and _close(got, 8 * n):
            raise AssertionError("that is 8 bytes per parameter, two fp32 tensors; training keeps four for each LoRA "
                                 "weight: the weight, its gradient, and AdamW's two moments m and v.")
        assert _close(got, per_param * n), (f"training_bytes({n:,}, {optim!r}) = {got:,}, expected "
                                            f"{per_param * n:,} ({per_param} bytes per trainable parameter).")
    return (f"16 bytes per trainable parameter with AdamW: the 7B recipe's {159_907_840:,} LoRA weights take "
            f"{16 * 159_907_840 / 2**30:.2f} GiB, next to 3.5 GiB of 4-bit base.")
