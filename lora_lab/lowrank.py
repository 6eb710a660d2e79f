"""Rank, SVD and best rank-r approximations: the linear algebra behind LoRA's low-rank hypothesis (Hu et al. 2021, arXiv 2106.09685, §4.1 and §7)."""

import torch


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """The singular values of a matrix, largest first, computed in float64: (min(d, k),)."""
    return torch.linalg.svdvals(w.detach().double())


def low_rank_approx(w: torch.Tensor, r: int) -> torch.Tensor:
    """The best rank-r approximation of w in Frobenius norm (Eckart–Young): its r largest SVD terms."""
    if not 0 <= r <= min(w.shape):
        raise ValueError(f"r={r} is not accepted for a {tuple(w.shape)} matrix; choose 0 <= r <= {min(w.shape)}")
    u, s, vh = torch.linalg.svd(w.detach().double(), full_matrices=False)  # (d, n), (n,), (n, k)
    return ((u[:, :r] * s[:r]) @ vh[:r]).to(w.dtype)  # (d, k)


def energy_captured(s: torch.Tensor) -> torch.Tensor:
    """Share of ‖W‖²_F = Σ s² held by the top r singular values, for r = 0 … n: (n + 1,)."""
    energy = s.double() ** 2
    cum = torch.cat([energy.new_zeros(1), energy.cumsum(0)])  # (n + 1,)
    return cum / cum[-1]


def relative_error(s: torch.Tensor) -> torch.Tensor:
    """‖W − W_r‖_F / ‖W‖_F of the best rank-r approximation, for r = 0 … n: (n + 1,)."""
    return (1 - energy_captured(s)).clamp(min=0).sqrt()


def rank_for_energy(s: torch.Tensor, fraction: float) -> int:
    """The smallest r whose top r singular values hold at least `fraction` of Σ s²."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} is not accepted; choose 0 < fraction <= 1")
    captured = energy_captured(s)
    return int(torch.searchsorted(captured, torch.tensor(fraction, dtype=captured.dtype) - 1e-12))


def lora_params(d: int, k: int, r: int) -> int:
    """Parameters of the factors B (d × r) and A (r × k) that replace a d × k update."""
    return d * r + r * k

