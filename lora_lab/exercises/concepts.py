"""Checks for the exercises of notebooks 00-04: each takes the learner's function or class and says what is right or wrong.

Every check follows one pattern. A stub that still raises NotImplementedError gets a "not done yet"
verdict (so a notebook with open exercises runs top to bottom); a correct answer gets "correct"; a
wrong one raises AssertionError whose message says, in plain words, what to look at.
"""

from __future__ import annotations

import functools
import html
import math
import traceback
import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "Verdict",
    # 00 start here
    "check_compute_dtype", "check_weights_gib", "check_llama2_format",
    # 01 low-rank intuition
    "check_rank_r_matrix", "check_lora_factors", "check_max_useful_rank",
    # 02 LoRA from scratch
    "check_lora_linear", "check_lora_param_count", "check_same_scaling_alpha",
    # 03 LoRA vs PEFT
    "check_gpt2_lora_config", "check_all_linear_targets", "check_copy_adapter",
    # 04 NF4 from scratch
    "check_unpack_codes", "check_nf_codebook", "check_bits_per_param",
]


@dataclass
class Verdict:
    """What a check concluded: passed is True (correct), None (not done yet) or False (wrong, message says why).

    A wrong answer is a verdict, not an exception, so "Run all" goes on to the next exercise; in Jupyter it
    shows as a coloured box (green, grey, red). `status` is "correct", "not done" or "wrong", for graders.
    """

    exercise: str
    passed: bool | None
    message: str

    @property
    def status(self) -> str:
        return {True: "correct", None: "not done", False: "wrong"}[self.passed]

    def __bool__(self) -> bool:
        return self.passed is True

    def __repr__(self) -> str:
        label = {True: "correct", None: "not done yet", False: "not yet right"}[self.passed]
        return f"{self.exercise}: {label} — {self.message}"

    def _repr_html_(self) -> str:
        colour = {True: "#1a7f37", None: "#6e7781", False: "#cf222e"}[self.passed]
        mark = {True: "✔", None: "…", False: "✘"}[self.passed]
        return (f'<div style="border-left: 4px solid {colour}; padding: 4px 10px; color: {colour}">'
                f"{mark} {html.escape(repr(self))}</div>")


class _NotDone(Exception):
    pass


class _Raised(Exception):
    """The learner's code raised: carried to the verdict with where it happened in their code."""


def _where(error: BaseException) -> str:
    """' (line N of your code: `source`)' for the innermost frame outside the kit and the libraries."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "site-packages" not in f.filename and "/lora_lab/" not in f.filename.replace("\\", "/")
              and not f.filename.startswith("<frozen")]
    if not frames:
        return ""
    f = frames[-1]
    return f" (line {f.lineno} of your code: `{f.line}`)" if f.line else f" (line {f.lineno} of your code)"


def _call(fn, *args, **kwargs):
    """Call the learner's code; a stub's NotImplementedError becomes 'not done yet', any other error a wrong verdict."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotDone from None
    except Exception as e:  # noqa: BLE001 - whatever the learner's code raises is reported, not re-raised
        raise _Raised(f"your code raised {type(e).__name__}: {e}{_where(e)}") from None


def _check(exercise: str):
    """Turn a function that asserts (and returns a success message) into a check that returns a Verdict."""
    def wrap(body):
        @functools.wraps(body)
        def check(answer) -> Verdict:
            try:
                with warnings.catch_warnings():  # library deprecation notes are not the learner's business
                    warnings.simplefilter("ignore", FutureWarning)
                    message = body(answer)
            except _NotDone:
                return Verdict(exercise, None, "it still raises NotImplementedError: write your answer in place of "
                                               "the `raise` line and run the cell again.")
            except (AssertionError, _Raised) as e:
                return Verdict(exercise, False, str(e))
            return Verdict(exercise, True, message)
        return check
    return wrap


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel)


def _is_tensor(x, name: str) -> None:
    assert isinstance(x, torch.Tensor), f"{name} should be a torch.Tensor, got {type(x).__name__}."


# ----------------------------------------------------------------------------- 00 start here

