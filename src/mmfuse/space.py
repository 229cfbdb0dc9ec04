"""Search spaces: what ``mmfuse bench --tune`` may try for a setting, declared beside it.

A strategy declares the space of its own options as a class attribute next to its
constructor (``search_space = {"rank": Int(1, 16, log=True)}``), the training settings
and the model's sizes declare theirs beside their fields
(:attr:`mmfuse.training.TrainConfig.search_space`,
:attr:`mmfuse.experiment.ModelSpec.search_space`), so a new strategy brings its space
with it. Three kinds, plain data (no torch, nothing imported):

- :class:`Float` ``(low, high, log=False)``: a real number in ``[low, high]``;
- :class:`Int` ``(low, high, log=False)``: an integer in ``[low, high]``;
- :class:`Categorical` ``(choices)``: one of a few values (``None``, bools, numbers,
  strings: what a study's storage keeps).

Conditions, for options that depend on another option of the same space:

- ``when={"level": ("decision",)}``: tried only when ``level`` took one of those
  values (otherwise the option keeps its default);
- ``divides="dim"`` (:class:`Categorical` of ints): only the choices that divide the
  value ``dim`` took (attention heads must divide the width). The study sees it under
  ``num_heads|dim=48`` when that filters the choices, since a sampler's distribution of
  one name may not change between trials.

A space is checked against what the setting accepts (:func:`check_space`: every bound
and choice must be an allowed value) in the tests of the registry, and a user's
narrowing or widening from YAML (:func:`override`) is checked the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Categorical", "Distribution", "Float", "Int", "active_names", "check_space", "override", "render", "sample",
           "values_of"]


def _freeze_when(when: Mapping[str, Any] | None) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not when:
        return ()
    return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else (v,)) for k, v in sorted(when.items()))


@dataclass(frozen=True)
class Float:
    """A real number in ``[low, high]``, drawn on a log scale with ``log``."""

    low: float
    high: float
    log: bool = False
    when: Any = field(default=(), compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _freeze_when(dict(self.when)) if self.when else ())
        if not (isinstance(self.low, (int, float)) and isinstance(self.high, (int, float))) or not (
                math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"Float: expected finite low <= high, got [{self.low!r}, {self.high!r}]")
        if self.log and self.low <= 0:
            raise ValueError(f"Float: a log scale needs low > 0, got {self.low!r}")

    def ends(self) -> tuple[Any, ...]:
        return (float(self.low), float(self.high))


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``, drawn on a log scale with ``log``."""

    low: int
    high: int
    log: bool = False
    when: Any = field(default=(), compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _freeze_when(dict(self.when)) if self.when else ())
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) \
                or self.low > self.high:
            raise ValueError(f"Int: expected ints low <= high, got [{self.low!r}, {self.high!r}]")
        if self.log and self.low < 1:
            raise ValueError(f"Int: a log scale needs low >= 1, got {self.low!r}")

    def ends(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class Categorical:
    """One of ``choices``; with ``divides``, only the choices that divide that option's value."""

    choices: tuple[Any, ...]
    divides: str | None = None
    when: Any = field(default=(), compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _freeze_when(dict(self.when)) if self.when else ())
        choices = tuple(self.choices) if isinstance(self.choices, (list, tuple)) else (self.choices,)
        if not choices:
            raise ValueError("Categorical: expected at least one choice")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ValueError(f"Categorical: choices must be None, bools, numbers or strings, got {choices!r}")
        if self.divides is not None and not all(isinstance(c, int) and c > 0 for c in choices):
            raise ValueError(f"Categorical: divides={self.divides!r} needs positive int choices, got {choices!r}")
        object.__setattr__(self, "choices", choices)

    def ends(self) -> tuple[Any, ...]:
        return self.choices


Distribution = Float | Int | Categorical


def render(dist: Distribution) -> str:
    """The distribution in words (``"float in [0.0001, 0.01], log scale"``)."""
    if isinstance(dist, Categorical):
        text = f"one of {list(dist.choices)}"
        if dist.divides:
            text += f" that divides {dist.divides}"
    else:
        kind = "float" if isinstance(dist, Float) else "int"
        text = f"{kind} in [{dist.low:g}, {dist.high:g}]" + (", log scale" if dist.log else "")
    if dist.when:
        text += " when " + " and ".join(f"{k} in {list(v)}" for k, v in dist.when)
    return text


def check_space(owner: str, space: Mapping[str, Distribution], allowed: Callable[[str, Any], str | None],
                names: Any, *, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless every name of ``space`` is in ``names``, every bound and
    choice is allowed (``allowed(name, value)`` returns ``None``, or what is allowed),
    and every condition refers to another option of the space."""
    known = list(names)
    for name, dist in space.items():
        if name not in known:
            raise error(f"{owner}: search space: unknown option {name!r}: expected one of {known}")
        if not isinstance(dist, (Float, Int, Categorical)):
            raise error(f"{owner}: search space: {name}: expected Float, Int or Categorical, got {dist!r}")
        for value in dist.ends():
            why = allowed(name, value)
            if why is not None:
                raise error(f"{owner}: search space: {name}: {value!r} is not allowed: expected {why}")
        refs = [k for k, _ in dist.when] + ([dist.divides] if isinstance(dist, Categorical) and dist.divides else [])
        for ref in refs:
            if ref not in space or ref == name:
                raise error(f"{owner}: search space: {name}: its condition names {ref!r}, which is not another "
                            f"option of the space {sorted(space)}")


def override(name: str, dist: Distribution | None, given: Any, *, integer: bool = False,
             error: type[Exception] = ValueError) -> Distribution:
    """``dist`` narrowed or widened as a user wrote it.

    ``given``: a list ``[low, high]`` for a :class:`Float` or :class:`Int` (its scale
    kept); a list of choices for a :class:`Categorical`, or for an option with no space
    yet; a mapping ``{low, high, log}`` for a range (an :class:`Int` when ``integer``);
    a single value: that value only.
    """
    keep = {"when": dict(dist.when)} if dist is not None and dist.when else {}
    if isinstance(given, Mapping):
        unknown = sorted(set(given) - {"low", "high", "log"})
        if unknown or "low" not in given or "high" not in given:
            raise error(f"tune: space: {name}: expected a mapping of low, high (and log), got {dict(given)!r}")
        low, high, log = given["low"], given["high"], bool(given.get("log", getattr(dist, "log", False)))
        cls = Int if (integer or isinstance(dist, Int)) and all(isinstance(v, int) for v in (low, high)) else Float
        try:
            return cls(low, high, log, **keep)
        except (ValueError, TypeError) as exc:
            raise error(f"tune: space: {name}: {exc}") from exc
    try:
        if isinstance(given, (list, tuple)):
            if isinstance(dist, (Float, Int)):
                if len(given) != 2:
                    raise error(f"tune: space: {name}: expected [low, high], got {list(given)!r}")
                low, high = given
                if isinstance(dist, Int):
                    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
                        raise error(f"tune: space: {name}: expected int bounds, got {list(given)!r}")
                    return Int(low, high, dist.log, **keep)
                return Float(float(low), float(high), dist.log, **keep)
            divides = dist.divides if isinstance(dist, Categorical) else None
            return Categorical(tuple(given), divides, **keep)
        return Categorical((given,), **keep)
    except (ValueError, TypeError) as exc:
        raise error(f"tune: space: {name}: {exc}") from exc


def _active(dist: Distribution, chosen: Mapping[str, Any]) -> bool:
    return all(k in chosen and chosen[k] in values for k, values in dist.when)


def _order(space: Mapping[str, Distribution]) -> list[str]:
    """Names with every option a condition refers to before the options that depend on it."""
    out: list[str] = []

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name in out or name in seen:
            return
        dist = space[name]
        refs = [k for k, _ in dist.when] + ([dist.divides] if isinstance(dist, Categorical) and dist.divides else [])
        for ref in refs:
            if ref in space:
                visit(ref, (*seen, name))
        out.append(name)

    for name in space:
        visit(name, ())
    return out


def study_name(name: str, dist: Distribution, chosen: Mapping[str, Any]) -> tuple[str, tuple[Any, ...] | None]:
    """The name a study keeps ``name`` under and, for a categorical, its choices given ``chosen``."""
    if isinstance(dist, Categorical):
        if dist.divides and dist.divides in chosen:
            parent = chosen[dist.divides]
            ok = tuple(c for c in dist.choices if isinstance(parent, int) and parent % c == 0)
            if ok != dist.choices:
                return f"{name}|{dist.divides}={parent}", ok
        return name, dist.choices
    return name, None


def sample(trial: Any, space: Mapping[str, Distribution], *, prefix: str = "",
           defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Values of the active options of ``space`` drawn by an Optuna ``trial`` (names in the
    study ``prefix + name``); an inactive option is left out (it keeps its default).

    ``defaults``: the values a condition reads for an option of the space that is not
    drawn (inactive)."""
    chosen: dict[str, Any] = {}
    seen = dict(defaults or {})
    for name in _order(space):
        dist = space[name]
        if not _active(dist, {**seen, **chosen}):
            continue
        key, choices = study_name(name, dist, {**seen, **chosen})
        key = prefix + key
        if isinstance(dist, Float):
            chosen[name] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, Int):
            chosen[name] = trial.suggest_int(key, dist.low, dist.high, log=dist.log)
        else:
            if not choices:
                raise ValueError(f"{name}: no choice of {list(dist.choices)} divides {dist.divides}="
                                 f"{({**seen, **chosen}).get(dist.divides)!r}")
            chosen[name] = trial.suggest_categorical(key, list(choices))
    return chosen


def values_of(space: Mapping[str, Distribution], values: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """``values`` (one per option) as a study's parameters (``enqueue_trial``): the
    options that are active and whose value lies in the space; the names as :func:`sample`
    gives them."""
    out: dict[str, Any] = {}
    for name in _order(space):
        dist = space[name]
        if name not in values or not _active(dist, values):
            continue
        key, choices = study_name(name, dist, values)
        v = values[name]
        inside = (v in choices) if choices is not None else (
            isinstance(v, (int, float)) and not isinstance(v, bool) and dist.low <= v <= dist.high)
        if inside:
            out[prefix + key] = v
    return out


def active_names(space: Mapping[str, Distribution], values: Mapping[str, Any]) -> list[str]:
    """The options of ``space`` that are drawn when the others take ``values``."""
    return [name for name in _order(space) if _active(space[name], values)]
