"""Checks for the exercises of notebook 00 (start here): the compute dtype, weight memory in GiB, a Llama-2 row."""

from __future__ import annotations

import torch

from ..i18n import _
from .verdict import _call, _check, _close, _first_difference

__all__ = ["check_compute_dtype", "check_weights_gib", "check_llama2_format"]

# (gpu_name, bf16_supported) as torch.cuda reports them: a CPU, GPUs without bf16, GPUs with it
_MACHINES = [(None, None), ("Tesla T4", False), ("Tesla V100-SXM2-16GB", False), ("NVIDIA A100-SXM4-40GB", True),
             ("NVIDIA L4", True)]


def _dtype_by_spec(bits: int, fp32_range: bool) -> torch.dtype:
    """The compute dtype the kit accepts (lora_lab.qlora.COMPUTE_DTYPES) with `bits` bits and (or not) fp32's range."""
    from ..qlora import COMPUTE_DTYPES

    wide = torch.finfo(torch.float32).max / 2  # bf16 reaches ~3.4e38 as fp32 does; fp16 stops at 65504
    return next(d for d in COMPUTE_DTYPES.values()
                if torch.finfo(d).bits == bits and (torch.finfo(d).max > wide) == fp32_range)


def _right_dtype(gpu_name: str | None, bf16: bool | None) -> torch.dtype:
    """The notebook's rule as a spec: full precision on a CPU; on a GPU 16 bits, with fp32's range where it has bf16."""
    if gpu_name is None:
        return _dtype_by_spec(32, True)
    return _dtype_by_spec(16, bool(bf16))


def _cpu_hint(error: BaseException) -> str | None:
    """An `explain` for _call on a CPU's (None, None): the learner's code used None as a GPU name."""
    if isinstance(error, (AttributeError, TypeError)) and "NoneType" in str(error):
        return _("On a CPU both arguments are None (there is no GPU to name): test for gpu_name is None before "
                 "using it as a string.")
    return None


@_check("Exercise 00.1 · compute_dtype_for")
def check_compute_dtype(fn) -> str:
    """fn(gpu_name or None, bf16_supported or None) -> the torch dtype to compute in."""
    for name, bf16 in _MACHINES:
        got, want = _call(fn, name, bf16, explain=_cpu_hint if name is None else None), _right_dtype(name, bf16)
        if isinstance(got, str):
            raise AssertionError(_("return a torch dtype, not the string {got!r}: the dtypes are objects of "
                                   "torch (torch.<name>).").format(got=got))
        assert isinstance(got, torch.dtype), _("return a torch dtype, got {kind}.").format(kind=type(got).__name__)
        if got == want:
            continue
        if name is None:
            raise AssertionError(_("for gpu_name=None (a CPU) you chose {got}: on a CPU, half-precision (16-bit) "
                                   "matmuls are slow or not supported at all, so compute at full precision."
                                   ).format(got=got))
        if torch.finfo(got).bits > 16:
            raise AssertionError(_("for gpu_name={name!r} you chose {got}: it runs, but a GPU computes twice as fast "
                                   "in a 16-bit dtype it supports, and the weights take half the memory."
                                   ).format(name=name, got=got))
        if not bf16:
            raise AssertionError(_("for gpu_name={name!r}, bf16_supported=False you chose {got}: this GPU has no bf16. "
                                   "bf16 needs an Ampere GPU or newer (A100, L4, H100); older ones such as the T4 "
                                   "and the V100 lack it.").format(name=name, got=got))
        raise AssertionError(_("for gpu_name={name!r}, bf16_supported=True you chose {got}: this GPU has bf16, which "
                               "keeps fp32's range in 16 bits, so training needs no loss scaling.").format(
            name=name, got=got))
    return _("bf16 where the GPU has it, the other 16-bit dtype where it does not, full precision on a CPU: "
             "{cases} machines, all right.").format(cases=len(_MACHINES))


# (n_params, bits_per_param): Llama-2-7B at 16 bits and at NF4's 4.127 (the notebook's two), and two more
_GIB_CASES = [(6_738_415_616, 16), (6_738_415_616, 4.127), (2_360_000, 32), (1_000_000_000, 8)]


