"""The registry of models, analyses and reproductions that the command line offers.

Three decorators add to it; each works bare or with a name::

    @hooked.register_model("toy-relu")
    def toy_relu(*, n_features: int = 5, d_hidden: int = 2):
        model = ToyReLU(n_features, d_hidden)
        return model, example_batch          # (model, a batch to run it on)

    @hooked.register_analysis
    def my_norms(model, hook, data, *, top: int = 5):
        '''Mean activation norm at a hook.'''
        ...                                  # returns a JSON-able result

    @hooked.register_repro("tms")
    def tms(run_dir, *, quick: bool = False) -> dict: ...

An analysis that reduces over tokens and leaves padding out declares ``masks_padding = True``
(an attribute of the function): ``hooked run --data texts.txt`` then gives it padded batches
(``{"input_ids", "attention_mask"}``); otherwise one text per batch.

Keyword options with defaults become command-line flags (``--top 3``), typed from their
annotations (int, float, str, bool, Literal choices, lists as ``1,2,3``); their help comes from
the docstring's ``Args:`` section. A class registers the same way: its ``__init__`` options become
flags and the instance is called like the function.

Where entries come from: the entry-point groups ``hooked.models``, ``hooked.analyses`` and
``hooked.repros`` of every installed package (this project's own models, analyses and paper
reproductions come in that way too, from its ``pyproject.toml``; the registry names no package),
loaded on first use, not at ``import hooked``; and any module or ``.py`` file named with
``--plugin`` or in the ``HOOKED_PLUGINS`` environment variable.

A plugin or entry point that fails to import is reported (a :class:`PluginWarning`) and skipped:
it never breaks the command line for the other entries. Names are unique per kind: a plugin or a
script cannot take a name that an installed entry point provides (``spotlight``), whatever the
order things load in; the registration raises, naming both.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

KINDS = ("model", "analysis", "repro")
ENTRY_POINT_GROUPS = {"model": "hooked.models", "analysis": "hooked.analyses", "repro": "hooked.repros"}

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """One keyword option of a registered entry, as a command-line flag."""

    name: str
    type: Any
    default: Any
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class PluginWarning(UserWarning):
    """A plugin or an installed entry point could not be loaded, or clashed with a name; it is skipped."""


@dataclass
class Entry:
    kind: str
    name: str
    obj: Callable
    help: str
    source: str
    options: list[Option] = field(default_factory=list)

    def call(self, *args: Any, options: dict[str, Any] | None = None, **call_kwargs: Any) -> Any:
        """Call the entry with its keyword ``options``: a function as ``fn(*args, **options,
        **call_kwargs)``, a class as ``cls(**options)(*args, **call_kwargs)``."""
        options = options or {}
        if inspect.isclass(self.obj):
            instance: Any = self.obj(**options)  # a class entry's instances are callable
            return instance(*args, **call_kwargs)
        return self.obj(*args, **options, **call_kwargs)

    @property
    def resumes(self) -> bool:
        """Whether the entry resumes an earlier run in its run folder (reusing only the work done
        with the same settings) instead of needing a fresh folder; set by ``obj.resumes = True``."""
        return bool(getattr(self.obj, "resumes", False))

    @property
    def takes_run_dir(self) -> bool:
        """Whether the call accepts a ``run_dir`` keyword (for plots and files)."""
        target = self.obj.__call__ if inspect.isclass(self.obj) else self.obj
        return "run_dir" in inspect.signature(target).parameters


_REGISTRY: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
_loaded_entry_points = False
_loaded_plugins: set[str] = set()
_entry_point_values: dict[str, dict[str, str]] = {}  # kind -> entry point name -> "module:attr"


# ---------------------------------------------------------------------- registering
def _register(kind: str, name_or_obj: Any, help: str | None, entry_point: str | None = None) -> Any:
    def add(obj: T, name: str | None = None) -> T:
        if not callable(obj):
            raise TypeError(f"register_{kind} needs a function or class, got {type(obj).__name__}")
        entry_name = name or _default_name(obj)
        table = _REGISTRY[kind]
        old = table.get(entry_name)
        article = "an" if kind[0] in "aeiou" else "a"
        if old is not None and _qualified(old.obj) != _qualified(obj):
            raise ValueError(
                f"{article} {kind} named {entry_name!r} is already registered (by {_qualified(old.obj)}); "
                f"choose another name for {_qualified(obj)}"
            )
        provided = None if entry_point is not None else _entry_point_values_of(kind).get(entry_name)
        if provided is not None and provided.partition(":")[0] != getattr(obj, "__module__", None):
            raise ValueError(
                f"{article} {kind} named {entry_name!r} is provided by the installed entry point "
                f"{provided}; choose another name for {_qualified(obj)}"
            )
        table[entry_name] = Entry(
            kind=kind,
            name=entry_name,
            obj=obj,
            help=help or _first_line(obj),
            source=getattr(obj, "__module__", "?"),
            options=options_of(obj, skip=_POSITIONAL[kind]),
        )
        return obj

    if isinstance(name_or_obj, str) or name_or_obj is None:
        return lambda obj: add(obj, name_or_obj)
    return add(name_or_obj)


# Positional parameters each kind receives from the command line (not options).
_POSITIONAL = {"model": 0, "analysis": 3, "repro": 1}


def register_model(name: str | Callable | None = None, *, help: str | None = None) -> Any:
    """Register ``fn(**options) -> (model, batch)`` under ``name`` (default: the function's)."""
    return _register("model", name, help)


def register_analysis(name: str | Callable | None = None, *, help: str | None = None) -> Any:
    """Register ``fn(model, hook, data, **options) -> result`` (or a class of that shape).

    ``data`` is one batch or a list of batches; a ``run_dir`` keyword, if the function takes
    one, receives the run folder for plots.
    """
    return _register("analysis", name, help)


def register_repro(name: str | Callable | None = None, *, help: str | None = None) -> Any:
    """Register ``fn(run_dir, **options) -> results`` as ``hooked repro NAME``."""
    return _register("repro", name, help)


# ---------------------------------------------------------------------- looking up
def entries(kind: str) -> dict[str, Entry]:
    """Every registered entry of ``kind`` ('model', 'analysis' or 'repro'), loading sources first."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    load_all()
    return dict(sorted(_REGISTRY[kind].items()))


def get(kind: str, name: str) -> Entry:
    table = entries(kind)
    if name in table:
        return table[name]
    import difflib

    close = difflib.get_close_matches(name, table, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    known = ", ".join(table) or "none"
    raise KeyError(f"no {kind} named {name!r}.{hint} Registered: {known}")


def load_all() -> None:
    load_entry_points()
    load_plugins(os.environ.get("HOOKED_PLUGINS", "").replace(",", os.pathsep).split(os.pathsep))


def load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    from importlib.metadata import entry_points

    for kind, group in ENTRY_POINT_GROUPS.items():
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
                if inspect.ismodule(obj):
                    continue  # importing it ran its decorators
                if not any(e.obj is obj for e in _REGISTRY[kind].values()):
                    _register(kind, ep.name, None, entry_point=ep.value)(obj)
            except Exception as e:  # a broken plugin must not break the command line
                _skip(f"entry point {ep.name!r} ({ep.value}) of group {group}", e)


def _entry_point_values_of(kind: str) -> dict[str, str]:
    """Names of the installed entry points of ``kind`` -> their ``module:attr`` (read from package
    metadata, nothing imported), so that a plugin cannot take a name one of them provides."""
    if kind not in _entry_point_values:
        from importlib.metadata import entry_points

        try:
            _entry_point_values[kind] = {
                ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUPS[kind])
            }
        except Exception:  # unreadable metadata: nothing to protect
            _entry_point_values[kind] = {}
    return _entry_point_values[kind]


def load_plugins(specs: Iterable[str], *, strict: bool = False) -> None:
    """Import plugin modules (``pkg.module``) or files (``path/to/file.py``) once each.

    A plugin that is missing or fails to import (an exception at import, a name that clashes with
    a registered one) is reported as a :class:`PluginWarning` and skipped, so that one broken
    plugin does not take the rest of the command line with it; ``strict=True`` raises instead.
    """
    for spec in specs:
        spec = spec.strip()
        if not spec or spec in _loaded_plugins:
            continue
        _loaded_plugins.add(spec)
        before = {kind: set(table) for kind, table in _REGISTRY.items()}
        try:
            _import_plugin(spec)
        except Exception as e:
            for kind, table in _REGISTRY.items():  # nothing half-registered
                for name in set(table) - before[kind]:
                    del table[name]
            if strict:
                raise
            _skip(f"plugin {spec!r}", e)


def _import_plugin(spec: str) -> None:
    if not (spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec)):
        importlib.import_module(spec)
        return
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"plugin file not found: {path}")
    # one module per file: two plugin files with the same name in different folders stay apart
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"hooked_plugin_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"plugin file {path} is not a Python module (a .py file)")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise


def _skip(what: str, error: BaseException) -> None:
    warnings.warn(f"{what} skipped: {type(error).__name__}: {error}", PluginWarning, stacklevel=3)


# ---------------------------------------------------------------------- options from signatures
def options_of(obj: Callable, skip: int = 0) -> list[Option]:
    """The keyword options (parameters with defaults) of a function or a class's ``__init__``."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    target = inspect.unwrap(target)
    hints = _type_hints(target)
    docs = _arg_docs(inspect.getdoc(obj) or "") | _arg_docs(inspect.getdoc(target) or "")
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(obj):
        params = params[1:]  # self
        skip = 0  # the positional arguments go to the instance's call, not to __init__
    out = []
    for i, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "run_dir":
            continue
        if i < skip and p.kind != p.KEYWORD_ONLY:
            continue
        if p.default is p.empty:
            continue
        out.append(Option(p.name, hints.get(p.name, type(p.default)), p.default, docs.get(p.name, "")))
    return out


def _type_hints(fn: Callable) -> dict[str, Any]:
    """Resolved annotations; where the whole set cannot be resolved, each one on its own."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    hints = {}
    namespace = {**vars(typing), **getattr(fn, "__globals__", {})}
    for name, ann in getattr(fn, "__annotations__", {}).items():
        try:
            hints[name] = eval(ann, namespace) if isinstance(ann, str) else ann
        except Exception:
            continue
    return hints


def parse_value(option: Option, text: str) -> Any:
    """Convert command-line text to the option's annotated type."""
    return _converter(option.type)(text)


def _converter(tp: Any) -> Callable[[str], Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        conv = _converter(inner[0]) if len(inner) == 1 else str

        def optional(text: str) -> Any:
            return None if text.lower() in ("none", "null", "") else conv(text)

        return optional
    if origin is Literal:
        choices = {str(a): a for a in args}

        def literal(text: str) -> Any:
            if text not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
            return choices[text]

        return literal
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        item = _converter(args[0] if args else str)
        return lambda text: [item(t) for t in text.split(",") if t.strip()]
    if tp is bool:
        return _parse_bool
    if tp is float:
        return _parse_float
    if tp is int:
        return _parse_int
    if tp is str:
        return str
    if tp is Path:
        return Path
    return str


def _parse_int(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**63:  # what torch can hold; a bigger size or count means a typo
        raise ValueError(f"{text} is out of range (a 64-bit integer)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if value != value:
        raise ValueError(f"expected a number, got {text!r}")
    return value


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _arg_docs(doc: str) -> dict[str, str]:
    """``name: text`` lines of a Google-style ``Args:`` section."""
    out: dict[str, str] = {}
    in_args, current, indent = False, None, 0
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Options:", "Parameters:"):
            in_args = True
            continue
        if not in_args:
            continue
        if stripped and not line.startswith((" ", "\t")):
            break
        m = re.match(r"\s+(\w+)(?:\s*\(.*?\))?:\s*(.*)", line)
        depth = len(line) - len(line.lstrip())
        if m and (current is None or depth <= indent):  # a new name, not a continuation line
            current, indent = m.group(1), depth
            out[current] = m.group(2)
        elif current and stripped:
            out[current] += " " + stripped
    return out


def _default_name(obj: Any) -> str:
    """``my_analysis`` -> ``my-analysis``; ``CountZeros`` -> ``count-zeros``."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", obj.__name__.strip("_"))
    return name.replace("_", "-").lower()


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
