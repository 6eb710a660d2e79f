"""One language setting for what the kit shows a learner: the gettext catalogue is complete and current, numbers are
written for the reader, and the library's own words (plots, widgets, tables, advice, the fine-tune's lines) follow it.

The catalogue's terms and number format: tests/test_glossary.py. What English is left in the Vietnamese notebooks:
tests/test_translations.py.
"""

import ast
import string
from pathlib import Path

import pytest
import torch

import lora_lab
from lora_lab import catalogue, i18n
from lora_lab.i18n import format_number, num, set_language

PACKAGE = Path(lora_lab.__file__).resolve().parent


@pytest.fixture(autouse=True)
def english_afterwards():
    set_language("en")
    yield
    set_language("en")


def _vietnamese() -> dict[str, object]:
    return {m.id: m for m in catalogue.read_catalogue("vi") if m.id}


def _fields(template: str) -> list[tuple[str, str, str]]:
    return sorted((name, spec, conv or "") for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None)


# ----------------------------------------------------------------------------- the catalogue


def test_every_message_has_a_current_vietnamese_entry():
    used = {m.id: m for m in catalogue.extract() if m.id}
    have = _vietnamese()
    assert len(used) > 300
    fix = "run `python -m lora_lab.catalogue update`, then translate the entries it adds or marks fuzzy"
    missing = [m for m in used if m not in have]
    assert not missing, f"messages with no Vietnamese entry ({fix}): {missing}"
    stale = [m for m in have if m not in used]
    assert not stale, f"the catalogue translates messages the package no longer uses ({fix}): {stale}"
    untranslated = [m for m, entry in have.items() if not entry.string]
    assert not untranslated, f"untranslated ({fix}): {untranslated}"
    fuzzy = [m for m, entry in have.items() if entry.fuzzy]
    assert not fuzzy, f"changed since translated, marked fuzzy ({fix}): {fuzzy}"


def test_every_translation_keeps_the_placeholders_of_its_message():
    for en, entry in _vietnamese().items():
        vi = entry.string
        assert _fields(vi) == _fields(en), f"{en!r} and its translation {vi!r} have different placeholders"
        for name, *_ in _fields(en):
            assert name and name.isidentifier(), f"{en!r}: use keyword placeholders ({{name}}), not {{{name}}}"


def _message_calls():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "N_"):
                yield path, node


def test_a_message_is_one_string_literal_so_that_babel_finds_it():
    # a label kept in a variable is marked N_("...") where it is written and shown with translate(label)
    calls = list(_message_calls())
    assert len(calls) > 300
    bad = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for path, node in calls
           if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Constant)
           or not isinstance(node.args[0].value, str)]
    assert not bad, f"_() and N_() take one string literal (no f-string, no variable): {bad}"


def test_the_catalogue_ships_and_is_read_at_run_time():
    path = i18n.catalogue_path("vi")
    assert path.is_file() and path.is_relative_to(PACKAGE)
    set_language("vi")
    assert i18n._("correct") == "đúng" and i18n.translate("a message nobody marked") == "a message nobody marked"
    fuzzy = next((m for m in catalogue.read_catalogue("vi") if m.fuzzy), None)
    assert fuzzy is None  # (a fuzzy entry would show in English: translations() leaves it out)


# ----------------------------------------------------------------------------- the setting


def test_one_setting_for_the_kit_and_its_checks():
    from lora_lab import exercises

    assert lora_lab.set_language is exercises.set_language is i18n.set_language
    assert lora_lab.get_language() == "en"
    lora_lab.set_language("vi")
    assert exercises.get_language() == "vi"
    for bad in ("fr", "VI", "", None, ["vi"]):
        with pytest.raises(ValueError, match=r"lang=.*is not accepted; choose one of \('en', 'vi'\)") as e:
            set_language(bad)
        assert repr(bad) in str(e.value)
    assert lora_lab.get_language() == "vi"  # a refused value changes nothing


# ----------------------------------------------------------------------------- numbers

