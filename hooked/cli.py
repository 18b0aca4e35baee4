"""The ``hooked`` command line.

    hooked models                                   registered models
    hooked hooks MODEL [--checkpoint DIR] [k=v ..]  every hook point and its activation shape
    hooked analyses                                 registered analyses and their options
    hooked run ANALYSIS --model M --hook H [..]     run an analysis, results into a run folder
                                                    (M: a registered model, a Hugging Face folder or a
                                                    .gguf file; --data texts.txt: one text per line)
    hooked repro [NAME] [..]                        list, or run, a paper reproduction
    hooked harvest --model M --hooks H1,H2 --out DIR activations at hooks into a store (hooked.store)
    hooked sae train|eval|texts [..]                sparse autoencoders and transcoders (hooked.sae)
    hooked report RUN_DIR                           (re)build a run folder's report.html

Options of a model, an analysis or a reproduction come from its registered signature (see
:mod:`hooked.registry`); ``hooked run ANALYSIS --help`` lists them. ``--plugin MODULE_OR_FILE``
(repeatable) loads a user's own registrations first; one that fails to load is reported and
skipped. A boolean option ``x`` is ``--x`` / ``--no-x`` (``no_input``: ``--no-input`` /
``--no-no-input``); an option whose flag the command itself uses (``--device``, ``--out``, ...)
is given as ``--analysis-device`` (``--model-``, ``--repro-``) instead; an option named
``device`` is checked as a torch device.

Where results go: ``--out DIR`` is checked before the work starts (not empty, not a file,
writable); a folder holding a finished run (its ``result.json`` / ``results.json``) is replaced
only with ``--overwrite``, except by a reproduction that resumes (``repro onion``), which reuses
the work done there with the same settings. Beside its JSON and PNG files every run writes
``report.html`` (:mod:`hooked.views.report`): what was run (the command, settings, versions and time
taken are recorded in the JSON), the claims table, every figure (interactive where the command gives
a ``report_figures`` function), the numbers and links to every file; ``hooked report RUN_DIR``
rebuilds it from the files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hooked import registry
from hooked.errors import OptionError
from hooked.io import RunDir, to_jsonable
from hooked.protocol import to_device


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = argv
    try:
        with _plugin_warnings_shown():
            registry.load_plugins(args.plugin or [])
            return args.handler(args, rest)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
        if getattr(args, "debug", False):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hooked {args.command}: error: {msg}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _plugin_warnings_shown() -> Iterator[None]:
    """Show a skipped plugin as one line on stderr (not a warning with a source line)."""
    shown = warnings.showwarning

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, registry.PluginWarning):
            print(f"hooked: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


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

    s = sub.add_parser("sae", help="train and evaluate sparse autoencoders / transcoders", add_help=False)
    s.add_argument("action", nargs="?", help="train, eval or texts")
    s.add_argument("-h", "--help", action="store_true")
    s.set_defaults(handler=_cmd_sae)

    s = sub.add_parser("report", help="(re)build a run folder's report.html from its files")
    s.add_argument("run_dir", type=Path, help="a folder written by `hooked run` or `hooked repro`")
    s.set_defaults(handler=_cmd_report)
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
        opts = " ".join(_run_parser(entry, None)[1].values()) if args.kind == "analysis" else ""
        print(f"{name:<{width}}  {entry.help}")
        if opts and args.kind == "analysis":
            print(f"{'':<{width}}  options: {opts}")
    return 0


def _model_parser(
    prog: str, entry: registry.Entry | None, flag_prefix: str = ""
) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser of a model's options, and the flag of each option (by name)."""
    p = _negative_numbers_are_values(argparse.ArgumentParser(prog=prog, add_help=False))
    p.add_argument(
        "--checkpoint", type=Path, help="load trained weights (a checkpoint folder or .safetensors file)"
    )
    p.add_argument("--device", default="cpu", type=_device, help="torch device to run on (default: cpu)")
    flags: dict[str, str] = {}
    if entry is not None:
        g = p.add_argument_group(f"options of model {entry.name!r}")
        flags = _add_options(g, entry, flag_prefix=flag_prefix)
    return p, flags


