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
    g.add_argument("--emit", choices=("accelerate", "deepspeed", "torchrun"),
                   help="write the configs and launch line of each plan into -o DIR/<strategy>/")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--trust-remote-code", "--trust_remote_code", dest="trust_remote_code", action="store_true")
    p.add_argument("--revision")
    p.add_argument("--timeout", type=float, default=10.0)


def parse_plans(args: argparse.Namespace, wrap: tuple[str, ...] = ()) -> list[ParallelPlan]:
    """--strategy items (with +offload) on --gpus x --nodes; refuses what an engine does not offer."""
    plans = []
    for item in filter(None, (v.strip() for v in args.strategy.split(","))):
        strategy, _, offload = item.partition("+")
        plans.append(ParallelPlan(strategy, gpus=args.gpus, nodes=args.nodes, offload=offload or args.offload,
                                  precision=args.precision, micro_batch=args.batch_size, grad_accum=args.grad_accum,
                                  wrap_classes=wrap, grad_checkpointing=args.grad_checkpointing))
    if not plans:
        raise UsageError("--strategy names no strategy")
    return plans


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
    if args.emit and not args.output:
        raise UsageError("--emit needs -o DIR, the folder to write the configs into")
    parse_plans(args)  # bad strategies fail before any model is simulated
    make = case_maker(args)
    results = [plan_model(m, make, parse_plans(args), trust_remote_code=args.trust_remote_code,
                          revision=args.revision, timeout=args.timeout) for m in args.models]
    text = render_plans_json(results) if args.format == "json" else render_plans_text(results)
    if args.emit:
        _emit_all(args, results)
        write(text, None)
    else:
        write(text, args.output)
    for r in results:
        if r.error:
            print(f"vramplan: {r.model}: {r.error}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def _emit_all(args: argparse.Namespace, results) -> None:
    from .emit import emit_plan, write_plan

    done = [r for r in results if not r.error]
    for r in done:
        for plan in parse_plans(args, r.wrap_classes):
            if args.emit == "deepspeed" and not plan.zero_stage:  # DeepSpeed's launcher runs ZeRO plans only
                print(f"vramplan: {plan.strategy}: nothing for --emit deepspeed (use accelerate or torchrun)",
                      file=sys.stderr)
                continue
            folder = Path(args.output) / (_slug(r.model) if len(done) > 1 else "") / _plan_name(plan)
            for path in write_plan(emit_plan(plan, args.emit), folder):
                print(f"vramplan: wrote {path}", file=sys.stderr)


def _plan_name(plan: ParallelPlan) -> str:
    return plan.strategy + (f"-offload-{plan.offload}" if plan.offload != "none" else "")


def _slug(model: str) -> str:
    return model.replace("/", "--")