_GPUS = [  # (name, bf16 supported, right dtype, why)
    (None, None, torch.float32, "on a CPU, compute in float32: fp16 and bf16 matmuls there are slow or unsupported"),
    ("Tesla T4", False, torch.float16, "the T4 (Colab's free GPU) has no bf16, so fp16 it is"),
    ("Tesla V100-SXM2-16GB", False, torch.float16, "the V100 has no bf16, so fp16 it is"),
    ("NVIDIA A100-SXM4-40GB", True, torch.bfloat16, "the A100 supports bf16: same range as fp32, no loss scaling"),
    ("NVIDIA L4", True, torch.bfloat16, "the L4 supports bf16: same range as fp32, no loss scaling"),
]


@_check("Exercise 00.1 · compute_dtype_for")
def check_compute_dtype(fn) -> str:
    """fn(gpu_name or None, bf16_supported or None) -> the torch dtype to compute in."""
    for name, bf16, want, why in _GPUS:
        got = _call(fn, name, bf16)
        if isinstance(got, str):
            raise AssertionError(f"return a torch dtype such as torch.float16, not the string {got!r}.")
        assert got == want, f"for gpu_name={name!r}, bf16_supported={bf16} you chose {got}; {why} ({want})."
    return "bf16 where the GPU has it, fp16 on a T4 or V100, fp32 on a CPU."


_GIB_CASES = [(6_738_415_616, 16), (6_738_415_616, 4.127), (2_360_000, 32), (1_000_000_000, 8)]


@_check("Exercise 00.2 · weights_gib")
def check_weights_gib(fn) -> str:
    """fn(n_params, bits_per_param) -> GiB the weights take."""
    for n, bits in _GIB_CASES:
        got, want = _call(fn, n, bits), n * bits / 8 / 2**30
        assert isinstance(got, (int, float)) or (isinstance(got, torch.Tensor) and got.numel() == 1), \
            f"return a number, got {type(got).__name__}."
        if _close(got, n * bits / 8 / 1e9):
            raise AssertionError(f"weights_gib({n:,}, {bits}) = {float(got):.4g} is in GB (10⁹ bytes); GPU memory "
                                 "such as the T4's 14.75 GiB is counted in GiB = 2**30 bytes.")
        if _close(got, n * bits / 2**30) or _close(got, n * bits / 1e9):
            raise AssertionError(f"weights_gib({n:,}, {bits}) = {float(got):.4g}: that counts bits, not bytes; "
                                 "divide by 8.")
        assert _close(got, want), f"weights_gib({n:,}, {bits}) = {float(got):.4g}, expected {want:.4g} " \
                                  "(n_params × bits / 8 bytes, / 2**30)."
    return (f"Llama-2-7B's weights take {_GIB_CASES[0][0] * 2 / 2**30:.2f} GiB in fp16, and "
            f"{_GIB_CASES[1][0] * 4.127 / 8 / 2**30:.2f} GiB if every one were stored at NF4's 4.127 bits.")


@_check("Exercise 00.3 · llama2_row")
def check_llama2_format(fn) -> str:
    """fn(prompt, answer) -> one training row in Llama-2's chat format."""
    from ..tasks import format_llama2

    for prompt, answer in [("Which number is larger: 39 or 73?", "73"), ("Say hi.", "hi")]:
        got, want = _call(fn, prompt, answer), format_llama2(prompt, answer)
        assert isinstance(got, str), f"return a string, got {type(got).__name__}."
        if got.strip() == want.strip() and got != want:
            raise AssertionError(f"almost: mind the spaces at the ends. Expected {want!r}, got {got!r}.")
        assert got.startswith("<s>"), f"a row starts with the BOS token <s>; got {got!r}."
        assert got.endswith("</s>"), (f"a row ends with the EOS token </s>, so the model learns to stop; got {got!r}.")
        assert "[INST]" in got and "[/INST]" in got, f"the prompt sits between [INST] and [/INST]; got {got!r}."
        assert got == want, f"expected {want!r}, got {got!r}: one space around each marker, none elsewhere."
    return "rows read `<s>[INST] prompt [/INST] answer </s>`, as in mlabonne/guanaco-llama2-1k."


# ----------------------------------------------------------------------------- 01 low-rank intuition


