"""Checks for the exercises of notebooks 05 (QLoRA from scratch) and 06 (the QLoRA fine-tune of Llama-2).

Same pattern as the checks of notebooks 00-04: a stub still raising NotImplementedError gets "not done
yet", a right answer "correct", a wrong one an AssertionError that says what to look at.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch

from ..i18n import _
from .verdict import (
    _call,
    _check,
    _close,
    _float_result,
    _is_tensor,
    _lora_shapes_hint,
    _whole_bytes,
)

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


def _forward_hint(layer, x: torch.Tensor):
    """An `explain` for _call on a QLoRALinear: the packed codes taken for the weight, or a shape error in LoRA's terms."""
    packed = layer.base_layer.weight  # (out · in / 2,) uint8: two 4-bit codes per byte
    shapes = _lora_shapes_hint(layer.lora_A.weight.shape[0], layer.in_features, layer.out_features, x.shape,
                               weight=True)

    def explain(error: BaseException) -> str | None:
        text = str(error)
        if any(s in text for s in ("Byte", "unsigned char", "uint8", f"{packed.numel()}")):
            return _("layer.base_layer.weight holds the packed 4-bit codes, {count:,} bytes of uint8 with two codes "
                     "each, not the weight: layer.base_layer.dequantize() rebuilds the (out, in) float weight."
                     ).format(count=packed.numel())
        return shapes(error)
    return explain


@_check("Exercise 05.1 · qlora_forward")
def check_qlora_forward(fn) -> str:
    """fn(layer, x) -> what the QLoRALinear `layer` outputs for x, computed from its parts."""
    for seed, (out_f, in_f) in enumerate([(48, 64), (96, 128)]):
        layer, x = _qlora_layer(seed, out_f, in_f)
        with torch.no_grad():
            want = layer(x)  # the kit's own forward is the reference
            got = _call(fn, layer, x, explain=_forward_hint(layer, x))
            _is_tensor(got, _("qlora_forward's result"))
            got = _float_result(got, _("qlora_forward's result"))
            assert got.shape == want.shape, _("the output should have shape {want}, got {got}.").format(
                want=tuple(want.shape), got=tuple(got.shape))
            w = layer.base_layer.dequantize()
            base_only = x @ w.T + layer.base_layer.bias
            delta = x @ layer.lora_A.weight.T @ layer.lora_B.weight.T
            if torch.allclose(got, base_only, atol=1e-5):
                raise AssertionError(_("that is the 4-bit base alone: add the LoRA path lora_B(lora_A(x)) · scaling."))
            if torch.allclose(got, base_only + delta, atol=1e-5):
                raise AssertionError(_("the LoRA path must be multiplied by layer.scaling (α/r = {scaling:g})."
                                       ).format(scaling=layer.scaling))
            if torch.allclose(got, x @ w.T + delta * layer.scaling, atol=1e-5):
                raise AssertionError(_("the base layer has a bias: add layer.base_layer.bias."))
            if torch.allclose(got, (base_only + delta) * layer.scaling, atol=1e-5):
                raise AssertionError(_("you multiplied the base layer's output by the scaling too: α/r weighs the "
                                       "LoRA path only, (α/r)·B·A·x; the frozen base computes as it always did."))
            if torch.allclose(got, base_only + delta / layer.scaling, atol=1e-5):
                raise AssertionError(_("you divided the LoRA path by the scaling (or multiplied by r/α): the scaling "
                                       "α/r = {scaling:g} is a factor, (α/r)·B·A·x; multiply by layer.scaling as it is."
                                       ).format(scaling=layer.scaling))
            if torch.allclose(got, base_only + delta * layer.scaling**2, atol=1e-5):
                raise AssertionError(_("the LoRA path is scaled twice, by (α/r)² = {twice:g}: apply layer.scaling once, "
                                       "after lora_B (or fold it into one of the matrices, never into both)."
                                       ).format(twice=layer.scaling**2))
            if torch.allclose(got, want + layer.base_layer.bias, atol=1e-5):
                raise AssertionError(_("the bias is added twice: layer.base_layer(x) already includes it. Add "
                                       "layer.base_layer.bias only when you compute the base from its weight, "
                                       "x @ dequantize().T."))
            assert torch.allclose(got, want, atol=1e-5), _(
                "the output differs from layer(x): dequantize the base weight (layer.base_layer.dequantize(), shape "
                "(out, in)) and mind which side of the matmul each weight goes; then add the bias and the scaled "
                "LoRA path.")
    return _("A QLoRA layer computes dequant(W)·x + b + (α/r)·B·A·x: 4-bit storage, ordinary matmuls.")


