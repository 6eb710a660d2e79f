"""A catalogue of the answers learners give to the exercise checks, and the verdict each must get.

Each entry is (label, answer, verdict, phrase): `verdict` is "correct" or "wrong"; for a wrong answer,
`phrase` is a piece of the English message template that names the idea behind the mistake (not only
its symptom). tests/test_wrong_answers.py runs every entry in English and in Vietnamese. The answers are
the ones a careful learner fed the checks (the first entry after the right ones in each list), the kinds
they stand for, and the slips a teacher expects; where two answers are equally good, both are listed as
right.
"""

import math

import peft
import torch
from torch import nn

from lora_lab import exercises as ex
from lora_lab.lora import lora_layers
from lora_lab.nf4 import quantize_nf4
from lora_lab.qlora import QLoRALinear

RIGHT, WRONG = "correct", "wrong"


# ----------------------------------------------------------------------------- 00 start here

def compute_dtype_for(gpu_name, bf16_supported):
    return torch.float32 if gpu_name is None else torch.bfloat16 if bf16_supported else torch.float16


def dtype_by_gpu_name(gpu_name, bf16_supported):  # "A100 has bf16": the L4 has it too
    if gpu_name is None:
        return torch.float32
    return torch.bfloat16 if "A100" in gpu_name else torch.float16


def dtype_crashes_on_a_cpu(gpu_name, bf16_supported):
    return torch.bfloat16 if gpu_name.startswith("NVIDIA") else torch.float16


def llama2_row(prompt, answer):
    return f"<s>[INST] {prompt} [/INST] {answer} </s>"


# ----------------------------------------------------------------------------- 01 low-rank intuition

def lora_factors(delta, r):
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :r] * s[:r], vh[:r]


def lora_factors_split(delta, r):  # √S on each side: the same product
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :r] * s[:r].sqrt(), s[:r].sqrt()[:, None] * vh[:r]


def lora_factors_smallest(delta, r):
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, -r:] * s[-r:], vh[-r:]


def max_useful_rank_loop(d, k):
    r = 0
    while d * (r + 1) + (r + 1) * k < d * k:
        r += 1
    return r


# ----------------------------------------------------------------------------- 02 LoRA from scratch

class LoRA(nn.Module):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
        nn.init.normal_(self.lora_A.weight, std=1 / r)
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout, self.scaling, self.merged = nn.Dropout(lora_dropout), lora_alpha / r, False

    def lora_path(self, x):
        return self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def forward(self, x):
        out = self.base_layer(x)
        return out if self.merged else out + self.lora_path(x)

    def delta(self):
        return self.lora_B.weight @ self.lora_A.weight * self.scaling

    def merge(self):
        with torch.no_grad():
            self.base_layer.weight += self.delta()
        self.merged = True

    def unmerge(self):
        with torch.no_grad():
            self.base_layer.weight -= self.delta()
        self.merged = False


