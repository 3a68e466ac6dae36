"""The `vramplan gpus` and `vramplan fit` subcommands, and the target flags estimate/report share.

Kept beside cli.py so the planning commands read in one place; cli.py registers them.
"""

from __future__ import annotations

import argparse
from typing import Any

from .errors import UsageError


def add_target_options(g) -> None:
    """--gpu / --memory: the card(s) a simulation targets."""
    g.add_argument("--gpu", action="append", default=[], metavar="NAME",
                   help="a card from `vramplan gpus` (rtx4090, a100-80gb, t4, ...): kernels, workspaces, memory "
                        "follow it; repeatable for fit (default: h100-sxm)")
    g.add_argument("--memory", action="append", default=[], metavar="SIZE",
                   help="a card known by its memory only (24GiB, 80GB): the default card's kernels (repeatable)")


def add_fit_options(g) -> None:
    g.add_argument("--headroom", type=float, default=0.0, metavar="PERCENT",
                   help="keep this share of the card's memory free (default: 0)")
    g.add_argument("--max-image-size", action="store_true",
                   help="find the largest square input at --batch-size (default 1) instead of the largest batch")


def targets(args: argparse.Namespace) -> tuple:
    """The GpuSpecs the flags name, in order (empty when none is named)."""
    from .plan.gpus import find_gpu, memory_target

    if (args.gpu or args.memory) and getattr(args, "device", "cuda") == "cpu":
        raise UsageError("--gpu and --memory name a CUDA target: drop --device cpu")
    return tuple(find_gpu(name) for name in args.gpu) + tuple(memory_target(size) for size in args.memory)


def default_dtypes(gpu) -> tuple[str, ...]:
    """bfloat16, or float16 on a card without it (T4, V100)."""
    return ("bfloat16",) if gpu is None or gpu.bf16 else ("float16",)


def check_bf16(gpus, dtypes) -> None:
    """bfloat16 asked for on a card without it is a usage error, before any model runs."""
    for gpu in gpus:
        if gpu is not None and "bfloat16" in dtypes and not gpu.bf16:
            raise UsageError(f"{gpu.label} has no bfloat16: use --dtype float16 or float32")


def default_precisions(gpu) -> tuple[str, ...]:
    """amp-bf16, or amp-fp16 on a card without bfloat16 (T4, V100)."""
    return ("amp-bf16",) if gpu is None or gpu.bf16 else ("amp-fp16",)


def check_bf16_training(gpus, precisions) -> None:
    """A bfloat16 training precision asked for on a card without it is a usage error, before any model runs."""
    for gpu in gpus:
        if gpu is not None and not gpu.bf16 and any(p in ("amp-bf16", "bf16") for p in precisions):
            raise UsageError(f"{gpu.label} has no bfloat16: use --precision amp-fp16, fp16 or fp32")


def fit_request(args: argparse.Namespace, mode: str, strict: bool = True):
    """The FitRequest the flags ask for; not strict (estimate/report --fit): the sweep's first dtype and attention."""
    from .measure.cases import parse_choices, parse_image_sizes, parse_int_list
    from .plan.fit import FitRequest
    from .plan.gpus import default_gpu

    if not 0 <= args.headroom < 100:
        raise UsageError(f"--headroom {args.headroom:g} is not a percentage in [0, 100)")
    if mode == "train" and args.dtype:
        raise UsageError("--mode train takes --precision, not --dtype")
    dtypes = parse_choices(args.dtype, "--dtype", ("float32", "float16", "bfloat16"))
    attns = parse_choices(args.attn, "--attn", ("sdpa", "eager", "flash"))
    batches = parse_int_list(args.batch_size, "--batch-size")
    if strict and (len(dtypes) > 1 or len(attns) > 1 or len(batches) > 1):
        raise UsageError("fit takes one --dtype, one --attn and one --batch-size")
    if strict and batches and not args.max_image_size:
        raise UsageError("--batch-size goes with --max-image-size (fit searches the batch otherwise)")
    gpus = targets(args) or (default_gpu(),)
    check_bf16(gpus, dtypes[:1])
    return FitRequest(
        gpus=gpus, mode=mode, image_sizes=parse_image_sizes(args.image_size),
        seq_lens=parse_int_list(args.seq_len, "--seq-len"), dtype=dtypes[0] if dtypes else None,
        attn=attns[0] if attns else "sdpa", headroom_percent=args.headroom, max_image_size=args.max_image_size,
        batch_size=batches[0] if batches else 1,
        training=_fit_training(args, gpus, strict) if mode == "train" else None,
    )


