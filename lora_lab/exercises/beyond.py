"""Checks for the exercises of notebook 07 (beyond plain LoRA: QA-LoRA, DoRA, PiSSA, LoftQ).

Same pattern as the other notebooks' checks: a stub still raising NotImplementedError gets "not done
yet", a right answer "correct", a wrong one an AssertionError that says what to look at.
"""

from __future__ import annotations

import torch

from .concepts import _call, _check, _is_tensor

__all__ = ["check_pool_groups", "check_fold_into_zeros", "check_dora_magnitude", "check_pissa_factors"]


def _weight(seed: int, out_features: int, in_features: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_features, in_features, generator=g) * 0.05


# ----------------------------------------------------------------------------- QA-LoRA


@_check("Exercise 07.1 · pool_groups")
def check_pool_groups(fn) -> str:
    """fn(x, group_size) -> the mean of each group of group_size neighbouring features: (..., in / group_size)."""
    for shape, gs in [((3, 12), 4), ((2, 5, 32), 8), ((4, 64), 64), ((6,), 2)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) + gs))
        want = x.unflatten(-1, (-1, gs)).mean(-1)
        got = _call(fn, x.clone(), gs)
        _is_tensor(got, f"pool_groups(x of shape {shape}, {gs})")
        if got.shape != want.shape and got.shape == (*shape[:-1], gs):
            raise AssertionError(f"for in_features={shape[-1]} and group_size={gs} you returned {gs} values per row: "
                                 f"that is one per position inside a group. QA-LoRA keeps one per group, "
                                 f"in_features / group_size = {shape[-1] // gs}.")
        assert got.shape == want.shape, (f"pool_groups(x of shape {shape}, {gs}) should have shape "
                                         f"{tuple(want.shape)} (one value per group, on the last axis), got {tuple(got.shape)}.")
        strided = x.unflatten(-1, (gs, -1)).mean(-2)  # groups of every (in/gs)-th feature
        if gs < shape[-1] and torch.allclose(got, strided, atol=1e-6) and not torch.allclose(strided, want):
            raise AssertionError("your groups take every G-th feature (x.view(..., group_size, G)); a quantization "
                                 "group is group_size NEIGHBOURING columns: x.view(..., G, group_size), then average the last axis.")
        if torch.allclose(got, want * gs, atol=1e-5) and gs > 1:
            raise AssertionError(f"that is the sum of each group ({gs} × the mean); average it: divide by group_size.")
        assert torch.allclose(got, want, atol=1e-6), "some group means are wrong: average each block of group_size " \
                                                     "neighbouring features along the last axis."
    return ("one number per group: A then has in_features / group_size columns, so B·A is the same for every "
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
        assert isinstance(out, (tuple, list)) and len(out) == 2, "return the pair (new_scales, new_zeros)."
        new_scales, new_zeros = out
        _is_tensor(new_scales, "new_scales"), _is_tensor(new_zeros, "new_zeros")
        assert new_scales.shape == scales.shape and new_zeros.shape == zeros.shape, (
            f"scales and zeros are (out, G) = {tuple(scales.shape)}; got {tuple(new_scales.shape)} and "
            f"{tuple(new_zeros.shape)}.")
        if not torch.allclose(new_scales, scales):
            raise AssertionError("you changed the scales. A scale multiplies (q − zero), so changing it moves each "
                                 "weight in proportion to its code q — not by the same ΔW across the group. A shift "
                                 "shared by the whole group belongs in the zero point; leave the scales as they are.")
        got = dequantize_int4(codes, new_scales, new_zeros)
        if torch.allclose(got, dequantize_int4(codes, scales, zeros + delta / scales), atol=1e-6) \
                and not torch.allclose(got, want, atol=1e-6):
            raise AssertionError("wrong sign: W = scale·(q − zero), so raising the weight by ΔW means LOWERING the "
                                 "zero point: new_zeros = zeros − ΔW / scales.")
        if torch.allclose(new_zeros, zeros - delta, atol=1e-6) or torch.allclose(new_zeros, zeros + delta, atol=1e-6):
            raise AssertionError("zero points count in code steps, not in weight units: divide ΔW by the scale "
                                 "(new_zeros = zeros − ΔW / scales).")
        assert torch.allclose(got, want, atol=1e-6), ("scales·(codes − new_zeros) should equal the old weight plus "
                                                      f"ΔW; it is off by {(got - want).abs().max():.2e}.")
    return ("the codes never change: the merged model is still INT4, one zero point per group moved by ΔW / scale. "
            "That is QA-LoRA's merge, exact up to the rounding of the stored zero points.")


# ----------------------------------------------------------------------------- DoRA


@_check("Exercise 07.3 · dora_magnitude")
def check_dora_magnitude(fn) -> str:
    """fn(weight, lora_A, lora_B, scaling) -> DoRA's m at init: the norm of each output's row of W0 + s·B·A, (out,)."""
    for seed, (out_f, in_f, r) in enumerate([(12, 20, 2), (40, 16, 4), (8, 8, 1)]):
        w = _weight(seed, out_f, in_f)
        g = torch.Generator().manual_seed(seed + 7)
        a, b = torch.randn(r, in_f, generator=g) * 0.1, torch.randn(out_f, r, generator=g) * 0.1
        scaling = 2.0
        adapted = w + scaling * b @ a
        want = torch.linalg.norm(adapted, dim=1)
        got = _call(fn, w.clone(), a.clone(), b.clone(), scaling)
        _is_tensor(got, "dora_magnitude's result")
        got = got.reshape(-1) if got.numel() == want.numel() else got
        if got.shape == (in_f,) and in_f != out_f:
            raise AssertionError(f"you returned {in_f} norms, one per INPUT column; DoRA (and PEFT) keeps one length "
                                 f"per OUTPUT feature: the norm of each row of the (out, in) weight, dim=1 → ({out_f},).")
        assert got.shape == want.shape, f"m should have shape (out_features,) = ({out_f},), got {tuple(got.shape)}."
        if out_f == in_f and torch.allclose(got, torch.linalg.norm(adapted, dim=0), atol=1e-5) \
                and not torch.allclose(got, want, atol=1e-5):
            raise AssertionError("those are the column norms (dim=0): take the norm of each ROW of the (out, in) "
                                 "weight, dim=1 — one length per output feature.")
        if torch.allclose(got, torch.linalg.norm(w, dim=1), atol=1e-5):
            raise AssertionError("that is ‖W0‖ alone; the norm is of the adapted weight W0 + scaling·B·A.")
        if torch.allclose(got, torch.linalg.norm(w + b @ a, dim=1), atol=1e-5):
            raise AssertionError("ΔW is scaling·B·A: multiply B·A by the scaling before adding it.")
        if torch.allclose(got, want**2, atol=1e-5):
            raise AssertionError("that is the squared norm: take the square root (torch.linalg.norm does).")
        assert torch.allclose(got, want, atol=1e-5), "m should be ‖W0 + scaling·B·A‖ over each row (dim=1)."
    return "m starts at the length of every output's weight row, so DoRA starts exactly where the base model is."


# ----------------------------------------------------------------------------- PiSSA


@_check("Exercise 07.4 · pissa_factors")
def check_pissa_factors(fn) -> str:
    """fn(weight, r, scaling) -> (lora_A, lora_B, residual) as PEFT's init_lora_weights="pissa" makes them."""
    for seed, (out_f, in_f, r, scaling) in enumerate([(16, 24, 3, 2.0), (30, 12, 4, 0.5)]):
        w = _weight(seed, out_f, in_f)
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        root = torch.sqrt(S[:r] / scaling)
        want_a, want_b = root[:, None] * Vh[:r], U[:, :r] * root
        out = _call(fn, w.clone(), r, scaling)
        assert isinstance(out, (tuple, list)) and len(out) == 3, "return the triple (lora_A, lora_B, residual)."
        a, b, res = out
        for t, name in ((a, "lora_A"), (b, "lora_B"), (res, "residual")):
            _is_tensor(t, name)
        if tuple(a.shape) == (out_f, r) and tuple(b.shape) == (r, in_f):
            raise AssertionError("lora_A and lora_B are swapped: A is (r, in_features), B is (out_features, r).")
        assert tuple(a.shape) == (r, in_f), f"lora_A should be (r, in) = ({r}, {in_f}), got {tuple(a.shape)}."
        assert tuple(b.shape) == (out_f, r), f"lora_B should be (out, r) = ({out_f}, {r}), got {tuple(b.shape)}."
        assert tuple(res.shape) == tuple(w.shape), f"the residual has W0's shape {tuple(w.shape)}."
        product = scaling * b @ a
        if torch.allclose(res, w, atol=1e-6):
            raise AssertionError("the residual is W0 itself: subtract the adapter's part, W_res = W0 − scaling·B·A, "
                                 "or the model counts the principal part twice.")
        if torch.allclose(b @ a, U[:, :r] * S[:r] @ Vh[:r], atol=1e-5) and scaling != 1:
            raise AssertionError(f"B·A holds the top-{r} part of W0, but the forward multiplies it by scaling = "
                                 f"{scaling:g}: divide the singular values by the scaling first (S_r / scaling).")
        best = U[:, :r] * S[:r] @ Vh[:r]
        if not torch.allclose(product, best, atol=1e-5):
            raise AssertionError(f"scaling·B·A should be the best rank-{r} part of W0 (its {r} LARGEST singular "
                                 "values and vectors), but it is not.")
        assert torch.allclose(res + product, w, atol=1e-5), "W_res + scaling·B·A should give back W0."
        if not (torch.allclose(a.abs(), want_a.abs(), atol=1e-5) and torch.allclose(b.abs(), want_b.abs(), atol=1e-5)):
            raise AssertionError("the product is right, but PEFT splits √(S_r / scaling) evenly: "
                                 "A = diag(√(S_r/s))·Vh_r and B = U_r·diag(√(S_r/s)). Other splits train differently.")
    return ("the adapter starts with W0's principal part and the frozen base keeps the rest: the same model at "
            "init, but A and B now train the directions that matter most.")
