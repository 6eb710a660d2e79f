"""The peak memory of one LoRA or QLoRA training step, each configuration measured in a fresh process.

A process's peak resident set size (ru_maxrss: what the operating system counted as in use at its
highest) only ever grows, so it can measure one thing per process: here each configuration runs in
its own Python process, which imports its libraries, notes its resident size, builds the model,
runs one training step (forward, backward, AdamW step) and reports its peak. On Linux the process
asks glibc to hand freed memory back at once, so that its resident size follows what is in use. The base weights are
built one layer at a time as 4-bit codes, the way a 4-bit checkpoint loads, so the build never holds
a float copy of the model: the peak belongs to the training step (`run` checks that it does).

The model is a Llama with Llama-2-7B's layer widths (hidden 4096, MLP 11008, 32 heads) and few
layers, with random weights: memory does not depend on their values. `kept_for_backward` lists what
a forward pass leaves alive for the backward pass, tensor by tensor.

    python -m lora_lab.step_memory qlora --config '{"num_hidden_layers": 1}'   # one JSON line
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .i18n import N_, translate
from .lora import LoraConfig, LoRALinear, inject_lora
from .memory import (
    LLAMA_PROJECTIONS,
    _storage_key,
    current_memory_mb,
    estimate_memory,
    measure_activations,
    measure_memory,
    peak_memory_mb,
)
from .nf4 import DQ_BLOCKSIZE, NF4Tensor, _quantize_blocks
from .qlora import NF4Linear, QLoRALinear

METHODS = {
    "lora": N_("LoRA, fp32 base"),
    "qlora": N_("QLoRA, lora_lab"),
    "qlora-float-copy": N_("QLoRA, dequantize + F.linear"),
    "bnb-peft": N_("QLoRA, bitsandbytes + PEFT"),
}
MiB = 2**20


def method_label(method: str) -> str:
    """What METHODS calls `method` ("lora" -> "LoRA, fp32 base"), in the kit's language; KeyError for another name."""
    return translate(METHODS[method])


@dataclass
class StepConfig:
    hidden_size: int = 4096        # Llama-2-7B's layer widths
    intermediate_size: int = 11008
    num_attention_heads: int = 32
    num_hidden_layers: int = 2     # 7B has 32; two make every layer but the first one's q, k, v need input gradients
    vocab_size: int = 1536         # the tiny Llama's (7B: 32000), so the decoder layers dominate the weights
    r: int = 16                    # LoRA rank on all seven projections, alpha = 2r
    batch_size: int = 1
    seq_len: int = 32              # tokens per row
    threads: int = 1               # torch threads in the measuring process
    seed: int = 0


def llama_config(cfg: StepConfig):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                       num_key_value_heads=cfg.num_attention_heads, vocab_size=cfg.vocab_size,
                       max_position_embeddings=max(cfg.seq_len, 128), tie_word_embeddings=False)