class LoRAParameters(LoRA):  # A and B as bare nn.Parameters, Kaiming A, F.dropout: as good
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.lora_A = nn.Parameter(torch.empty(r, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.p = lora_dropout

    def lora_path(self, x):
        return nn.functional.dropout(x, self.p, self.training) @ self.lora_A.T @ self.lora_B.T * self.scaling

    def delta(self):
        return self.lora_B @ self.lora_A * self.scaling


class IntegerScaling(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.scaling = lora_alpha // r


class InvertedScaling(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.scaling = r / lora_alpha


class NoScaling(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.scaling = 1.0


class RootScaling(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.scaling = lora_alpha / math.sqrt(r)


class DropoutBetweenAAndB(LoRA):
    def lora_path(self, x):
        return self.lora_B(self.lora_dropout(self.lora_A(x))) * self.scaling


class DropoutAfterB(LoRA):
    def lora_path(self, x):
        return self.lora_dropout(self.lora_B(self.lora_A(x))) * self.scaling


class DropoutUnscaled(LoRA):  # a hand-written mask without the 1 / (1 - p)
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.p = lora_dropout

    def lora_path(self, x):
        if self.training and self.p:
            x = x * (torch.rand_like(x) >= self.p)
        return self.lora_B(self.lora_A(x)) * self.scaling


class DropsTheBaseToo(LoRA):
    def forward(self, x):
        x = self.lora_dropout(x)
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling


class NoDropout(LoRA):
    def lora_path(self, x):
        return self.lora_B(self.lora_A(x)) * self.scaling


class DropoutFixedP(LoRA):  # p written into the layer, PEFT's usual 0.1, instead of lora_dropout
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.lora_dropout = nn.Dropout(0.1)


class DropoutDefaultP(LoRA):  # nn.Dropout() with its default p = 0.5
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.lora_dropout = nn.Dropout()


class WithBias(LoRA):  # nn.Linear's default bias=True
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.lora_A = nn.Linear(base_layer.in_features, r)
        self.lora_B = nn.Linear(r, base_layer.out_features)
        nn.init.zeros_(self.lora_B.weight)


class DoubleFactors(LoRA):  # A and B in float64 beside a float32 base
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.lora_A.double(), self.lora_B.double()


class DropoutInEval(LoRA):
    def lora_path(self, x):
        return self.lora_B(self.lora_A(nn.functional.dropout(x, self.lora_dropout.p, True))) * self.scaling


class MergesTwice(LoRA):
    def merge(self):
        with torch.no_grad():
            self.base_layer.weight += self.delta()


class UnmergeForgets(LoRA):
    def unmerge(self):
        self.merged = False


class MergesUnscaled(LoRA):
    def merge(self):
        with torch.no_grad():
            self.base_layer.weight += self.lora_B.weight @ self.lora_A.weight
        self.merged = True


class BaseTrains(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        base_layer.requires_grad_(True)


class BothRandom(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        nn.init.normal_(self.lora_B.weight, std=0.02)


class BothZero(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        nn.init.zeros_(self.lora_A.weight)


class ShapesSwapped(LoRA):
    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0):
        super().__init__(base_layer, r, lora_alpha, lora_dropout)
        self.lora_A = nn.Linear(r, base_layer.out_features, bias=False)
        self.lora_B = nn.Linear(base_layer.in_features, r, bias=False)
        nn.init.zeros_(self.lora_A.weight)


class BBeforeA(LoRA):
    def lora_path(self, x):
        return x @ self.lora_B.weight.T @ self.lora_A.weight.T * self.scaling


# ----------------------------------------------------------------------------- 03 LoRA vs PEFT

def gpt2_config(**changes):
    settings = dict(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"], fan_in_fan_out=True,
                    task_type="CAUSAL_LM")
    return lambda: peft.LoraConfig(**{**settings, **changes})


def linear_layer_names(model):
    head = model.get_output_embeddings()
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head})


def linear_names_per_layer(model):  # one name per layer, repeats and all: target_modules takes that too
    head = model.get_output_embeddings()
    return [n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]


def drops_the_last_linear(model):
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return sorted({n.rsplit(".", 1)[-1] for n in linear[:-1]})


def peft_key(name):
    return "base_model.model." + name.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


def copy_adapter(peft_model, our_model):
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for n, p in our_model.named_parameters():
            if "lora_" in n:
                p.copy_(theirs[peft_key(n)])


def copy_adapter_state_dict(peft_model, our_model):  # through state dicts: as good
    theirs = peft_model.state_dict()
    ours = {n: theirs[peft_key(n)] for n in our_model.state_dict() if "lora_" in n}
    our_model.load_state_dict(ours, strict=False)


def copy_without_adapter_name(peft_model, our_model):
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for n, p in our_model.named_parameters():
            if "base_model.model." + n in theirs:
                p.copy_(theirs["base_model.model." + n])


def copy_a_into_b(peft_model, our_model):
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for n, p in our_model.named_parameters():
            if "lora_" in n:
                other = n.replace("lora_A", "lora_X").replace("lora_B", "lora_A").replace("lora_X", "lora_B")
                p.copy_(theirs[peft_key(other)])


def copy_with_wrong_prefix(peft_model, our_model):
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for n, p in our_model.named_parameters():
            if "lora_" in n:
                p.copy_(theirs["base_model." + n])


def copy_only(letter):
    def copy(peft_model, our_model):
        theirs = dict(peft_model.named_parameters())
        with torch.no_grad():
            for n, p in our_model.named_parameters():
                if f"lora_{letter}" in n:
                    p.copy_(theirs[peft_key(n)])
    return copy


def copy_b_times_scaling(peft_model, our_model):  # the scaling put into the weights
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, layer in lora_layers(our_model):
            layer.lora_A.weight.copy_(theirs[peft_key(f"{name}.lora_A.weight")])
            layer.lora_B.weight.copy_(theirs[peft_key(f"{name}.lora_B.weight")] * layer.scaling)


def copy_into_peft(peft_model, our_model):
    ours = dict(our_model.named_parameters())
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(ours[n.removeprefix("base_model.model.").replace(".default", "")])


# ----------------------------------------------------------------------------- 04 NF4 from scratch

def unpack_codes(packed, n):
    return torch.stack([packed >> 4, packed & 0xF], dim=1).flatten()[:n]


def unpack_codes_by_index(packed, n):  # fill the even and odd places: as good
    out = torch.empty(2 * packed.numel(), dtype=torch.uint8)
    out[0::2], out[1::2] = packed >> 4, packed & 0xF
    return out[:n]


def nf_codebook(bits):
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    half, offset = 2 ** (bits - 1), 1 - 0.5 * (1 / (2 * (2**bits - 1)) + 1 / (2 * 2**bits))
    pos = normal.icdf(torch.linspace(offset, 0.5, half + 1, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, half, dtype=torch.float64)[:-1])
    v = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]).sort().values
    return v / v.max()  # float64: as good


def nf_codebook_two_zeros(bits):
    normal = torch.distributions.Normal(0.0, 1.0)
    half, offset = 2 ** (bits - 1), 1 - 0.5 * (1 / (2 * (2**bits - 1)) + 1 / (2 * 2**bits))
    pos = normal.icdf(torch.linspace(offset, 0.5, half + 1))
    neg = -normal.icdf(torch.linspace(offset, 0.5, half))
    v = torch.cat([neg, pos]).sort().values
    return v / v.max()


def nf_codebook_zero_twice(bits):  # half + half values, each side ending at 0: 2**bits values, zero twice
    normal = torch.distributions.Normal(0.0, 1.0)
    half, offset = 2 ** (bits - 1), 1 - 0.5 * (1 / (2 * (2**bits - 1)) + 1 / (2 * 2**bits))
    pos = normal.icdf(torch.linspace(offset, 0.5, half))
    neg = -normal.icdf(torch.linspace(offset, 0.5, half))
    v = torch.cat([neg, pos]).sort().values
    return v / v.max()


def nf_codebook_offset(bits):  # the offset of 0.99 instead of the formula
    normal = torch.distributions.Normal(0.0, 1.0)
    half = 2 ** (bits - 1)
    pos = normal.icdf(torch.linspace(0.99, 0.5, half + 1)[:-1])
    neg = -normal.icdf(torch.linspace(0.99, 0.5, half)[:-1])
    v = torch.cat([neg, torch.zeros(1), pos]).sort().values
    return v / v.max()


def even_with_zero(bits):
    half = 2 ** (bits - 1)
    return torch.cat([torch.linspace(-1, 0, half), torch.linspace(0, 1, half + 1)[1:]])


# ----------------------------------------------------------------------------- 05 QLoRA from scratch

def qlora_forward(layer, x):
    w = layer.base_layer.dequantize()
    return x @ w.T + layer.base_layer.bias + x @ layer.lora_A.weight.T @ layer.lora_B.weight.T * layer.scaling


def nf4_bytes(n, blocksize=64, double_quant=True):
    blocks, codes = math.ceil(n / blocksize), math.ceil(n / 2)
    return codes + blocks + 4 * math.ceil(blocks / 256) + 4 if double_quant else codes + 4 * blocks


def nf4_bytes_floor(n, blocksize=64, double_quant=True):
    blocks, codes = n // blocksize, n // 2
    return codes + blocks + 4 * (blocks // 256) + 4 if double_quant else codes + 4 * blocks


# ----------------------------------------------------------------------------- 06 the QLoRA fine-tune

def pad_token_for(tok):
    return tok.pad_token if tok.pad_token not in (None, tok.eos_token) else tok.unk_token


def sampling_probs(logits, temperature, top_k=None):
    scaled = logits / temperature
    if top_k:
        scaled = scaled.masked_fill(scaled < scaled.topk(top_k).values[-1], float("-inf"))
    return scaled.softmax(-1)


def sampling_probs_top_k_first(logits, temperature, top_k=None):  # cut, then scale: the same distribution
    if top_k:
        keep = logits.topk(top_k).indices
        logits = torch.full_like(logits, float("-inf")).scatter(0, keep, logits[keep])
    return torch.softmax(logits / temperature, dim=-1)


BYTES = {"adamw": (4, 4, 8), "adamw_8bit": (4, 4, 2), "sgd": (4, 4, 0)}  # weight, gradient, optimizer state


def training_bytes(n, optimizer="adamw"):
    return n * sum(BYTES[optimizer])


# ----------------------------------------------------------------------------- 07 beyond plain LoRA

def pool_groups(x, group_size):
    return x.unflatten(-1, (-1, group_size)).mean(-1)


def pool_groups_avg_pool(x, group_size):  # torch's own average pooling: as good
    return nn.functional.avg_pool1d(x.reshape(-1, 1, x.shape[-1]), group_size).reshape(*x.shape[:-1], -1)


def pissa_factors(weight, r, scaling):
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = torch.sqrt(s[:r] / scaling)
    a, b = torch.diag(root) @ vh[:r], u[:, :r] @ torch.diag(root)
    return a, b, weight - scaling * b @ a


def pissa_factors_flipped(weight, r, scaling):  # singular vectors of the other sign: the same product, as good
    a, b, res = pissa_factors(weight, r, scaling)
    return -a, -b, res


def pissa_factors_uneven(weight, r, scaling):
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    a, b = vh[:r], u[:, :r] * (s[:r] / scaling)
    return a, b, weight - scaling * b @ a


def pissa_factors_unscaled(weight, r, scaling):
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    a, b = torch.diag(s[:r].sqrt()) @ vh[:r], u[:, :r] @ torch.diag(s[:r].sqrt())
    return a, b, weight - b @ a


def pissa_factors_smallest(weight, r, scaling):
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = torch.sqrt(s[-r:] / scaling)
    a, b = torch.diag(root) @ vh[-r:], u[:, -r:] @ torch.diag(root)
    return a, b, weight - scaling * b @ a


# ----------------------------------------------------------------------------- 08 beyond one GPU

def shard_bytes(shape, element_size, world_size, rank):
    row_bytes = element_size * torch.Size(shape[1:]).numel()
    per_process = -(-shape[0] // world_size)  # ceil
    return min(per_process, max(0, shape[0] - rank * per_process)) * row_bytes


def shard_bytes_by_chunk(shape, element_size, world_size, rank):  # torch.chunk itself, as FSDP2 does: as good
    chunks = torch.arange(shape[0]).chunk(world_size)
    rows = len(chunks[rank]) if rank < len(chunks) else 0
    return rows * element_size * torch.Size(shape[1:]).numel()


def fsdp_parts(parts, num_processes):
    kept_whole = ("quant_constants", "activations")
    return {k: v if k in kept_whole else v // num_processes for k, v in parts.items()}


def dequantize_shard(codes, absmax):
    from lora_lab.nf4 import nf4_codebook, unpack_4bit

    blocks = codes.shape[0]
    return nf4_codebook()[unpack_4bit(codes, blocks * 64).long()].view(blocks, 64) * absmax.unsqueeze(1)


def dequantize_shard_nibbles_swapped(codes, absmax):
    from lora_lab.nf4 import nf4_codebook

    blocks = codes.shape[0]
    nibbles = torch.stack([codes & 15, codes >> 4], dim=-1).reshape(blocks, 64).long()
    return nf4_codebook()[nibbles] * absmax.unsqueeze(1)


def dequantize_shard_nibbles_concatenated(codes, absmax):  # every high nibble first, then every low one
    from lora_lab.nf4 import nf4_codebook

    blocks = codes.shape[0]
    nibbles = torch.cat([codes >> 4, codes & 15], dim=-1).reshape(blocks, 64).long()
    return nf4_codebook()[nibbles] * absmax.unsqueeze(1)


# ----------------------------------------------------------------------------- the catalogue

CATALOGUE = {
    ex.check_compute_dtype: [
        ("the rule as written", compute_dtype_for, RIGHT, None),
        ("torch.half, the same dtype by its other name",
         lambda name, bf16: torch.float32 if name is None else torch.bfloat16 if bf16 else torch.half, RIGHT, None),
        ("fp16 on a CPU", lambda name, bf16: torch.float16, WRONG, "half-precision (16-bit) matmuls are slow"),
        ("bf16 on every GPU", lambda name, bf16: torch.float32 if name is None else torch.bfloat16, WRONG,
         "this GPU has no bf16"),
        ("fp16 on every GPU", lambda name, bf16: torch.float32 if name is None else torch.float16, WRONG,
         "this GPU has bf16"),
        ("bf16 for A100s only, by name", dtype_by_gpu_name, WRONG, "this GPU has bf16"),
        ("fp32 on GPUs too", lambda name, bf16: torch.float32, WRONG, "a GPU computes twice as fast"),
        ("the dtype's name as a string", lambda name, bf16: "float32", WRONG, "not the string"),
        ("a value passed instead of the function", torch.float32, WRONG, "you passed a value"),
        ("gpu_name.startswith on a CPU's None", dtype_crashes_on_a_cpu, WRONG, "On a CPU both arguments are None"),
    ],
    ex.check_weights_gib: [
        ("bits → bytes → GiB", lambda n, bits: n * bits / 8 / 2**30, RIGHT, None),
        ("1024³ instead of 2**30", lambda n, bits: n * bits / 8 / 1024 / 1024 / 1024, RIGHT, None),
        ("GB instead of GiB", lambda n, bits: n * bits / 8 / 1e9, WRONG, "GiB = 2**30 bytes"),
        ("bits, not bytes", lambda n, bits: n * bits / 2**30, WRONG, "that counts bits, not bytes"),
        ("MiB", lambda n, bits: n * bits / 8 / 2**20, WRONG, "a GiB is 2**30 bytes"),
        ("rounded to two decimals", lambda n, bits: round(n * bits / 8 / 2**30, 2), WRONG, "you rounded the result"),
        ("2 bytes per parameter whatever the bits", lambda n, bits: n * 2 / 2**30, WRONG, "bits per parameter, not"),
        ("a value passed instead of the function", 12.55, WRONG, "you passed a value"),
    ],
    ex.check_llama2_format: [
        ("the data's frame", llama2_row, RIGHT, None),
        ("joined with +", lambda p, a: "<s>[INST] " + p + " [/INST] " + a + " </s>", RIGHT, None),
        ("a row copied from the data shown (the answer is …)",
         lambda p, a: f"<s>[INST] {p} [/INST] the answer is {a}. </s>", WRONG, "IS their answer"),
        ("no EOS", lambda p, a: f"<s>[INST] {p} [/INST] {a}", WRONG, "EOS token </s>"),
        ("no BOS", lambda p, a: f"[INST] {p} [/INST] {a} </s>", WRONG, "BOS token <s>"),
        ("no spaces inside the tags", lambda p, a: f"<s>[INST]{p}[/INST]{a}</s>", WRONG,
         "leaves the data's format at character"),
        ("a newline at the end", lambda p, a: llama2_row(p, a) + "\n", WRONG, "mind the spaces at the two ends"),
        ("prompt and answer swapped", lambda p, a: llama2_row(a, p), WRONG, "prompt and the answer are swapped"),
        ("no [INST] tags", lambda p, a: f"<s> {p} {a} </s>", WRONG, "between [INST] and [/INST]"),
    ],
    ex.check_rank_r_matrix: [
        ("(d × r) @ (r × k)", lambda d, k, r: torch.randn(d, r) @ torch.randn(r, k), RIGHT, None),
        ("r outer products", lambda d, k, r: sum(torch.outer(torch.randn(d), torch.randn(k)) for _ in range(r)),
         RIGHT, None),
        ("a full random matrix", lambda d, k, r: torch.randn(d, k), WRONG, "multiply a random d × r matrix"),
        ("one column repeated", lambda d, k, r: torch.randn(d, 1).repeat(1, k), WRONG, "r independent random"),
        ("the second factor not transposed", lambda d, k, r: torch.randn(d, r) @ torch.randn(k, r), WRONG,
         "the inner sizes must both be r"),
        ("k × d instead of d × k", lambda d, k, r: torch.randn(k, r) @ torch.randn(r, d), WRONG,
         "a d × k matrix is"),
    ],
    ex.check_lora_factors: [
        ("S folded into B", lora_factors, RIGHT, None),
        ("√S on each side", lora_factors_split, RIGHT, None),
        ("the singular values left out",
         lambda delta, r: (torch.linalg.svd(delta)[0][:, :r], torch.linalg.svd(delta)[2][:r]), WRONG,
         "singular values are missing"),
        ("(A, B) instead of (B, A)", lambda delta, r: tuple(reversed(lora_factors(delta, r))), WRONG, "swapped"),
        ("the smallest singular values", lora_factors_smallest, WRONG, "keep the r LARGEST"),
        ("U, S, Vh returned as they are", lambda delta, r: torch.linalg.svd(delta, full_matrices=False), WRONG,
         "return the pair (B, A)"),
    ],
    ex.check_max_useful_rank: [
        ("(d·k − 1) // (d + k)", lambda d, k: (d * k - 1) // (d + k), RIGHT, None),
        ("counting up", max_useful_rank_loop, RIGHT, None),
        ("min(d, k)", lambda d, k: min(d, k), WRONG, "more than the matrix"),
        ("d·k // (d + k): equal cost is no saving", lambda d, k: d * k // (d + k), WRONG, "not fewer than"),
        ("a float", lambda d, k: d * k / (d + k), WRONG, "return an int"),
        ("half of it", lambda d, k: (d * k - 1) // (d + k) // 2, WRONG, "go higher"),
    ],
    ex.check_lora_linear: [
        ("PEFT's layer, as notebook 02 builds it", LoRA, RIGHT, None),
        ("bare nn.Parameters, Kaiming A, F.dropout", LoRAParameters, RIGHT, None),
        ("lora_alpha // r", IntegerScaling, WRONG, "with its fraction dropped"),
        ("r / lora_alpha", InvertedScaling, WRONG, "the scaling is upside down"),
        ("no scaling", NoScaling, WRONG, "it should be lora_alpha / r"),
        ("rsLoRA's α/√r", RootScaling, WRONG, "that is rsLoRA's scaling"),
        ("dropout between A and B", DropoutBetweenAAndB, WRONG, "sits between lora_A and lora_B"),
        ("dropout after B", DropoutAfterB, WRONG, "acts on the LoRA path's output"),
        ("a hand-written mask without 1 / (1 − p)", DropoutUnscaled, WRONG, "does not scale the kept ones"),
        ("dropout on the base path too", DropsTheBaseToo, WRONG, "on the LoRA path's input only"),
        ("lora_dropout ignored", NoDropout, WRONG, "changed nothing in train mode"),
        ("dropout on the input with p = 0.1 written in", DropoutFixedP, WRONG, "Build it from the argument"),
        ("nn.Dropout() with its default p", DropoutDefaultP, WRONG, "Build it from the argument"),
        ("A and B as nn.Linear with their default bias", WithBias, WRONG, "nn.Linear adds one unless bias=False"),
        ("A and B in float64", DoubleFactors, WRONG, "build A and B in the base layer's dtype"),
        ("dropout on in eval mode", DropoutInEval, WRONG, "in eval mode dropout must be off"),
        ("merge() without the merged flag", MergesTwice, WRONG, "counted twice"),
        ("unmerge() that only clears the flag", UnmergeForgets, WRONG, "restore the original weight"),
        ("merge() without the scaling", MergesUnscaled, WRONG, "after merge() the base weight should be"),
        ("the base left trainable", BaseTrains, WRONG, "the base layer still trains"),
        ("B random at init", BothRandom, WRONG, "lora_B should start at zero"),
        ("A and B both zero", BothZero, WRONG, "lora_A should start random"),
        ("lora_A built as (out, r), lora_B as (r, in)", ShapesSwapped, WRONG, "lora_A and lora_B are swapped"),
        ("B applied before A", BBeforeA, WRONG, "A is (r, in)"),
        ("an object passed instead of the class", LoRA(nn.Linear(8, 4), 2, 4), WRONG, "an object already built"),
    ],
    ex.check_lora_param_count: [
        ("r·(d + k) per layer", lambda shapes, r: sum(r * (d + k) for d, k in shapes), RIGHT, None),
        ("A and B counted apart", lambda shapes, r: sum(r * k for _, k in shapes) + sum(d * r for d, _ in shapes),
         RIGHT, None),
        ("the full matrices", lambda shapes, r: sum(d * k for d, k in shapes), WRONG, "size of the full matrices"),
        ("A alone", lambda shapes, r: sum(r * k for d, k in shapes), WRONG, "only one of the two factors"),
        ("every layer square", lambda shapes, r: sum(2 * r * d for d, k in shapes), WRONG,
         "treats every layer as square"),
        ("the first layer's shape for all", lambda shapes, r: len(shapes) * r * sum(shapes[0]), WRONG,
         "of every layer in `shapes`"),
        ("a float", lambda shapes, r: float(sum(r * (d + k) for d, k in shapes)), WRONG, "return an int"),
        ("r left out", lambda shapes, r: sum(d + k for d, k in shapes), WRONG, "times too few"),
    ],
    ex.check_same_scaling_alpha: [
        ("α·new_r/r, α·√(new_r/r) with rsLoRA",
         lambda a, r, n, use_rslora=False: a * (math.sqrt(n / r) if use_rslora else n / r), RIGHT, None),
        ("the same, via the scaling",
         lambda a, r, n, use_rslora=False: (a / math.sqrt(r)) * math.sqrt(n) if use_rslora else (a / r) * n,
         RIGHT, None),
        ("lora_alpha kept", lambda a, r, n, use_rslora=False: a, WRONG, "changes the scaling"),
        ("the ratio upside down", lambda a, r, n, use_rslora=False: a * r / n, WRONG, "instead of staying"),
        ("use_rslora ignored", lambda a, r, n, use_rslora=False: a * n / r, WRONG, "moves with √r"),
        ("integer division, a * new_r // r", lambda a, r, n, use_rslora=False: a * n // r, WRONG, "a rounded number"),
        ("rounded to a whole number",
         lambda a, r, n, use_rslora=False: round(a * (math.sqrt(n / r) if use_rslora else n / r)), WRONG,
         "a rounded number"),
        ("int() of the rsLoRA case only",
         lambda a, r, n, use_rslora=False: int(a * math.sqrt(n / r)) if use_rslora else a * n / r, WRONG,
         "integer division (//), int() or round()"),
    ],
    ex.check_gpt2_lora_config: [
        ("the fused projection, as a list", gpt2_config(), RIGHT, None),
        ("TaskType instead of its string", gpt2_config(task_type=peft.TaskType.CAUSAL_LM), RIGHT, None),
        ("a regular expression for the full names", gpt2_config(target_modules=r".*\.c_attn"), RIGHT, None),
        ("the name as a bare string", gpt2_config(target_modules="c_attn"), WRONG, "a regular expression"),
        ("the MLP too (c_attn, c_proj, c_fc)", gpt2_config(target_modules=["c_attn", "c_proj", "c_fc"]), WRONG,
         "c_proj names two layers"),
        ("all-linear", gpt2_config(target_modules="all-linear"), WRONG, "LoRA also landed on"),
        ("the tutorial's Llama names", gpt2_config(target_modules=["q_proj", "v_proj"]), WRONG,
         "one fused Conv1D for query, key and value"),
        ("the MLP instead of the attention", gpt2_config(target_modules=["c_fc"]), WRONG,
         "but not on the attention"),
        ("r = 2", gpt2_config(r=2, lora_alpha=4), WRONG, "the rank r = 8"),
        ("α = 16", gpt2_config(lora_alpha=16), WRONG, "(lora_alpha) = 32"),
        ("no dropout", gpt2_config(lora_dropout=0.0), WRONG, "(lora_dropout) = 0.1"),
        ("no task type", gpt2_config(task_type=None), WRONG, "not as a causal language model"),
        ("fan_in_fan_out left out", gpt2_config(fan_in_fan_out=False), WRONG, "stores its weight as (in, out)"),
        ("B not zero at init", gpt2_config(init_lora_weights=False), WRONG, "at init the output changed"),
        ("the LM head saved too (modules_to_save)", gpt2_config(modules_to_save=["lm_head"]), WRONG,
         "also trains a whole copy of those modules"),
        ("rsLoRA's scaling", gpt2_config(use_rslora=True), WRONG, "rsLoRA changes the scaling"),
        ("DoRA", gpt2_config(use_dora=True), WRONG, "that is DoRA"),
        ("the adapted layers' biases trained", gpt2_config(bias="lora_only"), WRONG, "which LoRA keeps frozen"),
        ("every bias trained", gpt2_config(bias="all"), WRONG, "which LoRA keeps frozen"),
        ("the first block only", gpt2_config(layers_to_transform=[0]), WRONG,
         "The exercise adapts the attention of every block"),
        ("another rank for one block", gpt2_config(rank_pattern={"h.0.attn.c_attn": 4}), WRONG,
         "rank_pattern gives some layers a rank of their own"),
        ("another α for one block", gpt2_config(alpha_pattern={"h.0.attn.c_attn": 8}), WRONG,
         "alpha_pattern gives some layers an α of their own"),
        ("a dict of settings", lambda: dict(r=8, lora_alpha=32), WRONG, "return a peft.LoraConfig"),
    ],
    ex.check_all_linear_targets: [
        ("every nn.Linear but get_output_embeddings()", linear_layer_names, RIGHT, None),
        ("one name per layer, repeats and all", linear_names_per_layer, RIGHT, None),
        ("the head kept", lambda m: sorted({n.rsplit(".", 1)[-1] for n, x in m.named_modules()
                                            if isinstance(x, nn.Linear)}), WRONG, "is the output head"),
        ("the head skipped by the name lm_head", lambda m: sorted({n.rsplit(".", 1)[-1] for n, x in m.named_modules()
                                                                   if isinstance(x, nn.Linear)
                                                                   and not n.endswith("lm_head")}), WRONG,
         "find it with model.get_output_embeddings()"),
        ("the last nn.Linear found dropped", drops_the_last_linear, WRONG, "lists the head before the layers"),
        ("full paths", lambda m: [n for n, x in m.named_modules() if isinstance(x, nn.Linear)
                                  and x is not m.get_output_embeddings()], WRONG, "not full paths"),
        ("Llama's seven names, by hand",
         lambda m: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], WRONG,
         "are not linear layers of this model"),
        ("the attention only", lambda m: ["q_proj", "k_proj", "v_proj", "o_proj"], WRONG, "you missed"),
    ],
    ex.check_copy_adapter: [
        ("by name, prefix and adapter name added", copy_adapter, RIGHT, None),
        ("through the state dicts", copy_adapter_state_dict, RIGHT, None),
        ("the adapter name left out", copy_without_adapter_name, WRONG, "LoRA layers were not filled"),
        ("only the A matrices copied", copy_only("A"), WRONG, "kept a zero lora_B"),
        ("only the B matrices copied", copy_only("B"), WRONG, "kept our own random lora_A"),
        ("B copied times the scaling", copy_b_times_scaling, WRONG, "is not stored in the weights"),
        ("A copied into B", copy_a_into_b, WRONG, "an A went into a B"),
        ("a prefix that is not PEFT's", copy_with_wrong_prefix, WRONG, "parameter names carry a prefix"),
        ("copied the other way, into PEFT", copy_into_peft, WRONG, "the PEFT model was modified"),
    ],
    ex.check_unpack_codes: [
        ("stacked, then flattened", unpack_codes, RIGHT, None),
        ("even and odd places filled", unpack_codes_by_index, RIGHT, None),
        ("the two halves concatenated", lambda p, n: torch.cat([p >> 4, p & 0xF])[:n], WRONG, "Interleave them"),
        ("low halves first, concatenated", lambda p, n: torch.cat([p & 0xF, p >> 4])[:n], WRONG,
         "instead of concatenating"),
        ("low nibble first", lambda p, n: torch.stack([p & 0xF, p >> 4], 1).flatten()[:n], WRONG, "HIGH nibble"),
        ("the padding code kept", lambda p, n: torch.stack([p >> 4, p & 0xF], 1).flatten(), WRONG,
         "drop the padding code"),
        ("all zeros", lambda p, n: torch.zeros(n, dtype=torch.uint8), WRONG, "codes came back wrong"),
        ("the right codes as floats", lambda p, n: unpack_codes(p, n).float(), WRONG, "a float cannot index a tensor"),
        ("the right codes as int64", lambda p, n: unpack_codes(p, n).long(), WRONG,
         "bytes for each 4-bit code where uint8 takes one"),
    ],
    ex.check_nf_codebook: [
        ("quantiles, zero, normalised (float64)", nf_codebook, RIGHT, None),
        ("the same in float32", lambda bits: nf_codebook(bits).float(), RIGHT, None),
        ("evenly spaced on [-1, 1]", lambda bits: torch.linspace(-1, 1, 2**bits), WRONG, "evenly spaced"),
        ("evenly spaced, with a zero", even_with_zero, WRONG, "quantiles of a normal distribution"),
        ("quantiles without a zero",
         lambda bits: torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, 2**bits)), WRONG,
         "exact 0.0"),
        ("zero from both sides", nf_codebook_two_zeros, WRONG, "with 0.0 twice"),
        ("zero from both sides, 2**bits values", nf_codebook_zero_twice, WRONG, "a code wasted on a repeat"),
        ("the table in float16", lambda bits: nf_codebook(bits).half(), WRONG, "a 16-bit float keeps only about"),
        ("the table in bfloat16", lambda bits: nf_codebook(bits).bfloat16(), WRONG, "a 16-bit float keeps only about"),
        ("not divided by the largest", lambda bits: nf_codebook(bits) * 1.7, WRONG, "into [-1, 1]"),
        ("another offset", nf_codebook_offset, WRONG, "Check the offset"),
    ],
    ex.check_bits_per_param: [
        ("4 + the constants' share", lambda bs, dq: 4 + (8 / bs + 32 / (256 * bs) if dq else 32 / bs), RIGHT, None),
        ("an fp16 absmax", lambda bs, dq: 4 + (8 / bs + 32 / (256 * bs) if dq else 16 / bs), WRONG, "not 16"),
        ("the 256-block scale left out", lambda bs, dq: 4 + (8 if dq else 32) / bs, WRONG, "one per 256 blocks"),
        ("double_quant ignored", lambda bs, dq: 4 + 32 / bs, WRONG, "an 8-bit code, not 32-bit"),
        ("the code alone", lambda bs, dq: 4, WRONG, "not what the quantizer stores"),
        ("bytes instead of bits", lambda bs, dq: (4 + (8 / bs + 32 / (256 * bs) if dq else 32 / bs)) / 8, WRONG,
         "the exercise asks bits, 8 per byte"),
        ("the constants counted in bytes", lambda bs, dq: 4 + (1 / bs + 4 / (256 * bs) if dq else 4 / bs), WRONG,
         "but the block constants in bytes"),
    ],
    ex.check_qlora_forward: [
        ("from the parts", qlora_forward, RIGHT, None),
        ("through the layer's own modules",
         lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) * layer.scaling, RIGHT, None),
        ("the merged weight", lambda layer, x: x @ (layer.base_layer.dequantize() + layer.scaling * layer.lora_B.weight
                                                    @ layer.lora_A.weight).T + layer.base_layer.bias, RIGHT, None),
        ("x @ W without the transposes", lambda layer, x: x @ layer.base_layer.dequantize() + layer.base_layer.bias,
         WRONG, "A is (r, in)"),
        ("B before A", lambda layer, x: x @ layer.base_layer.dequantize().T + layer.base_layer.bias
         + x @ layer.lora_B.weight.T @ layer.lora_A.weight.T * layer.scaling, WRONG, "The shapes do not fit"),
        ("the packed weight instead of dequantize()",
         lambda layer, x: nn.functional.linear(x, layer.base_layer.weight, layer.base_layer.bias), WRONG,
         "packed 4-bit codes"),
        ("no scaling", lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)), WRONG, "layer.scaling"),
        ("no bias", lambda layer, x: qlora_forward(layer, x) - layer.base_layer.bias, WRONG, "has a bias"),
        ("the base alone", lambda layer, x: layer.base_layer(x), WRONG, "the 4-bit base alone"),
        ("the scaling on the base too",
         lambda layer, x: (layer.base_layer(x) + layer.lora_B(layer.lora_A(x))) * layer.scaling, WRONG,
         "by the scaling too"),
        ("the scaling divided", lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) / layer.scaling,
         WRONG, "you divided the LoRA path by the scaling"),
        ("r / α for the scaling", lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) * layer.r
         / layer.lora_alpha, WRONG, "you divided the LoRA path by the scaling"),
        ("the scaling squared",
         lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x) * layer.scaling) * layer.scaling, WRONG,
         "the LoRA path is scaled twice"),
        ("the bias added twice", lambda layer, x: qlora_forward(layer, x) + layer.base_layer.bias, WRONG,
         "the bias is added twice"),
        ("base_layer(x) plus the bias", lambda layer, x: layer.base_layer(x) + layer.base_layer.bias
         + layer.lora_B(layer.lora_A(x)) * layer.scaling, WRONG, "the bias is added twice"),
        ("in float16", lambda layer, x: qlora_forward(layer, x).half(), WRONG, "a 16-bit float keeps only about"),
        ("the class passed instead of the function", QLoRALinear, WRONG, "not the class"),
    ],
    ex.check_nf4_bytes: [
        ("codes + constants, rounded up", nf4_bytes, RIGHT, None),
        ("the kit's own quantizer", lambda n, bs=64, dq=True: quantize_nf4(torch.zeros(n), bs, dq).nbytes, RIGHT,
         None),
        ("the codes alone", lambda n, bs=64, dq=True: math.ceil(n / 2), WRONG, "codes only"),
        ("bits", lambda n, bs=64, dq=True: 8 * nf4_bytes(n, bs, dq), WRONG, "not bits"),
        ("double_quant ignored", lambda n, bs=64, dq=True: nf4_bytes(n, bs, False), WRONG,
         "size without double quantization"),
        ("the offset left out", lambda n, bs=64, dq=True: nf4_bytes(n, bs, dq) - 4 * dq, WRONG,
         "offset is missing"),
        ("rounded down", nf4_bytes_floor, WRONG, "rounding up of partial bytes"),
        ("the right bytes as a float", lambda n, bs=64, dq=True: float(nf4_bytes(n, bs, dq)), WRONG,
         "Bytes are whole numbers"),
    ],
    ex.check_pad_token: [
        ("its own pad, else unk", pad_token_for, RIGHT, None),
        ("EOS", lambda tok: tok.eos_token, WRONG, "never learns to stop"),
        ("BOS", lambda tok: tok.pad_token or tok.bos_token, WRONG, "you returned BOS"),
        ("a new <pad>", lambda tok: "<pad>", WRONG, "which it does not have"),
        ("always unk", lambda tok: tok.unk_token, WRONG, "has its own pad token"),
        ("the id instead of the token", lambda tok: tok.unk_token_id, WRONG, "return the token itself"),
    ],
    ex.check_sampling_probs: [
        ("scale, cut, softmax", sampling_probs, RIGHT, None),
        ("cut, then scale", sampling_probs_top_k_first, RIGHT, None),
        ("in float64", lambda logits, t, k: sampling_probs(logits.double(), t, k), RIGHT, None),
        ("in float16", lambda logits, t, k: sampling_probs(logits, t, k).half(), WRONG, "a 16-bit float keeps only about"),
        ("multiplied by T", lambda logits, t, k: sampling_probs(logits, 1 / t, k), WRONG, "don't multiply"),
        ("cut without renormalising",
         lambda logits, t, k: torch.softmax(logits / t, -1) * (
             torch.zeros_like(logits).scatter(0, logits.topk(k).indices, 1.0) if k else 1), WRONG, "renormalise"),
        ("top_k ignored", lambda logits, t, k: torch.softmax(logits / t, -1), WRONG, "keeps the"),
        ("temperature ignored", lambda logits, t, k: sampling_probs(logits, 1.0, k), WRONG, "divide the logits by T"),
        ("logits, not probabilities", lambda logits, t, k: logits / t, WRONG, "probabilities sum to 1"),
        ("a batch of one", lambda logits, t, k: sampling_probs(logits, t, k)[None], WRONG,
         "one probability per token"),
    ],
    ex.check_training_bytes: [
        ("4 + 4 + optimizer state", training_bytes, RIGHT, None),
        ("the gradients left out", lambda n, o: n * {"adamw": 12, "adamw_8bit": 6, "sgd": 4}[o], WRONG,
         "most often the gradient is forgotten"),
        ("fp16 weights and gradients with AdamW: 2 + 2 + 8",
         lambda n, o: n * {"adamw": 2 + 2 + 8, "adamw_8bit": 2 + 2 + 2, "sgd": 2 + 2}[o], WRONG, "2 + 2 + 8"),
        ("weights and gradients only", lambda n, o: 8 * n, WRONG, "two fp32 tensors"),
        ("8-bit moments counted in fp32", lambda n, o: n * {"adamw": 16, "adamw_8bit": 16, "sgd": 8}[o], WRONG,
         "each moment in 1 byte"),
        ("SGD with a momentum buffer", lambda n, o: n * {"adamw": 16, "adamw_8bit": 10, "sgd": 12}[o], WRONG,
         "plain SGD keeps no state"),
        ("the right bytes as a float", lambda n, o: n * sum(BYTES[o]) / 1, WRONG, "Bytes are whole numbers"),
    ],
    ex.check_pool_groups: [
        ("unflatten, then mean", pool_groups, RIGHT, None),
        ("avg_pool1d", pool_groups_avg_pool, RIGHT, None),
        ("in bfloat16", lambda x, gs: pool_groups(x, gs).bfloat16(), WRONG, "a 16-bit float keeps only about"),
        ("the notebook's G · mean", lambda x, gs: pool_groups(x, gs) * (x.shape[-1] // gs), WRONG,
         "that is G × the mean"),
        ("the sum", lambda x, gs: pool_groups(x, gs) * gs, WRONG, "the sum of each group"),
        ("every G-th feature", lambda x, gs: x.unflatten(-1, (gs, -1)).mean(-2), WRONG, "every G-th feature"),
        ("one per position in a group", lambda x, gs: x.unflatten(-1, (-1, gs)).mean(-2), WRONG,
         "one per position inside a group"),
        ("keepdim", lambda x, gs: x.unflatten(-1, (-1, gs)).mean(-1, keepdim=True), WRONG, "one value per group"),
    ],
    ex.check_fold_into_zeros: [
        ("zeros − ΔW / scales", lambda s, z, d: (s, z - d / s), RIGHT, None),
        ("with a copy of the scales", lambda s, z, d: (s.clone(), z - d / s), RIGHT, None),
        ("the zeros in float16", lambda s, z, d: (s, (z - d / s).half()), WRONG, "a 16-bit float keeps only about"),
        ("the sign flipped", lambda s, z, d: (s, z + d / s), WRONG, "wrong sign"),
        ("ΔW in weight units", lambda s, z, d: (s, z - d), WRONG, "zero points count in code steps"),
        ("the scales changed", lambda s, z, d: (s + d, z), WRONG, "you changed the scales"),
        ("(zeros, scales): the pair in the other order", lambda s, z, d: (z - d / s, s), WRONG,
         "your pair comes back in the other order"),
    ],
    ex.check_dora_magnitude: [
        ("row norms", lambda w, a, b, s: torch.linalg.norm(w + s * b @ a, dim=1), RIGHT, None),
        ("by hand, kept as a column", lambda w, a, b, s: (w + s * b @ a).pow(2).sum(1, keepdim=True).sqrt(), RIGHT,
         None),
        ("in float16", lambda w, a, b, s: torch.linalg.norm(w + s * b @ a, dim=1).half(), WRONG, "a 16-bit float keeps only about"),
        ("column norms", lambda w, a, b, s: torch.linalg.norm(w + s * b @ a, dim=0), WRONG, "one per INPUT column"),
        ("‖W0‖ alone", lambda w, a, b, s: torch.linalg.norm(w, dim=1), WRONG, "that is ‖W0‖ alone"),
        ("no scaling", lambda w, a, b, s: torch.linalg.norm(w + b @ a, dim=1), WRONG, "multiply B·A by the scaling"),
        ("squared", lambda w, a, b, s: torch.linalg.norm(w + s * b @ a, dim=1) ** 2, WRONG, "the squared norm"),
        ("A @ B", lambda w, a, b, s: torch.linalg.norm(w + s * a @ b, dim=1), WRONG, "A is (r, in)"),
    ],
    ex.check_pissa_factors: [
        ("√(S/s) on each side", pissa_factors, RIGHT, None),
        ("singular vectors of the other sign", pissa_factors_flipped, RIGHT, None),
        ("in float16", lambda w, r, s: tuple(t.half() for t in pissa_factors(w, r, s)), WRONG, "a 16-bit float keeps only about"),
        ("(B, A, res) order", lambda w, r, s: (pissa_factors(w, r, s)[1], pissa_factors(w, r, s)[0],
                                               pissa_factors(w, r, s)[2]), WRONG, "swapped"),
        ("the residual left as W0", lambda w, r, s: (*pissa_factors(w, r, s)[:2], w), WRONG, "W0 itself"),
        ("the scaling left out", pissa_factors_unscaled, WRONG, "divide the singular values by the scaling"),
        ("all of S in B", pissa_factors_uneven, WRONG, "splits √(S_r / scaling) evenly"),
        ("the smallest singular values", pissa_factors_smallest, WRONG, "LARGEST singular"),
    ],
    ex.check_shard_bytes: [
        ("ceil(rows / N) rows, the rest to the last", shard_bytes, RIGHT, None),
        ("torch.chunk's rows", shard_bytes_by_chunk, RIGHT, None),
        ("the bytes split evenly", lambda s, e, w, r: torch.Size(s).numel() * e // w, WRONG,
         "you split the bytes evenly"),
        ("rows // N", lambda s, e, w, r: s[0] // w * e * torch.Size(s[1:]).numel(), WRONG, "rounded down"),
        ("a float", lambda s, e, w, r: torch.Size(s).numel() * e / w, WRONG, "Bytes are whole numbers"),
        ("without max(0, …): negative bytes past the last row",
         lambda s, e, w, r: min(-(-s[0] // w), s[0] - r * -(-s[0] // w)) * e * torch.Size(s[1:]).numel(), WRONG,
         "a share never goes below 0"),
        ("a tensor", lambda s, e, w, r: torch.tensor(shard_bytes(s, e, w, r)), WRONG, "a whole number of bytes"),
        ("every rank the first one's share", lambda s, e, w, r: -(-s[0] // w) * e * torch.Size(s[1:]).numel(), WRONG,
         "which is not process"),
        ("the whole parameter on every process", lambda s, e, w, r: torch.Size(s).numel() * e, WRONG,
         "which is not process"),
    ],
    ex.check_fsdp_parts: [
        ("all but the scales and the activations divided", fsdp_parts, RIGHT, None),
        ("ceiling division", lambda p, n: {k: v if k in ("quant_constants", "activations") else -(-v // n)
                                           for k, v in p.items()}, RIGHT, None),
        ("DDP: nothing divided", lambda p, n: dict(p), WRONG, "that is data parallelism (DDP)"),
        ("divided with /, floats", lambda p, n: {k: v if k in ("quant_constants", "activations") else v / n
                                                 for k, v in p.items()}, WRONG, "Bytes are whole numbers"),
        ("everything divided", lambda p, n: {k: v // n for k, v in p.items()}, WRONG, "QuantState beside the weight"),
        ("activations divided too", lambda p, n: {k: v if k == "quant_constants" else v // n for k, v in p.items()},
         WRONG, "activations are not divided"),
        ("only the LoRA side divided", lambda p, n: {k: v // n if k in ("lora_weights", "gradients", "optimizer_state") else v
                                                     for k, v in p.items()}, WRONG, "that is data parallelism"),
        ("another dict", lambda p, n: {"weights": 1}, WRONG, "the same parts"),
    ],
    ex.check_dequantize_shard: [
        ("codebook values times each block's scale", dequantize_shard, RIGHT, None),
        ("the scales left out", lambda c, a: dequantize_shard(c, torch.ones_like(a)), WRONG, "code values in [-1, 1]"),
        ("the nibbles swapped", dequantize_shard_nibbles_swapped, WRONG, "swapped"),
        ("the nibbles concatenated", dequantize_shard_nibbles_concatenated, WRONG, "differ from the same blocks"),
        ("one block only", lambda c, a: dequantize_shard(c, a)[:1], WRONG, "dequantizes to"),
        ("in float16", lambda c, a: dequantize_shard(c, a).half(), WRONG, "a 16-bit float keeps only about"),
        ("in bfloat16", lambda c, a: dequantize_shard(c, a).bfloat16(), WRONG, "a 16-bit float keeps only about"),
        ("in float64", lambda c, a: dequantize_shard(c, a).double(), WRONG, "the exercise asks float32"),
    ],
}
