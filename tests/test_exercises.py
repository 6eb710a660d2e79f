"""lora_lab.exercises: every check accepts a right answer, says "not done yet" to a stub, and rejects a known-wrong answer with a message that names the mistake."""

import math

import peft
import pytest
import torch
from torch import nn
from wrong_answers import (  # right answers to 02.1 and 03.3, which the slips below change
    LoRA,
    copy_adapter,
)

from lora_lab import exercises as ex
from lora_lab.exercises import concepts
from lora_lab.nf4 import nf4_codebook, normal_float_codebook, quantize_nf4


def stub(*args, **kwargs):
    raise NotImplementedError


class StubClass(nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError


# ----------------------------------------------------------------------------- right answers (short versions of the solutions notebooks)

def compute_dtype_for(gpu_name, bf16_supported):
    return torch.float32 if gpu_name is None else torch.bfloat16 if bf16_supported else torch.float16


def lora_factors(delta, r):
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :r] * s[:r], vh[:r]


class LoRAMergesTwice(LoRA):
    def merge(self):
        with torch.no_grad():
            self.base_layer.weight += self.lora_B.weight @ self.lora_A.weight * self.scaling


class LoRAWithoutScaling(LoRA):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaling = 1.0


class LoRADropsTheBase(LoRA):
    def forward(self, x):
        x = self.lora_dropout(x)
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling


def linear_layer_names(model):
    head = model.get_output_embeddings()
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head})


def gpt2_lora_config(**changes):
    settings = dict(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"], fan_in_fan_out=True,
                    task_type="CAUSAL_LM")
    return peft.LoraConfig(**{**settings, **changes})


def copy_without_adapter_name(peft_model, our_model):
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for n, p in our_model.named_parameters():
            if "base_model.model." + n in theirs:
                p.copy_(theirs["base_model.model." + n])


def nf_codebook(bits):
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    half, offset = 2 ** (bits - 1), 1 - 0.5 * (1 / (2 * (2**bits - 1)) + 1 / (2 * 2**bits))
    pos = normal.icdf(torch.linspace(offset, 0.5, half + 1, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, half, dtype=torch.float64)[:-1])
    v = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]).sort().values
    return (v / v.max()).float()