@_check("Exercise 01.1 · rank_r_matrix")
def check_rank_r_matrix(fn) -> str:
    """fn(d, k, r) -> a random d × k matrix of rank exactly r."""
    for d, k, r in [(6, 5, 3), (40, 30, 1), (50, 64, 7), (12, 12, 12)]:
        torch.manual_seed(d * 100 + r)
        m = _call(fn, d, k, r)
        _is_tensor(m, f"rank_r_matrix({d}, {k}, {r})")
        assert tuple(m.shape) == (d, k), f"rank_r_matrix({d}, {k}, {r}) has shape {tuple(m.shape)}, expected ({d}, {k})."
        got = int(torch.linalg.matrix_rank(m.float()))  # fp32 tolerance: rounding noise is not rank
        hint = ("multiply a random d × r matrix by a random r × k one (or add r outer products u·vᵀ)"
                if got > r else "use r independent random directions: repeated or zero columns lower the rank")
        assert got == r, f"rank_r_matrix({d}, {k}, {r}) has rank {got}, expected {r}: {hint}."
        assert m.abs().sum() > 0, "the matrix is all zeros."
    return "a d × r matrix times an r × k matrix has rank r (and no more): that is the shape of LoRA's B·A."


@_check("Exercise 01.2 · lora_factors")
def check_lora_factors(fn) -> str:
    """fn(delta, r) -> (B, A) with B (d × r), A (r × k) and B @ A the best rank-r approximation of delta."""
    from ..lowrank import low_rank_approx

    for d, k, r in [(24, 16, 4), (16, 40, 1), (32, 32, 8)]:
        g = torch.Generator().manual_seed(d + k + r)
        delta = torch.randn(d, 3, generator=g) @ torch.randn(3, k, generator=g) + 0.3 * torch.randn(d, k, generator=g)
        out = _call(fn, delta.clone(), r)
        assert isinstance(out, (tuple, list)) and len(out) == 2, "return the pair (B, A)."
        b, a = out
        _is_tensor(b, "B"), _is_tensor(a, "A")
        if tuple(b.shape) == (r, k) and tuple(a.shape) == (d, r):
            raise AssertionError("B and A are swapped: return (B, A) with B of shape (d, r) and A of shape (r, k).")
        assert tuple(b.shape) == (d, r), f"B should be (d, r) = ({d}, {r}), got {tuple(b.shape)}."
        assert tuple(a.shape) == (r, k), f"A should be (r, k) = ({r}, {k}), got {tuple(a.shape)}."
        best = low_rank_approx(delta, r)
        err, best_err = float((delta - b @ a).norm()), float((delta - best).norm())
        if not math.isclose(err, best_err, rel_tol=1e-4, abs_tol=1e-5):
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            hint = ("the singular values are missing from the product: put S (or √S on each side) into B or A"
                    if torch.allclose(b @ a, u[:, :r] @ vh[:r], atol=1e-4) else
                    "keep the r LARGEST singular values and their vectors: U[:, :r], S[:r], Vh[:r]")
            raise AssertionError(f"for r={r}, ‖delta − B·A‖ = {err:.4f}, but the best rank-{r} approximation "
                                 f"leaves {best_err:.4f}: {hint}.")
    return ("B·A is the best rank-r approximation: this turns any full fine-tuning update into a LoRA adapter "
            "(and, applied to W itself, is how PiSSA initialises LoRA).")


@_check("Exercise 01.3 · max_useful_rank")
def check_max_useful_rank(fn) -> str:
    """fn(d, k) -> the largest r with d·r + r·k < d·k."""
    for d, k in [(192, 192), (512, 192), (4096, 4096), (4096, 11008), (3, 5)]:
        got = _call(fn, d, k)
        assert isinstance(got, int) and not isinstance(got, bool), f"return an int, got {type(got).__name__}."
        if got == min(d, k):
            raise AssertionError(f"for a {d} × {k} matrix, r = min(d, k) = {got} gives factors of "
                                 f"{d * got + got * k:,} numbers, more than the matrix's {d * k:,}.")
        cost = d * got + got * k
        assert cost < d * k, f"for a {d} × {k} matrix, r = {got} costs {cost:,} numbers, not fewer than {d * k:,}."
        nxt = d * (got + 1) + (got + 1) * k
        assert nxt >= d * k, f"for a {d} × {k} matrix, r = {got + 1} still costs less ({nxt:,} < {d * k:,}): go higher."
    return ("r must stay below d·k / (d + k), half of d for a square matrix; LoRA uses r = 8 or 64 where "
            "d = 4096, a hundred times less.")


# ----------------------------------------------------------------------------- 02 LoRA from scratch


