"""Run one TransformerLens notebook on one backend, in this process, and record what each cell did.

Usage (one fresh process per run: notebooks change global state such as ``torch.set_grad_enabled``)::

    python -m tests.lm.tutorials.runner NOTEBOOK BACKEND MODEL OUT_DIR [--ci] [--cell-timeout S]

``BACKEND`` is ``transformer_lens`` (TransformerLens 4.3's own ``TransformerBridge``, the
reference), ``bridge`` or ``wrap`` (``hooked.lm.load(MODEL, backend=...)``). ``MODEL`` is
``smollm2-135m`` or a Hugging Face model folder. ``--ci`` runs the notebook as TransformerLens's
own CI does: ``GITHUB_ACTIONS=true`` (the notebooks skip their ``if not IN_GITHUB`` parts) and
the cells marked ``# NBVAL_SKIP`` are not run. ``--cell-timeout S`` (default
:data:`CELL_TIMEOUT`) stops a cell that runs longer than ``S`` seconds and records it as
``timeout`` (the run goes on with the next cell); ``record.json`` is rewritten after every cell,
so a run stopped from outside still leaves what it did. Torch runs on one thread
(``$HOOKED_TUTORIAL_THREADS`` to change it): on a shared machine more threads made the small model
35 times slower.

The cells run in an IPython shell (magics, ``display``, ``get_ipython`` as in Jupyter), unchanged
but for the model-loading adaptations of ``notebooks.json``. Every cell starts from the same random
seed on every backend. Plotting libraries are not installed here, so ``plotly`` and ``circuitsvis``
are stand-ins that record the tensors each call would draw (the notebooks' results); nothing else
is replaced. Written to ``OUT_DIR``: ``record.json`` (per cell: status, error, the values it bound
or changed, what it plotted, its expression's value) and ``values.safetensors`` (the tensors).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).with_name("notebooks.json")
THREADS = "HOOKED_TUTORIAL_THREADS"  # torch threads per run (default 1)
CELL_TIMEOUT = 300.0  # seconds one cell may run (SIGALRM), then it is recorded as "timeout"
MAX_ELEMENTS = 20_000_000  # larger tensors are recorded by shape only
SKIP_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "MODEL", "BACKEND", "lm", "reference_bridge"}


# ---------------------------------------------------------------------- the cells
def cells(notebook: str, load: str) -> list[str]:
    """The notebook's code cells with the model-loading adaptations applied (``load``: the call)."""
    data = json.loads(FIXTURE.read_text())
    out = list(data["notebooks"][notebook]["cells"])
    for a in data["adaptations"]:
        if a["notebook"] == notebook:
            out[a["cell"]] = out[a["cell"]].replace(a["old"], a["new"].format(load=load))
    return out


def load_call(backend: str) -> str:
    if backend == "transformer_lens":
        return "reference_bridge(MODEL)"
    return "lm.load(MODEL, backend=BACKEND)"


def reference_bridge(model: str) -> Any:
    """TransformerLens 4.3's own ``TransformerBridge`` (no hooked changes) on ``model``'s weights,
    booted as ``hooked.lm.load`` boots it."""
    import torch
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    from hooked.lm.loading.loader import official_name, resolve

    folder, _ = resolve(model)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    name = official_name(model) if not Path(model).is_dir() else _hub_name(folder)
    return TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tokenizer, device="cpu")


def _hub_name(folder: str) -> str:
    """A folder's model name for TransformerLens (which picks its adapter from the config)."""
    return json.loads((Path(folder) / "config.json").read_text()).get("_name_or_path") or str(folder)