CASES = [(6_738_415_616, ","), (14.75, ""), (0.0104, ".2%"), (0.98, ".1%"), (3.14159, ".2f"), (7.44e-2, ".2e"),
         (-1234.5, ",.1f"), (1200, ""), (4.127, "10.3f"), (2**40, "_"), (float("nan"), ".2f")]


@pytest.mark.parametrize("value, spec", CASES)
def test_english_numbers_are_exactly_pythons(value, spec):
    assert format_number(value, spec) == format(value, spec) == f"{num(value):{spec}}"


def test_vietnamese_numbers_group_with_a_dot_and_mark_decimals_with_a_comma():
    set_language("vi")
    assert [format_number(v, s) for v, s in CASES] == [
        "6.738.415.616", "14,75", "1,04%", "98,0%", "3,14", "7,44e-02", "-1.234,5", "1200", "     4,127",
        "1_099_511_627_776", "nan"]
    assert str(num(0.5)) == "0,5" and f"{num(torch.tensor(2.5)):.1f}" == "2,5"  # a 0-d tensor is a number
    assert f"{num(torch.tensor([3]).sum()):,}" == "3"
    with pytest.raises(TypeError, match=r"num\(value='12'\): value is not a number"):
        num("12")
    with pytest.raises(TypeError, match="format_number.*True.*not a number"):
        format_number(True)


def test_a_messages_numbers_follow_the_language_and_its_python_values_do_not():
    template = "{n:,} rows, {share:.1%}, {x}, {x!r}, {shape}, {name}"
    values = dict(n=1200, share=0.25, x=0.5, shape=(8, 48), name="q_proj")
    assert i18n.Message(template).format(**values) == template.format(**values)
    set_language("vi")
    assert i18n.Message(template).format(**values) == "1.200 rows, 25,0%, 0,5, 0.5, (8, 48), q_proj"


# ----------------------------------------------------------------------------- what the library shows


def test_advice_and_explanations_follow_the_language():
    from lora_lab.bnb_cpu import describe_dequantize
    from lora_lab.env import gpu_advice

    english = [gpu_advice(None, None, None), gpu_advice("Tesla T4", 14.75, False), gpu_advice("NVIDIA L4", 22.0, True),
               describe_dequantize({"machine": "x86_64", "avx512f": True}),
               describe_dequantize({"machine": "arm64", "avx512f": False})]
    assert english[1].startswith("NVIDIA T4 (14.75 GiB usable") and "about 3.9 GB" in english[1]
    set_language("vi")
    vietnamese = [gpu_advice(None, None, None), gpu_advice("Tesla T4", 14.75, False),
                  gpu_advice("NVIDIA L4", 22.0, True), describe_dequantize({"machine": "x86_64", "avx512f": True}),
                  describe_dequantize({"machine": "arm64", "avx512f": False})]
    assert vietnamese[0].startswith("Không có GPU") and "14,75 GiB" in vietnamese[1] and "3,9 GB" in vietnamese[1]
    assert "(arm64, không có AVX-512F)" in vietnamese[4]
    assert all(v != e for v, e in zip(vietnamese, english))


def test_the_memory_table_follows_the_language():
    from lora_lab.memory import MemoryEstimate, part_label

    e = MemoryEstimate(weights=3 * 2**30, quant_constants=2**27, lora_weights=2**29, gradients=2**29,
                       optimizer_state=2**30, activations=2**31 + 2**29, num_processes=2, sharding="fsdp")
    assert e.table().splitlines()[1] == "quant constants        0.125 GiB"
    assert e.table().splitlines()[-1] == "(per device: 2 processes, fully sharded)"
    set_language("vi")
    lines = e.table().splitlines()
    assert lines[0].startswith("trọng số ") and lines[0].endswith("     3,000 GiB")
    assert lines[-2].startswith("tổng") and lines[-1] == "(mỗi thiết bị: 2 tiến trình, phân mảnh hoàn toàn)"
    assert len({len(line) for line in lines[:-1]}) == 1  # the columns still line up
    assert part_label("optimizer_state") == "trạng thái bộ tối ưu"
    with pytest.raises(KeyError):
        part_label("weight")


