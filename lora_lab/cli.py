"""The `lora-lab` command (also `python -m lora_lab`).

    lora-lab finetune                                   # tiny profile: embedded model and data, CPU, minutes
    lora-lab finetune --profile llama2-7b-t4            # Llama-2-7b-chat on guanaco-llama2-1k, Colab T4
    lora-lab finetune --lora-r 8 --learning-rate 1e-3   # any setting of lora_lab.finetune.FinetuneConfig
    lora-lab finetune --out runs/r8 --resume            # continue an interrupted run from its last checkpoint
    lora-lab estimate --profile llama2-7b-t4            # the memory estimate alone
    lora-lab estimate --profile llama2-70b-fsdp         # per GPU: one GPU, DDP and FSDP over two, compared
    lora-lab classroom release OUT/                     # a student copy: no solutions, exercise outputs cleared
    lora-lab classroom grade SUBMISSIONS/ --out grades.csv   # run and grade submitted notebooks
    lora-lab --language vi estimate                     # what the kit prints, in Vietnamese (also after the command)
    accelerate launch --num_processes 2 -m lora_lab finetune ...   # data parallel, one process per GPU
    accelerate launch --config_file "$(lora-lab fsdp-config)" --num_processes 2 -m lora_lab finetune --sharding fsdp
                                                        # fully sharded over two GPUs (FSDP-QLoRA)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import typing

from . import runs
from .config import ConfigError, check_settings, config_keys, read_settings_file
from .finetune import (
    PROFILES,
    FinetuneConfig,
    Hardware,
    NoGPUError,
    estimate_for,
    finetune,
    needs_gpu,
    plan,
    resolve_config,
    target_layers,
)
from .i18n import LANGUAGES, _, num, set_language
from .lora import ALL_LINEAR
from .plan import planning_hardware

HELP = {  # the trailing comments of FinetuneConfig, shortened
    "model": "hub id or local folder ('none': the embedded tiny Llama)",
    "dataset": "hub id, folder or .jsonl file ('none': the embedded instructions)",
    "quantization": "nf4 (QLoRA), fp4, or none (LoRA over a 16/32-bit base)",
    "double_quant": "quantize the 4-bit block scales to 8 bits",
    "precision": "auto, fp32, fp16 or bf16 (auto: fp32 on CPU, bf16 if the GPU has it, else fp16)",
    "target_modules": f"comma-separated layer names, e.g. q_proj,v_proj; {ALL_LINEAR} (every linear layer but the "
                      "output head); or one regular expression over whole module names, e.g. '.*self_attn\\.(q|v)_proj' "
                      "(a value with any of * + ? [ ] ( ) | ^ $ \\ is read as one)",
    "optim": "auto (paged_adamw_32bit on GPU, adamw_torch on CPU) or a transformers optimizer name",
    "sharding": "auto (as launched), none (one process), ddp (each process a whole copy) or fsdp (each 1/N; "
                "launch with `accelerate launch --config_file \"$(lora-lab fsdp-config)\"`)",
    "num_processes": "processes (one per GPU); none: as launched, 1 for estimate",
    "quant_storage": "dtype the packed 4-bit codes are stored in: auto (uint8, or the compute dtype under FSDP), "
                     "uint8, float16, bfloat16 or float32",
    "max_steps": "optimizer steps; -1 trains num_train_epochs",
    "sample_prompts": "prompts answered before and after training, separated by '|'",
}


def _parse_list(sep: str):
    return lambda s: [x.strip() for x in s.split(sep) if x.strip()]


REGEX_CHARS = set("*+?[](){}|^$\\")  # a --target-modules value with any of these is one regex, as in PEFT


def _parse_targets(s: str):
    # "all-linear" and a regular expression are one value, as in LoraConfig and a settings file; anything else is
    # a comma-separated list of names (a name may hold dots: self_attn.q_proj)
    if s.strip() == ALL_LINEAR or REGEX_CHARS & set(s):
        return s.strip()
    return _parse_list(",")(s)


def _optional_str(s: str):
    return None if s.lower() in ("none", "") else s


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per FinetuneConfig field; only the flags given override the profile.

    Values stay text here: lora_lab.config checks them (and reads numbers) as it checks settings files.
    """
    hints = typing.get_type_hints(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        if f.name == "profile":
            continue
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=HELP.get(f.name))
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif f.name == "target_modules":
            parser.add_argument(flag, type=_parse_targets, **kw)
        elif hint == list[str]:
            parser.add_argument(flag, type=_parse_list("|" if f.name == "sample_prompts" else ","), **kw)
        elif type(None) in typing.get_args(hint):
            parser.add_argument(flag, type=_optional_str, **kw)
        else:
            parser.add_argument(flag, metavar=f.name.upper(), **kw)


