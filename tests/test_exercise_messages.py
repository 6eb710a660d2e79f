"""lora_lab.exercises for a classroom: no reference answer readable in the checks' source or messages, every
message in English and Vietnamese, and the ids a grader uses."""

import ast
import re
import string
from pathlib import Path

import pytest
import torch

from lora_lab import catalogue
from lora_lab import exercises as ex
from lora_lab.exercises import get_language, set_language

MESSAGES = {m.id: m.string for m in catalogue.read_catalogue("vi") if m.id}  # the Vietnamese catalogue

PACKAGE = Path(ex.__file__).resolve().parent
MODULES = sorted(PACKAGE.glob("*.py"))
CHECK_MODULES = [p for p in MODULES if p.name not in ("__init__.py", "concepts.py")]


@pytest.fixture(autouse=True)
def english():
    set_language("en")
    yield
    set_language("en")


# ----------------------------------------------------------------------------- no readable answers

# answers of the exercises, as a student would find them: expected counts, bits, table values, GiB,
# the GPT-2 target, the dtypes, and the solutions' own expressions
ANSWERS = [
    "4194304", "4_194_304", "4,194,304", "4718592", "4_718_592", "4,718,592", "37748736", "37_748_736", "37,748,736",
    "159907840", "159_907_840", "159,907,840", "4.126953125", "4.0078125", "4.25390625", "4.001983642578125",
    "4.03173828125", "0.6961928", "0.0795802", "0.5626170", "0.7229568", "12.55", "3.24", "2.38",
    "c_attn", "CAUSAL_LM", "fan_in_fan_out=True", "torch.float16", "torch.bfloat16", "normal.icdf",
    "prompt [/INST] answer </s>", "[/INST] {answer} </s>", "/ 8 / 2**30", "(d * k - 1) // (d + k)",
    "unflatten(-1, (-1, gs)).mean(-1)", "norm(adapted, dim=1)", "zeros - delta / scales", "− ΔW / scales",
    "sqrt(S[:r] / scaling)", "16 bytes per trainable",
    "-(-shape[0] // world_size)", "v // num_processes", "absmax.unsqueeze(1)",
]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_reference_answer_is_written_in_the_checks(path):
    text = path.read_text(encoding="utf-8")
    found = [a for a in ANSWERS if a in text]
    assert not found, f"{path.name} spells out {found}: compute the reference from the kit, or check a property"


def _wrong_gpu_dtype(name, bf16):  # fp32 on a CPU, bf16 on every GPU
    return torch.float32 if name is None else torch.bfloat16


def _wrong_codebook(bits):  # sorted, an exact 0, ends at ±1, the right counts: only the values are wrong
    half = 2 ** (bits - 1)
    return torch.cat([-torch.linspace(1, 0, half)[:-1], torch.linspace(0, 1, half + 1)])


def _nf4_digits():
    from lora_lab.nf4 import nf4_codebook

    return [f"{v:.4f}" for v in nf4_codebook().tolist() if v not in (-1.0, 0.0, 1.0)]


def _sampling_digits():
    probs = torch.softmax(torch.tensor([2.0, 1.0, 0.5, -1.0, 0.25, -0.5]) / 0.5, -1)
    return [f"{p:.4f}" for p in probs.tolist()] + [f"{p:.3f}" for p in probs.tolist()]