def random_nf4(out_features: int, in_features: int, generator: torch.Generator, std: float = 0.02) -> NF4Tensor:
    """A random (out, in) weight in NF4 with double quantization, made without ever holding it in float.

    Codes are uniform over the 16 NF4 values; each block of 64 gets an absmax of 2 to 3 std, about
    what 64 draws from N(0, std²) give. Only memory is measured with it, which values do not change.
    """
    n, blocksize = out_features * in_features, 64
    if n % blocksize:
        raise ValueError(f"a {out_features}x{in_features} weight does not split into whole blocks of {blocksize}")
    packed = torch.randint(0, 256, (n // 2,), dtype=torch.uint8, generator=generator)  # (n/2,) two codes a byte
    absmax = std * (2 + torch.rand(n // blocksize, generator=generator))  # (blocks,) fp32
    offset = absmax.mean()  # double quantization, as quantize_4bit does it: 8-bit codes of the centred scales
    codes, absmax2 = _quantize_blocks(absmax - offset, "dynamic", DQ_BLOCKSIZE)
    return NF4Tensor(packed, codes, blocksize, torch.Size((out_features, in_features)), torch.float32, "nf4",
                     offset, absmax2)


class FloatCopyNF4Linear(NF4Linear):
    """NF4Linear as first written: dequantize, then F.linear, so autograd keeps the float weight for backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(), self.bias)


def _base_layer(method: str, out_features: int, in_features: int, generator: torch.Generator) -> nn.Module:
    if method == "lora":  # drawn in place (uniform: quicker than normal, the same memory)
        layer = nn.Linear(in_features, out_features, bias=False, device="meta")
        weight = torch.empty(out_features, in_features).uniform_(-0.04, 0.04, generator=generator)
        layer.weight = nn.Parameter(weight, requires_grad=False)
        return layer
    q = random_nf4(out_features, in_features, generator)
    if method == "qlora":
        return NF4Linear(q)
    if method == "qlora-float-copy":
        return FloatCopyNF4Linear(q)
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(q.shape[1], q.shape[0], bias=False, compute_dtype=torch.float32,
                              compress_statistics=True, quant_type="nf4", device="meta")
    packed, state = q.to_bitsandbytes()  # the same bytes, as bitsandbytes' QuantState
    layer.weight = bnb.nn.Params4bit(packed, requires_grad=False, quant_state=state, blocksize=q.blocksize,
                                     compress_statistics=True, quant_type="nf4", module=layer, bnb_quantized=True)
    layer.support_avx512bf16_for_cpu = False  # no CPU repacking (lora_lab.finetune explains why)
    return layer


def build_model(method: str, cfg: StepConfig) -> nn.Module:
    """A Llama with `cfg`'s widths and random weights, its seven projections per layer 4-bit (fp32 for "lora"), with LoRA."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {tuple(METHODS)}")
    from transformers import LlamaForCausalLM

    config = llama_config(cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.device("meta"):  # shapes only; every tensor is made below, one at a time
        model = LlamaForCausalLM(config)
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and name.rsplit(".", 1)[-1] in LLAMA_PROJECTIONS:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child,
                    _base_layer(method, module.out_features, module.in_features, generator))
    for module in model.modules():  # what is left (embeddings, norms, head) is small: fp32, random or ones
        for name, p in list(module.named_parameters(recurse=False)):
            if p.is_meta:
                t = torch.ones(p.shape) if "Norm" in type(module).__name__ else torch.randn(p.shape, generator=generator) * 0.02
                setattr(module, name, nn.Parameter(t, requires_grad=False))
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its buffers, computed on the CPU
    if method == "bnb-peft":
        import peft

        return peft.get_peft_model(model, peft.LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r, target_modules=LLAMA_PROJECTIONS,
                                                          task_type="CAUSAL_LM"))
    lora = LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r, target_modules=LLAMA_PROJECTIONS)
    return inject_lora(model, lora, layer_cls=LoRALinear if method == "lora" else QLoRALinear)


def held_parts(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """measure_memory's parts, with lora_lab's NF4Linear block scales (buffers) counted as quantization constants."""
    held = measure_memory(model, optimizer)
    for module in model.modules():
        if isinstance(module, NF4Linear):
            held["quant_constants"] += sum(t.numel() * t.element_size() for t in (module.absmax, module.offset, module.absmax2)
                                           if t is not None)
    return held


def run(method: str, cfg: StepConfig) -> dict:
    """Build, take one training step and report, in this process (so call it in a fresh one: see `measure`).

    Returns sizes in MiB (start_mib: resident size before the build; build_peak_mib, step_peak_mib:
    peak resident size after the build and after the step), bytes (held: measure_memory's parts;
    activations_saved; estimate: estimate_memory's parts for this model and step) and seconds.
    Raises RuntimeError if the step did not pass the build's peak (the peak would then be the build's).
    """
    torch.set_num_threads(cfg.threads)
    if method == "bnb-peft":  # every library in memory before the first reading
        import bitsandbytes  # noqa: F401
        import peft  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    start, t0 = current_memory_mb("cpu"), time.perf_counter()
    model = build_model(method, cfg).train()
    build_peak, t1 = peak_memory_mb("cpu"), time.perf_counter()
    generator = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len), generator=generator)  # (B, T)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    out = {}
    saved = measure_activations(lambda: out.setdefault("loss", model(input_ids=ids, labels=ids).loss), model)
    out["loss"].backward()
    optimizer.step()
    step_peak, t2 = peak_memory_mb("cpu"), time.perf_counter()
    estimate = estimate_memory(llama_config(cfg), quant=None if method == "lora" else "nf4", double_quant=True,
                               lora={"r": cfg.r, "target_modules": LLAMA_PROJECTIONS}, batch_size=cfg.batch_size,
                               seq_len=cfg.seq_len, optimizer="adamw_torch", gradient_checkpointing=False,
                               compute_dtype="float32", fused_loss=False)  # a plain loss holds the fp32 logits
    if not step_peak > build_peak:
        raise RuntimeError(f"{method}: the build's peak ({build_peak:.0f} MiB) was not passed by the step's "
                           f"({step_peak:.0f} MiB), so the peak measures the build: make the model larger")
    return {"method": method, "config": dataclasses.asdict(cfg), "start_mib": start, "build_peak_mib": build_peak,
            "step_peak_mib": step_peak, "held": held_parts(model, optimizer), "activations_saved": saved,
            "estimate": {p: getattr(estimate, p) for p in estimate.PARTS}, "loss": out["loss"].item(),
            "build_seconds": t1 - t0, "step_seconds": t2 - t1}


def _measure_one(method: str, cfg: StepConfig) -> dict:
    # MALLOC_MMAP_THRESHOLD_: glibc gives every freed block of 128 KiB or more back to the OS at once, so
    # the peak counts memory in use, not memory the C library kept for later (other C libraries ignore it)
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    proc = subprocess.run([sys.executable, "-m", "lora_lab.step_memory", method, "--config",
                           json.dumps(dataclasses.asdict(cfg))], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"measuring {method!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Measurement:
    """Measuring processes started by `start`, running in the background; `result()` waits for them."""

    def __init__(self, methods, cfg: StepConfig, parallel: int):
        self._pool = ThreadPoolExecutor(max_workers=parallel)  # each thread only waits on its process
        self._futures = {m: self._pool.submit(_measure_one, m, cfg) for m in methods}
        self._pool.shutdown(wait=False)

    def result(self) -> dict[str, dict]:
        """{method: run's report}, once every process has finished."""
        return {m: future.result() for m, future in self._futures.items()}


def start(methods=tuple(METHODS), cfg: StepConfig | None = None, parallel: int = 1) -> Measurement:
    """Start `run` for each method, each in a fresh Python process, at most `parallel` at once; return at once.

    Raises ValueError for an unknown method or parallel < 1 (before starting any process); result()
    raises RuntimeError, with the end of its error output, if a process fails.
    """
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {tuple(METHODS)}")
    if parallel < 1:
        raise ValueError(f"parallel={parallel} must be at least 1")
    return Measurement(methods, cfg or StepConfig(), parallel)


def measure(methods=tuple(METHODS), cfg: StepConfig | None = None, parallel: int = 2) -> dict[str, dict]:
    """`start(...).result()`: {method: report}, each measured in a fresh Python process."""
    return start(methods, cfg, parallel).result()


# ----------------------------------------------------------------------------- what backward keeps


def kept_for_backward(fn, module: nn.Module | None = None) -> list[dict]:
    """Every tensor a forward `fn()` leaves alive for the backward pass, one row per storage.

    Two ways to keep a tensor: autograd's saved tensors (seen with saved_tensors_hooks), and
    attributes a custom autograd.Function puts on its context, which no hook sees
    (bitsandbytes' MatMul4Bit keeps its packed weight and QuantState that way); the graph that
    `fn()` returns is walked to find the latter. Each row: shape, dtype, bytes (of the whole
    storage), own (True if the storage is one `module` holds anyway: parameters, buffers, 4-bit
    quantization state) and via ("saved" or the Function that keeps it).
    """
    own = set()
    if module is not None:
        for t in [*module.parameters(), *module.buffers()]:
            own.add(_storage_key(t))
            own.update(_storage_key(s) for s in _tensors_in(getattr(t, "quant_state", None)))
    rows: dict[tuple, dict] = {}

    def note(t: torch.Tensor, via: str) -> None:
        key = _storage_key(t)
        if key not in rows:
            rows[key] = dict(shape=tuple(t.shape), dtype=str(t.dtype).removeprefix("torch."),
                             bytes=t.untyped_storage().nbytes(), own=key in own, via=via)

    def pack(t):
        note(t, "saved")
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    seen, todo = set(), [t.grad_fn for t in _tensors_in(out) if t.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if isinstance(node, torch.autograd.function.BackwardCFunction):  # a custom Function's context
            for t in _tensors_in(vars(node)):
                note(t, type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return list(rows.values())


def _tensors_in(obj, depth: int = 3) -> list[torch.Tensor]:
    """Tensors in obj: a tensor, or inside tuples, lists, dicts and plain objects (a QuantState), `depth` levels down."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if depth == 0 or obj is None or isinstance(obj, (str, int, float, bool, torch.dtype, torch.Size, nn.Module)):
        return []
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (tuple, list)):
        items = obj
    elif hasattr(obj, "__dict__"):
        items = vars(obj).values()
    else:
        return []
    return [t for item in items for t in _tensors_in(item, depth - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_lab.step_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("method", choices=list(METHODS))
    parser.add_argument("--config", default="{}", help="JSON object of StepConfig fields")
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(StepConfig)}
    overrides = json.loads(args.config)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        parser.error(f"--config: unknown StepConfig field(s) {unknown}; known: {sorted(fields)}")
    print(json.dumps(run(args.method, StepConfig(**overrides))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
