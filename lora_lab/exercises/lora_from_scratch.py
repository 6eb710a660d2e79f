"""Checks for the exercises of notebook 02 (LoRA from scratch): a LoRA layer with merge and unmerge, LoRA's
parameter count, and the lora_alpha that keeps the scaling when r changes."""

from __future__ import annotations

import math
import numbers
from collections import Counter

import torch
from torch import nn

from ..i18n import _
from .verdict import _call, _check, _is_tensor, _lora_shapes_hint

__all__ = ["check_lora_linear", "check_lora_param_count", "check_same_scaling_alpha"]


def _lora_parts(layer, r: int, fin: int, fout: int) -> tuple[torch.Tensor, torch.Tensor]:
    for attr in ("lora_A", "lora_B", "base_layer"):
        assert hasattr(layer, attr), _("the layer has no `{attr}` attribute; use PEFT's names: base_layer (the frozen "
                                       "nn.Linear), lora_A (in → r) and lora_B (r → out).").format(attr=attr)
    a = getattr(layer.lora_A, "weight", layer.lora_A)
    b = getattr(layer.lora_B, "weight", layer.lora_B)
    _is_tensor(a, "lora_A.weight"), _is_tensor(b, "lora_B.weight")
    if tuple(a.shape) == (fout, r) and tuple(b.shape) == (r, fin):
        raise AssertionError(_("lora_A and lora_B are swapped: A reads the input, (r, in_features); "
                               "B writes the output, (out_features, r)."))
    assert tuple(a.shape) == (r, fin), _("lora_A.weight should be (r, in_features) = ({r}, {fin}), got {shape}."
                                         ).format(r=r, fin=fin, shape=tuple(a.shape))
    assert tuple(b.shape) == (fout, r), _("lora_B.weight should be (out_features, r) = ({fout}, {r}), got {shape}."
                                          ).format(fout=fout, r=r, shape=tuple(b.shape))
    for attr in ("lora_A", "lora_B"):
        if isinstance(getattr(getattr(layer, attr), "bias", None), torch.Tensor):
            raise AssertionError(_("{attr} has a bias (nn.Linear adds one unless bias=False). LoRA's update is a product "
                                   "of two matrices with no bias, ΔW·x = B·A·x, and PEFT builds lora_A and lora_B with "
                                   "bias=False: a bias in lora_B shifts the output even while B = 0, one in lora_A adds "
                                   "B·bias to the update once B trains.").format(attr=attr))
    base = getattr(layer.base_layer, "weight", None)
    for t, attr in ((a, "lora_A.weight"), (b, "lora_B.weight")):
        if isinstance(base, torch.Tensor) and t.dtype != base.dtype:
            raise AssertionError(_("{attr} is {dtype} while the base layer's weight is {base}: build A and B in the base "
                                   "layer's dtype, or the forward multiplies tensors of two dtypes.").format(
                attr=attr, dtype=t.dtype, base=base.dtype))
    return a, b


