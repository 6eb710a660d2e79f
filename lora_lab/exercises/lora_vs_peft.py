"""Checks for the exercises of notebook 03 (LoRA vs PEFT): a LoraConfig for GPT-2, the names behind
target_modules="all-linear", and a PEFT adapter copied into a lora_lab model."""

from __future__ import annotations

import copy
import math
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


def _only_lora_trains(wrapped, config, adapted: list[str]) -> None:
    """Raise AssertionError naming the LoraConfig option that trains more than LoRA's A and B on the adapted layers."""
    trainable = {n: p.numel() for n, p in wrapped.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if n.endswith((".lora_A.default.weight", ".lora_B.default.weight"))}
    others = {n: k for n, k in trainable.items() if n not in lora}
    if not others:
        return
    counts = dict(extra=sum(others.values()), trainable=sum(trainable.values()),
                  asked=sum(trainable[n] for n in lora))
    if any(".modules_to_save." in n for n in others):
        raise AssertionError(_(
            "modules_to_save={modules!r} also trains a whole copy of those modules ({extra:,} parameters) beside LoRA: "
            "{trainable:,} trainable where the attention's LoRA alone gives {asked:,}. modules_to_save is for a part "
            "the new task needs whole, such as a fresh classification head; this exercise trains LoRA's A and B only, "
            "so leave it out.").format(modules=sorted(config.modules_to_save or []), **counts))
    if any(".lora_magnitude_vector." in n for n in others):
        raise AssertionError(_(
            "use_dora=True adds DoRA's magnitude vector, one length per output feature ({extra:,} more trainable "
            "values): that is DoRA (notebook 07), not the plain LoRA the exercise asks for. Leave use_dora at its "
            "default, False.").format(**counts))
    if config.bias != "none":
        raise AssertionError(_(
            "bias={bias!r} also trains {extra:,} bias values of GPT-2 itself, which LoRA keeps frozen with the rest of "
            "the base model: {trainable:,} trainable where the attention's LoRA alone gives {asked:,}. Keep bias='none', "
            "the default.").format(bias=config.bias, **counts))
    raise AssertionError(_(
        "besides LoRA's A and B, {names} train too ({extra:,} parameters): the exercise trains A and B only. Leave "
        "the option that adds them at its default.").format(
        names=", ".join(sorted({".".join(n.split(".")[-3:]) for n in others})), **counts))


def _every_block_alike(wrapped, config, adapted: list[str], attention: list[str]) -> None:
    """Raise AssertionError if some attention block has no adapter, or another rank or scaling than r = 8, α = 32."""
    blocks = [n for n, _module in wrapped.named_modules() if n.rsplit(".", 1)[-1] in attention]
    missing = [n for n in blocks if n not in adapted]
    if missing:
        raise AssertionError(_(
            "LoRA is on {count} of GPT-2's {total} attention blocks: an option such as layers_to_transform leaves "
            "{missing} without an adapter. The exercise adapts the attention of every block; leave the layer "
            "selection out.").format(count=len(adapted), total=len(blocks),
                                     missing=", ".join(".".join(n.split(".")[-4:]) for n in missing)))
    scaling = config.lora_alpha / config.r  # the r and α the exercise fixes, checked above
    for name in adapted:
        layer = wrapped.get_submodule(name)
        rank, got = layer.r["default"], layer.scaling["default"]
        where = ".".join(name.split(".")[-4:])
        if rank != config.r:
            raise AssertionError(_(
                "{where} has rank {rank}, not r = {r}: rank_pattern gives some layers a rank of their own. The exercise "
                "asks for r = {r} on every adapted layer; leave rank_pattern out.").format(where=where, rank=rank,
                                                                                       r=config.r))
        if math.isclose(got, scaling, rel_tol=1e-6):
            continue
        if config.use_rslora:
            raise AssertionError(_(
                "use_rslora=True makes PEFT scale the update by lora_alpha / √r = {got:.4g} instead of lora_alpha / r "
                "= {scaling:g}: rsLoRA changes the scaling that r = 8 and α = 32 fix in this exercise. Leave use_rslora "
                "at its default, False.").format(got=got, scaling=scaling))
        raise AssertionError(_(
            "{where} scales its update by {got:.4g}, not by lora_alpha / r = {scaling:g}: alpha_pattern gives some "
            "layers an α of their own. The exercise asks for α = 32 on every adapted layer; leave alpha_pattern out."
        ).format(where=where, got=got, scaling=scaling))


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
    _only_lora_trains(wrapped, config, adapted)
    _every_block_alike(wrapped, config, adapted, attention)
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


def _name_copy_slip(theirs, ours: list, init: dict) -> None:
    """Raise AssertionError if, layer by layer, only one of A and B was copied, or one was copied times the scaling.

    `ours` is lora_lab.lora.lora_layers(our_model), `init` our model's parameters before the copy; each of our
    layers is compared with the PEFT layer of the same name.
    """
    only_a, only_b, scaled = [], [], []
    for name, layer in ours:
        twin = theirs.base_model.model.get_submodule(name)
        their_a, their_b = twin.lora_A["default"].weight, twin.lora_B["default"].weight
        a, b = layer.lora_A.weight, layer.lora_B.weight
        a_copied, b_copied = torch.equal(a, their_a), torch.equal(b, their_b)
        if a_copied and not b.any():
            only_a.append(name)
        elif b_copied and torch.equal(a, init[f"{name}.lora_A.weight"]):
            only_b.append(name)
        s = twin.scaling["default"]
        for mine, their, letter in ((a, their_a, "A"), (b, their_b, "B")):
            for factor in {s, 1 / s} - {1.0}:  # a scaling of 1 leaves a right copy unchanged
                if a.shape == their_a.shape and mine.shape == their.shape and torch.allclose(mine, their * factor):
                    scaled.append((name, letter, factor, s))
    total = len(ours)
    if only_a:
        raise AssertionError(_("{count} of {total} LoRA layers got PEFT's lora_A but kept a zero lora_B (e.g. {name!r}): "
                               "with B = 0 the adapter changes nothing. Copy both matrices of every layer.").format(
            count=len(only_a), total=total, name=only_a[0]))
    if only_b:
        raise AssertionError(_("{count} of {total} LoRA layers got PEFT's lora_B but kept our own random lora_A (e.g. "
                               "{name!r}). Copy both matrices of every layer.").format(
            count=len(only_b), total=total, name=only_b[0]))
    if scaled:
        name, letter, factor, s = scaled[0]
        raise AssertionError(_("in {name!r} you copied lora_{letter} times {factor:g}. The scaling α/r = {scaling:g} is "
                               "not stored in the weights: both libraries apply it in the forward pass, so copy A and B "
                               "as they are.").format(name=name, letter=letter, factor=factor, scaling=s))


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
        init = {n: p.detach().clone() for n, p in ours.named_parameters()}  # our own adapter, before the copy
        _call(fn, theirs, ours, explain=_copy_hint)
        changed = [n for n, p in theirs.named_parameters() if not torch.equal(p, reference[n])]
        assert not changed, _("the PEFT model was modified ({name!r}); copy from it, into ours.").format(name=changed[0])
        _name_copy_slip(theirs, lora_layers(ours), init)
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
