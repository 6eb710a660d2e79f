"""The LoRA training benchmark: the same Llama-architecture model trained with lora_lab and with PEFT.

Both libraries get the same config, seed, batches and data, so the final losses must agree and the timings
compare like with like. `time_worker` holds both models in one process and alternates single training steps
between them (the order swapping every step), so load from other processes hits both alike; `memory_worker`
measures one library's peak RSS growth and the bytes autograd keeps for backward. Notebook 03 runs both
at a small size in its own process; `benchmarks/bench_lora.py` runs them at full size, one fresh process per
memory run. Times are milliseconds (wall clock, `time.perf_counter`); memory is MiB (2**20 bytes).
"""

import statistics
import time
from dataclasses import dataclass

from .lora import LoraConfig, inject_lora
from .memory import current_memory_mb, peak_memory_mb

# every Llama projection, as QLoRA adapts them
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LIBS = ("ours", "peft")  # lora_lab, then PEFT


@dataclass
class Bench:
    hidden: int = 256  # Llama hidden size
    intermediate: int = 688  # MLP width (≈ 8/3 · hidden, as Llama)
    layers: int = 4  # decoder layers
    heads: int = 4  # attention heads
    vocab: int = 512  # vocabulary size
    batch: int = 4  # sequences per step
    seq: int = 128  # tokens per sequence
    r: int = 16  # LoRA rank
    lora_alpha: float = 32  # LoRA alpha
    lora_dropout: float = 0.05  # dropout on the LoRA path
    rounds: int = 3  # memory runs per library; timing runs rounds × steps steps per library
    steps: int = 20  # timed steps per library per round
    warmup: int = 3  # untimed steps first
    lr: float = 1e-3  # AdamW learning rate
    threads: int = 1  # torch threads: one is steadier on a CPU shared with other work
    seed: int = 0  # same for both libraries


def build(lib: str, b: Bench):
    """The same random-init Llama with LoRA from `lib`, and its AdamW."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(b.seed)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=b.hidden, intermediate_size=b.intermediate,
                                         num_hidden_layers=b.layers, num_attention_heads=b.heads,
                                         num_key_value_heads=b.heads, vocab_size=b.vocab))
    kw = dict(r=b.r, lora_alpha=b.lora_alpha, lora_dropout=b.lora_dropout, target_modules=TARGETS,
              init_lora_weights="gaussian")
    torch.manual_seed(b.seed + 1)  # the same draws for A in both libraries
    if lib == "peft":
        import peft
        model = peft.get_peft_model(model, peft.LoraConfig(**kw))
    else:
        model = inject_lora(model, LoraConfig(**kw))
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=b.lr)


def step(model, opt, ids) -> float:
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    return loss.item()


def batches(b: Bench, n: int):
    import torch
    return torch.randint(0, b.vocab, (n, b.batch, b.seq), generator=torch.Generator().manual_seed(b.seed))


def time_worker(b: Bench) -> dict:
    """Both models in one process, one step each in turn; each keeps its own RNG stream (dropout masks)."""
    import torch
    torch.set_num_threads(b.threads)
    runs = {lib: build(lib, b) for lib in LIBS}
    torch.manual_seed(b.seed + 2)
    rng = {lib: torch.get_rng_state() for lib in LIBS}
    times, loss = {lib: [] for lib in LIBS}, {}
    for i, ids in enumerate(batches(b, b.warmup + b.rounds * b.steps)):
        for lib in (LIBS if i % 2 == 0 else LIBS[::-1]):
            torch.set_rng_state(rng[lib])
            t = time.perf_counter()
            loss[lib] = step(*runs[lib], ids)
            if i >= b.warmup:
                times[lib].append((time.perf_counter() - t) * 1000)
            rng[lib] = torch.get_rng_state()
    pairs = [o / p for o, p in zip(times["ours"], times["peft"])]
    trainable = sum(p.numel() for p in runs["ours"][0].parameters() if p.requires_grad)
    return dict(ms={lib: statistics.median(t) for lib, t in times.items()}, loss=loss,
                pair_ratio=statistics.median(pairs), trainable=trainable)


def memory_worker(lib: str, b: Bench) -> dict:
    """One library in a fresh process: peak RSS growth over a few steps, and autograd's saved bytes per step."""
    import peft  # noqa: F401  (both libraries in both runs: the same process state before the build)
    import torch

    torch.set_num_threads(b.threads)
    start = current_memory_mb("cpu")  # after imports: what follows is the run's own memory
    model, opt = build(lib, b)
    data = batches(b, b.warmup)
    for ids in data:
        step(model, opt, ids)
    peak = peak_memory_mb("cpu") - start
    saved = {}  # storage -> bytes, each storage counted once

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=data[0], labels=data[0])
    return dict(peak_mib=peak, saved_mib=sum(saved.values()) / 2**20)