def _lora_parts(layer, r: int, fin: int, fout: int) -> tuple[torch.Tensor, torch.Tensor]:
    for attr in ("lora_A", "lora_B", "base_layer"):
        assert hasattr(layer, attr), (f"the layer has no `{attr}` attribute; use PEFT's names: base_layer (the "
                                      "frozen nn.Linear), lora_A (in → r) and lora_B (r → out).")
    a = getattr(layer.lora_A, "weight", layer.lora_A)
    b = getattr(layer.lora_B, "weight", layer.lora_B)
    _is_tensor(a, "lora_A.weight"), _is_tensor(b, "lora_B.weight")
    if tuple(a.shape) == (fout, r) and tuple(b.shape) == (r, fin):
        raise AssertionError("lora_A and lora_B are swapped: A reads the input, (r, in_features); "
                             "B writes the output, (out_features, r).")
    assert tuple(a.shape) == (r, fin), f"lora_A.weight should be (r, in_features) = ({r}, {fin}), got {tuple(a.shape)}."
    assert tuple(b.shape) == (fout, r), f"lora_B.weight should be (out_features, r) = ({fout}, {r}), got {tuple(b.shape)}."
    return a, b


@_check("Exercise 02.1 · MyLoRALinear")
def check_lora_linear(cls) -> str:
    """cls(base_layer, r, lora_alpha, lora_dropout=0.0) with lora_A, lora_B, forward, merge() and unmerge()."""
    fin, fout, r, alpha = 24, 16, 4, 8.0
    torch.manual_seed(0)
    base = nn.Linear(fin, fout)
    w0, b0 = base.weight.detach().clone(), base.bias.detach().clone()
    x = torch.randn(3, 5, fin)  # (batch, tokens, in_features)
    layer = _call(cls, base, r, alpha)
    assert isinstance(layer, nn.Module), "MyLoRALinear should be an nn.Module (subclass nn.Module)."
    a, b = _lora_parts(layer, r, fin, fout)
    assert not any(p.requires_grad for p in base.parameters()), \
        "the base layer still trains: freeze it with base_layer.requires_grad_(False)."
    assert a.requires_grad and b.requires_grad, "lora_A and lora_B must be trainable (requires_grad=True)."
    assert torch.count_nonzero(b) == 0, "lora_B should start at zero, so that ΔW = B·A = 0 and training starts from the base model."
    assert torch.count_nonzero(a) > 0, ("lora_A should start random (Gaussian): with A = 0 as well, neither A nor B "
                                        "ever gets a gradient and training never starts.")
    layer.eval()
    with torch.no_grad():
        assert torch.allclose(layer(x), base(x), atol=1e-6), "at init (B = 0) the output must equal the base layer's output."

    # with a non-zero B the output is base(x) + (α/r)·B·A·x
    with torch.no_grad():
        b.copy_(torch.randn_like(b))
        lora = x @ a.T @ b.T  # (3, 5, out) unscaled update
        got = layer(x) - base(x)
        scale = float((got * lora).sum() / (lora * lora).sum())
    assert torch.allclose(got, scale * lora, atol=1e-4), \
        "with B ≠ 0 the output should be base_layer(x) + lora_B(lora_A(x)) · scaling; it isn't of that form."
    assert math.isclose(scale, alpha / r, rel_tol=1e-4), (f"the update is multiplied by {scale:.4g}; it should be "
                                                          f"lora_alpha / r = {alpha:g} / {r} = {alpha / r:g}.")
    # gradients reach A and B only
    layer.train()
    layer(x).sum().backward()
    assert a.grad is not None and b.grad is not None, "no gradient reached lora_A or lora_B."
    assert base.weight.grad is None, "the base weight got a gradient: it must stay frozen."

    # dropout acts on the LoRA path only
    torch.manual_seed(1)
    drop = _call(cls, nn.Linear(fin, fout), r, alpha, lora_dropout=0.5)
    da, db = _lora_parts(drop, r, fin, fout)
    drop.train()
    with torch.no_grad():
        assert torch.allclose(drop(x), drop.base_layer(x), atol=1e-6), \
            "with B = 0 and dropout on, the output changed: dropout belongs on the LoRA path's input only, not on the base path."
        db.copy_(torch.randn_like(db))
        clean = drop.base_layer(x) + (x @ da.T @ db.T) * (alpha / r)
        assert not torch.allclose(drop(x), clean, atol=1e-4), \
            "lora_dropout=0.5 changed nothing in train mode: apply it to x before lora_A."
        drop.eval()
        assert torch.allclose(drop(x), clean, atol=1e-4), "in eval mode dropout must be off."

    # merge and unmerge
    for method in ("merge", "unmerge"):
        assert callable(getattr(layer, method, None)), f"add a `{method}()` method."
    layer.eval()
    with torch.no_grad():
        before = layer(x)
        layer.merge()
        delta = (alpha / r) * b @ a
        assert torch.allclose(base.weight, w0 + delta, atol=1e-5), \
            "after merge() the base weight should be W0 + (lora_alpha / r) · B @ A."
        assert torch.equal(base.bias, b0), "merge() changed the bias; only the weight takes ΔW."
        after = layer(x)
        if torch.allclose(after - before, x @ delta.T, atol=1e-4):
            raise AssertionError("after merge() the update is counted twice: once in the merged weight and again "
                                 "by the LoRA path. Skip the LoRA path while merged.")
        assert torch.allclose(after, before, atol=1e-4), "merge() changed the layer's output; it should not."
        layer.unmerge()
        assert torch.allclose(base.weight, w0, atol=1e-5), "unmerge() should restore the original weight W0."
        assert torch.allclose(layer(x), before, atol=1e-4), "after unmerge() the output should be as before merge()."
    return ("shapes, zero B, α/r scaling, dropout on the LoRA path only, frozen base, merge and unmerge: "
            "all as in PEFT's LoRA layer.")


