"""The measurements behind notebook 07 (beyond plain LoRA), at full size, on the embedded tiny Llama:

1. QLoRA vs QA-LoRA with the same training budget: held-out exact match of each model unmerged and
   merged (QLoRA into NF4 again, QLoRA into fp32, QA-LoRA into its INT4 zero points), the largest
   logit change each merge causes, and how many greedy replies it changes;
2. LoftQ: ‖W0 − Q − (α/r)·B·A‖ over all 28 projection weights, per iteration, against QLoRA's
   ‖W0 − Q‖, and whether PEFT's own loftq_init gives the same bits;
3. DoRA and PiSSA against PEFT (use_dora=True, init_lora_weights="pissa"): largest differences in
   outputs, gradients, weights after AdamW steps, merge/unmerge, and adapters saved by one, loaded by the other.

    python benchmarks/beyond_lora_table.py [--steps 300] [--eval-rows 250] [--seeds 0 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings

import torch

import lora_lab
from lora_lab import LoraConfig, merge_lora, unmerge_lora
from lora_lab.evaluate import evaluate, generate_answers
from lora_lab.lora import lora_layers
from lora_lab.qalora import Int4Linear, get_qalora_model
from lora_lab.qlora import get_qlora_model, merge_and_dequantize
from lora_lab.tasks import format_llama2, parse_llama2
from lora_lab.train import TrainConfig, train

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_name(name: str) -> str:
    """lora_lab's parameter name -> PEFT's (adapter "default")."""
    for part in ("lora_A", "lora_B"):
        name = name.replace(f".{part}.weight", f".{part}.default.weight")
    name = name.replace(".lora_magnitude_vector", ".lora_magnitude_vector.default.weight")
    return "base_model.model." + name


# ----------------------------------------------------------------------------- 1. merges


def merge_table(args, tok, texts, held_out) -> None:
    rows = held_out.select(range(min(args.eval_rows, len(held_out))))
    prompts = [parse_llama2(t)[0] for t in rows["text"]]
    batch = tok([format_llama2(p) for p in prompts[:64]], add_special_tokens=False, return_tensors="pt", padding=True)
    results: dict[str, list] = {}

    @torch.no_grad()
    def logits(model):
        return model(**batch).logits  # (64, T, vocab)

    def record(label, model, reference=None):
        score = evaluate(model, tok, rows)["accuracy"]
        replies = generate_answers(model, tok, prompts)
        drift = changed = None
        if reference is not None:
            drift = (logits(model) - logits(reference[0])).abs().max().item()
            changed = sum(a != b for a, b in zip(replies, reference[1]))
        results.setdefault(label, []).append((score, drift, changed))
        return replies

    config = LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules=TARGETS)
    for seed in args.seeds:
        budget = TrainConfig(steps=args.steps, lr=args.lr, seed=seed)
        torch.manual_seed(seed)
        qlora = get_qlora_model(lora_lab.load_base_model(), config)
        t0 = time.time()
        train(qlora, tok, texts, budget)
        print(f"seed {seed}: QLoRA trained in {time.time() - t0:.0f} s", flush=True)
        ref = (qlora, record("QLoRA (NF4 base), unmerged", qlora))
        record("QLoRA merged into NF4 (requantized)", merge_lora(copy.deepcopy(qlora)), ref)
        record("QLoRA merged into fp32 (dequantized)", merge_and_dequantize(copy.deepcopy(qlora)), ref)

        for label, pool_scale in (("QA-LoRA", None), ("QA-LoRA, plain group mean", 1)):
            torch.manual_seed(seed)
            qalora = get_qalora_model(lora_lab.load_base_model(), config, args.group_size)
            if pool_scale is not None:  # the reference code feeds A the group mean x̄, PEFT feeds it G · x̄
                for _, layer in lora_layers(qalora):
                    layer.pool_scale = pool_scale
            t0 = time.time()
            train(qalora, tok, texts, budget)
            print(f"seed {seed}: {label} trained in {time.time() - t0:.0f} s", flush=True)
            ref = (qalora, record(f"{label} (INT4 base), unmerged", qalora))
            merged = merge_lora(copy.deepcopy(qalora), unload=True)
            assert not lora_layers(merged) and sum(isinstance(m, Int4Linear) for m in merged.modules()) == 28
            record(f"{label} merged into INT4 (zero points)", merged, ref)

    n = len(rows)
    print(f"\n## Merging: {args.steps} steps of {TrainConfig.batch_size} rows, lr {args.lr}, r={args.r}, "
          f"lora_alpha={2 * args.r}, all seven projections; QA-LoRA group size {args.group_size} (fp16 scales and "
          f"zero points, {4 + 32 / args.group_size:g} bits per weight), QLoRA NF4 with double quantization "
          f"(4.127 bits); {n} held-out rows, logit drift on 64 of them; seeds {args.seeds}\n")
    print("| model | held-out exact match | largest logit change vs unmerged | replies changed |")
    print("|---|---|---|---|")
    for label, runs in results.items():
        scores = [f"{s:.1%}" for s, _, _ in runs]
        mean = statistics.mean(s for s, _, _ in runs)
        score = f"{mean:.1%}" + (f" ({', '.join(scores)})" if len(runs) > 1 else "")
        drift = "—" if runs[0][1] is None else ", ".join(f"{d:.2g}" for _, d, _ in runs)
        changed = "—" if runs[0][2] is None else ", ".join(f"{c} of {n}" for _, _, c in runs)
        print(f"| {label} | {score} | {drift} | {changed} |")


# ----------------------------------------------------------------------------- 2. LoftQ


def loftq_table(args) -> None:
    from lora_lab.loftq import loftq_init, peft_loftq_init

    base = lora_lab.load_base_model()
    weights = [m.weight.detach() for name, m in base.named_modules() if name.rsplit(".", 1)[-1] in TARGETS]
    total = sum(float(w.detach().norm()) ** 2 for w in weights) ** 0.5
    print(f"\n## LoftQ on the tiny Llama's {len(weights)} projection weights: sqrt(Σ‖W0 − Q − (α/r)·B·A‖²) / "
          f"sqrt(Σ‖W0‖²); iteration 0 is QLoRA's start (Q = NF4(W0), B = 0)\n")
    print("| r | " + " | ".join(f"iteration {t}" for t in range(args.loftq_iter + 1)) + " | PEFT's loftq_init, same bits |")
    print("|---|" + "---|" * (args.loftq_iter + 2))
    for r in (4, 16):
        per_iter = [0.0] * (args.loftq_iter + 1)
        same = 0
        for w in weights:
            res = loftq_init(w, r, args.loftq_iter, scaling=2.0)  # lora_alpha = 2r
            per_iter = [a + e**2 for a, e in zip(per_iter, res.errors)]
            ours1 = loftq_init(w, r, 1)  # scaling 1: PEFT's convention
            q, a, b = peft_loftq_init(w, r, 1)
            same += bool(torch.equal(q, ours1.quantized.dequantize()) and torch.equal(a, ours1.lora_A)
                         and torch.equal(b, ours1.lora_B))
        cells = [f"{e**0.5 / total:.4f}" for e in per_iter]
        print(f"| {r} | " + " | ".join(cells) + f" | {same} of {len(weights)} |")
    w = weights[0]
    q, a, b = peft_loftq_init(w, 16, 1)
    ours = loftq_init(w, 16, 1, scaling=2.0)
    print(f"\nWith lora_alpha = 2r (scaling 2), layer 0 q_proj: QLoRA start {ours.errors[0]:.4f}, LoftQ here "
          f"{ours.errors[1]:.4f}, PEFT's A and B under that scaling {float((w - q - 2 * b @ a).norm()):.4f} "
          "(its loftq_init assumes a scaling of 1)")


# ----------------------------------------------------------------------------- 3. DoRA and PiSSA parity


def parity_table(args) -> None:
    import peft

    from lora_lab.dora import get_dora_model, load_dora_adapter, save_dora_adapter
    from lora_lab.pissa import adapter_tensors, get_pissa_model, save_pissa_as_lora

    base = lora_lab.load_base_model()
    ids = torch.randint(3, base.config.vocab_size, (4, 24), generator=torch.Generator().manual_seed(0))
    rows = []

    def steps(ours, theirs, n=5):
        their_params = dict(theirs.named_parameters())
        pairs = [(p, their_params[peft_name(n)]) for n, p in ours.named_parameters() if p.requires_grad]
        opts = [torch.optim.AdamW([p for p, _ in pairs], lr=1e-2), torch.optim.AdamW([q for _, q in pairs], lr=1e-2)]
        ours.train(), theirs.train()
        first = None
        for _ in range(n):
            for model, opt in zip((ours, theirs), opts):
                opt.zero_grad()
                model(ids, labels=ids).loss.backward()
            if first is None:
                first = max((p.grad - q.grad).abs().max().item() for p, q in pairs)
            for opt in opts:
                opt.step()
        ours.eval(), theirs.eval()
        return first, max((p - q).abs().max().item() for p, q in pairs)

    @torch.no_grad()
    def out(model):
        return model(ids).logits

    torch.manual_seed(0)
    dora_config = dict(r=8, lora_alpha=16, target_modules=TARGETS)
    ours = get_dora_model(copy.deepcopy(base), LoraConfig(**dora_config, init_lora_weights=False))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**dora_config, use_dora=True,
                                                                      init_lora_weights=False))
    their_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if p.requires_grad:
                their_params[peft_name(n)].copy_(p)
    rows.append(("DoRA", "outputs at init (B ≠ 0)", (out(ours) - out(theirs)).abs().max().item()))
    grad, after = steps(ours, theirs)
    rows += [("DoRA", "gradients (A, B, magnitude)", grad), ("DoRA", "weights after 5 AdamW steps", after)]
    before = out(ours)
    rows.append(("DoRA", "outputs after 5 steps", (before - out(theirs)).abs().max().item()))
    merge_lora(ours), theirs.merge_adapter()
    rows.append(("DoRA", "merged vs unmerged (lora_lab)", (out(ours) - before).abs().max().item()))
    rows.append(("DoRA", "merged: lora_lab vs PEFT", (out(ours) - out(theirs)).abs().max().item()))
    unmerge_lora(ours), theirs.unmerge_adapter()
    rows.append(("DoRA", "unmerged vs before merge (lora_lab)", (out(ours) - before).abs().max().item()))
    with tempfile.TemporaryDirectory() as tmp:
        save_dora_adapter(ours, f"{tmp}/ours"), theirs.save_pretrained(f"{tmp}/theirs")
        peft_loads = peft.PeftModel.from_pretrained(copy.deepcopy(base), f"{tmp}/ours")
        ours_loads = load_dora_adapter(copy.deepcopy(base), f"{tmp}/theirs")
        rows.append(("DoRA", "PEFT loads lora_lab's adapter", (out(peft_loads) - before).abs().max().item()))
        rows.append(("DoRA", "lora_lab loads PEFT's adapter", (out(ours_loads) - out(theirs)).abs().max().item()))

    pissa_config = dict(r=8, lora_alpha=16, target_modules=TARGETS)
    ours = get_pissa_model(copy.deepcopy(base), LoraConfig(**pissa_config))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**pissa_config, init_lora_weights="pissa"))
    their_params = dict(theirs.named_parameters())
    initial = adapter_tensors(ours)
    rows.append(("PiSSA", "A and B after init", max((p - their_params[peft_name(n)]).abs().max().item()
                                                    for n, p in ours.named_parameters() if p.requires_grad)))
    rows.append(("PiSSA", "residual base weights after init",
                 max((layer.base_layer.weight - theirs.base_model.model.get_submodule(name).base_layer.weight)
                     .abs().max().item() for name, layer in lora_layers(ours))))
    rows.append(("PiSSA", "outputs at init vs the original model", (out(ours) - out(base)).abs().max().item()))
    with tempfile.TemporaryDirectory() as tmp:
        theirs.peft_config["default"].init_lora_weights = True  # PEFT's recipe for the initial adapter
        theirs.save_pretrained(f"{tmp}/init")
        theirs.peft_config["default"].init_lora_weights = "pissa"
        grad, after = steps(ours, theirs)
        rows += [("PiSSA", "gradients", grad), ("PiSSA", "weights after 5 AdamW steps", after)]
        trained = out(ours)
        theirs.save_pretrained(f"{tmp}/theirs", path_initial_model_for_weight_conversion=f"{tmp}/init")
        save_pissa_as_lora(ours, initial, f"{tmp}/ours")
        mine, peft_w = (lora_lab.adapters.read_adapter_weights(f"{tmp}/{k}") for k in ("ours", "theirs"))
        rows.append(("PiSSA", "converted rank-2r adapter: lora_lab vs PEFT tensors",
                     max((mine[k] - peft_w[k]).abs().max().item() for k in mine)))
        on_w0 = peft.PeftModel.from_pretrained(copy.deepcopy(base), f"{tmp}/ours")
        rows.append(("PiSSA", "converted adapter on W0 (PEFT loads lora_lab's) vs trained model",
                     (out(on_w0) - trained).abs().max().item()))
        rows.append(("PiSSA", "converted adapter on W0 (lora_lab loads PEFT's) vs trained model",
                     (out(lora_lab.load_adapter(copy.deepcopy(base), f"{tmp}/theirs")) - trained).abs().max().item()))
        naive = lora_lab.inject_lora(copy.deepcopy(base), LoraConfig(**pissa_config, init_lora_weights=False))
        with torch.no_grad():
            for (_, mine_layer), (_, trained_layer) in zip(lora_layers(naive), lora_layers(ours)):
                mine_layer.lora_A.weight.copy_(trained_layer.lora_A.weight)
                mine_layer.lora_B.weight.copy_(trained_layer.lora_B.weight)
        rows.append(("PiSSA", "unconverted A, B on W0 (the mistake) vs trained model",
                     (out(naive) - trained).abs().max().item()))

    print(f"\n## DoRA and PiSSA against PEFT {peft.__version__}: largest absolute difference, tiny Llama, r=8, "
          "lora_alpha=16, all seven projections, 4 × 24 random tokens (logits span about ±20)\n")
    print("| variant | compared | largest difference |")
    print("|---|---|---|")
    for variant, what, value in rows:
        print(f"| {variant} | {what} | {value:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--r", type=int, default=4, help="LoRA rank of QLoRA and QA-LoRA (lora_alpha = 2r)")
    parser.add_argument("--group-size", type=int, default=32, help="QA-LoRA's group size")
    parser.add_argument("--eval-rows", type=int, default=250, help="held-out rows to score (of 250)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--loftq-iter", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["merge", "loftq", "parity"], nargs="+", default=["merge", "loftq", "parity"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    from transformers.utils import logging

    logging.disable_progress_bar()
    t0 = time.time()
    if "merge" in args.only:
        tok = lora_lab.load_tokenizer()
        texts = list(lora_lab.load_instruction_dataset()["text"])
        merge_table(args, tok, texts, lora_lab.load_instruction_dataset(split="eval"))
    if "loftq" in args.only:
        loftq_table(args)
    if "parity" in args.only:
        parity_table(args)
    print(f"\n({time.time() - t0:.0f} s, {args.threads} thread(s), torch {torch.__version__})")


if __name__ == "__main__":
    main()