def _name_scaling_slip(scale: float, alpha: float, r: int) -> None:
    """Raise AssertionError naming the idea behind a wrong scaling factor, if it is a known slip (r and α are
    chosen so that each slip shows)."""
    if math.isclose(scale, alpha // r, rel_tol=1e-4, abs_tol=1e-6):
        raise AssertionError(_("the update is multiplied by {scale:g}: that is lora_alpha / r with its fraction "
                               "dropped (integer division // or int(): {alpha:g} // {r} = {floor:g}); with "
                               "lora_alpha < r it gives 0 and switches LoRA off. Keep the fraction: divide with /."
                               ).format(scale=scale, alpha=alpha, r=r, floor=alpha // r))
    if math.isclose(scale, r / alpha, rel_tol=1e-4):
        raise AssertionError(_("the update is multiplied by {scale:.4g} = r / lora_alpha: the scaling is upside "
                               "down; a larger lora_alpha must make the update larger.").format(scale=scale))
    if math.isclose(scale, alpha / math.sqrt(r), rel_tol=1e-4):
        raise AssertionError(_("the update is multiplied by {scale:.4g} = lora_alpha / √r: that is rsLoRA's "
                               "scaling (use_rslora=True); plain LoRA divides by r itself.").format(scale=scale))


def _check_dropout_place(delta: torch.Tensor, clean: torch.Tensor, p: float) -> None:
    """Raise AssertionError saying where a layer's dropout acts, read off one-hot inputs, unless it drops the
    LoRA path's input (PEFT's place).

    `delta` is the layer's output minus the base's in train mode, `clean` the LoRA path without dropout,
    both (tokens, out) for inputs that are each ONE input feature. Dropping the input keeps or zeroes that
    one feature, so each token's update is 0 or clean / (1 − p) as a whole; a mask between A and B or after
    B changes single entries instead.
    """
    keep = 1 / (1 - p)
    norms = (clean * clean).sum(-1)  # (tokens,)
    k = (delta * clean).sum(-1) / norms  # each token's update as a multiple of the clean one
    whole = torch.allclose(delta, k[:, None] * clean, atol=1e-5)
    kept = k[k.abs() >= 1e-4]  # the tokens whose feature was kept, each scaled by the same factor if dropout is right
    if whole and len(kept) and bool(((kept - kept.mean()).abs() < 1e-4).all()):
        factor = float(kept.mean())
        if math.isclose(factor, keep, rel_tol=1e-4):
            return
        if math.isclose(factor, 1.0, rel_tol=1e-4):
            raise AssertionError(_("your dropout zeroes inputs but does not scale the kept ones by 1 / (1 − p): the "
                                   "update is then smaller in training than in eval. nn.Dropout does the scaling for "
                                   "you."))
        if factor > 1:
            raise AssertionError(_("your dropout drops the LoRA path's input, the right place, but with p = {q:.2g} "
                                   "where the layer was built with lora_dropout={p!r}: it scales the kept inputs by "
                                   "{factor:.3g} = 1 / (1 − {q:.2g}). Build it from the argument, "
                                   "nn.Dropout(lora_dropout), not from a fixed p or nn.Dropout's default.").format(
                q=1 - 1 / factor, p=p, factor=factor))
    ratio = torch.where(clean.abs() > 1e-6, delta / clean, torch.zeros_like(delta))
    entrywise = bool((((ratio - 0).abs() < 1e-3) | ((ratio - keep).abs() < 1e-3) | (clean.abs() <= 1e-6)).all())
    if entrywise:
        raise AssertionError(_("your dropout acts on the LoRA path's output, after lora_B. PEFT's LoRA layer drops "
                               "the input features before lora_A: lora_B(lora_A(dropout(x)))."))
    raise AssertionError(_("your dropout sits between lora_A and lora_B, on the r values A computes. PEFT's LoRA "
                           "layer drops the input features before lora_A instead: lora_B(lora_A(dropout(x))). "
                           "Dropping one of A's r outputs removes a whole direction of the update at once."))


@_check("Exercise 02.1 · MyLoRALinear", takes="class")
def check_lora_linear(cls) -> str:
    """cls(base_layer, r, lora_alpha, lora_dropout=0.0) with lora_A, lora_B, forward, merge() and unmerge().

    α/r = 2.5 is not a whole number, so an integer division shows (as do r/α, α/√r and a missing scaling); dropout is read off inputs that are each
    one feature, so where the layer drops shows (PEFT drops the input of A).
    """
    fin, fout, r, alpha = 24, 16, 4, 10.0
    torch.manual_seed(0)
    base = nn.Linear(fin, fout)
    w0, b0 = base.weight.detach().clone(), base.bias.detach().clone()
    x = torch.randn(3, 5, fin)  # (batch, tokens, in_features)
    hint = _lora_shapes_hint(r, fin, fout, x.shape, weight=True)

    def run(f, *args):  # the learner's layer or method: an error is a verdict, told in LoRA's shapes
        return _call(f, *args, explain=hint)

    layer = _call(cls, base, r, alpha)
    assert isinstance(layer, nn.Module), _("MyLoRALinear should be an nn.Module (subclass nn.Module).")
    a, b = _lora_parts(layer, r, fin, fout)
    assert not any(p.requires_grad for p in base.parameters()), \
        _("the base layer still trains: freeze it with base_layer.requires_grad_(False).")
    assert a.requires_grad and b.requires_grad, _("lora_A and lora_B must be trainable (requires_grad=True).")
    assert torch.count_nonzero(b) == 0, _("lora_B should start at zero, so that ΔW = B·A = 0 and training starts "
                                          "from the base model.")
    assert torch.count_nonzero(a) > 0, _("lora_A should start random (Gaussian): with A = 0 as well, neither A nor B "
                                         "ever gets a gradient and training never starts.")
    layer.eval()
    with torch.no_grad():
        assert torch.allclose(run(layer, x), base(x), atol=1e-6), \
            _("at init (B = 0) the output must equal the base layer's output.")

    # with a non-zero B the output is base(x) + (α/r)·B·A·x
    with torch.no_grad():
        b.copy_(torch.randn_like(b))
        lora = x @ a.T @ b.T  # (3, 5, out) unscaled update
        got = run(layer, x) - base(x)
        scale = float((got * lora).sum() / (lora * lora).sum())
    assert torch.allclose(got, scale * lora, atol=1e-4), \
        _("with B ≠ 0 the output should be base_layer(x) + lora_B(lora_A(x)) · scaling; it isn't of that form.")
    if not math.isclose(scale, alpha / r, rel_tol=1e-4):
        _name_scaling_slip(scale, alpha, r)
        raise AssertionError(_("the update is multiplied by {scale:.4g}; it should be lora_alpha / r = {alpha:g} / {r} "
                               "= {scaling:g}.").format(scale=scale, alpha=alpha, r=r, scaling=alpha / r))
    # gradients reach A and B only
    layer.train()
    run(layer, x).sum().backward()
    assert a.grad is not None and b.grad is not None, _("no gradient reached lora_A or lora_B.")
    assert base.weight.grad is None, _("the base weight got a gradient: it must stay frozen.")

    # dropout acts on the LoRA path's input only; p is neither nn.Dropout's default (0.5) nor PEFT's usual 0.1,
    # so a p written into the layer instead of taken from lora_dropout shows
    p = 0.25
    torch.manual_seed(1)
    drop = _call(cls, nn.Linear(fin, fout), r, alpha, lora_dropout=p)
    da, db = _lora_parts(drop, r, fin, fout)
    drop.train()
    with torch.no_grad():
        torch.manual_seed(2)
        assert torch.allclose(run(drop, x), drop.base_layer(x), atol=1e-6), _(
            "with B = 0 and dropout on, the output changed: dropout belongs on the LoRA path's input only, not on "
            "the base path.")
        db.copy_(torch.randn_like(db))
        clean = drop.base_layer(x) + (x @ da.T @ db.T) * (alpha / r)
        torch.manual_seed(3)
        assert not torch.allclose(run(drop, x), clean, atol=1e-4), \
            _("lora_dropout={p!r} changed nothing in train mode: apply it to x before lora_A.").format(p=p)
        one_hot = torch.eye(fin).repeat(4, 1) * 3.0  # (96, in): every token is one input feature
        torch.manual_seed(4)
        delta = run(drop, one_hot) - drop.base_layer(one_hot)
        _check_dropout_place(delta, (one_hot @ da.T @ db.T) * (alpha / r), p)
        drop.eval()
        assert torch.allclose(run(drop, x), clean, atol=1e-4), _("in eval mode dropout must be off.")

    # merge and unmerge
    for method in ("merge", "unmerge"):
        assert callable(getattr(layer, method, None)), _("add a `{method}()` method.").format(method=method)
    layer.eval()
    with torch.no_grad():
        before = run(layer, x)
        run(layer.merge)
        delta = (alpha / r) * b @ a
        assert torch.allclose(base.weight, w0 + delta, atol=1e-5), \
            _("after merge() the base weight should be W0 + (lora_alpha / r) · B @ A.")
        assert torch.equal(base.bias, b0), _("merge() changed the bias; only the weight takes ΔW.")
        after = run(layer, x)
        if torch.allclose(after - before, x @ delta.T, atol=1e-4):
            raise AssertionError(_("after merge() the update is counted twice: once in the merged weight and again "
                                   "by the LoRA path. Skip the LoRA path while merged."))
        assert torch.allclose(after, before, atol=1e-4), _("merge() changed the layer's output; it should not.")
        run(layer.unmerge)
        assert torch.allclose(base.weight, w0, atol=1e-5), _("unmerge() should restore the original weight W0.")
        assert torch.allclose(run(layer, x), before, atol=1e-4), \
            _("after unmerge() the output should be as before merge().")
    return _("shapes, zero B, α/r scaling, dropout on the LoRA path's input, frozen base, merge and unmerge: "
             "all as in PEFT's LoRA layer.")


def _llama2_7b_shapes(targets: tuple[str, ...]) -> list[tuple[int, int]]:
    """(out_features, in_features) of every `targets` projection of Llama-2-7B, from its config."""
    from ..memory import LLAMA2_7B

    h, m = LLAMA2_7B["hidden_size"], LLAMA2_7B["intermediate_size"]
    dims = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
            "gate_proj": (m, h), "up_proj": (m, h), "down_proj": (h, m)}
    return [dims[t] for layer in range(LLAMA2_7B["num_hidden_layers"]) for t in targets]


def _lora_params(shapes: list[tuple[int, int]], r: int) -> int:
    """Trainable parameters of the kit's LoRALinear over layers of these (out, in) shapes, built on the meta device."""
    from ..lora import LoRALinear, count_parameters

    return sum(count * count_parameters(LoRALinear(nn.Linear(fin, fout, device="meta"), r, r))[0]
               for (fout, fin), count in Counter(shapes).items())


_SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _count_cases() -> list[tuple[str, list[tuple[int, int]], int]]:
    """(what, shapes (out, in), r); the reference counts come from the kit's LoRALinear, not from this file."""
    return [
        (_("Llama-2-7B, q_proj and v_proj, r=8"), _llama2_7b_shapes(("q_proj", "v_proj")), 8),
        (_("GPT-3 175B, Wq and Wv, r=1"), [(12288, 12288)] * 192, 1),
        (_("GPT-3 175B, Wq and Wv, r=8"), [(12288, 12288)] * 192, 8),
        (_("Llama-2-7B, all seven projections, r=64"), _llama2_7b_shapes(_SEVEN), 64),
        (_("one 3 × 5 layer, r=2"), [(3, 5)], 2),
    ]


@_check("Exercise 02.2 · lora_param_count")
def check_lora_param_count(fn) -> str:
    """fn(shapes, r) -> trainable LoRA parameters for layers of shape (out_features, in_features)."""
    wants = []
    for what, shapes, r in _count_cases():
        got, want = _call(fn, list(shapes), r), _lora_params(shapes, r)
        assert isinstance(got, numbers.Integral) and not isinstance(got, bool), _("return an int, got {kind}.").format(
            kind=type(got).__name__)
        got = int(got)
        if got == sum(d * k for d, k in shapes):
            raise AssertionError(_("{what}: {got:,} is the size of the full matrices; LoRA trains B (out × r) and "
                                   "A (r × in).").format(what=what, got=got))
        if got in (sum(r * k for d, k in shapes), sum(d * r for d, k in shapes)):
            raise AssertionError(_("{what}: {got:,} counts only one of the two factors; add A (r × in) and B "
                                   "(out × r).").format(what=what, got=got))
        if got != want and got in (sum(2 * r * d for d, k in shapes), sum(2 * r * k for d, k in shapes)):
            raise AssertionError(_("{what}: {got:,} treats every layer as square (2·r·d); A is (r × in) and B is "
                                   "(out × r), and in_features and out_features differ for some of these layers."
                                   ).format(what=what, got=got))
        if got != want and r > 1 and got * r == want:
            raise AssertionError(_("{what}: you counted {got:,}, exactly r = {r} times too few: A has r rows and B "
                                   "has r columns, so each layer adds r × (in + out), not in + out.").format(
                what=what, got=got, r=r))
        if got != want:
            more = _("too many") if got > want else _("too few")
            raise AssertionError(_("{what}: you counted {got:,}, {more}: count A (r × in) and B (out × r) of every "
                                   "layer in `shapes`.").format(what=what, got=got, more=more))
        wants.append(want)
    return _("{llama:,} for Llama-2-7B (PEFT's printout) and {small:.1f}M / {large:.1f}M for GPT-3 (the LoRA "
             "paper's) — from shapes alone.").format(llama=wants[0], small=wants[1] / 1e6, large=wants[2] / 1e6)


def _kit_scaling(lora_alpha: float, r: int, use_rslora: bool) -> float:
    """The scaling the kit's LoRALinear applies: α/r, or α/√r with rsLoRA."""
    from ..lora import LoRALinear

    return LoRALinear(nn.Linear(r, r, device="meta"), r, lora_alpha, use_rslora=use_rslora).scaling


# the notebook's case first; then cases whose lora_alpha is not a whole number (16 · 8 / 12, and 16 · √2 with
# rsLoRA), so that an integer division or a rounding shows
_ALPHA_CASES = [(16, 8, 64, False), (32, 16, 4, False), (16, 12, 8, False), (16, 8, 32, True), (8, 8, 2, True),
                (16, 8, 16, True)]


@_check("Exercise 02.3 · same_scaling_alpha")
def check_same_scaling_alpha(fn) -> str:
    """fn(lora_alpha, r, new_r, use_rslora=False) -> the lora_alpha that keeps the scaling when r becomes new_r."""
    for alpha, r, new_r, rs in _ALPHA_CASES:
        got = _call(fn, alpha, r, new_r, use_rslora=rs)
        assert isinstance(got, (int, float)) and not isinstance(got, bool), _("return a number, got {kind}.").format(
            kind=type(got).__name__)
        assert got > 0, _("lora_alpha={alpha}, r={r} → {new_r}: you returned {got:.4g}; lora_alpha is a positive "
                          "number.").format(alpha=alpha, r=r, new_r=new_r, got=got)
        rule = "lora_alpha / sqrt(r)" if rs else "lora_alpha / r"
        before, after = _kit_scaling(alpha, r, rs), _kit_scaling(got, new_r, rs)
        if math.isclose(got, alpha):
            raise AssertionError(_("keeping lora_alpha={alpha} while r goes {r} → {new_r} changes the scaling {rule} "
                                   "from {before:.4g} to {after:.4g}.").format(alpha=alpha, r=r, new_r=new_r, rule=rule,
                                                                              before=before, after=after))
        if rs and math.isclose(got, alpha * new_r / r, rel_tol=1e-6):
            raise AssertionError(_("lora_alpha={alpha}, r={r} → {new_r} with rsLoRA: you returned {got:.4g}, which "
                                   "keeps α/r. rsLoRA scales by lora_alpha / sqrt(r), so lora_alpha moves with √r, "
                                   "not with r.").format(alpha=alpha, r=r, new_r=new_r, got=got))
        method = _(" with rsLoRA") if rs else ""
        exact = before / _kit_scaling(1.0, new_r, rs)  # the scaling is proportional to lora_alpha
        rounded = {math.floor(exact), math.ceil(exact)} | {round(exact, digits) for digits in range(4)}
        if not math.isclose(after, before, rel_tol=1e-6) and any(math.isclose(got, v) for v in rounded):
            raise AssertionError(_("lora_alpha={alpha}, r={r} → {new_r}{method}: you returned {got:g}, a rounded "
                                   "number, so the scaling {rule} becomes {after:.4g} instead of staying {before:.4g}. "
                                   "Here the lora_alpha that keeps it is not a whole number, and integer division "
                                   "(//), int() or round() drop its fraction. lora_alpha need not be a whole number: "
                                   "divide with /.").format(alpha=alpha, r=r, new_r=new_r, method=method, got=got,
                                                            rule=rule, after=after, before=before))
        if not math.isclose(after, before, rel_tol=1e-6):
            raise AssertionError(_("lora_alpha={alpha}, r={r} → {new_r}{method}: you returned {got:.4g}, so the "
                                   "scaling {rule} becomes {after:.4g} instead of staying {before:.4g}.").format(
                alpha=alpha, r=r, new_r=new_r, method=method, got=got, rule=rule, after=after, before=before))
    return _("the scaling α/r (or α/√r with rsLoRA) stays put when r changes only if α moves with it.")