# (check, right answer, known-wrong answer, a phrase the rejection must contain)
CASES = {
    "compute_dtype": (ex.check_compute_dtype, compute_dtype_for, lambda name, bf16: torch.bfloat16,
                      "on a CPU, half-precision (16-bit) matmuls are slow"),
    "compute_dtype_string": (ex.check_compute_dtype, compute_dtype_for, lambda name, bf16: "float32", "not the string"),
    "compute_dtype_fp32_on_gpus": (ex.check_compute_dtype, compute_dtype_for, lambda name, bf16: torch.float32,
                                   "a GPU computes twice as fast"),
    "compute_dtype_bf16_on_a_t4": (ex.check_compute_dtype, compute_dtype_for,
                                   lambda name, bf16: torch.float32 if name is None else torch.bfloat16,
                                   "this GPU has no bf16"),
    "compute_dtype_fp16_on_an_a100": (ex.check_compute_dtype, compute_dtype_for,
                                      lambda name, bf16: torch.float32 if name is None else torch.float16,
                                      "this GPU has bf16"),
    "weights_gib": (ex.check_weights_gib, lambda n, b: n * b / 8 / 2**30, lambda n, b: n * b / 8 / 1e9, "GiB = 2**30 bytes"),
    "weights_gib_bits": (ex.check_weights_gib, lambda n, b: n * b / 8 / 2**30, lambda n, b: n * b / 2**30, "divide by 8"),
    "llama2_format": (ex.check_llama2_format, lambda p, a: f"<s>[INST] {p} [/INST] {a} </s>",
                      lambda p, a: f"<s>[INST] {p} [/INST] {a}", "EOS token </s>"),
    "rank_r_matrix": (ex.check_rank_r_matrix, lambda d, k, r: torch.randn(d, r) @ torch.randn(r, k),
                      lambda d, k, r: torch.randn(d, k), "multiply a random d × r matrix"),
    "lora_factors": (ex.check_lora_factors, lora_factors,
                     lambda delta, r: (torch.linalg.svd(delta)[0][:, :r], torch.linalg.svd(delta)[2][:r]),
                     "singular values are missing"),
    "lora_factors_swapped": (ex.check_lora_factors, lora_factors, lambda delta, r: tuple(reversed(lora_factors(delta, r))),
                             "swapped"),
    "max_useful_rank": (ex.check_max_useful_rank, lambda d, k: (d * k - 1) // (d + k), lambda d, k: min(d, k),
                        "more than the matrix"),
    "lora_linear_scaling": (ex.check_lora_linear, LoRA, LoRAWithoutScaling, "lora_alpha / r"),
    "lora_linear_merge": (ex.check_lora_linear, LoRA, LoRAMergesTwice, "counted twice"),
    "lora_linear_dropout": (ex.check_lora_linear, LoRA, LoRADropsTheBase, "LoRA path's input only"),
    "lora_param_count": (ex.check_lora_param_count, lambda shapes, r: sum(r * (d + k) for d, k in shapes),
                         lambda shapes, r: sum(d * k for d, k in shapes), "size of the full matrices"),
    "same_scaling_alpha": (ex.check_same_scaling_alpha,
                           lambda a, r, n, use_rslora=False: a * (math.sqrt(n / r) if use_rslora else n / r),
                           lambda a, r, n, use_rslora=False: a, "changes the scaling"),
    "gpt2_lora_config": (ex.check_gpt2_lora_config, gpt2_lora_config,
                         lambda: gpt2_lora_config(target_modules=["q_proj", "v_proj"]), "one fused Conv1D for query, key and value"),
    "gpt2_lora_config_rank": (ex.check_gpt2_lora_config, gpt2_lora_config,  # the wrong answer found in review
                              lambda: peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True),
                              "r = 8"),
    "gpt2_lora_config_alpha": (ex.check_gpt2_lora_config, gpt2_lora_config, lambda: gpt2_lora_config(lora_alpha=16),
                               "lora_alpha) = 32"),
    "gpt2_lora_config_dropout": (ex.check_gpt2_lora_config, gpt2_lora_config, lambda: gpt2_lora_config(lora_dropout=0.0),
                                 "lora_dropout) = 0.1"),
    "gpt2_lora_config_task": (ex.check_gpt2_lora_config, gpt2_lora_config, lambda: gpt2_lora_config(task_type=None),
                              "not as a causal language model"),
    "gpt2_lora_config_transposed": (ex.check_gpt2_lora_config, gpt2_lora_config,
                                    lambda: gpt2_lora_config(fan_in_fan_out=False), "stores its weight as (in, out)"),
    "all_linear_targets": (ex.check_all_linear_targets, linear_layer_names,
                           lambda m: sorted({n.rsplit(".", 1)[-1] for n, x in m.named_modules() if isinstance(x, nn.Linear)}),
                           "output head"),
    "all_linear_targets_by_name": (ex.check_all_linear_targets, linear_layer_names,  # skips "lm_head" by name only
                                   lambda m: sorted({n.rsplit(".", 1)[-1] for n, x in m.named_modules()
                                                     if isinstance(x, nn.Linear) and not n.endswith("lm_head")}),
                                   "'output_projection' is the output head"),
    "copy_adapter": (ex.check_copy_adapter, copy_adapter, copy_without_adapter_name, "adapter name"),
    "unpack_codes": (ex.check_unpack_codes, lambda p, n: torch.stack([p >> 4, p & 0xF], 1).flatten()[:n],
                     lambda p, n: torch.stack([p & 0xF, p >> 4], 1).flatten()[:n], "HIGH nibble"),
    "nf_codebook": (ex.check_nf_codebook, nf_codebook,
                    lambda bits: torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, 2**bits)),
                    "exact 0.0"),
    "bits_per_param": (ex.check_bits_per_param, lambda bs, dq: 4 + (8 / bs + 32 / (256 * bs) if dq else 32 / bs),
                       lambda bs, dq: 4 + (8 if dq else 32) / bs, "one per 256 blocks"),
}
CHECKS = sorted({c.__name__: c for c, *_ in CASES.values()}.items())


def test_the_reference_of_exercise_04_2_is_the_kits_normal_float_codebook():
    assert torch.equal(normal_float_codebook(4), nf4_codebook())  # bitsandbytes' table (tests/test_nf4.py)
    for bits in range(2, 9):
        table = normal_float_codebook(bits)
        assert table.shape == (2**bits,) and bool(torch.all(table[1:] > table[:-1]))
        assert (int((table > 0).sum()), int((table < 0).sum())) == (2 ** (bits - 1), 2 ** (bits - 1) - 1)
        assert table[0] == -1 and table[-1] == 1 and bool((table == 0).any())
        assert torch.allclose(table, nf_codebook(bits), atol=2e-6)  # the solution's float64 recipe
    for bad in (1, 9, "4", 4.0, True):
        with pytest.raises(ValueError, match=f"bits={bad!r} is not accepted; give an int from 2 to 8"):
            normal_float_codebook(bad)


def test_every_check_of_notebooks_00_to_04_is_exported_and_tested():
    exported = {n for n in concepts.__all__ if n.startswith("check_")}
    assert exported == {name for name, _ in CHECKS}
    assert all(getattr(ex, n) is getattr(concepts, n) for n in exported)  # lora_lab.exercises.check_…


@pytest.mark.parametrize("case", CASES, ids=str)
def test_right_answer_passes(case):
    check, right, _, _ = CASES[case]
    torch.manual_seed(0)
    verdict = check(right)
    assert verdict.passed is True and bool(verdict)
    assert ": correct — " in repr(verdict)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_wrong_answer_is_rejected_in_plain_words(case):
    check, _, wrong, phrase = CASES[case]
    torch.manual_seed(0)
    verdict = check(wrong)  # a verdict, not an exception: "Run all" goes on to the next exercise
    assert verdict.passed is False and not verdict and verdict.status == "wrong"
    message = repr(verdict)
    assert message.startswith("Exercise ") and "not yet right — " in message
    assert phrase in verdict.message, message
    assert "#cf222e" in verdict._repr_html_()  # shown in red in Jupyter


