"""The layers of the source tree point one way, and no modules import each other in a circle.

Read from the source (every ``import``, also those inside functions), not from what a run happens
to import:

* the core (``hooked`` and its modules) imports nothing above it;
* the language-model layer (``hooked.lm``) imports the core and itself only;
* ``hooked.models`` imports the core and the LM layer;
* ``hooked.views`` (HTML views and report pages) imports the core; analyses and the top use it;
* ``interventions`` and ``analyses`` import the core only (never the LM layer, a concrete model or
  a reproduction: what they need of a kind of model comes through the core's protocol, e.g. the
  sweep strategies of ``hooked.sweeps``); ``analyses`` may use ``interventions``, not the other
  way round;
* ``hooked.sae`` (dictionaries) imports the core; of its modules only ``hooked.sae.evaluation``
  uses the LM layer; nothing in the core or the LM layer imports it;
* ``papers`` and the command line (``hooked.cli``, ``hooked.__main__``, ``hooked.store.command``)
  sit on top;
* nothing in the installed packages imports ``benchmarks`` or ``tests``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hooked", "interventions", "analyses", "papers")
# the command line; hooked.store.command is ``hooked harvest``, imported only by hooked.cli, and
# tokenizes --data texts with hooked.lm
TOP = {"hooked.cli", "hooked.__main__", "hooked.store.command"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` imports (a ``from X import name`` of a submodule counts as it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        for t in targets:
            while t and t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t.split(".")[0] in (*PACKAGES, "benchmarks", "tests"):
                found.add(t)
    return found


def layer(module: str) -> str:
    if module in TOP or module.startswith("papers"):
        return "top"
    if module.startswith("hooked.models"):
        return "models"
    if module.startswith("hooked.sae"):
        return "sae"
    if module.startswith("hooked.views"):
        return "views"
    if module == "hooked.lm" or module.startswith("hooked.lm."):
        return "lm"
    if module.startswith(("interventions", "analyses")):
        return module.split(".")[0]
    if module.startswith("hooked"):
        return "core"
    return "outside"  # benchmarks, tests


ALLOWED = {
    "core": {"core"},
    "lm": {"core", "lm"},
    "models": {"core", "lm", "models"},
    "views": {"core", "views"},
    "interventions": {"core", "interventions"},
    "analyses": {"core", "interventions", "analyses", "views"},
    "sae": {"core", "sae"},
    "top": {"core", "lm", "models", "interventions", "analyses", "views", "sae", "top"},
}
SAE_ON_LM = {"hooked.sae.evaluation"}  # the dictionary modules that may use hooked.lm

GRAPH = {m: _imports(p, _modules()) - {m} for m, p in _modules().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    allowed = ALLOWED[layer(module)] | ({"lm"} if module in SAE_ON_LM else set())
    wrong = sorted(t for t in GRAPH[module] if layer(t) not in allowed)
    assert not wrong, f"{module} ({layer(module)}) imports {wrong}, which sit above it or outside the package"


def test_only_the_evaluation_of_hooked_sae_uses_the_language_models():
    users = sorted(m for m in GRAPH if layer(m) == "sae" and any(t.startswith("hooked.lm") for t in GRAPH[m]))
    assert users == sorted(SAE_ON_LM)


def test_no_modules_import_each_other_in_a_circle():
    # Tarjan's strongly connected components over the module graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other in a circle: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path):
    # a known-bad module is caught: the core importing a reproduction
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from papers.tms.repro import tms\n    from hooked.models import ToyReLU\n")
    found = _imports(bad, _modules())
    assert found == {"papers.tms.repro", "hooked.models"}
    assert [t for t in found if layer(t) not in ALLOWED["core"]]


def test_the_checker_sees_the_language_model_layer_out_of_place(tmp_path):
    # known-bad modules are caught: the core and the interventions importing the LM layer, the LM
    # layer importing an intervention; the models may import it
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import hooked.lm\n"
        "from hooked.lm.sweeps import prefix_reuse\n"
        "def f():\n    from interventions.patching import patching_sweep\n"
    )
    found = _imports(bad, _modules())
    assert found == {"hooked.lm", "hooked.lm.sweeps.prefix_reuse", "interventions.patching"}
    assert {layer(t) for t in found} == {"lm", "interventions"}
    for importer in ("core", "interventions", "analyses"):
        assert {t for t in found if layer(t) not in ALLOWED[importer]} >= {"hooked.lm"}
    assert [t for t in found if layer(t) not in ALLOWED["lm"]] == ["interventions.patching"]
    assert "lm" in ALLOWED["models"] and "lm" in ALLOWED["top"]
    assert layer("hooked.lm") == layer("hooked.lm.backends.bridge") == "lm" and layer("hooked.lmx") == "core"


def test_the_checker_sees_the_dictionaries_out_of_place(tmp_path):
    # known-bad imports are caught: the core or the LM layer importing hooked.sae, and a dictionary
    # module other than the evaluation importing the LM layer
    bad = tmp_path / "bad.py"
    bad.write_text("from hooked.sae import spliced\nimport hooked.lm\n")
    found = _imports(bad, _modules())
    assert found == {"hooked.sae", "hooked.lm"}
    assert layer("hooked.sae") == layer("hooked.sae.splice") == "sae"
    for importer in ("core", "lm", "interventions", "analyses"):
        assert "sae" not in ALLOWED[importer]
    assert "lm" not in ALLOWED["sae"] and "sae" in ALLOWED["top"]
    assert SAE_ON_LM <= set(GRAPH) and "hooked.sae.splice" not in SAE_ON_LM


def test_import_hooked_runs_only_core_modules():
    code = (
        "import sys, hooked; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {!r})))"
    ).format((*PACKAGES, "benchmarks"))
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = out.stdout.split()
    assert "hooked" in loaded
    assert [m for m in loaded if layer(m) != "core"] == []
    # and -X importtime agrees: it lists every module the import ran
    timed = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not {m for m in timed if m.split(".")[0] in (*PACKAGES, "benchmarks") and layer(m) != "core"}
