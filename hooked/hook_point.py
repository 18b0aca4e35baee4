"""HookPoint: the identity module a model places wherever an activation should be readable or
editable, the records of the hook functions attached to it, and the handles that remove them.

A hook function has TransformerLens's signature ``fn(activation, hook)`` and returns ``None``
(read only) or a tensor that replaces the activation (:mod:`hooked.hook_fns`: what a hook may
declare, ``at_step`` and ``read_only``). Forward hooks run in the order they were added
(``prepend=True`` puts one first); backward hooks see the gradient of the activation as the rest
of the model used it, and may replace it too (returning a tensor or TransformerLens's one-tuple
``(grad,)``).

Design notes
------------
* **Inactive cost.** ``HookPoint.__call__`` is overridden: with nothing attached it tests one flag
  and returns its input, not a trip through ``nn.Module.__call__`` (which TransformerLens pays at
  every hook point of every forward). Inside a :class:`~hooked.HookedModule` the hook point is also
  found by plain attribute lookup (see :mod:`hooked.fast_lookup`), so ``self.hook_x(x)`` in a
  forward costs about as much as calling a function stored on ``self``. The flag it tests,
  :data:`any_live`, is a global of this module (the cheapest read there is).
* **Steps.** A hook point may run several times in one forward pass (once per step of an
  unrolled RNN); ``hook.step`` says which call is running. What a pass is, and how calls are
  counted, is :mod:`hooked._steps`'s one job; this module only reports each call to it.
* **Backward hooks** are attached to the activation tensor during the forward pass, so they
  fire in the backward pass that follows even after ``run_with_hooks`` has removed them from the
  hook point; they only ever see the graph of the forward they were live for.
* **PyTorch's own module hooks** (``register_forward_hook`` and friends) work on a HookPoint as on
  TransformerLens's: while one is registered, the call goes through ``nn.Module.__call__``
  around an identity ``forward``; they run before the hooks added with ``add_hook``.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hooked import _steps
from hooked.errors import HookReturnError
from hooked.hook_fns import HookFn, declared_read_only, declared_steps, describe

Direction = Literal["fwd", "bwd"]
Directions = Literal["fwd", "bwd", "both"]


# ------------------------------------------------------------------------ which points are live
# id -> weak reference of every hook point with something attached.
_LIVE: dict[int, weakref.ref] = {}
any_live = False
"""True while some hook point has something attached (``bool(_LIVE)``). Read on the hot path
(while it is False, no hook point reads its own state) and by HookedModule forwards (while it is
False, they count no steps). A plain bool, not the dict: ``torch.compile`` guards a global bool by
its value, but would guard each entry of the dict, which the garbage collector may remove while
it compiles."""


def _set_live(point: HookPoint, live: bool) -> None:
    global any_live
    key = id(point)
    if live:
        if key not in _LIVE:
            _LIVE[key] = weakref.ref(point, lambda _, key=key: _forget(key))
            if not any_live:
                any_live = True
                _steps.attached(True)
    else:
        _forget(key)
        if not any_live:
            _steps.attached(False)


def _forget(key: int) -> None:
    """Take hook point ``key`` off ``_LIVE`` (detached, or collected: the weak reference's callback,
    which may run at interpreter exit, touches nothing outside this module)."""
    global any_live
    _LIVE.pop(key, None)
    any_live = bool(_LIVE)


class AttachedHook:
    """One attached hook function and how it was attached.

    The entries of ``hook_point.fwd_hooks`` / ``bwd_hooks``, with the fields of TransformerLens's
    ``LensHandle``: ``is_permanent``, ``context_level``, ``user_hook`` (the function as passed to
    ``add_hook``) and ``hook`` (``.hook.remove()`` detaches it).
    """

    __slots__ = ("fn", "is_permanent", "context_level", "steps", "read_only", "_point", "_dir")

    def __init__(
        self,
        point: HookPoint,
        dir: str,
        fn: HookFn,
        is_permanent: bool,
        context_level: int | None,
        declared: tuple[frozenset[int] | None, bool] | None = None,
    ):
        self.fn = fn
        self.is_permanent = is_permanent
        self.context_level = context_level
        # what fn declares (at_step steps, read_only): read here unless the caller read it already
        self.steps, self.read_only = declared or (declared_steps(fn), declared_read_only(fn))
        self._point = weakref.ref(point)  # no reference cycle: a dropped model is freed at once
        self._dir = dir

    @property
    def user_hook(self) -> HookFn:
        return self.fn

    @property
    def hook(self) -> HookHandle:
        """A handle whose ``remove()`` detaches this hook (TransformerLens: ``handle.hook.remove()``)."""
        point = self._point()
        return HookHandle([] if point is None else [(point, self._dir, self)])

    def remove(self) -> None:
        self.hook.remove()

    def __repr__(self) -> str:
        bits = [describe(self.fn)]
        if self.is_permanent:
            bits.append("permanent")
        if self.context_level is not None:
            bits.append(f"level={self.context_level}")
        point = self._point()
        return f"<{self._dir} hook {', '.join(bits)} at {point._label() if point is not None else '?'}>"


def _matches(h: AttachedHook, including_permanent: bool, level: int | None) -> bool:
    """Whether a hook is in scope for ``has_hooks`` / ``remove_hooks`` / ``list_hooks`` (as TL)."""
    if h.is_permanent and not including_permanent:
        return False
    return level is None or h.context_level == level


def directions(dir: str) -> tuple[str, ...]:
    """The directions a ``dir`` argument names (``"both"``: forward and backward); checks it."""
    if dir == "both":
        return ("fwd", "bwd")
    if dir in ("fwd", "bwd"):
        return (dir,)
    raise ValueError(f"dir must be 'fwd', 'bwd' or 'both', got {dir!r}")


class HookPoint(nn.Module):
    """An identity module: ``hook_point(x)`` returns ``x`` unless hooks are attached.

    Args:
        recurrent: the activation is produced once per time step; caches always stack it
            along ``time_dim``, even for a sequence of one step.
        time_dim: the axis a cache stacks repeated calls along (1 gives ``[batch, time, ...]``).
        pos_dim: the position axis of the activation, for ``run_with_cache(pos_slice=...)``
            (TransformerLens's ``HookPoint.pos_dim``); ``None``: axis 1, or -2 for names ending in
            ``hook_pattern`` / ``hook_attn_scores``.
    """

    _stepped = False  # on hooked._steps' list of points with at_step hooks (see _refresh)

    def __init__(self, *, recurrent: bool = False, time_dim: int = 1, pos_dim: int | None = None):
        super().__init__()
        self.name: str | None = None
        self.recurrent = recurrent
        self.time_dim = time_dim
        self.pos_dim = pos_dim
        self.ctx: dict[str, Any] = {}
        self._fwd: list[AttachedHook] = []
        self._bwd: list[AttachedHook] = []
        self._torch_hooks = False  # something was registered with PyTorch's register_*_hook
        self._live = False

    # ------------------------------------------------------------------ the hot path
    def __call__(self, x: Any, step: int | None = None) -> Any:
        # Reads no attribute of self while nothing is attached anywhere: an nn.Module's
        # attributes are slow to read (its __getattr__ keeps the interpreter's fast paths off).
        if any_live and self._live:
            return self._run(x, step)
        return x

    def forward(self, x: Any, step: int | None = None) -> Any:
        """The identity (hooks run in ``__call__``, as PyTorch's module hooks run around ``forward``)."""
        return x

    # ------------------------------------------------------------------ attaching
    def add_hook(
        self,
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: int | None = None,
        prepend: bool = False,
    ) -> HookHandle:
        """Attach ``hook`` (``fn(activation, hook) -> Tensor | None``); returns its handle.

        Args:
            dir: ``"fwd"`` (the activation) or ``"bwd"`` (its gradient).
            is_permanent: survives ``reset_hooks()`` / ``remove_hooks()`` unless they include
                permanent hooks.
            level: the ``hooks()`` context level it belongs to (TransformerLens's metadata).
            prepend: run it before the hooks already attached.
        """
        if not callable(hook):
            raise TypeError(
                f"hook for {self._label()} must be callable as fn(activation, hook), "
                f"got {type(hook).__name__}: {hook!r}"
            )
        return HookHandle([(self, dir, self._attach(hook, dir, is_permanent, prepend, level))])

    def _attach(
        self, hook: HookFn, dir: str, is_permanent: bool, prepend: bool, level: int | None = None
    ) -> AttachedHook:
        entry = _insert(self, dir, hook, is_permanent, prepend, level)
        self._refresh()
        return entry

    def _read_directly(self, read: Callable[[Tensor], None]) -> RemovableHandle | None:
        """Have ``read(activation)`` called with what a hook here would see, at each call, until
        the returned handle is removed, without attaching a hook: the recording path of
        ``run_with_cache``, for a point fed by a PyTorch hook of its own (:mod:`hooked.wrapping`).

        ``None`` where a point cannot (this kind, or one with something attached, whose hooks the
        recording must run after): the caller then attaches a hook instead. ``read`` returns
        nothing; what the model computes is unchanged."""
        return None

    def add_perma_hook(self, hook: HookFn, dir: Direction = "fwd") -> HookHandle:
        return self.add_hook(hook, dir=dir, is_permanent=True)

    def remove_hooks(
        self, dir: Directions = "fwd", including_permanent: bool = False, level: int | None = None
    ) -> None:
        """Remove this hook point's hooks: forward ones by default (as TransformerLens), both
        directions with ``dir="both"``; permanent ones only if asked; only one ``hooks()``
        context level's with ``level``."""
        for d in directions(dir):
            hooks = self._hooks(d)
            hooks[:] = [h for h in hooks if not _matches(h, including_permanent, level)]
        self._refresh()

    def has_hooks(
        self, dir: Directions = "both", including_permanent: bool = True, level: int | None = None
    ) -> bool:
        return bool(self.list_hooks(dir, including_permanent, level))

    def list_hooks(
        self, dir: Directions = "both", including_permanent: bool = True, level: int | None = None
    ) -> list[AttachedHook]:
        """The attached hooks in scope (forward ones first, each in the order they run): permanent
        ones unless ``including_permanent=False``, only one ``hooks()`` context level's with ``level``."""
        return [h for d in directions(dir) for h in self._hooks(d) if _matches(h, including_permanent, level)]

    def clear_context(self) -> None:
        self.ctx = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy (``copy.deepcopy(model)``, ``copy.copy``) carries the hooks attached when it was
        made, as PyTorch copies a module's hooks with it: the same functions, attached to the
        copy's own hook point. They fire there (``hook`` is the copy's point), are listed and
        removed there, and removing them on one model leaves the other's."""
        super().__setstate__(state)
        for d in ("fwd", "bwd"):
            own = [
                AttachedHook(self, d, h.fn, h.is_permanent, h.context_level) for h in state.get(f"_{d}", ())
            ]
            object.__setattr__(self, f"_{d}", own)
        object.__setattr__(self, "_live", False)
        self._refresh()  # registered as live (the hot path checks it) if it carries anything

    @property
    def fwd_hooks(self) -> list[AttachedHook]:
        """The attached forward hooks, in the order they run (TransformerLens's ``LensHandle``
        fields: ``is_permanent``, ``context_level``, ``user_hook``, ``hook.remove()``)."""
        return list(self._fwd)

    @property
    def bwd_hooks(self) -> list[AttachedHook]:
        return list(self._bwd)

    @property
    def step(self) -> int:
        """Which call of this hook point in the current forward pass of this thread is running
        (0, 1, ...); in a backward hook, the step of the forward call whose gradient it sees.
        What counts as a pass: :mod:`hooked._steps` (in short, the outermost HookedModule forward,
        call of a wrapped module or ``hooked.forward_pass()`` block running in this thread)."""
        return _steps.step_of(self)

    def layer(self) -> int:
        """The block index in this hook point's name (``blocks.3.attn.hook_q`` -> 3; the first
        all-digit part of the dotted name, so ``model.layers.3.mlp.hook_out`` -> 3 too)."""
        if self.name is None:
            raise ValueError("this hook point has no name (it is not part of a HookedModule's hook_dict)")
        for part in self.name.split("."):
            if part.isdigit():
                return int(part)
        raise ValueError(f"hook point name {self.name!r} has no layer index (no all-digit part)")

    # ------------------------------------------------------------------ PyTorch's module hooks
    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_forward_pre_hook(*args, **kwargs))

    def register_forward_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_forward_hook(*args, **kwargs))

    def register_full_backward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_full_backward_pre_hook(*args, **kwargs))

    def register_full_backward_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_full_backward_hook(*args, **kwargs))

    def register_backward_hook(self, *args: Any, **kwargs: Any) -> Any:
        return self._torch_hook(super().register_backward_hook(*args, **kwargs))

    def _torch_hook(self, handle: Any) -> Any:
        object.__setattr__(self, "_torch_hooks", True)
        self._refresh()
        return handle

    def _has_torch_hooks(self) -> bool:
        return bool(
            self._forward_pre_hooks or self._forward_hooks or self._backward_pre_hooks or self._backward_hooks
        )

    # ------------------------------------------------------------------ for recurrent layers
    def active_steps(self) -> frozenset[int] | None:
        """The steps some attached hook needs: ``None`` means every step, an empty set none.

        A recurrent layer uses this to run fused kernels between the steps it must materialise.
        """
        if not self._live:
            return frozenset()
        if self._torch_hooks and self._has_torch_hooks():
            return None
        steps: set[int] = set()
        for h in (*self._fwd, *self._bwd):
            if h.steps is None:
                return None
            steps |= h.steps
        return frozenset(steps)

    def ran_steps(self, n: int) -> None:
        """Tell the running pass that this recurrent hook point's sequence has ``n`` steps, for a
        layer that skips calling it at steps no hook needs (fused kernels): an ``at_step`` hook
        beyond the sequence is then reported when the forward ends, as if every step had run."""
        _steps.ran_steps(self, n)

    @property
    def read_only(self) -> bool:
        """True when every attached hook only reads (so a layer may compute the activation in
        one fused pass and hand it over step by step afterwards)."""
        if self._torch_hooks and self._has_torch_hooks():
            return False
        return not self._bwd and all(h.read_only for h in self._fwd)

    # ------------------------------------------------------------------ internals
    def _hooks(self, dir: str) -> list[AttachedHook]:
        if dir == "fwd":
            return self._fwd
        if dir == "bwd":
            return self._bwd
        raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")

    def _refresh(self) -> None:
        """Bring ``_live`` (and the module's record of live points, and of points with ``at_step``
        hooks) up to date with what is attached. Called after every change; the work it does when
        nothing changed is a few attribute reads (``run_with_cache`` of every point calls it
        about 2,000 times a call)."""
        set_ = object.__setattr__  # plain attributes: skip nn.Module.__setattr__'s checks
        if self._torch_hooks and not self._has_torch_hooks():
            set_(self, "_torch_hooks", False)
        fwd, bwd = self._fwd, self._bwd
        live = bool(fwd or bwd or self._torch_hooks)
        if not (live and self._live):  # registering a live point again would change nothing
            set_(self, "_live", live)
            _set_live(self, live)
        stepped = live and (any(h.steps is not None for h in fwd) or any(h.steps is not None for h in bwd))
        if stepped or self._stepped:  # a point that never had an at_step hook is not on the list
            _steps.expect_steps(self, self._unreached if stepped else None)
            set_(self, "_stepped", stepped)

    def _unreached(self, ran: int) -> list[str]:
        """For each ``at_step`` hook here whose last step needs more than ``ran`` calls: a message
        saying that it never fired at those steps (the pass ran this hook point ``ran`` times)."""
        out = []
        for h in (*self._fwd, *self._bwd):
            missed = sorted(s for s in h.steps or () if s >= ran)
            if missed:
                out.append(
                    f"at_step: hook function {describe(h.fn)} at {self._label()} is restricted to "
                    f"step(s) {missed}, but that hook point ran only {ran} step(s) in this forward "
                    f"(steps 0..{ran - 1}); it never fired there"
                )
        return out

    def _label(self) -> str:
        return f"hook point {self.name!r}" if self.name else "an unnamed HookPoint"

    def _run(self, x: Any, step: int | None) -> Any:
        step = _steps.count(self, step)
        if self._torch_hooks:
            if self._has_torch_hooks():
                x = nn.Module.__call__(self, x)
            else:
                self._refresh()
        for h in tuple(self._fwd):
            if h.steps is not None and step not in h.steps:
                continue
            try:  # _call_hook, inline: this loop runs once per hook per call of every live point
                out = h.fn(x, hook=self)
            except Exception as e:
                _note(e, h.fn, self, step)
                raise
            if out is not None:
                _check_replacement(self, h.fn, x, out, "activation")
                x = out
        if self._bwd and isinstance(x, Tensor) and x.requires_grad:
            x = x.view_as(x)  # a node of its own: the gradient seen is exactly this activation's
            hooks = tuple(self._bwd)
            x.register_hook(lambda grad: self._run_backward(hooks, step, grad))
        return x

    def _run_backward(self, hooks: tuple[AttachedHook, ...], step: int, grad: Tensor) -> Tensor:
        with _steps.backward_step(self, step):
            for h in hooks:
                if h.steps is not None and step not in h.steps:
                    continue
                out = self._call_hook(h.fn, grad, step)
                if isinstance(out, tuple) and len(out) == 1:
                    out = out[0]  # TransformerLens's backward hooks may return (grad,)
                if out is not None:
                    _check_replacement(self, h.fn, grad, out, "gradient")
                    assert isinstance(out, Tensor)  # _check_replacement refuses anything else
                    grad = out
        return grad

    def _call_hook(self, fn: HookFn, x: Any, step: int) -> Any:
        try:
            return fn(x, hook=self)
        except Exception as e:
            _note(e, fn, self, step)
            raise

    def extra_repr(self) -> str:
        bits = [f"name={self.name!r}"] if self.name else []
        if self.recurrent:
            bits.append("recurrent")
        if self._fwd:
            bits.append(f"{len(self._fwd)} fwd")
        if self._bwd:
            bits.append(f"{len(self._bwd)} bwd")
        return ", ".join(bits)


