"""LoRA from scratch, h = W0·x + (α/r)·B·A·x, after Hu et al. 2021 (arXiv 2106.09685), in PEFT's vocabulary."""

import dataclasses
import itertools
import math
import re
import warnings

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D  # GPT-2's linear layer, weight stored (in, out)

from . import base4bit
from .lora_config import ALL_LINEAR, BIAS_CHOICES, INIT_CHOICES, LoraConfig, check_lora_args  # noqa: F401  (importable from here as before)


def _features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of nn.Linear, Conv1D, or any module that exposes both (e.g. a 4-bit linear)."""
    if isinstance(layer, Conv1D):
        return layer.nx, layer.nf
    fin, fout = getattr(layer, "in_features", None), getattr(layer, "out_features", None)
    if isinstance(fin, int) and isinstance(fout, int):
        return fin, fout
    raise TypeError(f"base_layer={type(layer).__name__} is not accepted; LoRA wraps nn.Linear, transformers' Conv1D, "
                    "or a module with int in_features and out_features")


def is_linear(module: nn.Module) -> bool:
    """True for layers LoRA can wrap: nn.Linear, Conv1D, or any module exposing int in_features/out_features."""
    if isinstance(module, LoRALinear):
        return False
    try:
        _features(module)
        return True
    except TypeError:
        return False


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: base_layer(x) + lora_B(lora_A(dropout(x))) · scaling."""

    def __init__(self, base_layer: nn.Module, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 init_lora_weights: bool | str = "gaussian", use_rslora: bool = False, fan_in_fan_out: bool = False):
        super().__init__()
        check_lora_args(r, lora_alpha, lora_dropout, init_lora_weights)
        self.in_features, self.out_features = _features(base_layer)
        if r > min(self.in_features, self.out_features):
            raise ValueError(f"r={r} is not accepted for a {self.in_features}→{self.out_features} layer; "
                             f"r must be at most min(in_features, out_features) = {min(self.in_features, self.out_features)}")
        self.base_layer = base_layer.requires_grad_(False)
        self.r, self.lora_alpha = r, lora_alpha
        self.scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        # Conv1D is always (in, out) and nn.Linear never is; PEFT corrects the flag the same way (with a warning)
        self.fan_in_fan_out = isinstance(base_layer, Conv1D) or (fan_in_fan_out and not isinstance(base_layer, nn.Linear))
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        # LoRA lives where the base does; meta stays meta, so Llama-2-7B's counts need no memory
        device = next(itertools.chain(base_layer.parameters(), base_layer.buffers()), torch.empty(0)).device
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=device)  # A: (r, in_features)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=device)  # B: (out_features, r)
        self.merged = False
        self.reset_lora_parameters(init_lora_weights)

    def reset_lora_parameters(self, init_lora_weights: bool | str = "gaussian") -> None:
        """B = 0 so training starts from the base model; A Gaussian (std 1/r) or Kaiming-uniform; False keeps nn.Linear's init."""
        if init_lora_weights is False:
            return
        if init_lora_weights == "gaussian":
            nn.init.normal_(self.lora_A.weight, std=1 / self.r)
        else:  # True or "kaiming": PEFT's default, the same draw as nn.Linear's own init
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W0·x + (α/r)·B·A·x for x: (..., in_features)."""
        result = self.base_layer(x)  # (..., out_features)
        if self.merged:  # ΔW already lives in the base weight
            return result
        x = x.to(self.lora_A.weight.dtype)  # LoRA path in the adapter's dtype (fp32) even over a bf16 or 4-bit base
        return (result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling).to(result.dtype)

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW = B·A·scaling, (out_features, in_features); (in, out) when the base stores its weight transposed."""
        delta = self.lora_B.weight @ self.lora_A.weight * self.scaling  # (out, r) @ (r, in) -> (out, in)
        return delta.T if self.fan_in_fan_out else delta

    def merge(self) -> None:
        """W0 += ΔW, after which the forward is the base layer alone; a no-op when already merged."""
        if not self.merged:
            self._add_to_base_weight(self.get_delta_weight())
            self.merged = True

    def unmerge(self) -> None:
        """W0 -= ΔW, undoing merge() up to float rounding; a no-op when not merged."""
        if self.merged:
            self._add_to_base_weight(-self.get_delta_weight())
            self.merged = False

    def _add_to_base_weight(self, delta: torch.Tensor) -> None:
        # the one place that writes the base weight (QLoRALinear overrides it for its NF4Linear)
        base = self.base_layer
        if base4bit.is_4bit(base):  # dequantize, add, requantize: rounds part of ΔW away
            warnings.warn(base4bit.DRIFT_WARNING, stacklevel=4)
            base4bit.requantize_(base, base4bit.dequantized_weight(base) + delta.float())
            return
        weight = base.weight
        with torch.no_grad():
            weight += delta.to(weight.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:g}, merged={self.merged}"


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """(name, layer) for every LoRALinear (or subclass) in the model."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def _entry_matches(name: str, entry: str) -> bool:
    return name == entry or name.endswith("." + entry)  # a full name, or the part after a dot (PEFT's rule)


def match_target_modules(names: list[str], target_modules, linear: list[str], heads=(), owner: str = "the model",
                         nothing: str = "matched no module", kinds: dict | None = None) -> list[str]:
    """The names among `names` that `target_modules` selects, with PEFT's rules; every entry must select one.

    target_modules: a list of names (a full module name, or the part after a dot), "all-linear" (every
    name in `linear` but the output head), or any other string: a regex over full names (a string is
    never split into a list); `heads`: the output head's names; `kinds`: {name: class name} for messages.
    Raises ValueError naming every entry that matches nothing (with the leaf names of `linear`), and
    for a match that is not in `linear` (PEFT refuses it too). Shared by inject_lora, the memory
    estimate and the fine-tune.
    """
    tm = sorted(target_modules) if isinstance(target_modules, (set, frozenset)) else target_modules
    if tm == ALL_LINEAR:
        chosen = [n for n in linear if n not in heads]
        missing = [] if chosen else [tm]
    elif isinstance(tm, str):
        chosen = [n for n in names if re.fullmatch(tm, n)]
        missing = [] if chosen else [tm]
    elif isinstance(tm, (list, tuple)) and tm and all(isinstance(t, str) for t in tm):
        chosen = [n for n in names if any(_entry_matches(n, t) for t in tm)]
        missing = [t for t in tm if not any(_entry_matches(n, t) for n in names)]
    else:
        raise TypeError(f"target_modules={tm!r} is not accepted; give a non-empty list of module name suffixes, "
                        f"a regex string, or {ALL_LINEAR!r}")
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
    if missing:
        which = "" if len(missing) == (1 if isinstance(tm, str) else len(tm)) else \
            ": " + ", ".join(repr(t) for t in missing)
        regex = "" if not isinstance(tm, str) else (
            f". A string is one regular expression matched against whole module names such as {linear[0]!r} "
            f"(PEFT's rule); for names give a list, e.g. [{tm!r}], or a regex such as {'.*' + tm!r}" if linear else "")
        raise ValueError(f"target_modules={tm!r}{which} {nothing} of {owner}; "
                         f"its linear layers are named: {', '.join(leaves) or '(none)'}{regex}")
    linear_set = set(linear)
    if wrong := [n for n in chosen if n not in linear_set]:
        kind = (kinds or {}).get(wrong[0], "module that is not a linear layer")
        inside = sorted({n.rsplit(".", 1)[-1] for n in chosen if n in linear_set})
        hint = ""
        if isinstance(tm, str) and inside:
            hint = f"; to select only the linear layers it matches, name them, e.g. '{tm}\\.({'|'.join(inside)})'"
        raise ValueError(f"target_modules={tm!r} matched {wrong[0]!r}, a {kind}" + (f" (and {len(wrong) - 1} more)"
                         if len(wrong) > 1 else "") + "; LoRA wraps nn.Linear, Conv1D, or modules with "
                         f"in_features/out_features, and PEFT refuses such a target too{hint}")
    return chosen


def find_target_modules(model: nn.Module, config) -> list[str]:
    """Full names of the modules inject_lora would wrap: PEFT's matching rules, every entry checked.

    config: a LoraConfig (lora_lab's or PEFT's) or its target_modules alone. Raises ValueError naming
    every entry that matches no module, or a match that is not a linear layer.
    """
    tm = getattr(config, "target_modules", config)
    named = [(n, m) for n, m in model.named_modules() if n]
    linear = [n for n, m in named if is_linear(m)]
    head_module = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    heads = {n for n, m in named if head_module is not None and m is head_module}
    return match_target_modules([n for n, _ in named], tm, linear, heads, type(model).__name__,
                                kinds={n: type(m).__name__ for n, m in named})


def check_rank(r: int, layers: list[tuple[str, int, int]], key: str = "r") -> None:
    """ValueError unless r <= min(in_features, out_features) for every (name, in_features, out_features).

    A rank-r update B·A of an in→out layer has rank at most min(in, out): a larger r adds parameters
    that change nothing. Checked by inject_lora, the memory estimate and the fine-tune's settings check.
    """
    over = [(n, i, o) for n, i, o in layers if r > min(i, o)]
    if over:
        name, fin, fout = over[0]
        more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
        raise ValueError(f"{key}={r} is not accepted for {name!r}, a {fin}→{fout} layer{more}; {key} must be at most "
                         f"min(in_features, out_features) = {min(fin, fout)}: choose {key} <= "
                         f"{min(min(i, o) for _, i, o in layers)} for these target_modules")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def tied_targets(model: nn.Module, names: list[str]) -> dict[str, list[str]]:
    """{target: the other parameters sharing its weight}, e.g. a tied lm_head and model.embed_tokens.weight."""
    owners: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(n)
    tied = {}
    for name in names:
        module = model.get_submodule(name)
        weight = getattr(getattr(module, "base_layer", module), "weight", None)
        if others := [o for o in owners.get(id(weight), []) if o.rpartition(".")[0] not in (name, name + ".base_layer")]:
            tied[name] = others
    return tied


def inject_lora(model: nn.Module, config: LoraConfig, layer_cls=None) -> nn.Module:
    """Wrap every target module in the layer `config` asks for (in place), freeze all that is not LoRA, return the model.

    The layer follows config.variant (lora_lab.variants: LoRA, DoRA, PiSSA, LoftQ, QA-LoRA) unless
    `layer_cls` is given. Every target is checked before any changes: ValueError for a target that
    matches nothing or a rank above a layer's width, TypeError for a layer the variant cannot wrap. The
    new layers take the train/eval mode of the modules they replace, so dropout follows the model. The
    targeted weights' fingerprint (lora_lab.fingerprint) is kept for save_adapter; a target that shares
    its weight with another module (a tied lm_head) is warned about, as PEFT does.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"config={config!r} is not accepted; pass a lora_lab.LoraConfig")
    if existing := lora_layers(model):
        raise ValueError(f"model already has {len(existing)} LoRA layers (first: {existing[0][0]!r}); inject_lora runs "
                         "once per model: call merge_lora(model, unload=True) first, or start from a fresh model")
    targets = [(n, model.get_submodule(n)) for n in find_target_modules(model, config)]
    check_rank(config.r, [(name, *_features(module)) for name, module in targets])
    if layer_cls is None:
        from .variants import layer_class
        layer_cls = layer_class(config, targets)
    from . import fingerprint
    base = fingerprint.take(model, [n for n, _ in targets])  # before a variant (PiSSA, LoftQ) rewrites a weight
    if tied := tied_targets(model, [n for n, _ in targets]):
        warnings.warn(f"{sorted(tied)} share their weight with {sorted(sum(tied.values(), []))} (tie_word_embeddings); "
                      "LoRA trains as usual, but a merge would write ΔW into the shared weight as well. merge_lora "
                      "gives each its own copy first (PEFT warns here too, peft#2018, and merges into both)", stacklevel=2)
    kwargs = dict(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                  init_lora_weights=config.init_lora_weights, use_rslora=config.use_rslora,
                  fan_in_fan_out=config.fan_in_fan_out)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:  # build (and check) every layer before any swap, so a bad fit leaves the model as it was
        new = [layer_cls(module, **kwargs) for _, module in targets]
    except (ValueError, TypeError):
        for p, flag in flags:
            p.requires_grad_(flag)
        raise
    model.requires_grad_(False)
    for (name, old), layer in zip(targets, new):
        layer.train(old.training)  # nn.Module starts in train mode; dropout must follow the model's mode
        _set_submodule(model, name, layer)
        if config.bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
            layer.base_layer.bias.requires_grad_(True)
    if config.bias == "all":  # PEFT's rule: every parameter whose name contains "bias"
        for n, p in model.named_parameters():
            if "bias" in n:
                p.requires_grad_(True)
    model.lora_config = dataclasses.replace(config)
    model.lora_base_fingerprint = base
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters as PEFT counts them: total includes LoRA, a packed 4-bit byte holds two."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit" or p.dtype == torch.uint8:  # two 4-bit weights per byte
            n *= 2 * p.element_size()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
