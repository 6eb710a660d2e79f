"""Train the same Llama-architecture model with lora_lab and with PEFT; print ms/step, peak memory and ours/PEFT.

The benchmark itself lives in the package (lora_lab/bench.py: notebook 03 runs it small); this script runs it
at full size. Both libraries get the same config, seed, batch and data. Timing: one process holds both models and
alternates single training steps between them (the order swapping every step), so load from other
processes hits both alike. Memory: a fresh subprocess per run, alternating between the libraries, so
each peak belongs to one run alone. Usage:

    .venv/bin/python benchmarks/bench_lora.py            # 3 rounds x 20 steps
    .venv/bin/python benchmarks/bench_lora.py --quick    # 1 round x 5 steps
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict

from lora_lab.bench import LIBS, Bench, memory_worker, time_worker


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
