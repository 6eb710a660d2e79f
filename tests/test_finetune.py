"""lora_lab.finetune: one short tiny run (shared by the tests below), the traps it guards against, and the
7B path as far as it goes without weights or a GPU."""

import copy
import dataclasses
import json
import time

import pytest
import torch

from lora_lab import load_instruction_dataset, merge_lora
from lora_lab.evaluate import generate_answers
from lora_lab.finetune import (
    PROFILES,
    T4,
    FinetuneConfig,
    Hardware,
    NoGPUError,
    finetune,
    load_for_training,
    load_trained,
    plan,
    prepare_tokenizer,
    read_loss_log,
    resolve_config,
    sft_dataset,
    sft_kwargs,
)
from lora_lab.hub import HubUnavailableError
from lora_lab.lora import lora_layers
from lora_lab.models import HUB_MODEL, describe_quantization, load_tokenizer
from lora_lab.paths import EMBEDDED_MODEL
from lora_lab.tasks import parse_llama2

# The tiny profile's recipe as notebook 06 runs it on a CPU: 100 of its 300 steps (its held-out score is flat
# from about step 60, which notebook 06 asserts); the whole 300-step run is the README's measured figure.
STEPS = 100
TINY = {"max_steps": STEPS}
A100 = Hardware("cuda", "NVIDIA A100-SXM4-40GB", True, 39.4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qlora")
    result = finetune(resolve_config("tiny", **TINY), out=out, progress=False, log=lambda *a: None)
    return out, result


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    return finetune(resolve_config("tiny", quantization="none", **TINY), out=out, progress=False,
                    log=lambda *a: None)


# ----------------------------------------------------------------------------- the tiny run


def test_run_lifts_the_held_out_score(run):
    out, result = run
    m = json.loads((out / "metrics.json").read_text())
    assert m["metric"] == "held-out exact match" and m["eval_after"]["n"] == 250
    assert m["metric_before"] <= 0.20
    assert m["metric_after"] >= 0.90, m["eval_after"]["per_task"]
    assert m["steps"] == STEPS and m["num_processes"] == 1
    assert m["train_seconds"] > 0 and m["peak_memory_mb"] > 0 and m["peak_memory_kind"] == "process RSS"
    assert m["config"] == dataclasses.asdict(resolve_config("tiny", **TINY))
    assert m["plan"]["precision"] == "fp32" and m["plan"]["optim"] == "adamw_torch"
    assert m["quantization"] == {"quantized_layers": 28, "quant_type": "nf4", "double_quant": True,
                                 "blocksize": 64, "compute_dtype": "float32"}
    assert m["trainable_params"] == 233_472


def test_qlora_lands_within_5_points_of_lora(run, lora_run):
    qlora, lora = run[1].metrics, lora_run.metrics
    assert lora["quantization"]["quantized_layers"] == 0 and lora["metric_after"] >= 0.90
    assert abs(qlora["metric_after"] - lora["metric_after"]) <= 0.05


def test_loss_log_falls(run):
    out, _ = run
    log = read_loss_log(out)
    assert log[0]["step"] == 1 and log[-1]["step"] == STEPS
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]


