"""Modality attribution: Shapley values of the modalities for a test metric.

Shape legend: ``n`` test samples, ``k`` classes, ``M`` modalities.

A trained model is a cooperative game over its modalities: the value of a coalition
``S`` is the metric (accuracy by default) of the model on the test split when only
the modalities in ``S`` are present, the others marked missing through the fusion
contract's presence masks (a False ``(n,)`` mask; their values never reach the
output). The *empty* coalition cannot be run (the contract refuses a sample with
every modality missing); its value is defined as the metric of the constant
prediction of the training split's class prior: every test sample gets the
training split's label frequencies as probabilities, so its argmax is the training
majority class (accuracy = that class's share of the test split, macro-F1 of that
constant prediction, AUROC 0.5). :func:`prior_value` computes it.

The Shapley value of modality ``i`` (Shapley 1953)::

    phi_i = sum_{S subset N \\ {i}} |S|! (M - |S| - 1)! / M! * (v(S + i) - v(S))

computed exactly from all ``2^M`` coalitions for ``M <= exact_max`` (default 8),
otherwise estimated from ``num_permutations`` random orderings (each ordering's
marginal contributions; the standard error is their standard deviation over
``sqrt(num_permutations)``). Efficiency holds exactly in both cases:
``sum_i phi_i = v(N) - v(empty)``.

The Shapley interaction index of a pair (Grabisch & Roubens 1999)::

    I_ij = sum_{S subset N \\ {i,j}} |S|! (M - |S| - 2)! / (M - 1)!
           * (v(S + i + j) - v(S + i) - v(S + j) + v(S))

positive when the two modalities are worth more together than apart (synergy),
negative when they carry the same information (redundancy). Beyond ``exact_max``
it is estimated by treating the pair as one player in random orderings of ``M - 1``
players (the predecessors of that player have exactly the weights above).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mmfuse.data._base import MultimodalDataset
from mmfuse.errors import MmfuseError

__all__ = [
    "ShapleyResult",
    "modality_shapley",
    "modality_value_fn",
    "prior_value",
    "shapley_values",
]

#: the version key ShapleyResult wrote of its own before it was nested without one (still read)
LEGACY_VERSION = 1

ValueFn = Callable[[frozenset[str]], float]


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values and pairwise interaction indices of the modalities.

    Attributes:
        modalities: the players, sorted.
        values: modality -> Shapley value ``phi_i``.
        stderr: modality -> standard error of ``phi_i`` (0 when ``exact``).
        interactions: ``"a|b"`` (sorted names) -> Shapley interaction index.
        interaction_stderr: ``"a|b"`` -> its standard error (0 when ``exact``).
        v_empty: value of the empty coalition (see the module docstring).
        v_full: value with every modality present.
        exact: computed from every coalition (else sampled orderings).
        num_permutations: orderings sampled (0 when ``exact``).
        metric: name of the metric, e.g. ``"accuracy"``.
        coalitions: ``"a+b"`` (sorted names; ``""`` for the empty one) -> value, for
            every coalition that was evaluated.
    """

    modalities: tuple[str, ...]
    values: dict[str, float]
    stderr: dict[str, float]
    interactions: dict[str, float]
    interaction_stderr: dict[str, float]
    v_empty: float
    v_full: float
    exact: bool
    num_permutations: int = 0
    metric: str = "accuracy"
    coalitions: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """No version of its own: it is stored in a run record's measurement, whose version
        covers it (:mod:`mmfuse.records`)."""
        return {
            "modalities": list(self.modalities),
            "values": dict(self.values),
            "stderr": dict(self.stderr),
            "interactions": dict(self.interactions),
            "interaction_stderr": dict(self.interaction_stderr),
            "v_empty": self.v_empty,
            "v_full": self.v_full,
            "exact": self.exact,
            "num_permutations": self.num_permutations,
            "metric": self.metric,
            "coalitions": dict(self.coalitions),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ShapleyResult:
        if raw.get("schema_version", LEGACY_VERSION) != LEGACY_VERSION:  # the key written before it was nested
            raise MmfuseError(f"ShapleyResult: expected schema_version {LEGACY_VERSION} or none, got "
                              f"{raw.get('schema_version')!r}")
        return cls(
            modalities=tuple(raw["modalities"]),
            values={k: float(v) for k, v in raw["values"].items()},
            stderr={k: float(v) for k, v in raw["stderr"].items()},
            interactions={k: float(v) for k, v in raw["interactions"].items()},
            interaction_stderr={k: float(v) for k, v in raw["interaction_stderr"].items()},
            v_empty=float(raw["v_empty"]),
            v_full=float(raw["v_full"]),
            exact=bool(raw["exact"]),
            num_permutations=int(raw["num_permutations"]),
            metric=str(raw["metric"]),
            coalitions={k: float(v) for k, v in raw["coalitions"].items()},
        )


def _key(coalition: frozenset[str]) -> str:
    return "+".join(sorted(coalition))


def shapley_values(
    value: ValueFn,
    modalities: Sequence[str],
    *,
    exact_max: int = 8,
    num_permutations: int = 256,
    seed: int = 0,
    metric: str = "accuracy",
) -> ShapleyResult:
    """Shapley values and pair interaction indices of the game ``value``.

    Args:
        value: coalition (frozenset of modality names) -> its value; called once
            per distinct coalition (results are cached), the empty one included.
        modalities: the players (at least one, distinct).
        exact_max: enumerate every coalition up to this many players.
        num_permutations: orderings sampled beyond ``exact_max``.
        seed: seed of the sampled orderings.
        metric: name stored in the result.
    """
    mods = tuple(sorted(modalities))
    if not mods or len(set(mods)) != len(mods):
        raise MmfuseError(f"modalities: expected distinct names, at least one, got {list(modalities)}")
    if isinstance(num_permutations, bool) or not isinstance(num_permutations, int) or num_permutations < 2:
        raise MmfuseError(f"num_permutations: expected an int >= 2, got {num_permutations!r}")
    cache: dict[frozenset[str], float] = {}

    def v(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = float(value(s))
        return cache[s]

    m = len(mods)
    full, empty = frozenset(mods), frozenset()
    pairs = list(itertools.combinations(mods, 2))
    values: dict[str, float] = {}
    stderr: dict[str, float] = {}
    inter: dict[str, float] = {}
    inter_se: dict[str, float] = {}
    exact = m <= exact_max
    if exact:
        for i in mods:
            others = [x for x in mods if x != i]
            total = 0.0
            for r in range(m):
                w = math.factorial(r) * math.factorial(m - r - 1) / math.factorial(m)
                for s in itertools.combinations(others, r):
                    fs = frozenset(s)
                    total += w * (v(fs | {i}) - v(fs))
            values[i], stderr[i] = total, 0.0
        for a, b in pairs:
            others = [x for x in mods if x not in (a, b)]
            total = 0.0
            for r in range(m - 1):
                w = math.factorial(r) * math.factorial(m - r - 2) / math.factorial(m - 1)
                for s in itertools.combinations(others, r):
                    fs = frozenset(s)
                    total += w * (v(fs | {a, b}) - v(fs | {a}) - v(fs | {b}) + v(fs))
            inter[f"{a}|{b}"], inter_se[f"{a}|{b}"] = total, 0.0
        used = 0
    else:
        rng = np.random.default_rng(seed)
        contrib = np.zeros((num_permutations, m))
        for p in range(num_permutations):
            order = rng.permutation(m)
            before: frozenset[str] = empty
            prev = v(before)
            for idx in order:
                now = before | {mods[idx]}
                cur = v(now)
                contrib[p, idx] = cur - prev
                before, prev = now, cur
        for i, mod in enumerate(mods):
            values[mod] = float(contrib[:, i].mean())
            stderr[mod] = float(contrib[:, i].std(ddof=1) / math.sqrt(num_permutations))
        for a, b in pairs:
            others = [x for x in mods if x not in (a, b)]
            deltas = np.empty(num_permutations)
            for p in range(num_permutations):
                # the pair is one player among m - 1: its predecessors are a uniformly
                # random position's worth of a random ordering of the others
                pos = int(rng.integers(0, m - 1))
                fs = frozenset(rng.permutation(others)[:pos].tolist())
                deltas[p] = v(fs | {a, b}) - v(fs | {a}) - v(fs | {b}) + v(fs)
            inter[f"{a}|{b}"] = float(deltas.mean())
            inter_se[f"{a}|{b}"] = float(deltas.std(ddof=1) / math.sqrt(num_permutations))
        used = num_permutations
    return ShapleyResult(
        modalities=mods,
        values=values,
        stderr=stderr,
        interactions=inter,
        interaction_stderr=inter_se,
        v_empty=v(empty),
        v_full=v(full),
        exact=exact,
        num_permutations=used,
        metric=metric,
        coalitions={_key(s): val for s, val in cache.items()},
    )


def prior_value(train: MultimodalDataset, test: MultimodalDataset, metric: str = "accuracy") -> float:
    """The metric of the constant prediction of ``train``'s class prior on ``test``
    (the value of the empty coalition, see the module docstring)."""
    from mmfuse.training.metrics import task_metrics

    _check_task(test)
    counts = torch.bincount(train.labels, minlength=train.num_classes).double()
    logits = torch.log(counts.clamp_min(1e-12) / counts.sum()).float()
    logits = logits.expand(len(test), -1).clone()
    out = task_metrics(logits, test.labels, test.task)
    if metric == "auroc":
        return 0.5
    if metric not in out:
        raise MmfuseError(f"metric: expected one of {sorted(k for k in out if k != 'n')}, got {metric!r}")
    return float(out[metric])


def _check_task(ds: MultimodalDataset) -> None:
    if ds.task not in ("binary", "multiclass"):
        raise MmfuseError(f"{ds.name}: attribution needs a binary or multiclass task, got {ds.task!r}")


def modality_value_fn(
    model: nn.Module,
    test: MultimodalDataset,
    *,
    empty_value: float,
    metric: str = "accuracy",
    batch_size: int = 512,
) -> ValueFn:
    """The game of ``model`` on ``test``: coalition -> metric with only its modalities
    present (the others get an all-False mask of their usual shape).

    Args:
        model: ``model(inputs, masks) -> (b, k)`` over ``test``'s modalities.
        test: the split to score.
        empty_value: value of the empty coalition (e.g. :func:`prior_value`).
        metric: a key of :func:`mmfuse.training.metrics.task_metrics`.
        batch_size: evaluation batch size.
    """
    from mmfuse.training.metrics import predict_logits, task_metrics

    _check_task(test)
    modalities = tuple(getattr(model, "modalities", test.modalities))

    def value(coalition: frozenset[str]) -> float:
        unknown = sorted(set(coalition) - set(modalities))
        if unknown:
            raise MmfuseError(f"coalition: unknown modality {unknown[0]!r}: expected one of {list(modalities)}")
        if not coalition:
            return float(empty_value)
        masks = {m: (k if m in coalition else torch.zeros_like(k)) for m, k in test.masks.items()}
        ds = MultimodalDataset(
            test.name, test.inputs, test.labels, specs=test.specs, num_classes=test.num_classes,
            masks=masks, task=test.task,
        )
        # the contract refuses a sample with no modality present: such a test split
        # (modalities missing in the data) has no defined game for this coalition
        any_left = torch.stack([masks[m].reshape(len(ds), -1).any(dim=1) for m in masks], 1).any(dim=1)
        if not bool(any_left.all()):
            raise MmfuseError(
                f"coalition {sorted(coalition)}: {int((~any_left).sum())} test samples have none of these "
                f"modalities present; attribution needs samples with every modality present"
            )
        logits = predict_logits(model, ds, batch_size=batch_size)
        out = task_metrics(logits, test.labels, test.task)
        if metric not in out:
            raise MmfuseError(f"metric: expected one of {sorted(k for k in out if k != 'n')}, got {metric!r}")
        return float(out[metric])

    return value


def modality_shapley(
    model: nn.Module,
    train: MultimodalDataset,
    test: MultimodalDataset,
    *,
    metric: str = "accuracy",
    exact_max: int = 8,
    num_permutations: int = 256,
    seed: int = 0,
) -> ShapleyResult:
    """Shapley values of ``model``'s modalities for ``metric`` on ``test``; the empty
    coalition is the constant prediction of ``train``'s class prior."""
    empty = prior_value(train, test, metric)
    fn = modality_value_fn(model, test, empty_value=empty, metric=metric)
    mods = tuple(getattr(model, "modalities", test.modalities))
    return shapley_values(fn, mods, exact_max=exact_max, num_permutations=num_permutations, seed=seed, metric=metric)
