"""Checks for the exercises of notebook 04 (NF4 from scratch): unpacking 4-bit codes, the NormalFloat codebook for
any number of bits, and the bits NF4 stores per weight."""

from __future__ import annotations

import functools
import math

import torch

from ..i18n import _
from .verdict import _call, _check, _float_result, _is_tensor

__all__ = ["check_unpack_codes", "check_nf_codebook", "check_bits_per_param"]


def _pack(codes: torch.Tensor) -> torch.Tensor:
    """Two codes per byte, the first in the high nibble; an odd count padded with the code of 0.0."""
    from ..nf4 import nf4_codebook

    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_full((1,), int(nf4_codebook().abs().argmin()))])
    return (codes[0::2] << 4) | codes[1::2]


def _uint8_codes(dtype: torch.dtype) -> None:
    """Assert that codes with the right values are uint8, as the exercise asks, naming what their dtype costs."""
    if dtype == torch.uint8:
        return
    if dtype.is_floating_point:
        raise AssertionError(_("the right codes, but as {dtype}: a code is a whole number from 0 to 15 that picks an "
                               "entry of the NF4 table, and a float cannot index a tensor. Keep the codes uint8, as "
                               "the packed bytes are (>> and & on uint8 give uint8).").format(dtype=dtype))
    raise AssertionError(_("the right codes, but as {dtype}, {size} bytes for each 4-bit code where uint8 takes one: "
                           "packing exists to save memory, so keep the codes uint8, as the packed bytes are (>> and & "
                           "on uint8 give uint8). Convert to int64 only at the moment you index the table."
                           ).format(dtype=dtype, size=torch.empty(0, dtype=dtype).element_size()))


@_check("Exercise 04.1 · unpack_codes")
def check_unpack_codes(fn) -> str:
    """fn(packed, n) -> the n 4-bit codes (uint8) stored two per byte, the first in the high nibble."""
    from ..nf4 import nf4_codebook, quantize_nf4

    g = torch.Generator().manual_seed(0)
    cases = [torch.tensor([1, 2, 15, 0], dtype=torch.uint8), torch.tensor([3, 9, 12], dtype=torch.uint8),
             torch.randint(0, 16, (1001,), generator=g, dtype=torch.uint8)]
    for codes in cases:
        n = codes.numel()
        got = _call(fn, _pack(codes), n)
        _is_tensor(got, f"unpack_codes(packed, {n})")
        if got.numel() == n + 1:
            raise AssertionError(_("{n} codes went in, {out} came out: drop the padding code of an odd count."
                                   ).format(n=n, out=got.numel()))
        assert got.numel() == n, _("{n} codes went in, {out} came out.").format(n=n, out=got.numel())
        dtype, got = got.dtype, got.reshape(-1).to(torch.int64)
        pairs = codes.long().view(-1, 2) if n % 2 == 0 else None
        if pairs is not None and torch.equal(got, pairs.flip(1).flatten()):
            raise AssertionError(_("the two nibbles are swapped: the first code of a byte sits in its HIGH nibble "
                                   "(the top 4 bits), the second in the low one."))
        padded = torch.cat([codes.long(), codes.new_zeros(n % 2).long()]).view(-1, 2)  # (bytes, 2): high, low
        for halves in (padded.T, padded.T.flip(0)):  # all high nibbles then all low ones, or the reverse
            if n > 2 and torch.equal(got, halves.flatten()[:n]):
                raise AssertionError(_("your codes come out as all the high nibbles, then all the low ones: the "
                                       "two codes of a byte belong side by side, code 2i in byte i's high nibble and "
                                       "code 2i+1 in its low one. Interleave them (stack the two halves on a new "
                                       "last axis, then flatten) instead of concatenating."))
        wrong = (got != codes.long()).nonzero()
        assert not len(wrong), _("{wrong} of {n} codes came back wrong, the first at position {at} (byte {byte}, "
                                 "{nibble} nibble).").format(
            wrong=len(wrong), n=n, at=int(wrong[0]), byte=int(wrong[0]) // 2,
            nibble=_("high") if int(wrong[0]) % 2 == 0 else _("low"))
        _uint8_codes(dtype)
    w = torch.randn(3, 50, generator=g)  # and bytes written by the quantizer itself
    q = quantize_nf4(w, double_quant=False)
    codes = _call(fn, q.packed, w.numel()).reshape(-1).long()
    blocks = torch.nn.functional.pad(nf4_codebook()[codes], (0, 192 - 150)).view(-1, 64) * q.absmax[:, None]
    assert torch.allclose(blocks.flatten()[:150].view(3, 50), q.dequantize(), atol=1e-6), \
        _("the codes don't reproduce the quantized matrix.")
    return _("bytes → codes → table[code] × absmax: the whole dequantization path, by hand.")