# ---------------------------------------------------------------------- plotting stand-ins
class Recorder:
    """Stand-ins for ``plotly`` and ``circuitsvis``: every call is recorded with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def function(self, qualname: str) -> Any:
        recorder = self

        def call(*args: Any, **kwargs: Any) -> Any:
            recorder.calls.append((qualname, args, kwargs))
            return Figure()

        call.__qualname__ = qualname
        return call

    def install(self) -> None:
        plotly = types.ModuleType("plotly")
        express = types.ModuleType("plotly.express")
        for fn in ("imshow", "line", "scatter", "bar", "histogram"):
            setattr(express, fn, self.function(f"px.{fn}"))
        pio = types.ModuleType("plotly.io")
        pio.renderers = types.SimpleNamespace(default="notebook")
        plotly.express, plotly.io = express, pio
        cv = types.ModuleType("circuitsvis")
        attention = types.ModuleType("circuitsvis.attention")
        for fn in ("attention_heads", "attention_pattern", "attention_patterns"):
            setattr(attention, fn, self.function(f"cv.attention.{fn}"))
        examples = types.ModuleType("circuitsvis.examples")
        examples.hello = self.function("cv.examples.hello")
        cv.attention, cv.examples = attention, examples
        sys.modules.update(
            {
                "plotly": plotly,
                "plotly.express": express,
                "plotly.io": pio,
                "circuitsvis": cv,
                "circuitsvis.attention": attention,
                "circuitsvis.examples": examples,
            }
        )


class Figure:
    """What a stand-in plotting call returns: accepts every method, draws nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self if name != "show_code" else "<figure>"

    def _repr_html_(self) -> str:
        return "<figure>"


# ---------------------------------------------------------------------- recording values
class Values:
    """Converts a cell's values into JSON (with references to tensors kept aside)."""

    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}

    def convert(self, value: Any, key: str, depth: int = 0) -> Any:
        import numpy as np
        import torch

        if isinstance(value, (bool, int, float, str)) or value is None:
            if isinstance(value, float) and value != value:
                return {"float": "nan"}
            return value
        if isinstance(value, np.ndarray) and value.dtype != object:
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        if isinstance(value, torch.Tensor):
            t = value.detach()
            if t.numel() > MAX_ELEMENTS:
                return {"shape": list(t.shape), "dtype": str(t.dtype), "too_large": True}
            complex_ = t.is_complex()
            t = torch.view_as_real(t.resolve_conj()) if complex_ else t
            t = t.to("cpu").contiguous().clone()
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()
            self.tensors[key] = t
            return {"tensor": key, "shape": list(value.shape), "dtype": str(value.dtype), "complex": complex_}
        if depth >= 4:
            return {"type": type(value).__name__}
        if isinstance(value, (list, tuple)):
            if len(value) > 2000:
                return {"type": type(value).__name__, "len": len(value)}
            return {"seq": [self.convert(v, f"{key}/{i}", depth + 1) for i, v in enumerate(value)]}
        if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
            if len(value) > 2000:
                return {"type": "dict", "len": len(value)}
            return {"dict": {str(k): self.convert(v, f"{key}/{k}", depth + 1) for k, v in value.items()}}
        return {"type": type(value).__name__}


def _signature(value: Any) -> Any:
    """What changes when a value is rebound or edited in place (a tensor's version counter)."""
    import torch

    if isinstance(value, torch.Tensor):
        return (id(value), value._version)
    return id(value)


def _recordable(value: Any) -> bool:
    import numpy as np
    import torch

    plain = (bool, int, float, str, list, tuple, dict, torch.Tensor, np.ndarray, np.integer, np.floating)
    return isinstance(value, plain) and not isinstance(value, type)


