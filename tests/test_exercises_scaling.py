"""lora_lab.exercises.scaling (notebook 08): each check accepts a right answer and says "not done yet" to a stub.

The wrong answers and what each check says of them are in the catalogue, tests/wrong_answers.py."""

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