LANGUAGE_HELP = "language of what the kit prints: en (English) or vi (Vietnamese); error messages stay English"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-lab", description="LoRA and QLoRA, built and run from scratch.")
    parser.add_argument("--language", choices=LANGUAGES, default="en", help=LANGUAGE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="QLoRA fine-tune with TRL's SFTTrainer, PEFT and bitsandbytes",
                        description="Fine-tune a profile's model on its data; every setting can be overridden.")
    est = sub.add_parser("estimate", help="print the memory a fine-tune would need, without loading anything",
                         description="Predict a fine-tune's memory: weights, 4-bit constants, LoRA, gradients, "
                                     "optimizer state, activations.")
    for p in (ft, est):
        p.add_argument("--profile", default=None, help=f"starting settings: {', '.join(PROFILES)} (default: tiny)")
        p.add_argument("--config", metavar="FILE", help="settings file, JSON or YAML (unknown keys are an error; "
                                                         "flags win over it)")
    ft.add_argument("--out", default="runs/finetune", help="folder for adapter/, loss_log.csv, metrics.json, "
                                                           "checkpoints/ and run.json")
    again = ft.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    again.add_argument("--resume", action="store_true", help="continue the unfinished run in --out from its last "
                                                             "checkpoint, with its own settings")
    ft.add_argument("--print-config", action="store_true", help="print the resolved settings and plan, then stop")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")
    for p in (ft, est):
        add_config_arguments(p)
        p.add_argument("--language", choices=LANGUAGES, default=argparse.SUPPRESS, help=LANGUAGE_HELP)
    sub.add_parser("fsdp-config", help="print the path of the accelerate config file for FSDP (FSDP-QLoRA)",
                   description="The accelerate config the kit ships for fully sharded training over GPUs: "
                               "accelerate launch --config_file \"$(lora-lab fsdp-config)\" --num_processes N "
                               "-m lora_lab finetune --sharding fsdp ...")
    _add_classroom(sub)
    return parser


def _positive(s: str) -> float:
    try:
        value = float(s)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{s!r} is not a positive number")
    return value


def _count(s: str) -> int:
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number of 1 or more")
    return int(s)


def _add_classroom(sub) -> None:
    room = sub.add_parser("classroom", help="hand out the exercises without solutions, and grade them",
                          description="For instructors: a student release, and a grader for submitted notebooks.")
    what = room.add_subparsers(dest="classroom", required=True)
    rel = what.add_parser("release", help="write a student copy of the kit: no solutions, exercise outputs cleared")
    rel.add_argument("out", metavar="OUT", nargs="?", help="new (or empty) folder for the student copy (default: "
                                                          "lora-lab-course beside the clone, outside its working tree)")
    rel.add_argument("--repository", metavar="OWNER/NAME", help="GitHub repository you will push the release to: "
                                                                "the Colab badges and install cell then fetch it")
    gr = what.add_parser("grade", help="run each submitted notebook in isolation and grade its exercises")
    gr.add_argument("submissions", metavar="SUBMISSIONS", help="folder of submitted .ipynb files (or one sub-folder "
                                                               "per student)")
    gr.add_argument("--out", metavar="CSV", help="new CSV file for the grades, never overwritten (default: "
                                                 "lora-lab-grades/grades-DATE-TIME.csv beside the clone)")
    gr.add_argument("--notebook", metavar="NN", help="the notebook every submission should be, e.g. 02")
    gr.add_argument("--timeout", type=_positive, default=600.0, metavar="S", help="seconds a notebook may run (600)")
    gr.add_argument("--cell-timeout", type=_positive, default=120.0, metavar="S",
                    help="seconds one cell may run before it is interrupted (120)")
    gr.add_argument("--memory-gib", type=_positive, default=6.0, metavar="GIB",
                    help="address space a notebook may map, in GiB (6)")
    gr.add_argument("--language", choices=LANGUAGES, default=argparse.SUPPRESS,
                    help="language of the checks' messages and of what the grader prints (en)")
    gr.add_argument("--plot", metavar="PNG", help="where to draw the summary (default: next to --out, .png)")
    gr.add_argument("-j", "--jobs", type=_count, default=1, metavar="N",
                    help="grade N submissions at a time (1); each may use --memory-gib")
    gr.add_argument("--unsafe-no-sandbox", action="store_true",
                    help="where no sandbox can be made, run each submission as you: only for submissions you trust")


