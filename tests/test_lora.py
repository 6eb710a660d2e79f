"""lora_lab.lora: invariants of LoRALinear and parity with PEFT on tiny Llama, Mistral (GQA) and GPT-2 models."""

import copy
import math

import peft
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft.tuners.lora.layer import Linear as PeftLinear
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)
from transformers.pytorch_utils import Conv1D

import lora_lab
from lora_lab import LoraConfig, LoRALinear, count_parameters, inject_lora, merge_lora, unmerge_lora
from lora_lab.lora import find_target_modules
from lora_lab.memory import estimate_memory
from lora_lab.qlora import quantize_model


def tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=4, vocab_size=128))
    if arch == "mistral":  # grouped-query attention: k_proj, v_proj are 64 -> 32
        return MistralForCausalLM(MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=2, vocab_size=128))
    return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0))  # no dropout: runs compare exactly


TARGETS = {"llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}
CASES = [(a, t) for a in ("llama", "mistral", "gpt2") for t in (TARGETS[a], "all-linear")]
IDS = [f"{a}-{t if isinstance(t, str) else '+'.join(t)}" for a, t in CASES]
IDS_ = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))  # (batch, seq)


def peft_key(name: str) -> str:  # our parameter name -> PEFT's parameter name in its PeftModel
    return "base_model.model." + name.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


def pair(arch: str, targets, **kw):
    """The same base under our LoRA and PEFT's, with equal (non-zero) A and B."""
    base = tiny(arch)
    ours = inject_lora(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                       init_lora_weights=False, **kw))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, **kw))
    theirs_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if "lora_" in n:
                theirs_params[peft_key(n)].copy_(p)
    return base, ours, theirs


