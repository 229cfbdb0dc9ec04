"""Serve a trained model over HTTP: ``mmfuse serve RUN``.

Shape legend: ``n`` rows of one request, ``N`` rows of one coalesced model call.

The library: FastAPI on uvicorn. LitServe was the other candidate; it was not chosen
because (1) it runs the model in separate worker processes fed through inter-process
queues, which adds a copy and a hop to every request, multiplies the model's memory,
and makes the server awkward to start and stop inside a test or a notebook; (2) its
batching unit is the request (``max_batch_size`` requests), while a request here is a
list of rows, and what matters for the model is the number of rows in a call: the
batcher below counts rows; (3) LitServe is itself built on FastAPI and uvicorn, so
they come with it anyway. FastAPI (on Starlette) gives the application, the routing and
the ASGI plumbing, uvicorn the HTTP server; the batching is a small asyncio queue and
one model thread here (:class:`_Batcher`), tested.

Endpoints:

- ``GET /health``: ``{"status": "ok", "model", "task", "classes", "modalities",
  "columns" (feature column -> kind), "bundle", "mmfuse_version", "batching": {the
  settings}, "threads", "base_dir", "served": {"requests", "rows", "model_calls",
  "largest_call_rows"}}``.
- ``POST /predict``: the body is ``{"rows": [{column: value, ...}, ...]}`` or a bare list
  of row objects. The columns are the training table's; values are JSON scalars (a
  list of numbers for an embedding column). An image, audio or ``.npy`` column takes a
  path the server may read, relative to the ``--base-dir`` the server was started
  with (a path that resolves outside it, or any path when the server has no
  ``--base-dir``, is refused), or the file's bytes as base64: a ``data:<mime>;base64,...``
  URI or ``{"base64": "...", "suffix": ".png"}``, decoded to a temporary file for the
  preprocessing and removed after the answer. The answer::

      {"model": "gated", "task": "binary", "classes": ["0", "1"],
       "predictions": [{"prediction": "1", "proba_0": 0.21, "proba_1": 0.79}, ...],
       "summary": {"rows": 2, "predicted": 1, "not_predicted": 1,
                   "counts": {"size: category not seen in training (unknown code)": 1},
                   "ignored_columns": ["note"],
                   "absent_columns": [], "unreadable_files": 0},
       "lines": ["rows: 2, predicted: 1, not predicted (every modality missing): 1", ...]}

  ``predictions`` has one object per row, in order, with the columns of
  :meth:`mmfuse.runs.Run.predict` (the same values); a row that cannot be predicted
  (every modality missing) has nulls. ``lines`` are ``mmfuse predict``'s summary lines
  for this request. The rules of new data are predict's: an absent column or a missing
  value masks its modality; an unseen category is counted; unknown columns are
  ignored and listed.

Errors (``{"error": message, "field": "rows[3].age"}``, the server keeps serving): 400
malformed JSON or a body or row of the wrong shape, naming the field; 413 a body or a
request over the limits; 422 a :class:`~mmfuse.errors.DataError` of the preprocessing
(text in a numeric column), with its message, which names the column and the row;
503 when the queue is full or the server is stopping.

Batching (:class:`ServeSettings`; defaults ``max_batch_rows=256``, ``max_wait_ms=2``,
``max_request_rows=10000``, ``max_body_mb=64``, ``max_queue=1024``): each request is
parsed (in a thread when its body is over 32 KiB), then queued. One worker takes the
first queued request and every request already waiting, up to ``max_batch_rows`` rows,
and then, while other requests have arrived and are still being read or parsed, waits
for them at most ``max_wait_ms`` (a lone request is never delayed: nothing else is
arriving). The batch is preprocessed request by request (so that one request's
DataError fails that request only, and its summary is its own), then run through the
model in one call, in the model thread. A request larger than ``max_batch_rows`` is a
call of its own. While the model runs, new requests queue, so under load the batches
fill without waiting. Only the model thread touches the model and the preprocessing.
At one or a few rows a request, the per-request work (HTTP, JSON, preprocessing) costs
more than the model (``benchmarks/serve_speed.py``): send rows in batches.

Nothing listens beyond 127.0.0.1 unless ``--host`` says so; another host prints a
warning: there is no authentication.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import math
import shutil
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from mmfuse.errors import ConfigError, DataError, MmfuseError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mmfuse.runs.predictor import Run

__all__ = ["LOCAL_HOSTS", "RequestError", "ServeSettings", "create_app", "exposure_warning", "parse_rows",
           "serve_command", "serve_in_thread"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# the column kinds whose values are files (:mod:`mmfuse.data.table.kinds`; a flag on the kind's
# registration would let a new kind say so itself)
FILE_KINDS = ("image", "audio", "embedding")
_MIME_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/gif": ".gif",
                "image/bmp": ".bmp", "image/webp": ".webp", "image/tiff": ".tif", "audio/wav": ".wav",
                "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/flac": ".flac", "audio/x-flac": ".flac",
                "audio/ogg": ".ogg", "application/x-npy": ".npy", "application/octet-stream": ""}
_KIND_SUFFIX = {"image": ".png", "audio": ".wav", "embedding": ".npy"}
_INLINE_BODY = 32 * 1024  # bytes


@dataclass(frozen=True)
class ServeSettings:
    """How ``mmfuse serve`` listens and batches (the flags of the same names).

    Attributes:
        host, port: where it listens (port 0: a free port, printed).
        base_dir: the folder that image/audio/``.npy`` paths in rows resolve against and
            must stay inside; None: paths are refused, files come as base64.
        max_batch_rows: most rows in one model call (requests are coalesced up to it).
        max_wait_ms: most time a batch waits for requests still arriving (being read or parsed).
        max_request_rows: most rows in one request (413 beyond).
        max_body_mb: largest request body (413 beyond).
        max_queue: most requests waiting for the model (503 beyond).
        threads: torch threads of the model's forward (None: ``auto``, the rule of
            :func:`mmfuse.load_run`); :func:`serve_command` loads the run with it and sets the
            process's torch threads to it.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    base_dir: Path | None = None
    max_batch_rows: int = 256
    max_wait_ms: float = 2.0
    max_request_rows: int = 10_000
    max_body_mb: float = 64.0
    max_queue: int = 1024
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: expected an int in [0, 65535], got {self.port!r}")
        for name in ("max_batch_rows", "max_request_rows", "max_queue"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: expected a positive int, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"--threads: expected a positive int, got {self.threads!r}")
        for name in ("max_wait_ms", "max_body_mb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (
                    name == "max_body_mb" and value == 0):
                raise ConfigError(f"--{name.replace('_', '-')}: expected a non-negative number"
                                  f"{' above 0' if name == 'max_body_mb' else ''}, got {value!r}")
        if self.base_dir is not None:
            base = Path(self.base_dir).expanduser().resolve()
            if not base.is_dir():
                raise ConfigError(f"--base-dir {self.base_dir}: no such folder")
            object.__setattr__(self, "base_dir", base)

    def batching(self) -> dict[str, Any]:
        return {"max_batch_rows": self.max_batch_rows, "max_wait_ms": self.max_wait_ms,
                "max_request_rows": self.max_request_rows, "max_body_mb": self.max_body_mb,
                "max_queue": self.max_queue}


