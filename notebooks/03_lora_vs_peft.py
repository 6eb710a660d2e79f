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
# # 03 · LoRA vs PEFT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/03_lora_vs_peft.ipynb)
#
# Hugging Face PEFT is the library most LoRA fine-tunes run on. The LoRA you built in notebook 02 uses
# its vocabulary; here the two meet. In this notebook you will
# - run one LoRA configuration through `lora_lab` and through PEFT and check that outputs, gradients
#   and a whole training run are identical,
# - exchange adapter files both ways, and merge them,
# - time both on this CPU with the kit's LoRA benchmark, at small size,
# - make three common mistakes on purpose and fix them: LoRA on GPT-2 with `q_proj`/`v_proj`, PEFT's
#   default targets where QLoRA adapts every linear layer, and tutorial code that no longer runs.

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
import logging

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # on AVX512-BF16 CPUs it advises `pip install kernels`: not needed here

import copy
import tempfile
import warnings
from pathlib import Path

import peft
import torch
from transformers.utils import logging

import lora_lab
from lora_lab import num, plots
from lora_lab.env import versions

logging.disable_progress_bar()  # no loading bars in the stored outputs
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # a deprecation inside PEFT 0.21
torch.set_num_threads(1)  # tiny matrices: one thread loses little, and never fights other jobs for the cores
torch.manual_seed(0)
versions()

# %% [markdown]
# ## One configuration, two libraries
#
# The same arguments go into both `LoraConfig`s — PEFT's names are the kit's names. Dropout is off so
# that the two runs can be compared number for number.

# %%
pretrained = lora_lab.load_base_model()
tok = lora_lab.load_tokenizer()
settings = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                init_lora_weights="gaussian")
ours = lora_lab.inject_lora(copy.deepcopy(pretrained), lora_lab.LoraConfig(**settings))
theirs = peft.get_peft_model(copy.deepcopy(pretrained), peft.LoraConfig(**settings))

print(ours.model.layers[0].self_attn.q_proj)
print(theirs.base_model.model.model.layers[0].self_attn.q_proj)
trainable, total = lora_lab.count_parameters(ours)
print(f"lora_lab: trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")
print("PEFT:     ", end="")
theirs.print_trainable_parameters()
assert (trainable, total) == theirs.get_nb_trainable_parameters()

# %% [markdown]
# Same layer, same names (`base_layer`, `lora_A`, `lora_B`). PEFT adds two things: every adapter lives
# in a dictionary under a name (`"default"`), so one model can hold several, and the model is wrapped in
# a `PeftModel`. That shows in the parameter names:

# %%
our_names = [n for n, p in ours.named_parameters() if p.requires_grad]
their_names = [n for n, p in theirs.named_parameters() if p.requires_grad]
print(our_names[0], "\n" + their_names[0])


def peft_name(name: str) -> str:
    """Our parameter name -> PEFT's name for it inside a PeftModel."""
    return "base_model.model." + name.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


assert [peft_name(n) for n in our_names] == their_names

# %% [markdown]
# ## Identical outputs and gradients
#
# Both libraries start B at zero, so at init both models equal the base model — true, but a weak test.
# Give both the *same non-zero* A and B, then compare logits and every LoRA gradient on a batch of
# instruction rows.

# %%
from lora_lab.train import collate, tokenize_rows

texts = lora_lab.load_instruction_dataset()["text"]
batch = collate(tokenize_rows(tok, texts[:16], max_length=64), tok.pad_token_id)

their_params = dict(theirs.named_parameters())
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for n, p in ours.named_parameters():
        if p.requires_grad:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            their_params[peft_name(n)].copy_(p)

out_ours, out_theirs = ours(**batch), theirs(**batch)
out_ours.loss.backward()
out_theirs.loss.backward()
logit_diff = (out_ours.logits - out_theirs.logits).abs().max().item()
grad_diff = max((p.grad - their_params[peft_name(n)].grad).abs().max().item()
                for n, p in ours.named_parameters() if p.requires_grad)
