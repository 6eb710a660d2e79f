"""lora_lab.memory: exact parameter counts on the meta device, the 7B T4 recipe's budget, and the estimate
checked part by part against what the tiny model really holds."""

import math

import pytest
import torch

from lora_lab.finetune import T4, estimate_for, load_for_training, plan, resolve_config, sft_dataset
from lora_lab.memory import (
    GIB,
    LLAMA_PROJECTIONS,
    estimate_memory,
    llama2_7b_config,
    measure_activations,
    measure_memory,
    meta_model,
    peak_memory_mb,
)


@pytest.fixture(scope="module")
def llama7b():
    return meta_model(llama2_7b_config())


def test_llama2_7b_counts_match_peft(llama7b):
    assert sum(p.numel() for p in llama7b.parameters()) == 6_738_415_616
    assert all(p.device.type == "meta" for p in llama7b.parameters())  # nothing allocated
    qv = estimate_memory(llama7b, lora={"r": 8, "target_modules": ["q_proj", "v_proj"]})
    assert qv.lora_params == 4_194_304  # PEFT's "trainable params: 4,194,304"
    assert estimate_memory(llama7b, lora={"r": 64, "target_modules": LLAMA_PROJECTIONS}).lora_params == 159_907_840


def test_bits_per_weight_follow_the_qlora_paper(llama7b):
    for double_quant, bits in ((True, 4.127), (False, 4.5)):
        est = estimate_memory(llama7b, double_quant=double_quant)
        per_weight = (est.quantized_params / 2 + est.quant_constants) * 8 / est.quantized_params
        assert per_weight == pytest.approx(bits, abs=0.001)
    assert estimate_memory(llama7b, quant="fp4").total == estimate_memory(llama7b, quant="nf4").total


def test_the_7b_t4_recipe_fits_a_t4_and_16_bit_lora_does_not():
    config = resolve_config("llama2-7b-t4")
    est = estimate_for(config, plan(config, T4))
    assert est.fits(14.75) and est.total < 10 * GIB
    assert est.weights / GIB == pytest.approx(3.50, abs=0.01)  # 4-bit linears + fp16 embeddings, head, norms
    assert est.lora_params == 159_907_840 and est.optimizer_state == 8 * est.lora_params
    full = estimate_for(resolve_config("llama2-7b-t4", quantization="none"), plan(config, T4))
    assert full.weights / GIB == pytest.approx(6_738_415_616 * 2 / GIB) and not full.fits(14.75)
    no_ckpt = estimate_for(resolve_config("llama2-7b-t4", gradient_checkpointing=False), plan(config, T4))
    assert no_ckpt.activations > 5 * est.activations


def test_estimate_rejects_what_it_cannot_count(llama7b):
    with pytest.raises(ValueError, match="quant="):
        estimate_memory(llama7b, quant="int3")
    with pytest.raises(ValueError, match="matches no linear layer"):
        estimate_memory(llama7b, lora={"r": 8, "target_modules": ["c_attn"]})  # GPT-2's name, not Llama's


@pytest.fixture(scope="module")
def tiny_step():
    """One optimizer step of PEFT LoRA over the 4-bit tiny Llama, with its activations measured."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = resolve_config("tiny")
    run_plan = plan(config)
    model, tok = load_for_training(config, run_plan)
    model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             target_modules=config.target_modules, task_type="CAUSAL_LM"))
    model.train()
    from lora_lab import load_instruction_dataset
    rows = sft_dataset(tok, list(load_instruction_dataset()["text"][:32]), config.max_length)
    width = max(len(r) for r in rows["input_ids"])
    ids = torch.full((32, width), tok.pad_token_id)
    for i, r in enumerate(rows["input_ids"]):
        ids[i, :len(r)] = torch.tensor(r)
    loss = {}
    saved = measure_activations(lambda: loss.setdefault("v", model(input_ids=ids, labels=ids).loss), model)
    loss["v"].backward()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    opt.step()
    est = estimate_for(config, run_plan, seq_len=width, model_config=model.config)
    return est, measure_memory(model, opt), saved, width


def test_tiny_estimate_matches_what_the_model_holds(tiny_step):
    est, held, _, _ = tiny_step
    assert held["lora_weights"] == est.lora_weights == 4 * 233_472
    assert held["gradients"] == est.gradients
    assert held["optimizer_state"] == est.optimizer_state
    assert held["weights"] == pytest.approx(est.weights, rel=0.01)
    assert held["quant_constants"] == pytest.approx(est.quant_constants, rel=0.1)


def test_tiny_activation_estimate_is_within_10_percent(tiny_step):
    est, _, saved, width = tiny_step
    # the plain forward holds the full fp32 log-probabilities, which TRL's fused loss never builds
    logits = 32 * width * 1536 * 4
    assert math.isclose(saved, est.activations + logits, rel_tol=0.10), (saved, est.activations + logits)


def test_peak_memory_is_reported():
    assert peak_memory_mb("cpu") > 50  # resident set of a Python process with torch loaded


def test_tiny_activation_estimate_matches_trl_fused_loss(tmp_path):
    """TRL 1.16's SFTTrainer never builds the full logits: the estimate's default (fused_loss=True)."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from lora_lab import load_instruction_dataset
    from lora_lab.finetune import sft_kwargs

    torch.manual_seed(0)
    config = resolve_config("tiny")
    run_plan = plan(config)
    model, tok = load_for_training(config, run_plan)
    rows = sft_dataset(tok, list(load_instruction_dataset()["text"][:32]), config.max_length)
    trainer = SFTTrainer(model=model, args=SFTConfig(**sft_kwargs(config, run_plan, str(tmp_path), progress=False)),
                         train_dataset=rows, processing_class=tok,
                         peft_config=LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                target_modules=config.target_modules, task_type="CAUSAL_LM"))
    batch = trainer.data_collator([rows[i] for i in range(32)])
    trainer.model.train()
    saved = measure_activations(lambda: trainer.compute_loss(trainer.model, dict(batch)), trainer.model)
    est = estimate_for(config, run_plan, seq_len=batch["input_ids"].shape[1], model_config=model.config)
    assert math.isclose(saved, est.activations, rel_tol=0.10), (saved, est.activations)