# ---- config and argument checks -------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(r=0), ValueError, ["r=0", "positive int"]),
    (dict(r=-2), ValueError, ["r=-2"]),
    (dict(r=2.5), TypeError, ["r=2.5", "positive int"]),
    (dict(r=True), TypeError, ["r=True"]),
    (dict(lora_alpha=0), ValueError, ["lora_alpha=0", "> 0"]),
    (dict(lora_alpha="16"), TypeError, ["lora_alpha='16'"]),
    (dict(lora_dropout=1.0), ValueError, ["lora_dropout=1.0", "[0, 1)"]),
    (dict(lora_dropout=-0.1), ValueError, ["lora_dropout=-0.1"]),
    (dict(init_lora_weights="xavier"), ValueError, ["init_lora_weights='xavier'", "gaussian", "kaiming"]),
    (dict(init_lora_weights="olora"), ValueError, ["init_lora_weights='olora'", "pissa", "loftq"]),
    (dict(use_dora=True, init_lora_weights="pissa"), ValueError, ["use_dora=True with init_lora_weights='pissa'"]),
    (dict(use_dora=True, use_qalora=True), ValueError, ["one variant at a time"]),
    (dict(use_dora="yes"), TypeError, ["use_dora='yes'", "True or False"]),
    (dict(init_lora_weights="loftq"), ValueError, ["needs loftq_config", "'loftq_bits': 4"]),
    (dict(init_lora_weights="loftq", loftq_config={"loftq_bits": 8, "loftq_iter": 1}), ValueError, ["loftq_bits=4"]),
    (dict(loftq_config={"loftq_bits": 4}), ValueError, ["only read with init_lora_weights='loftq'"]),
    (dict(use_qalora=True, qalora_group_size=0), ValueError, ["qalora_group_size=0"]),
    (dict(init_lora_weights="pissa", fan_in_fan_out=True), ValueError, ["fan_in_fan_out=True", "pissa"]),
    (dict(bias="some"), ValueError, ["bias='some'", "lora_only"]),
    (dict(target_modules=[]), TypeError, ["target_modules=[]", "all-linear"]),
    (dict(target_modules=3), TypeError, ["target_modules=3"]),
    (dict(targetmodules=["q_proj"]), TypeError, ["targetmodules"]),  # a tutorial typo is not ignored
])
def test_config_rejects_bad_values_naming_argument_value_and_choices(kwargs, exc, words):
    with pytest.raises(exc) as err:
        LoraConfig(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_layer_rejects_rank_above_min_features_and_non_linear_bases():
    with pytest.raises(ValueError, match=r"r=9 .*8→64.*at most .* = 8"):
        LoRALinear(nn.Linear(8, 64), r=9, lora_alpha=1)
    LoRALinear(nn.Linear(8, 64), r=8, lora_alpha=1)  # r = min(in, out) is fine
    with pytest.raises(TypeError, match="base_layer=Embedding .*nn.Linear, transformers' Conv1D"):
        LoRALinear(nn.Embedding(10, 8), r=2, lora_alpha=1)
    with pytest.raises(ValueError, match="lora_dropout=1"):
        LoRALinear(nn.Linear(8, 8), r=2, lora_alpha=1, lora_dropout=1)


def test_target_modules_that_match_nothing_list_the_linear_layers():
    with pytest.raises(ValueError) as err:  # the classic GPT-2 tutorial mistake
        inject_lora(tiny("gpt2"), LoraConfig(target_modules=["q_proj", "v_proj"]))
    msg = str(err.value)
    assert "target_modules=['q_proj', 'v_proj']" in msg
    assert "c_attn, c_fc, c_proj, lm_head" in msg


@pytest.mark.parametrize("targets, missing", [
    (["q_proj", "v_porj"], "'v_porj'"),                        # one typo beside a match: not dropped in silence
    (["q_proj", "v_porj", "dense"], "'v_porj', 'dense'"),      # every entry that matches nothing is named
    (("q_proj", "self_attn.v_porj"), "'self_attn.v_porj'"),
])
def test_every_target_entry_that_matches_nothing_is_named(targets, missing):
    model = tiny("llama")
    with pytest.raises(ValueError) as err:
        inject_lora(model, LoraConfig(target_modules=list(targets)))
    assert str(err.value) == (f"target_modules={list(targets)!r}: {missing} matched no module of LlamaForCausalLM; "
                              "its linear layers are named: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, "
                              "up_proj, v_proj")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_a_string_is_never_split_into_letters():
    model = tiny("llama")
    with pytest.raises(ValueError, match=r"target_modules='q_proj' matched no module"):  # a regex over full names
        find_target_modules(model, "q_proj")
    assert find_target_modules(model, r".*\.q_proj") == find_target_modules(model, ["q_proj"])
    assert find_target_modules(model, {"v_proj", "q_proj"}) == find_target_modules(model, ["q_proj", "v_proj"])
    assert len(find_target_modules(model, "all-linear")) == 2 * 7  # every projection, not the lm_head


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_all_linear_selects_the_same_layers_for_inject_lora_the_estimate_and_peft(arch):
    model = tiny(arch)
    ours = find_target_modules(model, "all-linear")
    theirs = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules="all-linear"))
    assert sorted(ours) == sorted(n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                                  if isinstance(m, PeftLinear) or type(m).__name__ == "Linear" and hasattr(m, "lora_A"))
    if arch == "llama":
        est = estimate_memory(model, lora={"r": 2, "target_modules": "all-linear"})
        assert est.lora_params == count_parameters(inject_lora(model, LoraConfig(r=2, target_modules="all-linear")))[0]
        with pytest.raises(ValueError, match=r"'v_porj' matches no linear layer of LlamaForCausalLM; its linear"):
            estimate_memory(model, lora={"r": 2, "target_modules": ["q_proj", "v_porj"]})


def test_targeting_a_non_linear_module_is_refused_as_peft_refuses_it():
    with pytest.raises(ValueError, match="'model.layers.0.self_attn', a LlamaAttention"):
        inject_lora(tiny("llama"), LoraConfig(target_modules=["self_attn"]))
    with pytest.raises(ValueError, match="is not supported"):  # PEFT 0.21: the same target, refused
        peft.get_peft_model(tiny("llama"), peft.LoraConfig(target_modules=".*self_attn.*"))