class RequestError(DataError):
    """A request the server cannot read: ``status`` (400, 413, 503) and the ``field`` it names."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field


def exposure_warning(host: str) -> str | None:
    """The warning printed when ``host`` is not a loopback address (None when it is)."""
    if host in LOCAL_HOSTS:
        return None
    return (f"warning: listening on {host}: every machine that can reach this one can send rows and read the "
            "predictions; there is no authentication. Use the default --host 127.0.0.1 (with a reverse proxy "
            "in front) unless that is what you want.")


# ---------------------------------------------------------------------------- requests
def parse_rows(body: bytes, *, kinds: Mapping[str, str], base_dir: Path | None,
               tmp: _Scratch) -> pd.DataFrame:
    """The request body as a DataFrame of the rows, files resolved (see the module docstring).

    Args:
        body: the raw body.
        kinds: feature column -> kind (the run's schema).
        base_dir: where paths resolve and must stay (resolved); None: paths refused.
        tmp: where base64 files are written.

    Raises:
        RequestError: malformed JSON, a body or a value of the wrong shape, naming the field.
    """
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as e:
        raise RequestError(f"body: not UTF-8 JSON: {e}", field="body") from e
    except json.JSONDecodeError as e:
        raise RequestError(f"body: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}",
                           field="body") from e
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"rows"})
        if "rows" not in doc:
            raise RequestError(f'body: expected {{"rows": [...]}} or a list of rows, got an object with keys '
                               f"{sorted(doc)}", field="rows")
        if unknown:
            raise RequestError(f"body: unknown keys {unknown}; the body is {{\"rows\": [...]}}", field=unknown[0])
        rows = doc["rows"]
        if not isinstance(rows, list):
            raise RequestError(f"rows: expected a list of row objects, got {_json_type(rows)}", field="rows")
    elif isinstance(doc, list):
        rows = doc
    else:
        raise RequestError(f'body: expected {{"rows": [...]}} or a list of rows, got {_json_type(doc)}',
                           field="body")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(f"rows[{i}]: expected an object of column: value, got {_json_type(row)}",
                               field=f"rows[{i}]")
        out.append({col: _value(v, kinds.get(col), f"rows[{i}].{col}", base_dir, tmp) for col, v in row.items()})
    return pd.DataFrame(out) if out else pd.DataFrame()


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _value(v: Any, kind: str | None, name: str, base_dir: Path | None, tmp: _Scratch) -> Any:
    if kind is None:  # a column the model does not use: kept, so that it is listed as ignored
        return v
    if kind in FILE_KINDS and isinstance(v, dict):
        payload = v.get("base64")
        extra = sorted(set(v) - {"base64", "suffix"})
        if not isinstance(payload, str) or extra:
            raise RequestError(f'{name}: expected a path, a data: URI or {{"base64": "...", "suffix": ".png"}}, '
                               f"got an object with keys {sorted(v)}", field=name)
        suffix = v.get("suffix", _KIND_SUFFIX[kind])
        if not isinstance(suffix, str) or not (suffix == "" or (suffix.startswith(".") and suffix[1:].isalnum())):
            raise RequestError(f"{name}.suffix: expected e.g. '.png', got {suffix!r}", field=f"{name}.suffix")
        return tmp.write(_decode(payload, name), suffix)
    if kind in FILE_KINDS and isinstance(v, str) and v.startswith("data:"):
        head, sep, payload = v.partition(",")
        if not sep or not head.endswith(";base64"):
            raise RequestError(f"{name}: a data: URI must be data:<mime>;base64,<bytes>", field=name)
        mime = head[len("data:"):-len(";base64")].lower()
        return tmp.write(_decode(payload, name), _MIME_SUFFIX.get(mime, _KIND_SUFFIX[kind]))
    if kind in FILE_KINDS and isinstance(v, str) and v.strip():
        return str(_inside(v, name, base_dir))
    if kind == "embedding" and isinstance(v, list):
        return v
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise RequestError(f"{name}: expected a string, a number, a boolean or null for a {kind} column, got "
                       f"{_json_type(v)}", field=name)


def _decode(payload: str, name: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{name}: invalid base64: {e}", field=name) from e


def _inside(value: str, name: str, base_dir: Path | None) -> Path:
    if base_dir is None:
        raise RequestError(f"{name}: a path ({value!r}), but the server was started without --base-dir: send the "
                           'file as base64 ({"base64": "..."} or a data: URI), or start it with --base-dir',
                           field=name)
    path = (base_dir / value.strip()).resolve()
    if not path.is_relative_to(base_dir):
        raise RequestError(f"{name}: {value!r} is outside the server's --base-dir", field=name)
    return path


class _Scratch:
    """A request's temporary folder for base64 files, made when the first one comes."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self._n = 0

    def write(self, data: bytes, suffix: str) -> str:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="mmfuse-serve-"))
        path = self.folder / f"{self._n}{suffix}"
        self._n += 1
        path.write_bytes(data)
        return str(path)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


