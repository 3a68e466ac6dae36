"""The `vramplan` command: parse, run the pipeline, render. No maths here."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from .errors import UsageError, VramplanError, printable
from .measure.weights import DTYPES

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130  # 1 (some models failed) is RunResult.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    with _noting_interrupts() as interrupted:
        try:
            code = _main(argv)
            if not interrupted:
                return code
        except BaseException as exc:  # Ctrl-C anywhere, imports included: one line, no traceback
            if not (isinstance(exc, KeyboardInterrupt) or interrupted):
                raise
        # Also a Ctrl-C that something swallowed (importlib's module-lock callback prints and drops it): the
        # run still ends as interrupted, and write_atomically has left no file.
        print("vramplan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run() -> int:
    """The console script and `python -m vramplan`: main(), and after Ctrl-C an exit status of 130 that holds.

    A Ctrl-C that lands in code a C extension runs through `PyRun_String` during its import (torch's) leaves
    CPython's "unhandled KeyboardInterrupt" flag set even though main() handled it; at exit CPython then kills
    the process with SIGINT (status -2), whatever sys.exit() said. Leaving with os._exit after flushing keeps
    the one line and the 130.
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        import os

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


_INTERRUPTED: list[bool] = []  # an entry once Ctrl-C came, during main()


@contextmanager
def _noting_interrupts():
    """Yield a list that gets an entry on Ctrl-C (which still raises KeyboardInterrupt).

    An interrupt in the middle of torch's or numpy's imports can be swallowed there and resurface as another
    error (a RecursionError from a half-imported numpy): knowing that Ctrl-C came first, main() reports it as one.
    """
    import signal
    import threading

    seen = _INTERRUPTED
    seen.clear()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield seen
        return

    def on_interrupt(signum, frame):
        seen.append(True)
        raise KeyboardInterrupt

    def quiet_unraisable(unraisable):  # the Ctrl-C a callback swallowed: noted above, no traceback for it
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)

    hook = sys.unraisablehook
    signal.signal(signal.SIGINT, on_interrupt)
    sys.unraisablehook = quiet_unraisable
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = hook


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        preload_libraries()
        quiet_library_logs(args.debug)
        return args.handler(args)
    except VramplanError as exc:
        if _INTERRUPTED:  # an error a Ctrl-C caused (an import cut short): main() says "interrupted" alone
            raise KeyboardInterrupt from exc
        if args.debug:
            traceback.print_exc()
        print(printable(f"vramplan: error: {exc}"), file=sys.stderr)
        return exc.exit_code


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


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line: the whole usage block of `estimate` is 30 lines, for a typo."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but an unknown option is reported by the subcommand it was given to."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = [a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            owner = next((c[parsed.command] for c in commands if getattr(parsed, "command", None) in c), self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vramplan",
        description="How much GPU memory a model needs, before you download a single weight.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_estimate(sub)
    _add_report(sub)
    _add_plan(sub)
    _add_list(sub)
    from .cli_plan import add_fit, add_gpus

    add_gpus(sub)
    add_fit(sub)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    p.add_argument("-o", "--output", metavar="FILE", help="write the output to FILE instead of stdout (- is stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no `wrote FILE` line on stderr")


def jobs_option(p: argparse.ArgumentParser) -> None:
    """--jobs: models measured in worker processes (vramplan.workers)."""
    p.add_argument("--jobs", default="auto", metavar="N", type=_jobs,
                   help="processes measuring models at once (default: auto, one per core when two or more models "
                        "are simulated; 1: all in this process); the results are the same")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtypes", nargs="+", default=None, type=_weights_dtype, choices=DTYPES, metavar="DTYPE",
        help="rows of the weights table, any of float32 float16 int8 int4 (default: all); "
        "without --mode inference, --dtype means the same",
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
    g.add_argument("--mode", choices=("weights", "inference", "train"), default="weights",
                   help="weights: loading only (accelerate's table); inference: also the peak of a forward pass; "
                        "train: also the peak of two training steps")
    g.add_argument("--image-size", action="append", default=[], metavar="SIZE[,SIZE]",
                   help="1024 or HEIGHTxWIDTH (768x1344); default: the model's own image size")
    g.add_argument("--seq-len", action="append", default=[], metavar="N[,N]",
                   help="tokens per sequence, text models (default: 512 or the model's limit); audio models: "
                        "samples at 16 kHz (wav2vec2) or mel frames (Whisper, exactly 3000) (default: 30 s)")
    g.add_argument("--input-shape", action="append", default=[], metavar="[NAME:]DIMS[:DTYPE]",
                   help="state the inputs (repeatable, one per input), for factories and torch.hub modules that do "
                        "not take images: 1x16, input_ids:1x128:int64; the first dimension is the batch "
                        "(--batch-size sweeps it); floating inputs default to --dtype; named ones go by keyword")
    g.add_argument("--batch-size", action="append", default=[], metavar="N[,N]", help="default: 1")
    g.add_argument("--dtype", action="append", default=[], metavar="DTYPE[,DTYPE]",
                   help="the simulated dtype: float32, float16 or bfloat16 (default: bfloat16)")
    g.add_argument("--autocast", choices=("bfloat16", "float16"),
                   help="float32 weights, the forward under torch.autocast(DTYPE); its weight-cast cache is "
                        "counted, as under torch.no_grad()")
    g.add_argument("--attn", action="append", default=[], metavar="IMPL[,IMPL]",
                   help="sdpa, eager or flash (flash_attention_2) (default: sdpa)")
    g.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="the simulated target (default: cuda, an H100's kernels and allocator)")
    from .cli_plan import add_fit_options, add_target_options

    add_target_options(g)
    g.add_argument("--fit", action="store_true",
                   help="also find the largest batch per --gpu/--memory card and input size (vramplan fit)")
    add_fit_options(g)
    p.add_argument("--plot", metavar="FILE.png|FILE.svg", help="also draw the report's charts with matplotlib")
    _training_options(p)
    g.add_argument("--gpus", type=int, metavar="N",
                   help="split each case over N cards as device_map='auto' does (accelerate's infer_auto_device_map); "
                        "the card is --gpu or --memory (default: an H100); with --mode train: GPUs per node for "
                        "--strategy (as `vramplan plan`)")
    from .plan.cli_args import add_parallel_options

    add_parallel_options(p.add_argument_group("training across GPUs (--mode train --gpus N)"))
    p.add_argument(
        "--trust-remote-code", "--trust_remote_code", dest="trust_remote_code", action="store_true",
        help="allow a model's own modelling code to run (never implied)",
    )
    jobs_option(p)


def _training_options(p: argparse.ArgumentParser) -> None:
    from .measure.training_cases import OPTIMIZERS, PRECISIONS

    g = p.add_argument_group("training (--mode train): two simulated training steps; also --image-size, --seq-len, "
                             "--batch-size, --attn, --device; comma lists sweep")
    g.add_argument("--precision", action="append", default=[], metavar="P[,P]",
                   help=f"{', '.join(PRECISIONS)} (default: amp-bf16; amp = float32 weights, autocast compute)")
    g.add_argument("--optimizer", action="append", default=[], metavar="OPT[,OPT]",
                   help=f"{', '.join(OPTIMIZERS)} (default: adamw; adamw-8bit: bitsandbytes' state sizes, "
                        "modelled)")
    g.add_argument("--trains", action="append", default=[], metavar="WHAT[,WHAT]",
                   help="full, probe (the head only, as --freeze backbone) or lora (default: full)")
    g.add_argument("--freeze", choices=("none", "backbone"), help="backbone: only the head (linear probe) trains")
    g.add_argument("--lora-rank", type=int, metavar="R", help="train LoRA adapters of rank R (peft)")
    g.add_argument("--lora-targets", metavar="NAMES", help="comma list of module names for LoRA (default: all linear)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in the backward")
    g.add_argument("--num-labels", type=int, default=1000, metavar="N",
                   help="classes of the linear probe on a bare backbone (default: 1000)")


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
    g.add_argument("--entrypoint", action=_InOrder, default=[], metavar="NAME",
                   help="an entrypoint of --hub-repo, e.g. dinov3_vit7b16_dd (repeatable)")
    g.add_argument("--factory", action=_InOrder, default=[], metavar="MODULE:CALLABLE",
                   help="a function returning an nn.Module: package.module:fn or path/to/file.py:fn (repeatable)")
    g.add_argument("--kwarg", action=_InOrder, default=[], metavar="KEY=VALUE",
                   help="keyword argument for the --entrypoint or --factory it follows; before the first of "
                        "them, for all of them (JSON values: 512, true, [1,2]). E.g. --entrypoint a --kwarg "
                        "img_size=512 --entrypoint b --kwarg bpe_path_or_url=vocab.txt.gz")
    p.add_argument("--format", choices=("table", "markdown", "json", "csv", "html"), default="table")
    _common(p)
    p.set_defaults(handler=_run_estimate)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report", help="a report for a family or list of models (default: the dinov3 family)",
        description="Write a VRAM report: title, summary table with status, then each model's table.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL|FAMILY", help="default: dinov3")
    _model_options(p)
    p.add_argument("--format", choices=("text", "markdown", "json", "csv", "html"), default="text")
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

    from .cli_plan import with_fit
    from .report.html import render_html

    run = _estimate(args, [*args.models, *_code_specs(args)])
    return _render(run, args, {
        "html": lambda r: render_html(r, None),
        "table": with_fit(lambda r: render_tables(r, table_width())),
        "markdown": with_fit(lambda r: render_markdown(r, with_summary=False), markdown=True),
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
    from .cli_plan import with_fit
    from .report.html import render_html

    run = _estimate(args, references)
    return _render(run, args, {
        "html": lambda r: render_html(r, title),
        "text": with_fit(lambda r: render_report_text(r, title, table_width())),
        "markdown": with_fit(lambda r: render_markdown(r, title), markdown=True),
        "json": render_json,
        "csv": render_csv,
    })


def _render(run, args: argparse.Namespace, renderers: dict[str, Callable]) -> int:
    """Write the run in the asked format, name each failure once on stderr, and return the exit code."""
    from .cli_plan import write_plot

    from .plan.cli_args import emit_run

    write_plot(run, args)
    output = emit_run(run, args)  # --emit: configs into -o DIR, the report to stdout
    _emit(renderers[args.format](run), output, quiet=args.quiet, what=_count(len(run.models)))
    for line in failure_lines(run):  # stderr, so a script sees failures whatever the format
        print(line, file=sys.stderr)
    return run.exit_code


def _run_list(args: argparse.Namespace) -> int:
    from .pipeline import estimate
    from .report.listing import listing_rows, render_list_json, render_list_table
    from .sources.catalog import catalog_entries

    entries = catalog_entries()
    run = estimate([e.model_id for e in entries], dtypes=("float32",), debug=args.debug)
    rows = listing_rows(entries, run)
    text = render_list_json(rows) if args.format == "json" else render_list_table(rows, table_width())
    _emit(text, args.output, quiet=args.quiet, what=_count(len(rows)))
    return EXIT_OK


def _estimate(args: argparse.Namespace, references: list[str]):
    from .cli_plan import fit_request
    from .pipeline import estimate
    from .progress import run_progress

    if not args.fit and (args.headroom or args.max_image_size):
        raise UsageError("--headroom and --max-image-size go with --fit (or `vramplan fit`)")
    dtypes, inference = _weights_dtypes(args), _inference_request(args)
    if args.fit and args.mode == "weights":
        raise UsageError("--fit needs --mode inference or --mode train")
    fit = fit_request(args, args.mode, strict=False) if args.fit else None
    with run_progress(show_progress(args)) as progress:
        return estimate(
            references,
            fit=fit,
            inference=inference,
            training=_training_request(args),
            **_split_options(args),
            dtypes=dtypes,
            library=args.library,
            trust_remote_code=args.trust_remote_code,
            revision=args.revision,
            timeout=args.timeout,
            checkpoint=args.checkpoint,
            debug=args.debug,
            progress=progress,
            jobs=args.jobs,
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
    specs = []
    for kind, name, kwargs in _code_items(getattr(args, "code_order", []), parse_kwarg):
        if kind == "entrypoint":
            specs.append(DeferredSpec(f"hub:{args.hub_repo}:{name}",
                                      lambda e=name, k=kwargs: hub_entrypoint_spec(args.hub_repo, e, k)))
        else:
            specs.append(DeferredSpec(f"factory:{name}", lambda f=name, k=kwargs: factory_spec(f, k)))
    return specs


class _InOrder(argparse.Action):
    """Append as `action="append"` does, and record (flag, value) in `code_order`, in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        namespace.code_order = [*(getattr(namespace, "code_order", None) or []), (self.dest, values)]


def _code_items(order: list[tuple[str, str]], parse_kwarg: Callable) -> list[tuple[str, str, dict]]:
    """(kind, name, kwargs) per --entrypoint/--factory: each --kwarg goes to the one it follows,
    and those before the first of them go to all of them."""
    shared: dict = {}
    items: list[tuple[str, str, dict]] = []
    for dest, value in order:
        if dest == "kwarg":
            key, parsed = parse_kwarg(value)
            (items[-1][2] if items else shared)[key] = parsed
        else:
            items.append((dest, value, {}))
    return [(kind, name, {**shared, **own}) for kind, name, own in items]


def _inference_request(args: argparse.Namespace):
    """The inference sweep the flags ask for, or None in weights mode."""
    from .measure.cases import (
        MAX_BATCH,
        MAX_SEQ_LEN,
        InferenceRequest,
        parse_choices,
        parse_image_sizes,
        parse_int_list,
        skipped_combinations,
    )
    from .measure.inputs import parse_input_shapes

    from .cli_plan import check_bf16, default_dtypes, targets

    inference_flags = (args.image_size, args.seq_len, args.batch_size, args.attn, args.input_shape, args.gpu,
                       args.memory)
    if args.autocast and args.mode != "inference":
        raise UsageError("--autocast needs --mode inference (training: --precision amp-bf16 or amp-fp16)")
    if args.mode != "inference":
        if args.mode == "train" and args.dtype:
            raise UsageError("--mode train takes --precision, not --dtype")
        if any(inference_flags) and args.mode != "train":
            raise UsageError("--image-size, --seq-len, --input-shape, --batch-size, --attn, --gpu and --memory "
                             "need --mode inference")
        return None
    shapes = parse_input_shapes(args.input_shape)
    if shapes and (args.image_size or args.seq_len):
        raise UsageError("--input-shape states the whole input: leave out --image-size and --seq-len")
    gpu = (targets(args) or (None,))[0]  # the inference table simulates the first card named
    dtypes = parse_choices(args.dtype, "--dtype", ("float32", "float16", "bfloat16")) or default_dtypes(gpu)
    if args.autocast:  # float32 weights under autocast
        if args.dtype and set(dtypes) != {"float32"}:
            raise UsageError("--autocast runs float32 weights: leave out --dtype or give --dtype float32")
        dtypes = ("float32",)
    if args.device == "cuda":
        check_bf16([gpu], dtypes + ((args.autocast,) if args.autocast else ()))
    request = InferenceRequest(
        image_sizes=parse_image_sizes(args.image_size),
        seq_lens=parse_int_list(args.seq_len, "--seq-len", MAX_SEQ_LEN),
        input_shapes=shapes,
        batch_sizes=parse_int_list(args.batch_size, "--batch-size", MAX_BATCH)
        or ((shapes[0].shape[0],) if shapes else (1,)),
        dtypes=dtypes,
        attns=parse_choices(args.attn, "--attn", ("sdpa", "eager", "flash")) or ("sdpa",),
        device=args.device,
        gpu=gpu,
        autocast=args.autocast,
    )
    for note in skipped_combinations(request):  # a UsageError when no pair can run
        print(f"vramplan: note: {note}", file=sys.stderr)
    return request


def _training_request(args: argparse.Namespace, note: bool = True):
    """The training sweep the flags ask for, or None unless --mode train; `note`: say that adamw-8bit is modelled."""
    from .measure.cases import parse_choices, parse_image_sizes, parse_int_list
    from .measure.training_cases import OPTIMIZERS, PRECISIONS, TrainingRequest

    from .cli_plan import check_bf16_training, default_precisions, targets

    flags = (args.precision, args.optimizer, args.trains, args.freeze, args.lora_rank, args.lora_targets,
             args.grad_checkpointing)
    if args.mode != "train":
        if any(f not in (None, [], False) for f in flags):
            raise UsageError("--precision, --optimizer, --trains, --freeze, --lora-rank, --lora-targets and "
                             "--grad-checkpointing need --mode train")
        return None
    if args.lora_rank is not None and args.lora_rank < 1:
        raise UsageError(f"--lora-rank must be a positive whole number, got {args.lora_rank}")
    if args.num_labels < 1:
        raise UsageError(f"--num-labels must be a positive whole number, got {args.num_labels}")
    trains = list(parse_choices(args.trains, "--trains", ("full", "probe", "lora")))
    if args.freeze == "backbone":
        trains.append("probe")
    if args.lora_rank:
        trains.append("lora")
    if args.lora_targets and "lora" not in trains:
        raise UsageError("--lora-targets needs --lora-rank R (or --trains lora)")
    optimizers = parse_choices(args.optimizer, "--optimizer", OPTIMIZERS) or ("adamw",)
    if "adamw-8bit" in optimizers and note:
        print("vramplan: note: adamw-8bit is modelled: bitsandbytes' AdamW8bit state sizes from its source, "
              "not bitsandbytes run", file=sys.stderr)
    gpu = (targets(args) or (None,))[0]  # the training table simulates the first card named
    precisions = parse_choices(args.precision, "--precision", PRECISIONS) or default_precisions(gpu)
    check_bf16_training([gpu], precisions)
    return TrainingRequest(
        image_sizes=parse_image_sizes(args.image_size),
        seq_lens=parse_int_list(args.seq_len, "--seq-len"),
        batch_sizes=parse_int_list(args.batch_size, "--batch-size") or (1,),
        precisions=precisions,
        optimizers=optimizers,
        attns=parse_choices(args.attn, "--attn", ("sdpa", "eager", "flash")) or ("sdpa",),
        device=args.device,
        trains=tuple(dict.fromkeys(trains)) or ("full",),
        grad_checkpointing=args.grad_checkpointing,
        lora_rank=args.lora_rank or 16,
        lora_targets=tuple(t.strip() for t in (args.lora_targets or "").split(",") if t.strip()),
        num_labels=args.num_labels,
        gpu=gpu,
    )


def _split_options(args: argparse.Namespace) -> dict:
    """--gpus for the inference split, over the card --gpu or --memory names (default: an H100)."""
    from .cli_plan import targets
    from .plan.inference_split import card_memory

    from .plan.cli_args import parallel_options

    planned = parallel_options(args)  # --mode train: the strategies, as `vramplan plan` derives them
    if planned is not None:
        return planned
    if args.gpus is None:
        return {}
    if args.mode != "inference":
        raise UsageError("--gpus needs --mode inference or --mode train")
    if args.gpus < 1:
        raise UsageError(f"--gpus `{args.gpus}` must be at least 1")
    card = (targets(args) or (None,))[0]
    return {"gpus": args.gpus, "card_bytes": card.memory_bytes if card is not None else card_memory(None)}


def _jobs(text: str) -> int | str:
    from .workers import parse_jobs

    try:
        return parse_jobs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _emit(text: str, output: str | None, *, quiet: bool = False, what: str = "") -> None:
    """Write to stdout (no -o, or -o -), else whole or not at all to FILE, and say so on stderr."""
    if output in (None, "-"):
        sys.stdout.write(text)
        return
    try:
        write_atomically(Path(output), text)
    except OSError as exc:
        raise UsageError(f"Cannot write `{output}`: {exc.strerror or exc}") from exc
    if not quiet:
        size = len(text.encode("utf-8"))
        print(f"vramplan: wrote {output} ({what}, {size:,} bytes)" if what else f"vramplan: wrote {output}",
              file=sys.stderr)


# --- messages, output and the checks made before any work (issue 8) -----------------------------------------------


def _count(models: int) -> str:
    return f"{models} model" + ("" if models == 1 else "s")


def quiet_library_logs(debug: bool) -> None:
    """transformers' and huggingface_hub's own warnings (`[transformers] Model config: ...`) break the one line
    per fault on stderr: errors only, unless --debug."""
    if debug:
        return
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()


def package_version() -> str:
    """The installed distribution's version, or the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vramplan")
    except PackageNotFoundError:
        return "0+unknown"


def write_atomically(path: Path, text: str) -> None:
    """Write a temporary file beside `path`, then rename it over: a failed or interrupted run leaves no half file."""
    import os
    import tempfile

    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if _INTERRUPTED:  # a Ctrl-C was swallowed on the way: an interrupted run writes nothing
            raise KeyboardInterrupt
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def failure_lines(run) -> list[str]:
    """One stderr line per distinct failure of each model (a sweep's cases may fail for several reasons)."""
    from .results import InferenceFailure

    lines = []
    for model in run.models:
        reasons = [model.error] if model.weights is None else [
            item.reason for item in model.inference if isinstance(item, InferenceFailure)
        ] or [model.error]
        lines += [printable(f"vramplan: {model.model}: {r}") for r in dict.fromkeys(reasons) if r]
    return lines


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar only for a person watching: stdout and stderr on a terminal, no -o FILE, no --quiet."""
    if args.quiet or args.output not in (None, "-"):
        return False
    return sys.stdout.isatty() and sys.stderr.isatty()


def table_width() -> int:
    """Width for new tables: $COLUMNS (or the terminal's), at most 100."""
    import shutil

    return max(40, min(100, shutil.get_terminal_size((100, 24)).columns))


def _weights_dtype(text: str) -> str:
    """argparse type of --dtypes: name --dtype when the value is one of the simulated dtypes."""
    if text == "bfloat16":
        raise argparse.ArgumentTypeError(
            "bfloat16 is not a row of the weights table (float32 float16 int8 int4): "
            "to simulate a forward in bfloat16 use --mode inference --dtype bfloat16")
    return text


def _weights_dtypes(args: argparse.Namespace) -> tuple[str, ...]:
    """The weights table's rows: --dtypes, or (without --mode inference) --dtype, which then means the same."""
    from .measure.cases import parse_choices

    if args.mode == "inference" or not args.dtype:
        return tuple(args.dtypes or DTYPES)
    if args.mode == "train":
        raise UsageError("--mode train takes --precision, not --dtype (fp32, amp-bf16, bf16, ...)")
    if args.dtypes:
        raise UsageError("--dtype and --dtypes both name the weights table's rows here: give one of them "
                         "(--dtype is the simulated dtype only with --mode inference)")
    try:
        return parse_choices(args.dtype, "--dtype", DTYPES)
    except UsageError:
        raise UsageError("--dtype without --mode inference names the weights table's rows: any of "
                         f"{' '.join(DTYPES)}; for a simulated forward add --mode inference") from None


if __name__ == "__main__":
    sys.exit(run())
