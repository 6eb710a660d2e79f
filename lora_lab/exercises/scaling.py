"""Checks for the exercises of notebook 08 (beyond one GPU: fully sharded data parallelism over a 4-bit base).

Same pattern as the other notebooks' checks: a stub still raising NotImplementedError gets "not done
yet", a right answer "correct", a wrong one an AssertionError that says what to look at. The references
are PyTorch's own splitting rule (torch.chunk, which FSDP2 uses), the kit's memory estimate and its NF4
dequantization.
"""

from __future__ import annotations

import numbers

import torch

from ..i18n import _
from .verdict import _call, _check, _float_result, _is_tensor, _whole_bytes

__all__ = ["check_shard_bytes", "check_fsdp_parts", "check_dequantize_shard"]


# ----------------------------------------------------------------------------- 08.1 how FSDP splits a parameter


@_check("Exercise 08.1 · shard_bytes")
def check_shard_bytes(fn) -> str:
    """fn(shape, element_size, world_size, rank) -> bytes of that parameter FSDP2 gives process `rank`."""
    # (5,) over 4: ceil(5 / 4) = 2 rows each, so the first three processes hold all 5 rows and the fourth none
    cases = [((1536, 192), 4, 2), ((16, 192), 4, 3), ((5, 8), 2, 2), ((3, 4), 4, 4), ((18432,), 1, 4), ((5,), 4, 4)]
    for shape, size, world in cases:
        rows, row_bytes = shape[0], size * (torch.Size(shape).numel() // shape[0])
        chunks = torch.empty(rows, 0).chunk(world)  # FSDP2's split of the first dimension
        for rank in range(world):
            want = (chunks[rank].shape[0] if rank < len(chunks) else 0) * row_bytes
            got = _call(fn, shape, size, world, rank)
            assert isinstance(got, numbers.Real) and not isinstance(got, bool), _(
                "return a whole number of bytes (an int), got {kind}.").format(kind=type(got).__name__)
            if got < 0:
                raise AssertionError(_("shape {shape} over {world} processes: you gave process {rank} {got:,} bytes, "
                                       "less than nothing. With ceil(rows / world_size) = {per} rows each, the first "
                                       "processes already hold all {rows} rows, so the last ones hold none (torch.chunk "
                                       "then returns fewer than world_size pieces): a share never goes below 0."
                                       ).format(shape=tuple(shape), world=world, rank=rank, got=got,
                                                per=chunks[0].shape[0], rows=rows))
            if got != want and got == torch.Size(shape).numel() * size // world and rows % world:
                raise AssertionError(_("shape {shape} over {world} processes: you split the bytes evenly, but FSDP "
                                       "splits the first dimension into whole rows, ceil(rows / world_size) per "
                                       "process, so the last process holds fewer (or none).").format(
                    shape=tuple(shape), world=world))
            if got != want and got == rows // world * row_bytes and rows % world:
                raise AssertionError(_("shape {shape} over {world} processes: rows / world_size rounded down leaves "
                                       "rows that no process holds; FSDP gives the first processes ceil(rows / "
                                       "world_size) rows each and the last what remains.").format(
                    shape=tuple(shape), world=world))
            assert got == want, _("shape {shape}, {size} bytes per element, world size {world}, rank {rank}: you "
                                  "returned {got:,} bytes, which is not process {rank}'s share of the rows.").format(
                shape=tuple(shape), size=size, world=world, rank=rank, got=got)
            _whole_bytes(got, f"shard_bytes({tuple(shape)}, {size}, {world}, {rank})")
    return _("FSDP cuts every parameter along its first dimension: whole rows, ceil(rows / N) per process. When N "
             "divides the rows, every process holds exactly 1/N.")


# ----------------------------------------------------------------------------- 08.2 what FSDP shards and what it leaves


def _tiny_estimate(num_processes: int = 1, sharding: str = "none"):
    from transformers import AutoConfig

    from ..memory import LLAMA_PROJECTIONS, estimate_memory
    from ..paths import EMBEDDED_MODEL

    return estimate_memory(AutoConfig.from_pretrained(EMBEDDED_MODEL), lora={"r": 16, "target_modules": LLAMA_PROJECTIONS},
                           batch_size=4, seq_len=64, optimizer="adamw_torch", compute_dtype="float32",
                           num_processes=num_processes, sharding=sharding)


@_check("Exercise 08.2 · fsdp_parts")
def check_fsdp_parts(fn) -> str:
    """fn(parts, num_processes) -> each part's bytes per device under FSDP with bitsandbytes' 4-bit layers."""
    one = _tiny_estimate()
    parts = {p: getattr(one, p) for p in one.PARTS}
    for n in (2, 4):
        fsdp = _tiny_estimate(n, "fsdp")
        got = _call(fn, dict(parts), n)
        assert isinstance(got, dict) and set(got) == set(parts), _(
            "return a dict with the same parts as the one you were given: {parts}.").format(parts=", ".join(parts))
        for part in one.PARTS:
            want = getattr(fsdp, part)
            if got[part] == want:
                _whole_bytes(got[part], part)
                continue
            if part == "activations":
                raise AssertionError(_("activations are not divided: each process runs its own micro-batch and keeps "
                                       "its own activations, as many as one process alone."))
            if part == "quant_constants":
                raise AssertionError(_("quant_constants: bitsandbytes keeps the block scales in a QuantState beside the "
                                       "weight, not in a parameter; FSDP splits only parameters, so every process "
                                       "holds all of them."))
            if got[part] == parts[part]:
                raise AssertionError(_("{part} is as one process holds it: that is data parallelism (DDP), where "
                                       "every process keeps everything. FSDP gives each process 1/N of it.").format(
                    part=part))
            raise AssertionError(_("{part} over {n} processes: you returned {got:,} bytes; FSDP gives each process "
                                   "1/N of it.").format(part=part, n=n, got=got[part]))
    return _("FSDP divides the weights, LoRA weights, gradients and optimizer state; each process still keeps its own "
             "activations, and with bitsandbytes all the block scales.")


# ----------------------------------------------------------------------------- 08.3 whole blocks with their scales


def _shard_case(seed: int, out_features: int, in_features: int, world: int):
    from ..nf4 import quantize_nf4

    g = torch.Generator().manual_seed(seed)
    q = quantize_nf4(torch.randn(out_features, in_features, generator=g), blocksize=64, double_quant=False)
    blocks = q.absmax.numel()
    rows = q.packed.view(blocks, 32)  # (blocks, 32 bytes): 64 codes per block, two per byte
    return q, rows.chunk(world), q.absmax.chunk(world)


def _kit_dequantize(rows: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The kit's NF4 dequantization of whole blocks: rows (blocks, 32) uint8, scales (blocks,) -> (blocks, 64)."""
    from ..nf4 import NF4Tensor

    n = rows.shape[0]
    return NF4Tensor(rows.reshape(-1), scales, 64, torch.Size((n, 64)), torch.float32).dequantize()


@_check("Exercise 08.3 · dequantize_shard")
def check_dequantize_shard(fn) -> str:
    """fn(codes, absmax) -> a process's shard dequantized alone: codes (blocks, 32) uint8, absmax (blocks,) -> (blocks, 64)."""
    for seed, (out_f, in_f, world) in enumerate([(64, 128, 2), (96, 64, 3), (32, 256, 4)]):
        q, rows, scales = _shard_case(seed, out_f, in_f, world)
        full = q.dequantize(torch.float32).reshape(-1, 64)  # (blocks, 64): the whole weight, block by block
        start = 0
        for rank in range(world):
            n = rows[rank].shape[0]
            want = full[start:start + n]
            got = _call(fn, rows[rank].clone(), scales[rank].clone())
            _is_tensor(got, _("dequantize_shard's result"))
            assert got.shape == want.shape, _("a shard of {n} blocks dequantizes to ({n}, 64), got {shape}.").format(
                n=n, shape=tuple(got.shape))
            got = _float_result(got, _("dequantize_shard's result"), float32_only=True)
            if rank and torch.allclose(got, full[:n], atol=1e-6) and not torch.allclose(want, full[:n]):
                raise AssertionError(_("these are the first process's values: use the codes and scales you were "
                                       "given, which are this process's own blocks."))
            if torch.allclose(got, _kit_dequantize(rows[rank], torch.ones(n)), atol=1e-6):
                raise AssertionError(_("those are the code values in [-1, 1]: multiply each block by its scale, "
                                       "absmax[block]."))
            swapped = (rows[rank] << 4) | (rows[rank] >> 4)  # the two nibbles of every byte exchanged
            if torch.allclose(got, _kit_dequantize(swapped, scales[rank]), atol=1e-6):
                raise AssertionError(_("the two codes of each byte are swapped: the first code is in the high nibble "
                                       "(byte >> 4), the second in the low one (byte & 15)."))
            assert torch.allclose(got, want, atol=1e-6), _("process {rank}'s blocks differ from the same blocks of the "
                                                          "whole dequantized weight by up to {diff:.2e}.").format(
                rank=rank, diff=float((got - want).abs().max()))
            start += n
    return _("each process can dequantize its own blocks without the others: its codes and their scales travel "
             "together. FSDP still gathers whole layers for the matmul, but nothing is ever cut in half.")
