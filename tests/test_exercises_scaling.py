"""lora_lab.exercises.scaling (notebook 08): each check accepts a right answer, says "not done yet" to a stub,
and rejects known-wrong answers with a message that names the mistake."""

import pytest
import torch

from lora_lab.exercises import scaling
from lora_lab.nf4 import nf4_codebook, unpack_4bit


def stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- right answers (as in the solutions notebook)

def shard_bytes(shape, element_size, world_size, rank):
    row_bytes = element_size * torch.Size(shape[1:]).numel()
    per_process = -(-shape[0] // world_size)  # ceil
    rows = min(per_process, max(0, shape[0] - rank * per_process))
    return rows * row_bytes


def fsdp_parts(parts, num_processes):
    kept_whole = ("quant_constants", "activations")
    return {k: v if k in kept_whole else v // num_processes for k, v in parts.items()}


def dequantize_shard(codes, absmax):
    blocks = codes.shape[0]
    values = nf4_codebook()[unpack_4bit(codes, blocks * 64).long()].view(blocks, 64)
    return values * absmax.unsqueeze(1)


RIGHT = [(scaling.check_shard_bytes, shard_bytes), (scaling.check_fsdp_parts, fsdp_parts),
         (scaling.check_dequantize_shard, dequantize_shard)]


@pytest.mark.parametrize("check, answer", RIGHT, ids=lambda v: getattr(v, "__name__", ""))
def test_right_answers_pass_and_stubs_are_not_done(check, answer):
    verdict = check(answer)
    assert verdict and verdict.passed is True and "correct" in repr(verdict)
    pending = check(stub)
    assert not pending and pending.passed is None and "NotImplementedError" in pending.message


# ----------------------------------------------------------------------------- wrong answers and what the check says

def _swapped(codes, absmax):
    blocks = codes.shape[0]
    nibbles = torch.stack([codes & 15, codes >> 4], dim=-1).reshape(blocks, 64).long()
    return nf4_codebook()[nibbles] * absmax.unsqueeze(1)


WRONG = [
    (scaling.check_shard_bytes, lambda s, e, w, r: torch.Size(s).numel() * e // w, "you split the bytes evenly"),
    (scaling.check_shard_bytes, lambda s, e, w, r: s[0] // w * e * torch.Size(s[1:]).numel(), "rounded down"),
    (scaling.check_shard_bytes, lambda s, e, w, r: 1.5, "a whole number of bytes"),
    (scaling.check_fsdp_parts, lambda p, n: dict(p), "that is data parallelism (DDP)"),
    (scaling.check_fsdp_parts, lambda p, n: {k: v // n for k, v in p.items()}, "QuantState beside the weight"),
    (scaling.check_fsdp_parts, lambda p, n: {k: v if k == "quant_constants" else v // n for k, v in p.items()},
     "activations are not divided"),
    (scaling.check_fsdp_parts, lambda p, n: {"weights": 1}, "the same parts"),
    (scaling.check_dequantize_shard, lambda c, a: dequantize_shard(c, torch.ones_like(a)), "code values in [-1, 1]"),
    (scaling.check_dequantize_shard, _swapped, "swapped"),
    (scaling.check_dequantize_shard, lambda c, a: dequantize_shard(c, a)[:1], "dequantizes to"),
]


@pytest.mark.parametrize("check, answer, says", WRONG, ids=[w[2][:24] for w in WRONG])
def test_wrong_answers_are_explained(check, answer, says):
    verdict = check(answer)  # a verdict, not an exception: "Run all" goes on to the next exercise
    assert verdict.status == "wrong" and "not yet right" in repr(verdict)
    assert says in verdict.message, verdict.message