def _cmd_hooks(args: argparse.Namespace, rest: list[str]) -> int:
    from hooked.protocol import hook_shapes

    entry = _model_entry(args.model) if args.model else None
    p, flags = _model_parser(f"hooked hooks {args.model or 'MODEL'}", entry)
    if args.help or entry is None:
        p.print_help()
        if entry is None:
            print("\nmodels: " + ", ".join(registry.entries("model")))
        return 0
    opts = p.parse_args(rest)
    with _flags_named(flags):
        model, data = _build_model(entry, opts)
    shapes = hook_shapes(model, data)
    width = max((len(n) for n in shapes), default=0)
    for name, hp in model.hook_dict.items():
        shape = shapes.get(name, shapes.get(getattr(hp, "name", None) or name))  # another name of a point
        shown = "not run on the example input" if shape is None else "[" + ", ".join(map(str, shape)) + "]"
        tag = "  (per step)" if getattr(hp, "recurrent", False) else ""
        print(f"{name:<{width}}  {shown}{tag}")
    return 0


def _run_parser(
    entry: registry.Entry | None, model_entry: registry.Entry | None, required: bool = False
) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser of ``hooked run``, and the flag of each option (analysis options by name, model
    options as ``model.NAME``)."""
    name = entry.name if entry is not None else "ANALYSIS"
    p, model_flags = _model_parser(f"hooked run {name}", model_entry, flag_prefix="model-")
    p.add_argument(
        "--model",
        required=required,
        help="registered model name (see `hooked models`), or a Hugging Face folder or .gguf file",
    )
    p.add_argument("--data", type=Path, help="a text file, one text per line: the data (language models)")
    p.add_argument("--hook", required=required, help="hook point name (see `hooked hooks MODEL`)")
    _add_out_options(p, "runs/ANALYSIS-MODEL-TIME")
    flags = {f"model.{k}": v for k, v in model_flags.items()}
    if entry is not None:
        flags.update(_add_options(p.add_argument_group(f"options of analysis {name!r}"), entry))
    return p, flags


def _cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    entry = registry.get("analysis", args.analysis) if args.analysis else None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    known, _ = pre.parse_known_args(rest)
    model_entry = _model_entry(known.model) if known.model else None
    p, flags = _run_parser(entry, model_entry, required=entry is not None and not args.help)
    if args.help or entry is None:
        p.print_help()
        if entry is None:
            print("\nanalyses: " + ", ".join(registry.entries("analysis")))
        return 0
    opts = p.parse_args(rest)
    if opts.out is not None:  # checked before the work starts
        run_dir = RunDir.prepare(opts.out, finished="result.json", overwrite=opts.overwrite)
        _drop_stale_report(run_dir, opts.overwrite)
    assert model_entry is not None  # the parser requires --model when an analysis runs
    with _flags_named({k.removeprefix("model."): v for k, v in flags.items() if k.startswith("model.")}):
        model, data = _build_model(model_entry, opts)
    if opts.data is not None:
        from hooked.lm.loading.command_line import text_data

        data = text_data(model, opts.data, padded=getattr(entry.obj, "masks_padding", False))
    from hooked.protocol import check_hook

    check_hook(model, opts.hook)
    if opts.out is None:
        run_dir = RunDir.create("runs", f"{entry.name}-{model_entry.name}")
    options = _entry_options(entry, opts)
    extra = {"run_dir": run_dir} if entry.takes_run_dir else {}
    when = _now()
    started = time.perf_counter()
    with _flags_named({k: v for k, v in flags.items() if not k.startswith("model.")}):
        result = entry.call(model, opts.hook, data, options=options, **extra)
    seconds = time.perf_counter() - started
    record = {
        "analysis": entry.name,
        "model": model_entry.name,
        "hook": opts.hook,
        "options": options,
        "model_options": _entry_options(model_entry, opts),
        "checkpoint": opts.checkpoint,
        "seconds": seconds,
        "result": result,
        **_provenance(args.argv, when),
    }
    run_dir.json("result.json", record)
    _print_result(result)
    print(f"\nresults written to {run_dir.path}/ ({seconds:.1f} s)")
    _write_report(run_dir.path, entry)
    return 0


def _cmd_repro(args: argparse.Namespace, rest: list[str]) -> int:
    if args.name is None:
        for name, entry in registry.entries("repro").items():
            print(f"{name:<18} {entry.help}")
        return 0
    entry = registry.get("repro", args.name)
    p, flags = _repro_parser(entry)
    if args.help:
        p.print_help()
        return 0
    opts = p.parse_args(rest)
    if opts.out is not None:
        run_dir = RunDir.prepare(
            opts.out, finished="results.json", overwrite=opts.overwrite, resume=entry.resumes
        )
        _drop_stale_report(run_dir, opts.overwrite or entry.resumes)
    else:
        run_dir = RunDir.create("runs", entry.name)
    options = _entry_options(entry, opts)
    when = _now()
    started = time.perf_counter()
    with _flags_named(flags):
        results = entry.call(run_dir, options=options)
    seconds = time.perf_counter() - started
    record = {"repro": entry.name, "options": options, "seconds": seconds, "results": results}
    run_dir.json("results.json", record | _provenance(args.argv, when))
    print(f"\nresults written to {run_dir.path}/ ({seconds:.0f} s)")
    from hooked import distributed

    if distributed.is_main():
        _write_report(run_dir.path, entry)
    return 0


def _repro_parser(entry: registry.Entry) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    p = _negative_numbers_are_values(
        argparse.ArgumentParser(prog=f"hooked repro {entry.name}", description=entry.help)
    )
    _add_out_options(p, "runs/NAME-TIME")
    return p, _add_options(p.add_argument_group("options"), entry)


def _cmd_harvest(args: argparse.Namespace, rest: list[str]) -> int:
    from hooked.store.command import harvest_command

    return harvest_command(
        rest,
        show_help=args.help,
        debug=args.debug,
        model_parser=_model_parser,
        build_model=_build_model,
        find_model=_model_entry,
    )


def _cmd_report(args: argparse.Namespace, rest: list[str]) -> int:
    _no_extra(rest)
    folder = args.run_dir
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder at {folder}")
    entry = None
    for name, key, kind in (("results.json", "repro", "repro"), ("result.json", "analysis", "analysis")):
        try:
            record = json.loads((folder / name).read_text())
            entry = registry.get(kind, record[key])
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    problems = _write_report(folder, entry, quiet=False)
    return 1 if problems else 0


def _cmd_sae(args: argparse.Namespace, rest: list[str]) -> int:
    from hooked.sae.command import sae_command

    return sae_command(
        args.action,
        rest,
        show_help=args.help,
        model_parser=_model_parser,
        build_model=_build_model,
        find_model=_model_entry,
    )


# ---------------------------------------------------------------------- helpers
def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")


def _provenance(argv: list[str], started: str) -> dict[str, Any]:
    """What a report says of the run: the command as typed, when it started, the versions it ran with."""
    import platform
    from importlib import metadata

    import torch

    import hooked

    versions = {"hooked": hooked.__version__, "python": platform.python_version(), "torch": torch.__version__}
    for dist in ("numpy", "transformers", "transformer-lens"):  # read from the metadata: nothing imported
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions["platform"] = platform.platform(terse=True)
    return {"command": ["hooked", *argv], "started": started, "versions": versions}


def _drop_stale_report(run_dir: RunDir, replacing: bool) -> None:
    """A run that replaces (or resumes) the one in its folder removes that run's report.html first, so
    that the page never describes results the folder no longer holds."""
    if replacing:
        from hooked.views.report import REPORT

        (run_dir.path / REPORT).unlink(missing_ok=True)


def _write_report(folder: Path, entry: registry.Entry | None, quiet: bool = True) -> list[str]:
    """Write ``folder/report.html`` with the command's interactive figures (its ``report_figures``).

    The run's results are saved before this runs: a report that cannot be built is a warning, never a
    failed run. Returns the problems found (each naming a file)."""
    from hooked.views.report import write_report

    figures = getattr(entry.obj, "report_figures", None) if entry is not None else None
    try:
        path, problems = write_report(folder, figures=figures)
    except (OSError, ValueError) as e:
        print(f"hooked: warning: report.html not written: {e}", file=sys.stderr)
        return [str(e)]
    for p in problems:
        print(f"hooked: report: {p}", file=sys.stderr)
    print(
        f"report: {path}"
        if quiet or not problems
        else f"report: {path} (built without the files named above)"
    )
    return problems


_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def _negative_numbers_are_values(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let ``--scale -1e-3`` pass a negative number in any notation (argparse itself takes only
    ``-3`` and ``-0.5`` for numbers, and ``-1e-3`` for an unknown option)."""
    if hasattr(p, "_negative_number_matcher"):
        p._negative_number_matcher = _NUMBER
    return p


