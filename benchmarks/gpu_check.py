"""Check the Llama-2-7B QLoRA recipe on a GPU, in one command and without the Hugging Face hub.

What it does, in order, writing its table to OUT/gpu_check.md (and every figure to OUT/gpu_check.json):

1. caps this process's GPU memory to a Colab T4's 14.75 GiB (CUDA context included), with
   torch.cuda.set_per_process_memory_fraction;
2. NF4 on the GPU: lora_lab's quantize_nf4 of CUDA tensors against bitsandbytes' CUDA kernels, byte
   for byte, and both dequantizations of the same bytes; then dequantize time against bitsandbytes;
3. writes a checkpoint with Llama-2-7b-chat's shape (32 layers, hidden 4096, MLP 11008, vocab 32000)
   and random fp16 weights, one decoder layer per shard, with the embedded tokenizer, plus rows of
   full length (1024 tokens);
4. runs the `llama2-7b-t4` profile on it through lora_lab.finetune, which loads the checkpoint with
   lora_lab.load_base_model(path, quantization=NF4 config) and trains with TRL, under the T4's plan
   forced: fp16 compute, no bf16, paged AdamW; a few dozen steps;
5. prints peak allocated and reserved memory during training against each part of
   `lora-lab estimate --profile llama2-7b-t4`, seconds per step, tokens per second, and whether it fit;
6. on a machine with 2 or more GPUs, runs the same profile on the same checkpoint fully sharded over all of
   them (FSDP-QLoRA: `accelerate launch --config_file "$(lora-lab fsdp-config)" --num_processes N -m lora_lab
   finetune --sharding fsdp ...`, each GPU's own plan, uncapped) and prints each GPU's peak allocated memory
   against the per-device estimate, next to the one-GPU run of step 4;
7. runs the `tiny` profile end to end (under the same plan).

On a GPU machine with its own Python, torch (2.11 or later) and transformers (5.17 or later), and no
network: install the kit's other packages from local wheels (torch and transformers stay as they
are), then run the check from the repository root (the kit itself needs no install):

    pip install --no-index --find-links wheels/ bitsandbytes==0.50.2 trl==1.16.0 datasets==5.2.0 \\
        peft==0.21.2 accelerate==1.15.0
    PYTHONPATH=. python benchmarks/gpu_check.py runs/gpu_check

Wheels for wheels/ (fetch where there is network: `pip download --no-deps -d wheels/ NAME==VERSION`
for each; pip install --no-index then names any that is still missing):
    bitsandbytes==0.50.2 (manylinux x86_64)   needs torch, numpy, packaging
    trl==1.16.0        needs accelerate, datasets, huggingface_hub, jinja2, numpy, packaging, pandas,
                       psutil, pyarrow, pyyaml, transformers
    datasets==5.2.0    needs filelock, numpy, pyarrow>=24, dill>=0.3,<0.4.2, pandas, tqdm, xxhash,
                       multiprocess<0.70.20, fsspec<=2026.9.0, huggingface-hub>=1.31, packaging, pyyaml
    peft==0.21.2       (the kit's LoRA in the fine-tune) needs accelerate, safetensors, psutil, tqdm
    accelerate==1.15.0 needs psutil, pyyaml, safetensors, huggingface_hub
    and those of their needs the machine lacks, e.g. pyarrow==26.0.1, dill==0.4.1,
    multiprocess==0.70.19, xxhash==4.1.0, fsspec==2026.9.0, pandas==3.1.1, jinja2==3.1.6,
    psutil==7.2.2, huggingface_hub==2.4.0 (the versions this kit is tested with).

It needs about 14 GB of disk for the random checkpoint (deleted at the end; --keep-checkpoint keeps it).
The same code runs small on a CPU, as `make test` does (tests/test_gpu_check.py):

    python benchmarks/gpu_check.py OUT --layers 2 --hidden-size 256 --intermediate-size 512 --heads 4 \\
        --vocab-size 2048 --seq-len 64 --batch-size 2 --steps 2 --tiny-steps 2 --max-new-tokens 2
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub: read before transformers loads
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch

from lora_lab.env import T4_USABLE_GIB, versions
from lora_lab.finetune import T4, estimate_for, finetune, plan, resolve_config
from lora_lab.memory import (
    GIB,
    LLAMA2_7B,
    dequantize_workspace,
    measure_activations,
    measure_memory,
)
from lora_lab.nf4 import dequantize_nf4, quantize_nf4
from lora_lab.paths import EMBEDDED_DATASET, EMBEDDED_MODEL

MiB = 2**20
CPU_MAX_HIDDEN = 1024  # a CPU runs the same code only at reduced widths


# ----------------------------------------------------------------------------- the random checkpoint


def llama_config(args):
    from transformers import LlamaConfig

    shape = dict(LLAMA2_7B, num_hidden_layers=args.layers, hidden_size=args.hidden_size,
                 intermediate_size=args.intermediate_size, num_attention_heads=args.heads,
                 num_key_value_heads=args.heads, vocab_size=args.vocab_size)
    return LlamaConfig(**shape, dtype="float16")


def write_random_checkpoint(path: Path, config, device: str, seed: int = 0) -> int:
    """config's LlamaForCausalLM with random fp16 weights (N(0, 0.02²), norms 1), one decoder layer per shard,
    and the embedded tokenizer; returns the bytes written. Never holds more than one layer in memory."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    with torch.device("meta"):
        shapes = {name: t.shape for name, t in LlamaForCausalLM(config).state_dict().items()}
    shards: dict[str, list[str]] = {}
    for name in shapes:  # model.layers.{i}.* in shard i, the rest (embeddings, norm, head) in the last
        parts = name.split(".")
        key = parts[2] if parts[:2] == ["model", "layers"] else "rest"
        shards.setdefault(key, []).append(name)
    generator = torch.Generator(device).manual_seed(seed)
    weight_map, total = {}, 0
    for k, (key, names) in enumerate(shards.items(), start=1):
        tensors = {}
        for name in names:
            if "norm" in name:
                t = torch.ones(shapes[name], dtype=torch.float16)
            else:
                t = (torch.randn(shapes[name], generator=generator, device=device) * 0.02).half().cpu()
            tensors[name] = t
            total += t.numel() * 2
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(path / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
        del tensors
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.save_pretrained(path)
    AutoTokenizer.from_pretrained(EMBEDDED_MODEL).save_pretrained(path)
    return total


def write_full_length_rows(folder: Path, tokenizer, rows: int, seq_len: int, seed: int = 0) -> None:
    """rows Llama-2 chat rows of at least seq_len tokens (cut to seq_len in training): a short prompt, a long answer."""
    lines = [json.loads(line)["text"] for line in (EMBEDDED_DATASET / "train.jsonl").read_text().splitlines()]
    words = sorted({w for text in lines for w in text.split("[/INST]")[1].replace("</s>", "").split()})
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    with open(folder / "train.jsonl", "w") as f:
        for _ in range(rows):
            answer = " ".join(rng.choice(words) for _ in range(seq_len))
            text = f"<s>[INST] Write {seq_len} words. [/INST] {answer} </s>"
            while len(tokenizer(text, add_special_tokens=False).input_ids) < seq_len:
                answer += " " + " ".join(rng.choice(words) for _ in range(seq_len))
                text = f"<s>[INST] Write {seq_len} words. [/INST] {answer} </s>"
            f.write(json.dumps({"text": text}) + "\n")


# ----------------------------------------------------------------------------- watching the training


class _DevicePoller:
    """Polls the whole device's used memory (torch.cuda.mem_get_info) every 20 ms: what nvidia-smi shows."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def watch_training(record: dict, cuda: bool):
    """Around every SFTTrainer.train call inside: peak memory of training alone, step times, the trainer itself."""
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            record.setdefault("step_ends", []).append(time.perf_counter())

    original = SFTTrainer.train

    def train(self, *args, **kwargs):
        record["trainer"] = self
        self.add_callback(StepClock())
        poller = _DevicePoller() if cuda else contextlib.nullcontext()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        record["start"] = time.perf_counter()
        try:
            with poller:
                return original(self, *args, **kwargs)
        finally:
            if cuda:
                record.update(peak_allocated=torch.cuda.max_memory_allocated(),
                              peak_reserved=torch.cuda.max_memory_reserved(), device_used=poller.peak)

    SFTTrainer.train = train
    try:
        yield record
    finally:
        SFTTrainer.train = original


def step_seconds(record: dict) -> float:
    """Median seconds per optimizer step, the first step (warm-up) left out when there are others."""
    ends = [record["start"]] + record["step_ends"]
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    return statistics.median(gaps[1:] if len(gaps) > 1 else gaps)


# ----------------------------------------------------------------------------- the checks


def check_nf4_parity(device: str, big: tuple[int, int], dtypes: list[torch.dtype]) -> list[dict]:
    """quantize_nf4 vs bitsandbytes.functional.quantize_4bit on `device`, and both dequantizations of the same bytes."""
    import bitsandbytes.functional as bnbF

    rows = []
    shapes = [big, (big[1], big[0]), (1000, 37), (3, 5), (1, 64 * 3 + 1)]
    for shape in shapes:
        for dtype in dtypes:
            w = torch.randn(shape, generator=torch.Generator().manual_seed(len(rows))).to(device, dtype)
            for dq in (False, True):
                ours = quantize_nf4(w, double_quant=dq)
                packed, state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=dq)
                row = {"shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "double_quant": dq,
                       "packed_equal": torch.equal(ours.packed, packed.view(torch.uint8).reshape(-1))}
                if dq:
                    row["offset_equal"] = torch.equal(ours.offset, state.offset)
                    row["absmax2_equal"] = torch.equal(ours.absmax2, state.state2.absmax)
                    row["absmax_codes_differing"] = int((ours.absmax != state.absmax).sum())
                    row["absmax_blocks"] = ours.absmax.numel()
                else:
                    row["absmax_equal"] = torch.equal(ours.absmax, state.absmax)
                mine = dequantize_nf4(ours)
                theirs = bnbF.dequantize_4bit(*ours.to_bitsandbytes()).view(shape)
                row["dequantize_max_diff"] = (mine.float() - theirs.float()).abs().max().item()
                rows.append(row)
    return rows


def time_dequantize(device: str, shape: tuple[int, int], dtype: torch.dtype, repeats: int = 20) -> dict:
    """Median milliseconds to dequantize one (out, in) NF4 weight (double quant) to `dtype`: lora_lab vs bitsandbytes."""
    import bitsandbytes.functional as bnbF

    q = quantize_nf4(torch.randn(shape, device=device, dtype=dtype))
    packed, state = q.to_bitsandbytes()
    timings = {}
    for name, fn in (("lora_lab", lambda: dequantize_nf4(q, dtype)), ("bitsandbytes", lambda: bnbF.dequantize_4bit(packed, state))):
        fn()
        runs = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - t0)
        timings[name] = statistics.median(runs) * 1e3
    return {"shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "lora_lab_ms": timings["lora_lab"],
            "bitsandbytes_ms": timings["bitsandbytes"], "ratio": timings["lora_lab"] / timings["bitsandbytes"]}


def run_profile(args, out: Path, checkpoint: Path, data: Path, cuda: bool, report: dict) -> None:
    """The llama2-7b-t4 profile on the random checkpoint: memory per part, speed, fit."""
    config = resolve_config("llama2-7b-t4", model=str(checkpoint), dataset=str(data), max_steps=args.steps,
                            per_device_train_batch_size=args.batch_size, max_length=args.seq_len,
                            logging_steps=max(1, args.steps // 6), max_new_tokens=args.max_new_tokens)
    hardware = T4 if cuda else None  # the T4's plan: fp16, no bf16, paged AdamW (a CPU gets its own)
    run_plan = plan(config, hardware)
    report["plan"] = {k: run_plan[k] for k in ("device", "precision", "compute_dtype", "fp16", "bf16", "optim")}
    record: dict = {}
    try:
        with watch_training(record, cuda):
            result = finetune(config, out=out / "llama2-7b-t4", hardware=hardware, progress=False, log=print)
    except torch.OutOfMemoryError as err:
        report["fit"], report["error"] = False, f"out of memory: {str(err).splitlines()[0]}"
        return
    trainer, model = record["trainer"], result.model
    seconds = step_seconds(record)
    report.update(fit=True, steps=result.metrics["steps"], s_per_step=seconds,
                  tokens_per_s=args.batch_size * args.seq_len / seconds, final_loss=result.metrics["final_loss"])
    for key in ("peak_allocated", "peak_reserved", "device_used"):
        if key in record:
            report[key] = record[key]
    report["peak_rss_mib"] = result.metrics["peak_memory_mb"] if not cuda else None
    estimate = estimate_for(config, run_plan, seq_len=args.seq_len, model_config=model.config)
    if args.layers == 32 and (args.hidden_size, args.intermediate_size, args.vocab_size) == (4096, 11008, 32000):
        cli = estimate_for(resolve_config("llama2-7b-t4"), plan(resolve_config("llama2-7b-t4"), T4))
        report["matches_lora_lab_estimate"] = cli.as_dict() == estimate.as_dict()
    held = measure_memory(model, trainer.optimizer)
    held["gradients"] = 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)  # fp32, alive in backward
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch_size)])
    batch = {k: v.to(model.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    held["activations"], report["activations_how"] = activations_kept(trainer, model, batch, cuda)
    report["parts"] = {p: {"estimate": getattr(estimate, p), "measured": held[p]} for p in estimate.PARTS}
    report["estimate_total"] = estimate.total
    report["dequantize_workspace"] = dequantize_workspace(model.config, run_plan["compute_dtype"])
    report["paged_optimizer"] = run_plan["optim"].startswith("paged_")
    # mixed precision casts the fp32 LoRA weights to 16 bits once per step and keeps the copies
    report["autocast_copies"] = 2 * estimate.lora_params if run_plan["fp16"] or run_plan["bf16"] else 0
    if "peak_allocated" in report:  # paged optimizer state lives in CUDA managed memory, outside torch's allocator
        report["allocator_estimate"] = estimate.total - (estimate.optimizer_state if report["paged_optimizer"] else 0)
        report["peak_vs_estimate"] = report["peak_allocated"] / report["allocator_estimate"] - 1


def fsdp_command(args, out: Path, checkpoint: Path, data: Path, gpus: int) -> list[str]:
    """The command that fine-tunes the 7B profile on the random checkpoint, fully sharded over `gpus` processes."""
    from lora_lab.fsdp import ACCELERATE_CONFIG

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
            "--num_processes", str(gpus), "-m", "lora_lab", "finetune", "--profile", "llama2-7b-t4",
            "--model", str(checkpoint), "--dataset", str(data), "--sharding", "fsdp", "--num-processes", str(gpus),
            "--max-steps", str(args.steps), "--per-device-train-batch-size", str(args.batch_size),
            "--max-length", str(args.seq_len), "--logging-steps", str(max(1, args.steps // 6)),
            "--max-new-tokens", str(args.max_new_tokens), "--save-steps", "0", "--out", str(out), "--no-progress"]


def run_fsdp(args, out: Path, checkpoint: Path, data: Path, report: dict) -> None:
    """The profile fully sharded over every GPU of the machine: each GPU's peak against the per-device estimate."""
    import subprocess

    from lora_lab.fsdp import check_process_count
    from lora_lab.memory import _linear_layers, meta_model

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    blocks = {n: i * o // 64 for n, i, o, head in _linear_layers(meta_model(llama_config(args))) if not head}

    def divides(k):
        try:
            check_process_count(k, blocks)
            return True
        except ValueError:
            return False

    gpus = max((k for k in range(2, found + 1) if divides(k)), default=found)  # the kit wants equal shares of blocks
    report["command"] = " ".join(fsdp_command(args, out / "fsdp", checkpoint, data, max(gpus, 2)))
    if gpus < 2:
        report["skipped"] = f"FSDP needs 2 or more GPUs; this machine has {found}"
        return
    if gpus < found:
        report["note"] = f"{gpus} of the {found} GPUs: {found} does not divide every 4-bit layer's blocks"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                                       os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    done = subprocess.run(fsdp_command(args, out / "fsdp", checkpoint, data, gpus), env=env, capture_output=True,
                          text=True)
    report.update(gpus=gpus, seconds=round(time.perf_counter() - t0, 1), returncode=done.returncode)
    (out / "fsdp.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"the FSDP run failed (exit {done.returncode}); its output is in {out / 'fsdp.log'}:\n"
                           + done.stderr[-2000:])
    metrics = json.loads((out / "fsdp" / "metrics.json").read_text())
    estimate = metrics["memory_estimate_mb"]
    report.update(peak_mib=metrics["peak_memory_mb_per_process"], estimate_mib=estimate,
                  steps=metrics["steps"], train_seconds=metrics["train_seconds"], plan=metrics["plan"])
    report["peak_vs_estimate"] = [peak / estimate["total"] - 1 for peak in report["peak_mib"]]


def activations_kept(trainer, model, batch: dict, cuda: bool) -> tuple[int, str]:
    """Bytes one training forward leaves alive for backward, and how they were counted."""
    model.train()
    if cuda:  # everything the forward allocated and still holds: saved tensors and checkpointed layers' inputs
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        with trainer.compute_loss_context_manager():  # as Trainer.training_step runs it
            loss = trainer.compute_loss(model, dict(batch))
        torch.cuda.synchronize()
        kept = torch.cuda.memory_allocated() - before
        del loss
        return kept, "GPU memory a training forward allocated and still holds before backward"
    # no allocator statistics on a CPU: autograd's saved tensors, which miss what gradient checkpointing keeps
    return (measure_activations(lambda: trainer.compute_loss(model, dict(batch)), model),
            "tensors autograd saves in a training forward (not the inputs gradient checkpointing keeps)")


def run_tiny(args, out: Path, cuda: bool) -> dict:
    config = resolve_config("tiny", max_steps=args.tiny_steps, logging_steps=max(1, min(10, args.tiny_steps)))
    result = finetune(config, out=out / "tiny", hardware=T4 if cuda else None, progress=False, log=print)
    m = result.metrics
    return {"steps": m["steps"], "before": m["metric_before"], "after": m["metric_after"],
            "train_seconds": m["train_seconds"], "precision": m["plan"]["precision"]}


def cap_memory(gib: float) -> dict:
    """Let this process use at most `gib` of the GPU, CUDA context included, as on a T4."""
    torch.zeros(1, device="cuda")  # creates the CUDA context
    free, total = torch.cuda.mem_get_info()
    context = total - free - torch.cuda.memory_reserved()  # outside torch's allocator
    cap = min(gib * GIB - context, total)
    torch.cuda.set_per_process_memory_fraction(cap / total)
    return {"gpu": torch.cuda.get_device_name(), "device_total": total, "context": context, "allocator_cap": cap,
            "cap_gib": gib, "bf16": torch.cuda.is_bf16_supported()}


# ----------------------------------------------------------------------------- the table


def _size(nbytes, unit: str) -> str:
    return "—" if nbytes is None else f"{nbytes / (GIB if unit == 'GiB' else MiB):.3f}"


def table(report: dict) -> str:
    env, lines = report["environment"], []
    where = f"{env['gpu']} ({env['device_total'] / GIB:.1f} GiB), capped to {env['cap_gib']} GiB" if env.get("gpu") else "CPU"
    lines += ["# lora-lab GPU check", "", f"- device: {where}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items())]
    if env.get("gpu"):
        lines.append(f"- CUDA context (outside torch's allocator): {env['context'] / MiB:.0f} MiB; allocator cap "
                     f"{env['allocator_cap'] / GIB:.2f} GiB")
    for name, error in report["errors"].items():
        lines.append(f"- **{name} FAILED**: {error.strip().splitlines()[-1]}")
    if "parity" in report:
        lines += ["", f"## NF4 on {report['device']}: lora_lab.quantize_nf4 vs bitsandbytes.quantize_4bit", "",
                  "| shape | dtype | double quant | packed bytes | absmax / offset, absmax2 | absmax codes differing | dequantize max diff |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["parity"]:
            scales = (f"{r['offset_equal']}, {r['absmax2_equal']}" if r["double_quant"] else str(r["absmax_equal"]))
            codes = f"{r['absmax_codes_differing']} of {r['absmax_blocks']}" if r["double_quant"] else "—"
            lines.append(f"| {tuple(r['shape'])} | {r['dtype']} | {r['double_quant']} | {'identical' if r['packed_equal'] else 'DIFFER'} "
                         f"| {scales} | {codes} | {r['dequantize_max_diff']:.2e} |")
    if "dequantize_time" in report:
        t = report["dequantize_time"]
        lines += ["", f"dequantize one {tuple(t['shape'])} NF4 weight to {t['dtype']}: lora_lab {t['lora_lab_ms']:.2f} ms, "
                      f"bitsandbytes {t['bitsandbytes_ms']:.2f} ms ({t['ratio']:.2f}x)"]
    p = report.get("profile", {})
    unit = "GiB" if p.get("estimate_total", 0) > GIB else "MiB"
    _g = lambda nbytes: _size(nbytes, unit)
    if p:
        lines += ["", f"## llama2-7b-t4 profile on random weights: {report['shape']}", "",
                  f"- plan: {p.get('plan')}"]
    if p.get("fit") is False:
        lines.append(f"- did NOT fit: {p['error']}")
    if "parts" in p:
        lines += ["", f"| part | estimate {unit} | measured {unit} |", "|---|---|---|"]
        for part, v in p["parts"].items():
            lines.append(f"| {part.replace('_', ' ')} | {_g(v['estimate'])} | {_g(v['measured'])} |")
        lines.append(f"| **total** | {_g(p['estimate_total'])} | |")
        lines += ["", "Measured parts: weights, 4-bit constants, LoRA weights and optimizer state are the tensors the "
                      "model and optimizer hold after training; gradients are 4 bytes per LoRA weight (freed by "
                      f"zero_grad after each step); activations: {p['activations_how']}."]
        if "peak_allocated" in p:
            expected, diff = p["allocator_estimate"], p["peak_vs_estimate"]
            lines += ["", f"- peak allocated during training: {_g(p['peak_allocated'])} {unit}; reserved "
                          f"{_g(p['peak_reserved'])} {unit}; whole device (polled, context and paged memory included) "
                          f"{_g(p['device_used'])} {unit}",
                      f"- estimate in torch's allocator{' (paged optimizer state lives in CUDA managed memory, outside it)' if p['paged_optimizer'] else ''}: "
                      f"{_g(expected)} {unit}: measured {diff:+.1%}{'  **more than 15% off**' if abs(diff) > 0.15 else ''}",
                      f"- not in the estimate: autocast's 16-bit copies of the LoRA weights {p['autocast_copies'] / MiB:.0f} MiB, "
                      f"dequantize workspace {p['dequantize_workspace'] / MiB:.0f} MiB, allocator "
                      f"slack {(p['peak_reserved'] - p['peak_allocated']) / MiB:.0f} MiB, CUDA context"]
        elif p.get("peak_rss_mib"):
            lines.append(f"- peak process RSS (CPU, everything the process held): {p['peak_rss_mib']:.0f} MiB")
        lines += [f"- {p['s_per_step']:.3f} s/step (median, first step left out), {p['tokens_per_s']:.0f} tokens/s, "
                  f"{p['steps']} steps, last logged loss {p['final_loss']:.4f}", f"- fit: {p['fit']}"]
        if "matches_lora_lab_estimate" in p:
            lines.append(f"- estimate identical to `lora-lab estimate --profile llama2-7b-t4`: {p['matches_lora_lab_estimate']}")
    f = report.get("fsdp", {})
    if f:
        lines += ["", "## the same profile fully sharded (FSDP-QLoRA)", "", f"- `{f['command']}`"]
        if "skipped" in f:
            lines.append(f"- skipped: {f['skipped']}")
        if "note" in f:
            lines.append(f"- {f['note']}")
        if "peak_mib" in f:
            e = f["estimate_mib"]
            lines += [f"- {f['gpus']} GPUs, plan {f['plan'].get('precision')}, 4-bit codes stored as "
                      f"{f['plan'].get('quant_storage')}; {f['steps']} steps in {f['train_seconds']:.0f} s",
                      f"- per-device estimate (longest row): {e['total']:.0f} MiB, of which weights {e['weights']:.0f}, "
                      f"gathered layers {e.get('parallel_buffers', 0):.0f}, activations {e['activations']:.0f}", "",
                      "| GPU | peak allocated MiB | vs estimate |", "|---|---|---|"]
            for rank, (peak, diff) in enumerate(zip(f["peak_mib"], f["peak_vs_estimate"])):
                lines.append(f"| {rank} | {peak:.0f} | {diff:+.1%} |")
            if "peak_allocated" in p:
                lines.append(f"- one GPU, the run above: {p['peak_allocated'] / MiB:.0f} MiB allocated at its peak")
    if "tiny" in report:
        t = report["tiny"]
        lines += ["", f"## tiny profile end to end ({t['precision']}): held-out exact match {t['before']:.1%} -> "
                      f"{t['after']:.1%} in {t['steps']} steps, {t['train_seconds']:.0f} s of training"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the command


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Check the 7B QLoRA recipe on a GPU (T4's plan and memory).")
    parser.add_argument("out", type=Path, help="folder for gpu_check.md, gpu_check.json and the runs' outputs")
    shape = parser.add_argument_group("model shape (default: Llama-2-7b-chat's)")
    shape.add_argument("--layers", type=int, default=32)
    shape.add_argument("--hidden-size", type=int, default=4096)
    shape.add_argument("--intermediate-size", type=int, default=11008)
    shape.add_argument("--heads", type=int, default=32)
    shape.add_argument("--vocab-size", type=int, default=32000)
    run = parser.add_argument_group("run")
    run.add_argument("--seq-len", type=int, default=1024, help="tokens per row (every row is full length)")
    run.add_argument("--batch-size", type=int, default=4, help="rows per step (the profile's 4)")
    run.add_argument("--steps", type=int, default=30, help="optimizer steps of the 7B profile")
    run.add_argument("--tiny-steps", type=int, default=300, help="steps of the tiny profile (its default: 300)")
    run.add_argument("--max-new-tokens", type=int, default=16, help="tokens per sample reply before/after the 7B run")
    run.add_argument("--parity-dtypes", type=lambda s: s.split(","), default=["float32", "float16", "bfloat16"],
                     help="input dtypes of the NF4 parity check, comma-separated")
    run.add_argument("--memory-gib", type=float, default=T4_USABLE_GIB, help="GPU memory cap, CUDA context included")
    run.add_argument("--cpu-anyway", action="store_true", help="run large shapes on a CPU too (very slow)")
    run.add_argument("--keep-checkpoint", action="store_true", help="keep the random checkpoint in OUT/checkpoint")
    args = parser.parse_args(argv)
    for name in ("layers", "hidden_size", "intermediate_size", "heads", "vocab_size", "seq_len", "batch_size",
                 "steps", "tiny_steps", "max_new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be a positive integer")
    for name in ("hidden_size", "intermediate_size"):  # whole 64-weight blocks per row
        if getattr(args, name) % 64:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be a multiple of 64")
    if args.hidden_size % args.heads:
        parser.error(f"--heads={args.heads} must divide --hidden-size={args.hidden_size}")
    bad = [d for d in args.parity_dtypes if d not in ("float32", "float16", "bfloat16")]
    if bad:
        parser.error(f"--parity-dtypes: {bad} not among float32, float16, bfloat16")
    if not 1 <= args.memory_gib:
        parser.error(f"--memory-gib={args.memory_gib} must be at least 1")
    if (args.out / "gpu_check.md").exists():
        parser.error(f"{args.out} already holds a check (gpu_check.md): give another folder")
    if not torch.cuda.is_available() and args.hidden_size > CPU_MAX_HIDDEN and not args.cpu_anyway:
        parser.error(f"no GPU here, and --hidden-size={args.hidden_size} is too large for a CPU run; on a CPU, run the "
                     "same code small: --layers 2 --hidden-size 256 --intermediate-size 512 --heads 4 --vocab-size 2048 "
                     "--seq-len 64 --batch-size 2 --steps 2 --tiny-steps 2 --max-new-tokens 2 (or add --cpu-anyway)")
    return args


def main(argv=None) -> dict:
    """Run every check; return the report (also written to OUT). report["errors"] names any stage that failed."""
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": device, "args": {k: str(v) for k, v in vars(args).items()}, "errors": {},
                    "shape": f"{args.layers} layers, hidden {args.hidden_size}, MLP {args.intermediate_size}, vocab "
                             f"{args.vocab_size}, batch {args.batch_size} x {args.seq_len} tokens, {args.steps} steps"}
    report["environment"] = {"versions": versions(), **(cap_memory(args.memory_gib) if cuda else {})}

    def stage(name, fn):
        t0 = time.perf_counter()
        try:
            fn()
        except Exception:  # noqa: BLE001 - one failed check must not hide the others
            report["errors"][name] = traceback.format_exc()
            print(report["errors"][name], file=sys.stderr)
        report.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    big = (args.intermediate_size, args.hidden_size)
    dtypes = [getattr(torch, name) for name in args.parity_dtypes]
    stage("nf4 parity", lambda: report.update(parity=check_nf4_parity(device, big, dtypes)))
    stage("dequantize time", lambda: report.update(
        dequantize_time=time_dequantize(device, big, torch.float16 if cuda else torch.float32)))

    checkpoint = out / "checkpoint"
    data = Path(tempfile.mkdtemp(dir=out, prefix="rows-"))

    def profile():
        from transformers import AutoTokenizer

        checkpoint.mkdir()
        t0 = time.perf_counter()
        report["checkpoint_bytes"] = write_random_checkpoint(checkpoint, llama_config(args), device)
        report["checkpoint_seconds"] = time.perf_counter() - t0
        write_full_length_rows(data / "rows", AutoTokenizer.from_pretrained(checkpoint), args.steps * args.batch_size,
                               args.seq_len)
        report["profile"] = {}
        run_profile(args, out, checkpoint, data / "rows", cuda, report["profile"])

    def sharded():
        report["fsdp"] = {}
        run_fsdp(args, out, checkpoint, data / "rows", report["fsdp"])

    try:
        stage("llama2-7b-t4 profile", profile)
        if (data / "rows").exists():
            stage("llama2-7b-t4 profile, fully sharded", sharded)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        if not args.keep_checkpoint:
            shutil.rmtree(checkpoint, ignore_errors=True)
    stage("tiny profile", lambda: report.update(tiny=run_tiny(args, out, cuda)))

    text = table(report)
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(text)
    print(f"wrote {out / 'gpu_check.md'} and gpu_check.json" + (f"; FAILED: {', '.join(report['errors'])}" if report["errors"] else ""))
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
