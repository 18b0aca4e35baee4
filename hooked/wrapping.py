"""``hooked.wrap``: named hook points on every submodule of any ``nn.Module``, no rewrite needed.

``hooked.wrap(module)`` returns a :class:`Wrapped` model (a :class:`~hooked.HookedModule`) that
runs ``module`` unchanged and offers ``run_with_hooks`` / ``run_with_cache`` / ``hooks`` on hook
points named by module path::

    model = hooked.wrap(hf_model)                       # e.g. a transformers LlamaForCausalLM
    logits, cache = model.run_with_cache(tokens, names_filter="model.layers.3.mlp.hook_out")

Names. Every submodule at path ``P`` gets ``P.hook_out`` (its output) and, with
``inputs=True``, ``P.hook_in`` (its input); the wrapped module itself gets ``hook_out`` /
``hook_in``. ``names`` restricts which submodules get hook points (module paths or
``fnmatch`` patterns such as ``"model.layers.*.mlp"``, or a filter ``fn(path) -> bool``).
``model.module_hook_names`` lists these names (a subclass, such as a wrapped language model, may add
points of its own to ``hook_dict``): ``names_filter=model.module_hook_names`` caches every module's
output and input.

What a hook sees, and how its replacement is put back:

* an output that is a tensor: the tensor; a replacement takes its place.
* a tuple or list (e.g. ``(attn_output, attn_weights)``): its first tensor element; the module
  returns a new tuple (list) with the replacement in that slot.
* a dict or a ``transformers`` ``ModelOutput``: its first tensor value in key order (a
  ``CausalLMOutput`` without a loss: ``logits``); a plain dict is copied with the replacement,
  a ``ModelOutput`` (freshly built by the forward) gets the replacement set in place.
* an input (``hook_in``): the first tensor among the positional arguments, else among the
  keyword arguments; the module is then called with the replacement there.
* an output or input with no tensor at that level: the hook point does not fire.

A hook that returns ``None`` or its own argument changes nothing: the module's output object is
passed on untouched, so reading hooks (``run_with_cache``) leave results bit-identical.

Cost. Nothing is attached to ``module`` while no hook is: a hook point installs its PyTorch
forward (pre-)hook on its module when its first hook is added and removes it with the last, so an
un-hooked forward runs exactly ``module``'s own code (see ``benchmarks/lm.py``). Wrapping copies
no weights: the wrapper holds ``module`` itself as its child ``module``. ``run_with_cache`` reads a
point with nothing attached through a PyTorch hook of the point's own that hands the tensor to
the cache (``ModuleHookPoint._read_directly``), no hook function attached: a cache of every
module's input and output costs about what hand-written PyTorch hooks storing them cost
(``benchmarks/peers.py``).

Steps. While any hook point of the wrapper has a hook, ``module`` also carries a forward pre-hook
and an ``always_call`` forward hook (:func:`hooked._steps.count_calls`) that make each call of it
a forward of the step counter (``hook.step``; the outermost forward running is a pass), so
calling ``module`` directly, or ``wrapped.generate(...)`` (one forward per new token), counts
steps per forward just as calling the wrapper does.

``wrapped.unwrap()`` (or :func:`unwrap`) removes every hook and returns the original module.

Wrapping a module twice. The hook points belong to the modules, not to a wrapper: a second
``hooked.wrap`` of a module (or of a module that contains an already wrapped one) gets the same
hook point objects for the submodules both wrap, so a hook attached through one wrapper is
listed, fires, and is removed through the other too (PyTorch's own module hooks behave so: every
caller of the module runs them). Two sets of points on one module would let one wrapper edit the
other's outputs while the other's ``list_hooks()`` says nothing is attached.
"""

from __future__ import annotations

import fnmatch
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from hooked import _steps
from hooked.hook_point import HookPoint
from hooked.hooked_module import HookedModule
from hooked.protocol import batch_keywords

PathSpec = str | Sequence[str] | Callable[[str], bool] | None