# ---------------------------------------------------------------------------- batching
@dataclass
class _Job:
    frame: pd.DataFrame
    future: asyncio.Future[Any]

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class _Joined:
    """Several requests' transformed rows as one model input (``(N, ...)`` tensors)."""

    inputs: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    usable: np.ndarray

    def __len__(self) -> int:
        return int(self.usable.shape[0])


@dataclass
class _Answer:
    predictions: list[dict[str, Any]]
    summary: dict[str, Any]
    lines: list[str]


@dataclass
class _Stats:
    requests: int = 0
    rows: int = 0
    model_calls: int = 0
    largest_call_rows: int = 0


class _Batcher:
    """Coalesces queued requests into model calls (see the module docstring)."""

    def __init__(self, run: Run, settings: ServeSettings) -> None:
        self.run, self.settings = run, settings
        self.stats = _Stats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mmfuse-model")
        self._carry: _Job | None = None
        # requests arrived and not yet queued (their bodies being read or parsed): only these are
        # waited for, so a lone request is never delayed
        self.incoming = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.settings.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending = [self._carry] if self._carry is not None else []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            if not job.future.done():
                job.future.set_exception(RequestError("the server is stopping", status=503))
        self._pool.shutdown(wait=True)

    async def submit(self, frame: pd.DataFrame) -> _Answer:
        if self._queue is None or self._task is None or self._task.done():
            raise RequestError("the server is not running", status=503)
        job = _Job(frame, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise RequestError(f"busy: {self.settings.max_queue} requests are waiting; try again",
                               status=503) from None
        return await job.future

    async def _next(self, timeout: float | None) -> _Job | None:
        assert self._queue is not None
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        limit, wait = self.settings.max_batch_rows, self.settings.max_wait_ms / 1000.0
        while True:
            first = await self._next(None)
            assert first is not None
            jobs, rows = [first], len(first)
            deadline = loop.time() + wait
            while rows < limit:
                job = await self._next(deadline - loop.time() if self.incoming else 0.0)
                if job is None:
                    break
                if rows + len(job) > limit:
                    self._carry = job  # the first of the next call
                    break
                jobs.append(job)
                rows += len(job)
            jobs = [j for j in jobs if not j.future.done()]  # a client that went away
            if not jobs:
                continue
            try:
                answers = await loop.run_in_executor(self._pool, self._predict, [j.frame for j in jobs])
            except Exception as exc:  # noqa: BLE001  (the model failed: every request of the call is told)
                answers = [exc] * len(jobs)
            for job, answer in zip(jobs, answers, strict=True):
                if job.future.done():
                    continue
                if isinstance(answer, BaseException):
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)

    def _predict(self, frames: Sequence[pd.DataFrame]) -> list[_Answer | BaseException]:
        """In the model thread: each frame preprocessed on its own, one model call for them all."""
        from mmfuse.runs.predictor import PredictSummary

        run = self.run
        base = self.settings.base_dir or Path(tempfile.gettempdir())
        answers: list[_Answer | BaseException | None] = [None] * len(frames)
        done: list[tuple[int, Any]] = []
        for i, frame in enumerate(frames):
            try:
                # paths were checked against --base-dir as the rows were parsed (_inside); base64 files
                # sit in the request's scratch folder, outside it
                done.append((i, run.transform(frame, base_dir=base, where="rows", allow_outside=True)))
            except Exception as exc:  # noqa: BLE001  (this request's error, the others go on)
                answers[i] = exc
        # one call per group of equal input shapes (all of them, for the built-in kinds)
        groups: dict[tuple[Any, ...], list[tuple[int, Any]]] = {}
        for i, t in done:
            key = tuple((m, tuple(x.shape[1:]), tuple(t.masks[m].shape[1:])) for m, x in sorted(t.inputs.items()))
            groups.setdefault(key, []).append((i, t))
        for members in groups.values():
            ts = [t for _, t in members]
            joined = _Joined({m: torch.cat([t.inputs[m] for t in ts]) for m in ts[0].inputs},
                             {m: torch.cat([t.masks[m] for t in ts]) for m in ts[0].masks},
                             np.concatenate([t.usable for t in ts]))
            logits = run.outputs(joined, batch_size=self.settings.max_batch_rows)
            self.stats.model_calls += 1
            self.stats.largest_call_rows = max(self.stats.largest_call_rows, len(joined))
            records = _records(run.prediction_frame(joined, logits))  # row-wise: the same as per request
            start = 0
            for i, t in members:
                summary = PredictSummary()
                summary.add(t)
                answers[i] = _Answer(records[start:start + len(t)], {
                    "rows": summary.rows, "predicted": summary.predicted, "not_predicted": summary.not_predicted,
                    "counts": dict(summary.counts), "ignored_columns": list(summary.extra_columns),
                    "absent_columns": list(summary.absent_columns), "unreadable_files": summary.bad_files},
                    summary.lines())
                start += len(t)
        self.stats.requests += len(frames)
        self.stats.rows += sum(len(f) for f in frames)
        if any(a is None for a in answers):
            raise RuntimeError("a request of the batch got no answer")  # a bug: every one is answered above
        return answers  # type: ignore[return-value]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: numpy scalars as Python ones, NaN as null."""
    cols = {c: [_plain(v) for v in frame[c].tolist()] for c in frame.columns}
    return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)] if cols else []


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return _plain(v.item())
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    return v