def _note(e: Exception, fn: HookFn, hp: HookPoint, step: int) -> None:
    """Say on ``e`` which hook function raised it, where and at which step."""
    if sys.version_info >= (3, 11):  # no notes on Python 3.10: the exception goes as it is
        e.add_note(f"(raised by hook function {describe(fn)} at {hp._label()}, step {step})")


def _check_replacement(hp: HookPoint, fn: HookFn, old: Any, new: Any, what: str) -> None:
    if not isinstance(old, Tensor):
        return
    where = f"hook function {describe(fn)} at {hp._label()}"
    if not isinstance(new, Tensor):
        raise HookReturnError(
            f"{where} returned a {type(new).__name__}; a hook must return None or a tensor "
            f"that replaces the {what} (shape {tuple(old.shape)}, {old.dtype}, {old.device})"
        )
    if new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
        raise HookReturnError(
            f"{where} returned a tensor of shape {tuple(new.shape)}, {new.dtype}, on {new.device}, "
            f"but the {what} it replaces has shape {tuple(old.shape)}, {old.dtype}, on {old.device}"
        )


class HookHandle:
    """Removes exactly the hooks one ``add_hook`` call attached (also usable as a context)."""

    def __init__(self, entries: list[tuple[HookPoint, str, AttachedHook]]):
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hook_points(self) -> list[HookPoint]:
        return [hp for hp, _, _ in self._entries]

    def remove(self) -> None:
        """Detach these hooks (those already detached are skipped), then bring each hook point
        they were on up to date once."""
        entries, self._entries = self._entries, []
        _refresh_each(_detach(entries))

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @staticmethod
    def merge(handles: Iterable[HookHandle]) -> HookHandle:
        return HookHandle([e for h in handles for e in h._entries])


