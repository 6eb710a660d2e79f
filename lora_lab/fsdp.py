"""Fully sharded data parallelism (FSDP) over a 4-bit base, built on PyTorch's FSDP2 (`fully_shard`).

Data parallelism (DDP) gives every process a whole copy of the model. FSDP (Zhao et al. 2023, arXiv
2304.11277; ZeRO-3, Rajbhandari et al. 2020, arXiv 1910.02054) gives each of N processes 1/N of every
parameter, of its gradient and of its optimizer state, and gathers a layer's full parameters only while
that layer runs.
FSDP2 splits each *parameter* on its first dimension; anything else a module holds (buffers, attributes)
it leaves whole on every process. Two things therefore decide whether a 4-bit layer is sharded:

1. Everything the layer needs must be a parameter. lora_lab's NF4Linear keeps its block scales as
   buffers, so FSDP2 would copy them to every process; `shardable` makes them frozen parameters.
   (bitsandbytes keeps them in a QuantState object attached to the weight: outside FSDP's reach.)
2. A process should hold whole blocks, each with its own scale. `shardable` stores the packed codes as
   one row per block, (blocks, blocksize / 2) bytes, beside the scales (blocks,), so that splitting
   both on their first dimension gives a process the same blocks of each, whatever N is; and N must
   divide the number of blocks (`check_process_count`) so that every process holds the same number.

The codes may be stored viewed as a float dtype (`quant_storage`, as bitsandbytes' `bnb_4bit_quant_storage`
does for Answer.AI's FSDP-QLoRA, 2024): FSDP1 flattens a layer's parameters into one tensor of one dtype,
and FSDP's mixed precision casts floating parameters other than its compute dtype. FSDP2 gathers mixed
dtypes as bytes, so here uint8 works too; the production path needs the float view (see notebook 08).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .qlora import NF4Linear

# accelerate's config for FSDP over GPUs, shipped inside the package (`lora-lab fsdp-config` prints the path)
ACCELERATE_CONFIG = Path(__file__).resolve().parent / "accelerate_fsdp.yaml"
STORAGE_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "bfloat16": torch.bfloat16,
                  "float32": torch.float32}
CONSTANT_NAMES = ("absmax", "absmax2", "offset")  # a 4-bit layer's quantization constants
PARTS = ("weights", "quant_constants", "lora_weights", "gradients", "optimizer_state")


def storage_dtype(quant_storage: str | torch.dtype) -> torch.dtype:
    """The torch dtype named by `quant_storage` ("uint8", "float16", "bfloat16", "float32" or the dtype itself)."""
    name = str(quant_storage).removeprefix("torch.")
    if name not in STORAGE_DTYPES:
        raise ValueError(f"quant_storage={quant_storage!r} is not accepted; choose one of {tuple(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[name]


def four_bit_layers(model: nn.Module) -> list[tuple[str, NF4Linear]]:
    """(name, layer) of every lora_lab NF4Linear in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NF4Linear)]


def block_count(layer: NF4Linear) -> int:
    """Quantization blocks of a 4-bit layer: out · in / blocksize, rounded up."""
    return math.ceil(layer.out_features * layer.in_features / layer.blocksize)


def check_process_count(num_processes: int, blocks: dict[str, int]) -> None:
    """ValueError unless `num_processes` divides the block count of every 4-bit layer (blocks: {name: count}).

    The kit's choice, for a layout a learner can follow: each process holds an equal share of whole blocks,
    each with its own scale (PyTorch's FSDP2 itself would pad uneven shares). The message names the first
    layer that does not divide and the process counts of 2 or more that divide every layer.
    """
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise ValueError(f"num_processes={num_processes!r} is not accepted; give an integer >= 1")
    bad = [(name, n) for name, n in blocks.items() if n % num_processes]
    if bad:
        name, n = bad[0]
        common = math.gcd(*blocks.values())  # a count divides every layer exactly when it divides this
        works = [k for k in range(2, common + 1) if common % k == 0]
        shown = ", ".join(map(str, works[:10])) + (f", … ({len(works)} counts, up to {works[-1]:,})"
                                                     if len(works) > 10 else "")
        raise ValueError(f"num_processes={num_processes} does not divide the {n:,} quantization blocks of {name} "
                         f"({len(bad)} of {len(blocks)} 4-bit layers): the kit gives every process an equal share "
                         f"of whole 4-bit blocks (PyTorch's FSDP2 would pad uneven shares; the kit keeps the layout "
                         f"simple to follow); process counts that divide every 4-bit layer: {shown or 'none'}")