# (check, a wrong answer, texts of the expected answer that its message must not show)
WRONG_CONSTANTS = {
    "compute_dtype_cpu": (ex.check_compute_dtype, lambda name, bf16: torch.float16, ["float32", "fp32"]),
    "compute_dtype_t4": (ex.check_compute_dtype, _wrong_gpu_dtype, ["torch.float16", "fp16"]),
    "weights_gib": (ex.check_weights_gib, lambda n, bits: 1.0, ["12.55", "12.5"]),
    "llama2_row": (ex.check_llama2_format, lambda p, a: f"<s>[INST]{p}[/INST]{a}</s>",
                   ["[INST] Which number is larger: 39 or 73? [/INST] 73 </s>"]),
    "max_useful_rank": (ex.check_max_useful_rank, lambda d, k: 1, ["95"]),
    "lora_param_count": (ex.check_lora_param_count, lambda shapes, r: 123, ["4,194,304", "4194304"]),
    "same_scaling_alpha": (ex.check_same_scaling_alpha, lambda alpha, r, new_r, use_rslora=False: 2 * alpha,
                           ["128"]),
    "gpt2_lora_config": (ex.check_gpt2_lora_config,
                         lambda: __import__("peft").LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1,
                                                               target_modules=["attn"], task_type="CAUSAL_LM"),
                         ["c_attn"]),
    "linear_layer_names": (ex.check_all_linear_targets, lambda model: ["q_proj"],
                           ["k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "unpack_codes": (ex.check_unpack_codes, lambda packed, n: torch.zeros(n, dtype=torch.uint8), ["[1, 2, 15, 0]"]),
    "nf_codebook": (ex.check_nf_codebook, _wrong_codebook, _nf4_digits()),
    "bits_per_param": (ex.check_bits_per_param, lambda blocksize, dq: 4.2, ["4.5", "4.127", "4.12695"]),
    "nf4_bytes": (ex.check_nf4_bytes, lambda n, blocksize, dq: 1234, ["19,024", "19024"]),
    "pad_token": (ex.check_pad_token, lambda tok: "<pad>", ["<unk>"]),
    "sampling_probs": (ex.check_sampling_probs, lambda logits, t, k: torch.full_like(logits, 1 / 6),
                       _sampling_digits()),
    "training_bytes": (ex.check_training_bytes, lambda n, optimizer: 7 * n, ["3,735,552", "3735552", "16 bytes"]),
    "dora_magnitude": (ex.check_dora_magnitude, lambda w, a, b, s: torch.ones(w.shape[0]), ["tensor("]),
    "shard_bytes": (ex.check_shard_bytes, lambda shape, size, world, rank: 7, ["589,824", "589824"]),
    "fsdp_parts": (ex.check_fsdp_parts, lambda parts, n: {k: 1 for k in parts}, ["1,625,472", "1625472"]),
}


@pytest.mark.parametrize("case", WRONG_CONSTANTS, ids=str)
def test_a_wrong_answer_is_not_told_the_right_one(case):
    check, wrong, secret = WRONG_CONSTANTS[case]
    for language in ("en", "vi"):
        set_language(language)
        verdict = check(wrong)
        assert verdict.status == "wrong", repr(verdict)
        shown = [s for s in secret if s in repr(verdict)]
        assert not shown, f"{case} ({language}) shows {shown}: {verdict!r}"


def test_the_nf4_bytes_secret_above_is_the_real_figure():
    from lora_lab.nf4 import quantize_nf4

    assert quantize_nf4(torch.zeros(192 * 192), 64, True).nbytes == 19_024  # so the test above tests something


# ----------------------------------------------------------------------------- every message through _()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_underscore_call(node) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"


def _templates() -> dict[str, list[str]]:
    """{template: [where]} of every _("...") call in the package."""
    found: dict[str, list[str]] = {}
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if _is_underscore_call(node):
                assert len(node.args) == 1 and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and not node.keywords, \
                    f"{path.name}:{node.lineno}: _() takes one string literal, so that it can be found and translated"
                found.setdefault(node.args[0].value, []).append(f"{path.name}:{node.lineno}")
    return found


def _fields(template: str) -> list[tuple[str, str, str]]:
    return sorted((name, spec, conv or "") for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None)


def test_every_template_has_a_vietnamese_entry_with_the_same_placeholders():
    templates = _templates()
    assert len(templates) > 100
    missing = [t for t in templates if t not in MESSAGES]
    assert not missing, f"no Vietnamese for {missing}"
    for en in templates:  # the whole catalogue's completeness and staleness: tests/test_i18n.py
        vi = MESSAGES[en]
        assert _fields(vi) == _fields(en), f"{en!r} and its translation {vi!r} have different placeholders"
        assert vi.strip() and vi != en or not re.search("[a-z]{3}", en), f"{en!r} is not translated"
        for name, *_ in _fields(en):
            assert name and name.isidentifier(), f"{en!r}: use keyword placeholders ({{name}}), not {{{name}}}"


def _translated(node) -> bool:
    """_("..."), _("...").format(...), or a choice between two such expressions."""
    if _is_underscore_call(node):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _is_underscore_call(node.func.value)
    if isinstance(node, ast.IfExp):
        return _translated(node.body) and _translated(node.orelse)
    return False


def _learner_messages(tree: ast.Module):
    """(node, what) for every message a learner can see: assert messages, AssertionError/_Raised arguments,
    and what a check body returns."""
    checks = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
              and any(isinstance(d, ast.Call) and getattr(d.func, "id", "") == "_check" for d in f.decorator_list)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.msg is not None:
            yield node.msg, "assert message"
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                and getattr(node.exc.func, "id", "") in ("AssertionError", "_Raised"):
            yield from ((a, "raised message") for a in node.exc.args)
    for f in checks:
        body = list(f.body)
        while body:  # the check's own statements, not those of functions defined inside it
            node = body.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Return) and node.value is not None:
                yield node.value, f"return value of {f.name}"
            body.extend(ast.iter_child_nodes(node))


@pytest.mark.parametrize("path", CHECK_MODULES, ids=lambda p: p.name)
def test_every_learner_message_goes_through_the_translation(path):
    tree = _tree(path)
    bare = [f"line {node.lineno} ({what})" for node, what in _learner_messages(tree) if not _translated(node)]
    assert not bare, f"{path.name}: messages outside _(): {bare}"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "_" and isinstance(n.ctx, ast.Store)], \
        f"{path.name} assigns to `_`, which hides the translation function"