def _llama2_7b_shapes(targets: tuple[str, ...]) -> list[tuple[int, int]]:
    dims = {"q_proj": (4096, 4096), "k_proj": (4096, 4096), "v_proj": (4096, 4096), "o_proj": (4096, 4096),
            "gate_proj": (11008, 4096), "up_proj": (11008, 4096), "down_proj": (4096, 11008)}
    return [dims[t] for _ in range(32) for t in targets]


_COUNT_CASES = [  # (what, shapes (out, in), r, expected)
    ("Llama-2-7B, q_proj and v_proj, r=8", _llama2_7b_shapes(("q_proj", "v_proj")), 8, 4_194_304),
    ("GPT-3 175B, Wq and Wv, r=1", [(12288, 12288)] * 192, 1, 4_718_592),
    ("GPT-3 175B, Wq and Wv, r=8", [(12288, 12288)] * 192, 8, 37_748_736),
    ("Llama-2-7B, all seven projections, r=64", _llama2_7b_shapes(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")), 64, 159_907_840),
    ("one 3 × 5 layer, r=2", [(3, 5)], 2, 16),
]


@_check("Exercise 02.2 · lora_param_count")
def check_lora_param_count(fn) -> str:
    """fn(shapes, r) -> trainable LoRA parameters for layers of shape (out_features, in_features)."""
    for what, shapes, r, want in _COUNT_CASES:
        got = _call(fn, list(shapes), r)
        assert isinstance(got, int) and not isinstance(got, bool), f"return an int, got {type(got).__name__}."
        full = sum(d * k for d, k in shapes)
        if got == full:
            raise AssertionError(f"{what}: {got:,} is the size of the full matrices; LoRA trains B (out × r) and A (r × in).")
        if got in (sum(r * k for d, k in shapes), sum(d * r for d, k in shapes)):
            raise AssertionError(f"{what}: {got:,} counts only one of the two factors; add A (r × in) and B (out × r).")
        assert got == want, f"{what}: you counted {got:,}, expected {want:,} (Σ r·(in + out) over the layers)."
    return ("4,194,304 for Llama-2-7B (PEFT's printout) and 4.7M / 37.7M for GPT-3 (the LoRA paper's) — "
            "from shapes alone.")


_ALPHA_CASES = [(16, 8, 64, False), (32, 16, 4, False), (16, 8, 32, True), (8, 8, 2, True)]


@_check("Exercise 02.3 · same_scaling_alpha")
def check_same_scaling_alpha(fn) -> str:
    """fn(lora_alpha, r, new_r, use_rslora=False) -> the lora_alpha that keeps the scaling when r becomes new_r."""
    for alpha, r, new_r, rs in _ALPHA_CASES:
        got = _call(fn, alpha, r, new_r, use_rslora=rs)
        assert isinstance(got, (int, float)), f"return a number, got {type(got).__name__}."
        rule = "lora_alpha / sqrt(r)" if rs else "lora_alpha / r"
        scale = (lambda a, n: a / math.sqrt(n)) if rs else (lambda a, n: a / n)
        want = scale(alpha, r) * (math.sqrt(new_r) if rs else new_r)
        if math.isclose(got, alpha):
            raise AssertionError(f"keeping lora_alpha={alpha} while r goes {r} → {new_r} changes the scaling "
                                 f"{rule} from {scale(alpha, r):.4g} to {scale(alpha, new_r):.4g}.")
        assert math.isclose(got, want, rel_tol=1e-6), (
            f"lora_alpha={alpha}, r={r} → {new_r}{' with rsLoRA' if rs else ''}: you returned {got:.4g}, so the "
            f"scaling {rule} becomes {scale(got, new_r):.4g} instead of staying {scale(alpha, r):.4g}.")
    return "the scaling α/r (or α/√r with rsLoRA) stays put when r changes only if α moves with it."


# ----------------------------------------------------------------------------- 03 LoRA vs PEFT


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


@_check("Exercise 03.1 · gpt2_lora_config")
def check_gpt2_lora_config(fn) -> str:
    """fn() -> a peft.LoraConfig that puts LoRA on GPT-2's attention."""
    import copy

    import peft

    config = _call(fn)
    assert isinstance(config, peft.LoraConfig), f"return a peft.LoraConfig, got {type(config).__name__}."
    asked = [("r", config.r, 8, "the rank r"), ("lora_alpha", config.lora_alpha, 32, "α (lora_alpha)"),
             ("lora_dropout", config.lora_dropout, 0.1, "the dropout on the LoRA path (lora_dropout)")]
    for name, got, want, what in asked:
        assert got == want, f"the exercise asks for {what} = {want}; your config has {name}={got!r}."
    task = getattr(config.task_type, "value", config.task_type)
    assert task == "CAUSAL_LM", (f"task_type={config.task_type!r}: GPT-2 is a causal language model, so "
                                 "task_type='CAUSAL_LM' (peft.TaskType.CAUSAL_LM), which makes PEFT wrap it "
                                 "as a PeftModelForCausalLM.")
    model = _tiny_gpt2()
    ids = torch.arange(10)[None]  # (1, 10)
    with torch.no_grad():
        before = model(ids).logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wrapped = peft.get_peft_model(model, copy.deepcopy(config))
        except ValueError as e:
            targets = config.target_modules
            targets = sorted(targets) if isinstance(targets, (set, list, tuple)) else targets
            raise AssertionError(f"PEFT refused the config ({type(e).__name__}: target_modules {targets} match "
                                 "nothing in GPT-2). GPT-2 has no q_proj or v_proj: its query, key and value "
                                 "projections are one fused Conv1D named c_attn.") from None
    names = [n for n, m in wrapped.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    assert any(n.endswith("attn.c_attn") for n in names), (
        f"LoRA landed on {sorted({n.rsplit('.', 1)[-1] for n in names})} but not on the attention: target "
        "c_attn, the fused Wq/Wk/Wv projection.")
    assert config.fan_in_fan_out, ("set fan_in_fan_out=True: GPT-2's Conv1D stores its weight as (in, out), "
                                   "transposed from nn.Linear. PEFT flips it with a warning; say it yourself.")
    with torch.no_grad():
        assert torch.allclose(wrapped(ids).logits, before, atol=1e-6), \
            "at init the output changed: keep init_lora_weights at its default so that B starts at zero."
    layer = wrapped.get_submodule(next(n for n in names if n.endswith("attn.c_attn")))
    d_out = layer.lora_B["default"].weight.shape[0]
    return (f"LoRA on c_attn: one B of {d_out} rows adapts Wq, Wk and Wv at once "
            f"({sum(p.numel() for p in wrapped.parameters() if p.requires_grad):,} trainable on this tiny GPT-2).")


@_check("Exercise 03.2 · linear_layer_names")
def check_all_linear_targets(fn) -> str:
    """fn(model) -> the module names (last part, as target_modules takes them) of every nn.Linear but the output head."""
    from ..lora import LoraConfig, find_target_modules

    for arch, build in [("Llama", _tiny_llama), ("BioGPT", _tiny_biogpt)]:
        model = build()
        got = _call(fn, model)
        assert isinstance(got, (list, tuple, set)) and all(isinstance(n, str) for n in got), \
            f"return a list of module names (strings), got {type(got).__name__}."
        want = {n.rsplit(".", 1)[-1] for n in find_target_modules(model, LoraConfig(target_modules="all-linear"))}
        got = set(got)
        if any("." in n for n in got):
            raise AssertionError("return the last part of each name (e.g. 'q_proj'), as target_modules takes "
                                 f"them, not full paths such as {sorted(n for n in got if '.' in n)[0]!r}.")
        head = [n for n, m in model.named_modules() if m is model.get_output_embeddings()][0]
        if head in got:
            raise AssertionError(f"{arch}: {head!r} is the output head, mapping to the vocabulary; QLoRA and PEFT's "
                                 "'all-linear' leave it out (find it with model.get_output_embeddings()).")
        assert not got - want, (f"{arch}: {sorted(got - want)} are not linear layers of this model; walk "
                                "model.named_modules() and keep the nn.Linear ones instead of listing names by hand.")
        assert not want - got, f"{arch}: you missed {sorted(want - got)}."
    return ("the same layers as target_modules='all-linear' — for Llama the seven projections, for other "
            "architectures whatever their linear layers are called.")


@_check("Exercise 03.3 · copy_peft_to_lora_lab")
def check_copy_adapter(fn) -> str:
    """fn(peft_model, our_model) copies every LoRA A and B from a PEFT model into a lora_lab model, in place."""
    import copy

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
        _call(fn, theirs, ours)
        changed = [n for n, p in theirs.named_parameters() if not torch.equal(p, reference[n])]
        assert not changed, f"the PEFT model was modified ({changed[0]!r}); copy from it, into ours."
        stale = [n for n, layer in lora_layers(ours) if torch.count_nonzero(layer.lora_B.weight) == 0]
        assert not stale, (f"{len(stale)} of {len(lora_layers(ours))} LoRA layers were not filled (e.g. {stale[0]!r}). "
                           "PEFT's names carry a 'base_model.model.' prefix and an adapter name: "
                           "'…q_proj.lora_A.default.weight' is ours '…q_proj.lora_A.weight'.")
        ids = torch.arange(12)[None]
        with torch.no_grad():
            diff = float((ours(ids).logits - theirs(ids).logits).abs().max())
        assert diff < 1e-5, (f"with targets {targets!r} the logits differ by {diff:.2e}: some A and B went to the "
                             "wrong layer, or A and B were swapped.")
    return "the two models now give identical logits: same adapter, two libraries."


# ----------------------------------------------------------------------------- 04 NF4 from scratch


def _pack(codes: torch.Tensor) -> torch.Tensor:
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_full((1,), 7)])  # 7 is the code of 0.0
    return (codes[0::2] << 4) | codes[1::2]


@_check("Exercise 04.1 · unpack_codes")
def check_unpack_codes(fn) -> str:
    """fn(packed, n) -> the n 4-bit codes (uint8) stored two per byte, the first in the high nibble."""
    from ..nf4 import quantize_nf4

    g = torch.Generator().manual_seed(0)
    cases = [torch.tensor([1, 2, 15, 0], dtype=torch.uint8), torch.tensor([3, 9, 12], dtype=torch.uint8),
             torch.randint(0, 16, (1001,), generator=g, dtype=torch.uint8)]
    for codes in cases:
        n = codes.numel()
        got = _call(fn, _pack(codes), n)
        _is_tensor(got, f"unpack_codes(packed, {n})")
        assert got.numel() == n, (f"{n} codes went in, {got.numel()} came out"
                                  + (": drop the padding code of an odd count." if got.numel() == n + 1 else "."))
        got = got.reshape(-1).to(torch.int64)
        if torch.equal(got[:4], torch.tensor([2, 1, 0, 15])) and n == 4:
            raise AssertionError("the two nibbles are swapped: the first code sits in the HIGH nibble (byte >> 4), "
                                 "the second in the low one (byte & 0xF).")
        assert torch.equal(got, codes.long()), f"codes {codes[:6].tolist()}… came back as {got[:6].tolist()}…"
    w = torch.randn(3, 50, generator=g)  # and bytes written by the quantizer itself
    q = quantize_nf4(w, double_quant=False)
    codes = _call(fn, q.packed, w.numel()).reshape(-1).long()
    table = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                          -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                          0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                          0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])
    blocks = torch.nn.functional.pad(table[codes], (0, 192 - 150)).view(-1, 64) * q.absmax[:, None]
    assert torch.allclose(blocks.flatten()[:150].view(3, 50), q.dequantize(), atol=1e-6), \
        "the codes don't reproduce the quantized matrix."
    return "bytes → codes → table[code] × absmax: the whole dequantization path, by hand."