def shardable(model: nn.Module, quant_storage: str | torch.dtype = "uint8") -> nn.Module:
    """Prepare every NF4Linear for FSDP, in place: codes as rows of whole blocks, block scales as parameters.

    After it, a layer holds `weight` (blocks, blocksize / 2 / itemsize) in `quant_storage` (the same bytes,
    viewed), `absmax` (blocks,), and with double quantization `absmax2` (blocks / 256,) and `offset` (1,), all
    frozen nn.Parameters; its forward is unchanged (NF4Linear.quant_state reads any layout). Raises
    ValueError for a layer whose element count is not whole blocks, or whose block bytes do not divide
    into `quant_storage` elements.
    """
    dtype = storage_dtype(quant_storage)
    layers = four_bit_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no lora_lab NF4Linear layer to shard; quantize it first "
                         "(lora_lab.get_qlora_model or quantize_model)")
    for name, layer in layers:
        blocks, block_bytes = block_count(layer), layer.blocksize // 2
        if layer.out_features * layer.in_features % layer.blocksize:
            raise ValueError(f"{name}: {layer.out_features}×{layer.in_features} weights are not whole blocks of "
                             f"{layer.blocksize}; FSDP could not keep each block with its scale")
        if block_bytes % dtype.itemsize:
            raise ValueError(f"quant_storage={quant_storage!r}: a block of {layer.blocksize} codes is {block_bytes} "
                             f"bytes, not a whole number of {dtype.itemsize}-byte {dtype} elements")
        rows = layer.weight.data.view(torch.uint8).reshape(blocks, block_bytes).view(dtype)  # same bytes
        layer.weight = nn.Parameter(rows, requires_grad=False)  # (blocks, block_bytes / itemsize)
        for const in CONSTANT_NAMES:
            t = getattr(layer, const)
            if t is None:
                continue
            del layer._buffers[const]  # a buffer stays whole on every process: make it a parameter
            setattr(layer, const, nn.Parameter(t.reshape(-1), requires_grad=False))  # offset: () -> (1,)
    return model


def is_sharded(t: torch.Tensor) -> bool:
    """True for an FSDP-sharded parameter (a DTensor)."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: the local shard of a DTensor, else the tensor itself."""
    return t.to_local() if is_sharded(t) else t


def _nbytes(t: torch.Tensor) -> int:
    t = local(t)
    return t.numel() * t.element_size()


def _quant_state_tensors(state) -> list[torch.Tensor]:
    """The tensors of a bitsandbytes QuantState: block scales, their offset and the scales' scales."""
    if state is None or not hasattr(state, "absmax"):
        return []
    nested = getattr(state, "state2", None)
    found = [state.absmax, getattr(state, "offset", None), None if nested is None else nested.absmax]
    return [t for t in found if isinstance(t, torch.Tensor)]


def part_of(name: str, p: torch.Tensor) -> str:
    """Which memory part a parameter counts in: weights, quant_constants or lora_weights."""
    if p.requires_grad:
        return "lora_weights"
    return "quant_constants" if name.rsplit(".", 1)[-1] in CONSTANT_NAMES else "weights"


def local_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes this process holds, per part: its shards under FSDP, everything in a single process.

    weights (4-bit codes and the other frozen parameters), quant_constants (block scales, parameters or
    buffers), lora_weights (trainable), gradients (.grad of the trainable ones), optimizer_state (every
    state tensor with at least one dimension, e.g. AdamW's two moments; the step counters are left out).
    """
    out = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        out[part_of(name, p)] += _nbytes(p)
        if p.grad is not None:
            out["gradients"] += _nbytes(p.grad)
    for name, b in model.named_buffers():
        if name.rsplit(".", 1)[-1] in CONSTANT_NAMES:
            out["quant_constants"] += _nbytes(b)
    for m in model.modules():  # bitsandbytes' Linear4bit: the block scales in a QuantState beside the weight
        if not isinstance(m, NF4Linear):  # (whose quant_state is a view of the parameters counted above)
            out["quant_constants"] += sum(_nbytes(t) for t in _quant_state_tensors(getattr(m, "quant_state", None)))
    if optimizer is not None:
        for state in optimizer.state.values():
            out["optimizer_state"] += sum(_nbytes(t) for t in state.values() if isinstance(t, torch.Tensor) and t.dim())
    return out


def gathered_bytes(model: nn.Module) -> int:
    """Bytes of parameters held whole right now that FSDP manages: gathered for the layer running now."""
    from torch.distributed.fsdp import FSDPModule

    managed = {id(p) for m in model.modules() if isinstance(m, FSDPModule) for p in m.parameters()}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) in managed and not is_sharded(p))


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Llama-style model (model.model.layers), through a PEFT wrapper if present."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(inner, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(inner).__name__} has no .model.layers: shard(...) wraps Llama-style decoder layers")
    return list(layers)


def shard(model: nn.Module, reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2 over a Llama-style model, in place, in the units accelerate's FSDP plugin makes: the input
    embeddings, each decoder layer, then the final norm with the output head (kept gathered from the end
    of the forward to the start of the backward, which comes right after), then the root. The process
    group must be initialised. Returns the model."""
    from torch.distributed.fsdp import fully_shard

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    fully_shard(inner.get_input_embeddings(), reshard_after_forward=reshard_after_forward)
    for layer in decoder_layers(model):  # bottom-up: each layer's parameters are gathered on their own
        fully_shard(layer, reshard_after_forward=reshard_after_forward)
    fully_shard([inner.model.norm, inner.get_output_embeddings()], reshard_after_forward=False)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model


def trace_gathers(model: nn.Module, events: list) -> list:
    """Record (phase, layer, gathered_bytes(model)) as each decoder layer starts its forward and its backward.

    Returns the hook handles (call .remove() on each to stop). Register after `shard`: FSDP's own hooks,
    which gather a layer's parameters, then run before these look (hooks run in the order registered; the
    backward one is a hook on the layer's output gradient, where FSDP hooks its own gather too).
    """
    def on_forward(i):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.requires_grad:
                hidden.register_hook(lambda grad: events.append(("backward", i, gathered_bytes(model))))
        return hook

    handles = []
    for i, layer in enumerate(decoder_layers(model)):
        handles.append(layer.register_forward_pre_hook(
            lambda mod, args, i=i: events.append(("forward", i, gathered_bytes(model)))))
        handles.append(layer.register_forward_hook(on_forward(i)))
    return handles