def test_injecting_twice_is_refused_then_allowed_after_unload():
    model = inject_lora(tiny("llama"), LoraConfig())
    with pytest.raises(ValueError, match="already has 4 LoRA layers .*merge_lora"):
        inject_lora(model, LoraConfig())
    inject_lora(merge_lora(model, unload=True), LoraConfig(target_modules=["k_proj"]))


def test_failed_inject_leaves_the_model_untouched():
    model = tiny("mistral")
    with pytest.raises(ValueError, match="r=48 .*64→32"):  # q_proj (64→64) fits, k_proj (64→32) does not
        inject_lora(model, LoraConfig(r=48, target_modules=["q_proj", "k_proj"]))
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


# ---- the layer ------------------------------------------------------------------------------

def test_init_b_zero_gaussian_std_one_over_r_and_scaling():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(512, 256), r=4, lora_alpha=16)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    assert layer.lora_A.weight.std().item() == pytest.approx(1 / 4, rel=0.05)  # 2048 draws
    assert layer.scaling == 16 / 4
    assert LoRALinear(nn.Linear(64, 64), r=16, lora_alpha=16, use_rslora=True).scaling == 16 / math.sqrt(16)
    kaiming = LoRALinear(nn.Linear(512, 256), r=4, lora_alpha=16, init_lora_weights="kaiming")
    bound = 1 / math.sqrt(512)  # kaiming_uniform with a=√5 on fan_in 512
    assert kaiming.lora_A.weight.abs().max() <= bound and kaiming.lora_A.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(kaiming.lora_B.weight) == 0
    assert not any(p.requires_grad for p in layer.base_layer.parameters())
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A.weight", "lora_B.weight"]


@pytest.mark.parametrize("arch", ["llama", "mistral", "gpt2"])
def test_default_init_leaves_the_output_unchanged(arch):
    base = tiny(arch)
    expected = base(IDS_).logits
    model = inject_lora(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    assert torch.equal(model(IDS_).logits, expected)


@pytest.mark.parametrize("init", ["gaussian", "kaiming"])
def test_same_seed_gives_the_same_init_as_peft(init):
    base = tiny("mistral")
    torch.manual_seed(7)
    ours = inject_lora(copy.deepcopy(base), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=init))
    torch.manual_seed(7)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, target_modules="all-linear", init_lora_weights=True if init == "kaiming" else init))
    theirs_params = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        if "lora_" in n:
            assert torch.equal(p, theirs_params[peft_key(n)]), n


