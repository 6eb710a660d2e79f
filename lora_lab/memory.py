"""How much memory a (Q)LoRA fine-tune needs, predicted before it starts and measured while it runs.

The breakdown follows the QLoRA paper (Dettmers et al. 2023, arXiv 2305.14314, §3): 4-bit weights
plus their quantization constants, LoRA weights with their gradients and optimizer state, and the
activations autograd keeps for the backward pass. Parameters are counted on the real architecture,
built on PyTorch's meta device (no weights, no memory), so Llama-2-7B is counted exactly on a laptop.
"""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .env import T4_USABLE_GIB
from .i18n import N_, _, num, translate

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Llama-2-7B's config.json, so the 7B recipe can be estimated offline and without a download
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 tie_word_embeddings=False)
# Llama-2-70B's published config.json: grouped-query attention, 64 query heads sharing 8 key/value heads
LLAMA2_70B = dict(LLAMA2_7B, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8)
# how the processes share the work: one process; data parallel (each holds everything); fully sharded
SHARDINGS = ("none", "ddp", "fsdp")
# what a learner reads for each part of the estimate (MemoryEstimate.PARTS, then the sums), in the kit's language
PART_LABELS = {"weights": N_("weights"), "quant_constants": N_("quant constants"), "lora_weights": N_("lora weights"),
               "gradients": N_("gradients"), "optimizer_state": N_("optimizer state"),
               "activations": N_("activations"), "parallel_buffers": N_("parallel buffers"), "total": N_("total")}


def part_label(part: str) -> str:
    """The label of a part of the estimate ("optimizer_state" -> "optimizer state"), in the kit's language.

    Raises KeyError for a name that is not one of MemoryEstimate.PARTS, "parallel_buffers" or "total".
    """
    return translate(PART_LABELS[part])


def llama2_7b_config():
    """A `LlamaConfig` with Llama-2-7B's shape."""
    from transformers import LlamaConfig

    return LlamaConfig(**LLAMA2_7B)


def llama2_70b_config():
    """A `LlamaConfig` with Llama-2-70B's shape (80 layers, hidden 8192, MLP 28672, 8 key/value heads)."""
    from transformers import LlamaConfig

    return LlamaConfig(**LLAMA2_70B)


def meta_model(config) -> nn.Module:
    """The causal LM of `config` built on the meta device: every shape, no storage."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@dataclass
class MemoryEstimate:
    """Bytes per part of a fine-tune's memory on one device (one process); `total` is their sum."""

    weights: int          # the base model: 4-bit codes of the linear layers, everything else in 16/32 bits
    quant_constants: int  # one absmax per block (8 bits each with double quantization, else 32)
    lora_weights: int     # A and B of every adapted layer, fp32
    gradients: int        # one fp32 gradient per LoRA weight (the base is frozen: none for it)
    optimizer_state: int  # AdamW: two fp32 moments per LoRA weight (8-bit optimizers: two bytes)
    activations: int      # what autograd keeps between forward and backward, for one micro-batch
    params: int = 0           # parameters of the base model
    quantized_params: int = 0  # of which stored in 4 bits
    lora_params: int = 0      # trainable LoRA parameters
    # several processes: what the parallelism itself holds. DDP: its gradient buckets, a second copy of
    # the gradients; FSDP: the parameters gathered whole at the peak (see estimate_memory)
    parallel_buffers: int = 0
    num_processes: int = 1
    sharding: str = "none"  # one of SHARDINGS

    PARTS = ("weights", "quant_constants", "lora_weights", "gradients", "optimizer_state", "activations")

    @property
    def total(self) -> int:
        return sum(getattr(self, p) for p in self.PARTS) + self.parallel_buffers

    def fits(self, budget_gib: float = T4_USABLE_GIB) -> bool:
        """True if the total stays under `budget_gib` (default: the 14.75 GiB a Colab T4 exposes)."""
        return self.total <= budget_gib * GIB

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def table(self, unit: str = "GiB") -> str:
        """The breakdown as plain text, one line per part, in the kit's language."""
        scale = {"GiB": GIB, "MiB": 2**20}[unit]
        parts = self.PARTS + (("parallel_buffers",) if self.num_processes > 1 else ())
        labels = {p: part_label(p) for p in parts + ("total",)}
        width = max(len(label) for label in labels.values())
        values = {p: getattr(self, p) for p in parts} | {"total": self.total}
        lines = [f"{labels[p]:<{width}}  {num(values[p] / scale):10.3f} {unit}" for p in values]
        if self.num_processes > 1:
            lines.append(_("(per device: {n} processes, {sharding})").format(
                n=self.num_processes, sharding=translate(_SHARDING_WORDS[self.sharding])))
        return "\n".join(lines)