def classroom(args) -> int:
    """`lora-lab classroom release|grade`: checks every argument before anything runs."""
    from pathlib import Path

    if args.classroom == "release":
        from .classroom.release import release, unignored_in_git

        out = release(Path(args.out) if args.out else None, repository=args.repository)
        print(f"student copy written to {out}: hand it out as it is (see the README's section for instructors)")
        tree = unignored_in_git(out)
        if tree is not None:
            print(f"note: {out} is inside the git working tree {tree}, which does not ignore it: `git add` there would "
                  "commit the whole student copy; move it out, or list it in .git/info/exclude", file=sys.stderr)
        if args.repository is None:
            print("note: its Colab badges and install cell fetch the public kit, which holds the solutions; push the "
                  "release to a public repository of your own and pass --repository owner/name to avoid that",
                  file=sys.stderr)
        return 0
    from .classroom.grade import Limits, exercises_by_notebook, grade

    folder, out = Path(args.submissions), Path(args.out) if args.out else None
    if not folder.is_dir():
        raise ValueError(f"SUBMISSIONS={args.submissions!r} is not a folder")
    numbers = sorted(exercises_by_notebook())
    if args.notebook is not None and args.notebook not in numbers:
        raise ValueError(f"--notebook={args.notebook!r}: choose one of the notebooks with exercises: {', '.join(numbers)}")
    if out is not None and out.suffix.lower() != ".csv":
        raise ValueError(f"--out={args.out!r}: give a .csv file name")
    limits = Limits(timeout_s=args.timeout, cell_timeout_s=args.cell_timeout, memory_gib=args.memory_gib,
                    language=args.language)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
    if ram and args.jobs * args.memory_gib > ram:
        print(f"warning: -j {args.jobs} × --memory-gib {args.memory_gib:g} is more than this machine's {ram:.0f} GiB: "
              "submissions that use their share may be killed", file=sys.stderr)
    import signal

    # a plain `kill` ends grading as Ctrl-C does: the sandboxes are ended and removed, the CSV keeps what was graded
    before = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        grade(folder, out, notebook=args.notebook, limits=limits, plot=Path(args.plot) if args.plot else None,
              jobs=args.jobs, unsafe=args.unsafe_no_sandbox)
    finally:
        signal.signal(signal.SIGTERM, before)
    return 0


def _config_from(args) -> tuple[FinetuneConfig, dict]:
    """The config from --profile, --config and the flags (flags win), and {key: text read as a number} from the file."""
    from_file, coerced = {}, {}
    profile = args.profile
    if args.config:
        from_file = read_settings_file(args.config)
        try:
            from_file, coerced = check_settings(from_file)
        except ConfigError as err:
            raise ConfigError(f"{args.config}: {err}") from None
        profile = profile or from_file.get("profile")
        from_file.pop("profile", None)
    flags = {k: v for k, v in vars(args).items() if k in config_keys() and k != "profile"}
    saved = {}
    if getattr(args, "resume", False):  # the run's own settings, under whatever the command line gives again
        record = runs.read_record(args.out)
        saved = dict((record or {}).get("config") or {})
        profile = profile or saved.pop("profile", None)
        saved.pop("profile", None)
    config = resolve_config(profile or "tiny", {**saved, **from_file, **flags})
    coerced = {k: f"{v!r} read as {getattr(config, k)!r}" for k, v in coerced.items() if k not in flags}
    return config, coerced


