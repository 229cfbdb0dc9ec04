"""Pretrained encoders chosen by name: ``hf:<model id or local folder>`` through
Hugging Face ``transformers`` and ``timm:<model>`` through ``timm``.

Shape legend: ``b`` batch, ``t`` tokens (text tokens, image patches or feature-map
positions), ``c``/``h``/``w`` image channels/height/width, ``d`` the backbone's
hidden size, ``d_out`` output features. Masks are bool, True means keep.

Two ways to use one:

- **Frozen, as a preprocessing step** (the default, and the fast one):
  :func:`mmfuse.encoders.encode_dataset` runs the backbone once over every sample and
  replaces the modality by its embeddings, a ``vector`` ``(d,)`` (``output="pooled"``)
  or a ``sequence`` ``(t, d)`` with a ``(t,)`` token mask (``output="tokens"``),
  cached on disk. Every fusion and the training engine then work unchanged on them.
- **Inside the model** (needed to fine-tune): ``build_model(...,
  encoder_options={"text": {"pretrained": "hf:./bert,finetune_last=1"}})`` puts a
  :class:`PretrainedEncoder` (backbone + a linear map to ``d_out``) in the model; it
  runs on every batch.

What a backbone reads (the datasets keep their stored form; nothing is re-read from
the raw files):

- ``text``: raw strings whenever the data has them, tokenised by the model's own
  tokenizer (truncated to ``max_length``, and to the positions the model has when the
  tokenizer gives no ``model_max_length``). A user's table
  (:func:`mmfuse.data.from_table`) keeps the joined raw text of each row
  (``splits.info["texts"]``, and :attr:`~mmfuse.data.table.Transformed.texts` for new
  rows), so a frozen encoder reads the table's text itself, at training and at
  prediction (:func:`~mmfuse.encoders.cache.encode_for_prediction`); other raw
  strings can be passed as ``raw_inputs`` of :func:`~mmfuse.encoders.encode_dataset`.
  Without raw strings (the built-in datasets, and any encoder inside the model, which
  sees the stored batch), the stored token ids are turned back into words with the
  dataset's vocabulary (``splits.info["vocab"]``, ``spec.meta["vocab"]`` or the
  vocabulary a table's preprocessor fitted, id -> word; padding dropped, the unknown
  id becomes the tokenizer's unknown token) and joined by spaces: words the
  vocabulary dropped are lost.
- ``image``: the stored ``(c, h, w)`` float image is mapped to ``[0, 1]`` per sample
  (min-max; a constant image becomes 0), one channel is repeated to three (or three
  averaged to one) as the backbone needs, resized (bilinear, antialiased) to the
  image processor's size and normalised with its mean and std. Done with torch ops,
  so the same code serves encoding and fine-tuning.
- ``audio``: backbones such as wav2vec2 read waveforms, which the stored spectrograms
  cannot give back: pass the waveforms as ``raw_inputs`` (a 1-D float array per
  sample at the feature extractor's sampling rate).

Pooled vector: the masked mean of the last hidden states over valid tokens for text
and audio; the model's ``pooler_output`` for images when it has one (ResNet,
ConvNeXt: the pooled feature map; ViT: its pooler), else the mean over patches.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.encoders._base import Encoder, EncoderError, presence_of
from mmfuse.errors import ConfigError

__all__ = [
    "EXTRAS",
    "EncoderSpec",
    "PretrainedBackbone",
    "PretrainedEncoder",
    "load_backbone",
    "parse_encoder",
]

#: the pip extra that brings each source's library
EXTRAS = {"hf": ("transformers", "mmfuse[hf]"), "timm": ("timm", "mmfuse[timm]")}
#: the version key EncoderSpec wrote of its own before it was nested without one (still read)
LEGACY_VERSION = 1
Output = Literal["pooled", "tokens"]


def position_limit(model: nn.Module) -> int | None:
    """The most tokens ``model`` can place, or None when it does not say.

    Its absolute position table's size (``embeddings.position_embeddings``), less the
    positions that models numbering tokens after the padding id never use (RoBERTa's
    ``padding_idx + 1`` first rows); else ``config.max_position_embeddings``.
    """
    table = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    if isinstance(table, nn.Embedding):
        skip = table.padding_idx + 1 if table.padding_idx is not None else 0
        return max(1, table.num_embeddings - skip)
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


@dataclass(frozen=True)
class EncoderSpec:
    """One modality's encoder, by name, with how it is trained and what it outputs.

    Attributes:
        name: ``hf:<model id or local folder>``, ``timm:<model name>``, or ``builtin``
            (the small encoder :func:`~mmfuse.encoders.build_encoder` picks).
        finetune: ``0`` frozen (the default), ``"all"`` every weight trains, or ``N``
            only the last ``N`` blocks of the backbone's block list (the longest
            ``nn.ModuleList``, e.g. BERT's ``encoder.layer``) and what follows them
            (final norm, pooler) train.
        output: ``pooled`` ``(b, d)`` or ``tokens`` ``(b, t, d)`` with a ``(b, t)`` mask.
        revision: a hub revision (branch, tag or commit) for ``hf:`` names.
        max_length: longest token sequence for text (also the fixed ``t`` of
            ``tokens`` output).
        batch_size: samples per backbone call when encoding a dataset.
    """

    name: str
    finetune: int | Literal["all"] = 0
    output: Output = "pooled"
    revision: str | None = None
    max_length: int = 128
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not (
            self.name == "builtin" or self.name.startswith(("hf:", "timm:"))
        ) or self.name in ("hf:", "timm:"):
            raise ConfigError(
                f"encoder name: expected 'hf:<model or local path>', 'timm:<model>' or 'builtin', got {self.name!r}"
            )
        ft = self.finetune
        if not (ft == "all" or (isinstance(ft, int) and not isinstance(ft, bool) and ft >= 0)):
            raise ConfigError(f"encoder {self.name!r}: finetune: expected 0, 'all' or a layer count >= 1, got {ft!r}")
        if self.output not in ("pooled", "tokens"):
            raise ConfigError(f"encoder {self.name!r}: output: expected 'pooled' or 'tokens', got {self.output!r}")
        for what, v in (("max_length", self.max_length), ("batch_size", self.batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"encoder {self.name!r}: {what}: expected a positive int, got {v!r}")

    @property
    def source(self) -> str:
        """``hf``, ``timm`` or ``builtin``."""
        return self.name.split(":", 1)[0]

    @property
    def model_id(self) -> str:
        """The part after ``hf:`` / ``timm:``."""
        return self.name.split(":", 1)[1] if ":" in self.name else self.name

    @property
    def frozen(self) -> bool:
        return self.finetune == 0

    def to_json(self) -> dict[str, Any]:
        """No version of its own: it is stored inside versioned documents (a bundle's manifest,
        the splits' ``info["encoders"]``; see :mod:`mmfuse.records`)."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> EncoderSpec:
        """From :meth:`to_json`'s dict; the ``"version": 1`` written here before (bundles
        saved by an earlier mmfuse) is read as this layout."""
        if not isinstance(raw, Mapping) or raw.get("version", LEGACY_VERSION) != LEGACY_VERSION:
            got = raw.get("version") if isinstance(raw, Mapping) else type(raw).__name__
            raise ConfigError(f"encoder spec: expected version {LEGACY_VERSION} or none, got {got!r}")
        return cls(**{k: v for k, v in raw.items() if k != "version"})

    def __str__(self) -> str:
        parts = [self.name]
        if self.finetune == "all":
            parts.append("finetune")
        elif self.finetune:
            parts.append(f"finetune_last={self.finetune}")
        if self.output != "pooled":
            parts.append(self.output)
        if self.revision:
            parts.append(f"revision={self.revision}")
        for key, default in (("max_length", 128), ("batch_size", 64)):
            if getattr(self, key) != default:
                parts.append(f"{key}={getattr(self, key)}")
        return ",".join(parts)


def parse_encoder(value: str | EncoderSpec | Mapping[str, Any]) -> EncoderSpec:
    """An :class:`EncoderSpec` from its text form, e.g. ``"hf:./my-bert"``,
    ``"timm:resnet18,finetune_last=1"``, ``"hf:bert-base-uncased,tokens,max_length=64"``.

    After the name, comma-separated options: ``frozen``, ``finetune``,
    ``finetune_last=N``, ``pooled``, ``tokens``, ``revision=R``, ``max_length=N``,
    ``batch_size=N``. (A local path may therefore not contain a comma.) A mapping is
    read as the keyword arguments of :class:`EncoderSpec`.
    """
    if isinstance(value, EncoderSpec):
        return value
    if isinstance(value, Mapping):
        try:
            return EncoderSpec(**dict(value))
        except TypeError as err:
            raise ConfigError(f"encoder spec {dict(value)!r}: {err}") from err
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"encoder: expected a name such as 'hf:bert-base-uncased', got {value!r}")
    name, *opts = (p.strip() for p in value.split(","))
    spec = EncoderSpec(name)
    for opt in opts:
        key, eq, val = opt.partition("=")
        if opt == "frozen":
            spec = replace(spec, finetune=0)
        elif opt == "finetune":
            spec = replace(spec, finetune="all")
        elif opt in ("pooled", "tokens"):
            spec = replace(spec, output=opt)  # type: ignore[arg-type]
        elif eq and key == "revision" and val:
            spec = replace(spec, revision=val)
        elif eq and key in ("finetune_last", "max_length", "batch_size"):
            try:
                n = int(val)
            except ValueError:
                raise ConfigError(f"encoder {value!r}: {key}: expected an int, got {val!r}") from None
            if key == "finetune_last" and n < 1:
                raise ConfigError(f"encoder {value!r}: finetune_last: expected an int >= 1, got {n}")
            spec = replace(spec, **{"finetune" if key == "finetune_last" else key: n})
        else:
            raise ConfigError(
                f"encoder {value!r}: unknown option {opt!r}: expected frozen, finetune, finetune_last=N, "
                f"pooled, tokens, revision=R, max_length=N or batch_size=N"
            )
    return spec