# ---------------------------------------------------------------------- the run
class CellTimeout(BaseException):
    """Raised inside a cell that ran past its time (a BaseException: no ``except Exception`` in a
    notebook's cell swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`CellTimeout` in this (main) thread after ``seconds`` (None: no limit)."""
    if not seconds:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CellTimeout(f"the cell ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(
    notebook: str, backend: str, model: str, out: Path, ci: bool = False, cell_timeout: float | None = None
) -> dict:
    os.environ.setdefault("TQDM_DISABLE", "1")
    if ci:
        os.environ["GITHUB_ACTIONS"] = "true"
    else:
        os.environ.pop("GITHUB_ACTIONS", None)
    recorder = Recorder()
    recorder.install()

    import numpy as np
    import torch
    from IPython.core.interactiveshell import InteractiveShell

    # one thread: on a shared machine torch's worker threads wait on each other (a forward of the small
    # model took 4.7 s with 2 threads at load 12, 0.13 s with 1); THREADS overrides it
    torch.set_num_threads(int(os.environ.get(THREADS, "1")))
    shell = InteractiveShell.instance(colors="NoColor")
    shell.extension_manager.load_extension("storemagic")  # as an IPython kernel starts (Jupyter, nbval)
    shell.user_ns.update(MODEL=model, BACKEND=backend, reference_bridge=reference_bridge)
    if backend != "transformer_lens":
        from hooked import lm

        shell.user_ns["lm"] = lm
    values = Values()
    record: dict[str, Any] = {"notebook": notebook, "backend": backend, "model": model, "ci": ci, "cells": []}
    for i, source in enumerate(cells(notebook, load_call(backend))):
        entry: dict[str, Any] = {"cell": i}
        record["cells"].append(entry)
        if ci and "NBVAL_SKIP" in source:
            entry["status"] = "skipped"
            continue
        before = {k: _signature(v) for k, v in shell.user_ns.items()}
        recorder.calls.clear()
        random.seed(i)
        np.random.seed(i)
        torch.manual_seed(i)
        stdout = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
            try:
                with time_limit(CELL_TIMEOUT if cell_timeout is None else cell_timeout):
                    result = shell.run_cell(source, store_history=True)
            except CellTimeout as e:  # raised between the cell's end and the limit's removal
                result = types.SimpleNamespace(
                    success=False, error_before_exec=None, error_in_exec=e, result=None
                )
        entry["seconds"] = round(time.perf_counter() - start, 3)
        error = result.error_before_exec or result.error_in_exec
        entry["status"] = "ok" if result.success else "error"
        if isinstance(error, CellTimeout):
            entry["status"] = "timeout"
        if error is not None:
            entry["error"] = f"{type(error).__name__}: {error}"[:2000]
            entry["traceback"] = "".join(traceback.format_exception(error))[-4000:]
        entry["stdout"] = stdout.getvalue()[-4000:]
        changed = {}
        for name, value in list(shell.user_ns.items()):
            if name.startswith("_") or name in SKIP_NAMES or not _recordable(value):
                continue
            if before.get(name) != _signature(value):
                changed[name] = values.convert(value, f"{i}/{name}")
        entry["values"] = changed
        entry["plots"] = [
            {
                "fn": fn,
                "args": values.convert(list(args), f"{i}/plot{j}/args"),
                "kwargs": values.convert({k: v for k, v in kwargs.items()}, f"{i}/plot{j}/kwargs"),
            }
            for j, (fn, args, kwargs) in enumerate(recorder.calls)
        ]
        if result.result is not None and _recordable(result.result):
            entry["result"] = values.convert(result.result, f"{i}/result")
        _write_json(out / "record.json", record)
    from safetensors.torch import save_file

    save_file(values.tensors, str(out / "values.safetensors.tmp"))
    os.replace(out / "values.safetensors.tmp", out / "values.safetensors")
    _write_json(out / "record.json", {**record, "finished": True})
    return record


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    ci = "--ci" in argv
    args = [a for a in argv if a != "--ci"]
    timeout = None
    if "--cell-timeout" in args:
        i = args.index("--cell-timeout")
        timeout = float(args[i + 1])
        del args[i : i + 2]
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    notebook, backend, model, out = args
    record = run(notebook, backend, model, Path(out), ci=ci, cell_timeout=timeout)
    statuses = [c["status"] for c in record["cells"]]
    print(json.dumps({s: statuses.count(s) for s in sorted(set(statuses))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