def test_tables_plots_and_widgets_follow_the_language():
    import matplotlib
    import matplotlib.pyplot

    matplotlib.use("Agg")
    from lora_lab import plots
    from lora_lab.widgets import SliderPanel

    assert plots.format_table(["n", "x"], [[1234567, 0.25]]).splitlines()[-1] == "1,234,567  0.25"
    set_language("vi")
    assert plots.format_table(["n", "x"], [[1234567, 0.25]]).splitlines()[-1] == "1.234.567  0,25"
    fig, (ax,) = plots.figure()
    plots.plot_curves(ax, {"a": [3.0, 2.0, 1.0]})
    plots.plot_spectrum(ax, {"W": torch.tensor([3.0, 1.0])})
    assert (ax.get_xlabel(), ax.get_title()) == ("chỉ số i", "giá trị suy biến")
    fig, (ax,) = plots.figure()
    plots.plot_curves(ax, {"a": [3.0, 2.0, 1.0]})
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("bước", "giá trị mất mát")
    matplotlib.pyplot.close("all")
    panel = SliderPanel(lambda on, t: f"{on} {t}", {"on": [True, False], "t": [0.5, 1.0]})
    assert [label for label, _ in panel.sliders["on"].options] == ["bật", "tắt"]
    assert [label for label, _ in panel.sliders["t"].options] == ["0,5", "1,0"]


def test_the_fine_tunes_own_lines_follow_the_language():
    from lora_lab.finetune import _show, metric_label
    from lora_lab.sft_data import describe_fit

    fit = {"dropped": 12, "rows": 1200, "cut": 3, "fits_all": 96}
    assert describe_fit(fit, 64).startswith("max_length=64: 12 of 1,200 training rows (1%) keep no answer token")
    assert (metric_label("held-out exact match"), _show(0.98)) == ("held-out exact match", "98.0%")
    set_language("vi")
    assert describe_fit(fit, 64).startswith("max_length=64: 12 trên 1.200 dòng huấn luyện (1%)")
    assert (metric_label("held-out exact match"), _show(0.98)) == ("khớp chính xác trên tập đánh giá", "98,0%")
    assert metric_label("a metric of my own") == "a metric of my own"


def test_the_notebook_progress_table_speaks_the_language(tmp_path, capsys):
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.utils.notebook import NotebookProgressCallback

    from lora_lab.progress import NotebookProgress, use_notebook_progress

    class Trainer:  # what use_notebook_progress touches of a transformers Trainer
        def __init__(self):
            self.args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
            self.callback_handler = type("Handler", (), {"callbacks": [NotebookProgressCallback()]})()

        def remove_callback(self, kind):
            self.callback_handler.callbacks = [c for c in self.callback_handler.callbacks if type(c) is not kind]

        def add_callback(self, callback):
            self.callback_handler.callbacks.append(callback)

    english = Trainer()
    use_notebook_progress(english)
    assert [type(c) for c in english.callback_handler.callbacks] == [NotebookProgressCallback]  # English: as it was
    set_language("vi")
    trainer = Trainer()
    use_notebook_progress(trainer)
    (progress,) = trainer.callback_handler.callbacks
    assert type(progress) is NotebookProgress
    state, control = TrainerState(max_steps=20, num_train_epochs=2, epoch=0.5, global_step=10), TrainerControl()
    progress.on_train_begin(trainer.args, state, control)
    progress.on_step_end(trainer.args, state, control)
    progress.on_log(trainer.args, state, control, logs={"loss": 1.25})
    assert progress.training_tracker.inner_table == [["bước", "giá trị mất mát khi huấn luyện"], [10, "1,250000"]]
    assert progress.training_tracker.comment == "epoch 0,5/2"
    progress.on_train_end(trainer.args, state, control)
    capsys.readouterr()


@pytest.mark.parametrize("args", [["--language", "vi", "estimate"], ["estimate", "--language", "vi"]])
def test_the_command_line_speaks_the_language_it_is_given(args, capsys):
    from lora_lab.cli import main

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trạng thái bộ tối ưu" in out and "optimizer state" not in out
    assert main(["estimate"]) == 0  # the default is English, whatever ran before
    assert "optimizer state" in capsys.readouterr().out
