"""`vramplan plan`: its flags, and the run from flags to rendered plans and emitted configs (no maths here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from .parallel import OFFLOADS, PRECISIONS, STRATEGIES, ParallelPlan

DEFAULT_STRATEGIES = "ddp,fsdp,zero2,zero3"


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="catalogue id or alias, config path, Hub id")
    g = p.add_argument_group("the cluster")
    g.add_argument("--gpus", type=int, default=8, metavar="N", help="GPUs per node (default: 8)")
    g.add_argument("--nodes", type=int, default=1, metavar="M", help="nodes (default: 1)")
    g.add_argument("--strategy", default=DEFAULT_STRATEGIES, metavar="S[+OFFLOAD][,...]",
                   help=f"comma list of {', '.join(STRATEGIES)}, each optionally +optimizer or +params "
                        f"(default: {DEFAULT_STRATEGIES})")
    g.add_argument("--offload", choices=OFFLOADS, default="none", help="offload for strategies without +OFFLOAD")
    g = p.add_argument_group("the step (simulated once, on one GPU)")
    g.add_argument("--precision", choices=PRECISIONS, default="amp-bf16")
    g.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    g.add_argument("--image-size", default=None, metavar="SIZE", help="1024 or HEIGHTxWIDTH (vision models)")
    g.add_argument("--seq-len", type=int, default=None, metavar="N", help="tokens per sequence (text models)")
    g.add_argument("--batch-size", type=int, default=1, metavar="N", help="per GPU (default: 1)")
    g.add_argument("--grad-accum", type=int, default=1, metavar="N", help="gradient accumulation, for --emit")
    g.add_argument("--attn", choices=("sdpa", "eager", "flash"), default="sdpa")
    g.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="the simulated target")
    g.add_argument("--grad-checkpointing", action="store_true")
    g.add_argument("--freeze", choices=("none", "backbone"), default="none")
    g.add_argument("--lora-rank", type=int, default=0, metavar="R")
    g.add_argument("--num-labels", type=int, default=1000, metavar="N", help="linear-probe classes (backbones)")
    g = p.add_argument_group("engine configs")
    g.add_argument("--emit", metavar="ENGINE[,ENGINE]",
                   help="accelerate, deepspeed and/or torchrun: write the configs and launch line of each plan "
                        "into -o DIR/<strategy>/")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--trust-remote-code", "--trust_remote_code", dest="trust_remote_code", action="store_true")
    p.add_argument("--revision")
    p.add_argument("--timeout", type=float, default=10.0)


def parse_plans(args: argparse.Namespace, wrap: tuple[str, ...] = ()) -> list[ParallelPlan]:
    """--strategy items (with +offload) on --gpus x --nodes; refuses what an engine does not offer."""
    return strategy_plans(args.strategy, args.gpus, args.nodes, args.offload, precision=args.precision,
                          micro_batch=args.batch_size, grad_accum=args.grad_accum, wrap=wrap,
                          grad_checkpointing=args.grad_checkpointing)


def strategy_plans(strategy: str, gpus: int, nodes: int, offload: str = "none", *, precision: str = "amp-bf16",
                   micro_batch: int = 1, grad_accum: int = 1, wrap: tuple[str, ...] = (),
                   grad_checkpointing: bool = False) -> list[ParallelPlan]:
    """A ParallelPlan per item of a --strategy list (`fsdp,zero3+optimizer`); `offload` for items without one."""
    plans = []
    for item in filter(None, (v.strip() for v in strategy.split(","))):
        name, _, own = item.partition("+")
        plans.append(ParallelPlan(name, gpus=gpus, nodes=nodes, offload=own or offload, precision=precision,
                                  micro_batch=micro_batch, grad_accum=grad_accum, wrap_classes=wrap,
                                  grad_checkpointing=grad_checkpointing))
    if not plans:
        raise UsageError("--strategy names no strategy")
    return plans


def parse_engines(text: str | None) -> tuple[str, ...]:
    """--emit's comma list (`accelerate,deepspeed,torchrun`), in order, each once."""
    from .emit import EMITTERS

    engines = tuple(dict.fromkeys(e.strip() for e in (text or "").split(",") if e.strip()))
    for engine in engines:
        if engine not in EMITTERS:
            raise UsageError(f"--emit `{engine}` is not one of {', '.join(EMITTERS)}")
    if text is not None and not engines:
        raise UsageError(f"--emit names no engine: any of {', '.join(EMITTERS)}")
    return engines


def case_maker(args: argparse.Namespace):
    """The TrainingCase for a built model: its image size or sequence length, from the flags or its config."""
    from ..measure.cases import input_kind, parse_image_sizes
    from ..measure.training import TrainingCase

    sizes = parse_image_sizes([args.image_size]) if args.image_size else ()
    if len(sizes) > 1:
        raise UsageError("vramplan plan takes one --image-size")

    def make(model):
        common = dict(batch_size=args.batch_size, precision=args.precision, optimizer=args.optimizer, attn=args.attn,
                      device=args.device, grad_checkpointing=args.grad_checkpointing, freeze=args.freeze,
                      lora_rank=args.lora_rank, num_labels=args.num_labels)
        config = getattr(model, "config", None)
        if input_kind(model) == "text":
            limit = getattr(config, "max_position_embeddings", None) or 512
            return TrainingCase(seq_len=args.seq_len or min(512, limit), **common)
        default = getattr(config, "image_size", None) or 224
        hw = sizes[0] if sizes else (tuple(default) if isinstance(default, (list, tuple)) else (int(default),) * 2)
        return TrainingCase(image_size=hw, **common)

    return make