def attach_all(
    plan: Iterable[tuple[HookPoint, HookFn]],
    dir: str,
    is_permanent: bool = False,
    prepend: bool = False,
    level: int | None = None,
) -> HookHandle:
    """Attach each ``(hook point, fn)`` of ``plan`` as ``hook_point._attach`` would, then bring
    each hook point up to date once (not once per hook): the bulk path of ``HookedModule``'s
    ``hooks`` / ``run_with_hooks`` / ``run_with_cache``. All or nothing: if a hook point refuses
    its hooks (its refresh raises), every hook attached here is detached again.
    """
    if dir not in ("fwd", "bwd"):
        raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
    entries: list[tuple[HookPoint, str, AttachedHook]] = []
    points: dict[int, HookPoint] = {}
    declared: dict[int, tuple[frozenset[int] | None, bool]] = {}  # one read per function (a cache: one)
    for hp, fn in plan:
        d = declared.get(id(fn))
        if d is None:
            d = declared[id(fn)] = (declared_steps(fn), declared_read_only(fn))
        entries.append((hp, dir, _insert(hp, dir, fn, is_permanent, prepend, level, d)))
        points[id(hp)] = hp
    try:
        for hp in points.values():
            hp._refresh()
    except BaseException:
        _refresh_each(_detach(entries))
        raise
    return HookHandle(entries)