def _add_out_options(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", type=_out_path, default=None, help=f"run folder (default {default})")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the finished run in --out (refused without it)"
    )


def _out_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; name a run folder (use . for the current one)")
    return Path(text)


def _device(text: str) -> str:
    from hooked.checks import torch_device

    try:
        torch_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


class _Switch(argparse.Action):
    """A boolean option: its first flag sets True, its second (the negation) False.

    Unlike ``argparse.BooleanOptionalAction``, which reads any flag starting with ``--no-`` as a
    negation, this works for an option whose own name starts with ``no_`` (``--no-input`` sets
    ``no_input`` to True, ``--no-no-input`` to False).
    """

    def __init__(self, option_strings: list[str], dest: str, default: Any = None, help: str | None = None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string == self.option_strings[0])

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _add_options(group: Any, entry: registry.Entry, flag_prefix: str = "") -> dict[str, str]:
    """Add ``entry``'s options to ``group``; returns each option's flag by option name.

    An option whose flag (or negation) the command already uses, or that another option of the
    entry took, gets its kind as prefix (``--analysis-device``) until the flag is free; the help
    says so.
    """
    taken = group._option_string_actions  # shared with the parser: every flag defined so far
    flags: dict[str, str] = {}
    for o in entry.options:
        first = name = flag_prefix + o.name.replace("_", "-")
        while any(s in taken for s in _switch_strings(name, o)):
            name = f"{entry.kind}-{name}"
        strings = _switch_strings(name, o)
        note = "" if name == first else f" (given as --{name}: --{first} is taken)"
        kwargs: dict[str, Any] = dict(
            dest=f"{entry.kind}_{o.name}",  # apart from the command's own (device, out, ...)
            default=o.default,
            help=(o.help + f" (default: {o.default})" + note).strip(),
        )
        if o.type is bool:
            group.add_argument(*strings, action=_Switch, **kwargs)
        else:
            kwargs["type"] = _typed(o)
            kwargs["metavar"] = _metavar(o)
            group.add_argument(strings[0], **kwargs)
        flags[o.name] = strings[0]
    return flags