def run_plan(args: argparse.Namespace, write) -> int:
    """Plan every model, render, and with --emit write each plan's engine files."""
    from ..report.multigpu import render_plans_json, render_plans_text
    from .training_plan import plan_model

    if args.gpus < 1 or args.nodes < 1 or args.batch_size < 1 or args.grad_accum < 1:
        raise UsageError("--gpus, --nodes, --batch-size and --grad-accum must be at least 1")
    engines = parse_engines(args.emit)
    if engines and not args.output:
        raise UsageError("--emit needs -o DIR, the folder to write the configs into")
    parse_plans(args)  # bad strategies fail before any model is simulated
    make = case_maker(args)
    results = [plan_model(m, make, parse_plans(args), trust_remote_code=args.trust_remote_code,
                          revision=args.revision, timeout=args.timeout) for m in args.models]
    text = render_plans_json(results) if args.format == "json" else render_plans_text(results)
    if engines:
        done = [r for r in results if not r.error]
        emit_all(args.output, engines, [(r.model, parse_plans(args, r.wrap_classes)) for r in done])
        write(text, None)
    else:
        write(text, args.output)
    for r in results:
        if r.error:
            print(f"vramplan: {r.model}: {r.error}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def emit_all(output: str, engines: tuple[str, ...], planned: list[tuple[str, list[ParallelPlan]]],
             quiet: bool = False) -> None:
    """Write each model's plans' files into output/[model/]<strategy>/, saying so on stderr (unless `quiet`)."""
    from .emit import emit_engines, write_plan

    for model, plans in planned:
        for plan in dict.fromkeys(plans):
            if "deepspeed" in engines and not plan.zero_stage and not quiet:  # its launcher runs ZeRO plans only
                print(f"vramplan: {plan.strategy}: nothing for --emit deepspeed (use accelerate or torchrun)",
                      file=sys.stderr)
            files = emit_engines(plan, engines)
            if not files:
                continue
            folder = Path(output) / (_slug(model) if len(planned) > 1 else "") / _plan_name(plan)
            for path in write_plan(files, folder):
                if not quiet:
                    print(f"vramplan: wrote {path}", file=sys.stderr)


def _plan_name(plan: ParallelPlan) -> str:
    return plan.strategy + (f"-offload-{plan.offload}" if plan.offload != "none" else "")


def _slug(model: str) -> str:
    return model.replace("/", "--")


# --- estimate/report --mode train --gpus N: the same plans, on the run's training cases ---------------------------

_PARALLEL_FLAGS = ("--strategy", "--nodes", "--offload", "--grad-accum", "--emit")


def add_parallel_options(g) -> None:
    """--nodes, --strategy, --offload, --grad-accum, --emit for `estimate`/`report --mode train --gpus N`."""
    g.add_argument("--nodes", type=int, metavar="M", help="with --mode train --gpus N: nodes of N GPUs (default: 1)")
    g.add_argument("--strategy", metavar="S[+OFFLOAD][,...]",
                   help=f"with --mode train --gpus N: comma list of {', '.join(STRATEGIES)}, each optionally "
                        f"+optimizer or +params (default: {DEFAULT_STRATEGIES})")
    g.add_argument("--offload", choices=OFFLOADS, help="offload for --strategy items without +OFFLOAD (default: none)")
    g.add_argument("--grad-accum", type=int, metavar="N", help="gradient accumulation written by --emit (default: 1)")
    g.add_argument("--emit", metavar="ENGINE[,ENGINE]",
                   help="with --mode train --gpus N: write accelerate, deepspeed and/or torchrun configs and "
                        "launch lines into -o DIR/<strategy>/ (the report then goes to stdout)")


def parallel_options(args: argparse.Namespace) -> dict | None:
    """The pipeline's `parallel` plans for --mode train --gpus N; None outside train mode (--gpus splits inference).

    Precision, batch and checkpointing come from each training case (plan.training_plan.plan_cases).
    """
    given = [flag for flag in _PARALLEL_FLAGS if getattr(args, flag[2:].replace("-", "_")) is not None]
    if args.mode != "train":
        if given:
            raise UsageError(f"{', '.join(given)} need --mode train --gpus N (inference over --gpus cards is "
                             "split as device_map='auto' does, without a strategy)")
        return None
    if args.gpus is None:
        if given:
            raise UsageError(f"{', '.join(given)} need --gpus N, the GPUs per node to train on")
        return {}
    nodes = 1 if args.nodes is None else args.nodes
    accum = 1 if args.grad_accum is None else args.grad_accum
    if args.gpus < 1 or nodes < 1 or accum < 1:
        raise UsageError("--gpus, --nodes and --grad-accum must be at least 1")
    plans = strategy_plans(args.strategy or DEFAULT_STRATEGIES, args.gpus, nodes, args.offload or "none",
                           grad_accum=accum)
    if parse_engines(args.emit):
        _check_one_config(args)
    return {"parallel": tuple(plans)}


def _check_one_config(args: argparse.Namespace) -> None:
    """--emit writes one folder per strategy: one precision and one batch (they are in the files), and -o DIR."""
    from ..measure.cases import parse_int_list

    if not args.output or args.output == "-":
        raise UsageError("--emit needs -o DIR, the folder to write the configs into")
    precisions = [p for v in args.precision for p in v.split(",") if p.strip()]
    if len(parse_int_list(args.batch_size, "--batch-size")) > 1 or len(precisions) > 1:
        raise UsageError("--emit writes one config per strategy: give one --batch-size and one --precision")


def emit_run(run, args: argparse.Namespace) -> str | None:
    """With --emit, write each planned model's configs and return None (the report goes to stdout);
    otherwise return -o as given."""
    engines = parse_engines(getattr(args, "emit", None))
    if not engines:
        return args.output
    planned = [(m.model, [p.peak.plan for p in m.plans]) for m in run.models if m.plans]
    emit_all(args.output, engines, planned, quiet=args.quiet)
    return None
