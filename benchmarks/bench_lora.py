"""Train the same Llama-architecture model with lora_lab and with PEFT; print ms/step, peak memory and ours/PEFT.

Both libraries get the same config, seed, batch and data. Timing: one process holds both models and
alternates single training steps between them (the order swapping every step), so load from other
processes hits both alike. Memory: a fresh subprocess per run, alternating between the libraries, so
each peak belongs to one run alone. Usage:

    .venv/bin/python benchmarks/bench_lora.py            # 3 rounds x 20 steps
    .venv/bin/python benchmarks/bench_lora.py --quick    # 1 round x 5 steps
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


LIBS = ("ours", "peft")


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


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


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
        import lora_lab
        model = lora_lab.inject_lora(model, lora_lab.LoraConfig(**kw))
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

    import lora_lab  # noqa: F401

    torch.set_num_threads(b.threads)
    start = rss_mib()  # after imports: what follows is the run's own memory
    model, opt = build(lib, b)
    data = batches(b, b.warmup)
    for ids in data:
        step(model, opt, ids)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start  # Linux: ru_maxrss in KiB
    saved = {}  # storage -> bytes, each storage counted once

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=data[0], labels=data[0])
    return dict(peak_mib=peak, saved_mib=sum(saved.values()) / 2**20)


def sub(b: Bench, *args: str) -> dict:
    # glibc's mmap threshold pinned at 128 KiB: large freed tensors go back to the OS at once, so RSS
    # follows live memory instead of the allocator's history (peaks repeat to ±0.5 MiB, not ±10 MiB)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, __file__, "--bench", json.dumps(asdict(b)), *args], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 5 steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--bench", help=argparse.SUPPRESS)
    ap.add_argument("--memory", choices=LIBS, help=argparse.SUPPRESS)
    ap.add_argument("--time", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bench:  # a worker
        b = Bench(**json.loads(args.bench))
        print(json.dumps(memory_worker(args.memory, b) if args.memory else time_worker(b)))
        return
    b = Bench(rounds=1, steps=5, warmup=2, threads=args.threads) if args.quick else Bench(threads=args.threads)
    mem = {lib: [] for lib in LIBS}
    for i in range(b.rounds):
        for lib in (LIBS if i % 2 == 0 else LIBS[::-1]):
            mem[lib].append(sub(b, "--memory", lib))
            print(f"memory run {i + 1}/{b.rounds} {lib}: peak +{mem[lib][-1]['peak_mib']:.0f} MiB", file=sys.stderr)
    print(f"timing {b.rounds * b.steps} alternating steps per library ...", file=sys.stderr)
    t = sub(b, "--time")

    import peft
    import torch
    rows = {lib: (t["ms"][lib], statistics.median(m["peak_mib"] for m in mem[lib]),
                  statistics.median(m["saved_mib"] for m in mem[lib]), t["loss"][lib]) for lib in LIBS}
    print(f"\nLlama {b.layers} layers, hidden {b.hidden}, MLP {b.intermediate}, vocab {b.vocab}; LoRA r={b.r} "
          f"alpha={b.lora_alpha:g} dropout={b.lora_dropout} on all 7 projections ({t['trainable']:,} trainable)")
    print(f"batch {b.batch} x {b.seq} tokens, AdamW; {b.rounds * b.steps} timed steps per library, alternating; "
          f"{b.rounds} memory run(s) each; torch {torch.__version__}, peft {peft.__version__}, {b.threads} thread(s)\n")
    cols = ("ms/step (median)", "peak RSS growth MiB", "saved activations MiB", "final loss")
    print(f"{'':12s}" + "".join(f"{c:>23s}" for c in cols))
    for lib, name in zip(LIBS, ("lora_lab", "PEFT")):
        ms, peak, saved, loss = rows[lib]
        print(f"{name:12s}{ms:23.1f}{peak:23.1f}{saved:23.1f}{loss:23.6f}")
    ratios = [rows["ours"][k] / rows["peft"][k] for k in range(3)]
    print(f"{'ours/PEFT':12s}" + "".join(f"{x:23.3f}" for x in ratios))
    print(f"\nmedian of per-step ratios ours/PEFT (adjacent steps): {t['pair_ratio']:.3f}")
    print("peak RSS growth: the run's peak resident memory (getrusage ru_maxrss) minus its RSS after imports:\n"
          "model, LoRA, optimizer state and one step's activations. saved activations: bytes autograd keeps\n"
          "for backward in one step (each storage once). Same final loss = same training, step for step.")


if __name__ == "__main__":
    main()
