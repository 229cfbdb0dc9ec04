"""Small building blocks shared by fusions, encoders and heads.

Shape legend: ``b`` batch, ``t`` tokens, ``d`` features. Layers act on the last axis,
so ``(b, d)`` and ``(b, t, d)`` inputs both work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["ModalityDict", "ModalityParameterDict", "Mlp", "escape_key", "unescape_key"]

_OLD_KEY = re.compile(r"net\.(\d+)\.(.+)")


class Mlp(nn.Module):
    """Linear -> norm -> act -> dropout, repeated, then a final linear layer.

    Submodules have fixed names, whatever the options (as timm's ``layers/mlp.py``):
    hidden layer ``i`` (from 1) is ``fc{i}``, ``norm{i}``, ``act{i}``, ``drop{i}``, and
    the last linear map is ``fc_out``. An unused slot (no ``norm_layer``, ``dropout=0``)
    holds ``nn.Identity``, so weight names never depend on those options and
    checkpoints load across them.

    Checkpoints of mmfuse 0.1, where the layers were an ``nn.Sequential`` named
    ``net`` (keys ``net.N.weight``), are converted on load by a
    ``load_state_dict`` pre-hook.

    Args:
        in_dim: input features.
        out_dim: output features.
        hidden_dims: widths of the hidden layers (empty: a single linear map).
        act_layer: activation class, instantiated once per hidden layer.
        norm_layer: optional normalisation class applied after each hidden linear
            (e.g. ``nn.LayerNorm``; it must act per sample: no BatchNorm in fusions).
        dropout: dropout after each hidden activation.
        bias: use biases.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dims: Sequence[int] = (),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        prev = in_dim
        self.num_hidden = len(hidden_dims)
        for i, width in enumerate(hidden_dims, start=1):
            self.add_module(f"fc{i}", nn.Linear(prev, width, bias=bias))
            self.add_module(f"norm{i}", norm_layer(width) if norm_layer is not None else nn.Identity())
            self.add_module(f"act{i}", act_layer())
            self.add_module(f"drop{i}", nn.Dropout(dropout) if dropout > 0 else nn.Identity())
            prev = width
        self.fc_out = nn.Linear(prev, out_dim, bias=bias)
        # forward order, resolved once; Identity slots are skipped (a module call each)
        slots = [f"{part}{i}" for i in range(1, self.num_hidden + 1) for part in ("fc", "norm", "act", "drop")]
        self._order: tuple[str, ...] = tuple(
            s for s in slots if not isinstance(self._modules[s], nn.Identity)
        ) + ("fc_out",)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.register_load_state_dict_pre_hook(_convert_sequential_keys)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        for name in self._order:
            x = self._modules[name](x)  # type: ignore[misc]
        return x


def _convert_sequential_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Rename 0.1 keys ``{prefix}net.N.rest`` to the named slots, in place.

    In 0.1 each hidden layer was ``Linear, [norm], act, [Dropout]`` in one
    ``nn.Sequential``; dropout (no parameters) shifted the indices. The linear layers
    are found by their 2-d weights; a parameter between two linear layers belongs to
    the norm when the module has one, else to the activation.
    """
    assert isinstance(module, Mlp)
    old: dict[int, dict[str, str]] = {}
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        match = _OLD_KEY.fullmatch(key[len(prefix) :])
        if match:
            old.setdefault(int(match.group(1)), {})[match.group(2)] = key
    if not old:
        return
    linear = [i for i in sorted(old) if "weight" in old[i] and state_dict[old[i]["weight"]].dim() == 2]
    if len(linear) != module.num_hidden + 1:
        from mmfuse.errors import CheckpointError

        raise CheckpointError(
            f"{prefix}net: old (0.1) Mlp weights: expected {module.num_hidden + 1} linear layers, "
            f"got {len(linear)} (indices {linear}); the checkpoint does not match this model"
        )
    has_norm = not isinstance(module._modules.get("norm1"), nn.Identity)
    names: dict[int, str] = {}
    for layer, idx in enumerate(linear, start=1):
        names[idx] = "fc_out" if layer == len(linear) else f"fc{layer}"
    for layer, (start, stop) in enumerate(zip(linear[:-1], linear[1:], strict=True), start=1):
        inner = [i for i in sorted(old) if start < i < stop]
        slots = ([f"norm{layer}"] if has_norm else []) + [f"act{layer}"]
        for i, slot in zip(inner, slots, strict=False):
            names[i] = slot
    for idx, params in old.items():
        if idx not in names:
            continue  # left in place: load_state_dict reports it as unexpected
        for rest, key in params.items():
            state_dict[f"{prefix}{names[idx]}.{rest}"] = state_dict.pop(key)




# ------------------------------------------------------------ modality-keyed dicts
# Modality names come from users (column names, file names): any non-empty string must
# work as a key. nn.ModuleDict / nn.ParameterDict refuse '.' and names of their own
# attributes ('training', 'items', 'keys', 'type', ...), so keys are escaped inside
# the module (and so in state_dict keys) and stay unescaped in the public API.
_RESERVED = frozenset(dir(nn.ModuleDict())) | frozenset(dir(nn.ParameterDict()))


def escape_key(name: str) -> str:
    """The module key of modality ``name``: ``name`` itself when torch accepts it, else
    ``'.'`` and ``'%'`` percent-encoded (``a.b -> a%2Eb``) and attribute names prefixed
    with ``'%'`` (``items -> %items``). Injective: a name torch accepts has no ``'%'``."""
    if "." in name or "%" in name:
        return name.replace("%", "%25").replace(".", "%2E")
    if name in _RESERVED:
        return "%" + name
    return name


def unescape_key(key: str) -> str:
    """Inverse of :func:`escape_key`."""
    if key.startswith("%") and key[1:] in _RESERVED:
        return key[1:]
    return key.replace("%2E", ".").replace("%25", "%")


class ModalityDict(nn.ModuleDict):
    """``nn.ModuleDict`` whose keys may be any non-empty string (see :func:`escape_key`).

    Indexing, iteration, ``keys()`` and ``items()`` use the names as given; only the
    registered submodule names (and so the ``state_dict`` keys) are escaped.
    """

    def __getitem__(self, key: str) -> nn.Module:
        return self._modules[escape_key(key)]  # type: ignore[return-value]

    def __setitem__(self, key: str, module: nn.Module) -> None:
        self.add_module(escape_key(key), module)

    def __delitem__(self, key: str) -> None:
        del self._modules[escape_key(key)]

    def __iter__(self):  # type: ignore[override]
        return (unescape_key(k) for k in self._modules)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and escape_key(key) in self._modules

    def pop(self, key: str) -> nn.Module:
        return self._modules.pop(escape_key(key))  # type: ignore[return-value]

    def keys(self):  # type: ignore[override]
        return {unescape_key(k): None for k in self._modules}.keys()

    def items(self):  # type: ignore[override]
        return {unescape_key(k): v for k, v in self._modules.items()}.items()


class ModalityParameterDict(nn.ParameterDict):
    """``nn.ParameterDict`` whose keys may be any non-empty string (see :func:`escape_key`)."""

    def _key_to_attr(self, key: str) -> str:
        return escape_key(super()._key_to_attr(key))