@_check("Exercise 05.2 · nf4_bytes")
def check_nf4_bytes(fn) -> str:
    """fn(n_weights, blocksize, double_quant) -> bytes NF4 storage takes, constants included."""
    from ..nf4 import quantize_nf4

    # the last is Llama-2-7B's q_proj, 4096 × 4096: counted by quantizing it, about 0.2 s
    for n, blocksize, dq in [(192 * 192, 64, True), (192 * 192, 64, False), (512 * 192, 64, True), (1000, 64, True),
                             (1000, 128, False), (4096 * 4096, 64, True)]:
        got = _call(fn, n, blocksize, dq)
        assert isinstance(got, (int, float)), _("return a number of bytes, got {kind}.").format(kind=type(got).__name__)
        want = quantize_nf4(torch.zeros(n), blocksize, dq).nbytes  # the bytes the kit's quantizer writes
        if _close(got, math.ceil(n / 2)):
            raise AssertionError(_("nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: that counts the 4-bit codes only; "
                                   "every block also stores its absmax scale.").format(n=n, blocksize=blocksize, dq=dq,
                                                                                      got=got))
        if _close(got, n * 4) or _close(got, 8 * want):
            raise AssertionError(_("nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: count bytes (8 bits), not bits."
                                   ).format(n=n, blocksize=blocksize, dq=dq, got=got))
        if dq and _close(got, quantize_nf4(torch.zeros(n), blocksize, False).nbytes, rel=1e-6):
            raise AssertionError(_("nf4_bytes({n:,}, {blocksize}, double_quant=True) = {got:,}: that is the size "
                                   "without double quantization, a 4-byte absmax per block. Double quantization "
                                   "stores each block's absmax as a 1-byte code, plus one fp32 scale per 256 blocks "
                                   "and one fp32 offset.").format(n=n, blocksize=blocksize, got=got))
        whole = blocksize * 256  # a size with no partial byte, block or group of blocks: only a missing offset shows
        if dq and _close(got, want - 4, rel=1e-9) and _close(_call(fn, whole, blocksize, dq),
                                                             quantize_nf4(torch.zeros(whole), blocksize, dq).nbytes - 4,
                                                             rel=1e-9):
            raise AssertionError(_("nf4_bytes({n:,}, {blocksize}, double_quant=True) = {got:,}: almost — the fp32 "
                                   "offset is missing (4 bytes, one per tensor: the 1-byte absmax codes are stored "
                                   "with their mean taken out).").format(n=n, blocksize=blocksize, got=got))
        assert _close(got, want, rel=1e-6), _(
            "nf4_bytes({n:,}, blocksize={blocksize}, double_quant={dq}) = {got:,} is {more} what the quantizer "
            "stores: two codes per byte, then per block a 4-byte fp32 absmax, or with double quantization a 1-byte "
            "code plus one fp32 scale per 256 blocks and one fp32 offset. Mind the rounding up of partial bytes and "
            "blocks.").format(n=n, blocksize=blocksize, dq=dq, got=got, more=_("more than") if got > want else
                              _("less than"))
        _whole_bytes(got, f"nf4_bytes({n}, {blocksize}, {dq})")
    from .nf4_from_scratch import _stored_bits

    plain, dq = _stored_bits(64, False), _stored_bits(64, True)
    return _("{plain:g} bits per weight at blocksize 64, about {dq:.3f} with double quantization (QLoRA §3).").format(
        plain=plain, dq=dq)


# ----------------------------------------------------------------------------- 06 the QLoRA fine-tune


def _tokenizer(pad, eos="</s>", unk="<unk>", bos="<s>"):
    """A stand-in with the special-token attributes of a transformers tokenizer (Llama-2's ids)."""
    ids = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, None: None}
    return SimpleNamespace(pad_token=pad, pad_token_id=ids[pad], eos_token=eos, eos_token_id=ids[eos],
                           unk_token=unk, unk_token_id=ids[unk], bos_token=bos, bos_token_id=ids[bos])


