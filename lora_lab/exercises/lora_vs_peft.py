"""Checks for the exercises of notebook 03 (LoRA vs PEFT): a LoraConfig for GPT-2, the names behind
target_modules="all-linear", and a PEFT adapter copied into a lora_lab model."""

from __future__ import annotations

import copy
import warnings

import torch

from ..i18n import _
from .verdict import _call, _check, _is_shape_error

__all__ = ["check_gpt2_lora_config", "check_all_linear_targets", "check_copy_adapter"]


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)).eval()


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, vocab_size=64)).eval()


def _tiny_biogpt():
    """A causal LM whose output head is not called lm_head: BioGPT's is `output_projection`."""
    from transformers import BioGptConfig, BioGptForCausalLM

    torch.manual_seed(0)
    return BioGptForCausalLM(BioGptConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, vocab_size=64)).eval()


def _tiny_llama_head_first():
    """The tiny Llama with its output head registered before its layers: named_modules() lists lm_head first.

    The model computes the same; only the order its modules are listed in changes. A head found by its
    place ("the last nn.Linear") is then the wrong layer.
    """
    model = _tiny_llama()
    model._modules = dict(sorted(model._modules.items(), key=lambda item: item[0] != "lm_head"))
    return model


def _attention_targets(model) -> list[str]:
    """The attention projections PEFT itself targets on this architecture (its default target_modules)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    return list(DEFAULTS[model.config.model_type])


@_check("Exercise 03.1 · gpt2_lora_config")
def check_gpt2_lora_config(fn) -> str:
    """fn() -> a peft.LoraConfig that puts LoRA on GPT-2's attention, with the r, α and dropout the exercise asks for."""
    import peft
    from transformers.pytorch_utils import Conv1D

    config = _call(fn)
    assert isinstance(config, peft.LoraConfig), _("return a peft.LoraConfig, got {kind}.").format(
        kind=type(config).__name__)
    assert config.r == 8, _("the exercise asks for the rank r = 8; your config has r={got!r}.").format(got=config.r)
    assert config.lora_alpha == 32, _("the exercise asks for α (lora_alpha) = 32; your config has lora_alpha={got!r}."
                                      ).format(got=config.lora_alpha)
    assert config.lora_dropout == 0.1, _("the exercise asks for the dropout on the LoRA path (lora_dropout) = 0.1; "
                                         "your config has lora_dropout={got!r}.").format(got=config.lora_dropout)
    model = _tiny_gpt2()
    ids = torch.arange(10)[None]  # (1, 10)
    with torch.no_grad():
        before = model(ids).logits
    attention = _attention_targets(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wrapped = peft.get_peft_model(model, copy.deepcopy(config))
        except ValueError:
            targets = config.target_modules
            if isinstance(targets, str) and targets != "all-linear" and any(
                    n.rsplit(".", 1)[-1] == targets for n, _module in model.named_modules()):
                raise AssertionError(_("PEFT refused target_modules={targets!r}, a name GPT-2 has: given as a string, "
                                       "target_modules is a regular expression that must match a module's FULL name "
                                       "(transformer.h.0.…), while a list matches the last part of each name. Put the "
                                       "name in a list.").format(targets=targets)) from None
            targets = sorted(targets) if isinstance(targets, (set, list, tuple)) else targets
            # (not the exception's class: PEFT 0.20 raises NoMatchingPeftModuleError where 0.21 raises ValueError)
            raise AssertionError(_("PEFT refused the config: target_modules {targets} match nothing in GPT-2. "
                                   "GPT-2 does not name its layers as Llama does: print(model) and see what it calls "
                                   "its attention projection, one fused Conv1D for query, key and value."
                                   ).format(targets=targets)) from None
    assert isinstance(wrapped, peft.PeftModelForCausalLM), _(
        "task_type={task!r}: PEFT wrapped GPT-2 as a {kind}, not as a causal language model (whose wrapper "
        "generates text and shifts the labels). Set the peft.TaskType that says what GPT-2 is."
    ).format(task=config.task_type, kind=type(wrapped).__name__)
    names = [n for n, m in wrapped.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    adapted = [n for n in names if n.rsplit(".", 1)[-1] in attention]
    assert adapted, _("LoRA landed on {landed} but not on the attention: print(model) and look for the attention "
                      "block's projection, one fused Conv1D for query, key and value.").format(
        landed=sorted({n.rsplit(".", 1)[-1] for n in names}))
    extra = sorted({".".join(n.split(".")[-2:]) for n in names if n.rsplit(".", 1)[-1] not in attention})
    if extra:  # target_modules is compared as a set: the attention's fused projection, and nothing else
        lora_params = {n: p.numel() for n, p in wrapped.named_parameters() if "lora_" in n}
        asked = sum(v for n, v in lora_params.items() if any(n.startswith(f"{a}.") for a in adapted))
        raise AssertionError(_(
            "LoRA also landed on {extra}: {trainable:,} trainable parameters where the attention's query/key/value "
            "projection alone gives {asked:,}. In GPT-2, c_proj names two layers (the attention's output projection "
            "and the MLP's second layer) and c_fc is the MLP's first. The tutorial adapted the query and value "
            "projections only; GPT-2 keeps them in one fused Conv1D: target that one alone.").format(
            extra=", ".join(extra), trainable=sum(lora_params.values()), asked=asked))
    layer = wrapped.get_submodule(adapted[0])
    transposed = isinstance(layer.base_layer, Conv1D)  # Conv1D keeps its weight as (in, out)
    assert bool(config.fan_in_fan_out) == transposed, _(
        "GPT-2's Conv1D stores its weight as (in, out), transposed from nn.Linear's (out, in); PEFT notices and "
        "corrects your config with a warning. Say it yourself: LoraConfig has a flag for a weight stored that way.")
    with torch.no_grad():
        assert torch.allclose(wrapped(ids).logits, before, atol=1e-6), \
            _("at init the output changed: keep init_lora_weights at its default so that B starts at zero.")
    d_out = layer.lora_B["default"].weight.shape[0]
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return _("LoRA on {name}: one B of {rows} rows adapts Wq, Wk and Wv at once ({trainable:,} trainable on this tiny "
             "GPT-2).").format(name=adapted[0].rsplit(".", 1)[-1], rows=d_out, trainable=trainable)


@_check("Exercise 03.2 · linear_layer_names")
def check_all_linear_targets(fn) -> str:
    """fn(model) -> the module names (last part, as target_modules takes them) of every nn.Linear but the output head."""
    from ..lora import LoraConfig, find_target_modules

    for arch, build in [("Llama", _tiny_llama), ("BioGPT", _tiny_biogpt),
                        (_("a Llama whose output head is registered before its layers"), _tiny_llama_head_first)]:
        model = build()
        got = _call(fn, model)
        assert isinstance(got, (list, tuple, set)) and all(isinstance(n, str) for n in got), \
            _("return a list of module names (strings), got {kind}.").format(kind=type(got).__name__)
        want = {n.rsplit(".", 1)[-1] for n in find_target_modules(model, LoraConfig(target_modules="all-linear"))}
        got = set(got)
        if any("." in n for n in got):
            raise AssertionError(_("return the last part of each name (e.g. 'q_proj'), as target_modules takes them, "
                                   "not full paths such as {path!r}.").format(path=sorted(n for n in got if "." in n)[0]))
        head = [n for n, m in model.named_modules() if m is model.get_output_embeddings()][0]
        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        if head in got and linear[-1] != head:
            raise AssertionError(_("{arch}: {head!r} is in your list, but it is the output head. In this model "
                                   "named_modules() lists the head before the layers, so the last nn.Linear found is "
                                   "a down_proj: find the head by what it is, model.get_output_embeddings(), not by "
                                   "its place or its name.").format(arch=arch, head=head))
        if head in got:
            raise AssertionError(_("{arch}: {head!r} is the output head, mapping to the vocabulary; QLoRA and PEFT's "
                                   "'all-linear' leave it out (find it with model.get_output_embeddings()).").format(
                arch=arch, head=head))
        assert not got - want, _("{arch}: {extra} are not linear layers of this model; walk model.named_modules() and "
                                 "keep the nn.Linear ones instead of listing names by hand.").format(
            arch=arch, extra=sorted(got - want))
        assert not want - got, _("{arch}: you missed {count} of the model's linear layer names; walk "
                                 "model.named_modules() and keep every nn.Linear but the output head.").format(
            arch=arch, count=len(want - got))
    return _("the same layers as target_modules='all-linear' — for Llama the seven projections, for other "
             "architectures whatever their linear layers are called.")


def _copy_hint(error: BaseException) -> str | None:
    """An `explain` for _call: a size error or a missing name, told in the two libraries' terms."""
    if _is_shape_error(error):
        return _("In both libraries lora_A.weight is (r, in_features) and lora_B.weight is (out_features, r), here "
                 "with r = 4: a size error in copy_ means an A went into a B or the reverse (or one layer's tensor "
                 "into another layer). Pair each parameter with the one of the same layer and the same letter.")
    if isinstance(error, KeyError):
        return _("PEFT's parameter names carry a prefix and an adapter name that ours do not: print a few names of "
                 "peft_model.named_parameters() next to our_model's.")
    return None


@_check("Exercise 03.3 · copy_peft_to_lora_lab")
def check_copy_adapter(fn) -> str:
    """fn(peft_model, our_model) copies every LoRA A and B from a PEFT model into a lora_lab model, in place."""
    import peft

    from ..lora import LoraConfig, inject_lora, lora_layers

    for targets in (["q_proj", "v_proj"], "all-linear"):
        base = _tiny_llama()
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        with torch.no_grad():
            for n, p in theirs.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn_like(p) * 0.2)  # a trained-looking adapter
        ours = inject_lora(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        reference = {n: p.detach().clone() for n, p in theirs.named_parameters()}
        _call(fn, theirs, ours, explain=_copy_hint)
        changed = [n for n, p in theirs.named_parameters() if not torch.equal(p, reference[n])]
        assert not changed, _("the PEFT model was modified ({name!r}); copy from it, into ours.").format(name=changed[0])
        stale = [n for n, layer in lora_layers(ours) if torch.count_nonzero(layer.lora_B.weight) == 0]
        assert not stale, _("{stale} of {total} LoRA layers were not filled (e.g. {name!r}). Print a few names of "
                            "peft_model.named_parameters() next to our_model's: PEFT's carry a prefix and an adapter "
                            "name that ours do not.").format(stale=len(stale), total=len(lora_layers(ours)),
                                                             name=stale[0])
        ids = torch.arange(12)[None]
        with torch.no_grad():
            diff = float((ours(ids).logits - theirs(ids).logits).abs().max())
        assert diff < 1e-5, _("with targets {targets!r} the logits differ by {diff:.2e}: some A and B went to the "
                              "wrong layer, or A and B were swapped.").format(targets=targets, diff=diff)
    return _("the two models now give identical logits: same adapter, two libraries.")