@pytest.mark.parametrize("name,check", CHECKS, ids=[n for n, _ in CHECKS])
def test_stub_is_not_done_yet(name, check):
    verdict = check(StubClass if name == "check_lora_linear" else stub)
    assert verdict.passed is None and not verdict and verdict.status == "not done"
    assert "not done yet" in repr(verdict) and "NotImplementedError" in repr(verdict)


def test_the_learners_own_errors_are_reported_with_their_line():
    def buggy(d, k, r):
        return torch.randn(d, r) @ torch.randn(k, r)  # a shape error in the learner's code

    verdict = ex.check_rank_r_matrix(buggy)
    assert verdict.status == "wrong"
    assert "your code raised RuntimeError" in verdict.message and "torch.randn(k, r)" in verdict.message


def test_verdicts_are_deterministic():
    assert repr(ex.check_max_useful_rank(lambda d, k: (d * k - 1) // (d + k))) == repr(
        ex.check_max_useful_rank(lambda d, k: (d * k - 1) // (d + k)))


# ----------------------------------------------------------------------------- notebooks 05-06

def sampling_probs(logits, temperature, top_k=None):
    scaled = logits / temperature
    if top_k:
        scaled = scaled.masked_fill(scaled < scaled.topk(top_k).values[-1], float("-inf"))
    return scaled.softmax(-1)


def pad_token_for(tok):
    return tok.pad_token if tok.pad_token not in (None, tok.eos_token) else tok.unk_token


FT_CASES = {
    "qlora_forward": (ex.check_qlora_forward,
                      lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) * layer.scaling,
                      lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)), "layer.scaling"),
    "qlora_forward_shapes": (ex.check_qlora_forward,
                             lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) * layer.scaling,
                             lambda layer, x: x @ layer.base_layer.dequantize(),  # W not transposed
                             "your code raised RuntimeError"),
    "nf4_bytes": (ex.check_nf4_bytes,
                  lambda n, bs, dq: math.ceil(n / 2) + (math.ceil(n / bs) + 4 * math.ceil(math.ceil(n / bs) / 256) + 4
                                                        if dq else 4 * math.ceil(n / bs)),
                  lambda n, bs, dq: math.ceil(n / 2), "codes only"),
    "pad_token": (ex.check_pad_token, pad_token_for, lambda tok: tok.eos_token, "never learns to stop"),
    "pad_token_bos": (ex.check_pad_token, pad_token_for, lambda tok: tok.pad_token or tok.bos_token,
                      "you returned BOS"),
    "pad_token_new": (ex.check_pad_token, pad_token_for, lambda tok: "<pad>", "which it does not have"),
    "pad_token_not_own": (ex.check_pad_token, pad_token_for, lambda tok: tok.unk_token, "has its own pad token"),
    "nf4_bytes_bits": (ex.check_nf4_bytes, lambda n, bs, dq: quantize_nf4(torch.zeros(n), bs, dq).nbytes,
                       lambda n, bs, dq: 8 * quantize_nf4(torch.zeros(n), bs, dq).nbytes, "not bits"),
    "sampling_probs": (ex.check_sampling_probs, sampling_probs, lambda logits, t, k: sampling_probs(logits, 1 / t, k),
                       "don't multiply"),
    "sampling_probs_no_renormalising": (ex.check_sampling_probs, sampling_probs,
                                        lambda logits, t, k: torch.softmax(logits / t, -1) * (
                                            torch.zeros_like(logits).scatter(0, logits.topk(k).indices, 1.0) if k else 1),
                                        "renormalise"),
    "sampling_probs_no_top_k": (ex.check_sampling_probs, sampling_probs,
                                lambda logits, t, k: torch.softmax(logits / t, -1), "keeps the"),
    "sampling_probs_no_temperature": (ex.check_sampling_probs, sampling_probs,
                                      lambda logits, t, k: sampling_probs(logits, 1.0, k), "divide the logits by T"),
    "training_bytes_forgot_gradients": (ex.check_training_bytes,
                                        lambda n, o: {"adamw": 16, "adamw_8bit": 10, "sgd": 8}[o] * n,
                                        lambda n, o: {"adamw": 12, "adamw_8bit": 6, "sgd": 4}[o] * n,  # 4 + 8
                                        "most often the gradient is forgotten"),
}


@pytest.mark.parametrize("case", FT_CASES, ids=str)
def test_notebooks_05_06_checks(case):
    check, right, wrong, phrase = FT_CASES[case]
    assert check(right).status == "correct"
    verdict = check(wrong)
    assert verdict.status == "wrong" and phrase in verdict.message, verdict.message
    assert check(stub).status == "not done"


def test_every_check_of_notebooks_05_06_is_tested():
    from lora_lab.exercises import finetune

    assert {c.__name__ for c, *_ in FT_CASES.values()} == set(finetune.__all__)