def _fit_training(args: argparse.Namespace, gpus, strict: bool) -> Any:
    """--mode train: the one precision (or none: per card), optimizer and "trains" the search keeps fixed;
    not strict (estimate/report --fit): the sweep's first of each."""
    from dataclasses import replace

    from .cli import _training_request

    training = _training_request(args, note=strict)  # estimate/report --fit: their own sweep says it
    if strict and (len(training.precisions) > 1 or len(training.optimizers) > 1 or len(training.trains) > 1):
        raise UsageError("fit takes one --precision, one --optimizer and one --trains (or --freeze / --lora-rank)")
    training = replace(training, optimizers=training.optimizers[:1], trains=training.trains[:1])
    if not args.precision:
        return replace(training, precisions=())  # amp-bf16, or amp-fp16 on a card without bfloat16
    check_bf16_training(gpus, training.precisions)
    return replace(training, precisions=training.precisions[:1])


def add_gpus(sub) -> None:
    p = sub.add_parser("gpus", help="the GPU targets --gpu knows", description="List the bundled GPU catalogue.")
    p.add_argument("--format", choices=("table", "json"), default="table")
    from .cli import _common

    _common(p)  # --debug, -o (- is stdout), -q
    p.set_defaults(handler=run_gpus)


def run_gpus(args: argparse.Namespace) -> int:
    from .cli import EXIT_OK, _emit
    from .plan.gpus import gpu_catalogue
    from .report.fit_text import render_gpus_json, render_gpus_table

    gpus = gpu_catalogue()
    _emit(render_gpus_json(gpus) if args.format == "json" else render_gpus_table(gpus), args.output, quiet=args.quiet)
    return EXIT_OK


def add_fit(sub) -> None:
    p = sub.add_parser(
        "fit", help="the largest batch (or input) that fits on each card",
        description="Find the largest batch size per model, card and input size by simulation "
                    "(fits: the simulated peak on the card <= its memory less --headroom).",
    )
    p.add_argument("models", nargs="+", metavar="MODEL|FAMILY")
    p.add_argument("--mode", choices=("inference", "train"), default="inference",
                   help="inference (default: one forward) or train (two simulated training steps: gradients and "
                        "optimizer state included)")
    g = p.add_argument_group("target and case")
    add_target_options(g)
    add_fit_options(g)
    g.add_argument("--image-size", action="append", default=[], metavar="SIZE[,SIZE]")
    g.add_argument("--seq-len", action="append", default=[], metavar="N[,N]")
    g.add_argument("--batch-size", action="append", default=[], metavar="N", help="with --max-image-size")
    g.add_argument("--dtype", action="append", default=[], metavar="DTYPE",
                   help="float32, float16 or bfloat16 (default: bfloat16, float16 on cards without it)")
    g.add_argument("--attn", action="append", default=[], metavar="IMPL", help="sdpa, eager or flash")
    p.add_argument("--library", "--library_name", dest="library", choices=("transformers", "timm"))
    p.add_argument("--revision")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--trust-remote-code", "--trust_remote_code", dest="trust_remote_code", action="store_true")
    p.add_argument("--format", choices=("table", "markdown", "json", "html"), default="table")
    p.add_argument("--plot", metavar="FILE.png|FILE.svg", help="also draw the charts with matplotlib")
    from .cli import _common, _training_options, jobs_option

    _training_options(p)
    jobs_option(p)
    _common(p)  # --debug, -o (- is stdout), -q
    p.set_defaults(handler=run_fit, device="cuda")


def run_fit(args: argparse.Namespace) -> int:
    from .cli import _render
    from .pipeline import estimate
    from .report.fit_text import render_fit_markdown, render_fit_text
    from .report.html import render_html
    from .report.json_report import render_json
    from .sources.catalog import family_title

    if args.mode != "train":
        from .cli import _training_request

        _training_request(args)  # training flags without --mode train: one line, before any model is built
    request = fit_request(args, args.mode)
    run = estimate(args.models, fit=request, library=args.library, trust_remote_code=args.trust_remote_code,
                   revision=args.revision, timeout=args.timeout, checkpoint=False, debug=args.debug,
                   jobs=args.jobs)
    titles = {family_title(r) for r in args.models}
    title = titles.pop() if len(titles) == 1 else None
    return _render(run, args, {
        "table": render_fit_text, "markdown": render_fit_markdown, "json": render_json,
        "html": lambda r: render_html(r, title),
    })


def with_fit(render, markdown: bool = False):
    """A text (or Markdown) renderer followed by the fit matrix when --fit asked for one."""
    from .report.fit_text import render_fit_markdown, render_fit_text

    fit = render_fit_markdown if markdown else render_fit_text
    return lambda run: render(run) + ("\n" + fit(run) if run.fit is not None else "")


def write_plot(run, args: argparse.Namespace) -> None:
    """--plot FILE: the HTML report's charts drawn by matplotlib."""
    if getattr(args, "plot", None):
        from .report.plot import write_plot as draw

        draw(run, args.plot)