NOT_PROSE = {
    "Which number is larger: 39 or 73?",  # a prompt fed to the learner's llama2_row, in the data's language
    "not done",  # Verdict.status, the machine value graders read
    '<div style="border-left: 4px solid ',  # HTML markup of the verdict box
    ex.verdict._SHAPE_ERROR.pattern,  # torch's shape errors, matched, never shown
    "unsigned char",  # torch's name for uint8 in its dtype errors, matched, never shown
}


@pytest.mark.parametrize("path", CHECK_MODULES, ids=lambda p: p.name)
def test_no_english_sentence_is_left_outside_the_translation(path):
    tree = _tree(path)
    inside, docstrings = set(), set()
    for node in ast.walk(tree):
        if _is_underscore_call(node) or (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                                         and getattr(node.exc.func, "id", "") == "ValueError"):
            inside.update(id(n) for n in ast.walk(node))  # translated, or a developer's error (a bad label)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            docstrings.add(id(node.body[0].value))
    words = re.compile(r"[A-Za-z]{3,} [A-Za-z]{3,}")
    prose = [f"line {n.lineno}: {n.value!r}" for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str) and words.search(n.value)
             and id(n) not in inside and id(n) not in docstrings and n.value not in NOT_PROSE]
    assert not prose, f"{path.name}: English outside _(): {prose}"


# ----------------------------------------------------------------------------- the language switch


def test_set_language_switches_and_refuses_what_it_does_not_speak():
    assert get_language() == "en"
    set_language("vi")
    assert get_language() == "vi"
    for bad in ("fr", "VI", "", None, ["vi"]):
        with pytest.raises(ValueError, match=r"lang=.*is not accepted; choose one of \('en', 'vi'\)") as e:
            set_language(bad)
        assert repr(bad) in str(e.value)
    assert get_language() == "vi"  # a refused value changes nothing


def test_in_vietnamese_a_verdict_speaks_vietnamese():
    set_language("vi")
    wrong = ex.check_weights_gib(lambda n, bits: n * bits / 8 / 1e9)
    assert wrong.status == "wrong"  # the machine value stays English, for graders
    # numbers as Vietnamese writes them: "." groups thousands, "," marks decimals
    assert repr(wrong).startswith("Bài tập 00.2 · weights_gib: chưa đúng — weights_gib(6.738.415.616, 16) = 13,48 tính bằng GB")
    assert "GiB = 2**30 byte" in wrong.message and "#cf222e" in wrong._repr_html_()
    right = ex.check_weights_gib(lambda n, bits: n * bits / 8 / 2**30)
    assert repr(right).startswith("Bài tập 00.2 · weights_gib: đúng — trọng số của Llama-2-7B chiếm 12,55 GiB")

    def stub(*args):
        raise NotImplementedError

    pending = ex.check_compute_dtype(stub)
    assert pending.status == "not done"
    assert repr(pending) == ("Bài tập 00.1 · compute_dtype_for: chưa làm — hàm vẫn còn ném ra NotImplementedError: "
                             "hãy viết câu trả lời của bạn thay cho dòng `raise`, rồi chạy lại ô code này.")

    def buggy(d, k, r):
        return torch.randn(d, r) @ torch.randn(k, r)

    raised = ex.check_rank_r_matrix(buggy)
    assert "code của bạn báo lỗi RuntimeError" in raised.message and "trong code của bạn: `" in raised.message


def test_the_english_labels_and_not_done_message_are_unchanged():
    def stub(*args):
        raise NotImplementedError

    assert repr(ex.check_compute_dtype(stub)) == (
        "Exercise 00.1 · compute_dtype_for: not done yet — it still raises NotImplementedError: write your answer "
        "in place of the `raise` line and run the cell again.")


# ----------------------------------------------------------------------------- what a grader uses


def test_exercises_lists_every_check_in_notebook_order_with_its_id_and_answer_name():
    from lora_lab.exercises import beyond, concepts, finetune, scaling

    checks = {n for m in (concepts, finetune, beyond, scaling) for n in m.__all__ if n.startswith("check_")}
    assert {c.__name__ for c in ex.EXERCISES} == checks and len(ex.EXERCISES) == len(checks)
    ids = [c.exercise_id for c in ex.EXERCISES]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and all(re.fullmatch(r"\d\d\.\d", i) for i in ids)
    assert (ex.check_compute_dtype.exercise_id, ex.check_compute_dtype.answer_name) == ("00.1", "compute_dtype_for")
    assert (ex.check_lora_linear.exercise_id, ex.check_lora_linear.answer_name) == ("02.1", "MyLoRALinear")
    for c in ex.EXERCISES:
        assert c.answer_name.isidentifier()
        assert ex.Verdict(f"Exercise {c.exercise_id} · {c.answer_name}", True, "").title() == \
            f"Exercise {c.exercise_id} · {c.answer_name}"


def test_a_malformed_exercise_label_is_refused():
    from lora_lab.exercises.verdict import _check

    with pytest.raises(ValueError, match="exercise='Ex 1' is not accepted"):
        _check("Ex 1")
    with pytest.raises(ValueError, match="takes='instance' is not accepted; choose 'function' or 'class'"):
        _check("Exercise 00.1 · f", takes="instance")