@_check("Exercise 04.2 · normal_float_codebook")
def check_nf_codebook(fn) -> str:
    """fn(bits) -> the 2**bits NormalFloat values, sorted, in [-1, 1], with an exact zero."""
    from ..nf4 import normal_float_codebook

    for bits in (4, 3, 2, 5):
        got = _call(fn, bits)
        _is_tensor(got, f"normal_float_codebook({bits})")
        got = _float_result(got.reshape(-1), f"normal_float_codebook({bits})")
        size, half = 2**bits, 2 ** (bits - 1)
        if got.numel() == size + 1 and int((got == 0).sum()) == 2:
            raise AssertionError(_("{bits} bits give {size} values; yours has {count}, with 0.0 twice: each side's "
                                   "quantiles end at probability 0.5, which is 0, so keep one zero for both sides."
                                   ).format(bits=bits, size=size, count=got.numel()))
        if got.numel() == size and int((got == 0).sum()) >= 2:
            raise AssertionError(_("{bits} bits: 0.0 appears {zeros} times among your {size} values, a code wasted on "
                                   "a repeat for each extra zero. Each side's quantiles end at probability 0.5, which "
                                   "is 0: keep one zero for both sides, {half} positive values and {less} negative ones."
                                   ).format(bits=bits, size=size, zeros=int((got == 0).sum()), half=half, less=half - 1))
        assert got.numel() == size, _("{bits} bits give {size} values, you returned {count}.").format(
            bits=bits, size=size, count=got.numel())
        assert torch.all(got[1:] > got[:-1]), _("normal_float_codebook({bits}) should be sorted, smallest first."
                                                ).format(bits=bits)
        gaps = got[1:] - got[:-1]
        if float(gaps.max() / gaps.min()) < 1.5:
            raise AssertionError(_("normal_float_codebook({bits}): your values are (nearly) evenly spaced, a grid "
                                   "like int4's. NormalFloat places them at quantiles of a normal distribution, the "
                                   "points that cut it into equal probabilities: they crowd near 0, where most "
                                   "weights are, and spread out toward ±1, so each code is used about equally "
                                   "often.").format(bits=bits))
        assert (got == 0).any(), _("normal_float_codebook({bits}) has no exact 0.0: add it (zeros must stay zeros)."
                                   ).format(bits=bits)
        assert got[0] == -1 and got[-1] == 1, _("scale the values into [-1, 1]: got {low:.4f} … {high:.4f}.").format(
            low=float(got[0]), high=float(got[-1]))
        npos, nneg = int((got > 0).sum()), int((got < 0).sum())
        assert (npos, nneg) == (half, half - 1), _(
            "{bits} bits: {npos} positive and {nneg} negative values; with zero taking one code, NormalFloat keeps "
            "{half} positive and {less} negative ones.").format(bits=bits, npos=npos, nneg=nneg, half=half, less=half - 1)
        off = ((got - normal_float_codebook(bits)).abs() > 1e-6).nonzero()
        if len(off):
            side = _("positive") if got[int(off[0])] > 0 else _("negative")
            raise AssertionError(_(
                "normal_float_codebook({bits}): {count} of the {size} values are not NormalFloat's, the first at index "
                "{at} (a {side} one). Check the offset (the probability of the outermost value), that each side has "
                "its own evenly spaced probabilities from the offset to 0.5, and that all values are divided by the "
                "largest one.").format(bits=bits, count=len(off), size=size, at=int(off[0]), side=side))
    return _("at 4 bits it is bitsandbytes' NF4 table; the same recipe gives NF2, NF3, NF5.")


