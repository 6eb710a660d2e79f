"""The GPU path as a Colab T4 takes it, checked on a CPU: torch.cuda is faked, so no kernel runs.

A T4 learner's notebooks choose fp16, build a BitsAndBytesConfig, plan and estimate the 7B recipe and set
up the trainer before any weight loads; a typo in a branch only a GPU takes would otherwise first show up in
a learner's Colab. Here every one of those objects is built under a fake T4 (name, 14.75 GiB, no bf16). A
real CUDA call would still fail ("Torch not compiled with CUDA enabled"), so nothing reaches a GPU kernel:
what lies past model loading is for benchmarks/gpu_check.py on a real GPU.
"""

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from trl import SFTConfig  # imported before torch.cuda is faked: its import checks the real machine

import lora_lab.finetune as ft
from lora_lab.config import resolve_config
from lora_lab.env import describe_environment
from lora_lab.plan import T4, Hardware, estimate_for, plan, sft_kwargs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_t4(monkeypatch):
    props = types.SimpleNamespace(name="Tesla T4", total_memory=int(T4.memory_gib * 2**30), major=7, minor=5,
                                  multi_processor_count=40)
    for name, value in {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
                        "get_device_properties": lambda *a: props, "get_device_name": lambda *a: props.name,
                        "get_device_capability": lambda *a: (7, 5), "is_bf16_supported": lambda *a, **k: False,
                        "memory_allocated": lambda *a: 0, "max_memory_allocated": lambda *a: 0,
                        "reset_peak_memory_stats": lambda *a: None, "set_device": lambda *a: None}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    yield props
    from accelerate.state import PartialState

    PartialState._reset_state()  # the trainer settings made accelerate's process state think it has a GPU


def test_the_environment_check_advises_fp16_on_a_t4(fake_t4):
    env = describe_environment()
    assert (env["device"], env["gpu"], env["bf16"]) == ("cuda", "Tesla T4", False)
    assert "fp16" in env["advice"] and "no bf16" in env["advice"]
    assert Hardware.detect() == Hardware("cuda", "Tesla T4", False, T4.memory_gib)


def test_the_t4_plan_builds_the_4bit_config_and_the_trainer_settings(fake_t4, monkeypatch, tmp_path):
    config = resolve_config("llama2-7b-t4")
    run_plan = plan(config, Hardware.detect())
    assert (run_plan["precision"], run_plan["optim"], run_plan["device_map"]) == ("fp16", "paged_adamw_32bit", {"": 0})
    loaded, base = {}, ft.load_base_model()

    def load_base_model(name, quantization=None, dtype=None, device_map=None):  # stands in for the 13 GB download
        loaded.update(name=name, quantization=quantization, dtype=dtype, device_map=device_map)
        return base  # the tiny model, on the CPU, so that what follows the load runs too

    monkeypatch.setattr(ft, "load_base_model", load_base_model)
    tokenizer = ft.load_tokenizer()  # the tiny one, loaded before the stand-in replaces the loader
    monkeypatch.setattr(ft, "load_tokenizer", lambda name: tokenizer)
    ft.load_for_training(config, run_plan)
    q = loaded["quantization"]
    assert loaded["name"] == "NousResearch/Llama-2-7b-chat-hf" and loaded["device_map"] == {"": 0}
    assert loaded["dtype"] == torch.float16 and q.load_in_4bit and q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.float16
    args = SFTConfig(**sft_kwargs(config, run_plan, str(tmp_path), progress=False))
    assert (args.fp16, args.bf16, args.optim, args.gradient_checkpointing) == (True, False, "paged_adamw_32bit", True)
    assert (args.per_device_train_batch_size, args.max_length, args.learning_rate) == (4, 1024, 2e-4)
    est = estimate_for(config, run_plan)
    assert est.fits(T4.memory_gib) and 7.5 < est.total / 2**30 < 8.5  # the README's 8.0 GiB


def test_the_fine_tune_on_a_t4_gets_as_far_as_the_download(fake_t4, tmp_path):
    # every setting checked and the plan made for the T4; offline, the hub model is refused with a clear message
    with pytest.raises(Exception, match="offline|HF_HUB_OFFLINE") as err:
        ft.finetune(resolve_config("llama2-7b-t4"), out=tmp_path / "run", progress=False, log=lambda *a: None)
    assert "NousResearch/Llama-2-7b-chat-hf" in str(err.value)


def _code_cells(notebook: Path) -> list[tuple[str, str]]:
    cells = json.loads(notebook.read_text())["cells"]
    return [(c["id"], "".join(c["source"])) for c in cells if c["cell_type"] == "code"]


def test_notebook_06_takes_the_gpu_path_up_to_the_fine_tune(fake_t4, monkeypatch, tmp_path):
    # notebook 06's own cells, run in order under the fake T4 and a fake google.colab (its Drive branch too),
    # up to the one before the fine-tune starts; the install cell finds the kit installed and does nothing
    monkeypatch.chdir(tmp_path)
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda path: mounted.append(path))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    cells = _code_cells(ROOT / "notebooks" / "06_qlora_finetune_llama2.ipynb")
    stop = next(i for i, (_, src) in enumerate(cells) if "finetune(config" in src)
    namespace = {"__name__": "__main__"}
    for cell_id, src in cells[:stop]:
        try:
            exec(compile(src, f"notebook 06, cell {cell_id}", "exec"), namespace)
        except Exception as e:  # name the cell: the traceback's file name says it too
            raise AssertionError(f"notebook 06 cell {cell_id} fails on a T4: {type(e).__name__}: {e}") from e
    assert namespace["GPU"] and namespace["PROFILE"] == "llama2-7b-t4"
    assert namespace["config"].profile == "llama2-7b-t4" and namespace["est"].fits(T4.memory_gib)
    assert mounted == ["/content/drive"] and str(namespace["OUT"]).startswith("/content/drive/MyDrive/")