# ---------------------------------------------------------------- loading


def _require(source: str, name: str) -> Any:
    module, extra = EXTRAS[source]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"encoder {name!r} needs {module}, which is not installed: pip install '{extra}'")
    try:
        return importlib.import_module(module)
    except Exception as err:  # e.g. timm -> a torchvision build that does not match torch
        raise ConfigError(
            f"encoder {name!r}: {module} is installed but does not import ({type(err).__name__}: {err}); "
            f"reinstall it with pip install '{extra}'"
        ) from err


def _unreachable(spec: EncoderSpec, err: Exception) -> ConfigError:
    mid = spec.model_id
    return ConfigError(
        f"encoder {spec.name!r}: cannot load {mid!r}: it is not a local folder and the Hugging Face Hub "
        f"did not provide it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        f"To use a local copy, download it where there is a network "
        f"(`huggingface-cli download {mid} --local-dir ./{mid.split('/')[-1]}`) and pass "
        f"'hf:./{mid.split('/')[-1]}', or point HF_HOME at a cache that holds it and set HF_HUB_OFFLINE=1"
    )


def _longest_module_list(model: nn.Module) -> nn.ModuleList | None:
    best: nn.ModuleList | None = None
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (best is None or len(mod) > len(best)):
            best = mod
    return best