# ---------------------------------------------------------------------------- the app
def create_app(run: Run, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``run`` (see the module docstring)."""
    try:
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
    except ImportError as exc:
        raise ConfigError(f"mmfuse serve needs FastAPI and uvicorn ({exc}); pip install 'mmfuse[serve]'") from exc
    from mmfuse import __version__

    settings = settings or ServeSettings()
    prep = run.table_preprocessor()
    kinds = dict(prep.schema.kinds)
    batcher = _Batcher(run, settings)
    limit = int(settings.max_body_mb * 1024 * 1024)
    health = {"status": "ok", "model": run.label, "task": run.task, "classes": list(run.class_names),
              "modalities": list(run.modalities), "columns": kinds, "bundle": str(run.bundle.folder),
              "mmfuse_version": __version__, "batching": settings.batching(),
              "threads": getattr(run, "threads", None),
              "base_dir": None if settings.base_dir is None else str(settings.base_dir)}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="mmfuse", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher = batcher

    def error(status: int, message: str, name: str | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "field": name}, status_code=status)

    async def get_health(request: Request) -> JSONResponse:
        st = batcher.stats
        return JSONResponse({**health, "served": {"requests": st.requests, "rows": st.rows,
                                                  "model_calls": st.model_calls,
                                                  "largest_call_rows": st.largest_call_rows}})

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"body: {int(declared)} bytes, more than --max-body-mb {settings.max_body_mb}",
                               status=413, field="body")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"body: more than --max-body-mb {settings.max_body_mb}", status=413, field="body")
            chunks.append(chunk)
        return b"".join(chunks)

    async def post_predict(request: Request) -> JSONResponse:
        scratch = _Scratch()
        batcher.incoming += 1  # until queued (or refused)
        arriving = True
        try:
            body = await read_body(request)
            # a small body is parsed here (well under a millisecond), a large one in a thread, so that
            # a lone small request does not pay a thread hop under load
            parse = functools.partial(parse_rows, body, kinds=kinds, base_dir=settings.base_dir, tmp=scratch)
            frame = parse() if len(body) <= _INLINE_BODY else await run_in_threadpool(parse)
            if len(frame) > settings.max_request_rows:
                raise RequestError(f"rows: {len(frame)} rows, more than --max-request-rows "
                                   f"{settings.max_request_rows}", status=413, field="rows")
            batcher.incoming -= 1
            arriving = False
            if len(frame) == 0:
                answer = _Answer([], {"rows": 0, "predicted": 0, "not_predicted": 0, "counts": {},
                                      "ignored_columns": [], "absent_columns": [], "unreadable_files": 0},
                                 ["rows: 0, predicted: 0"])
            else:
                answer = await batcher.submit(frame)  # queued in this step of the event loop: no gap
        except RequestError as e:
            return error(e.status, str(e), e.field)
        except MmfuseError as e:  # the preprocessing's: a value of the wrong kind, ...
            return error(422, str(e))
        except Exception as e:  # noqa: BLE001  (a bug: answered, printed, and the server goes on)
            traceback.print_exc()
            return error(500, f"internal error: {type(e).__name__}: {e}")
        finally:
            if arriving:
                batcher.incoming -= 1
            scratch.close()
        return JSONResponse({"model": run.label, "task": run.task, "classes": list(run.class_names),
                             "predictions": answer.predictions, "summary": answer.summary, "lines": answer.lines})

    # plain routes: the handlers take the raw request (the body is parsed and checked above, field by
    # field, into the preprocessing's own rules), not FastAPI's parameter injection
    app.add_route("/health", get_health, methods=["GET"])
    app.add_route("/predict", post_predict, methods=["POST"])
    return app


def _server(app: FastAPI, settings: ServeSettings) -> tuple[Any, socket.socket]:
    """A uvicorn server for ``app`` and its bound socket (so that port 0 gives a known free port)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError(f"mmfuse serve needs FastAPI and uvicorn ({exc}); pip install 'mmfuse[serve]'") from exc
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            lifespan="on")
    return uvicorn.Server(config), _bind(settings.host, settings.port)


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Made with ``IPPROTO_TCP`` explicitly: asyncio sets ``TCP_NODELAY`` on
    the connections of a socket only when its protocol says TCP, and uvicorn's own
    ``Config.bind_socket`` leaves it 0, which costs every keep-alive response ~40 ms (Nagle
    against the client's delayed ACK)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e})") from e
    family, _, proto, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e})") from e
    sock.set_inheritable(True)
    return sock