@_check("Exercise 00.2 · weights_gib")
def check_weights_gib(fn) -> str:
    """fn(n_params, bits_per_param) -> GiB the weights take."""
    from ..memory import GIB

    for n, bits in _GIB_CASES:
        got = _call(fn, n, bits)
        assert isinstance(got, (int, float)) or (isinstance(got, torch.Tensor) and got.numel() == 1), \
            _("return a number, got {kind}.").format(kind=type(got).__name__)
        got = float(got)
        if _close(got, n * bits / 8 / 1e9):
            raise AssertionError(_("weights_gib({n:,}, {bits}) = {got:.4g} is in GB (10⁹ bytes); GPU memory such as "
                                   "the T4's 14.75 GiB is counted in GiB = 2**30 bytes.").format(n=n, bits=bits, got=got))
        if _close(got, n * bits / GIB) or _close(got, n * bits / 1e9):
            raise AssertionError(_("weights_gib({n:,}, {bits}) = {got:.4g}: that counts bits, not bytes; divide by "
                                   "8.").format(n=n, bits=bits, got=got))
        if _close(got, n * bits / 8 / 2**20) or _close(got, n * bits / 8 / 2**10):
            unit = _("MiB (2**20 bytes)") if _close(got, n * bits / 8 / 2**20) else _("KiB (2**10 bytes)")
            raise AssertionError(_("weights_gib({n:,}, {bits}) = {got:.4g} is in {unit}; a GiB is 2**30 bytes, 1024 "
                                   "times 1024 times 1024.").format(n=n, bits=bits, got=got, unit=unit))
        bits_back = got * GIB * 8 / n  # GiB -> bytes -> bits -> per parameter: must give back what went in
        exact = n * bits / 8 / GIB
        if not _close(bits_back, bits) and any(got == round(exact, digits) for digits in range(4)):
            raise AssertionError(_("weights_gib({n:,}, {bits}) = {got}: you rounded the result. Return the number as "
                                   "computed and round only where you print it (f\"{{x:.2f}}\"): for a small model, "
                                   "two decimals of a GiB can be off by more than 10%.").format(n=n, bits=bits, got=got))
        assert _close(bits_back, bits), _(
            "weights_gib({n:,}, {bits}) = {got:.4g} GiB, which would be {back:.4g} bits per parameter, not {bits}: "
            "go from bits to bytes, then from bytes to GiB (2**30 bytes).").format(n=n, bits=bits, got=got, back=bits_back)
    (n, half), (n, nf4) = _GIB_CASES[:2]  # Llama-2-7B, in the learner's own (now checked) figures
    return _("Llama-2-7B's weights take {fp16:.2f} GiB in fp16, and {nf4:.2f} GiB if every one were stored at NF4's "
             "{bits} bits.").format(fp16=float(_call(fn, n, half)), nf4=float(_call(fn, n, nf4)), bits=nf4)


def _answer_slot(row: str, prompt: str) -> str | None:
    """What a row holds between `[/INST]` and `</s>`, if it has the format's frame around this prompt; else None."""
    from ..tasks import parse_llama2

    try:
        got_prompt, got_answer = parse_llama2(row.strip())
    except ValueError:
        return None
    return got_answer if got_prompt.strip() == prompt else None


@_check("Exercise 00.3 · llama2_row")
def check_llama2_format(fn) -> str:
    """fn(prompt, answer) -> one training row in Llama-2's chat format."""
    from ..tasks import format_llama2

    for prompt, answer in [("Which number is larger: 39 or 73?", "73"), ("Say hi.", "hi")]:
        got, want = _call(fn, prompt, answer), format_llama2(prompt, answer)
        assert isinstance(got, str), _("return a string, got {kind}.").format(kind=type(got).__name__)
        if got != want and got.strip() == format_llama2(answer, prompt).strip():
            raise AssertionError(_("the prompt and the answer are swapped: the question goes inside [INST] … [/INST], "
                                   "the answer after it."))
        written = _answer_slot(got, prompt)
        if written is not None and written != answer and answer in written:
            raise AssertionError(_("for answer={answer!r} your row holds {written!r} where the answer goes. The data's "
                                   "rows read 'the answer is lemon.' because that sentence IS their answer; your "
                                   "function is given the answer already written, so put `answer` there exactly as "
                                   "it comes, with no words of your own around it.").format(answer=answer,
                                                                                           written=written))
        if got.strip() == want.strip() and got != want:
            raise AssertionError(_("almost: mind the spaces at the two ends of the row; yours is {got!r}.").format(got=got))
        assert got.startswith("<s>"), _("a row starts with the BOS token <s>; got {got!r}.").format(got=got)
        assert got.endswith("</s>"), _("a row ends with the EOS token </s>, so the model learns to stop; got {got!r}."
                                       ).format(got=got)
        assert "[INST]" in got and "[/INST]" in got, _("the prompt sits between [INST] and [/INST]; got {got!r}."
                                                       ).format(got=got)
        at = _first_difference(got, want)
        assert got == want, _("{got!r} leaves the data's format at character {at} (…{here!r}…): compare with a row "
                              "of the instruction data, space by space.").format(got=got, at=at + 1,  # counted from 1
                                                                  here=got[max(at - 6, 0):at + 6])
    return _("your rows have the data's format, BOS to EOS, as in mlabonne/guanaco-llama2-1k.")
