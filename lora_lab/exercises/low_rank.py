"""Checks for the exercises of notebook 01 (low-rank intuition): a rank-r matrix, LoRA factors from an SVD, the
largest rank worth using."""

from __future__ import annotations

import math

import torch

from ..i18n import _
from .verdict import _call, _check, _is_shape_error, _is_tensor

__all__ = ["check_rank_r_matrix", "check_lora_factors", "check_max_useful_rank"]


def _factor_hint(error: BaseException) -> str | None:
    """An `explain` for _call: a matmul whose inner sizes differ, told in d, r, k."""
    if _is_shape_error(error):
        return _("A (d × r) matrix times an (r × k) one: the inner sizes must both be r, and the result is d × k.")
    return None


@_check("Exercise 01.1 · rank_r_matrix")
def check_rank_r_matrix(fn) -> str:
    """fn(d, k, r) -> a random d × k matrix of rank exactly r."""
    for d, k, r in [(6, 5, 3), (40, 30, 1), (50, 64, 7), (12, 12, 12)]:
        torch.manual_seed(d * 100 + r)
        m = _call(fn, d, k, r, explain=_factor_hint)
        _is_tensor(m, f"rank_r_matrix({d}, {k}, {r})")
        assert tuple(m.shape) == (d, k), _("rank_r_matrix({d}, {k}, {r}) has shape {shape}; a d × k matrix is ({d}, {k})."
                                           ).format(d=d, k=k, r=r, shape=tuple(m.shape))
        got = int(torch.linalg.matrix_rank(m.float()))  # fp32 tolerance: rounding noise is not rank
        if got > r:
            hint = _("multiply a random d × r matrix by a random r × k one (or add r outer products u·vᵀ)")
        else:
            hint = _("use r independent random directions: repeated or zero columns lower the rank")
        assert got == r, _("rank_r_matrix({d}, {k}, {r}) has rank {got}, not r = {r}: {hint}.").format(
            d=d, k=k, r=r, got=got, hint=hint)
        assert m.abs().sum() > 0, _("the matrix is all zeros.")
    return _("a d × r matrix times an r × k matrix has rank r (and no more): that is the shape of LoRA's B·A.")


@_check("Exercise 01.2 · lora_factors")
def check_lora_factors(fn) -> str:
    """fn(delta, r) -> (B, A) with B (d × r), A (r × k) and B @ A the best rank-r approximation of delta."""
    from ..lowrank import low_rank_approx

    for d, k, r in [(24, 16, 4), (16, 40, 1), (32, 32, 8)]:
        g = torch.Generator().manual_seed(d + k + r)
        delta = torch.randn(d, 3, generator=g) @ torch.randn(3, k, generator=g) + 0.3 * torch.randn(d, k, generator=g)
        out = _call(fn, delta.clone(), r)
        assert isinstance(out, (tuple, list)) and len(out) == 2, _("return the pair (B, A).")
        b, a = out
        _is_tensor(b, "B"), _is_tensor(a, "A")
        if tuple(b.shape) == (r, k) and tuple(a.shape) == (d, r):
            raise AssertionError(_("B and A are swapped: return (B, A) with B of shape (d, r) and A of shape (r, k)."))
        assert tuple(b.shape) == (d, r), _("B should be (d, r) = ({d}, {r}), got {shape}.").format(
            d=d, r=r, shape=tuple(b.shape))
        assert tuple(a.shape) == (r, k), _("A should be (r, k) = ({r}, {k}), got {shape}.").format(
            r=r, k=k, shape=tuple(a.shape))
        best = low_rank_approx(delta, r)
        err, best_err = float((delta - b @ a).norm()), float((delta - best).norm())
        if not math.isclose(err, best_err, rel_tol=1e-4, abs_tol=1e-5):
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            if torch.allclose(b @ a, u[:, :r] @ vh[:r], atol=1e-4):
                hint = _("the singular values are missing from the product: the r largest belong in B or A (or split "
                         "between them)")
            else:
                hint = _("keep the r LARGEST singular values and their singular vectors")
            raise AssertionError(_("for r={r}, ‖delta − B·A‖ = {err:.4f}, but the best rank-{r} approximation "
                                   "leaves {best:.4f}: {hint}.").format(r=r, err=err, best=best_err, hint=hint))
    return _("B·A is the best rank-r approximation: this turns any full fine-tuning update into a LoRA adapter "
             "(and, applied to W itself, is how PiSSA initialises LoRA).")


@_check("Exercise 01.3 · max_useful_rank")
def check_max_useful_rank(fn) -> str:
    """fn(d, k) -> the largest r with d·r + r·k < d·k."""
    for d, k in [(192, 192), (512, 192), (4096, 4096), (4096, 11008), (3, 5)]:
        got = _call(fn, d, k)
        assert isinstance(got, int) and not isinstance(got, bool), _("return an int, got {kind}.").format(
            kind=type(got).__name__)
        cost, full = d * got + got * k, d * k
        if got == min(d, k):
            raise AssertionError(_("for a {d} × {k} matrix, r = min(d, k) = {got} gives factors of {cost:,} numbers, "
                                   "more than the matrix's {full:,}.").format(d=d, k=k, got=got, cost=cost, full=full))
        assert cost < full, _("for a {d} × {k} matrix, r = {got} costs {cost:,} numbers, not fewer than {full:,}."
                              ).format(d=d, k=k, got=got, cost=cost, full=full)
        nxt = d * (got + 1) + (got + 1) * k
        assert nxt >= full, _("for a {d} × {k} matrix, r = {more} still costs less ({cost:,} < {full:,}): go higher."
                              ).format(d=d, k=k, more=got + 1, cost=nxt, full=full)
    square = _call(fn, 4096, 4096)
    return _("LoRA's factors cost less than a 4096 × 4096 matrix up to r = {square}; LoRA uses r = 8 or 64 there, "
             "far below.").format(square=square)