class ModuleHookPoint(HookPoint):
    """A hook point on a module's output (``"out"``) or input (``"in"``).

    It is not a submodule of anything; it installs a PyTorch hook on its module only while a
    hook function is attached to it.
    """

    _target: nn.Module  # set with object.__setattr__ (not a child module), as is _owners
    _owners: list[weakref.ref[Wrapped]]

    def __init__(self, module: nn.Module, where: str):
        super().__init__()
        if where not in ("in", "out"):
            raise ValueError(f"where must be 'in' or 'out', got {where!r}")
        object.__setattr__(self, "_target", module)  # a plain reference, not a child module
        object.__setattr__(self, "_owners", [])  # weak references to the Wrapped models holding it
        self.where = where
        self._torch_handle: Any = None

    def _refresh(self) -> None:
        was = self._torch_handle is not None  # the PyTorch hook is installed exactly while live
        super()._refresh()
        live, handle = self._live, self._torch_handle
        if live == was:
            return  # nothing to install or remove, and the owners know (they are told of changes)
        # plain attribute writes: nn.Module.__setattr__ would cost more than registering the hook
        if live and handle is None:
            if self.where == "out":
                handle = self._target.register_forward_hook(self._on_output)
            else:
                handle = self._target.register_forward_pre_hook(self._on_input, with_kwargs=True)
            object.__setattr__(self, "_torch_handle", handle)
        elif not live and handle is not None:
            handle.remove()
            object.__setattr__(self, "_torch_handle", None)
        for ref in list(self._owners):
            owner = ref()
            if owner is not None:
                owner._point_live(self, live)

    def _read_directly(self, read: Callable[[Tensor], None]) -> Any:
        """A PyTorch hook of its own on the module that hands ``read`` what a hook here would see
        (the tensor ``_on_output`` / ``_on_input`` pick): the recording path of ``run_with_cache``,
        which costs what a hand-written PyTorch hook costs. ``None`` while something is attached
        here (the recording then runs as a hook after those), and on a subclass, which may show its
        hooks something else (``hook_z``'s heads, say: its own ``_on_input``) unless it says how
        to read it directly (its own ``_read_directly``)."""
        if self._live or type(self) is not ModuleHookPoint:
            return None
        if self.where == "out":

            def on_output(module: nn.Module, args: Any, output: Any) -> None:
                if isinstance(output, Tensor):
                    read(output)
                else:
                    slot = _tensor_slot(output)
                    if slot is not None:
                        read(output[slot])

            return self._target.register_forward_hook(on_output)

        def on_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
            found = _input_slot(args, kwargs)
            if found is not None:
                read(found[0][found[1]])

        return self._target.register_forward_pre_hook(on_input, with_kwargs=True)

    def _add_owner(self, owner: Wrapped) -> None:
        self._owners[:] = [r for r in self._owners if r() is not None and r() is not owner]
        self._owners.append(weakref.ref(owner))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_owners"] = []  # weak references: the Wrapped copied with it links it again
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        _SHARED.setdefault(self._target, {})[self.where] = weakref.ref(self)  # a copy's module's point

    # PyTorch hook callbacks ------------------------------------------------------------
    # (each runs once per call of a hooked module: the common cases, a tensor output and a tensor
    # first argument, are tested first; ``self._run`` is what ``self(x)`` runs while live)
    def _on_output(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not self._live:
            return None  # its hooks were removed while the forward ran
        if isinstance(output, Tensor):
            new = self._run(output, None)
            return None if new is output else new
        slot = _tensor_slot(output)
        if slot is None:
            return None
        old = output[slot]
        new = self._run(old, None)
        if new is old:
            return None
        return _put_back(output, slot, new)

    def _on_input(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if not self._live:
            return None
        found = _input_slot(args, kwargs)
        if found is None:
            return None
        where, slot = found
        old = where[slot]
        new = self._run(old, None)
        if new is old:
            return None
        return (_put_back(args, slot, new), kwargs) if where is args else (args, {**kwargs, slot: new})

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.where}put of {type(self._target).__name__}".lstrip(", ")


# module -> {"in" / "out": its hook point}: every wrapper of a module uses the same points
_SHARED: weakref.WeakKeyDictionary[nn.Module, dict[str, weakref.ref]] = weakref.WeakKeyDictionary()


def _point_for(module: nn.Module, where: str) -> ModuleHookPoint:
    """The hook point on ``module``'s input or output: the one a live wrapper already made, else new."""
    points = _SHARED.setdefault(module, {})
    ref = points.get(where)
    point = ref() if ref is not None else None
    if point is None:
        point = ModuleHookPoint(module, where)
        points[where] = weakref.ref(point)
    return point


def _tensor_slot(obj: Any) -> Any:
    """Where the first tensor sits in the container ``obj`` (a tuple / list / mapping): an index,
    a key, or None (a bare tensor is the callers' own first case)."""
    if isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            if isinstance(v, Tensor):
                return i
        return None
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(v, Tensor):
                return k
    return None


def _input_slot(args: tuple, kwargs: dict) -> tuple[Any, Any] | None:
    """Where the tensor a hook on a module's input sees sits: ``(args, index)`` for the first
    positional tensor, else ``(kwargs, key)`` for the first keyword tensor, else None."""
    if args and isinstance(args[0], Tensor):
        return args, 0
    slot = _tensor_slot(args)
    if slot is not None:
        return args, slot
    slot = _tensor_slot(kwargs)
    return None if slot is None else (kwargs, slot)


def _put_back(obj: Any, slot: Any, new: Tensor) -> Any:
    """A copy of ``obj`` (same type) with ``new`` in ``slot``; ``obj`` itself is never edited (a
    module may return a container it keeps, e.g. an ``OrderedDict`` attribute, or an input the
    caller still holds)."""
    if isinstance(obj, (list, tuple)):
        items = list(obj)
        items[slot] = new
        if type(obj) in (list, tuple):
            return type(obj)(items)
        if hasattr(obj, "_fields"):  # a namedtuple
            return type(obj)(*items)
        return _rebuilt(obj, lambda: type(obj)(items))  # torch.return_types (structseq), list subclasses
    if type(obj) is dict:
        return {**obj, slot: new}
    return _rebuilt(obj, lambda: _copy_with(obj, slot, new))


def _copy_with(obj: Any, slot: Any, new: Tensor) -> Any:
    import copy

    out = copy.copy(obj)  # OrderedDict, ModelOutput, ...: a new container holding the same values
    if out is obj:
        raise TypeError("copy.copy returned the object itself")
    out[slot] = new
    return out


def _rebuilt(obj: Any, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except Exception as e:
        from hooked.errors import HookReturnError

        raise HookReturnError(
            f"hooked.wrap: cannot put a hook's replacement back into a {type(obj).__module__}."
            f"{type(obj).__qualname__} output without editing it in place ({type(e).__name__}: {e}); "
            "return the module's output as a tensor, tuple, list or dict, or pass output= to wrap"
        ) from None


class Wrapped(HookedModule):
    """``module`` with hook points on its submodules' outputs (and inputs); see :func:`wrap`.

    Calling it calls ``module`` (then ``output``, if given). Attributes that the wrapper does not
    have (``config``, ``generate``, ...) are looked up on ``module``.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        inputs: bool = False,
        names: PathSpec = None,
        output: Callable[[Any], Any] | None = None,
    ):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"hooked.wrap needs an nn.Module, got {type(module).__name__}")
        if isinstance(module, Wrapped):
            raise TypeError("this module is already wrapped; wrap the original (wrapped.module) instead")
        if output is not None and not callable(output):
            raise TypeError(f"output must be a function of the module's output, got {type(output).__name__}")
        self.module = module
        self._output = output
        points: dict[str, ModuleHookPoint] = {}
        for path in _select_paths(module, names):
            sub = module.get_submodule(path)
            prefix = f"{path}." if path else ""
            if inputs:
                points[prefix + "hook_in"] = _point_for(sub, "in")
            points[prefix + "hook_out"] = _point_for(sub, "out")
        for name, hp in points.items():
            hp.name = name
            hp._add_owner(self)
        object.__setattr__(self, "_points", points)  # not submodules: state_dict and .to() unchanged
        object.__setattr__(self, "_module_names", tuple(points))  # module_hook_names (a subclass adds more)
        object.__setattr__(self, "_live_points", set())  # ids of points with hooks attached
        object.__setattr__(self, "_pass_handles", None)  # module's pass hooks while any point is live
        for hp in points.values():  # points another wrapper of this module has hooks on
            if hp._live:
                self._point_live(hp, True)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and isinstance(args[0], Mapping):  # a tokenized batch: its keywords
            args, kwargs = batch_keywords(self.module.forward, args, kwargs)
        out = self.module(*args, **kwargs)
        return out if self._output is None else self._output(out)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for hp in self._points.values():
            hp._add_owner(self)
        # a copy's points are other objects: track its own live ones (the pass hooks on its module
        # came with the copied module and are removed when the last of them is)
        object.__setattr__(self, "_live_points", {id(hp) for hp in self._points.values() if hp._live})

    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        for name, hp in self._points.items():
            if hp.name != name:  # named from this model's view (a model it is nested in renames)
                object.__setattr__(hp, "name", name)
        return dict(self._points)

    @property
    def module_hook_names(self) -> list[str]:
        """The names of the hook points on the modules' own outputs (and, with ``inputs=True``,
        inputs): ``P.hook_out`` / ``P.hook_in``, those :func:`wrap` made, in ``hook_dict`` order,
        without the points a subclass adds (a wrapped language model's per-head, projection and
        norm points). ``run_with_cache(x, names_filter=model.module_hook_names)`` records every
        module's output and input, the tensors a hand-written PyTorch hook on each module would
        see (see the module docstring), at about what such hooks cost."""
        points = self._points
        return [n for n in self._module_names if n in points]

    def _point_live(self, hp: ModuleHookPoint, live: bool) -> None:
        """Keep the pass hooks on ``module`` exactly while some hook point is live."""
        (self._live_points.add if live else self._live_points.discard)(id(hp))
        if self._live_points and self._pass_handles is None:
            object.__setattr__(self, "_pass_handles", _steps.count_calls(self.module))
        elif not self._live_points and self._pass_handles is not None:
            for h in self._pass_handles:
                h.remove()
            object.__setattr__(self, "_pass_handles", None)

    @property
    def mod_dict(self) -> dict[str, nn.Module]:
        return {name: m for name, m in self.module.named_modules() if name}

    def _forward_root(self) -> nn.Module:
        return self.module  # a hook may call the wrapped module itself: that is a forward too

    def _batch_forward(self) -> Callable[..., Any]:
        return self.module.forward

    def unwrap(self) -> nn.Module:
        """Remove every hook (permanent ones too) and return the original module."""
        for hp in self._points.values():
            hp.remove_hooks("both", including_permanent=True)  # another wrapper's of this module too
            hp._owners[:] = [r for r in hp._owners if r() is not None and r() is not self]
        object.__setattr__(self, "_points", {})
        return self.module

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" in modules:
                return getattr(modules["module"], name)
            raise


def wrap(
    module: nn.Module,
    inputs: bool = False,
    names: PathSpec = None,
    *,
    output: Callable[[Any], Any] | None = None,
) -> Wrapped:
    """Hook points on the outputs (and inputs) of every submodule of ``module``, by module path.

    Args:
        module: any ``nn.Module`` (a ``transformers`` model included). It is not copied.
        inputs: also put a ``P.hook_in`` hook point on each module's input.
        names: which submodules get hook points: module paths or ``fnmatch`` patterns
            (``"model.layers.*"``), or a filter ``fn(path) -> bool``; ``None`` means every
            submodule and the module itself (path ``""``).
        output: applied to the module's output before the wrapper returns it (e.g.
            ``lambda out: out.logits``).
    Returns:
        a :class:`Wrapped` HookedModule; ``.unwrap()`` gives ``module`` back, hook-free.
    """
    return Wrapped(module, inputs=inputs, names=names, output=output)


def unwrap(model: Wrapped) -> nn.Module:
    """``model.unwrap()``: remove every hook of a :func:`wrap` result and return the original module."""
    if not isinstance(model, Wrapped):
        raise TypeError(f"unwrap needs the result of hooked.wrap, got {type(model).__name__}")
    return model.unwrap()


def _select_paths(module: nn.Module, spec: PathSpec) -> list[str]:
    paths = [name for name, _ in module.named_modules()]
    if spec is None:
        return paths
    if callable(spec):
        return [p for p in paths if spec(p)]
    patterns = [spec] if isinstance(spec, str) else list(spec)
    chosen = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(
                f"names must be module paths or patterns (str), got {type(pattern).__name__}: {pattern!r}"
            )
        hits = [p for p in paths if p == pattern or fnmatch.fnmatchcase(p, pattern)]
        if not hits:
            import difflib

            close = difflib.get_close_matches(pattern, paths, n=5, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(
                f"hooked.wrap: no submodule of {type(module).__name__} matches names={pattern!r}{hint} "
                f"(it has {len(paths)} modules; see dict(module.named_modules()))"
            )
        chosen.update(hits)
    return [p for p in paths if p in chosen]