def _insert(
    hp: HookPoint,
    dir: str,
    fn: HookFn,
    is_permanent: bool,
    prepend: bool,
    level: int | None,
    declared: tuple[frozenset[int] | None, bool] | None = None,
) -> AttachedHook:
    """Put ``fn`` on ``hp``'s list of ``dir`` hooks (first with ``prepend``), without refreshing."""
    entry = AttachedHook(hp, dir, fn, is_permanent, level, declared)
    hooks = hp._hooks(dir)
    if prepend:
        hooks.insert(0, entry)
    else:
        hooks.append(entry)
    return entry


def _detach(entries: list[tuple[HookPoint, str, AttachedHook]]) -> list[HookPoint]:
    """Take each entry off its hook point's list; the hook points touched, each once."""
    points: dict[int, HookPoint] = {}
    for hp, dir, entry in entries:
        hooks = hp._hooks(dir)
        for i in range(len(hooks) - 1, -1, -1):  # a cache's hooks are the last ones attached
            if hooks[i] is entry:
                del hooks[i]
                break
        points[id(hp)] = hp
    return list(points.values())


def _refresh_each(points: list[HookPoint]) -> None:
    """``_refresh`` every hook point, also when one of them raises (the first error is raised)."""
    error: BaseException | None = None
    for hp in points:
        try:
            hp._refresh()
        except BaseException as e:
            error = error or e
    if error is not None:
        raise error
