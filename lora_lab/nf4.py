"""Blockwise 4-bit NormalFloat (NF4) quantization with double quantization, stored byte for byte as
bitsandbytes stores it (QLoRA, Dettmers et al. 2023, arXiv 2305.14314)."""

import functools
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from bitsandbytes.functional import QuantState

BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # the block sizes bitsandbytes accepts
DQ_BLOCKSIZE = 256  # double quantization: one fp32 scale per 256 block scales
QUANT_TYPES = ("nf4", "fp4", "int4")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# ----------------------------------------------------------------------------- code tables


def normal_float_codebook(bits: int = 4) -> torch.Tensor:
    """The 2**bits NormalFloat values (NF2 … NF8), sorted, in [-1, 1], with an exact zero: (2**bits,) fp32.

    Quantiles of N(0, 1): 2**(bits-1) positive and 2**(bits-1) - 1 negative ones, so that 0 is exactly
    representable, all divided by the largest one (QLoRA, Dettmers et al. 2023, arXiv 2305.14314, §3;
    bitsandbytes' `create_normal_map`). The outermost probability is offset = 1 - ½·(1/(2·(2**bits - 1))
    + 1/(2·2**bits)), not 1 (whose quantile is inf), written to 7 decimals as bitsandbytes writes it
    (0.9677083 at 4 bits). At 4 bits this is bitsandbytes' NF4 table, bit for bit. Raises ValueError
    for bits outside 2..8.
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise ValueError(f"bits={bits!r} is not accepted; give an int from 2 to 8")
    half = 2 ** (bits - 1)
    offset = round(1 - 0.5 * (1 / (2 * (2**bits - 1)) + 1 / (2 * 2**bits)), 7)
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    # probabilities in fp32 (as bitsandbytes' table was made), quantiles in fp64, rounded to fp32
    positive = normal.icdf(torch.linspace(offset, 0.5, half + 1)[:-1].double())  # (half,)
    negative = -normal.icdf(torch.linspace(offset, 0.5, half)[:-1].double())  # (half - 1,)
    values = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float()
    values = values.sort().values  # (2**bits,) index half - 1 is 0.0
    return values / values.max()


def nf4_codebook() -> torch.Tensor:
    """The 16 NF4 values: quantiles of N(0, 1) with an exact zero, scaled into [-1, 1]."""
    return normal_float_codebook(4)  # (16,) index 7 is 0.0


def fp4_codebook() -> torch.Tensor:
    """bitsandbytes' FP4 table (1 sign, 2 exponent, 1 mantissa bit): index bit 3 is the sign."""
    magnitudes = torch.tensor([0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0])  # 0 and 1 subnormal
    return torch.cat([magnitudes, -magnitudes]) / 12.0  # (16,) not sorted


def int4_codebook() -> torch.Tensor:
    """Symmetric int4: 15 evenly spaced levels k/7 for k = -7..7 (the 16th code goes unused)."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7.0  # (15,) index 7 is 0.0


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (arXiv 1511.04561), used to store the block scales."""
    # exponent e = 0..6 covers magnitudes 10^(e-6) * [0.1, 1] with 2^e linear steps:
    # 1 + 2 + ... + 64 = 127 magnitudes, each with both signs, plus 0 and 1.0 = 256 values
    magnitudes = []
    for e in range(7):
        edges = torch.linspace(0.1, 1.0, 2**e + 1)
        magnitudes.append(10.0 ** (e - 6) * (edges[:-1] + edges[1:]) / 2)
    positive = torch.cat(magnitudes)  # (127,)
    return torch.cat([-positive, positive, torch.tensor([0.0, 1.0])]).sort().values  # (256,)


def codebook(quant_type: str = "nf4") -> torch.Tensor:
    """The code table for "nf4", "fp4" or "int4"."""
    tables = {"nf4": nf4_codebook, "fp4": fp4_codebook, "int4": int4_codebook}
    if quant_type not in tables:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    return tables[quant_type]()


@functools.lru_cache(maxsize=None)
def _table(quant_type: str, device: torch.device) -> torch.Tensor:
    """A cached code table ("dynamic" for the 8-bit map of double quantization) on a device."""
    return (dynamic_map() if quant_type == "dynamic" else codebook(quant_type)).to(device)


