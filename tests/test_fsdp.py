"""FSDP over a 4-bit base on the CPU: two gloo processes against one, part by part and loss by loss.

One start of two processes runs two trainings in turn (starting processes costs most of the time): the
kit's NF4Linear made shardable by lora_lab.fsdp, and bitsandbytes' Linear4bit with PEFT's LoRA, stored
as float32 (bnb_4bit_quant_storage), in the units accelerate's FSDP plugin makes. Each is compared with
the same steps in this process.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from lora_lab import fsdp
from lora_lab import fsdp_train as ft
from lora_lab.memory import LLAMA_PROJECTIONS, estimate_memory
from lora_lab.qlora import NF4Linear

OURS = ft.ShardSettings()
BNB = ft.ShardSettings(base="bitsandbytes", quant_storage="float32")
SHARDED_PARTS = ("weights", "lora_weights", "gradients", "optimizer_state")


@pytest.fixture(scope="module")
def runs():
    torch.set_num_threads(1)
    ours, bnb = ft.train_sharded(2, [OURS, BNB])
    return {"ours": (ft.train_one_process(OURS), ours), "bnb": (ft.train_one_process(BNB), bnb)}


@pytest.mark.parametrize("base", ["ours", "bnb"])
def test_two_processes_train_as_one_within_float_rounding(runs, base):
    one, two = runs[base]
    for rank in two:
        assert rank.world_size == 2 and len(rank.losses) == OURS.steps
        assert rank.losses == pytest.approx(one.losses, rel=1e-5, abs=0)  # the same mean gradient, summed in another order
    assert two[0].losses == two[1].losses  # every process reports the same all-reduced loss


@pytest.mark.parametrize("base", ["ours", "bnb"])
def test_each_process_holds_half_of_every_sharded_part(runs, base):
    one, two = runs[base]
    for part in SHARDED_PARTS:  # the tiny model's rows split evenly in two: exactly half, on each process
        assert one.bytes[part] > 0 and [r.bytes[part] for r in two] == [one.bytes[part] // 2] * 2, part
    constants = [r.bytes["quant_constants"] for r in two]
    if base == "ours":  # block scales made parameters: shared out (their short first dimensions split unevenly)
        assert sum(constants) == one.bytes["quant_constants"] and max(constants) < 0.51 * one.bytes["quant_constants"]
        # as the layers come, the scales are buffers: FSDP leaves them whole on every process
        assert [r.bytes_as_loaded["quant_constants"] for r in two] == [one.bytes["quant_constants"]] * 2
        assert [r.bytes_as_loaded["weights"] for r in two] == [one.bytes["weights"] // 2] * 2
    else:  # bitsandbytes keeps them in a QuantState beside the weight: every process holds all of them
        assert constants == [one.bytes["quant_constants"]] * 2


def test_the_fsdp_estimate_is_what_each_process_holds(runs):
    from transformers import AutoConfig

    from lora_lab.paths import EMBEDDED_MODEL

    _, two = runs["bnb"]  # the production path's layers, which the estimate describes
    lora = {"r": BNB.lora_r, "target_modules": LLAMA_PROJECTIONS}
    kw = dict(lora=lora, compute_dtype="float32", optimizer="adamw_torch", batch_size=BNB.batch_size,
              seq_len=BNB.max_length)
    config = AutoConfig.from_pretrained(EMBEDDED_MODEL)
    est = estimate_memory(config, num_processes=2, sharding="fsdp", **kw)
    single = estimate_memory(config, **kw)
    for part in SHARDED_PARTS:
        assert getattr(est, part) == two[0].bytes[part] == getattr(single, part) // 2, part
    assert est.quant_constants == single.quant_constants == two[0].bytes["quant_constants"]  # not divided
    ddp = estimate_memory(config, num_processes=2, sharding="ddp", **kw)
    assert ddp.weights == single.weights and ddp.parallel_buffers == single.gradients
    # the estimate's gathered part covers the largest unit FSDP gathered in the run
    _, ours = runs["ours"]
    assert est.parallel_buffers >= max(b for _, _, b in ours[0].gathers)


def test_fsdp_gathers_one_layer_at_a_time(runs):
    _, two = runs["ours"]
    model, _, _ = ft.build(OURS)
    fsdp.shardable(model, OURS.quant_storage)
    layer = sum(p.numel() * p.element_size() for p in fsdp.decoder_layers(model)[0].parameters())
    head = sum(p.numel() * p.element_size() for m in (model.model.norm, model.lm_head) for p in m.parameters())
    events = two[0].gathers
    phases = [(phase, i) for phase, i, _ in events]
    assert phases[:4] == [("forward", i) for i in range(4)] and ("backward", 0) == phases[-1]
    assert all(b == layer for phase, _, b in events if phase != "loss")  # each layer alone, forward and backward
    assert [b for phase, _, b in events if phase == "loss"] == [head]  # after the forward: the norm and output head


def test_shardable_keeps_the_forward_and_stores_whole_blocks():
    torch.manual_seed(0)
    model = nn.Sequential(NF4Linear.from_linear(nn.Linear(128, 64)), NF4Linear.from_linear(nn.Linear(64, 32)))
    x = torch.randn(3, 128)
    before = model(x)
    for storage, width in (("uint8", 32), ("bfloat16", 16), ("float32", 8)):
        layer = fsdp.shardable(NF4Linear.from_linear(nn.Linear(128, 64)), storage)
        assert layer.weight.shape == (128, width) and layer.weight.dtype == fsdp.storage_dtype(storage)
    fsdp.shardable(model, "float32")
    assert torch.equal(model(x), before)  # the same bytes, read back as uint8
    first = model[0]
    assert first.weight.shape == (fsdp.block_count(first), 8) and isinstance(first.absmax, nn.Parameter)
    assert first.offset.shape == (1,) and not any(p.requires_grad for p in model.parameters())
    assert not [n for n, _ in model.named_buffers()]  # nothing left for FSDP to copy whole


def test_bad_sharding_input_is_refused_before_anything_starts():
    with pytest.raises(ValueError, match="FSDP on one process shards nothing"):
        ft.train_sharded(1)
    with pytest.raises(ValueError, match=r"num_processes=5 does not divide the 576 quantization blocks of "
                                         r"model.layers.0.self_attn.q_proj .*process counts that divide every 4-bit "
                                         r"layer: 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, … \(13 counts, up to 192\)"):
        ft.train_sharded(5, ft.ShardSettings(micro_batches=5))
    with pytest.raises(ValueError, match="micro_batches=2 but world_size=3"):
        ft.train_sharded(3, ft.ShardSettings())
    with pytest.raises(ValueError, match=r"quant_storage='int8' is not accepted; choose one of \('uint8'"):
        fsdp.storage_dtype("int8")
    with pytest.raises(ValueError, match="10×10 weights are not whole blocks of 64"):
        fsdp.shardable(nn.Sequential(NF4Linear.from_linear(nn.Linear(10, 10))))
    with pytest.raises(ValueError, match="has no lora_lab NF4Linear layer"):
        fsdp.shardable(nn.Linear(64, 64))
    with pytest.raises(ValueError, match="num_processes=0 is not accepted"):
        fsdp.check_process_count(0, {"a": 4})


# ----------------------------------------------------------------------------- the production path's plan


def test_the_shipped_accelerate_config_asks_for_fsdp2_by_decoder_layer(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    assert fsdp.ACCELERATE_CONFIG.is_file()
    args = launch_command_parser().parse_args(["--config_file", str(fsdp.ACCELERATE_CONFIG), "--num_processes", "4",
                                               "-m", "lora_lab", "finetune"])
    args, *_ = _validate_launch_command(args)
    assert args.use_fsdp and args.num_processes == 4  # the flag wins over the file's 2
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)


def test_the_config_file_ships_in_the_package():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["lora_lab"]
    assert any(fsdp.ACCELERATE_CONFIG.match(p) for p in patterns)


def test_plan_for_fsdp_stores_the_codes_in_the_compute_dtype():
    from lora_lab.config import ConfigError, resolve_config
    from lora_lab.models import bnb_4bit_config
    from lora_lab.plan import GPU_24GB, T4, Hardware, plan

    big = resolve_config("llama2-70b-fsdp")
    run_plan = plan(big, GPU_24GB)
    assert (run_plan["sharding"], run_plan["num_processes"], run_plan["quant_storage"]) == ("fsdp", 2, "bfloat16")
    assert plan(resolve_config("llama2-7b-t4", sharding="fsdp", num_processes=2), T4)["quant_storage"] == "float16"
    qc = bnb_4bit_config("nf4", True, torch.bfloat16, quant_storage=run_plan["quant_storage"])
    assert qc.bnb_4bit_quant_storage == torch.bfloat16
    assert "sharding" not in plan(resolve_config("tiny"), Hardware())  # one process: the plan as it always was
    with pytest.raises(ConfigError, match="FSDP's mixed precision casts every floating-point parameter"):
        plan(resolve_config("llama2-70b-fsdp", quant_storage="float32"), GPU_24GB)
    # a real run is checked against its launch
    assert plan(resolve_config("tiny"), Hardware(), launched=(2, False))["sharding"] == "ddp"
    assert plan(big, GPU_24GB, launched=(2, True))["sharding"] == "fsdp"
    with pytest.raises(ConfigError, match="accelerate applies its FSDP plugin only to GPU"):
        plan(resolve_config("tiny"), Hardware(), launched=(2, True))
    with pytest.raises(ConfigError, match="launched without accelerate's FSDP"):
        plan(big, GPU_24GB, launched=(2, False))
    with pytest.raises(ConfigError, match="num_processes=2, but this run was launched with 4"):
        plan(big, GPU_24GB, launched=(4, True))
    with pytest.raises(ConfigError, match="FSDP on one process shards nothing"):
        plan(resolve_config("tiny"), GPU_24GB, launched=(1, True))


def test_the_70b_estimate_shows_one_gpu_and_ddp_fail_where_fsdp_fits(capsys):
    from lora_lab.cli import main

    assert main(["estimate", "--profile", "llama2-70b-fsdp"]) == 0
    out = capsys.readouterr().out
    assert "planned for a 24 GiB GPU" in out and "(per device: 2 processes, fully sharded)" in out
    lines = {line.split("  ")[1].strip(): line for line in out.splitlines() if line.startswith("  ")}
    assert "does NOT fit" in lines["one device alone"] and "does NOT fit" in lines["DDP over 2 devices"]
    assert "fits in 24.00 GiB" in lines["FSDP over 2 devices"]
    assert main(["estimate", "--profile", "llama2-70b-fsdp", "--num-processes", "3"]) == 2
    assert "num_processes=3 does not divide the 1,048,576 quantization blocks" in capsys.readouterr().err
    assert main(["estimate", "--sharding", "fsdp", "--num-processes", "1"]) == 2
    assert "FSDP on one process shards nothing" in capsys.readouterr().err
    assert main(["fsdp-config"]) == 0 and capsys.readouterr().out.strip() == str(fsdp.ACCELERATE_CONFIG)


def test_an_fsdp_launch_on_the_cpu_stops_before_loading(tmp_path, monkeypatch, capsys):
    # accelerate would quietly train plain data parallel here (its FSDP needs GPUs): refused, nothing written
    from lora_lab.cli import main

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["finetune", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "accelerate applies its FSDP plugin only to GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
