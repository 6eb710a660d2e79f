# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Beyond one GPU: FSDP-QLoRA, built and measured
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/08_fsdp_qlora.ipynb)
#
# The kit took you from LoRA to a 7B QLoRA on one T4. Among LoRA's challenges the seed article lists
# that it *still needs a GPU* — and at the next size, one GPU is not enough: Llama-2-70B is about 33 GiB
# even in 4-bit NF4, more than any consumer card. Copying the model to a second GPU (data parallelism,
# DDP) does not help: each copy is still whole. What does is **fully sharded data parallelism (FSDP)**:
# each of N devices holds 1/N of every parameter, of its gradient and of its optimizer state, and a layer
# is gathered whole only while it runs. Answer.AI, with bitsandbytes and PEFT, made that work for 4-bit
# weights in March 2024 (FSDP-QLoRA) and fine-tuned a 70B model on two 24 GB gaming GPUs.
#
# This notebook
#
# 1. does the memory arithmetic first: why one 24 GiB GPU fails, why DDP on two fails, what FSDP on two needs;
# 2. shards the kit's own 4-bit layers with PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`) on two
#    CPU processes: what has to change so that 4-bit codes can be sharded, what is gathered when, and, measured
#    part by part, what each process holds — against the same training in one process, loss by loss;
# 3. runs the production pieces the same way (bitsandbytes' `Linear4bit` with PEFT's LoRA), and shows the
#    command that runs them through accelerate on GPUs.
#
# FSDP runs here on the CPU, two processes talking through gloo, PyTorch's CPU backend: the same code a
# GPU cluster runs, at the tiny model's size. Everything below takes about a minute.

# %%
# Colab only: fetch and install the kit (a local run already has it, from `make lab`). Safe to run
# again: after a second "Run all" or a restart the installed kit is reused. Colab's own torch and
# transformers are kept; the kit's lock file is for local installs only.
import sys