print(f"loss {num(out_ours.loss.item()):.3f} (lora_lab) vs {num(out_theirs.loss.item()):.3f} (PEFT)")  # 3 decimals: any CPU
print(f"largest difference: logits {num(logit_diff):.1e}, gradients {num(grad_diff):.1e}")
assert logit_diff < 1e-5 and grad_diff < 1e-6

# %% [markdown]
# ## Identical training runs
#
# Now train both from those same weights: 40 steps of the kit's plain training loop, same seed and data
# order. If the forward, the backward and the set of trainable parameters agree, the loss curves lie on
# top of each other.

# %%
from lora_lab.train import TrainConfig, train

cfg = TrainConfig(steps=40, batch_size=16, lr=3e-3, max_length=64, seed=0)
ours.zero_grad(set_to_none=True)
theirs.zero_grad(set_to_none=True)
run_ours, run_theirs = train(ours, tok, texts, cfg), train(theirs, tok, texts, cfg)

fig, (ax,) = plots.figure(width=5)
plots.plot_curves(ax, {"lora_lab": run_ours.losses, "PEFT": run_theirs.losses},
                  styles={"PEFT": {"ls": "--", "lw": 2}}, title="same config, same data: two libraries")
curve_diff = max(abs(a - b) for a, b in zip(run_ours.losses, run_theirs.losses))
weight_diff = max((p - their_params[peft_name(n)]).abs().max().item()
                  for n, p in ours.named_parameters() if p.requires_grad)
print(f"loss {num(run_ours.losses[0]):.3f} -> {num(run_ours.losses[-1]):.3f}; largest gap between the curves {num(curve_diff):.1e}, "
      f"between the trained weights {num(weight_diff):.1e}")
assert curve_diff < 1e-4 and weight_diff < 1e-4

# %% [markdown]
# ## Adapter files, both ways
#
# A trained LoRA is saved as an *adapter*: a folder with `adapter_config.json` and
# `adapter_model.safetensors`, holding only A and B, never the base model: in fp32, about 100 kB here
# (24,576 numbers of 4 bytes; the cell below prints the file's size) and 16.8 MB for Llama-2-7B at r = 8
# (4,194,304 numbers). `lora_lab.save_adapter` writes PEFT's format, so PEFT loads it; and
# `lora_lab.load_adapter` reads what PEFT saves.

# %%
tmp = Path(tempfile.mkdtemp())
lora_lab.save_adapter(ours, tmp / "from_lora_lab")
theirs.save_pretrained(tmp / "from_peft")
for folder in ("from_lora_lab", "from_peft"):
    files = sorted(p.name for p in (tmp / folder).iterdir())
    print(f"{folder}: {files}")

peft_loads_ours = peft.PeftModel.from_pretrained(copy.deepcopy(pretrained), tmp / "from_lora_lab")
ours_loads_peft = lora_lab.load_adapter(copy.deepcopy(pretrained), tmp / "from_peft")
with torch.no_grad():
    reference = ours(**batch).logits
    for label, m in [("PEFT loading lora_lab's adapter", peft_loads_ours),
                     ("lora_lab loading PEFT's adapter", ours_loads_peft)]:
        diff = (m(**batch).logits - reference).abs().max().item()
        print(f"{label}: largest logit difference {num(diff):.1e}")
        assert diff < 1e-5

from safetensors.torch import load_file

adapter_file = tmp / "from_lora_lab" / "adapter_model.safetensors"
tensors = load_file(adapter_file)
keys = sorted(tensors)
print(len(keys), "tensors, e.g.", keys[0])
numbers, size = sum(t.numel() for t in tensors.values()), adapter_file.stat().st_size
print(f"{num(numbers):,} numbers, {num(size):,} bytes on disk")
assert numbers == trainable and all(t.dtype == torch.float32 for t in tensors.values())
assert 4 * numbers < size < 4 * numbers + 10_000  # 4 bytes a number, plus a header: tensor names, base fingerprint