def _switch_strings(name: str, option: registry.Option) -> list[str]:
    """The option strings of an option with flag ``--name`` (a boolean also gets ``--no-name``)."""
    return ["--" + name] + (["--no-" + name] if option.type is bool else [])


@contextlib.contextmanager
def _flags_named(flags: dict[str, str]) -> Iterator[None]:
    """Report an entry's :class:`OptionError` with the flag the user typed (``--batch-size``)."""
    try:
        yield
    except OptionError as e:
        if e.option in flags:
            raise ValueError(e.as_flag(flags[e.option])) from None
        raise


def _typed(option: registry.Option) -> Any:
    def convert(text: str) -> Any:
        try:
            value = registry.parse_value(option, text)
            if option.name == "device" and isinstance(value, str):
                _device(value)
            return value
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

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

    model, data = entry.call(options=_entry_options(entry, opts))
    if opts.checkpoint:
        checkpoint.load_weights(model, opts.checkpoint)
    model = model.to(opts.device)
    model.eval()
    return model, to_device(data, opts.device)


def _model_entry(name: str) -> registry.Entry:
    """A registered model, else a language model's folder or .gguf file
    (:mod:`hooked.lm.loading.command_line`)."""
    from hooked.lm.loading.command_line import is_model_path, path_entry

    if is_model_path(name) and name not in registry.entries("model"):
        return path_entry(name)
    return registry.get("model", name)


def _entry_options(entry: registry.Entry, opts: argparse.Namespace) -> dict[str, Any]:
    """The values of ``entry``'s options (stored as ``KIND_NAME``: see :func:`_add_options`)."""
    return {o.name: getattr(opts, f"{entry.kind}_{o.name}") for o in entry.options}


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