if "google.colab" in sys.modules:
    import importlib.util
    import os
    import subprocess

    kit = "/content/lora-lab"
    if importlib.util.find_spec("lora_lab") is None:
        if not os.path.isdir(kit):
            subprocess.run(["git", "clone", "-q", "--depth", "1", "https://github.com/lora-lab/lora-lab.git", kit],
                           check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", kit], check=True)
        importlib.invalidate_caches()

# %% tags=["nbval-ignore-output"]
import logging as stdlib_logging
import time

stdlib_logging.getLogger("bitsandbytes").setLevel(stdlib_logging.ERROR)  # on AVX512-BF16 CPUs it advises `pip install kernels`: not needed here

import torch
from torch import nn
from transformers.utils import logging

from lora_lab import fsdp, num
from lora_lab import fsdp_train as ft
from lora_lab.config import ConfigError, resolve_config
from lora_lab.env import versions
from lora_lab.memory import GIB, estimate_memory, llama2_70b_config, meta_model, part_label
from lora_lab.plan import GPU_24GB, Hardware, estimate_for, plan
from lora_lab.qlora import NF4Linear

logging.disable_progress_bar()  # no loading bars in the stored outputs
torch.set_num_threads(1)  # a tiny model: one thread loses little, and never fights the other processes for the cores
torch.manual_seed(0)
start_time = time.time()
versions()

# %% [markdown]
# ## 1 · The memory arithmetic: 70B on 24 GiB cards
#
# The kit's estimate counts a fine-tune's memory part by part on PyTorch's *meta* device (shapes, no
# storage — notebook 06). With several processes it counts **per device**. Llama-2-70B's published shape:
# 80 layers, hidden size 8,192, MLP 28,672, grouped-query attention with 8 key/value heads, a vocabulary of
# 32,000. The `llama2-70b-fsdp` profile trains rank-16 LoRA on all seven projections, one row of 1,024
# tokens per device and step, with gradient checkpointing, in bf16:

# %%
big = resolve_config("llama2-70b-fsdp")
model_70b = meta_model(llama2_70b_config())  # every shape, no storage: counted on a laptop
budget = GPU_24GB.memory_gib


def per_device(sharding, n):
    config = resolve_config("llama2-70b-fsdp", sharding=sharding, num_processes=n)
    return estimate_for(config, plan(config, GPU_24GB), model_config=model_70b)


single, ddp, sharded = per_device("none", 1), per_device("ddp", 2), per_device("fsdp", 2)
print(f"{'per device, GiB':<18}{'one GPU':>9}{'DDP × 2':>9}{'FSDP × 2':>10}")
for part in single.PARTS + ("parallel_buffers",):
    print(f"{part_label(part):<18}" + "".join(f"{num(getattr(e, part) / GIB):>{w}.2f}"
                                              for e, w in ((single, 9), (ddp, 9), (sharded, 10))))
print(f"{part_label('total'):<18}" + "".join(f"{num(e.total / GIB):>{w}.2f}" for e, w in ((single, 9), (ddp, 9), (sharded, 10))))
print(f"{num(budget):.0f} GiB card:       " + "   ".join("fits" if e.fits(budget) else "too big" for e in (single, ddp, sharded)))
assert not single.fits(budget) and not ddp.fits(budget) and sharded.fits(budget)
assert ddp.weights == single.weights and sharded.weights < 0.51 * single.weights

# %% [markdown]
# - **One GPU**: the 4-bit weights alone (33 GiB: NF4 codes for the 80 layers, the embeddings and output head
#   in bf16) are more than the card.
# - **DDP on two**: every device holds the whole model, plus its *gradient buckets* — PyTorch's
#   DistributedDataParallel copies the gradients into buckets to all-reduce them (a second copy of the
#   LoRA gradients, the "parallel buffers" line). More than one GPU alone.
# - **FSDP on two**: each device holds half of the weights, LoRA weights, gradients and AdamW state. The
#   parallel buffers are now what FSDP gathers: at the peak, the largest unit it gathers whole (here the
#   output head with the final norm), the next decoder layer it prefetches, and one layer's full LoRA
#   gradients before they are reduce-scattered. The 4-bit **block scales are not divided**: bitsandbytes
#   keeps them in a `QuantState` object beside the weight, where FSDP does not look (part 3 measures it).
#   Activations are per device too: each device runs its own micro-batch.
#
# The same from the command line, with each configuration side by side:
#
# ```bash
# lora-lab estimate --profile llama2-70b-fsdp
# lora-lab estimate --profile llama2-70b-fsdp --num-processes 4
# ```
#
# FSDP's share is only this simple when the process count divides what is sharded. The kit asks that it
# divide every 4-bit layer's number of quantization blocks (why, in part 2), and refuses otherwise, before
# anything loads:

# %%
try:
    per_device("fsdp", 3)
except ValueError as err:
    print(err)
    assert "does not divide" in str(err)
else:
    raise AssertionError("3 processes should be refused")

# %% [markdown]
# ## 2 · FSDP from scratch on the kit's 4-bit layers
#
# **The rule FSDP2 follows.** `fully_shard(module)` replaces each *parameter* of the module by a
# `DTensor`: the parameter cut along its first dimension into N pieces with `torch.chunk`, whole rows,
# ⌈rows / N⌉ per process; process k keeps piece k. Before the module's forward (and again before its
# backward) an *all-gather* puts the pieces back together; after it, the whole copy is freed. The
# gradients of the pieces are *reduce-scattered*: summed over the processes, averaged, and each process
# keeps its own piece — so the optimizer, too, only ever sees 1/N. Here is that split for three
# parameters of the tiny Llama over two processes:

# %%
for name, shape in [("embed_tokens.weight", (1536, 192)), ("lora_A.weight (r = 16)", (16, 192)),
                    ("input_layernorm.weight", (192,))]:
    pieces = torch.empty(shape).chunk(2)  # FSDP2's split: the first dimension, whole rows
    print(f"{name:<24} {str(shape):<12} -> " + " + ".join(str(tuple(p.shape)) for p in pieces))

# %% [markdown]
# **What a 4-bit layer shows FSDP.** The kit's `NF4Linear` (notebook 05) holds the packed codes as a
# frozen `uint8` parameter — two 4-bit codes per byte — and its block scales as *buffers*. FSDP shards
# parameters only; buffers stay whole on every process:

# %%
layer = NF4Linear.from_linear(nn.Linear(192, 192))  # one q_proj's shape, double quantization as QLoRA
print("parameters:", [(n, tuple(p.shape), str(p.dtype).removeprefix("torch.")) for n, p in layer.named_parameters()])
print("buffers:   ", [(n, tuple(b.shape), str(b.dtype).removeprefix("torch.")) for n, b in layer.named_buffers()])
blocks = fsdp.block_count(layer)
print(f"{num(layer.weight.numel()):,} bytes of codes in {blocks} blocks of 64 weights, each block with its own scale")

# %% [markdown]
# Two things have to change before FSDP can shard this layer well:
#
# 1. **The block scales must be parameters.** As buffers, every process keeps all of them. Made frozen
#    parameters, FSDP splits them like the codes.
# 2. **A process should hold whole blocks, each with its own scale.** Stored flat, the codes are cut
#    every ⌈bytes / N⌉ bytes and the scales every ⌈blocks / N⌉ scales, and the two cuts fall in the same
#    place only when N divides the number of blocks. Stored as one row per block — codes (blocks, 32
#    bytes), scales (blocks,) — both are cut between the same rows whatever N is, so process k holds
#    blocks and the scales that go with them; and when N divides the number of blocks, every process
#    holds the same number: the kit's rule from part 1. (Exercise 3 shows what this buys: a process can
#    dequantize its own blocks without the others.)
#
# By hand, on this layer:

# %%
rows = layer.weight.data.reshape(blocks, 32)  # (blocks, 32): the 64 codes of a block in 32 bytes, a row per block
codes_0, codes_1 = rows.chunk(2)
scales_0, scales_1 = layer.absmax.chunk(2)
print(f"process 0: codes {tuple(codes_0.shape)} and scales {tuple(scales_0.shape)}; "
      f"process 1: codes {tuple(codes_1.shape)} and scales {tuple(scales_1.shape)}")
assert codes_0.shape[0] == scales_0.shape[0] and codes_1.shape[0] == scales_1.shape[0]  # the same blocks

x = torch.randn(3, 192)
before = layer(x)
fsdp.shardable(layer)  # lora_lab's version: the same rows, and every scale a frozen parameter
assert torch.equal(layer.weight, rows) and torch.equal(layer(x), before)  # same bytes, same forward
print("after shardable:", [(n, tuple(p.shape)) for n, p in layer.named_parameters()], "buffers:",
      [n for n, _ in layer.named_buffers()])

# %% [markdown]
# The forward did not change: `NF4Linear` reads its codes back flat, as bytes, whatever shape they are
# stored in. Under FSDP it reads them while they are gathered whole.
#
# **The storage-dtype trick.** FSDP2 gathers parameters of different dtypes by viewing them all as bytes,
# so `uint8` codes work here. Two places need more, and Answer.AI's fix was to store the codes *viewed as
# a float dtype* — the same bytes, read 2 or 4 at a time — which bitsandbytes offers as
# `bnb_4bit_quant_storage`:
#
# - FSDP1, the API Answer.AI used, flattens all of a unit's parameters into one tensor of one dtype; and
#   accelerate 1.15 leaves `uint8` 4-bit weights out of FSDP2's sharding altogether (every device would
#   hold all of them);
# - FSDP's *mixed precision* casts every floating-point parameter to the compute dtype. Codes stored as
#   float32 under bf16 compute would be cast — and a cast rewrites bytes. So the storage dtype must be the
#   compute dtype, and the kit refuses any other (part 4). Here is what a cast does to codes:

# %%
as_float = rows.view(torch.float32)  # (blocks, 8): the same 32 bytes per block, read as 8 float32s
assert torch.equal(as_float.view(torch.uint8), rows)  # a view changes nothing
cast = as_float.to(torch.bfloat16).to(torch.float32).view(torch.uint8)  # what mixed precision would do
changed = (cast != rows).float().mean().item()
print(f"codes stored as float32, cast to bf16 and back: {num(changed):.0%} of the bytes changed")
assert changed > 0.4
shardable_f32 = fsdp.shardable(NF4Linear.from_linear(nn.Linear(192, 192)), "float32")
print("stored as float32:", tuple(shardable_f32.weight.shape), shardable_f32.weight.dtype)

# %% [markdown]
# ## 3 · Two processes against one, measured
#
# `lora_lab.fsdp_train` runs the same QLoRA steps twice: in this process, and sharded over two new
# processes started with `torch.multiprocessing` (they meet through a file in a temporary folder and talk
# over gloo). Each step takes two micro-batches of 4 rows. Sharded, process k runs micro-batch k and
# FSDP averages the two gradients; in one process both micro-batches are accumulated, each loss halved.
# The same mean gradient, so the same AdamW step: the losses must agree to float rounding.
#
# Both trainings run twice: on the kit's `NF4Linear` made shardable (its scales as parameters, codes as
# `uint8` rows), and on the production pieces — bitsandbytes' `Linear4bit` with codes stored as float32
# and PEFT's LoRA — wrapped in the units accelerate's FSDP plugin makes: the embeddings, each decoder
# layer, the final norm with the output head, the root. Tens of seconds on a 2-core CPU, most of them
# spent starting the two processes (the next cell prints how long):

# %%
OURS = ft.ShardSettings(micro_batches=2)
BNB = ft.ShardSettings(micro_batches=2, base="bitsandbytes", quant_storage="float32")
t0 = time.time()
one_ours, one_bnb = ft.train_one_process(OURS), ft.train_one_process(BNB)
two_ours, two_bnb = ft.train_sharded(2, [OURS, BNB])
seconds = time.time() - t0

# %% tags=["nbval-ignore-output"]
print(f"{num(seconds):.0f} s for both; losses per step (the processes all-reduce theirs, so both print the same):")
for label, one, two in (("lora_lab NF4Linear", one_ours, two_ours), ("bitsandbytes + PEFT", one_bnb, two_bnb)):
    print(f"  {label:<20} one process {[round(v, 4) for v in one.losses]}   two {[round(v, 4) for v in two[0].losses]}")

# %%
for one, two in ((one_ours, two_ours), (one_bnb, two_bnb)):
    assert two[0].losses == two[1].losses
    assert torch.allclose(torch.tensor(two[0].losses), torch.tensor(one.losses), rtol=1e-5, atol=0)
print("losses equal within float rounding (relative 1e-5) at every step, for both")

# %% [markdown]
# What each process holds after the first optimizer step, in bytes (`fsdp.local_bytes`: the local
# pieces of the sharded parameters, their gradients and AdamW's two moments):

# %%
rows_of = lambda one, two: [(part, one.bytes[part], two[0].bytes[part], two[1].bytes[part]) for part in fsdp.PARTS]
print(f"{'':<34}{'1 process':>11}{'2: rank 0':>12}{'rank 1':>12}")
for label, one, two in (("lora_lab", one_ours, two_ours), ("bitsandbytes", one_bnb, two_bnb)):
    for part, a, b, c in rows_of(one, two):
        print(f"{label + ' · ' + part_label(part):<34}{num(a):>11,}{num(b):>12,}{num(c):>12,}")
as_loaded = [r.bytes_as_loaded["quant_constants"] for r in two_ours]
print(f"{'lora_lab · scales left as buffers':<34}{num(one_ours.bytes['quant_constants']):>11,}{num(as_loaded[0]):>12,}{num(as_loaded[1]):>12,}")

for one, two in ((one_ours, two_ours), (one_bnb, two_bnb)):
    for part in ("weights", "lora_weights", "gradients", "optimizer_state"):
        assert [r.bytes[part] for r in two] == [one.bytes[part] // 2] * 2  # exactly half each
constants = one_ours.bytes["quant_constants"]
assert sum(r.bytes["quant_constants"] for r in two_ours) == constants and as_loaded == [constants] * 2
assert [r.bytes["quant_constants"] for r in two_bnb] == [one_bnb.bytes["quant_constants"]] * 2

# %% [markdown]
# - Weights (4-bit codes, embeddings, norms, output head), LoRA weights, gradients and optimizer state:
#   **exactly half on each process**, for both kinds of layer.
# - Block scales: shared out once they are parameters (split a little unevenly: the double-quantization
#   scales-of-scales and offsets are short, and ⌈3 / 2⌉ = 2). Left as buffers, each process holds all of
#   them. bitsandbytes keeps them in its `QuantState`: each process holds all of them too — the
#   assumption the estimate of part 1 makes, measured.
#
# The estimate for this run, per device, against what a process measured (bitsandbytes' layers, which the
# estimate describes):

# %%
from transformers import AutoConfig

from lora_lab.memory import LLAMA_PROJECTIONS
from lora_lab.paths import EMBEDDED_MODEL

tiny_est = estimate_memory(AutoConfig.from_pretrained(EMBEDDED_MODEL), lora={"r": 16, "target_modules": LLAMA_PROJECTIONS},
                           batch_size=4, seq_len=64, optimizer="adamw_torch", compute_dtype="float32",
                           num_processes=2, sharding="fsdp")
for part in ("weights", "quant_constants", "lora_weights", "gradients", "optimizer_state"):
    print(f"{part_label(part):<18} estimate {num(getattr(tiny_est, part)):>10,}   measured {num(two_bnb[0].bytes[part]):>10,}")
    assert getattr(tiny_est, part) == two_bnb[0].bytes[part]

# %% [markdown]
# Byte for byte. **What is gathered when.** During the first step, process 0 recorded how many bytes of parameters were
# gathered whole at the start of each decoder layer's forward and backward, and right after the forward:

# %%
layer_bytes = {b for phase, _, b in two_ours[0].gathers if phase != "loss"}
shown = {"forward": "forward", "backward": "backward", "loss": "loss"}  # how each phase is printed
for phase, i, gathered in two_ours[0].gathers:
    print(f"{shown[phase]:<9} {'layer ' + str(i) if i is not None else 'loss':<8} {num(gathered):>10,} bytes gathered")
assert len(layer_bytes) == 1  # the same at every layer, forward and backward
print(f"one decoder layer whole: {num(layer_bytes.pop()):,} bytes; the whole model, unsharded: "
      f"{num(sum(one_ours.bytes[p] for p in ('weights', 'quant_constants', 'lora_weights'))):,}")

# %% [markdown]
# One layer at a time: as the forward reaches layer i, FSDP has gathered layer i and freed layer i − 1;
# the backward gathers each layer again, in reverse order. Right after the forward, the norm and the
# output head are gathered (1,536 × 192 float32 weights: the tiny model's largest unit) — accelerate keeps
# them gathered until the backward begins, which comes next. On a GPU, FSDP also gathers the *next* layer
# while this one computes, which the estimate counts; on these CPU processes the gathers run in turn.
#
# ## 4 · The production path: bitsandbytes, PEFT and accelerate's FSDP plugin
#
# Part 3 ran the production pieces under FSDP2 on the CPU. The kit's command line runs them through
# accelerate's FSDP plugin, with an accelerate config the kit ships inside the package:
#
# ```bash
# accelerate launch --config_file "$(lora-lab fsdp-config)" --num_processes 2 \
#     -m lora_lab finetune --profile llama2-70b-fsdp
# ```
#
# The config asks for FSDP2, one unit per `LlamaDecoderLayer`, freed after each forward. The fine-tune's
# plan stores the 4-bit codes in the compute dtype (`bnb_4bit_quant_storage`), and checks every
# parallel setting before anything loads:

# %%
print(fsdp.ACCELERATE_CONFIG.name, "ships in the package:", fsdp.ACCELERATE_CONFIG.is_file())
gpu_plan = plan(big, GPU_24GB, launched=(2, True))  # two processes launched with the FSDP config, on 24 GiB GPUs
print({k: gpu_plan[k] for k in ("precision", "sharding", "num_processes", "quant_storage")})
assert gpu_plan["quant_storage"] == "bfloat16"

refusals = [(resolve_config("llama2-70b-fsdp", quant_storage="float32"), GPU_24GB, (2, True)),  # cast by mixed precision
            (big, GPU_24GB, (2, False)),  # FSDP asked for, launched without accelerate's FSDP
            (resolve_config("tiny"), Hardware(), (2, True))]  # accelerate's FSDP on a CPU
for config, hardware, launched in refusals:
    try:
        plan(config, hardware, launched=launched)
    except ConfigError as err:
        print("refused:", str(err)[:160] + " …")
    else:
        raise AssertionError(f"{config.profile} on {hardware.device} should be refused")

# %% [markdown]
# The last refusal is the one a CPU user would hit: accelerate 1.15 switches its FSDP plugin on only for
# GPU (and other accelerator) processes. On CPU processes it quietly runs plain data parallelism, each
# process holding the whole model; the kit stops instead of pretending. So on this machine:
#
# | piece | runs on a CPU? |
# |---|---|
# | PyTorch FSDP2 (`fully_shard`) over gloo | yes: parts 2 and 3 |
# | the kit's NF4Linear under FSDP2 | yes: part 3 |
# | bitsandbytes' `Linear4bit` (float32 storage) + PEFT LoRA under FSDP2 | yes: part 3 |
# | accelerate's FSDP plugin (`accelerate launch` with the FSDP config) | no: it needs GPUs |
#
# On a machine with two or more GPUs, `benchmarks/gpu_check.py` runs the 7B profile sharded over all of
# them and prints each GPU's peak memory against the per-device estimate. One thing the estimate shows
# but the kit does not solve: transformers loads the whole 4-bit model onto each GPU before FSDP shards
# it — 33 GiB for 70B, which a 24 GiB card cannot hold even for a moment. Answer.AI's own training script
# loads and quantizes layer by layer for that reason.
#
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError`, followed by a check. Write your answer
# in place of the `raise`, run the cell, and the check says what is right or wrong. Solutions:
# `notebooks/solutions/08_fsdp_qlora_solutions.ipynb`.
#
# **Exercise 1.** How many bytes of a parameter does FSDP give process `rank`? The parameter has `shape`
# and `element_size` bytes per element; FSDP cuts its first dimension into `world_size` pieces of whole
# rows, as `torch.chunk` does.

# %%
from lora_lab.exercises.scaling import check_dequantize_shard, check_fsdp_parts, check_shard_bytes


def shard_bytes(shape, element_size, world_size, rank):
    raise NotImplementedError  # your code here


check_shard_bytes(shard_bytes)

# %% [markdown]
# **Exercise 2.** `parts` maps each part of the memory estimate (weights, quant_constants, lora_weights,
# gradients, optimizer_state, activations) to its bytes in one process. Return the same dict for each of
# `num_processes` devices under FSDP with bitsandbytes' 4-bit layers (the model's rows divide evenly).

# %%
def fsdp_parts(parts, num_processes):
    raise NotImplementedError  # your code here


check_fsdp_parts(fsdp_parts)

# %% [markdown]
# **Exercise 3.** One process's shard of a 4-bit weight stored as in part 2: `codes`, (blocks, 32) bytes,
# each row a block of 64 NF4 codes two per byte (the first in the high nibble), and `absmax`, (blocks,),
# the block scales (no double quantization). Dequantize it alone, to (blocks, 64) float32 values.
# `lora_lab.nf4` has the NF4 table and the unpacking of notebook 04.

# %%
def dequantize_shard(codes, absmax):
    raise NotImplementedError  # your code here


check_dequantize_shard(dequantize_shard)

# %% tags=["nbval-ignore-output"]
print(f"notebook ran in {num(time.time() - start_time):.0f} s")
