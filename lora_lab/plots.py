"""Small matplotlib figures and plain-text tables for the notebooks: each helper draws one idea on a given axis.

Labels and numbers follow the kit's language (lora_lab.i18n): set_language("vi") draws and prints in Vietnamese.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from .i18n import _, format_number, num

COLORS = {"ΔW": "tab:red", "W": "tab:blue", "random": "tab:gray", "lora_lab": "tab:blue", "PEFT": "tab:orange",
          "nf4": "tab:green", "fp4": "tab:orange", "int4": "tab:purple"}


def figure(ncols: int = 1, width: float = 4.2, height: float = 3.0, nrows: int = 1, title: str | None = None):
    """A figure with ncols × nrows axes of the given size each; returns (fig, axes) with axes always a flat list."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    fig.set_layout_engine("constrained")
    if title:
        fig.suptitle(title)
    return fig, list(axes.flat)


def plot_spectrum(ax, spectra: dict[str, torch.Tensor], normalize: bool = True, r: int | None = None) -> None:
    """Singular values, largest first (each divided by its largest when `normalize`); a dashed line at rank r."""
    for label, s in spectra.items():
        s = s.double()
        y = s / s[0] if normalize else s
        ax.plot(range(1, len(s) + 1), y.numpy(), label=label, color=COLORS.get(label.split()[0]))
    if r is not None:
        ax.axvline(r, color="k", ls="--", lw=0.8)
    ax.set(yscale="log", xlabel=_("index i"), ylabel="s_i / s_1" if normalize else "s_i", title=_("singular values"))
    ax.legend(fontsize=8)


def plot_energy(ax, spectra: dict[str, torch.Tensor], r: int | None = None, max_rank: int | None = None) -> None:
    """Share of ‖W‖²_F the best rank-r approximation keeps, against r."""
    from .lowrank import energy_captured

    for label, s in spectra.items():
        e = energy_captured(s)[: (max_rank or len(s)) + 1]
        ax.plot(range(len(e)), e.numpy(), label=label, color=COLORS.get(label.split()[0]))
    if r is not None:
        ax.axvline(r, color="k", ls="--", lw=0.8)
    ax.set(xlabel=_("rank r"), ylabel=_("share of Σ s² kept"), ylim=(0, 1.02), title=_("energy captured by rank r"))
    ax.legend(fontsize=8)


def show_matrix(ax, m: torch.Tensor, title: str = "", vmax: float | None = None) -> None:
    """A heatmap with a symmetric red–blue scale (zero is white)."""
    m = m.detach().float()
    vmax = vmax or float(m.abs().max())
    ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set(title=title, xticks=[], yticks=[])


def plot_curves(ax, curves: dict[str, Sequence[float]], highlight: str | None = None, xlabel: str | None = None,
                ylabel: str | None = None, title: str = "", styles: dict[str, dict] | None = None) -> None:
    """Several curves on one axis; with `highlight`, that one is bold and the rest are faded.

    xlabel and ylabel default to "step" and "loss", in the kit's language.
    """
    styles = styles or {}
    for label, ys in curves.items():
        style = {"color": COLORS.get(label), **styles.get(label, {})}
        if highlight is not None:
            style.update(lw=2.5, alpha=1.0, zorder=3) if label == highlight else style.update(lw=0.8, alpha=0.35)
        ax.plot(range(1, len(ys) + 1), list(ys), label=label, **style)
    ax.set(xlabel=_("step") if xlabel is None else xlabel, ylabel=_("loss") if ylabel is None else ylabel, title=title)
    ax.legend(fontsize=7, ncol=2)


def plot_histogram_vs_normal(ax, values: torch.Tensor, bins: int = 120, title: str = "") -> float:
    """Histogram of values (as a density) with the N(0, σ²) curve of the same σ; returns σ."""
    v = values.detach().flatten().float()
    sigma = float(v.std())
    lim = 4.5 * sigma
    ax.hist(v.clamp(-lim, lim).numpy(), bins=bins, range=(-lim, lim), density=True, color="tab:blue", alpha=0.6,
            label=_("weights"))
    x = torch.linspace(-lim, lim, 400)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    ax.plot(x.numpy(), pdf.numpy(), color="k", lw=1.2, label=f"N(0, σ²), σ = {num(sigma):.4f}")
    ax.set(xlabel=_("weight value"), ylabel=_("density"), title=title)
    ax.legend(fontsize=8)
    return sigma


def plot_codebooks(ax, tables: dict[str, torch.Tensor]) -> None:
    """The values of several 4-bit code tables on one line each, over the N(0, 1) density scaled to [-1, 1]."""
    x = torch.linspace(-1, 1, 400)
    scale = 1 / 2.5  # draw the density of values scaled so that ±2.5σ lands near ±1
    ax.fill_between(x.numpy(), (torch.exp(-0.5 * (x / scale) ** 2) * 0.9).numpy() - 0.5, -0.5, color="0.9")
    for i, (label, t) in enumerate(tables.items()):
        t = torch.unique(t.float())
        ax.scatter(t.numpy(), [i] * len(t), s=22, color=COLORS.get(label),
                   label=_("{label} ({count} values)").format(label=label, count=len(t)))
    ax.set(yticks=range(len(tables)), yticklabels=list(tables), xlabel=_("code value (× block absmax)"),
           ylim=(-0.6, len(tables) - 0.4), title=_("the 4-bit code tables"))


def _cell(c) -> str:
    """A table cell: text as given, an int with thousands grouped, a float as Python writes it, in the kit's language."""
    if isinstance(c, str):
        return c
    if isinstance(c, bool):
        return f"{c:,}"
    if isinstance(c, int):
        return format_number(c, ",")
    if isinstance(c, float):
        return format_number(c)
    return str(c)


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A plain-text table with right-aligned columns (strings left-aligned), for stable notebook outputs.

    An int cell is written with its thousands grouped and a float as Python writes it, both in the kit's language
    (6,738,415,616 and 0.25 in English, 6.738.415.616 and 0,25 in Vietnamese); a string cell as it is.
    """
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    left = [isinstance(rows[0][i], str) if rows else True for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) if lf else c.rjust(w) for c, w, lf in zip(r, widths, left)).rstrip()
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def print_table(headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Print format_table(headers, rows)."""
    print(format_table(headers, rows))