def test_dropout_only_touches_the_lora_path():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(32, 16), r=4, lora_alpha=4, lora_dropout=0.5, init_lora_weights=False).train()
    x = torch.randn(5, 32)
    nn.init.zeros_(layer.lora_B.weight)
    assert torch.equal(layer(x), layer.base_layer(x))  # B = 0: dropout on the LoRA input cannot show
    nn.init.normal_(layer.lora_B.weight)
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    expected = layer.base_layer(x) + x @ layer.get_delta_weight().T
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_lora_path_stays_fp32_over_a_bf16_base():
    layer = LoRALinear(nn.Linear(16, 16).to(torch.bfloat16), r=2, lora_alpha=2, init_lora_weights=False)
    assert layer.lora_A.weight.dtype == torch.float32
    out = layer(torch.randn(3, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert layer.lora_B.weight.grad.dtype == torch.float32


@settings(max_examples=25, deadline=None)
@given(fin=st.integers(1, 24), fout=st.integers(1, 24), r=st.integers(1, 24), alpha=st.floats(0.5, 64),
       rslora=st.booleans(), conv1d=st.booleans(), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_layer_matches_peft_layer_property(fin, fout, r, alpha, rslora, conv1d, batch, seed):
    r = min(r, fin, fout)
    torch.manual_seed(seed)
    base = Conv1D(fout, fin) if conv1d else nn.Linear(fin, fout)
    ours = LoRALinear(copy.deepcopy(base), r=r, lora_alpha=alpha, use_rslora=rslora, init_lora_weights=False)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, fan_in_fan_out=conv1d, init_lora_weights=False)
    theirs = PeftLinear(copy.deepcopy(base), "default", config=config, r=r, lora_alpha=alpha)
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A.weight)
        theirs.lora_B["default"].weight.copy_(ours.lora_B.weight)
    x = torch.randn(batch, 5, fin)
    assert ours.scaling == theirs.scaling["default"]
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.get_delta_weight(), theirs.get_delta_weight("default"), atol=1e-6, rtol=0)
    assert ours.get_delta_weight().shape == base.weight.shape
    w0 = base.weight.clone()
    unmerged = ours(x)
    ours.merge()
    torch.testing.assert_close(ours(x), unmerged, atol=1e-5, rtol=1e-5)
    ours.unmerge()  # W0 + ΔW - ΔW rounds at the scale of |W0 + ΔW|
    atol = 1e-6 * (1 + ours.get_delta_weight().abs().max().item())
    torch.testing.assert_close(ours.base_layer.weight, w0, atol=atol, rtol=0)


def test_a_subclass_can_take_over_how_the_delta_reaches_the_base():
    class Frozen4bitLike(nn.Module):  # no nn.Linear: only in/out features and its own storage
        def __init__(self, fin, fout):
            super().__init__()
            self.in_features, self.out_features = fin, fout
            self.register_buffer("w", torch.randn(fout, fin))

        def forward(self, x):
            return x @ self.w.T

    class LoRA4bitLike(LoRALinear):
        def _add_to_base_weight(self, delta):
            self.base_layer.w += delta

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.head = Frozen4bitLike(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.proj(x))

    model = inject_lora(Net(), LoraConfig(r=2, target_modules=["proj"], init_lora_weights=False),
                        layer_cls=LoRA4bitLike)
    assert type(model.proj) is LoRA4bitLike and isinstance(model.head, nn.Linear)
    x = torch.randn(3, 8)
    before = model(x)
    merge_lora(model)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


# ---- whole models: parity with PEFT ---------------------------------------------------------

@pytest.mark.parametrize("arch, targets", CASES, ids=IDS)
def test_logits_grads_and_training_match_peft(arch, targets):
    _, ours, theirs = pair(arch, targets)
    torch.testing.assert_close(ours(IDS_).logits, theirs(IDS_).logits, atol=1e-6, rtol=0)
    opt_ours = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    opt_theirs = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-2)
    theirs_params = dict(theirs.named_parameters())
    for step in range(3):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            model(IDS_, labels=IDS_).loss.backward()
        for n, p in ours.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(p.grad, theirs_params[peft_key(n)].grad, atol=1e-6, rtol=0)
        opt_ours.step()
        opt_theirs.step()
    for n, p in ours.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, theirs_params[peft_key(n)], atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(IDS_).logits, theirs(IDS_).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch, targets", CASES, ids=IDS)
