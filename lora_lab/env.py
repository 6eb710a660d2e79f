"""What this machine can run: CPU or GPU, which GPU, bf16 or fp16, and which kit path follows."""

from __future__ import annotations

import importlib.metadata as md
import platform

import torch

from .i18n import _

PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate")
T4_USABLE_GIB = 14.75  # what a Colab T4 exposes of its 16 GB


def versions() -> dict[str, str]:
    """Installed versions of Python and the libraries the kit builds on."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def gpu_advice(name: str | None, total_gib: float | None, bf16: bool | None) -> str:
    """A sentence on what this accelerator means for the kit (name None: CPU only), in the kit's language."""
    if name is None:
        return _("No GPU: every notebook runs on the CPU with the embedded tiny Llama (minutes). For Llama-2-7B, open "
                 "the notebook in Colab and pick Runtime > Change runtime type > T4 GPU.")
    if "T4" in name:
        return _("NVIDIA T4 ({gib:.2f} GiB usable, Colab's free GPU): compute in fp16 — the T4 has no bf16 — and 4-bit "
                 "NF4 weights make Llama-2-7B fit (about {weights_gb} GB of weights).").format(gib=total_gib,
                                                                                          weights_gb=3.9)
    if bf16:
        return _("{name} ({gib:.1f} GiB): compute in bf16; the Llama-2-7B QLoRA profile fits if 4-bit weights are "
                 "used.").format(name=name, gib=total_gib)
    return _("{name} ({gib:.1f} GiB): compute in fp16 (no bf16 on this GPU); the Llama-2-7B QLoRA profile fits if "
             "4-bit weights are used.").format(name=name, gib=total_gib)


def describe_environment() -> dict:
    """Device, GPU name and memory, bf16 support and the advice that follows from them."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        name, gib, bf16 = props.name, props.total_memory / 2**30, torch.cuda.is_bf16_supported()
    else:
        name, gib, bf16 = None, None, None
    return {"device": "cuda" if name else "cpu", "gpu": name, "gpu_memory_gib": gib, "bf16": bf16,
            "advice": gpu_advice(name, gib, bf16)}
