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
# # 01 · Low-rank intuition
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/01_low_rank_intuition.ipynb)
#
# LoRA rests on one observation: when you fine-tune a pretrained model, the *change* each weight
# matrix goes through can be written down with far fewer numbers than the matrix itself holds.
# This notebook builds the tools to say that precisely, then checks it on real weights.
#
# In this notebook you will
# - see what the rank of a matrix is, and build matrices of a chosen rank,
# - take a matrix apart with the singular value decomposition (SVD) and keep its best rank-r part,
# - count what a rank-r factorisation costs: d·r + r·k numbers instead of d·k,
# - fine-tune part of the tiny Llama in full and measure how low-rank its update ΔW really is,
#   with a slider for r.

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
import torch
from transformers.utils import logging

import lora_lab
from lora_lab import lowrank, num, plots
from lora_lab.env import versions

logging.disable_progress_bar()  # no loading bars in the stored outputs
torch.set_num_threads(1)  # tiny matrices: one thread loses little, and never fights other jobs for the cores
torch.manual_seed(0)
versions()

# %% [markdown]
# ## Why not fine-tune everything?
#
# Fine-tuning continues training a pretrained model on your own data. *Full* fine-tuning lets every
# parameter move: for Llama-2-7B that is 6.7 billion numbers, each with a gradient and, with Adam, two
# more running averages — about 16 bytes per parameter in mixed precision, over 100 GB before a single
# activation is stored. The field's answer came in steps: first *partial* fine-tuning (train a few
# layers, freeze the rest), then *parameter-efficient* fine-tuning, which freezes the whole model and
# trains a small add-on. LoRA's add-on is a low-rank matrix next to each weight. To see why a low-rank
# matrix is enough, start with what rank means.
#
# ## Rank: how many independent directions a matrix has
#
# A d × k matrix W maps k-dimensional inputs to d-dimensional outputs. Its **rank** is the number of
# independent directions its outputs can point in — the number of linearly independent columns (or
# rows). It is at most min(d, k): a matrix with that rank is *full rank*, anything less is *low rank*.
#
# The simplest low-rank matrix is an outer product u·vᵀ: every column is a multiple of u, so the rank
# is 1. A sum of r outer products — equivalently a d × r matrix times an r × k matrix — has rank at
# most r. That product, B·A, is exactly the shape LoRA trains.

# %%
d, k = 6, 5
u, v = torch.randn(d, 1), torch.randn(1, k)
rank1 = u @ v  # (6, 1) @ (1, 5) -> (6, 5), every column a multiple of u
B, A = torch.randn(d, 2), torch.randn(2, k)
rank2 = B @ A  # a sum of 2 outer products
full = torch.randn(d, k)
for name, m in [("u·vᵀ", rank1), ("B·A with r=2", rank2), ("random 6×5", full)]:
    print(f"{name:14s} shape {tuple(m.shape)}  rank {int(torch.linalg.matrix_rank(m))}")
assert torch.linalg.matrix_rank(rank1) == 1 and torch.linalg.matrix_rank(rank2) == 2
assert torch.linalg.matrix_rank(full) == min(d, k)  # random matrices are full rank

# %% [markdown]
# ## The SVD: a matrix as a sum of rank-1 layers, largest first
#
# Every matrix can be written as W = U · diag(S) · Vᵀ, where the columns of U and V are orthonormal
# directions and the **singular values** S are non-negative and sorted from largest to smallest. Read
# it as a sum of rank-1 layers s₁·u₁v₁ᵀ + s₂·u₂v₂ᵀ + …; the singular values say how much each layer
# contributes. The rank is the number of non-zero singular values.
#
# Keeping only the first r layers gives a rank-r matrix W_r, and the Eckart–Young theorem says no
# other rank-r matrix is closer to W: the error ‖W − W_r‖ (Frobenius norm, the square root of the sum
# of squared entries) is exactly √(s²ᵣ₊₁ + … + s²ₙ). Here it is in three lines:

# %%
def best_rank_r(w: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (d, n), (n,), (n, k) with n = min(d, k)
    return (u[:, :r] * s[:r]) @ vh[:r]  # the r largest rank-1 layers


W = torch.randn(40, 30, dtype=torch.float64)
s = torch.linalg.svdvals(W)
for r in (1, 5, 10, 30):
    err = (W - best_rank_r(W, r)).norm()
    print(f"r={r:2d}: ‖W − W_r‖ = {num(err):7.4f}   √(sum of the dropped s²) = {num(s[r:].pow(2).sum().sqrt()):7.4f}")
    assert torch.isclose(err, s[r:].pow(2).sum().sqrt())  # Eckart–Young
    assert torch.linalg.matrix_rank(best_rank_r(W, r)) == r

# %% [markdown]
# `lora_lab.lowrank` holds the same function (computed in float64 whatever the input) and the
# quantities this notebook plots. From here on the notebook uses the package's version; first, check
# that the two agree.

# %%
for r in (1, 5, 10, 30):
    assert torch.allclose(lowrank.low_rank_approx(W, r), best_rank_r(W, r))
print("lora_lab.lowrank.low_rank_approx == best_rank_r for r = 1, 5, 10, 30")

# %% [markdown]
# ## What a rank-r factorisation costs
#
# Stored as a full matrix, a d × k update costs d·k numbers. Stored as B (d × r) times A (r × k), it
# costs d·r + r·k. For the matrices of the tiny Llama and of Llama-2-7B:

# %%
shapes = [("tiny q_proj", 192, 192), ("tiny up_proj", 512, 192),
          ("Llama-2-7B q_proj", 4096, 4096), ("Llama-2-7B up_proj", 11008, 4096)]
rows = []
for name, d_, k_ in shapes:
    for r in (1, 8, 64):
        n = lowrank.lora_params(d_, k_, r)
        rows.append((name, f"{d_}×{k_}", d_ * k_, r, n, f"{num(n / (d_ * k_)):.2%}"))
plots.print_table(["matrix", "shape", "d·k", "r", "d·r + r·k", "share"], rows)
assert lowrank.lora_params(4096, 4096, 8) == 65_536  # 0.39% of the 16.8M-entry matrix

# %% [markdown]
# The bigger the matrix, the smaller the share: a rank-8 update to a 4096 × 4096 matrix costs 0.39%
# of the matrix. The question is whether a rank-8 matrix can hold what fine-tuning needs to change.
#
# ## The LoRA hypothesis, measured on real weights
#
# The LoRA paper (Hu et al. 2021) hypothesised that the update ΔW = W_after − W_before has a low
# "intrinsic rank". We can look: load the tiny Llama, fully fine-tune a small part of it — the query
# and value projections of its four layers, eight 192 × 192 matrices — for 100 steps on the instruction
# data, and take the SVD of what changed.

# %%
model = lora_lab.load_base_model()
tok = lora_lab.load_tokenizer()
texts = lora_lab.load_instruction_dataset()["text"]

targets = [n for n, _ in model.named_parameters() if n.endswith(("q_proj.weight", "v_proj.weight"))]
before = {n: p.detach().clone() for n, p in model.named_parameters() if n in targets}
model.requires_grad_(False)
for n, p in model.named_parameters():
    p.requires_grad_(n in targets)  # partial fine-tuning: these eight matrices, nothing else
n_train = sum(before[n].numel() for n in targets)
n_all = sum(p.numel() for p in model.parameters())
print(f"training {len(targets)} matrices, {num(n_train):,} of {num(n_all):,} parameters ({num(n_train / n_all):.1%})")

# %%
from lora_lab.train import TrainConfig, train

result = train(model, tok, texts, TrainConfig(steps=100, batch_size=16, lr=1e-3, max_length=64, seed=0))
print(f"loss: {num(result.losses[0]):.3f} at step 1 -> {num(result.losses[-1]):.3f} at step 100")
assert result.losses[-1] < result.losses[0]
delta = {n: (p.detach() - before[n]) for n, p in model.named_parameters() if n in targets}

# %% [markdown]
# Now compare the singular values of three kinds of 192 × 192 matrix: an update ΔW, the pretrained
# weight W it was added to, and a random Gaussian matrix. Each curve is divided by its own largest
# singular value, so the shapes compare directly.

# %%
name = "model.layers.1.self_attn.v_proj.weight"
spectra = {"ΔW (update)": lowrank.singular_values(delta[name]),
           "W (pretrained)": lowrank.singular_values(before[name]),
           "random Gaussian": lowrank.singular_values(torch.randn(192, 192))}
fig, (ax1, ax2) = plots.figure(ncols=2, title=name.removeprefix("model.").removesuffix(".weight"))
plots.plot_spectrum(ax1, spectra)
plots.plot_energy(ax2, spectra, r=8)

# %% [markdown]
# The update's singular values fall off fast: a handful of directions carry most of it. The random
# matrix spreads its energy evenly over all 192 directions; the pretrained weight sits in between — it
# has some strong directions, but far from few. The table measures this for all eight matrices: the share
# of ‖ΔW‖² that the best rank-r approximation keeps, the same share for W and for a random matrix, and
# the rank needed to keep 90% of ΔW.

# %%
random_s = lowrank.singular_values(torch.randn(192, 192))
rows = []
for n in targets:
    s_dw = lowrank.singular_values(delta[n])
    e_dw, e_w = lowrank.energy_captured(s_dw), lowrank.energy_captured(lowrank.singular_values(before[n]))
    r90 = lowrank.rank_for_energy(s_dw, 0.9)
    rows.append((n.removeprefix("model.").removesuffix(".weight"), f"{num(e_dw[1]):.2f}", f"{num(e_dw[8]):.2f}",
                 f"{num(e_w[8]):.2f}", r90))
    assert e_dw[8] > e_w[8] and r90 <= 32  # the update is more concentrated than the weight itself
e_rand = lowrank.energy_captured(random_s)
rows.append(("random 192×192", f"{num(e_rand[1]):.2f}", f"{num(e_rand[8]):.2f}", "", lowrank.rank_for_energy(random_s, 0.9)))
plots.print_table(["matrix", "ΔW kept at r=1", "ΔW at r=8", "W at r=8", "r for 90% of ΔW"], rows)
assert e_rand[8] < 0.2 and lowrank.rank_for_energy(random_s, 0.9) > 90  # a random matrix has no shortcut

# %% [markdown]
# Energy is one measure; what matters is behaviour. Put the rank-8 approximation of each update in place
# of the full update and compare the loss on held-out rows: the base model, the full update, and the
# rank-8 version of it.

# %%
from lora_lab.train import collate, tokenize_rows

eval_rows = tokenize_rows(tok, lora_lab.load_instruction_dataset(split="eval")["text"][:64], max_length=64)
batch = collate(eval_rows, tok.pad_token_id)


def eval_loss(weights: dict) -> float:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in weights:
                p.copy_(weights[n])
        return model(**batch).loss.item()


losses = {"base model (W)": eval_loss(before),
          "full update (W + ΔW)": eval_loss({n: before[n] + delta[n] for n in targets}),
          "rank-8 update (W + ΔW₈)": eval_loss({n: before[n] + lowrank.low_rank_approx(delta[n], 8) for n in targets}),
          "rank-1 update (W + ΔW₁)": eval_loss({n: before[n] + lowrank.low_rank_approx(delta[n], 1) for n in targets})}
for label, loss in losses.items():
    print(f"{label:26s} held-out loss {num(loss):.3f}")
gain_full = losses["base model (W)"] - losses["full update (W + ΔW)"]
gain_r8 = losses["base model (W)"] - losses["rank-8 update (W + ΔW₈)"]
print(f"rank 8 keeps {num(gain_r8 / gain_full):.0%} of the loss improvement")
assert gain_r8 > 0.9 * gain_full

# %% [markdown]
# ## Slider: how much of ΔW does rank r keep?
#
# Drag **r** (rank of the approximation to one update, `layers.1.v_proj`). The text gives what B·A
# would cost at that rank against the full matrix and how much of ΔW it keeps; the figure shows a
# corner of ΔW, of its best rank-r approximation and of what is left over, on the same colour scale, and
# marks r on the error curve. Everything comes from one SVD computed here; the slider only reads it.

# %% tags=["nbval-ignore-output"]
from lora_lab.widgets import SliderPanel

dw = delta[name]
u_, s_, vh_ = torch.linalg.svd(dw.double(), full_matrices=False)
err_curve = lowrank.relative_error(s_)  # (193,) relative error at r = 0 … 192
C = slice(0, 48)  # the heatmaps show the top-left 48 × 48 corner: 192 × 192 is too fine to see
vmax = float(dw[C, C].abs().max())


def show_rank(r):
    approx = ((u_[:, :r] * s_[:r]) @ vh_[:r]).float()
    fig, axes = plots.figure(ncols=4, width=2.6, height=2.6)
    plots.show_matrix(axes[0], dw[C, C], "ΔW (corner)", vmax)
    plots.show_matrix(axes[1], approx[C, C], f"rank-{r} approximation", vmax)
    plots.show_matrix(axes[2], (dw - approx)[C, C], "what is left", vmax)
    axes[3].plot(err_curve.numpy(), color="tab:red")
    axes[3].axvline(r, color="k", ls="--", lw=0.8)
    axes[3].set(xlabel="r", ylabel="‖ΔW − ΔW_r‖ / ‖ΔW‖", xscale="symlog", ylim=(0, 1),
                xlim=(0, len(err_curve) - 1))  # from r = 0: no negative half of the symmetric log axis
    n = lowrank.lora_params(192, 192, r)
    text = (f"<b>r = {r}</b>: B·A holds {num(n):,} numbers ({num(n / 192**2):.1%} of ΔW's {num(192**2):,}); "
            f"it keeps {num(1 - err_curve[r]**2):.1%} of ‖ΔW‖², relative error {num(err_curve[r]):.3f}")
    return text, fig


panel = SliderPanel(show_rank, {"r": [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192]}, initial={"r": 8})
panel

# %% [markdown]
# Where widgets don't render (GitHub, nbviewer), the same numbers as a table and one figure:

# %%
rows = []
for r in (1, 2, 4, 8, 16, 32, 64, 96):
    n = lowrank.lora_params(192, 192, r)
    rows.append((r, n, f"{num(n / 192**2):.1%}", f"{num(1 - err_curve[r]**2):.3f}", f"{num(err_curve[r]):.3f}"))
plots.print_table(["r", "d·r + r·k", "of d·k", "share of ‖ΔW‖² kept", "relative error"], rows)

fig, axes = plots.figure(ncols=4, width=2.4, height=2.5)
plots.show_matrix(axes[0], dw[C, C], "ΔW (corner)", vmax)
for ax, r in zip(axes[1:], (1, 8, 32)):
    plots.show_matrix(ax, lowrank.low_rank_approx(dw, r)[C, C], f"best rank {r}", vmax)

# %% [markdown]
# ## What this shows, and what it doesn't
#
# - The updates fine-tuning makes are **low rank** in practice: here rank 8 of 192 keeps most of every
#   update and nearly all of its effect on the loss, while the pretrained weights spread over many more
#   directions. The LoRA paper made the matching observation on GPT-3 175B: adapters of rank 1 or 2 on
#   Wq and Wv did about as well as rank 64 (its Table 6 and §7).
# - So instead of learning ΔW (d·k numbers) and compressing it afterwards, **LoRA learns the factors
#   directly**: ΔW = B·A with B of shape d × r and A of shape r × k, trained while W stays frozen.
#   Notebook 02 builds that layer.
# - Caveats: this was 100 steps on a small model and a narrow task; a longer, harder fine-tune can need
#   a larger r. And an update being low rank after full fine-tuning does not promise that training B
#   and A from scratch finds an equally good one — notebooks 02 and 03 train LoRA directly.
#
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError`, followed by a check. Write your answer
# in place of the `raise`, run the cell, and the check says what is right or wrong. Solutions:
# `notebooks/solutions/01_low_rank_intuition_solutions.ipynb`.
#
# **Exercise 1.** Write `rank_r_matrix(d, k, r)`: a random d × k matrix whose rank is exactly r.

# %%
from lora_lab.exercises import check_lora_factors, check_max_useful_rank, check_rank_r_matrix


def rank_r_matrix(d: int, k: int, r: int) -> torch.Tensor:
    raise NotImplementedError  # your code here


check_rank_r_matrix(rank_r_matrix)

# %% [markdown]
# **Exercise 2.** Turn an update into a LoRA adapter: write `lora_factors(delta, r)` returning `(B, A)`
# with B of shape (d, r) and A of shape (r, k) such that B @ A is the best rank-r approximation of
# `delta`. (This is how a full fine-tune can be compressed into a LoRA adapter afterwards.)

# %%
def lora_factors(delta: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    raise NotImplementedError  # your code here


check_lora_factors(lora_factors)

# %% [markdown]
# **Exercise 3.** Factors only save memory while d·r + r·k < d·k. Write `max_useful_rank(d, k)`: the
# largest r for which that holds.

# %%
def max_useful_rank(d: int, k: int) -> int:
    raise NotImplementedError  # your code here


check_max_useful_rank(max_useful_rank)