def _estimate(config: FinetuneConfig) -> int:
    """`lora-lab estimate`: the per-device table; with several processes, one GPU, DDP and FSDP side by side."""
    target_layers(config)  # the settings check finetune makes: every target matches a layer it can wrap
    hardware = Hardware.detect()
    if hardware.device == "cpu" and needs_gpu(config):
        hardware = planning_hardware(config)
        name = "Colab T4" if hardware.gpu == "Tesla T4" else hardware.gpu
        print(_("(no GPU here: planned for a {name}, {gib} GiB)").format(name=name, gib=hardware.memory_gib))
    run_plan = plan(config, hardware)
    estimate = estimate_for(config, run_plan)
    print(estimate.table())
    budget = hardware.memory_gib
    fits = lambda e: ((_("fits in {gib:.2f} GiB") if e.fits(budget) else _("does NOT fit in {gib:.2f} GiB")).format(
        gib=budget) if budget else "")
    one = dataclasses.replace(config, sharding="none", num_processes=1)
    one_plan = {**run_plan, "sharding": "none", "num_processes": 1}
    # under FSDP, each process first loads the whole 4-bit model (transformers puts it on the process's own
    # device), and FSDP shards it only after that: the load, not the training, can be what does not fit
    load = estimate.quant_constants + estimate_for(one, one_plan).weights if run_plan.get("sharding") == "fsdp" else 0
    if budget and load > budget * 2**30 and estimate.fits(budget):
        print(_("training fits in {budget:.2f} GiB per device once sharded, but loading does NOT: each process first "
                "holds the whole 4-bit model, {gib:.2f} GiB, before FSDP shards it (transformers loads it onto each "
                "process's own device; a loader that shards layer by layer, as Answer.AI's script does, would be "
                "needed)").format(budget=budget, gib=load / 2**30))
    elif budget:
        print(fits(estimate))
    n = run_plan.get("num_processes", 1)
    if n > 1:
        gib = lambda e: f"{num(e.total / 2**30):7.2f} GiB"
        print("\n" + _("per device, side by side:"))
        rows = [(_("one device alone"), estimate_for(one, one_plan))]
        rows += [(_("{sharding} over {n} devices").format(sharding=sharding.upper(), n=n),
                  estimate_for(config, {**run_plan, "sharding": sharding})) for sharding in ("ddp", "fsdp")]
        for label, e in rows:
            print(f"  {label:<22}{gib(e)}  {fits(e)}".rstrip())
        if load:
            print(_("at load, before FSDP shards it, each process holds the whole 4-bit model (transformers loads it "
                    "onto the process's own device): {gib:.2f} GiB").format(gib=load / 2**30)
                  + (_(", which does NOT fit in {gib:.2f} GiB").format(gib=budget)
                     if budget and load > budget * 2**30 else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 a setting or machine problem)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    set_language(args.language)  # one setting for everything the kit prints from here on
    if args.command == "fsdp-config":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        from .fsdp import ACCELERATE_CONFIG

        print(ACCELERATE_CONFIG)
        return 0
    if args.command == "classroom":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        try:
            return classroom(args)
        except (ValueError, OSError) as err:
            print(f"lora-lab: error: {err}", file=sys.stderr)
            return 2
    if extra:  # a misspelt setting must stop the run, never be ignored
        flags = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(FinetuneConfig)]
        flags += ["--out", "--config", "--print-config", "--no-progress", "--overwrite", "--resume"]
        near = difflib.get_close_matches(extra[0].split("=")[0], flags, n=1)
        parser.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {near[0]}?)" if near else ""))
    try:
        config, coerced = _config_from(args)
        for key, note in coerced.items():
            print(f"lora-lab: {args.config}: {key} {note}", file=sys.stderr)
        if args.command == "estimate":
            return _estimate(config)
        if args.print_config:
            print(json.dumps({"config": dataclasses.asdict(config), "plan": plan(config), "coerced": coerced},
                             indent=2, default=str))
            return 0
        finetune(config, out=args.out, progress=not args.no_progress, overwrite=args.overwrite, resume=args.resume)
    except (ValueError, NoGPUError, OSError) as err:  # OSError: a missing file, the hub unreachable
        print(f"lora-lab: error: {str(err).removeprefix('lora-lab: ')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # finetune has recorded it in run.json and printed how to resume
        print("lora-lab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
