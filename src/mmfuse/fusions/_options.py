"""Strategy options checked in one place, from the constructor's annotations.

Every :class:`~mmfuse.fusions._base.Fusion` subclass has its keyword options checked
against their annotations before its ``__init__`` body runs
(:meth:`Fusion.__init_subclass__` wraps it), so a strategy declares what it accepts
in its signature and writes no checks of its own for types and ranges:

- ``Literal["a", "b"]``: one of the listed values;
- ``bool``: ``True`` or ``False`` only (``"no"`` is refused, not read as true);
- ``int`` / ``float``, optionally ``Annotated`` with a :class:`Range`
  (:data:`PositiveInt`, :data:`NonNegativeInt`, :data:`PositiveFloat`,
  :data:`Rate` for rates in ``[0, 1)``);
- ``str``, ``Sequence[X]``, ``Mapping[...]``, ``nn.Module``;
- ``Callable[..., nn.Module]`` (``act_layer``, ``norm_layer``): a class or factory,
  not a string and not an already built module;
- :data:`FusionName`: the name of a registered strategy;
- ``X | None``: ``None`` or an ``X``.

Errors are :class:`~mmfuse.errors.FusionError` of the form
``<strategy>: <option>: expected <what>, got <value>``. Checks that relate several
options or the modalities (``num_heads`` divides ``dim``, ``query`` names a modality)
stay in the strategy.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from torch import nn

from mmfuse.errors import FusionError

__all__ = [
    "FusionName",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "Rate",
    "OptionHelp",
    "check_options",
    "option_help",
    "describe",
]


@dataclass(frozen=True)
class Range:
    """Bounds of a number option: ``low <= x`` (``low < x`` with ``low_open``), ``x < high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value < self.high


@dataclass(frozen=True)
class _Registered:
    """Marker: a string naming a registered fusion strategy."""


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
Rate = Annotated[float, Range(0, 1)]
FusionName = Annotated[str, _Registered()]

_NONE = type(None)


def describe(annotation: Any) -> str:
    """What an annotation accepts, in words (``"a positive int"``, ``"one of ['a', 'b']"``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        base, *meta = args
        for item in meta:
            if isinstance(item, _Registered):
                from mmfuse.fusions._base import list_fusions

                return f"one of {list_fusions()}"
            if isinstance(item, Range):
                return _describe_range(base, item)
        return describe(base)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not _NONE]
        return " or ".join(parts) + (" or None" if _NONE in args else "")
    if origin is Literal:
        return f"one of {list(args)}"
    if origin in (collections.abc.Sequence, typing.Sequence):
        return f"a sequence of {_plural(describe(args[0]))}" if args else "a sequence"
    if origin in (collections.abc.Mapping, typing.Mapping):
        return "a mapping"
    if origin in (collections.abc.Callable, typing.Callable):
        return "a class or callable that builds an nn.Module (e.g. nn.GELU)"
    if annotation is bool:
        return "a bool (True or False)"
    if annotation is int:
        return "an int"
    if annotation is float:
        return "a finite number"
    if annotation is str:
        return "a string"
    if annotation is Any:
        return "anything"
    if isinstance(annotation, type) and issubclass(annotation, nn.Module):
        return "an nn.Module"
    if isinstance(annotation, type):
        return f"an instance of {annotation.__module__.split('.')[0]}.{annotation.__qualname__}"
    return str(annotation)


def _describe_range(base: Any, rng: Range) -> str:
    if base is int:
        if rng.low == 1 and rng.high is None:
            return "a positive int"
        return f"an int >= {int(rng.low)}" if rng.low is not None else "an int"
    if rng.low is not None and rng.high is not None:
        return f"a float in {'(' if rng.low_open else '['}{rng.low:g}, {rng.high:g})"
    if rng.low == 0 and rng.low_open:
        return "a positive number"
    return f"a number >= {rng.low:g}" if rng.low is not None else "a number"


def _plural(text: str) -> str:
    """``"a positive int" -> "positive ints"``, ``"a sequence of strings" -> "sequences of strings"``."""
    for article in ("a ", "an "):
        if text.startswith(article):
            text = text[len(article) :]
            head, sep, tail = text.partition(" of ")
            return f"{head}s{sep}{tail}"
    return text


def accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits ``annotation`` (see the module docstring)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        base, *meta = args
        if not accepts(base, value):
            return False
        for item in meta:
            if isinstance(item, _Registered):
                from mmfuse.fusions._base import list_fusions

                if value not in list_fusions():
                    return False
            if isinstance(item, Range) and not item.holds(value):
                return False
        return True
    if origin in (Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if annotation is _NONE or annotation is None:
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (collections.abc.Sequence, typing.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, collections.abc.Sequence):
            return False
        return not args or all(accepts(args[0], v) for v in value)
    if origin in (collections.abc.Mapping, typing.Mapping):
        return isinstance(value, collections.abc.Mapping)
    if origin in (collections.abc.Callable, typing.Callable):
        # a class to instantiate or a factory; a built module or a string is a mistake
        if isinstance(value, type):
            return issubclass(value, nn.Module)
        return callable(value) and not isinstance(value, nn.Module)
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def option_annotations(init: Any) -> dict[str, Any]:
    """The resolved annotations (``Annotated`` kept) of a constructor's keyword options."""
    hints = typing.get_type_hints(init, include_extras=True)
    params = inspect.signature(init).parameters
    return {k: hints[k] for k in params if k not in ("self", "input_dims", "output_dim") and k in hints}


def check_options(owner: str, annotations: dict[str, Any], options: dict[str, Any]) -> None:
    """Raise :class:`FusionError` for the first option that does not fit its annotation."""
    for name, value in options.items():
        annotation = annotations.get(name)
        if annotation is not None and not accepts(annotation, value):
            raise FusionError(f"{owner}: {name}: expected {describe(annotation)}, got {value!r}")


@dataclass(frozen=True)
class OptionHelp:
    """One constructor option of a strategy, as ``mmfuse list --options`` shows it."""

    name: str
    default: Any
    allowed: str
    meaning: str


def docstring_args(doc: str | None) -> dict[str, str]:
    """``name -> text`` of the ``Args:`` section of a Google-style docstring (the
    continuation lines joined)."""
    out: dict[str, str] = {}
    if not doc:
        return out
    lines = inspect.cleandoc(doc).splitlines()
    inside, indent, current = False, None, None
    for line in lines:
        stripped = line.strip()
        if stripped == "Args:":
            inside, indent, current = True, None, None
            continue
        if not inside:
            continue
        if not stripped:
            current = None
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:  # the section ended
            inside = False
            continue
        if width == indent and ":" in stripped:
            current, text = stripped.split(":", 1)
            current = current.split(" ")[0]
            out[current] = text.strip()
        elif current is not None:
            out[current] += " " + stripped
    return out


def option_help(cls: type) -> list[OptionHelp]:
    """Every keyword option of a strategy class: default, allowed values (from the
    annotation) and meaning (from the class docstring's ``Args:``)."""
    params = inspect.signature(cls.__init__).parameters
    annotations = option_annotations(cls.__init__)
    meanings = docstring_args(cls.__doc__)
    out = []
    for name, param in params.items():
        if name in ("self", "input_dims", "output_dim") or param.kind is not param.KEYWORD_ONLY:
            continue
        allowed = describe(annotations[name]) if name in annotations else ""
        out.append(OptionHelp(name, param.default, allowed, meanings.get(name, "")))
    return out
