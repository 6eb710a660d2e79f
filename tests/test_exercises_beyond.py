"""lora_lab.exercises.beyond (notebook 07): each check accepts a right answer, says "not done yet" to a stub,
and rejects known-wrong answers with a message that names the mistake."""

import pytest
import torch

from lora_lab.exercises import beyond


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- right answers (as in the solutions notebook)

def pool_groups(x, group_size):
    return x.unflatten(-1, (-1, group_size)).mean(-1)


def fold_into_zeros(scales, zeros, group_delta):
    return scales, zeros - group_delta / scales


def dora_magnitude(weight, lora_A, lora_B, scaling):
    return torch.linalg.norm(weight + scaling * lora_B @ lora_A, dim=1)


def pissa_factors(weight, r, scaling):
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    root = torch.sqrt(S[:r] / scaling)
    lora_A, lora_B = torch.diag(root) @ Vh[:r], U[:, :r] @ torch.diag(root)
    return lora_A, lora_B, weight - scaling * lora_B @ lora_A


RIGHT = [(beyond.check_pool_groups, pool_groups), (beyond.check_fold_into_zeros, fold_into_zeros),
         (beyond.check_dora_magnitude, dora_magnitude), (beyond.check_pissa_factors, pissa_factors)]


@pytest.mark.parametrize("check, answer", RIGHT, ids=lambda v: getattr(v, "__name__", ""))
def test_right_answers_pass_and_stubs_are_not_done(check, answer):
    verdict = check(answer)
    assert verdict and verdict.passed is True and "correct" in repr(verdict)
    pending = check(stub)
    assert not pending and pending.passed is None and "NotImplementedError" in pending.message


# ----------------------------------------------------------------------------- wrong answers and what the check says

WRONG = [
    (beyond.check_pool_groups, lambda x, gs: x.unflatten(-1, (gs, -1)).mean(-2), "NEIGHBOURING"),
    (beyond.check_pool_groups, lambda x, gs: x.unflatten(-1, (-1, gs)).sum(-1), "sum of each group"),
    (beyond.check_pool_groups, lambda x, gs: x.unflatten(-1, (-1, gs)).mean(-2), "one per position inside a group"),
    (beyond.check_fold_into_zeros, lambda s, z, d: (s + d / (7.5 - z), z), "you changed the scales"),
    (beyond.check_fold_into_zeros, lambda s, z, d: (s, z + d / s), "wrong sign"),
    (beyond.check_fold_into_zeros, lambda s, z, d: (s, z - d), "code steps"),
    (beyond.check_dora_magnitude, lambda w, a, b, s: torch.linalg.norm(w + s * b @ a, dim=0), "INPUT column"),
    (beyond.check_dora_magnitude, lambda w, a, b, s: torch.linalg.norm(w, dim=1), "‖W0‖ alone"),
    (beyond.check_dora_magnitude, lambda w, a, b, s: torch.linalg.norm(w + b @ a, dim=1), "multiply B·A by the scaling"),
    (beyond.check_pissa_factors, lambda w, r, s: pissa_factors(w, r, 1.0), "divide the singular values by the scaling"),
    (beyond.check_pissa_factors, lambda w, r, s: (*pissa_factors(w, r, s)[:2], w), "the residual is W0 itself"),
    (beyond.check_pissa_factors, lambda w, r, s: pissa_factors(w, r, s)[1::-1] + (pissa_factors(w, r, s)[2],),
     "swapped"),
]


def _unbalanced(w, r, s):
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    a, b = Vh[:r], U[:, :r] * (S[:r] / s)
    return a, b, w - s * b @ a


def _smallest(w, r, s):
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    root = torch.sqrt(S[-r:] / s)
    a, b = root[:, None] * Vh[-r:], U[:, -r:] * root
    return a, b, w - s * b @ a


WRONG += [(beyond.check_pissa_factors, _unbalanced, "splits √(S_r / scaling) evenly"),
          (beyond.check_pissa_factors, _smallest, "LARGEST singular values")]


@pytest.mark.parametrize("check, answer, says", WRONG, ids=[w[2][:24] for w in WRONG])
def test_wrong_answers_are_explained(check, answer, says):
    verdict = check(answer)  # a verdict, not an exception: "Run all" goes on to the next exercise
    assert verdict.status == "wrong" and "not yet right" in repr(verdict)
    assert says in verdict.message, verdict.message