# %% [markdown]
# Merging works the same way in both: PEFT's `merge_and_unload()` and `lora_lab.merge_lora(model,
# unload=True)` fold (α/r)·B·A into each weight and hand back a plain `LlamaForCausalLM`.

# %%
merged_ours = lora_lab.merge_lora(copy.deepcopy(ours), unload=True)
merged_theirs = copy.deepcopy(theirs).merge_and_unload()
theirs_sd = merged_theirs.state_dict()
merge_diff = max((p - theirs_sd[n]).abs().max().item() for n, p in merged_ours.state_dict().items())
print(type(merged_ours).__name__, type(merged_theirs).__name__, f"largest weight difference {num(merge_diff):.1e}")
assert type(merged_ours) is type(merged_theirs) and merge_diff < 1e-6

# %% [markdown]
# ## Speed and memory: the benchmark, small
#
# `lora_lab.bench` trains the same Llama-architecture model with each library — same config, seed and
# batches — and reports milliseconds per step and memory. Here its workers run in this process at a small
# size (in a clone, `make benchmarks` runs `benchmarks/bench_lora.py`: the full size, with a fresh process
# per memory run). Timings vary from run to run, so that cell's output is not compared; the bytes autograd
# keeps for the backward pass do not vary.

# %% tags=["nbval-ignore-output"]
from lora_lab import bench

small = bench.Bench(hidden=128, intermediate=344, layers=2, heads=4, vocab=256, batch=4, seq=64,
                    rounds=1, steps=10, warmup=2)
timing = bench.time_worker(small)  # both models in this process, one step each in turn
memory = {lib: bench.memory_worker(lib, small) for lib in ("ours", "peft")}
plots.print_table(["library", "ms/step (median)", "saved for backward (MiB)", "final loss"],
                  [("lora_lab" if lib == "ours" else "PEFT", f"{num(timing['ms'][lib]):.1f}",
                    f"{num(memory[lib]['saved_mib']):.3f}", f"{num(timing['loss'][lib]):.6f}") for lib in ("ours", "peft")])
print(f"time ours/PEFT, median over paired steps: {num(timing['pair_ratio']):.2f}")
torch.set_num_threads(1)  # the workers set their own thread count

# %%
saved = {lib: round(m["saved_mib"], 3) for lib, m in memory.items()}
print(f"{num(timing['trainable']):,} trainable parameters in each; activations saved for backward: "
      f"lora_lab {saved['ours']} MiB, PEFT {saved['peft']} MiB")
assert abs(timing["loss"]["ours"] - timing["loss"]["peft"]) < 1e-4  # the same training in both
assert saved["ours"] <= saved["peft"]

# %% [markdown]
# ## Common mistakes, made right
#
# ### 1. GPT-2 has no `q_proj`
#
# Many LoRA tutorials show PEFT on `gpt2` with `target_modules=["q_proj", "v_proj"]`. Those names come
# from Llama. GPT-2 fuses its query, key and value projections into one layer, `c_attn`, and it is a
# transformers `Conv1D` (its weight stored as (in, out), transposed from `nn.Linear`). A small GPT-2 with
# random weights shows it — the names are what matters, not the weights:

# %%
from transformers import GPT2Config, GPT2LMHeadModel

torch.manual_seed(0)
gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=64,
                                  bos_token_id=0, eos_token_id=0))
print(sorted({(n.rsplit(".", 1)[-1], type(m).__name__) for n, m in gpt2.named_modules()
              if n and lora_lab.lora.is_linear(m)}))

# %% [markdown]
# The tutorial's configuration fails (PEFT prints the target set in an order that changes between runs,
# so this cell's output is not compared):

# %% tags=["nbval-ignore-output"]
tutorial = dict(r=8, lora_alpha=32, lora_dropout=0.1, task_type="CAUSAL_LM")
try:
    peft.get_peft_model(copy.deepcopy(gpt2), peft.LoraConfig(target_modules=["q_proj", "v_proj"], **tutorial))