def _nf_reference(bits: int) -> torch.Tensor:
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    half = 2 ** (bits - 1)
    offset = 1 - 0.5 * (1 / (2 * (2**bits - 1)) + 1 / (2 * 2**bits))
    pos = normal.icdf(torch.linspace(offset, 0.5, half + 1, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, half, dtype=torch.float64)[:-1])
    v = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]).sort().values
    return (v / v.max()).float()


@_check("Exercise 04.2 · normal_float_codebook")
def check_nf_codebook(fn) -> str:
    """fn(bits) -> the 2**bits NormalFloat values, sorted, in [-1, 1], with an exact zero."""
    nf4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])  # bitsandbytes' table
    for bits in (4, 3, 2, 5):
        got = _call(fn, bits)
        _is_tensor(got, f"normal_float_codebook({bits})")
        got = got.reshape(-1).float()
        assert got.numel() == 2**bits, f"{bits} bits give {2**bits} values, you returned {got.numel()}."
        assert torch.all(got[1:] > got[:-1]), f"normal_float_codebook({bits}) should be sorted, smallest first."
        assert (got == 0).any(), f"normal_float_codebook({bits}) has no exact 0.0: add it (zeros must stay zeros)."
        assert got[0] == -1 and got[-1] == 1, f"scale the values into [-1, 1]: got {got[0]:.4f} … {got[-1]:.4f}."
        npos, nneg = int((got > 0).sum()), int((got < 0).sum())
        assert (npos, nneg) == (2 ** (bits - 1), 2 ** (bits - 1) - 1), (
            f"{bits} bits: {npos} positive and {nneg} negative values; with zero taking one code, NormalFloat keeps "
            f"{2 ** (bits - 1)} positive and {2 ** (bits - 1) - 1} negative ones.")
        want = nf4 if bits == 4 else _nf_reference(bits)
        diff = float((got - want).abs().max())
        assert diff < 1e-6, (f"normal_float_codebook({bits}) differs from the expected values by up to {diff:.3g}; "
                             f"expected {[round(x, 4) for x in want.tolist()]}.")
    return "at 4 bits it is bitsandbytes' NF4 table; the same recipe gives NF2, NF3, NF5."