def test_same_modules_same_names_same_counts_as_peft(arch, targets):
    _, ours, theirs = pair(arch, targets)
    saved = peft.get_peft_model_state_dict(theirs)  # the keys PEFT writes to adapter_model.safetensors
    assert sorted("base_model.model." + k for k in ours.state_dict() if "lora_" in k) == sorted(saved)
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert "lm_head" not in str(sorted(saved))


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_bias_options_train_the_same_parameters_as_peft(bias):
    _, ours, theirs = pair("gpt2", ["c_attn"], bias=bias)
    trainable = sorted(peft_key(n) for n, p in ours.named_parameters() if p.requires_grad)
    assert trainable == sorted(n for n, p in theirs.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("arch, targets", CASES, ids=IDS)
def test_merge_unmerge_and_unload(arch, targets):
    base, ours, theirs = pair(arch, targets)
    weights = {n: p.clone() for n, p in ours.named_parameters() if "base_layer" in n}
    unmerged = ours(IDS_).logits
    merge_lora(ours)
    torch.testing.assert_close(ours(IDS_).logits, unmerged, atol=1e-5, rtol=1e-5)
    unmerge_lora(ours)
    for n, p in ours.named_parameters():
        if n in weights:
            torch.testing.assert_close(p, weights[n], atol=1e-6, rtol=0)
    plain = merge_lora(ours, unload=True)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert [type(m) for m in plain.modules()] == [type(m) for m in base.modules()]
    assert plain.state_dict().keys() == base.state_dict().keys()
    peft_plain = theirs.merge_and_unload()
    for (n, p), q in zip(plain.state_dict().items(), peft_plain.state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no LoRA layers"):
        unmerge_lora(plain)


# ---- merging into every base the kit produces ----------------------------------------------

def linear4bit(lin: nn.Linear):
    """bitsandbytes' Linear4bit (NF4, double quantization) holding `lin`'s weights, as transformers loads them."""
    import bitsandbytes as bnb

    l4 = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                           compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
    l4.load_state_dict(lin.state_dict())
    return l4.to("cpu")  # bitsandbytes quantizes here


def mlp4bit(kind: str) -> nn.Module:
    torch.manual_seed(0)  # in_features are multiples of 64: bitsandbytes' CPU kernels are exact there
    net = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32))
    if kind == "bnb":
        net[0], net[2] = linear4bit(net[0]), linear4bit(net[2])
    else:
        quantize_model(net, skip=())  # lora_lab's NF4Linear, under a plain LoRALinear
    return inject_lora(net, LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"], init_lora_weights=False))


X128 = torch.randn(3, 128, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("kind", ["bnb", "nf4"])
def test_merge_into_a_4bit_base_requantizes_with_a_warning_and_dequantize_is_exact(kind):
    model = mlp4bit(kind)
    with torch.no_grad():
        want = model(X128)
        requant = copy.deepcopy(model)
        with pytest.warns(UserWarning, match="rounded away.*merge_lora\\(model, unload=True, dequantize=True\\)"):
            merge_lora(requant, unload=True)
        assert type(requant[0]) is type(model[0].base_layer)  # still 4-bit, W0 + ΔW rounded again
        drift = (requant(X128) - want).abs().mean()
        assert 0 < drift < 0.25 * want.abs().mean()  # one more 4-bit rounding: measured ~12% with this large ΔW
        exact = merge_lora(copy.deepcopy(model), dequantize=True)
        assert [type(m) for m in exact] == [nn.Linear, nn.ReLU, nn.Linear] and not hasattr(exact, "lora_config")
        assert exact[0].weight.dtype == torch.float32 and exact[0].bias is not None
        torch.testing.assert_close(exact(X128), want, atol=1e-5, rtol=1e-5)
        with pytest.warns(UserWarning, match="rounded away"):
            merge_lora(model)
            unmerge_lora(model)
        assert (model(X128) - want).abs().mean() < 0.5 * want.abs().mean()  # back, up to two roundings


def test_merge_into_bitsandbytes_linear4bit_matches_pefts():
    import bitsandbytes as bnb

    torch.manual_seed(0)
    lin = nn.Linear(128, 64)
    ours = inject_lora(nn.Sequential(linear4bit(lin)), LoraConfig(r=4, lora_alpha=8, target_modules=["0"],
                                                                   init_lora_weights=False))
    net = nn.Sequential(linear4bit(lin))
    net.is_loaded_in_4bit = True  # what transformers sets; PEFT then wraps the layer in its bitsandbytes LoRA layer
    theirs = peft.get_peft_model(net, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0"]))
    with torch.no_grad():
        theirs.base_model.model[0].lora_A["default"].weight.copy_(ours[0].lora_A.weight)
        theirs.base_model.model[0].lora_B["default"].weight.copy_(ours[0].lora_B.weight)
    with pytest.warns(UserWarning):
        merged_ours, merged_theirs = merge_lora(ours, unload=True), theirs.merge_and_unload()
    assert isinstance(merged_ours[0], bnb.nn.Linear4bit)
    assert torch.equal(merged_ours[0].weight.data, merged_theirs[0].weight.data)  # the same 4-bit codes
    torch.testing.assert_close(merged_ours(X128), merged_theirs(X128), atol=0, rtol=0)


def test_merge_after_an_eval_forward_on_a_cpu_that_repacks_4bit_weights():
    # bitsandbytes 0.50 repacks a Linear4bit for its AVX512-BF16 CPU kernel on the first no-grad eval
    # forward (block scales cast to bf16); merging must read the weights back from that layout too
    model = mlp4bit("bnb")
    with torch.no_grad():
        want = model(X128)  # training mode: never repacked
        model.eval()(X128)  # repacks, on CPUs with AVX512-BF16 only
        exact = merge_lora(copy.deepcopy(model), dequantize=True)
        # bf16 block scales hold 8 significant bits: outputs move by up to ~0.2% (measured 0.11% of the
        # largest output); a wrong layout would be off by the whole weight
        torch.testing.assert_close(exact(X128), want, atol=5e-3 * want.abs().max().item(), rtol=0)


def test_a_base_it_cannot_write_is_refused_before_anything_changes():
    class Int8Like(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_features, self.out_features = 8, 8
            self.weight = nn.Parameter(torch.ones(8, 8, dtype=torch.int8), requires_grad=False)

        def forward(self, x):
            return x @ self.weight.float().T

    model = inject_lora(nn.Sequential(nn.Linear(8, 8), Int8Like()), LoraConfig(r=2, target_modules=["0", "1"],
                                                                               init_lora_weights=False))
    w0 = model[0].base_layer.weight.clone()
    for call in (lambda: merge_lora(model), lambda: merge_lora(model, dequantize=True), lambda: unmerge_lora(model)):
        with pytest.raises(TypeError, match="cannot merge LoRA into '1': its base is a Int8Like with a torch.int8 "
                                            "weight; lora_lab merges into nn.Linear, Conv1D, its NF4Linear and "
                                            "bitsandbytes' Linear4bit"):
            call()
        assert torch.equal(model[0].base_layer.weight, w0) and not model[0].merged


def test_dequantize_on_a_full_precision_base_is_merge_and_unload():
    base, ours, _ = pair("gpt2", ["c_attn"])  # Conv1D: weight stored (in, out)
    plain = merge_lora(copy.deepcopy(ours), unload=True)
    again = merge_lora(copy.deepcopy(ours), dequantize=True)
    assert [type(m) for m in again.modules()] == [type(m) for m in base.modules()]
    for p, q in zip(plain.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)


def test_freezes_everything_but_lora():
    model = inject_lora(tiny("llama"), LoraConfig(r=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # A and B on q_proj and v_proj in 2 layers


def test_llama2_7b_counts_on_the_meta_device():
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert count_parameters(model) == (6_738_415_616, 6_738_415_616)
    inject_lora(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    assert count_parameters(model) == (4_194_304, 6_742_609_920)  # what PEFT prints
    merge_lora(model, unload=True)
    inject_lora(model, LoraConfig(r=64, lora_alpha=16, target_modules="all-linear"))
    assert count_parameters(model)[0] == 159_907_840


def test_public_names_exist():
    for name in ("LoraConfig", "LoRALinear", "inject_lora", "merge_lora", "unmerge_lora", "count_parameters",
                 "save_adapter", "load_adapter"):
        assert hasattr(lora_lab, name), name