except ValueError as e:
    gpt2_error = e
    print(f"{type(e).__name__}: {e}")

# %%
assert "not found in the base model" in str(gpt2_error)
try:
    lora_lab.inject_lora(copy.deepcopy(gpt2), lora_lab.LoraConfig(target_modules=["q_proj", "v_proj"]))
except ValueError as e:
    print(f"lora_lab says: {e}")

# %% [markdown]
# The fix: target `c_attn` (one LoRA pair adapts Wq, Wk and Wv together: its B has 3 × 64 rows) and say
# `fan_in_fan_out=True` for the transposed weight — PEFT would flip it for you, with a warning. The two
# libraries agree on GPT-2 as well:

# %%
fixed = dict(target_modules=["c_attn"], fan_in_fan_out=True)
gpt2_peft = peft.get_peft_model(copy.deepcopy(gpt2), peft.LoraConfig(**fixed, **tutorial))
gpt2_ours = lora_lab.inject_lora(copy.deepcopy(gpt2), lora_lab.LoraConfig(
    r=8, lora_alpha=32, lora_dropout=0.1, **fixed))
gpt2_peft_params = dict(gpt2_peft.named_parameters())
with torch.no_grad():
    for n, p in gpt2_ours.named_parameters():
        if p.requires_grad:
            p.copy_(torch.randn_like(p) * 0.05)
            gpt2_peft_params[peft_name(n)].copy_(p)
    gpt2_ours.eval()  # dropout off for the comparison
    gpt2_peft.eval()
    ids = torch.arange(20)[None]
    diff = (gpt2_ours(ids).logits - gpt2_peft(ids).logits).abs().max().item()
print(gpt2_ours.transformer.h[0].attn.c_attn)
print(f"GPT-2 with LoRA on c_attn: {num(lora_lab.count_parameters(gpt2_ours)[0]):,} trainable; lora_lab vs PEFT logits differ by {num(diff):.1e}")
assert diff < 1e-5

# %% [markdown]
# ### 2. PEFT's default targets are not QLoRA's
#
# Leave `target_modules` out and PEFT picks a default per architecture; for Llama and Mistral it is
# `q_proj` and `v_proj` — the LoRA paper's choice for GPT-3. The QLoRA paper instead puts LoRA on
# **every linear layer** of the transformer blocks, and found that necessary to match full fine-tuning.
# (Descriptions of LoRA often list Wq, Wk, Wv, Wo "and the two MLP matrices" — the original
# Transformer's. Llama's gated MLP has three, `gate_proj`, `up_proj` and `down_proj`: seven linear
# layers per block.) Nothing warns you which targets you got:

# %%
default = peft.get_peft_model(copy.deepcopy(pretrained), peft.LoraConfig(r=8, lora_alpha=16))
print("PEFT's default targets for Llama:", sorted(default.peft_config["default"].target_modules))
every = peft.get_peft_model(copy.deepcopy(pretrained), peft.LoraConfig(r=8, lora_alpha=16,
                                                                        target_modules="all-linear"))
print("target_modules='all-linear':     ", sorted(every.peft_config["default"].target_modules))
assert sorted(default.peft_config["default"].target_modules) == ["q_proj", "v_proj"]

# %% [markdown]
# What it means in parameters, counted on the meta device (shapes, no weights): for Llama-2-7B, and for
# the Mistral-7B QLoRA snippet that circulates with r = 64 on q/k/v/o only. Mistral uses grouped-query
# attention, so its k_proj and v_proj are 4096 → 1024.

# %%
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