@_check("Exercise 06.1 · pad_token_for")
def check_pad_token(fn) -> str:
    """fn(tokenizer) -> the token string to pad with (never the EOS token).

    Checked against what a pad token must be rather than against a stored answer: not EOS (its label would
    be masked), not BOS (it starts every row), a token the tokenizer already has (no new embedding row to
    train), and the tokenizer's own pad token whenever it has one distinct from EOS.
    """
    for tok in (_tokenizer("<pad>"), _tokenizer(None), _tokenizer("</s>")):  # own pad; none (Llama-2); pad = eos
        own = tok.pad_token if tok.pad_token not in (None, tok.eos_token) else None
        got = _call(fn, tok)
        assert got != tok.eos_token, _("padding with the EOS token hides every EOS where padding is masked, so the "
                                       "model never learns to stop; pick another token.")
        assert isinstance(got, str), _("return the token itself, a string as the tokenizer's *_token attributes hold "
                                       "them; got {kind}.").format(kind=type(got).__name__)
        if own is not None:
            assert got == own, _("this tokenizer has its own pad token, {own!r}, and you returned {got!r}: keep the "
                                 "pad token the tokenizer was made with when it is not EOS.").format(own=own, got=got)
            continue
        situation = (_("this tokenizer has no pad token (Llama-2's case)") if tok.pad_token is None else
                     _("this tokenizer pads with EOS (the classic recipe)"))
        assert got != tok.bos_token, _("{situation}, and you returned BOS {got!r}: every row starts with it, and the "
                                       "model must see it there; pick another token.").format(situation=situation,
                                                                                             got=got)
        known = {tok.pad_token, tok.unk_token, tok.bos_token, tok.eos_token} - {None}
        assert got in known, _("{situation}, and you returned {got!r}, which it does not have: a new token needs a new "
                               "embedding row. Pick one of the tokenizer's own special tokens that the model never has "
                               "to predict.").format(situation=situation, got=got)
    return _("Pad with a token the model never has to predict: the tokenizer's own pad token if it is not EOS, "
             "else another special token it already has; never EOS.")


@_check("Exercise 06.2 · sampling_probs")
def check_sampling_probs(fn) -> str:
    """fn(logits, temperature, top_k) -> the probabilities generate(do_sample=True, temperature, top_k) samples from.

    The reference is transformers' own pair of logits warpers, TemperatureLogitsWarper then TopKLogitsWarper.
    """
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

    def warped(logits: torch.Tensor, t: float, k: int | None) -> torch.Tensor:  # (vocab,) -> (vocab,)
        scaled = TemperatureLogitsWarper(t)(None, logits[None].clone())
        return (TopKLogitsWarper(k)(None, scaled) if k else scaled).softmax(-1)[0]

    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.25, -0.5])  # (vocab,) no ties, so top-k is unambiguous
    for t, k in [(0.5, 3), (1.0, None), (2.0, 2), (1.5, 1)]:
        want = warped(logits, t, k)
        got = _call(fn, logits.clone(), t, k)
        _is_tensor(got, _("sampling_probs' result"))
        got = _float_result(got, _("sampling_probs' result"))
        assert got.shape == logits.shape, _("return one probability per token, shape {want}; got {got}.").format(
            want=tuple(logits.shape), got=tuple(got.shape))
        if torch.allclose(got, want, atol=1e-5):
            continue
        if k:
            full = torch.softmax(logits / t, dim=-1)
            cut = torch.where(full >= full.topk(k).values[-1], full, torch.zeros_like(full))  # not renormalised
            if torch.allclose(got, cut, atol=1e-5):
                raise AssertionError(_("with top_k={k} your probabilities sum to {total:.3f}: after dropping all but "
                                       "the k likeliest tokens, renormalise (a softmax over the kept logits, the "
                                       "others set to -inf), so that the kept ones sum to 1.").format(
                    k=k, total=float(got.sum())))
        assert torch.isclose(got.sum(), torch.tensor(1.0), atol=1e-5), _(
            "probabilities sum to 1; yours sum to {total:.4f}.").format(total=float(got.sum()))
        if t != 1.0 and torch.allclose(got, warped(logits, 1 / t, k), atol=1e-5):
            raise AssertionError(_("divide the logits by the temperature, don't multiply: T < 1 must sharpen."))
        if t != 1.0 and torch.allclose(got, warped(logits, 1.0, k), atol=1e-5):
            raise AssertionError(_("at temperature {t} the result is the T = 1 distribution: divide the logits by T."
                                   ).format(t=t))
        kept = int((got > 0).sum())
        if k and kept != k:
            raise AssertionError(_("top_k={k} keeps the {k} likeliest tokens and gives every other token probability "
                                   "0; yours gives {kept} tokens a non-zero probability.").format(k=k, kept=kept))
        raise AssertionError(_("at T={t}, top_k={k} your probabilities are not the ones generate() samples from: "
                               "scale the logits by the temperature, keep the k largest, then softmax.").format(t=t, k=k))
    return _("T reshapes the distribution and top_k cuts its tail, exactly as transformers' TemperatureLogitsWarper "
             "and TopKLogitsWarper do before generate() samples.")