_SHARDING_WORDS = {"none": N_("one process"), "ddp": N_("data parallel, each holds a whole copy"),
                   "fsdp": N_("fully sharded")}


def _spec(lora) -> tuple[int, list[str] | str, float]:
    """(r, target_modules, lora_dropout) from a lora_lab or PEFT LoraConfig, or a dict with those keys."""
    get = lora.get if isinstance(lora, dict) else (lambda k, d=None: getattr(lora, k, d))
    targets = get("target_modules") or LLAMA_PROJECTIONS
    targets = sorted(targets) if isinstance(targets, (set, frozenset)) else targets
    return int(get("r")), targets, float(get("lora_dropout", 0.0) or 0.0)


def _adapted(model: nn.Module, linears: list[tuple[str, int, int, bool]], targets, r: int, owner: str
             ) -> list[tuple[str, int, int]]:
    """(name, in, out) of the linear layers `targets` selects: lora_lab.lora's rules, every entry and the rank checked."""
    from .lora import check_rank, match_target_modules

    names = [n for n, *_ in linears]
    heads = {n for n, _, _, head in linears if head}
    modules = [(n, m) for n, m in model.named_modules() if n and ".lora_" not in n and not n.endswith(".base_layer")]
    chosen = set(match_target_modules([n for n, _ in modules], targets, names, heads, owner,
                                      nothing="matches no linear layer", kinds={n: type(m).__name__ for n, m in modules}))
    adapted = [(n, i, o) for n, i, o, _ in linears if n in chosen]
    check_rank(r, adapted)
    return adapted