big = {"Llama-2-7B": (LlamaForCausalLM, LlamaConfig(hidden_size=4096, intermediate_size=11008,
                                                    num_hidden_layers=32, num_attention_heads=32,
                                                    num_key_value_heads=32, vocab_size=32000)),
       "Mistral-7B": (MistralForCausalLM, MistralConfig(hidden_size=4096, intermediate_size=14336,
                                                        num_hidden_layers=32, num_attention_heads=32,
                                                        num_key_value_heads=8, vocab_size=32000))}
choices = [("PEFT default (q, v)", 8, ["q_proj", "v_proj"]), ("q, k, v, o", 64, ["q_proj", "k_proj", "v_proj", "o_proj"]),
           ("all-linear (QLoRA)", 64, "all-linear")]
rows, counts = [], {}
for model_name, (cls, config) in big.items():
    for label, r_, targets in choices:
        with torch.device("meta"):
            m = lora_lab.inject_lora(cls(config), lora_lab.LoraConfig(r=r_, target_modules=targets))
        trainable, total = lora_lab.count_parameters(m)
        counts[model_name, label] = trainable
        rows.append((model_name, label, r_, trainable, f"{num(100 * trainable / total):.3f}%"))
plots.print_table(["model", "targets", "r", "trainable", "of all"], rows)
assert counts["Llama-2-7B", "PEFT default (q, v)"] == 4_194_304
assert counts["Llama-2-7B", "all-linear (QLoRA)"] == 159_907_840

# %% [markdown]
# Does it matter on the tiny model? Train both for 60 steps at about the same number of trainable
# parameters — q/v at r = 8 against all seven projections at r = 2 — and compare the loss. (The LoRA
# paper's Table 5 made the same comparison on GPT-3: at a fixed budget, adapting more kinds of matrix at
# a lower rank did better than one kind at a higher rank.)

# %%
runs = {}
for label, r_, targets in [("q, v at r=8", 8, ["q_proj", "v_proj"]), ("all-linear at r=2", 2, "all-linear")]:
    torch.manual_seed(0)
    m = lora_lab.inject_lora(copy.deepcopy(pretrained), lora_lab.LoraConfig(r=r_, lora_alpha=2 * r_,
                                                                              target_modules=targets))
    res = train(m, tok, texts, TrainConfig(steps=60, batch_size=16, lr=3e-3, max_length=64, seed=0))
    runs[label] = (lora_lab.count_parameters(m)[0], res.losses)

# %% tags=["nbval-ignore-output"]
# 60 steps of training: the losses below differ in the second decimal from one CPU to another
fig, (ax,) = plots.figure(width=5)
plots.plot_curves(ax, {f"{k} ({num(n):,} trainable)": v for k, (n, v) in runs.items()}, title="same budget, different targets")
late = {label: sum(losses[-10:]) / 10 for label, (_, losses) in runs.items()}
for label, (n, _) in runs.items():
    print(f"{label:18s} {num(n):>6,} trainable   mean loss over the last 10 steps {num(late[label]):.3f}")
assert late["all-linear at r=2"] < late["q, v at r=8"] - 0.2  # a gap 10× wider than the CPU-to-CPU spread

# %% [markdown]
# At about the same budget, spreading the rank over all seven projections ends clearly lower than
# concentrating it on q and v: the tiny model agrees with the paper. QLoRA's recipe adapts all linear
# layers; with PEFT, say so: `target_modules="all-linear"`.
#
# ### 3. Tutorial code that no longer runs
#
# LoRA tutorials age fast, and some were mangled when copied (underscores lost in rendering). Each line
# below is a real pattern from one; next to it, what the current libraries do with it.

# %%
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from trl import SFTTrainer

from lora_lab.paths import EMBEDDED_MODEL


def outcome(thunk) -> str:
    try:
        thunk()
    except Exception as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0].split(' (/')[0]}"  # without install paths
    return "runs"


def import_get_peftmodel():
    from peft import get_peftmodel  # noqa: F401