@functools.lru_cache(maxsize=None)
def _bytes_per_trainable(optimizer: str) -> float:
    """Bytes per LoRA weight (weight, gradient, optimizer state) in the kit's memory estimate for `optimizer`."""
    from ..memory import estimate_memory

    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=32)
    e = estimate_memory(tiny, lora={"r": 2, "target_modules": ["q_proj"]}, optimizer=optimizer)
    return (e.lora_weights + e.gradients + e.optimizer_state) / e.lora_params


@_check("Exercise 06.3 · training_bytes")
def check_training_bytes(fn) -> str:
    """fn(n_trainable, optimizer) -> bytes of the LoRA weights, their gradients and optimizer state (all fp32)."""
    from .lora_from_scratch import _SEVEN, _llama2_7b_shapes, _lora_params

    recipe = _lora_params(_llama2_7b_shapes(_SEVEN), 64)  # the 7B recipe's LoRA weights: r=64 on all seven projections
    for n, optim in [(233_472, "adamw"), (recipe, "adamw"), (1000, "adamw_8bit"), (1000, "sgd")]:
        per_param = _bytes_per_trainable(optim)
        got = _call(fn, n, optim)
        assert isinstance(got, (int, float)), _("return a number of bytes, got {kind}.").format(kind=type(got).__name__)
        if optim == "adamw" and _close(got, 12 * n):
            raise AssertionError(_("that is 12 bytes per parameter. Either three fp32 tensors, one short of the four "
                                   "training keeps for each LoRA weight (the weight, its gradient, and AdamW's two "
                                   "moments m and v; most often the gradient is forgotten), or all four with the "
                                   "weight and its gradient in fp16, 2 + 2 + 8. The exercise keeps them in fp32, as "
                                   "the kit does: the 4-bit base computes in 16 bits, but fp16 trainable weights "
                                   "make mixed-precision training fail (\"Attempting to unscale FP16 gradients\"), "
                                   "and fp16's 10-bit mantissa rounds away updates far smaller than the weight."))
        if optim == "adamw_8bit" and _close(got, 16 * n):
            raise AssertionError(_("training_bytes({n:,}, 'adamw_8bit') = {got:,} counts AdamW's two moments in fp32; "
                                   "the 8-bit optimizer stores each moment in 1 byte (with a scale per block, "
                                   "negligible).").format(n=n, got=got))
        if optim == "sgd" and _close(got, 12 * n):
            raise AssertionError(_("training_bytes({n:,}, 'sgd') = {got:,}: plain SGD keeps no state of its own, only "
                                   "the weight and its gradient (a momentum buffer comes only with momentum > 0)."
                                   ).format(n=n, got=got))
        if optim == "adamw" and _close(got, 8 * n):
            raise AssertionError(_("that is 8 bytes per parameter, two fp32 tensors; training keeps four for each LoRA "
                                   "weight: the weight, its gradient, and AdamW's two moments m and v."))
        assert _close(got, per_param * n), _(
            "training_bytes({n:,}, {optim!r}) = {got:,}, {each:.4g} bytes per trainable parameter: not what "
            "training with {optim!r} keeps. Add up the fp32 weight, its gradient, and the optimizer's state per "
            "weight.").format(n=n, optim=optim, got=got, each=got / n)
        _whole_bytes(got, f"training_bytes({n}, {optim!r})")
    adamw = _bytes_per_trainable("adamw")
    return _("{each:g} bytes per trainable parameter with AdamW: the 7B recipe's {n:,} LoRA weights take {gib:.2f} GiB, "
             "on top of the 4-bit base.").format(each=adamw, n=recipe, gib=adamw * recipe / 2**30)
