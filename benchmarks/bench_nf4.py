"""Time lora_lab's NF4 quantize/dequantize against bitsandbytes' CPU kernels, and measure the tiny
Llama's weight memory in fp32, bf16, NF4 and NF4 with double quantization.

    python benchmarks/bench_nf4.py [--quick] [--threads N]
"""

import argparse
import statistics
import time
import warnings

import torch

from lora_lab.nf4 import dequantize_nf4, quantize_nf4


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def race(ours, theirs, repeats: int) -> tuple[float, float]:
    """Median seconds of two functions run alternately, after one warm-up run each."""
    ours(), theirs()
    times = {"ours": [], "theirs": []}
    for _ in range(repeats):
        times["ours"].append(timed(ours))
        times["theirs"].append(timed(theirs))
    return statistics.median(times["ours"]), statistics.median(times["theirs"])


def speed_table(size: int, repeats: int) -> None:
    import bitsandbytes.functional as bnbF

    torch.manual_seed(0)
    w = torch.randn(size, size)  # (size, size) fp32
    print(f"\n{size}x{size} fp32 matrix, blocksize 64, {torch.get_num_threads()} thread(s), "
          f"median of {repeats} alternating runs")
    print(f"{'operation':<42} {'lora_lab ms':>12} {'bnb ms':>9} {'ours/bnb':>9}")
    for dq in (False, True):
        label = "nf4 + double quant" if dq else "nf4"
        q = quantize_nf4(w, double_quant=dq)
        packed, state = q.to_bitsandbytes()
        rows = [
            (f"quantize {label}", lambda: quantize_nf4(w, double_quant=dq),
             lambda: bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=dq)),
            (f"dequantize {label} -> fp32", lambda: dequantize_nf4(q),
             lambda: bnbF.dequantize_4bit(packed, state)),
        ]
        if dq:
            q16 = quantize_nf4(w.bfloat16())
            p16, s16 = q16.to_bitsandbytes()
            rows.append((f"dequantize {label} -> bf16", lambda: dequantize_nf4(q16),
                         lambda: bnbF.dequantize_4bit(p16, s16)))
        for name, ours, theirs in rows:
            t_ours, t_bnb = race(ours, theirs, repeats)
            print(f"{name:<42} {t_ours * 1e3:>12.1f} {t_bnb * 1e3:>9.1f} {t_ours / t_bnb:>8.2f}x")


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_table() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=1536, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    # what QLoRA quantizes: every linear layer but lm_head; embeddings, norms and lm_head stay 16-bit
    linears = {name: m.weight for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "lm_head" not in name}
    linear_ids = {id(w) for w in linears.values()}
    rest = [p for p in model.parameters() if id(p) not in linear_ids]
    n_linear, n_rest = sum(w.numel() for w in linears.values()), sum(p.numel() for p in rest)
    rest_bf16 = tensor_bytes([p.bfloat16() for p in rest])
    rows = [
        ("fp32", tensor_bytes(linears.values()), tensor_bytes(rest)),
        ("bf16", tensor_bytes([w.bfloat16() for w in linears.values()]), rest_bf16),
        ("NF4", sum(quantize_nf4(w.detach(), double_quant=False).nbytes for w in linears.values()), rest_bf16),
        ("NF4 + double quant", sum(quantize_nf4(w.detach()).nbytes for w in linears.values()), rest_bf16),
    ]
    print(f"\ntiny Llama weights (hidden 192, intermediate 512, 4 layers, vocab 1536): "
          f"{n_linear:,} in quantizable linear layers, {n_rest:,} elsewhere (embeddings, norms, lm_head; "
          f"bf16 in the 4-bit rows)")
    print(f"{'storage':<20} {'linear KiB':>11} {'bits/param':>11} {'rest KiB':>9} {'total KiB':>10} {'vs fp32':>8}")
    fp32_total = rows[0][1] + rows[0][2]
    for name, linear, other in rows:
        total = linear + other
        print(f"{name:<20} {linear / 1024:>11.1f} {8 * linear / n_linear:>11.3f} {other / 1024:>9.1f} "
              f"{total / 1024:>10.1f} {total / fp32_total:>7.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024x1024 and 5 runs instead of 4096x4096 and 15")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    speed_table(1024 if args.quick else 4096, 5 if args.quick else 15)
    memory_table()


if __name__ == "__main__":
    main()