checks = [
    ("from peft import get_peftmodel", import_get_peftmodel, "get_peft_model"),
    ("LoraConfig(targetmodules=[...])", lambda: peft.LoraConfig(targetmodules=["q_proj"]), "target_modules"),
    ('from_pretrained(..., devicemap="auto")',
     lambda: AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL, devicemap="auto"), "device_map"),
    ('SFTTrainer(tokenizer=tok, dataset_text_field="text")',
     lambda: SFTTrainer(model=pretrained, tokenizer=tok, dataset_text_field="text"),
     "processing_class=tok, and dataset_text_field inside SFTConfig"),
]
for line, thunk, fix in checks:
    print(f"{line}\n    -> {outcome(thunk)}\n    fix: {fix}")
assert all(outcome(thunk) != "runs" for _, thunk, _ in checks)

# %% [markdown]
# Worse than an error is a mistake that runs. `BitsAndBytesConfig` accepts unknown keyword arguments
# without a word, so a tutorial's `bnb4bit_quant_type="nf4"` (one underscore lost) gives FP4, not NF4,
# and a mangled `load_in_4bit` loads the model at full precision:

# %%
quiet = BitsAndBytesConfig(load_in_4bit=True, bnb4bit_quant_type="nf4", bnb4bit_compute_dtype=torch.float16)
print(f"asked for nf4 / float16 compute, got: quant type {quiet.bnb_4bit_quant_type}, "
      f"compute {quiet.bnb_4bit_compute_dtype}")
mangled = BitsAndBytesConfig(**{"loadᵢn4bit": True, "bnb_4bit_quant_type": "nf4"})
print(f"a mangled load_in_4bit: load_in_4bit={mangled.load_in_4bit}")
assert quiet.bnb_4bit_quant_type == "fp4" and quiet.bnb_4bit_compute_dtype == torch.float32
assert mangled.load_in_4bit is False
right = lora_lab.models.bnb_4bit_config("nf4", double_quant=True, compute_dtype=torch.float16)
print(f"lora_lab.models.bnb_4bit_config: {right.bnb_4bit_quant_type}, double quant "
      f"{right.bnb_4bit_use_double_quant}, compute {right.bnb_4bit_compute_dtype}")

# %% [markdown]
# The kit's own configs are dataclasses, which refuse an unknown name on the spot:

# %%
try:
    lora_lab.LoraConfig(targetmodules=["q_proj"])
except TypeError as e:
    print(f"TypeError: {e}")

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError`, followed by a check. Write your answer
# in place of the `raise`, run the cell, and the check says what is right or wrong. Solutions:
# `notebooks/solutions/03_lora_vs_peft_solutions.ipynb`.
#
# **Exercise 1.** Repair the GPT-2 tutorial: write `gpt2_lora_config()` returning a `peft.LoraConfig`
# (r = 8, α = 32, dropout 0.1, causal LM) that puts LoRA on GPT-2's attention.

# %%
from lora_lab.exercises import check_all_linear_targets, check_copy_adapter, check_gpt2_lora_config


def gpt2_lora_config() -> peft.LoraConfig:
    raise NotImplementedError  # your code here


check_gpt2_lora_config(gpt2_lora_config)

# %% [markdown]
# **Exercise 2.** Write `linear_layer_names(model)`: the names (last part only, e.g. `"q_proj"`) of every
# `nn.Linear` in the model except the output head — what `target_modules="all-linear"` means. The check
# tries it on a Llama and on a BioGPT, whose layers are named differently — its output head is
# `output_projection`, not `lm_head`.

# %%
def linear_layer_names(model) -> list[str]:
    raise NotImplementedError  # your code here


check_all_linear_targets(linear_layer_names)

# %% [markdown]
# **Exercise 3.** Write `copy_peft_to_lora_lab(peft_model, our_model)`: copy every LoRA A and B of a PEFT
# model into a `lora_lab` model with the same targets, in place, so that both give the same logits.

# %%
def copy_peft_to_lora_lab(peft_model, our_model) -> None:
    raise NotImplementedError  # your code here


check_copy_adapter(copy_peft_to_lora_lab)