@functools.lru_cache(maxsize=None)
def _stored_bits(blocksize: int, double_quant: bool) -> float:
    """Bits per weight in the bytes the kit's quantizer writes, per-tensor constants aside.

    Quantizing 2·N weights costs N weights' worth more bytes than quantizing N (N a whole number of
    256-block groups): that difference is what each weight adds, the one-off fp32 offset excluded.
    """
    from ..nf4 import DQ_BLOCKSIZE, quantize_nf4

    n = blocksize * DQ_BLOCKSIZE
    one, two = (quantize_nf4(torch.zeros(k * n), blocksize, double_quant).nbytes for k in (1, 2))
    return 8 * (two - one) / n


@_check("Exercise 04.3 · bits_per_param")
def check_bits_per_param(fn) -> str:
    """fn(blocksize, double_quant) -> bits stored per weight: the 4-bit code plus its share of the block constants."""
    from ..nf4 import quantize_nf4

    for blocksize, dq in [(64, False), (64, True), (256, False), (32, True), (4096, False), (4096, True)]:
        got = _call(fn, blocksize, dq)
        assert isinstance(got, (int, float)), _("return a number, got {kind}.").format(kind=type(got).__name__)
        if not dq and math.isclose(got, 4 + 16 / blocksize):
            raise AssertionError(_("the block absmax is stored in fp32, 32 bits, not 16."))
        if dq and math.isclose(got, 4 + 8 / blocksize):
            raise AssertionError(_("almost: the 8-bit absmax codes need their own fp32 scale, one per 256 blocks, and "
                                   "each weight carries its share of it too."))
        if dq and math.isclose(got, 4 + 32 / blocksize):
            raise AssertionError(_("with double quantization each block's absmax is an 8-bit code, not 32-bit."))
        want = _stored_bits(blocksize, dq)
        if math.isclose(got, want / 8, rel_tol=1e-6):
            raise AssertionError(_("blocksize={blocksize}, double_quant={dq}: {got:.6g} is bytes per weight; the "
                                   "exercise asks bits, 8 per byte ({bits:.6g}). Bits per weight is the figure the "
                                   "QLoRA paper gives, and NF4's 4-bit code already counts in bits.").format(
                blocksize=blocksize, dq=dq, got=got, bits=want))
        if math.isclose(got, 4 + (want - 4) / 8, rel_tol=1e-6):
            raise AssertionError(_("blocksize={blocksize}, double_quant={dq}: you counted the code in bits (4) but the "
                                   "block constants in bytes. Count them in bits too: an fp32 absmax is 32 bits, an "
                                   "8-bit code 8.").format(blocksize=blocksize, dq=dq))
        assert math.isclose(got, want, rel_tol=1e-6), _(
            "blocksize={blocksize}, double_quant={dq}: you said {got:.6g} bits, but that is not what the quantizer "
            "stores per weight. Count the 4-bit code, then each block constant divided among the weights it serves."
        ).format(blocksize=blocksize, dq=dq, got=got)
    q = quantize_nf4(torch.zeros(4096 * 256), 64, True)  # the real bytes also hold one fp32 offset per tensor
    assert math.isclose(q.bits_per_param, _call(fn, 64, True), rel_tol=1e-4), _(
        "your figure for blocksize=64 with double quantization is off from the real bytes by more than 0.01 %.")
    return _("{plain:g} bits per weight without double quantization, {dq:.3f} with it, as the QLoRA paper counts and "
             "the bytes confirm.").format(plain=_stored_bits(64, False), dq=_stored_bits(64, True))