def apply_finetune(model: nn.Module, finetune: int | str, name: str) -> None:
    """Set ``requires_grad`` of ``model``'s parameters for ``finetune`` (see :class:`EncoderSpec`).

    ``N`` trains the last ``N`` blocks of the longest ``nn.ModuleList`` and every
    parameter registered after it (final norm, pooler, head).
    """
    if finetune == "all":
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    if finetune == 0:
        return
    blocks = _longest_module_list(model)
    if blocks is None or len(blocks) < int(finetune):
        have = 0 if blocks is None else len(blocks)
        raise ConfigError(f"encoder {name!r}: finetune_last: expected at most {have} blocks, got {finetune}")
    in_blocks = {id(p) for p in blocks.parameters()}
    for blk in list(blocks)[-int(finetune):]:
        blk.requires_grad_(True)
    params = list(model.parameters())
    last = max(i for i, p in enumerate(params) if id(p) in in_blocks)
    for p in params[last + 1:]:
        p.requires_grad_(True)


def weights_checksum(model: nn.Module) -> str:
    """sha256 over every tensor of ``model.state_dict()`` (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class PretrainedBackbone(nn.Module):
    """A loaded pretrained model with its preprocessing: raw batch in, features out.

    Build it with :func:`load_backbone`. :meth:`forward` takes a list of strings
    (text), a ``(b, c, h, w)`` float tensor (image) or a list of 1-D waveforms (audio)
    and returns ``(tokens (b, t, d), token mask (b, t), pooled (b, d))``.

    Attributes:
        spec: the :class:`EncoderSpec`.
        kind: ``text``, ``image`` or ``audio``.
        hidden_size: ``d``.
        preprocess: JSON facts of the preprocessing (part of the cache key).
    """

    def __init__(
        self,
        spec: EncoderSpec,
        kind: str,
        model: nn.Module,
        *,
        tokenizer: Any = None,
        feature_extractor: Any = None,
        image_size: tuple[int, int] | None = None,
        image_channels: int = 3,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        call: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.kind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.image_size = image_size
        self.image_channels = int(image_channels)
        self._call = call
        if image_mean is not None:
            self.register_buffer("image_mean", torch.tensor(list(image_mean), dtype=torch.float32).view(1, -1, 1, 1),
                                 persistent=False)
            self.register_buffer("image_std", torch.tensor(list(image_std or [1.0]), dtype=torch.float32).view(1, -1, 1, 1),
                                 persistent=False)
        else:
            self.image_mean = None  # type: ignore[assignment]
            self.image_std = None  # type: ignore[assignment]
        self._forward_args: set[str] | None = None
        if kind == "text":
            params = inspect.signature(model.forward).parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                self._forward_args = set(params)
        self.preprocess = self._preprocess_facts()
        apply_finetune(self.model, spec.finetune, spec.name)
        with torch.no_grad():
            was = self.model.training
            self.model.eval()
            self.hidden_size = int(self.forward(self._dummy())[2].shape[-1])
            self.model.train(was)

    def _preprocess_facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"kind": self.kind, "output": self.spec.output, "version": 1}
        if self.kind == "text":
            facts["max_length"] = self.max_length
            facts["tokenizer"] = type(self.tokenizer).__name__
            facts["vocab_sha256"] = hashlib.sha256(
                json.dumps(sorted(self.tokenizer.get_vocab().items())).encode()
            ).hexdigest()
        if self.kind == "image":
            facts.update(size=list(self.image_size or ()), channels=self.image_channels,
                         mean=None if self.image_mean is None else self.image_mean.flatten().tolist(),
                         std=None if self.image_std is None else self.image_std.flatten().tolist())
        if self.kind == "audio":
            facts["sampling_rate"] = int(getattr(self.feature_extractor, "sampling_rate", 0))
        return facts

    @property
    def max_length(self) -> int:
        """Tokens per text: the spec's ``max_length``, cut to the tokenizer's ``model_max_length``
        and to the positions the backbone has (:func:`position_limit`). A tokenizer saved without a
        ``model_max_length`` says so with a huge sentinel (``transformers`` uses ``1e30``), which
        is no limit: the model's positions are then the only bound, not a size error at run time."""
        limits = [self.spec.max_length]
        declared = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(declared, int) and not isinstance(declared, bool) and 0 < declared < 10**8:
            limits.append(declared)
        positions = position_limit(self.model)
        if positions is not None:
            limits.append(positions)
        return min(limits)

    def _dummy(self) -> Any:
        if self.kind == "text":
            return ["a"]
        if self.kind == "image":
            return torch.zeros(1, self.image_channels, 8, 8)
        rate = int(getattr(self.feature_extractor, "sampling_rate", 16000))
        return [np.zeros(rate // 4, dtype=np.float32)]

    def prepare_images(self, x: Tensor) -> Tensor:
        """``(b, c, h, w)`` stored floats -> the backbone's normalised pixels (see the module docstring)."""
        if x.dim() != 4:
            raise EncoderError(f"encoder {self.spec.name!r}: expected images (b, c, h, w), got {tuple(x.shape)}")
        x = x.float()
        flat = x.flatten(1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        x = ((x - lo.view(-1, 1, 1, 1)) / span.view(-1, 1, 1, 1)).clamp(0, 1)
        c = x.shape[1]
        if c != self.image_channels:
            if c == 1:
                x = x.expand(-1, self.image_channels, -1, -1)
            elif self.image_channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise EncoderError(
                    f"encoder {self.spec.name!r}: expected images with 1 or {self.image_channels} channels, got {c}"
                )
        if self.image_size is not None and tuple(x.shape[-2:]) != tuple(self.image_size):
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        if self.image_mean is not None:
            x = (x - self.image_mean) / self.image_std
        return x

    def forward(self, raw: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Raw batch -> ``(tokens (b, t, d), mask (b, t), pooled (b, d))``."""
        device = next(self.model.parameters()).device
        if self.kind == "text":
            pad = "max_length" if self.spec.output == "tokens" else "longest"
            enc = self.tokenizer(list(raw), padding=pad, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            args = {k: v.to(device) for k, v in enc.items() if self._forward_args is None or k in self._forward_args}
            out = self.model(**args)
            tokens = out.last_hidden_state
            mask = enc["attention_mask"].to(device=device, dtype=torch.bool)
            w = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)
            return tokens, mask, pooled
        if self.kind == "image":
            pixels = self.prepare_images(raw.to(device))
            if self._call is not None:  # timm
                feats, pooled = self._call(pixels)
            else:
                out = self.model(pixel_values=pixels)
                feats = out.last_hidden_state
                pooled = getattr(out, "pooler_output", None)
            if feats.dim() == 4:  # (b, c, h, w) feature map -> (b, h*w, c) tokens
                feats = feats.flatten(2).transpose(1, 2)
            if pooled is None:
                pooled = feats.mean(dim=1)
            pooled = pooled.flatten(1)
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=device)
            return feats, mask, pooled
        fe = self.feature_extractor
        enc = fe([np.asarray(w, dtype=np.float32) for w in raw], sampling_rate=fe.sampling_rate,
                 padding=True, return_attention_mask=True, return_tensors="pt")
        values = enc["input_values"] if "input_values" in enc else enc["input_features"]
        sample_mask = enc["attention_mask"].to(device)
        out = self.model(values.to(device), attention_mask=sample_mask)
        tokens = out.last_hidden_state
        reduce = getattr(self.model, "_get_feature_vector_attention_mask", None)
        if reduce is not None:
            mask = reduce(tokens.shape[1], sample_mask).to(torch.bool)
        else:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
        w = mask.unsqueeze(-1).to(tokens.dtype)
        return tokens, mask, (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)

    def train(self, mode: bool = True) -> PretrainedBackbone:
        """A frozen backbone stays in eval mode (no dropout), whatever the model around it does."""
        super().train(mode)
        if self.spec.frozen:
            self.model.eval()
        return self

    def checksum(self) -> str:
        """:func:`weights_checksum` of the backbone (computed once: frozen weights do not change)."""
        if not self.spec.frozen:
            return weights_checksum(self.model)
        if getattr(self, "_checksum", None) is None:
            self._checksum = weights_checksum(self.model)
        return self._checksum


def _hf_backbone(spec: EncoderSpec, kind: str) -> PretrainedBackbone:
    transformers = _require("hf", spec.name)
    mid = os.path.expanduser(spec.model_id)
    local = os.path.isdir(mid)
    kwargs: dict[str, Any] = {} if spec.revision is None or local else {"revision": spec.revision}
    try:
        config = transformers.AutoConfig.from_pretrained(mid, **kwargs)
        model = transformers.AutoModel.from_pretrained(mid, **kwargs)
        if kind == "text":
            pre = transformers.AutoTokenizer.from_pretrained(mid, **kwargs)
        elif kind == "image":
            pre = transformers.AutoImageProcessor.from_pretrained(mid, **kwargs)
        else:
            pre = transformers.AutoFeatureExtractor.from_pretrained(mid, **kwargs)
    except (OSError, KeyError, ValueError) as err:
        if isinstance(err, OSError) and not local:
            raise _unreachable(spec, err) from err
        what = f"the folder {mid!r}" if local else f"the model {mid!r}"
        raise ConfigError(f"encoder {spec.name!r}: {what} does not hold a complete transformers model with "
                          f"a {kind} preprocessor ({type(err).__name__}: {err})") from err
    # two-tower models (CLIP, SigLIP): keep the tower of this modality only
    tower = {"text": "text_model", "image": "vision_model"}.get(kind)
    if hasattr(config, "text_config") and hasattr(config, "vision_config") and tower and hasattr(model, tower):
        model = getattr(model, tower)
    model.eval()
    if kind == "text":
        return PretrainedBackbone(spec, kind, model, tokenizer=pre)
    if kind == "image":
        size = getattr(pre, "size", None) or {}
        if isinstance(size, Mapping) and "height" in size:
            hw: tuple[int, int] | None = (int(size["height"]), int(size["width"]))
        elif isinstance(size, Mapping) and "shortest_edge" in size:
            hw = (int(size["shortest_edge"]),) * 2
        elif isinstance(size, int):
            hw = (size, size)
        else:
            hw = None
        vision = getattr(config, "vision_config", config)
        channels = int(getattr(vision, "num_channels", 3))
        norm = bool(getattr(pre, "do_normalize", True))
        mean = getattr(pre, "image_mean", None) if norm else None
        std = getattr(pre, "image_std", None) if norm else None
        if mean is not None and len(mean) != channels:
            mean, std = [float(np.mean(mean))] * channels, [float(np.mean(std))] * channels
        return PretrainedBackbone(spec, kind, model, image_size=hw, image_channels=channels,
                                  image_mean=mean, image_std=std)
    return PretrainedBackbone(spec, kind, model, feature_extractor=pre)


def _timm_backbone(spec: EncoderSpec, kind: str) -> PretrainedBackbone:
    timm = _require("timm", spec.name)
    if kind != "image":
        raise ConfigError(f"encoder {spec.name!r}: timm models encode images, got a {kind} modality")
    try:
        model = timm.create_model(spec.model_id, pretrained=True, num_classes=0)
    except RuntimeError as err:
        raise ConfigError(f"encoder {spec.name!r}: timm cannot create {spec.model_id!r}: {err}") from err
    except OSError as err:
        raise ConfigError(
            f"encoder {spec.name!r}: cannot fetch the weights of {spec.model_id!r} ({err}). To use a local copy, "
            f"point HF_HOME at a cache that holds them and set HF_HUB_OFFLINE=1, or load the model with "
            f"timm.create_model(..., pretrained_cfg_overlay={{'file': '/path/to/model.safetensors'}})"
        ) from err
    cfg = timm.data.resolve_data_config({}, model=model)
    c, h, w = cfg["input_size"]

    def call(pixels: Tensor) -> tuple[Tensor, Tensor]:
        feats = model.forward_features(pixels)
        return feats, model.forward_head(feats, pre_logits=True)

    model.eval()
    return PretrainedBackbone(spec, kind, model, image_size=(int(h), int(w)), image_channels=int(c),
                              image_mean=cfg["mean"], image_std=cfg["std"], call=call)


def load_backbone(spec: str | EncoderSpec, kind: str) -> PretrainedBackbone:
    """Load the pretrained model named by ``spec`` for a modality of ``kind``
    (``text``, ``image`` or ``audio``), with its preprocessing and trainable weights set.

    Raises:
        ConfigError: a missing extra (naming it), a model that cannot be fetched
            (naming it and how to point at a local copy), or a kind it cannot encode.
    """
    spec = parse_encoder(spec)
    if kind not in ("text", "image", "audio"):
        raise ConfigError(f"encoder {spec.name!r}: pretrained encoders take text, image or audio, got a {kind} modality")
    if spec.source == "hf":
        return _hf_backbone(spec, kind)
    if spec.source == "timm":
        return _timm_backbone(spec, kind)
    raise ConfigError(f"encoder {spec.name!r}: a built-in encoder has no pretrained backbone")


# ---------------------------------------------------------------- in the model


def decode_ids(ids: Tensor, vocab: Sequence[str], *, pad_id: int = 0, unk_id: int | None = 1,
               unk_token: str = "[UNK]") -> list[str]:
    """``(b, t)`` token ids -> one space-joined string per row (padding dropped, unknown ->
    ``unk_token``)."""
    words = list(vocab)
    out = []
    for row in ids.tolist():
        toks = []
        for i in row:
            if i == pad_id:
                continue
            if not 0 <= i < len(words):
                raise EncoderError(f"text: token id {i} outside the vocabulary of {len(words)} words")
            toks.append(unk_token if i == unk_id else words[i])
        out.append(" ".join(toks))
    return out


class PretrainedEncoder(Encoder):
    """A pretrained backbone and a linear map to ``d_out``, inside a model.

    Takes the dataset's stored form (see the module docstring): ``(b, t)`` token ids
    (text, decoded with ``vocab``), ``(b, c, h, w)`` images. Output ``(b, d_out)``
    with the ``(b,)`` presence mask (``output="pooled"``), or ``(b, t, d_out)`` with
    the ``(b, t)`` token mask combined with presence.

    Args:
        spec: the encoder's name and options (``str`` or :class:`EncoderSpec`).
        kind: the modality kind.
        out_dim: ``d_out``.
        vocab: id -> word, for a text modality.
        pad_id, unk_id: of that vocabulary.
    """

    def __init__(
        self,
        spec: str | EncoderSpec,
        kind: str,
        out_dim: int,
        *,
        vocab: Sequence[str] | None = None,
        pad_id: int = 0,
        unk_id: int | None = 1,
    ) -> None:
        super().__init__()
        self.spec = parse_encoder(spec)
        if kind == "audio":
            raise ConfigError(
                f"encoder {self.spec.name!r}: audio backbones read waveforms, which a stored spectrogram "
                f"cannot give back: encode them with encode_dataset(..., raw_inputs=...)"
            )
        if kind == "text" and vocab is None:
            raise ConfigError(f"encoder {self.spec.name!r}: inside the model, a text modality is read from its "
                              f"stored token ids and needs their vocabulary (id -> word), got none")
        self.backbone = load_backbone(self.spec, kind)
        self.kind = kind
        self.vocab = list(vocab) if vocab is not None else None
        self.pad_id, self.unk_id = int(pad_id), unk_id
        self.out_dim = int(out_dim)
        self.outputs_tokens = self.spec.output == "tokens"
        self.proj = nn.Linear(self.backbone.hidden_size, self.out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Stored batch and its mask -> ``(b, d_out)`` and ``(b,)`` (tokens: ``(b, t, d_out)``, ``(b, t)``)."""
        present = presence_of(mask, x)
        if self.kind == "text":
            unk = getattr(self.backbone.tokenizer, "unk_token", None) or "[UNK]"
            assert self.vocab is not None
            raw: Any = decode_ids(x, self.vocab, pad_id=self.pad_id, unk_id=self.unk_id, unk_token=unk)
        else:
            raw = x
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone.spec.frozen):
            tokens, tmask, pooled = self.backbone(raw)
        if self.outputs_tokens:
            tmask = tmask & present.unsqueeze(1)
            h = self.proj(tokens) * tmask.unsqueeze(-1).to(tokens.dtype)
            return h, tmask
        h = self.proj(pooled)
        return torch.where(present.unsqueeze(1), h, h.new_zeros(())), present