@functools.lru_cache(maxsize=None)
def _rounding(quant_type: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-value rounding for a table: midpoints between its sorted values, and the sort order."""
    table = _table(quant_type, torch.device("cpu"))
    order = torch.argsort(table, stable=True)
    sorted_table = table[order]
    midpoints = (sorted_table[:-1] + sorted_table[1:]) / 2
    return midpoints.to(device), order.to(torch.uint8).to(device)


@functools.lru_cache(maxsize=None)
def _word_table(quant_type: str, device: torch.device) -> torch.Tensor:
    """The values of the four codes in every 16-bit word of packed bytes: (65536, 4) fp32."""
    # Reading packed bytes two at a time turns 4 table lookups into one, which makes
    # dequantization about twice as fast. Words are read little-endian: the first byte is low.
    assert sys.byteorder == "little", "packed words are read little-endian"
    table = codebook(quant_type)
    table = F.pad(table, (0, 16 - len(table)))  # int4 has 15 values
    word = torch.arange(2**16)
    first, second = word & 0xFF, word >> 8  # bytes 2i and 2i+1
    nibbles = torch.stack([first >> 4, first & 0xF, second >> 4, second & 0xF], dim=1)  # (65536, 4)
    return table[nibbles].to(device)


# ----------------------------------------------------------------------------- the tensor


@dataclass
class NF4Tensor:
    """A 4-bit quantized tensor; field names follow bitsandbytes' QuantState."""

    packed: torch.Tensor  # (ceil(n/2),) uint8, element 2i in the high nibble of byte i
    absmax: torch.Tensor  # (blocks,) fp32 block scales; uint8 codes of them with double quant
    blocksize: int  # elements per block, flattened in row-major order
    shape: torch.Size  # the original shape
    dtype: torch.dtype  # the original dtype, returned by dequantize
    quant_type: str = "nf4"  # code table: "nf4", "fp4" or "int4"
    offset: torch.Tensor | None = None  # () fp32 mean of the block scales (double quant only)
    absmax2: torch.Tensor | None = None  # (ceil(blocks/256),) fp32 scales of the scales (double quant only)

    @property
    def double_quant(self) -> bool:
        return self.absmax2 is not None

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: codes plus block constants (the shared code tables not counted)."""
        parts = [self.packed, self.absmax, self.offset, self.absmax2]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    @property
    def bits_per_param(self) -> float:
        """Storage per weight in bits: 4.5 at blocksize 64, about 4.127 with double quantization."""
        return 8 * self.nbytes / self.numel()

    def block_scales(self) -> torch.Tensor:
        """The fp32 scale of every block, undoing double quantization if it was used: (blocks,)."""
        if not self.double_quant:
            return self.absmax
        values = _table("dynamic", self.device)[self.absmax.long()]  # (blocks,) in [-1, 1]
        groups = F.pad(values, (0, len(self.absmax2) * DQ_BLOCKSIZE - len(values))).view(-1, DQ_BLOCKSIZE)
        centred = (groups * self.absmax2[:, None]).view(-1)[: len(values)]  # (blocks,)
        return centred + self.offset

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Same as dequantize_nf4(self, dtype)."""
        return dequantize_nf4(self, dtype)

    def to(self, device: torch.device | str) -> "NF4Tensor":
        """A copy on another device (the stored bytes never change dtype)."""
        move = lambda t: None if t is None else t.to(device)
        return NF4Tensor(move(self.packed), move(self.absmax), self.blocksize, self.shape, self.dtype,
                         self.quant_type, move(self.offset), move(self.absmax2))

    def __repr__(self) -> str:
        return (f"NF4Tensor(shape={tuple(self.shape)}, dtype={self.dtype}, quant_type={self.quant_type!r}, "
                f"blocksize={self.blocksize}, double_quant={self.double_quant}, "
                f"bits_per_param={self.bits_per_param:.3f})")

    def to_bitsandbytes(self) -> tuple[torch.Tensor, "QuantState"]:
        """The (packed, QuantState) pair that bitsandbytes.functional.dequantize_4bit takes."""
        from bitsandbytes.functional import QuantState

        if self.quant_type == "int4":
            raise ValueError("bitsandbytes has no int4 table; only nf4 and fp4 convert")
        state2 = None
        if self.double_quant:
            state2 = QuantState(absmax=self.absmax2, code=dynamic_map().to(self.device),
                                blocksize=DQ_BLOCKSIZE, dtype=torch.float32)
        state = QuantState(absmax=self.absmax, shape=self.shape, code=codebook(self.quant_type).to(self.device),
                           blocksize=self.blocksize, quant_type=self.quant_type, dtype=self.dtype,
                           offset=self.offset, state2=state2)
        return self.packed.view(-1, 1), state

    @classmethod
    def from_bitsandbytes(cls, packed: torch.Tensor, state: "QuantState") -> "NF4Tensor":
        """Wrap the output of bitsandbytes.functional.quantize_4bit without copying."""
        if state.quant_type not in ("nf4", "fp4"):
            raise ValueError(f"unsupported bitsandbytes quant_type {state.quant_type!r}")
        if state.nested and state.state2.blocksize != DQ_BLOCKSIZE:
            raise ValueError(f"double quantization with blocksize {state.state2.blocksize} (expected 256)")
        return cls(packed.view(torch.uint8).reshape(-1), state.absmax, state.blocksize, torch.Size(state.shape),
                   state.dtype, state.quant_type,
                   state.offset if state.nested else None, state.state2.absmax if state.nested else None)


# ----------------------------------------------------------------------------- quantize / dequantize


def _quantize_blocks(x: torch.Tensor, quant_type: str, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax-scale blocks of a flat fp32 tensor and round to the nearest table value."""
    n = x.numel()
    blocks = -(-n // blocksize)
    if n % blocksize:
        x = F.pad(x, (0, blocks * blocksize - n))  # zeros change no absmax and round to code 0.0
    x = x.view(blocks, blocksize)  # (blocks, blocksize)
    absmax = x.abs().amax(dim=1)  # (blocks,) NaN and inf propagate here
    bad = (~torch.isfinite(absmax)).nonzero()
    if len(bad):
        i = bad[0].item()
        raise ValueError(f"cannot quantize NaN/inf: block {i} (flat elements {i * blocksize}.."
                         f"{min((i + 1) * blocksize, n) - 1}) and {len(bad) - 1} other block(s)")
    # bitsandbytes multiplies whole blocks by 1/absmax but divides a last, partial block by it;
    # the two can differ in the last bit, which decides exact ties (common in bf16), so do the same
    safe = absmax.clamp(min=1e-38)  # an all-zero block keeps absmax 0 and gets codes of 0.0
    scaled = x * (1.0 / safe)[:, None]  # (blocks, blocksize)
    if n % blocksize:
        scaled[-1] = x[-1] / safe[-1]
    scaled.clamp_(-1, 1)
    midpoints, order = _rounding(quant_type, x.device)
    codes = torch.bucketize(scaled, midpoints, out_int32=True).to(torch.uint8)  # ties round down
    if quant_type == "fp4":
        codes = order[codes.long()]  # position in the sorted table -> FP4's own index
    return codes.view(-1)[:n], absmax  # (n,) uint8, (blocks,) fp32


def quantize_4bit(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True,
                  quant_type: str = "nf4") -> NF4Tensor:
    """Blockwise 4-bit quantization with the "nf4", "fp4" or "int4" table, optionally double-quantized."""
    if blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize must be one of {BLOCKSIZES}, got {blocksize}")
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, got {quant_type!r}")
    if not isinstance(w, torch.Tensor) or w.dtype not in FLOAT_DTYPES:
        raise TypeError(f"expected a float32, float16 or bfloat16 tensor, got {getattr(w, 'dtype', type(w))}")
    if w.numel() == 0:
        raise ValueError(f"cannot quantize an empty tensor (shape {tuple(w.shape)})")
    codes, absmax = _quantize_blocks(w.detach().reshape(-1).float(), quant_type, blocksize)
    if codes.numel() % 2:  # an odd count is padded with the code of 0.0
        zero_code = int(codebook(quant_type).abs().argmin())
        codes = F.pad(codes, (0, 1), value=zero_code)
    pairs = codes.view(-1, 2)  # (ceil(n/2), 2)
    packed = (pairs[:, 0] << 4) | pairs[:, 1]  # (ceil(n/2),) uint8
    q = NF4Tensor(packed, absmax, blocksize, w.shape, w.dtype, quant_type)
    if double_quant:
        # the block scales are all positive and similar: centre them, then store 8-bit codes
        q.offset = absmax.mean()  # ()
        q.absmax, q.absmax2 = _quantize_blocks(absmax - q.offset, "dynamic", DQ_BLOCKSIZE)
    return q


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> NF4Tensor:
    """Blockwise NF4 quantization (QLoRA's storage format), optionally double-quantized."""
    return quantize_4bit(w, blocksize, double_quant, "nf4")


def dequantize_nf4(q: NF4Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """code value x block scale in fp32, rounded once to `dtype` (default: the original); original shape."""
    n, blocksize, dtype = q.numel(), q.blocksize, dtype or q.dtype
    scales = q.block_scales()  # (blocks,) fp32
    packed = q.packed
    if packed.numel() % 2:
        packed = F.pad(packed, (0, 1))  # whole 16-bit words
    words = packed.view(torch.uint16).int()  # (ceil(n/4),) each holds 4 codes
    values = torch.empty(len(scales) * blocksize, device=q.device)  # (blocks * blocksize,) fp32
    # look the 4 values of every word up at once, straight into the buffer (blocks fill whole words)
    torch.index_select(_word_table(q.quant_type, q.device), 0, words, out=values[: 4 * len(words)].view(-1, 4))
    values = values.view(-1, blocksize)  # (blocks, blocksize)
    out = values.mul_(scales[:, None]).view(-1)[:n]  # fp32 products, rounded once below
    return out.view(q.shape).to(dtype)


def unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The n 4-bit codes stored two per byte, the first in the high nibble: (ceil(n / 2),) uint8 -> (n,) uint8."""
    packed = packed.flatten()
    return torch.stack([packed >> 4, packed & 0xF], dim=1).flatten()[:n]
