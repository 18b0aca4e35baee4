"""Language models and texts on the command line: ``--model PATH`` and ``--data texts.txt``.

* ``--model`` takes a local Hugging Face folder or a ``.gguf`` file besides a registered name
  (:func:`path_entry` makes it a model entry with the options of the registered ``smollm2-135m``:
  ``backend``, ``dtype``, ``prompt``, and ``path`` itself, so the run's record names the file).
* ``--data texts.txt`` (one text per line; blank lines skipped) replaces the model's example batch
  (:func:`text_data`): padded batches (``{"input_ids", "attention_mask"}``, left-padded) for an
  analysis that pools over real tokens only (it says so with ``masks_padding = True``, as
  ``ridge-probe`` does), else one text per batch, unpadded, so that an analysis that reads every
  position never reads padding.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

EXAMPLE_PROMPT = "The Eiffel Tower is in the city of"


def open_model(
    *,
    path: str = "",
    backend: Literal["bridge", "wrap"] = "bridge",
    dtype: str = "float32",
    prompt: str = EXAMPLE_PROMPT,
) -> tuple[Any, Tensor]:
    """A language model from a local Hugging Face folder or a .gguf file.

    Args:
        path: the model's folder (config.json, weights, tokenizer) or .gguf file.
        backend: bridge (TransformerLens 4 hook names) or wrap (hooked.wrap, module-path names).
        dtype: parameter dtype (float32, bfloat16, ...).
        prompt: the example text whose token ids are the example batch.
    """
    from hooked import lm

    model = lm.load(path, backend=backend, dtype=dtype)
    return model, lm.to_tokens(model, prompt)


def is_model_path(name: str) -> bool:
    """Whether ``name`` names a model on disk: an existing folder, or a path ending in .gguf."""
    path = Path(name).expanduser()
    return path.suffix == ".gguf" or path.is_dir()


def path_entry(name: str) -> Any:
    """A model entry of the registry for a folder or .gguf file (``None`` if ``name`` is not one)."""
    if not is_model_path(name):
        return None
    from hooked import registry

    path = str(Path(name).expanduser())
    options = [
        registry.Option("path", str, path, "the model's folder or .gguf file"),
        *(o for o in registry.options_of(open_model) if o.name != "path"),
    ]
    slug = re.sub(r"[^0-9A-Za-z._-]+", "-", Path(path).stem or "model").strip("-") or "model"
    return registry.Entry(
        kind="model",
        name=slug,
        obj=open_model,
        help=f"the language model at {path}",
        source=path,
        options=options,
    )


def read_texts(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of a UTF-8 text file (a clear error when there are none)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"--data: no such file: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"--data: {path} is not UTF-8 text ({e}); give one text per line") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"--data: {path} has no text (one text per line)")
    return texts


def text_data(model: Any, path: str | os.PathLike, *, padded: bool = True, batch_size: int = 32) -> list:
    """The texts of ``path`` as the model's data: left-padded batches of ``batch_size`` texts, or
    (``padded=False``) one ``[1, pos]`` batch per text."""
    from hooked import lm

    if getattr(model, "tokenizer", None) is None:
        raise ValueError("--data gives texts, which need a language model with a tokenizer (from hooked.lm)")
    texts = read_texts(path)
    if not padded:
        return [lm.to_tokens(model, t) for t in texts]
    return [lm.tokenize(model, texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
