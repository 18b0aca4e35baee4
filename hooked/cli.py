"""The ``hooked`` command line.

    hooked models                                   registered models
    hooked hooks MODEL [--checkpoint DIR] [k=v ..]  every hook point and its activation shape
    hooked analyses                                 registered analyses and their options
    hooked run ANALYSIS --model M --hook H [..]     run an analysis, results into a run folder
    hooked repro [NAME] [..]                        list, or run, a paper reproduction
    hooked harvest --model M --hooks H1,H2 --out DIR activations at hooks into a store (hooked.store)

Options of a model, an analysis or a reproduction come from its registered signature (see
:mod:`hooked.registry`); ``hooked run ANALYSIS --help`` lists them. ``--plugin MODULE_OR_FILE``
(repeatable) loads a user's own registrations first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hooked import registry
from hooked.io import RunDir, to_jsonable
from hooked.protocol import to_device


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        registry.load_plugins(args.plugin or [])
        return args.handler(args, rest)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
        if getattr(args, "debug", False):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hooked {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hooked", description="Named hook points, interventions and analyses for any PyTorch model."
    )
    p.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE_OR_FILE",
        help="import a module or .py file that registers models/analyses/repros (repeatable)",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("models", help="list registered models")
    s.set_defaults(handler=_cmd_list, kind="model")
    s = sub.add_parser("analyses", help="list registered analyses")
    s.set_defaults(handler=_cmd_list, kind="analysis")

    s = sub.add_parser("hooks", help="every hook point of a model with its activation shape", add_help=False)
    s.add_argument("model", nargs="?")
    s.add_argument("-h", "--help", action="store_true")
    s.set_defaults(handler=_cmd_hooks)

    s = sub.add_parser("run", help="run a registered analysis at a hook point", add_help=False)
    s.add_argument("analysis", nargs="?")
    s.add_argument("-h", "--help", action="store_true")
    s.set_defaults(handler=_cmd_run)

    s = sub.add_parser("repro", help="list or run a paper reproduction", add_help=False)
    s.add_argument("name", nargs="?")
    s.add_argument("-h", "--help", action="store_true")
    s.set_defaults(handler=_cmd_repro)

    s = sub.add_parser("harvest", help="write activations at hooks to an on-disk store", add_help=False)
    s.add_argument("-h", "--help", action="store_true")
    s.set_defaults(handler=_cmd_harvest)
    return p


# ---------------------------------------------------------------------- commands
def _cmd_list(args: argparse.Namespace, rest: list[str]) -> int:
    _no_extra(rest)
    table = registry.entries(args.kind)
    if not table:
        print(f"no {args.kind} registered")
        return 0
    width = max(len(n) for n in table)
    for name, entry in table.items():
        opts = " ".join(o.flag for o in entry.options)
        print(f"{name:<{width}}  {entry.help}")
        if opts and args.kind == "analysis":
            print(f"{'':<{width}}  options: {opts}")
    return 0


def _model_parser(prog: str, entry: registry.Entry | None, flag_prefix: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=False)
    p.add_argument(
        "--checkpoint", type=Path, help="load trained weights (a checkpoint folder or .safetensors file)"
    )
    p.add_argument("--device", default="cpu", help="torch device to run on (default: cpu)")
    if entry is not None:
        g = p.add_argument_group(f"options of model {entry.name!r}")
        _add_options(g, entry.options, dest_prefix="model_", flag_prefix=flag_prefix)
    return p


def _cmd_hooks(args: argparse.Namespace, rest: list[str]) -> int:
    from hooked.protocol import hook_shapes

    entry = registry.get("model", args.model) if args.model else None
    p = _model_parser(f"hooked hooks {args.model or 'MODEL'}", entry)
    if args.help or entry is None:
        p.print_help()
        if entry is None:
            print("\nmodels: " + ", ".join(registry.entries("model")))
        return 0
    opts = p.parse_args(rest)
    model, data = _build_model(entry, opts)
    shapes = hook_shapes(model, data)
    width = max((len(n) for n in shapes), default=0)
    for name, hp in model.hook_dict.items():
        shape = shapes.get(name)
        shown = "not run on the example input" if shape is None else "[" + ", ".join(map(str, shape)) + "]"
        tag = "  (per step)" if getattr(hp, "recurrent", False) else ""
        print(f"{name:<{width}}  {shown}{tag}")
    return 0


def _cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    entry = registry.get("analysis", args.analysis) if args.analysis else None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    known, _ = pre.parse_known_args(rest)
    model_entry = registry.get("model", known.model) if known.model else None
    p = _model_parser(f"hooked run {args.analysis or 'ANALYSIS'}", model_entry, flag_prefix="model-")
    p.add_argument(
        "--model",
        required=entry is not None and not args.help,
        help="registered model name (see `hooked models`)",
    )
    p.add_argument(
        "--hook",
        required=entry is not None and not args.help,
        help="hook point name (see `hooked hooks MODEL`)",
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/ANALYSIS-MODEL-TIME)")
    if entry is not None:
        _add_options(p.add_argument_group(f"options of analysis {entry.name!r}"), entry.options)
    if args.help or entry is None:
        p.print_help()
        if entry is None:
            print("\nanalyses: " + ", ".join(registry.entries("analysis")))
        return 0
    opts = p.parse_args(rest)
    model, data = _build_model(model_entry, opts)
    from hooked.protocol import check_hook

    check_hook(model, opts.hook)
    run_dir = RunDir(opts.out) if opts.out else RunDir.create("runs", f"{entry.name}-{model_entry.name}")
    options = {o.name: getattr(opts, o.name) for o in entry.options}
    extra = {"run_dir": run_dir} if entry.takes_run_dir else {}
    started = time.perf_counter()
    result = entry.call(model, opts.hook, data, options=options, **extra)
    seconds = time.perf_counter() - started
    record = {
        "analysis": entry.name,
        "model": model_entry.name,
        "hook": opts.hook,
        "options": options,
        "model_options": _model_options(model_entry, opts),
        "checkpoint": opts.checkpoint,
        "seconds": seconds,
        "result": result,
    }
    run_dir.json("result.json", record)
    _print_result(result)
    print(f"\nresults written to {run_dir.path}/ ({seconds:.1f} s)")
    return 0


def _cmd_repro(args: argparse.Namespace, rest: list[str]) -> int:
    if args.name is None:
        for name, entry in registry.entries("repro").items():
            print(f"{name:<18} {entry.help}")
        return 0
    entry = registry.get("repro", args.name)
    p = argparse.ArgumentParser(prog=f"hooked repro {entry.name}", description=entry.help)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/NAME-TIME)")
    _add_options(p.add_argument_group("options"), entry.options)
    if args.help:
        p.print_help()
        return 0
    opts = p.parse_args(rest)
    run_dir = RunDir(opts.out) if opts.out else RunDir.create("runs", entry.name)
    options = {o.name: getattr(opts, o.name) for o in entry.options}
    started = time.perf_counter()
    results = entry.call(run_dir, options=options)
    seconds = time.perf_counter() - started
    run_dir.json(
        "results.json", {"repro": entry.name, "options": options, "seconds": seconds, "results": results}
    )
    print(f"\nresults written to {run_dir.path}/ ({seconds:.0f} s)")
    return 0


def _cmd_harvest(args: argparse.Namespace, rest: list[str]) -> int:
    from hooked.store.command import harvest_command

    return harvest_command(rest, show_help=args.help, model_parser=_model_parser, build_model=_build_model)


# ---------------------------------------------------------------------- helpers
def _add_options(
    group: Any, options: list[registry.Option], dest_prefix: str = "", flag_prefix: str = ""
) -> None:
    for o in options:
        flag = "--" + flag_prefix + o.name.replace("_", "-")
        kwargs: dict[str, Any] = dict(
            dest=dest_prefix + o.name, default=o.default, help=(o.help + f" (default: {o.default})").strip()
        )
        if o.type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            kwargs["type"] = _typed(o)
            kwargs["metavar"] = _metavar(o)
            group.add_argument(flag, **kwargs)


def _typed(option: registry.Option) -> Any:
    def convert(text: str) -> Any:
        try:
            return registry.parse_value(option, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{option.flag}: {e}") from None

    convert.__name__ = getattr(option.type, "__name__", "value")
    return convert


def _metavar(option: registry.Option) -> str:
    import typing

    args = typing.get_args(option.type)
    if typing.get_origin(option.type) is typing.Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if typing.get_origin(option.type) in (list, tuple):
        return "A,B,..."
    return getattr(option.type, "__name__", "VALUE").upper()


def _build_model(entry: registry.Entry, opts: argparse.Namespace) -> tuple[Any, Any]:
    from hooked import checkpoint

    model, data = entry.call(options=_model_options(entry, opts))
    if opts.checkpoint:
        checkpoint.load_weights(model, opts.checkpoint)
    model = model.to(opts.device)
    model.eval()
    return model, to_device(data, opts.device)


def _model_options(entry: registry.Entry, opts: argparse.Namespace) -> dict[str, Any]:
    return {o.name: getattr(opts, "model_" + o.name) for o in entry.options}


def _print_result(result: Any) -> None:
    report = getattr(result, "report", None)
    if callable(report):
        print(report())
        return
    text = json.dumps(to_jsonable(result), indent=2)
    lines = text.splitlines()
    if len(lines) > 60:
        lines = lines[:60] + [f"... ({len(lines) - 60} more lines in result.json)"]
    print("\n".join(lines))


def _no_extra(rest: list[str]) -> None:
    if rest:
        raise ValueError(f"unexpected arguments: {' '.join(rest)}")


if __name__ == "__main__":
    raise SystemExit(main())
