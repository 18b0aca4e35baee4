"""No module uses another module's underscored names: a name ``_x`` is private to the module that
defines it, and a private module (``hooked/_steps.py``) to its package.

Read from the source (every import, also those inside functions, and every ``module._x`` read
through a name bound to a project module). Tests are left out: they may look at internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hooked", "interventions", "analyses", "papers", "benchmarks")
NOT_YET: tuple[str, ...] = ()  # paths not scanned yet (none: every package is clean)


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _may_use(user: str, target: str, modules: set[str]) -> bool:
    """Whether module ``user`` may use the project module or name ``target`` (dotted)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if not _private(part):
            continue
        owner = ".".join(parts[:i])  # the module or package the private name belongs to
        if target in modules or ".".join(parts[: i + 1]) in modules:
            # a private module: open to the modules of the package it sits in
            if not (user == owner or user.startswith(owner + ".")):
                return False
        elif user != owner:
            return False  # a private name of another module
    return True


def violations(source: str, user: str, modules: set[str]) -> list[str]:
    """Each use in ``source`` (the code of module ``user``) of another module's private name."""
    is_package = user in modules and any(m.startswith(user + ".") for m in modules)
    found = []
    aliases: dict[str, str] = {}  # local name -> project module it is bound to
    tree = ast.parse(source)

    def absolute(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = user.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        return ".".join(base + ([node.module] if node.module else []))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] not in PACKAGES:
                    continue
                if not _may_use(user, a.name, modules):
                    found.append(f"{user}:{node.lineno}: import {a.name}")
                if a.name in modules:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            origin = absolute(node)
            if origin.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                target = f"{origin}.{a.name}"
                if not _may_use(user, target, modules):
                    found.append(f"{user}:{node.lineno}: from {origin} import {a.name}")
                if target in modules:
                    aliases[a.asname or a.name] = target
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = ast.unparse(node.value)
            if base in aliases and not _may_use(user, f"{aliases[base]}.{node.attr}", modules):
                found.append(f"{user}:{node.lineno}: {base}.{node.attr} ({aliases[base]})")
    return found


def _project() -> dict[str, Path]:
    return {_module_name(p, ROOT): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def test_no_module_uses_another_modules_private_names():
    project = _project()
    modules = set(project)
    found = []
    for name, path in sorted(project.items()):
        if str(path.relative_to(ROOT)).startswith(NOT_YET):
            continue
        found += violations(path.read_text(), name, modules)
    assert found == [], "private names used across modules:\n" + "\n".join(found)


def test_the_check_sees_every_form_of_use():
    """Known answers, so that the check above cannot pass by seeing nothing."""
    modules = {"hooked", "hooked._steps", "hooked.hook_point", "hooked.hooked_module"}
    modules |= {"interventions", "interventions.patching"}
    bad = """
from hooked.hook_point import _Hook, HookPoint
from hooked import hook_point as hp
import hooked.hook_point
x = hp._ANY_LIVE
y = hooked.hook_point._LIVE
def later():
    from .hook_point import _matches
"""
    found = violations(bad, "hooked.hooked_module", modules)
    assert [f.split(": ", 1)[1] for f in found] == [
        "from hooked.hook_point import _Hook",
        "from hooked.hook_point import _matches",
        "hp._ANY_LIVE (hooked.hook_point)",
        "hooked.hook_point._LIVE (hooked.hook_point)",
    ]
    # a private module is open to its own package, and to nothing outside it
    fine = "from hooked import _steps\nimport hooked._steps\n_steps.count\n_steps.__name__\n"
    assert violations(fine, "hooked.hooked_module", modules) == []
    assert len(violations(fine, "interventions.patching", modules)) == 2
    # a module's own private names, and names from outside the project, are its own business
    own = "from hooked.hook_point import _LIVE\nfrom torch import _VF\nimport os\nos._exit\n"
    assert violations(own, "hooked.hook_point", modules) == []
