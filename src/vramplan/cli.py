"""The `vramplan` command: parse, run the pipeline, render. No maths here."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import UsageError, VramplanError
from .measure.weights import DTYPES

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        preload_libraries()
        return args.handler(args)
    except VramplanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"vramplan: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vramplan: interrupted", file=sys.stderr)
        return 130


def preload_libraries() -> None:
    """Import torch, accelerate and transformers with the cycle collector paused, then freeze what they made.

    Their imports create a million or so objects that live as long as the process; the collector's
    passes over them cost about a second of every run (docs/benchmarks.md). Frozen, they are out of its
    view; everything made afterwards, the simulated tensors included, is collected as usual.
    """
    import gc

    if "transformers.modeling_utils" in sys.modules:
        return  # imported already (a second call in one process): nothing to pause for, nothing new to freeze
    gc.disable()
    try:
        import accelerate.utils  # noqa: F401
        import torch  # noqa: F401
        import transformers.modeling_utils  # noqa: F401
    except ImportError as exc:
        raise VramplanError(f"Cannot import {exc.name or 'a dependency'}: reinstall vramplan's dependencies "
                            "(see the README's set-up)") from exc
    finally:
        gc.enable()
    gc.freeze()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vramplan",
        description="How much GPU memory a model needs, before you download a single weight.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_estimate(sub)
    _add_report(sub)
    _add_plan(sub)
    _add_list(sub)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    p.add_argument("-o", "--output", metavar="FILE", help="write the output to FILE instead of stdout")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES, metavar="DTYPE",
        help="rows to show, any of float32 float16 int8 int4 (default: all)",
    )
    p.add_argument(
        "--library", "--library_name", dest="library", choices=("transformers", "timm"),
        help="the library that builds the model, where the source does not say (default: the Hub's metadata)",
    )
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument(
        "--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
        help="give up on any one Hub look-up after this long (default: 10)",
    )
    p.add_argument(
        "--no-checkpoint", dest="checkpoint", action="store_false",
        help="do not read the checkpoint's safetensors headers (Hub repos, local directories)",
    )
    g = p.add_argument_group("inference (--mode inference): simulated forward passes, comma lists sweep")
    g.add_argument("--mode", choices=("weights", "inference"), default="weights",
                   help="weights: loading only (accelerate's table); inference: also the peak of a forward pass")
    g.add_argument("--image-size", action="append", default=[], metavar="SIZE[,SIZE]",
                   help="1024 or HEIGHTxWIDTH (768x1344); default: the model's own image size")
    g.add_argument("--seq-len", action="append", default=[], metavar="N[,N]",
                   help="tokens per sequence, text models (default: 512 or the model's limit)")
    g.add_argument("--batch-size", action="append", default=[], metavar="N[,N]", help="default: 1")
    g.add_argument("--dtype", action="append", default=[], metavar="DTYPE[,DTYPE]",
                   help="float32, float16 or bfloat16 (default: bfloat16)")
    g.add_argument("--attn", action="append", default=[], metavar="IMPL[,IMPL]",
                   help="sdpa, eager or flash (flash_attention_2) (default: sdpa)")
    g.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="the simulated target (default: cuda, an H100's kernels and allocator)")
    g.add_argument("--gpus", type=int, metavar="N",
                   help="split each case over N cards as device_map='auto' does (accelerate's infer_auto_device_map)")
    g.add_argument("--memory", metavar="SIZE", help="memory of one card for --gpus, e.g. 80GiB (default: an H100's)")
    p.add_argument(
        "--trust-remote-code", "--trust_remote_code", dest="trust_remote_code", action="store_true",
        help="allow a model's own modelling code to run (never implied)",
    )


def _add_estimate(sub) -> None:
    p = sub.add_parser(
        "estimate", help="memory to load each model (accelerate estimate-memory, offline)",
        description="Estimate the memory each model needs. A drop-in for `accelerate estimate-memory`.",
    )
    p.add_argument(
        "models", nargs="*", metavar="MODEL",
        help="catalogue id or alias, family name, path to a config.json or its folder, Hub id, timm name",
    )
    _model_options(p)
    g = p.add_argument_group("code you name (it runs, in this process: only name code you trust)")
    g.add_argument("--hub-repo", metavar="DIR", help="a local torch.hub repository (a folder with hubconf.py)")
    g.add_argument("--entrypoint", action="append", default=[], metavar="NAME",
                   help="an entrypoint of --hub-repo, e.g. dinov3_vit7b16_dd (repeatable)")
    g.add_argument("--factory", action="append", default=[], metavar="MODULE:CALLABLE",
                   help="a function returning an nn.Module: package.module:fn or path/to/file.py:fn (repeatable)")
    g.add_argument("--kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the entrypoints and factories (JSON values: 512, true, [1,2])")
    p.add_argument("--format", choices=("table", "markdown", "json", "csv"), default="table")
    _common(p)
    p.set_defaults(handler=_run_estimate)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report", help="a report for a family or list of models (default: the dinov3 family)",
        description="Write a VRAM report: title, summary table with status, then each model's table.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL|FAMILY", help="default: dinov3")
    _model_options(p)
    p.add_argument("--format", choices=("text", "markdown", "json", "csv"), default="text")
    _common(p)
    p.set_defaults(handler=_run_report)


def _add_plan(sub) -> None:
    from .plan.cli_args import add_plan_arguments

    p = sub.add_parser(
        "plan", help="training across GPUs: per-GPU peak for DDP, FSDP2, ZeRO 1-3, and engine configs",
        description="Simulate one training step once and derive the per-GPU peak of each strategy; "
                    "--emit writes the accelerate / DeepSpeed / torchrun files that start it.",
    )
    add_plan_arguments(p)
    _common(p)
    p.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from .plan.cli_args import run_plan

    return run_plan(args, _emit)


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="the bundled catalogue", description="List the bundled catalogue.")
    p.add_argument("--format", choices=("table", "json"), default="table")
    _common(p)
    p.set_defaults(handler=_run_list)


def _run_estimate(args: argparse.Namespace) -> int:
    from .report.csv_report import render_csv
    from .report.json_report import render_json
    from .report.markdown import render_markdown
    from .report.text import render_tables

    run = _estimate(args, [*args.models, *_code_specs(args)])
    return _render(run, args, {
        "table": render_tables,
        "markdown": lambda r: render_markdown(r, with_summary=False),
        "json": render_json,
        "csv": render_csv,
    })


def _run_report(args: argparse.Namespace) -> int:
    from .report.csv_report import render_csv
    from .report.json_report import render_json
    from .report.markdown import render_markdown
    from .report.text import render_report_text
    from .sources.catalog import family_title

    references = args.models or ["dinov3"]
    titles = {family_title(r) for r in references}
    title = titles.pop() if len(titles) == 1 else None
    run = _estimate(args, references)
    return _render(run, args, {
        "text": lambda r: render_report_text(r, title),
        "markdown": lambda r: render_markdown(r, title),
        "json": render_json,
        "csv": render_csv,
    })


def _render(run, args: argparse.Namespace, renderers: dict[str, Callable]) -> int:
    """Write the run in the asked format, name failures on stderr, and return the exit code."""
    _emit(renderers[args.format](run), args.output)
    for model in run.models:
        if not model.ok:  # on stderr too, so a script sees failures whatever the format
            print(f"vramplan: {model.model}: {model.error}", file=sys.stderr)
    return run.exit_code


def _run_list(args: argparse.Namespace) -> int:
    from .pipeline import estimate
    from .report.listing import listing_rows, render_list_json, render_list_table
    from .sources.catalog import catalog_entries

    entries = catalog_entries()
    run = estimate([e.model_id for e in entries], dtypes=("float32",), debug=args.debug)
    rows = listing_rows(entries, run)
    _emit(render_list_json(rows) if args.format == "json" else render_list_table(rows), args.output)
    return EXIT_OK


def _estimate(args: argparse.Namespace, references: list[str]):
    from .pipeline import estimate

    return estimate(
        references,
        inference=_inference_request(args),
        **_split_options(args),
        dtypes=args.dtypes,
        library=args.library,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        timeout=args.timeout,
        checkpoint=args.checkpoint,
        debug=args.debug,
    )


def _code_specs(args: argparse.Namespace) -> list:
    """Specs for --hub-repo/--entrypoint and --factory; at least one model must be named somehow."""
    from .sources.torchhub import factory_spec, hub_entrypoint_spec, parse_kwarg
    from .spec import DeferredSpec

    if bool(args.hub_repo) != bool(args.entrypoint):
        raise UsageError("--hub-repo and --entrypoint go together: --hub-repo DIR --entrypoint NAME")
    if args.kwarg and not (args.entrypoint or args.factory):
        raise UsageError("--kwarg needs --entrypoint or --factory")
    if not (args.models or args.entrypoint or args.factory):
        raise UsageError("name a model: MODEL, --hub-repo DIR --entrypoint NAME, or --factory MODULE:CALLABLE")
    kwargs = dict(parse_kwarg(text) for text in args.kwarg)
    specs = [
        DeferredSpec(f"hub:{args.hub_repo}:{e}", lambda e=e: hub_entrypoint_spec(args.hub_repo, e, kwargs))
        for e in args.entrypoint
    ]
    return specs + [DeferredSpec(f"factory:{f}", lambda f=f: factory_spec(f, kwargs)) for f in args.factory]


def _inference_request(args: argparse.Namespace):
    """The inference sweep the flags ask for, or None in weights mode."""
    from .measure.cases import InferenceRequest, parse_choices, parse_image_sizes, parse_int_list

    inference_flags = (args.image_size, args.seq_len, args.batch_size, args.dtype, args.attn)
    if args.mode != "inference":
        if any(inference_flags):
            raise UsageError("--image-size, --seq-len, --batch-size, --dtype and --attn need --mode inference")
        return None
    return InferenceRequest(
        image_sizes=parse_image_sizes(args.image_size),
        seq_lens=parse_int_list(args.seq_len, "--seq-len"),
        batch_sizes=parse_int_list(args.batch_size, "--batch-size") or (1,),
        dtypes=parse_choices(args.dtype, "--dtype", ("float32", "float16", "bfloat16")) or ("bfloat16",),
        attns=parse_choices(args.attn, "--attn", ("sdpa", "eager", "flash")) or ("sdpa",),
        device=args.device,
    )


def _split_options(args: argparse.Namespace) -> dict:
    """--gpus/--memory for the inference split (the lead can feed a GPU catalogue's memory to card_memory)."""
    from .plan.inference_split import card_memory

    if args.gpus is None:
        if args.memory is not None:
            raise UsageError("--memory needs --gpus N")
        return {}
    if args.mode != "inference":
        raise UsageError("--gpus needs --mode inference")
    if args.gpus < 1:
        raise UsageError(f"--gpus `{args.gpus}` must be at least 1")
    return {"gpus": args.gpus, "card_bytes": card_memory(args.memory)}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _emit(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot write `{output}`: {exc.strerror or exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
