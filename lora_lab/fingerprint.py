"""Which base an adapter belongs on: a fingerprint of the targeted weights, saved with the adapter and checked on load.

An adapter is a change to particular weights W0; loaded onto other weights it computes something else
without any error. Loaded onto the model it was already merged into, it counts ΔW twice. So the kit
keeps, for every targeted layer, the values of W0 at a few fixed positions (SAMPLES, drawn once from
the layer's name) and the values the merged weight W0 + ΔW would have there. On load the same
positions are read from the new base (dequantized if it is 4-bit) and compared:

    "same"     every value equal to its saved W0 up to bf16 rounding (the model in another float dtype)
    "variant"  equal to the weights the variant itself sits on: PiSSA's residual, LoftQ's quantized weight
    "merged"   the change from W0 points along the saved ΔW (projection coefficient c > 0.5): merged already
    "other"    anything else: another model of the same shape, or this one quantized (the relative distance says which)

It lives in adapter_model.safetensors' metadata under "lora_lab", a string PEFT never reads, so the file
stays PEFT's. The positions are stored with the values (int32 and float32, base64), so the check does
not depend on how they were drawn.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from . import base4bit

SAMPLES = 16  # positions per targeted layer: with the values, about 0.5 kB of metadata per layer
CLOSE = 2.0**-8  # relative tolerance of "same": a bf16 or fp16 cast of the saved base passes, a 4-bit one does not
KEY = "lora_lab"  # the safetensors metadata key


def _dequantized(layer: nn.Module) -> bool:
    return base4bit.is_4bit(layer) or callable(getattr(layer, "dequantize", None))


def base_weight(layer: nn.Module) -> torch.Tensor | None:
    """A base layer's weight as (out_features, in_features), where it lives (a 4-bit or INT4 one dequantized to
    fp32, a float one as it is: a view, no copy); None on the meta device."""
    if base4bit.is_4bit(layer):
        return base4bit.dequantized_weight(layer)
    if callable(getattr(layer, "dequantize", None)):  # an INT4 layer (lora_lab.qalora.Int4Linear)
        return layer.dequantize().float()
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.is_meta:
        return None
    weight = weight.detach()
    return weight.T if isinstance(layer, Conv1D) else weight


def _at(weight: torch.Tensor, index: list[int]) -> torch.Tensor:
    """The values at flat positions `index` of a (out, in) weight, as float64 on the CPU (only those move)."""
    return weight.reshape(-1)[torch.tensor(index, device=weight.device)].double().cpu()


def _positions(name: str, numel: int) -> list[int]:
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randint(numel, (SAMPLES,), generator=g).tolist()


def take(model: nn.Module, names: list[str]) -> dict | None:
    """{name: {"shape", "index", "base"}} for the modules `names` (before LoRA wraps them).

    None on the meta device, and for 4-bit or INT4 targets: their values are read when the adapter is
    saved instead (`record`), as a dequantized copy here would add to every model's build.
    """
    modules = [model.get_submodule(name) for name in names]
    if any(_dequantized(m) for m in modules):
        return None
    out = {}
    for name, module in zip(names, modules):
        w = base_weight(module)
        if w is None:
            return None
        index = _positions(name, w.numel())
        out[name] = {"shape": list(w.shape), "index": index, "base": _at(w, index).tolist()}
    return out


def _from_layers(layers) -> dict | None:
    """take() for models whose base was not read at injection: the unmerged base, read from the layers now."""
    out = {}
    for name, layer in layers:
        w = base_weight(layer.base_layer)
        if w is None:
            return None
        index = _positions(name, w.numel())
        values = _at(w, index)
        if layer.merged:  # take ΔW back out (a 4-bit merge rounded it: close, not exact)
            with torch.no_grad():
                delta = layer.get_delta_weight().float()
                values -= _at(delta.T if layer.fan_in_fan_out else delta, index)
        out[name] = {"shape": list(w.shape), "index": index, "base": values.tolist()}
    return out


def merged_values(layer, index: list[int]) -> list[float]:
    """What the merged weight (base + ΔW, or DoRA's rescaled one) holds at `index` of the flat (out, in) weight."""
    base = base_weight(layer.base_layer)
    with torch.no_grad():
        if layer.merged:
            return _at(base, index).tolist()
        delta = layer.get_delta_weight().float()
        merged = base.float() + (delta.T if layer.fan_in_fan_out else delta).to(base.device)  # (out, in)
        magnitude = getattr(layer, "lora_magnitude_vector", None)
        if magnitude is not None:  # DoRA: each row rescaled to its trained length
            merged = merged * (magnitude.detach().float().to(base.device) / torch.linalg.norm(merged, dim=1))[:, None]
    return _at(merged, index).tolist()


def record(model: nn.Module, layers: list[tuple[str, nn.Module]], variant_base: bool) -> dict | None:
    """The fingerprint to save: the base recorded when LoRA was put on, the merged values, and (PiSSA, LoftQ) the
    weights the layers sit on now. None when the model has no recorded base (built on the meta device)."""
    base = getattr(model, "lora_base_fingerprint", None)
    if base is None or set(base) != {name for name, _ in layers}:
        base = _from_layers(layers)
        if base is None:
            return None
    out = {}
    for name, layer in layers:
        entry = dict(base[name])
        entry["merged"] = merged_values(layer, entry["index"])
        if variant_base:
            entry["variant"] = _at(base_weight(layer.base_layer), entry["index"]).tolist()
        out[name] = entry
    return out


def _close(now: torch.Tensor, saved: torch.Tensor) -> bool:
    scale = saved.pow(2).mean().sqrt()
    return bool(((now - saved).abs() <= CLOSE * saved.abs() + 1e-6 * scale).all())


def compare(saved: dict, model: nn.Module, names: list[str]) -> tuple[str, float]:
    """(verdict, relative distance ‖now − W0‖/‖W0‖) for the base `model` against a saved fingerprint.

    verdict: "same", "variant", "merged" or "other" (see the module docstring); "other" also when the
    targets differ from the saved ones or a shape changed.
    """
    if sorted(saved) != sorted(names):
        return "other", float("nan")
    now, base, merged, variant = [], [], [], []
    for name in names:
        entry = saved[name]
        w = base_weight(model.get_submodule(name))
        if w is None or list(w.shape) != entry["shape"]:
            return "other", float("nan")
        now.append(_at(w, entry["index"]))
        base.append(torch.tensor(entry["base"], dtype=torch.float64))
        merged.append(torch.tensor(entry.get("merged", entry["base"]), dtype=torch.float64))
        if "variant" in entry:
            variant.append(torch.tensor(entry["variant"], dtype=torch.float64))
    now, base, merged = torch.cat(now), torch.cat(base), torch.cat(merged)
    distance = float(torch.linalg.norm(now - base) / torch.linalg.norm(base).clamp(min=1e-30))
    if _close(now, base):
        return "same", distance
    if variant and _close(now, torch.cat(variant)):
        return "variant", distance
    delta = merged - base
    if float(delta @ delta) > 0 and float((now - base) @ delta / (delta @ delta)) > 0.5:
        return "merged", distance
    return "other", distance


def variant_distance(saved: dict, model: nn.Module, names: list[str]) -> float:
    """‖now − V‖/‖V‖ against the saved variant base V (PiSSA's residual, LoftQ's quantized weight); inf if none."""
    if sorted(saved) != sorted(names) or not all("variant" in saved[n] for n in names):
        return float("inf")
    now = torch.cat([_at(base_weight(model.get_submodule(n)), saved[n]["index"]) for n in names])
    variant = torch.cat([torch.tensor(saved[n]["variant"], dtype=torch.float64) for n in names])
    return float(torch.linalg.norm(now - variant) / torch.linalg.norm(variant).clamp(min=1e-30))


_ARRAYS = {"index": "i", "base": "f", "merged": "f", "variant": "f"}  # int32, float32


def _pack(key: str, values: list) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}{_ARRAYS[key]}", *values)).decode()


def _unpack(key: str, text: str) -> list:
    data = base64.b64decode(text)
    return list(struct.unpack(f"<{len(data) // 4}{_ARRAYS[key]}", data))


def dumps(meta: dict) -> str:
    """The metadata as compact JSON: each fingerprint array as little-endian int32/float32 bytes in base64."""
    if fp := meta.get("fingerprint"):
        meta = {**meta, "fingerprint": {name: {k: _pack(k, v) if k in _ARRAYS else v for k, v in entry.items()}
                                        for name, entry in fp.items()}}
    return json.dumps(meta, separators=(",", ":"))


def loads(text: str) -> dict:
    """dumps' inverse: the arrays back as lists of ints and floats."""
    meta = json.loads(text)
    if fp := meta.get("fingerprint"):
        meta["fingerprint"] = {name: {k: _unpack(k, v) if k in _ARRAYS else v for k, v in entry.items()}
                               for name, entry in fp.items()}
    return meta
