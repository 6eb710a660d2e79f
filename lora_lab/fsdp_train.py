"""QLoRA training of the embedded tiny Llama in one process, and the same steps sharded over N CPU processes.

`train_one_process` and `train_sharded` run the same optimizer steps on the same rows: each step takes
N micro-batches of `batch_size` rows. Sharded, process k runs micro-batch k and FSDP averages the
gradients across the processes (reduce-scatter); in one process the N micro-batches are accumulated,
each loss divided by N. Both are then one AdamW step on the same mean gradient, so the losses agree to
float rounding (the sums run in another order). Both measure what each process holds (lora_lab.fsdp.
local_bytes) after the first optimizer step, and what FSDP gathers while the first step runs.

The processes are started with torch.multiprocessing (spawn), which works from a notebook as from a
script; they meet through a file in a temporary folder (no network port) and talk over gloo, PyTorch's
CPU backend. This module must be importable by the child processes: the worker cannot live in a notebook.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import warnings
from copy import deepcopy as copy_module
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import fsdp

STEPS_MEASURED = 1  # bytes are read after this many optimizer steps: gradients and AdamW state exist then


@dataclass
class ShardSettings:
    steps: int = 3                # optimizer steps
    batch_size: int = 4           # rows per micro-batch (one micro-batch per process and step)
    micro_batches: int = 2        # micro-batches per step: the number of processes when sharded
    lora_r: int = 16              # LoRA on all seven projections, as the tiny profile
    lora_alpha: float = 32
    lr: float = 2e-3
    max_grad_norm: float = 1.0
    max_length: int = 64          # tokens per row
    base: str = "lora_lab"        # whose 4-bit layers: "lora_lab" (NF4Linear) or "bitsandbytes" (Linear4bit, PEFT LoRA)
    quant_storage: str = "uint8"  # how the 4-bit codes are stored (lora_lab.fsdp.shardable; bnb_4bit_quant_storage)
    shard_constants: bool = True  # lora_lab: make the block scales parameters (False: buffers, whole everywhere)
    seed: int = 0


@dataclass
class RunResult:
    world_size: int
    rank: int
    losses: list[float]           # the mean loss over the step's micro-batches, per step
    bytes: dict[str, int]         # lora_lab.fsdp.local_bytes after the first step
    gathers: list = field(default_factory=list)  # (phase, layer, gathered bytes) during the first step
    seconds: float = 0.0          # the training steps alone
    bytes_as_loaded: dict[str, int] = field(default_factory=dict)  # sharded as the layers come (scales as buffers)


def build(settings: ShardSettings):
    """(model, tokenizer, rows): the tiny Llama with a 4-bit NF4 base and LoRA on all seven projections.

    base "lora_lab": quantized by lora_lab (NF4Linear, QLoRALinear); "bitsandbytes": loaded by transformers
    with bitsandbytes' Linear4bit (codes stored as `quant_storage`) and PEFT's LoRA, as the fine-tune does.
    """
    from .data import check_rows, read_jsonl
    from .memory import LLAMA_PROJECTIONS
    from .models import load_base_model, load_tokenizer
    from .paths import EMBEDDED_DATASET
    from .train import tokenize_rows

    if settings.base not in ("lora_lab", "bitsandbytes"):
        raise ValueError(f"base={settings.base!r} is not accepted; choose 'lora_lab' or 'bitsandbytes'")
    targets = list(LLAMA_PROJECTIONS)
    if settings.base == "lora_lab":
        from .lora import LoraConfig
        from .qlora import get_qlora_model

        torch.manual_seed(settings.seed)  # the same LoRA A in every process: FSDP shards each process's own copy
        model = get_qlora_model(load_base_model(), LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                                              target_modules=targets))
    else:
        import peft
        from transformers import BitsAndBytesConfig

        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32,
                                bnb_4bit_quant_storage=fsdp.storage_dtype(settings.quant_storage))
        model = load_base_model(quantization=qc, dtype=torch.float32, device_map={"": "cpu"})
        torch.manual_seed(settings.seed)
        with warnings.catch_warnings():  # PEFT 0.21 calls a transformers method deprecated in 5.x
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = peft.get_peft_model(model, peft.LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                                               target_modules=targets, task_type="CAUSAL_LM"))
    tokenizer = load_tokenizer()
    needed = settings.steps * settings.micro_batches * settings.batch_size
    rows = read_jsonl(EMBEDDED_DATASET / "train.jsonl")[:needed]  # the embedded rows (no `datasets` import to wait for)
    return model, tokenizer, tokenize_rows(tokenizer, check_rows(rows, "train.jsonl"), settings.max_length)


def micro_batch(rows, tokenizer, settings: ShardSettings, step: int, k: int) -> dict:
    """Micro-batch k of optimizer step `step`: the same rows for every world size."""
    from .train import collate

    start = (step * settings.micro_batches + k) * settings.batch_size
    return collate(rows[start:start + settings.batch_size], tokenizer.pad_token_id)


def _steps(model, tokenizer, rows, settings: ShardSettings, rank: int, world_size: int) -> RunResult:
    """The training loop both runs share; world_size 1 accumulates the micro-batches, N > 1 runs micro-batch rank."""
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr)
    losses, measured, gathers = [], {}, []
    hooks = fsdp.trace_gathers(model, gathers) if world_size > 1 else []
    model.train()
    t0 = time.perf_counter()
    for step in range(settings.steps):
        mine = [rank] if world_size > 1 else range(settings.micro_batches)
        total = torch.zeros(())
        for k in mine:
            loss = model(**micro_batch(rows, tokenizer, settings, step, k)).loss
            if hooks and step == 0:  # the forward is done: the norm and output head are still gathered
                gathers.append(("loss", None, fsdp.gathered_bytes(model)))
            (loss / len(mine)).backward()  # sharded: FSDP averages over the processes in its reduce-scatter
            total += loss.detach() / settings.micro_batches
        if world_size > 1:
            dist.all_reduce(total)  # the mean over all micro-batches, as the one process computes it
            for h in hooks if step == 0 else ():
                h.remove()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)  # a DTensor-aware global norm
        opt.step()
        if step + 1 == STEPS_MEASURED:
            measured = fsdp.local_bytes(model, opt)
        opt.zero_grad(set_to_none=True)
        losses.append(total.item())
    return RunResult(world_size, rank, losses, measured, gathers, time.perf_counter() - t0)


def train_one_process(settings: ShardSettings | None = None) -> RunResult:
    """The reference: every micro-batch of every step in this process, no FSDP."""
    settings = settings or ShardSettings()
    model, tokenizer, rows = build(settings)
    if settings.base == "lora_lab" and settings.shard_constants:
        fsdp.shardable(model, settings.quant_storage)  # the same layout as sharded: the bytes compare part by part
    return _steps(model, tokenizer, rows, settings, rank=0, world_size=1)


def _worker(rank: int, world_size: int, store: str, runs: list[dict], out: str) -> None:
    import logging

    import torch.distributed as dist
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()  # a notebook shows what these processes print: no loading bars
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # nor bitsandbytes' advice to `pip install kernels`
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        results = []
        for settings in map(lambda kw: ShardSettings(**kw), runs):
            model, tokenizer, rows = build(settings)
            as_loaded = {}
            if settings.base == "lora_lab":
                copy = fsdp.shard(copy_module(model))  # first as the layers come: what FSDP makes of them unchanged
                as_loaded = fsdp.local_bytes(copy)
                del copy
                if settings.shard_constants:
                    fsdp.shardable(model, settings.quant_storage)
            fsdp.shard(model)
            result = _steps(model, tokenizer, rows, settings, rank, world_size)
            result.bytes_as_loaded = as_loaded
            results.append(dataclasses.asdict(result))
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def train_sharded(world_size: int = 2, settings: ShardSettings | list[ShardSettings] | None = None,
                  ) -> list[RunResult] | list[list[RunResult]]:
    """The same steps sharded by FSDP2 over `world_size` CPU processes (gloo): one RunResult per process.

    settings: one ShardSettings (default: micro_batches=world_size), or a list of them, run one after the
    other in the same processes (which saves starting them again); then one list of RunResults per
    settings. Raises ValueError before any process starts for a world size below 2, micro_batches other
    than world_size, or a world size that does not divide every 4-bit layer's blocks (read from the
    model's config); an error in a process is raised here (torch.multiprocessing's
    ProcessRaisedException, with that process's traceback).
    """
    import torch.multiprocessing as mp

    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 2:
        raise ValueError(f"world_size={world_size!r} is not accepted: FSDP on one process shards nothing; give 2 "
                         "or more (train_one_process is the single-process run)")
    runs = settings if isinstance(settings, list) else [settings or ShardSettings(micro_batches=world_size)]
    for s in runs:
        if s.micro_batches != world_size:
            raise ValueError(f"settings.micro_batches={s.micro_batches} but world_size={world_size}: each process "
                             "runs one micro-batch per step, so they must be equal")
    fsdp.check_process_count(world_size, tiny_block_counts())
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        mp.start_processes(_worker, args=(world_size, store, [dataclasses.asdict(s) for s in runs], tmp),
                           nprocs=world_size, join=True, start_method="spawn")
        by_rank = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world_size)]
    results = [[RunResult(**{**by_rank[r][i], "gathers": [tuple(e) for e in by_rank[r][i]["gathers"]]})
                for r in range(world_size)] for i in range(len(runs))]
    return results if isinstance(settings, list) else results[0]


def tiny_block_counts(blocksize: int = 64) -> dict[str, int]:
    """{layer name: 4-bit blocks} of the embedded tiny Llama's linear layers but the head, from its config alone."""
    from transformers import AutoConfig

    from .memory import _linear_layers, meta_model
    from .paths import EMBEDDED_MODEL

    model = meta_model(AutoConfig.from_pretrained(EMBEDDED_MODEL))
    return {n: -(-i * o // blocksize) for n, i, o, head in _linear_layers(model) if not head}