def _linear_layers(model: nn.Module) -> list[tuple[str, int, int, bool]]:
    """(name, in_features, out_features, is_output_head) of every linear layer, 4-bit ones included."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(n.removesuffix(".base_layer"), m.in_features, m.out_features, m is head)
            for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".lora_" not in n]


def check_parallel(sharding: str, num_processes: int) -> None:
    """ValueError unless `sharding` is one of SHARDINGS and fits `num_processes` (none: 1; ddp, fsdp: 2 or more)."""
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding={sharding!r} is not accepted; choose one of {SHARDINGS}")
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise ValueError(f"num_processes={num_processes!r} is not accepted; give an integer >= 1")
    if sharding == "none" and num_processes > 1:
        raise ValueError(f"num_processes={num_processes} with sharding='none': several processes share the work as "
                         "'ddp' (each holds a whole copy) or 'fsdp' (each holds 1/N); choose one")
    if sharding != "none" and num_processes == 1:
        what = "FSDP on one process shards nothing" if sharding == "fsdp" else "DDP on one process copies nothing"
        raise ValueError(f"sharding={sharding!r} with num_processes=1: {what}; give num_processes >= 2, "
                         "or sharding='none'")


def estimate_memory(model_config, quant: str | None = "nf4", double_quant: bool = True, lora=None,
                    batch_size: int = 4, seq_len: int = 1024, optimizer: str = "paged_adamw_32bit",
                    gradient_checkpointing: bool = True, compute_dtype: str = "float16",
                    blocksize: int = 64, fused_loss: bool = True, num_processes: int = 1,
                    sharding: str = "none") -> MemoryEstimate:
    """Predict the memory of a QLoRA (quant="nf4"/"fp4") or LoRA (quant=None) fine-tune of a Llama-style model,
    per device: on each of `num_processes` devices.

    model_config: a transformers config (or dict of one), or the model itself; lora: a LoraConfig
    (lora_lab's or PEFT's) or a dict with r, target_modules, lora_dropout (default r=64 on all seven
    projections). compute_dtype is what activations and the unquantized weights are held in
    ("float16" on a T4, "float32" on a CPU). fused_loss: TRL 1.16's SFTTrainer computes the loss in
    chunks and never holds the full logits; a plain loop holds them in fp32. batch_size is per device.

    sharding: "none" (one process), "ddp" (each device holds everything, plus its gradient buckets: PyTorch
    DDP's default, gradient_as_bucket_view=False, keeps a second copy of the gradients) or "fsdp" (full
    shard, as PyTorch's FSDP2 splits each parameter on its first dimension: 1/N of the 4-bit codes, the
    other weights, LoRA, gradients and optimizer state, rows rounded up; plus the parameters gathered whole
    at the peak: the largest unit, the next decoder layer prefetched, and one layer's gradients before
    their reduce-scatter). Under FSDP the 4-bit block scales stay whole on every device: bitsandbytes
    keeps them in a QuantState beside the weight, where FSDP does not shard. Activations are per device.
    Raises ValueError for a bad sharding or process count (lora_lab.fsdp.check_process_count: N must
    divide every 4-bit layer's blocks).
    """
    if quant not in (None, "nf4", "fp4"):
        raise ValueError(f"quant={quant!r} is not one of None, 'nf4', 'fp4'")
    if compute_dtype not in DTYPE_BYTES:
        raise ValueError(f"compute_dtype={compute_dtype!r} is not one of {tuple(DTYPE_BYTES)}")
    check_parallel(sharding, num_processes)
    if isinstance(model_config, dict):
        from transformers import LlamaConfig
        model_config = LlamaConfig(**model_config)
    model = model_config if isinstance(model_config, nn.Module) else meta_model(model_config)
    cfg = model.config
    r, targets, dropout = _spec(lora or {"r": 64, "target_modules": LLAMA_PROJECTIONS})
    act = DTYPE_BYTES[compute_dtype]

    linears = _linear_layers(model)
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    if any(type(p).__name__ == "Params4bit" for p in model.parameters()):  # a loaded 4-bit model: count unpacked
        params = sum(2 * p.numel() if type(p).__name__ == "Params4bit" else p.numel()
                     for n, p in model.named_parameters() if "lora_" not in n)
    quantized = sum(i * o for _, i, o, head in linears if not head) if quant else 0
    weights = quantized // 2 + (params - quantized) * act  # 4-bit codes: two per byte
    constants = 0
    if quant:
        for _, i, o, head in linears:
            if head:
                continue
            blocks = math.ceil(i * o / blocksize)
            # double quantization: 8-bit absmax, plus one fp32 scale per 256 of them and one fp32 offset
            constants += blocks + 4 * math.ceil(blocks / 256) + 4 if double_quant else 4 * blocks
    adapted = _adapted(model, linears, targets, r, type(model).__name__)  # ValueError: no match, rank too high
    lora_params = sum(r * (i + o) for _, i, o in adapted)
    state_bytes = 0 if optimizer.startswith("sgd") else 2 if "8bit" in optimizer else 8

    # activations kept for backward, per token and per decoder layer, in elements (counted with
    # autograd's saved-tensor hooks on a Llama layer with PEFT LoRA on all seven projections):
    #   8·hidden (two RMSNorms, q/k/v after RoPE, attention output, residuals)
    #   4·intermediate (gate, up, SiLU(gate), their product)
    #   r per adapted layer (the output of lora_A, input to lora_B)
    # plus, with LoRA dropout, a dropped copy of each adapted layer's input and its 1-byte mask.
    h, m, layers, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    per_layer = 8 * h + 4 * m + r * len(adapted) // layers
    per_layer_bytes = per_layer * act
    if dropout > 0:
        per_layer_bytes += sum(i for _, i, _ in adapted) // layers * (act + 1)
    tokens = batch_size * seq_len
    if gradient_checkpointing:  # each layer's input only, plus one layer recomputed during backward
        kept = tokens * ((layers + 1) * h * act + per_layer_bytes)
    else:
        kept = tokens * layers * per_layer_bytes
    logits = 0 if fused_loss else tokens * vocab * 4  # log-probabilities in fp32
    estimate = MemoryEstimate(weights=weights, quant_constants=constants, lora_weights=4 * lora_params,
                              gradients=4 * lora_params, optimizer_state=state_bytes * lora_params,
                              activations=kept + logits, params=params, quantized_params=quantized,
                              lora_params=lora_params, num_processes=num_processes, sharding=sharding)
    if sharding == "ddp":
        estimate.parallel_buffers = estimate.gradients
    elif sharding == "fsdp":
        if quant:
            from .fsdp import check_process_count

            check_process_count(num_processes, {n: math.ceil(i * o / blocksize) for n, i, o, head in linears if not head})
        _shard(estimate, model, linears if quant else [], adapted, r, act, state_bytes)
    return estimate


def _unit(name: str) -> str:
    """The FSDP unit a parameter is gathered with, as accelerate wraps a Llama: embeddings, each layer, the rest."""
    parts = name.split(".")
    if "layers" in parts:
        return "layer " + parts[parts.index("layers") + 1]
    return "embeddings" if "embed_tokens" in parts else "norm and head"


def _shard(estimate: MemoryEstimate, model: nn.Module, linears, adapted, r: int, act: int, state_bytes: int) -> None:
    """Per-device parts under FSDP2, in place: each parameter's rows split into N chunks of ceil(rows / N)."""
    n = estimate.num_processes
    quantized = {name for name, _, _, head in linears if not head}
    weights, full = 0, collections.Counter()  # full: bytes of each unit gathered whole
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        if name.removesuffix(".weight") in quantized and name.endswith(".weight"):
            rows, row_bytes = math.ceil(p.numel() / 2), 1  # packed 4-bit codes, in whatever storage dtype
        else:
            rows, row_bytes = p.shape[0], p.numel() // p.shape[0] * act
        weights += math.ceil(rows / n) * row_bytes
        full[_unit(name)] += rows * row_bytes
    lora_local, lora_full = 0, collections.Counter()
    for name, i, o in adapted:  # A: (r, in), B: (out, r), fp32
        lora_local += math.ceil(r / n) * i + math.ceil(o / n) * r
        lora_full[_unit(name)] += r * (i + o) * 4
    full.update(lora_full)
    layers = [u for u in full if u.startswith("layer ")]
    estimate.weights = weights
    estimate.lora_weights = estimate.gradients = 4 * lora_local
    estimate.optimizer_state = state_bytes * lora_local
    estimate.parallel_buffers = (max(full.values()) + max((full[u] for u in layers), default=0)
                                 + max((lora_full[u] for u in layers), default=0))


# ----------------------------------------------------------------------------- measuring


def _storage_key(t: torch.Tensor) -> tuple:
    st = t.untyped_storage()
    return (t.device.type, st.data_ptr())


def measure_activations(fn, model: nn.Module) -> int:
    """Bytes of the tensors autograd saves for backward while `fn()` runs (the model's own weights excluded)."""
    own = {_storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    for p in model.parameters():  # 4-bit weights keep their block scales outside the parameter
        state = getattr(p, "quant_state", None)
        for t in _quant_tensors(state):
            own.add(_storage_key(t))
    seen: dict[tuple, int] = {}

    def pack(t):
        key = _storage_key(t)
        if key not in own:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _quant_tensors(state) -> list[torch.Tensor]:
    if state is None:
        return []
    out = [t for t in (state.absmax, getattr(state, "offset", None)) if isinstance(t, torch.Tensor)]
    if getattr(state, "state2", None) is not None:
        out.append(state.state2.absmax)
    return out


def measure_memory(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes the model and optimizer really hold, in the parts of `MemoryEstimate` (activations aside)."""
    out = dict(weights=0, quant_constants=0, lora_weights=0, gradients=0, optimizer_state=0)
    for p in model.parameters():
        nbytes = p.numel() * p.element_size()
        if p.requires_grad:
            out["lora_weights"] += nbytes
            if p.grad is not None:
                out["gradients"] += p.grad.numel() * p.grad.element_size()
        else:
            out["weights"] += nbytes
        out["quant_constants"] += sum(t.numel() * t.element_size() for t in _quant_tensors(getattr(p, "quant_state", None)))
    if optimizer is not None:
        for state in optimizer.state.values():
            out["optimizer_state"] += sum(t.numel() * t.element_size() for t in state.values()
                                          if isinstance(t, torch.Tensor) and t.dim() > 0)
    return out


def current_memory_mb(device: str | torch.device | None = None) -> float:
    """Memory this process holds now: allocated GPU memory on CUDA, resident set size on a CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def peak_memory_mb(device: str | torch.device | None = None) -> float:
    """Peak memory of this process so far: allocated GPU memory on CUDA, resident set size on a CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS counts bytes, Linux KiB


def dequantize_workspace(model_config, compute_dtype: str = "float16") -> int:
    """Bytes of the largest 4-bit linear weight dequantized to `compute_dtype`: what a 4-bit matmul adds at its
    peak, for the length of one matmul (forward, and again in backward), on top of what estimate_memory counts.

    model_config: as for estimate_memory. 0 if the model has no linear layer but its output head.
    """
    if compute_dtype not in DTYPE_BYTES:
        raise ValueError(f"compute_dtype={compute_dtype!r} is not one of {tuple(DTYPE_BYTES)}")
    if isinstance(model_config, dict):
        from transformers import LlamaConfig
        model_config = LlamaConfig(**model_config)
    model = model_config if isinstance(model_config, nn.Module) else meta_model(model_config)
    sizes = [i * o for _, i, o, head in _linear_layers(model) if not head]
    return max(sizes, default=0) * DTYPE_BYTES[compute_dtype]