def _url(settings: ServeSettings, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def serve_in_thread(run: Run, settings: ServeSettings | None = None, *, start_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``run`` in a background thread of this process (a free port by default) and yield its
    URL; the server is stopped on leaving, whatever happens. For tests and benchmarks."""
    settings = settings or ServeSettings(port=0)
    server, sock = _server(create_app(run, settings), settings)
    url = _url(settings, sock)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001  (reported to the caller below)
            failure.append(exc)

    thread = threading.Thread(target=target, name="mmfuse-serve", daemon=True)
    thread.start()
    try:
        waited = 0.0
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError(f"the server did not start: {failure[0] if failure else 'it exited'}")
            if waited > start_timeout:
                raise RuntimeError(f"the server did not start within {start_timeout} s")
            threading.Event().wait(0.02)
            waited += 0.02
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def serve_command(run_path: str, *, strategy: str | None = None, settings: ServeSettings) -> int:
    """Everything ``mmfuse serve`` does: load, print where it listens, serve until interrupted."""
    from mmfuse.runs.predictor import load_run

    run = load_run(run_path, strategy=strategy, threads="auto" if settings.threads is None else settings.threads)
    # the whole process's torch ops (softmax, the preprocessing's) with the forward's threads: on a busy
    # machine more threads than that cost milliseconds per request in spinning
    torch.set_num_threads(int(getattr(run, "threads", None) or torch.get_num_threads()))
    app = create_app(run, settings)
    server, sock = _server(app, settings)
    warning = exposure_warning(settings.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    url = _url(settings, sock)
    b = settings.batching()
    print(f"mmfuse serve: {run.label} ({run.task}) from {run.bundle.folder}", flush=True)
    print(f"batching: up to {b['max_batch_rows']} rows per model call, wait at most {b['max_wait_ms']} ms; "
          f"files: {'paths under ' + str(settings.base_dir) if settings.base_dir else 'base64 only (no --base-dir)'}",
          flush=True)
    print(f"listening on {url} (POST /predict, GET /health; Ctrl-C stops)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0

