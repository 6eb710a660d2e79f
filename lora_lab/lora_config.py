"""An adapter's settings in PEFT's names: `LoraConfig`, and how it is read from and written to adapter_config.json.

One config describes every kind of adapter the kit builds, as PEFT 0.21's `peft.LoraConfig` does:

    LoraConfig(r=8, lora_alpha=16)                               plain LoRA (Hu et al. 2021)
    LoraConfig(..., use_rslora=True)                             scaling α/√r instead of α/r (Kalajdzievski 2023)
    LoraConfig(..., use_dora=True)                               DoRA (lora_lab.dora)
    LoraConfig(..., init_lora_weights="pissa")                   PiSSA (lora_lab.pissa)
    LoraConfig(..., init_lora_weights="loftq",
               loftq_config={"loftq_bits": 4, "loftq_iter": 1})  LoftQ over an NF4 base (lora_lab.loftq)
    LoraConfig(..., use_qalora=True, qalora_group_size=32)       QA-LoRA over an INT4 base (lora_lab.qalora)

`lora_lab.inject_lora`, `save_adapter` and `load_adapter` read it to choose the layer, the files and
the checks. A key of adapter_config.json that PEFT 0.21 does not know is an error when it is a
near-miss of one it does (a typo leaves the real setting at its default), and a warning otherwise.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field

INIT_CHOICES = (True, False, "gaussian", "kaiming", "pissa", "loftq")
LAYER_INITS = ("gaussian", "kaiming", True, False)  # what a LoRALinear draws itself; pissa and loftq are set after
ALL_LINEAR = "all-linear"  # every linear layer but the output head, as PEFT means it
BIAS_CHOICES = ("none", "all", "lora_only")
# peft 0.21's LoraConfig fields (tests/test_adapters.py checks the list against the installed PEFT)
PEFT_KEYS = ("alora_invocation_tokens", "alpha_pattern", "arrow_config", "auto_mapping", "base_model_name_or_path",
             "bias", "corda_config", "ensure_weight_tying", "eva_config", "exclude_modules", "fan_in_fan_out",
             "inference_mode", "init_lora_weights", "kasa_config", "layer_replication", "layers_pattern",
             "layers_to_transform", "loftq_config", "lora_alpha", "lora_bias", "lora_dropout", "lora_ga_config",
             "megatron_config", "megatron_core", "modules_to_save", "monteclora_config", "peft_type", "peft_version",
             "qalora_group_size", "r", "rank_pattern", "revision", "runtime_config", "target_modules",
             "target_parameters", "task_type", "trainable_token_indices", "use_bdlora", "use_dora", "use_qalora",
             "use_rslora", "velora_config")
# keys that describe the file or the run, not what the adapter computes
BOOKKEEPING = ("auto_mapping", "base_model_name_or_path", "inference_mode", "layers_pattern", "megatron_core",
               "peft_type", "peft_version", "revision", "runtime_config", "task_type")
# PEFT features that change what an adapter means and that lora_lab does not build: loaded only when off
UNSUPPORTED = ("alora_invocation_tokens", "alpha_pattern", "arrow_config", "corda_config", "ensure_weight_tying",
               "eva_config", "exclude_modules", "kasa_config", "layer_replication", "layers_to_transform",
               "lora_bias", "lora_ga_config", "megatron_config", "modules_to_save", "monteclora_config",
               "rank_pattern", "target_parameters", "trainable_token_indices", "use_bdlora", "velora_config")


@dataclass
class LoraConfig:
    r: int = 8  # rank of the update ΔW = B·A
    lora_alpha: float = 8  # ΔW is scaled by lora_alpha / r
    lora_dropout: float = 0.0  # dropout on the LoRA path's input only, in [0, 1)
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])  # name suffixes, a regex over full names, or "all-linear" (all but the output head); PEFT's Llama default
    bias: str = "none"  # which biases train: "none", "all", or "lora_only" (those of wrapped layers)
    init_lora_weights: bool | str = "gaussian"  # "gaussian": A ~ N(0, 1/r²), B = 0; "kaiming"/True: PEFT's default; False: nn.Linear's init (B ≠ 0, tests); "pissa", "loftq": see the module docstring
    use_rslora: bool = False  # scale by lora_alpha / sqrt(r) instead of lora_alpha / r
    fan_in_fan_out: bool = False  # base weight stored (in, out); switched on by itself for GPT-2's Conv1D
    use_dora: bool = False  # DoRA: a trained length per output feature (lora_lab.dora)
    use_qalora: bool = False  # QA-LoRA: the base becomes group-wise INT4, A reads group means (lora_lab.qalora)
    qalora_group_size: int = 16  # input features per INT4 group with use_qalora (PEFT's default)
    loftq_config: dict = field(default_factory=dict)  # with init_lora_weights="loftq": {"loftq_bits": 4, "loftq_iter": n}

    def __post_init__(self):
        check_lora_args(self.r, self.lora_alpha, self.lora_dropout, self.init_lora_weights, INIT_CHOICES)
        tm = self.target_modules
        if isinstance(tm, (list, tuple, set)) and tm and all(isinstance(t, str) for t in tm):
            self.target_modules = sorted(tm) if isinstance(tm, set) else list(tm)
        elif not (isinstance(tm, str) and tm):
            raise TypeError(f"target_modules={tm!r} is not accepted; give a non-empty list of module name suffixes, a regex string, or 'all-linear'")
        if self.bias not in BIAS_CHOICES:
            raise ValueError(f"bias={self.bias!r} is not accepted; choose one of {BIAS_CHOICES}")
        for name in ("use_rslora", "fan_in_fan_out", "use_dora", "use_qalora"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}={getattr(self, name)!r} is not accepted; {name} takes True or False")
        self._check_variant()

    @property
    def variant(self) -> str:
        """Which adapter this config builds: "lora", "dora", "pissa", "loftq" or "qalora"."""
        if self.use_dora:
            return "dora"
        if self.use_qalora:
            return "qalora"
        return self.init_lora_weights if self.init_lora_weights in ("pissa", "loftq") else "lora"

    def _check_variant(self) -> None:
        init = self.init_lora_weights
        special = [name for name, on in (("use_dora=True", self.use_dora), ("use_qalora=True", self.use_qalora),
                                          (f"init_lora_weights={init!r}", init in ("pissa", "loftq"))) if on]
        if len(special) > 1:
            raise ValueError(f"{' with '.join(special)} is not accepted; lora_lab builds one variant at a time: "
                             "DoRA, QA-LoRA, PiSSA or LoftQ, each with plain LoRA's other settings")
        group = self.qalora_group_size
        if not isinstance(group, int) or isinstance(group, bool) or group < 1:
            raise ValueError(f"qalora_group_size={group!r} is not accepted; give a positive int that divides the "
                             "targeted layers' in_features")
        if self.variant in ("pissa", "loftq", "qalora") and self.fan_in_fan_out:
            raise ValueError(f"fan_in_fan_out=True is not accepted with {special[0]}: it wraps nn.Linear layers, "
                             "stored (out, in)")
        loftq = self.loftq_config
        if not isinstance(loftq, dict):
            raise TypeError(f"loftq_config={loftq!r} is not accepted; give a dict such as "
                            "{'loftq_bits': 4, 'loftq_iter': 1}")
        if init != "loftq":
            if loftq:
                raise ValueError(f"loftq_config={loftq!r} is only read with init_lora_weights='loftq' (it is "
                                 f"{init!r} here); drop it, or set init_lora_weights='loftq'")
            return
        if not loftq:
            raise ValueError("init_lora_weights='loftq' needs loftq_config, e.g. {'loftq_bits': 4, 'loftq_iter': 1} "
                             "(PEFT requires it too)")
        unknown = sorted(set(loftq) - {"loftq_bits", "loftq_iter"})
        if unknown or loftq.get("loftq_bits", 4) != 4:
            raise ValueError(f"loftq_config={loftq!r} is not accepted; lora_lab's LoftQ takes loftq_bits=4 (NF4) "
                             "and loftq_iter, an int >= 1")
        it = loftq.get("loftq_iter", 1)
        if not isinstance(it, int) or isinstance(it, bool) or it < 1:
            raise ValueError(f"loftq_config['loftq_iter']={it!r} is not accepted; give an int >= 1")


def check_lora_args(r, lora_alpha, lora_dropout, init_lora_weights, choices=LAYER_INITS) -> None:
    """Raise TypeError/ValueError naming the argument, its value and what is accepted."""
    if not isinstance(r, int) or isinstance(r, bool):
        raise TypeError(f"r={r!r} is not accepted; r must be a positive int")
    if r <= 0:
        raise ValueError(f"r={r!r} is not accepted; r must be a positive int")
    if not isinstance(lora_alpha, (int, float)) or isinstance(lora_alpha, bool):
        raise TypeError(f"lora_alpha={lora_alpha!r} is not accepted; lora_alpha must be a number > 0")
    if not lora_alpha > 0:
        raise ValueError(f"lora_alpha={lora_alpha!r} is not accepted; lora_alpha must be a number > 0")
    if not isinstance(lora_dropout, (int, float)) or isinstance(lora_dropout, bool):
        raise TypeError(f"lora_dropout={lora_dropout!r} is not accepted; lora_dropout must be a number in [0, 1)")
    if not 0 <= lora_dropout < 1:
        raise ValueError(f"lora_dropout={lora_dropout!r} is not accepted; lora_dropout must be in [0, 1)")
    if not any(init_lora_weights is c if isinstance(c, bool) else init_lora_weights == c for c in choices):
        raise ValueError(f"init_lora_weights={init_lora_weights!r} is not accepted; choose one of {choices}")


def _is_off(value) -> bool:
    return value is None or value is False or value == {} or value == []


# what a key left out of adapter_config.json loads as (PEFT's defaults), and short names people write for keys
_LOADED_DEFAULTS = {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
                    "bias": "none", "use_rslora": False, "use_dora": False, "fan_in_fan_out": False}
_SHORT_NAMES = {"alpha": "lora_alpha", "dropout": "lora_dropout", "rank": "r", "targets": "target_modules",
                "rslora": "use_rslora", "dora": "use_dora"}


def _near_miss(key: str) -> str | None:
    """The known key `key` was meant to be: the same but for case or - and _, a short name ("alpha"), or a typo
    difflib finds ("lora_alpah"); None for a key unlike any."""
    folded = key.lower().replace("-", "_")
    for known in PEFT_KEYS:
        if known.lower() == folded:
            return known
    if folded in _SHORT_NAMES:
        return _SHORT_NAMES[folded]
    near = difflib.get_close_matches(folded, PEFT_KEYS, n=1, cutoff=0.75)
    return near[0] if near else None


def from_adapter_config(raw: dict, file: str) -> LoraConfig:
    """The LoraConfig an adapter_config.json (PEFT's or lora_lab's) describes; ValueError for what lora_lab cannot load.

    A key PEFT 0.21 does not know raises ValueError when it is a near miss of a known key — the same but for
    case ("LoRA_alpha"), a short name ("alpha") or a typo difflib finds ("lora_alpah"): as written, the known
    key would keep its default — and warns otherwise (a file from a newer PEFT). A PEFT feature lora_lab does not build (rank_pattern, modules_to_save, ...) is refused
    unless it is off.
    """
    if not isinstance(raw, dict) or raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{file!r} has peft_type={raw.get('peft_type') if isinstance(raw, dict) else raw!r}; "
                         "lora_lab loads peft_type 'LORA' only")
    unknown = [k for k in raw if k not in PEFT_KEYS]
    for key in unknown:
        if near := _near_miss(key):
            value = raw[near] if near in raw else _LOADED_DEFAULTS.get(near, "PEFT's default")
            raise ValueError(f"{file!r} has the key {key!r}, which no LoRA setting is called; did you mean {near!r}? "
                             f"(as written, {near} would be {value!r}{'' if near in raw else ', its default'}). "
                             "Fix the key in the file")
    if unknown:  # none of them a near miss of a known key
        warnings.warn(f"{file!r}: ignoring {unknown}, keys PEFT 0.21 does not know (a file from a newer PEFT?); "
                      "check that they do not change what the adapter computes", stacklevel=4)
    for key in UNSUPPORTED:
        if not _is_off(raw.get(key)):
            raise ValueError(f"{file!r} sets {key}={raw[key]!r}; lora_lab does not build that PEFT feature and loads "
                             f"an adapter only with {key} left unset")
    init = raw.get("init_lora_weights", True)
    if not any(init is c if isinstance(c, bool) else init == c for c in (True, False, "gaussian", "pissa", "loftq")):
        raise ValueError(f"{file!r} sets init_lora_weights={init!r}; lora_lab loads True, False, 'gaussian', 'pissa' "
                         "(the exact SVD) and 'loftq'")
    try:
        return LoraConfig(
            r=raw.get("r", 8), lora_alpha=raw.get("lora_alpha", 8), lora_dropout=raw.get("lora_dropout", 0.0),
            target_modules=raw.get("target_modules") or ["q_proj", "v_proj"], bias=raw.get("bias", "none"),
            init_lora_weights="kaiming" if init is True else init, use_rslora=bool(raw.get("use_rslora", False)),
            fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)), use_dora=bool(raw.get("use_dora", False)),
            use_qalora=bool(raw.get("use_qalora", False)), qalora_group_size=raw.get("qalora_group_size", 16),
            loftq_config=raw.get("loftq_config") or {})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{file!r}: {e}") from None


def to_adapter_config(config: LoraConfig, target_modules, fan_in_fan_out: bool, base_name: str | None) -> dict:
    """adapter_config.json's content in PEFT's keys; peft.PeftConfig.from_pretrained reads it without a warning."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_name or None,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": sorted(target_modules) if isinstance(target_modules, list) else target_modules,
        "bias": config.bias,
        "fan_in_fan_out": fan_in_fan_out,
        "init_lora_weights": True if config.init_lora_weights == "kaiming" else config.init_lora_weights,
        "use_rslora": config.use_rslora,
        "use_dora": config.use_dora,
        "use_qalora": config.use_qalora,
        "qalora_group_size": config.qalora_group_size,
        "loftq_config": dict(config.loftq_config),
        "inference_mode": True,
    }