def test_adapter_is_in_peft_format(run):
    out, _ = run
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 32
    assert sorted(config["target_modules"]) == sorted(FinetuneConfig().target_modules)
    assert (out / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("loader", ["peft", "lora_lab"])
def test_reloaded_adapter_reproduces_the_fine_tuned_answers(run, loader):
    out, result = run
    rows = load_instruction_dataset(split="eval").select(range(64))
    prompts = [parse_llama2(t)[0] for t in rows["text"]]
    want = generate_answers(result.model, result.tokenizer, prompts)
    model, tok = load_trained(out, loader=loader)
    assert generate_answers(model, tok, prompts) == want


def test_the_kits_4bit_reload_merges_as_notebook_05_teaches(run):
    out, _ = run
    model, tok = load_trained(out, loader="lora_lab")  # LoRALinear over bitsandbytes' Linear4bit
    prompts = [parse_llama2(t)[0] for t in load_instruction_dataset(split="eval")["text"][:32]]
    ids = tok(prompts[:8], add_special_tokens=False, return_tensors="pt", padding=True)
    with torch.no_grad():
        want, answers = model(**ids).logits, generate_answers(model, tok, prompts)
        exact = merge_lora(copy.deepcopy(model), dequantize=True)  # W0 + ΔW in fp32: no second rounding
        assert describe_quantization(exact)["quantized_layers"] == 0
        assert (exact(**ids).logits - want).abs().max() < 1e-4  # fp32 sums in another order
        assert generate_answers(exact, tok, prompts) == answers
        with pytest.warns(UserWarning, match="rounded away"):
            requant = merge_lora(model, unload=True)  # dequantize, add, requantize
        assert describe_quantization(requant)["quantized_layers"] == 28 and not lora_layers(requant)
        assert (requant(**ids).logits - want).abs().max() > 1e-3  # really rounded: the drift notebook 05 measures


def test_the_readmes_way_to_serve_a_run_saves_and_reloads_plain_weights(run, tmp_path):
    # before: the merged model kept config.quantization_config, so its reload died in bitsandbytes (transformers#34847)
    from transformers import AutoModelForCausalLM

    out, _ = run
    model, tok = load_trained(out, loader="lora_lab")
    ids = tok(["<s>[INST] Which number is larger: 47 or 82? [/INST]"], add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        want = model(**ids).logits
    merged = merge_lora(model, unload=True, dequantize=True)
    merged.save_pretrained(tmp_path)
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert describe_quantization(reloaded)["quantized_layers"] == 0
    with torch.no_grad():
        assert (reloaded(**ids).logits - want).abs().max() < 1e-4


def test_lora_weights_train_in_fp32(run):
    # TRL casts a 4-bit model's adapters to bf16; the kit casts them back
    _, result = run
    lora = [p for n, p in result.model.named_parameters() if "lora_" in n]
    assert len(lora) == 2 * 28 and all(p.dtype == torch.float32 for p in lora)


def test_evaluating_a_4bit_model_on_cpu_leaves_its_weights_as_trained(run):
    _, result = run  # evaluated before and after training, in eval mode
    layers = [m for m in result.model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    assert describe_quantization(result.model)["double_quant"] is True


# ----------------------------------------------------------------------------- traps, without a full run


@pytest.fixture(scope="module")
def tok():
    return prepare_tokenizer(load_tokenizer())


def test_pad_is_not_eos_and_padding_is_right(tok):
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "right"

    class EosPadded:  # the classic recipe's setting: pad = eos
        pad_token, pad_token_id, eos_token_id = "</s>", 2, 2
        unk_token, unk_token_id, padding_side = "<unk>", 0, "left"

    fixed = prepare_tokenizer(EosPadded())
    assert fixed.pad_token == "<unk>" and fixed.padding_side == "right"


def test_rows_have_one_bos_an_answer_only_loss_and_a_trained_eos(tok):
    text = load_instruction_dataset()["text"][0]
    row = sft_dataset(tok, [text], max_length=128)[0]
    ids, labels = row["input_ids"], row["labels"]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert ids == tok(text, add_special_tokens=False).input_ids  # as lora_lab.evaluate tokenizes
    answer = [t for t in labels if t != -100]
    assert tok.decode(answer, skip_special_tokens=True).strip() == parse_llama2(text)[1]
    assert labels[-1] == tok.eos_token_id  # the model learns to stop
    full = sft_dataset(tok, [text], max_length=128, completion_only_loss=False)[0]
    assert full["labels"] == ids


def test_trl_on_raw_rows_would_add_a_second_bos(tok):
    """Why finetune tokenizes itself: TRL's text path adds <s> to rows that already start with one."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = resolve_config("tiny", quantization="none")
    model, _ = load_for_training(config, plan(config))
    rows = Dataset.from_dict({"text": load_instruction_dataset()["text"][:4]})
    args = SFTConfig(**sft_kwargs(config, plan(config), "/tmp/lora-lab-trl-bos", progress=False))
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok)
    assert trainer.train_dataset[0]["input_ids"][:2] == [tok.bos_token_id, tok.bos_token_id]


def test_training_settings_on_the_loaded_model():
    config = resolve_config("tiny", gradient_checkpointing=True, quantization="none")
    model, _ = load_for_training(config, plan(config))
    assert model.config.use_cache is False
    emb = model.get_input_embeddings()
    assert emb(torch.tensor([[1, 2]])).requires_grad  # input grads on, for checkpointing a frozen base
    assert describe_quantization(model)["quantized_layers"] == 0


# ----------------------------------------------------------------------------- configs and hardware


def test_profiles_hold_the_recipe():
    tiny, big = resolve_config("tiny"), resolve_config("llama2-7b-t4")
    assert tiny == FinetuneConfig() and tiny.model is None and tiny.quantization == "nf4"
    assert (big.model, big.dataset) == (HUB_MODEL, "mlabonne/guanaco-llama2-1k")
    assert (big.lora_r, big.lora_alpha, big.lora_dropout) == (64, 16, 0.1)
    assert (big.learning_rate, big.max_grad_norm, big.warmup_ratio, big.num_train_epochs, big.max_steps) == \
        (2e-4, 0.3, 0.03, 1.0, -1)
    assert (big.per_device_train_batch_size, big.quantization, big.double_quant) == (4, "nf4", True)
    assert set(PROFILES) == {"tiny", "llama2-7b-t4", "llama2-70b-fsdp"}
    huge = resolve_config("llama2-70b-fsdp")  # the 7B recipe over two GPUs, fully sharded (notebook 08)
    assert (huge.sharding, huge.num_processes, huge.quantization, huge.lora_r) == ("fsdp", 2, "nf4", 16)


def test_every_setting_can_be_overridden_and_unknown_keys_are_refused():
    assert resolve_config("llama2-7b-t4", learning_rate=1e-4, lora_r=8).lora_r == 8
    with pytest.raises(ValueError, match="unknown config key 'lora_rank'; did you mean 'lora_r'"):
        resolve_config("tiny", lora_rank=8)
    with pytest.raises(ValueError, match="profile='llama2'"):
        resolve_config("llama2")
    with pytest.raises(ValueError, match="quantization='int8'"):
        resolve_config("tiny", quantization="int8")
    with pytest.raises(ValueError, match="lora_r='8.5' is not accepted; lora_r takes an integer >= 1"):
        resolve_config("tiny", lora_r="8.5")
    assert resolve_config("tiny", lora_r="8").lora_r == 8  # text read as a number, as a flag is (tests/test_config.py)


def test_bad_settings_stop_finetune_before_anything_loads(monkeypatch, tmp_path):
    def boom(*a, **k):
        raise AssertionError("loaded before the settings were checked")
    monkeypatch.setattr("lora_lab.finetune.load_for_training", boom)
    monkeypatch.setattr("lora_lab.finetune.load_instruction_dataset", boom)
    with pytest.raises(ValueError, match=r"'v_porj' matched no module of LlamaForCausalLM; its linear layers are named"):
        finetune(resolve_config("tiny", target_modules=["q_proj", "v_porj"]), out=tmp_path, log=lambda *a: None)
    changed = resolve_config("tiny")
    changed.learning_rate = "fast"  # set after the config was checked
    with pytest.raises(ValueError, match="learning_rate='fast' is not accepted"):
        finetune(changed, out=tmp_path, log=lambda *a: None)
    with pytest.raises(TypeError, match="pass a FinetuneConfig"):
        finetune({"lora_r": 8}, out=tmp_path, log=lambda *a: None)
    assert not any(tmp_path.iterdir())


def test_all_linear_through_trl_wraps_the_seven_projections_and_saves_them(tmp_path, small_data):
    config = resolve_config("tiny", target_modules="all-linear", dataset=str(small_data), max_steps=1,
                            per_device_train_batch_size=8, max_new_tokens=2)
    result = finetune(config, out=tmp_path, progress=False, log=lambda *a: None)
    assert result.metrics["trainable_params"] == 233_472 and result.metrics["config"]["target_modules"] == "all-linear"
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert sorted(saved) == sorted(FinetuneConfig().target_modules)
    model, _ = load_trained(tmp_path, loader="lora_lab")
    assert len(lora_layers(model)) == 28


def test_precision_and_optimizer_follow_the_hardware():
    big = resolve_config("llama2-7b-t4")
    t4 = plan(big, T4)
    assert (t4["precision"], t4["fp16"], t4["bf16"], t4["compute_dtype"]) == ("fp16", True, False, "float16")
    assert t4["optim"] == "paged_adamw_32bit" and t4["device_map"] == {"": 0}
    assert plan(big, A100)["precision"] == "bf16"
    cpu = plan(resolve_config("tiny"), Hardware())
    assert (cpu["precision"], cpu["fp16"], cpu["bf16"], cpu["optim"]) == ("fp32", False, False, "adamw_torch")
    paged = plan(resolve_config("tiny", optim="paged_adamw_32bit"), Hardware())
    assert paged["optim"] == "adamw_torch" and "needs a GPU" in paged["optim_note"]
    with pytest.raises(ValueError, match="has no bf16"):
        plan(resolve_config("llama2-7b-t4", precision="bf16"), T4)
    with pytest.raises(ValueError, match="on a CPU"):
        plan(resolve_config("tiny", precision="fp16"), Hardware())


def test_t4_trainer_arguments():
    big = resolve_config("llama2-7b-t4")
    kw = sft_kwargs(big, plan(big, T4), "out")
    assert (kw["fp16"], kw["bf16"], kw["optim"], kw["max_length"], kw["dataset_text_field"]) == \
        (True, False, "paged_adamw_32bit", 1024, "text")
    assert (kw["learning_rate"], kw["max_grad_norm"], kw["lr_scheduler_type"]) == (2e-4, 0.3, "constant_with_warmup")
    assert kw.get("warmup_steps", kw.get("warmup_ratio")) == 0.03
    assert kw.get("activation_checkpointing", kw.get("gradient_checkpointing")) is True


def test_7b_without_a_gpu_says_how_to_switch_to_tiny():
    with pytest.raises(NoGPUError, match="--profile tiny") as err:
        finetune(resolve_config("llama2-7b-t4"), hardware=Hardware(), log=lambda *a: None)
    assert "T4 GPU" in str(err.value)


def test_7b_offline_fails_at_once_with_a_clear_message():
    t0 = time.time()
    with pytest.raises(HubUnavailableError) as err:
        finetune(resolve_config("llama2-7b-t4"), hardware=T4, log=lambda *a: None)
    assert time.time() - t0 < 5
    assert str(err.value) == (
        "lora-lab: cannot load model 'NousResearch/Llama-2-7b-chat-hf' from the Hugging Face hub: the hub is "
        "switched off here (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set), and it is not in the local cache. "
        "Offline, use the embedded default: `lora-lab finetune --profile tiny` (the embedded model and data). "
        "Or download it where there is internet (e.g. Colab) and pass the local folder instead of the hub id.")


def test_the_7b_recipe_runs_on_the_tiny_model(tmp_path):
    """The 7B profile's settings (dropout, checkpointing, constant schedule, length grouping) reach the trainer."""
    config = resolve_config("llama2-7b-t4", model=str(EMBEDDED_MODEL), dataset=None, max_steps=2, max_length=128,
                            max_new_tokens=4)
    result = finetune(config, out=tmp_path, progress=False, log=lambda *a: None)
    args = result.trainer.args
    assert args.optim == "adamw_torch" and args.lr_scheduler_type == "constant_with_warmup"
    assert args.max_grad_norm == 0.3 and args.learning_rate == 2e-4
    assert result.model.base_model.model.is_gradient_checkpointing
    assert result.metrics["steps"] == 2 and result.metrics["trainable_params"] == 4 * 233_472  # r=64, not 16