_BPP_CASES = [(64, False, 4.5), (64, True, 4.126953125), (256, False, 4.125), (32, True, 4.25390625),
              (4096, False, 4.0078125), (4096, True, 4.001983642578125)]


@_check("Exercise 04.3 · bits_per_param")
def check_bits_per_param(fn) -> str:
    """fn(blocksize, double_quant) -> bits stored per weight: the 4-bit code plus its share of the block constants."""
    from ..nf4 import quantize_nf4

    for blocksize, dq, want in _BPP_CASES:
        got = _call(fn, blocksize, dq)
        assert isinstance(got, (int, float)), f"return a number, got {type(got).__name__}."
        if not dq and math.isclose(got, 4 + 16 / blocksize):
            raise AssertionError("the block absmax is stored in fp32, 32 bits, not 16.")
        if dq and math.isclose(got, 4 + 8 / blocksize):
            raise AssertionError("almost: the 8-bit absmax codes need their own fp32 scale, one per 256 blocks "
                                 "(32 / (blocksize · 256) bits per weight).")
        if dq and math.isclose(got, 4 + 32 / blocksize):
            raise AssertionError("with double quantization each block's absmax is an 8-bit code, not 32-bit.")
        assert math.isclose(got, want, rel_tol=1e-6), (f"blocksize={blocksize}, double_quant={dq}: you said "
                                                        f"{got:.6g} bits, the bytes say {want:.6g}.")
    q = quantize_nf4(torch.zeros(4096 * 256), 64, True)  # the real bytes also hold one fp32 offset per tensor
    assert math.isclose(q.bits_per_param, _call(fn, 64, True), rel_tol=1e-4)
    return "4.5 bits without double quantization, 4.127 with it, as the QLoRA paper counts and the bytes confirm."
