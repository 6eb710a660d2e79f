"""Checks for the exercises of notebook 07 (beyond plain LoRA: QA-LoRA, DoRA, PiSSA, LoftQ).

Same pattern as the other notebooks' checks: a stub still raising NotImplementedError gets "not done
yet", a right answer "correct", a wrong one an AssertionError that says what to look at. The references
are the kit's own QA-LoRA, DoRA and PiSSA code.
"""

from __future__ import annotations

import torch
from torch import nn

from ..i18n import _
from .verdict import _call, _check, _float_result, _is_tensor, _lora_shapes_hint

__all__ = ["check_pool_groups", "check_fold_into_zeros", "check_dora_magnitude", "check_pissa_factors"]


def _weight(seed: int, out_features: int, in_features: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_features, in_features, generator=g) * 0.05


def _linear(weight: torch.Tensor) -> nn.Linear:
    """An nn.Linear without bias holding `weight` (out, in)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


# ----------------------------------------------------------------------------- QA-LoRA


@_check("Exercise 07.1 · pool_groups")
def check_pool_groups(fn) -> str:
    """fn(x, group_size) -> the mean of each group of group_size neighbouring features: (..., in / group_size)."""
    from ..qalora import pool_groups

    for shape, gs in [((3, 12), 4), ((2, 5, 32), 8), ((4, 64), 64), ((6,), 2)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) + gs))
        want = pool_groups(x, gs)
        got = _call(fn, x.clone(), gs)
        _is_tensor(got, f"pool_groups(x {tuple(shape)}, {gs})")
        got = _float_result(got, f"pool_groups(x {tuple(shape)}, {gs})")
        if got.shape != want.shape and got.shape == (*shape[:-1], gs):
            raise AssertionError(_("for in_features={fin} and group_size={gs} you returned {gs} values per row: that "
                                   "is one per position inside a group. QA-LoRA keeps one per group, in_features / "
                                   "group_size = {groups}.").format(fin=shape[-1], gs=gs, groups=shape[-1] // gs))
        assert got.shape == want.shape, _("pool_groups(x of shape {shape}, {gs}) should have shape {want} (one value "
                                          "per group, on the last axis), got {got}.").format(
            shape=shape, gs=gs, want=tuple(want.shape), got=tuple(got.shape))
        strided = x.unflatten(-1, (gs, -1)).mean(-2)  # groups of every (in/gs)-th feature
        if gs < shape[-1] and torch.allclose(got, strided, atol=1e-6) and not torch.allclose(strided, want):
            raise AssertionError(_("your groups take every G-th feature (x.view(..., group_size, G)); a quantization "
                                   "group is group_size NEIGHBOURING columns, side by side along the last axis."))
        groups = shape[-1] // gs
        if groups > 1 and groups != gs and torch.allclose(got, want * groups, atol=1e-5):
            raise AssertionError(_("that is G × the mean, with G = in_features / group_size = {groups} groups: the "
                                   "input PEFT's QA-LoRA layer feeds to A, G·x̄. pool_groups is the group mean x̄ "
                                   "itself; the layer multiplies by G afterwards (QALoRALinear.pool_scale).").format(
                groups=groups))
        if torch.allclose(got, want * gs, atol=1e-5) and gs > 1:
            raise AssertionError(_("that is the sum of each group ({gs} × the mean); average it: divide by group_size."
                                   ).format(gs=gs))
        assert torch.allclose(got, want, atol=1e-6), _("some group means are wrong: average each block of group_size "
                                                       "neighbouring features along the last axis.")
    return _("one number per group: A then has in_features / group_size columns, so B·A is the same for every "
             "column of a group — which is what lets the merge go into the zero points.")


def _int4_layer(seed: int):
    from ..qalora import quantize_int4

    w = _weight(seed, 24, 64)
    codes, scales, zeros = quantize_int4(w, 16, torch.float32)  # fp32 constants: the check is about the formula
    g = torch.Generator().manual_seed(seed + 100)
    delta = torch.randn(24, 4, generator=g) * 0.01  # ΔW per group, (out, G)
    return codes, scales, zeros, delta


@_check("Exercise 07.2 · fold_into_zeros")
def check_fold_into_zeros(fn) -> str:
    """fn(scales, zeros, group_delta) -> (new_scales, new_zeros) with scales·(codes − new_zeros) = W̃ + ΔW, codes unchanged."""
    from ..qalora import dequantize_int4

    for seed in range(3):
        codes, scales, zeros, delta = _int4_layer(seed)
        want = dequantize_int4(codes, scales, zeros) + delta.repeat_interleave(16, dim=1)  # W̃ + ΔW, (24, 64)
        out = _call(fn, scales.clone(), zeros.clone(), delta.clone())
        assert isinstance(out, (tuple, list)) and len(out) == 2, _("return the pair (new_scales, new_zeros).")
        new_scales, new_zeros = out
        _is_tensor(new_scales, "new_scales"), _is_tensor(new_zeros, "new_zeros")
        new_scales, new_zeros = _float_result(new_scales, "new_scales"), _float_result(new_zeros, "new_zeros")
        assert new_scales.shape == scales.shape and new_zeros.shape == zeros.shape, _(
            "scales and zeros are (out, G) = {shape}; got {got_scales} and {got_zeros}.").format(
            shape=tuple(scales.shape), got_scales=tuple(new_scales.shape), got_zeros=tuple(new_zeros.shape))
        if torch.allclose(new_zeros, scales) and not torch.allclose(new_scales, scales):
            raise AssertionError(_("your pair comes back in the other order: its second tensor holds the scales you "
                                   "were given. Return (new_scales, new_zeros), scales first, as the arguments come."))
        if not torch.allclose(new_scales, scales):
            raise AssertionError(_("you changed the scales. A scale multiplies (q − zero), so changing it moves each "
                                   "weight in proportion to its code q — not by the same ΔW across the group. A shift "
                                   "shared by the whole group belongs in the zero point; leave the scales as they are."))
        got = dequantize_int4(codes, new_scales, new_zeros)
        if torch.allclose(got, dequantize_int4(codes, scales, zeros + delta / scales), atol=1e-6) \
                and not torch.allclose(got, want, atol=1e-6):
            raise AssertionError(_("wrong sign: W = scale·(q − zero), so raising the weights means LOWERING the zero "
                                   "point."))
        if torch.allclose(new_zeros, zeros - delta, atol=1e-6) or torch.allclose(new_zeros, zeros + delta, atol=1e-6):
            raise AssertionError(_("zero points count in code steps, not in weight units: one step of the code is "
                                   "worth `scale` in the weight, so convert ΔW into code steps first."))
        assert torch.allclose(got, want, atol=1e-6), _("scales·(codes − new_zeros) should equal the old weight plus "
                                                       "ΔW; it is off by {diff:.2e}.").format(
            diff=float((got - want).abs().max()))
    return _("the codes never change: the merged model is still INT4, with one zero point moved per group. That is "
             "QA-LoRA's merge, exact up to the rounding of the stored zero points.")


# ----------------------------------------------------------------------------- DoRA


@_check("Exercise 07.3 · dora_magnitude")
def check_dora_magnitude(fn) -> str:
    """fn(weight, lora_A, lora_B, scaling) -> DoRA's m at init: the norm of each output's row of W0 + s·B·A, (out,)."""
    from ..dora import DoRALinear

    for seed, (out_f, in_f, r) in enumerate([(12, 20, 2), (40, 16, 4), (8, 8, 1)]):
        w = _weight(seed, out_f, in_f)
        g = torch.Generator().manual_seed(seed + 7)
        a, b = torch.randn(r, in_f, generator=g) * 0.1, torch.randn(out_f, r, generator=g) * 0.1
        scaling = 2.0
        dora = DoRALinear(_linear(w), r, lora_alpha=scaling * r)
        with torch.no_grad():
            dora.lora_A.weight.copy_(a), dora.lora_B.weight.copy_(b)
            want = dora.weight_norm()  # (out,) the kit's DoRA, as PEFT computes it
        got = _call(fn, w.clone(), a.clone(), b.clone(), scaling, explain=_lora_shapes_hint(r, in_f, out_f, weight=True))
        _is_tensor(got, _("dora_magnitude's result"))
        got = _float_result(got, _("dora_magnitude's result"))
        got = got.reshape(-1) if got.numel() == want.numel() else got
        if got.shape == (in_f,) and in_f != out_f:
            raise AssertionError(_("you returned {fin} norms, one per INPUT column; DoRA (and PEFT) keeps one length "
                                   "per OUTPUT feature: one per row of the (out, in) weight, ({fout},) in all."
                                   ).format(fin=in_f, fout=out_f))
        assert got.shape == want.shape, _("m should have shape (out_features,) = ({fout},), got {shape}.").format(
            fout=out_f, shape=tuple(got.shape))
        adapted = w + scaling * b @ a
        if out_f == in_f and torch.allclose(got, torch.linalg.norm(adapted, dim=0), atol=1e-5) \
                and not torch.allclose(got, want, atol=1e-5):
            raise AssertionError(_("those are the column norms: take the norm of each ROW of the (out, in) weight — "
                                   "one length per output feature."))
        if torch.allclose(got, torch.linalg.norm(w, dim=1), atol=1e-5):
            raise AssertionError(_("that is ‖W0‖ alone; the norm is of the adapted weight W0 + scaling·B·A."))
        if torch.allclose(got, torch.linalg.norm(w + b @ a, dim=1), atol=1e-5):
            raise AssertionError(_("ΔW is scaling·B·A: multiply B·A by the scaling before adding it."))
        if torch.allclose(got, want**2, atol=1e-5):
            raise AssertionError(_("that is the squared norm: take the square root (torch.linalg.norm does)."))
        assert torch.allclose(got, want, atol=1e-5), _("m differs from the row lengths of the adapted weight by up to "
                                                       "{diff:.2e}.").format(diff=float((got - want).abs().max()))
    return _("m starts at the length of every output's weight row, so DoRA starts exactly where the base model is.")


# ----------------------------------------------------------------------------- PiSSA


@_check("Exercise 07.4 · pissa_factors")
def check_pissa_factors(fn) -> str:
    """fn(weight, r, scaling) -> (lora_A, lora_B, residual) as PEFT's init_lora_weights="pissa" makes them."""
    from ..lora import LoRALinear
    from ..lowrank import low_rank_approx
    from ..pissa import pissa_init_

    for seed, (out_f, in_f, r, scaling) in enumerate([(16, 24, 3, 2.0), (30, 12, 4, 0.5)]):
        w = _weight(seed, out_f, in_f)
        reference = LoRALinear(_linear(w), r, lora_alpha=scaling * r)
        pissa_init_(reference)  # the kit's PiSSA: A, B and the residual, as PEFT makes them
        want_a, want_b = reference.lora_A.weight.detach(), reference.lora_B.weight.detach()
        out = _call(fn, w.clone(), r, scaling, explain=_lora_shapes_hint(r, in_f, out_f, weight=True))
        assert isinstance(out, (tuple, list)) and len(out) == 3, _("return the triple (lora_A, lora_B, residual).")
        a, b, res = out
        for t, name in ((a, "lora_A"), (b, "lora_B"), (res, "residual")):
            _is_tensor(t, name)
        a, b, res = (_float_result(t, name) for t, name in ((a, "lora_A"), (b, "lora_B"), (res, "residual")))
        if tuple(a.shape) == (out_f, r) and tuple(b.shape) == (r, in_f):
            raise AssertionError(_("lora_A and lora_B are swapped: A is (r, in_features), B is (out_features, r)."))
        assert tuple(a.shape) == (r, in_f), _("lora_A should be (r, in) = ({r}, {fin}), got {shape}.").format(
            r=r, fin=in_f, shape=tuple(a.shape))
        assert tuple(b.shape) == (out_f, r), _("lora_B should be (out, r) = ({fout}, {r}), got {shape}.").format(
            fout=out_f, r=r, shape=tuple(b.shape))
        assert tuple(res.shape) == tuple(w.shape), _("the residual has W0's shape {shape}.").format(shape=tuple(w.shape))
        product, best = scaling * b @ a, low_rank_approx(w, r)
        if torch.allclose(res, w, atol=1e-6):
            raise AssertionError(_("the residual is W0 itself: subtract the adapter's part, or the model counts the "
                                   "principal part twice."))
        if torch.allclose(b @ a, best, atol=1e-5) and scaling != 1:
            raise AssertionError(_("B·A holds the top-{r} part of W0, but the forward multiplies it by scaling = "
                                   "{scaling:g}: divide the singular values by the scaling before splitting them."
                                   ).format(r=r, scaling=scaling))
        if not torch.allclose(product, best, atol=1e-5):
            raise AssertionError(_("scaling·B·A should be the best rank-{r} part of W0 (its {r} LARGEST singular "
                                   "values and vectors), but it is not.").format(r=r))
        assert torch.allclose(res + product, w, atol=1e-5), _("W_res + scaling·B·A should give back W0.")
        if not (torch.allclose(a.abs(), want_a.abs(), atol=1e-5) and torch.allclose(b.abs(), want_b.abs(), atol=1e-5)):
            raise AssertionError(_("the product is right, but PEFT splits √(S_r / scaling) evenly between A and B, "
                                   "a square root on each side. Other splits train differently."))
    return _("the adapter starts with W0's principal part and the frozen base keeps the rest: the same model at "
             "init, but A and B now train the directions that matter most.")
