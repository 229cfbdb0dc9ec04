"""``mmfuse serve``: a real HTTP server on 127.0.0.1 (a free port, in a thread or a subprocess,
always stopped), answered with a real client, against ``run.predict`` / ``mmfuse predict`` on
the same rows to 1e-6; concurrent requests coalesced; every malformed request answered 4xx
naming its field while the server keeps serving.

The run: a small synthetic table (a text, a numeric and a categorical column, 300 rows)
trained for two epochs.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _toy_reviews import toy_reviews, train_toy

import mmfuse
from mmfuse.cli import main
from mmfuse.errors import ConfigError

httpx = pytest.importorskip("httpx", reason="the serve tests need httpx (pip install 'mmfuse[serve]')")
pytest.importorskip("fastapi", reason="mmfuse serve needs FastAPI (pip install 'mmfuse[serve]')")
pytest.importorskip("uvicorn", reason="mmfuse serve needs uvicorn (pip install 'mmfuse[serve]')")

from mmfuse.runs.serve import (  # noqa: E402  (after the skips)
    RequestError,
    ServeSettings,
    _bind,
    _Scratch,
    exposure_warning,
    parse_rows,
    serve_in_thread,
)

TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_toy(tmp_path_factory.mktemp("serve"), "gated", "hidden_dim=16")


@pytest.fixture(scope="module")
def run(trained: Path) -> mmfuse.Run:
    return mmfuse.load_run(trained)


@pytest.fixture(scope="module")
def new_rows() -> pd.DataFrame:
    """40 new rows without the target: texts missing, one row with nothing, an unseen size, an extra column."""
    df = toy_reviews(40, 1).drop(columns=["y"])
    df.loc[[0, 3], "review"] = None          # text missing: that modality masked
    df.loc[5, ["review", "age", "size"]] = None  # every modality missing: not predicted
    df.loc[[2, 7], "size"] = "XXL"           # never seen in training
    df["note"] = "extra"                     # not a column of the model
    return df


def _json_rows(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _labels(column: pd.Series) -> list:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in column.tolist()]


def _same(answer: list[dict], expected: pd.DataFrame) -> None:
    got = pd.DataFrame(answer)
    assert list(got.columns) == list(expected.columns)
    assert _labels(got["prediction"]) == _labels(expected["prediction"])
    for c in expected.columns[1:]:
        a, b = got[c].astype(float).to_numpy(), expected[c].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=1e-6, rtol=0, err_msg=c)


# ---------------------------------------------------------------- one server, many answers
def test_health_and_predictions_equal_run_predict_and_the_cli(run: mmfuse.Run, trained: Path, new_rows: pd.DataFrame,
                                                              tmp_path: Path, capsys) -> None:
    expected = run.predict(new_rows)
    new_rows.to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(trained), "--data", str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    cli = pd.read_csv(tmp_path / "p.csv", dtype={"prediction": object})
    rows = _json_rows(new_rows)
    with serve_in_thread(run) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        assert url.startswith("http://127.0.0.1:")
        health = client.get("/health").json()
        assert health["model"] == "gated" and health["task"] == "binary" and health["classes"] == ["0", "1"]
        assert health["modalities"] == list(run.modalities) and health["bundle"] == str(trained)
        assert health["mmfuse_version"] == mmfuse.__version__
        assert health["columns"] == {"age": "numeric", "review": "text", "size": "categorical"}
        assert health["batching"]["max_batch_rows"] == 256

        r = client.post("/predict", json={"rows": rows})
        assert r.status_code == 200, r.text
        body = r.json()
        _same(body["predictions"], expected)
        _same(body["predictions"], cli)
        assert body["predictions"][5] == {"prediction": None, "proba_0": None, "proba_1": None}
        s = body["summary"]
        assert (s["rows"], s["predicted"], s["not_predicted"]) == (40, 39, 1)
        assert s["ignored_columns"] == ["note"] and s["absent_columns"] == []
        assert s["counts"] == {"size: category not seen in training (unknown code)": 2}
        assert body["lines"][0] == "rows: 40, predicted: 39, not predicted (every modality missing): 1"
        assert "ignored columns the model does not use: note" in body["lines"]

        # a bare list is the same request; an absent column masks its modality, like predict
        r = client.post("/predict", json=rows[:4])
        _same(r.json()["predictions"], expected.iloc[:4])
        no_text = [{k: v for k, v in row.items() if k != "review"} for row in rows[:6]]
        r = client.post("/predict", json=no_text)
        assert r.status_code == 200
        _same(r.json()["predictions"], run.predict(new_rows.iloc[:6].drop(columns=["review"])))
        assert r.json()["summary"]["absent_columns"] == ["review"]
        r = client.post("/predict", json={"rows": []})
        assert r.status_code == 200 and r.json()["predictions"] == []


def test_concurrent_requests_are_coalesced_and_each_answered_its_own_rows(run: mmfuse.Run,
                                                                          new_rows: pd.DataFrame) -> None:
    """8 threads x 5 requests of 1 to 5 rows (and one of 20 rows, more than a batch), all at once."""
    expected = run.predict(new_rows)
    rows = _json_rows(new_rows)
    rng = np.random.default_rng(0)
    plans = [[(int(s), int(s + k)) for s, k in zip(rng.integers(0, 35, 5), rng.integers(1, 6, 5), strict=True)]
             for _ in range(8)]
    plans[0][0] = (10, 30)
    settings = ServeSettings(port=0, max_batch_rows=16, max_wait_ms=50.0)
    failures: list[str] = []
    start = threading.Barrier(8, timeout=30)

    with serve_in_thread(run, settings) as url:
        def client_thread(plan: list[tuple[int, int]]) -> None:
            with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
                start.wait()
                for a, b in plan:
                    r = client.post("/predict", json={"rows": rows[a:b]})
                    try:
                        assert r.status_code == 200, r.text
                        _same(r.json()["predictions"], expected.iloc[a:b])
                        assert r.json()["summary"]["rows"] == b - a
                    except AssertionError as e:
                        failures.append(f"rows {a}:{b}: {e}")

        threads = [threading.Thread(target=client_thread, args=(p,)) for p in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a client thread did not finish within 120 s"
        with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
            served = client.get("/health").json()["served"]
    assert not failures, failures
    total = sum(b - a for plan in plans for a, b in plan)
    assert served["requests"] == 40 and served["rows"] == total
    assert served["model_calls"] < 40  # coalesced
    assert served["largest_call_rows"] == 20  # the large request alone; the others at most 16


def test_malformed_requests_are_4xx_naming_the_field_and_the_server_keeps_serving(run: mmfuse.Run,
                                                                                  new_rows: pd.DataFrame) -> None:
    rows = _json_rows(new_rows)
    settings = ServeSettings(port=0, max_request_rows=10, max_body_mb=0.01)
    with serve_in_thread(run, settings) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        def post(content: bytes | None = None, **kw) -> tuple[int, dict]:
            r = client.post("/predict", content=content, **kw) if content is not None else client.post("/predict", **kw)
            return r.status_code, r.json()

        code, body = post(b'{"rows": [{"age": 3,}]}')
        assert code == 400 and body["field"] == "body" and "malformed JSON" in body["error"]
        assert "line 1 column" in body["error"]
        code, body = post(b"\xff\xfe")
        assert code == 400 and body["field"] == "body"
        code, body = post(json={"row": []})
        assert code == 400 and body["field"] == "rows" and '{"rows": [...]}' in body["error"]
        code, body = post(json={"rows": {"age": 3}})
        assert code == 400 and body["field"] == "rows" and "got an object" in body["error"]
        code, body = post(json={"rows": rows[:1], "base_dir": "/"})
        assert code == 400 and body["field"] == "base_dir"
        code, body = post(json="rows")
        assert code == 400 and body["field"] == "body"
        code, body = post(json=[rows[0], [1, 2]])
        assert code == 400 and body["field"] == "rows[1]" and "got a list" in body["error"]
        code, body = post(json=[rows[0], {**rows[1], "age": {"years": 3}}])
        assert code == 400 and body["field"] == "rows[1].age" and "numeric column" in body["error"]
        # the preprocessing's DataError: 422 with its message, naming the column and the row
        code, body = post(json=[rows[0], rows[1], {**rows[2], "age": "forty"}])
        assert code == 422 and "'age'" in body["error"] and "row 2" in body["error"] and "forty" in body["error"]
        code, body = post(json=rows[:11])
        assert code == 413 and body["field"] == "rows" and "--max-request-rows 10" in body["error"]
        code, body = post(json=[{"review": "great " * 3000}])
        assert code == 413 and body["field"] == "body"
        assert client.get("/predict").status_code == 405
        # still serving, and right
        code, body = post(json=rows[:3])
        assert code == 200
        _same(body["predictions"], run.predict(new_rows.iloc[:3]))


def test_a_bad_request_among_coalesced_ones_fails_alone(run: mmfuse.Run, new_rows: pd.DataFrame) -> None:
    rows = _json_rows(new_rows)
    bad = [{**rows[0], "age": "old"}]
    answers: dict[int, httpx.Response] = {}
    settings = ServeSettings(port=0, max_wait_ms=200.0)
    with serve_in_thread(run, settings) as url:
        def send(i: int) -> None:
            with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
                answers[i] = client.post("/predict", json=bad if i == 0 else rows[i:i + 2])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert answers[0].status_code == 422 and "'age'" in answers[0].json()["error"]
    for i in (1, 2, 3):
        assert answers[i].status_code == 200
        _same(answers[i].json()["predictions"], run.predict(new_rows.iloc[i:i + 2]))


# ---------------------------------------------------------------- files in rows, settings, exposure
def test_files_come_as_base64_or_as_paths_inside_the_base_dir(tmp_path: Path) -> None:
    kinds = {"img": "image", "sound": "audio", "emb": "embedding", "n": "numeric"}
    base = (tmp_path / "files").resolve()
    (base / "sub").mkdir(parents=True)
    png = b"\x89PNG\r\n\x1a\n fake"
    scratch = _Scratch()
    try:
        frame = parse_rows(json.dumps({"rows": [
            {"img": {"base64": base64.b64encode(png).decode(), "suffix": ".png"}, "n": 1},
            {"img": "data:image/jpeg;base64," + base64.b64encode(b"jpeg").decode(), "emb": [1.0, 2.0]},
            {"img": "sub/a.png", "sound": "b.wav", "n": None},
            {"img": None, "sound": "", "other": {"anything": [1]}},
        ]}).encode(), kinds=kinds, base_dir=base, tmp=scratch)
        first, second = Path(frame.loc[0, "img"]), Path(frame.loc[1, "img"])
        assert first.read_bytes() == png and first.suffix == ".png" and first.parent == scratch.folder
        assert second.read_bytes() == b"jpeg" and second.suffix == ".jpg"
        assert frame.loc[2, "img"] == str(base / "sub" / "a.png") and frame.loc[2, "sound"] == str(base / "b.wav")
        assert frame.loc[1, "emb"] == [1.0, 2.0] and frame.loc[3, "other"] == {"anything": [1]}
    finally:
        scratch.close()
    assert scratch.folder is None and not first.exists()

    def refused(row: dict, base_dir: Path | None = base) -> RequestError:
        with pytest.raises(RequestError) as info:
            parse_rows(json.dumps([row]).encode(), kinds=kinds, base_dir=base_dir, tmp=_Scratch())
        assert info.value.status == 400
        return info.value

    for path in ("../secret.png", "/etc/passwd", "sub/../../x.png"):
        e = refused({"img": path})
        assert e.field == "rows[0].img" and "outside the server's --base-dir" in str(e)
    e = refused({"img": "a.png"}, None)
    assert "without --base-dir" in str(e) and "base64" in str(e)
    assert refused({"img": {"base64": "@@@"}}).field == "rows[0].img"
    assert refused({"img": {"base64": "aGk=", "suffix": "/../x"}}).field == "rows[0].img.suffix"
    assert refused({"img": {"path": "a.png"}}).field == "rows[0].img"
    assert refused({"img": "data:image/png,notbase64"}).field == "rows[0].img"
    assert refused({"n": [1, 2]}).field == "rows[0].n"


def test_settings_are_checked_and_the_host_warning(trained: Path, capsys) -> None:
    for bad in ({"max_batch_rows": 0}, {"max_wait_ms": -1.0}, {"port": 70000}, {"max_body_mb": 0},
                {"threads": 0}, {"base_dir": Path("/no/such/folder")}):
        with pytest.raises(ConfigError):
            ServeSettings(**bad)
    assert main(["serve", str(trained), "--max-batch-rows", "0"]) == 2
    assert "--max-batch-rows: expected a positive int, got 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--host 256.1.1.1"):
        _bind("256.1.1.1", 0)
    sock = _bind("127.0.0.1", 0)
    try:  # TCP said explicitly, so that asyncio sets TCP_NODELAY on its connections (no ~40 ms per response)
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    warning = exposure_warning("0.0.0.0")
    assert warning is not None and "0.0.0.0" in warning and "no authentication" in warning


def test_mmfuse_serve_command_in_a_subprocess(trained: Path, new_rows: pd.DataFrame, run: mmfuse.Run) -> None:
    """The real command: ``mmfuse serve RUN --port 0`` prints where it listens, answers, and stops."""
    proc = subprocess.Popen([sys.executable, "-m", "mmfuse.cli", "serve", str(trained), "--port", "0",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        url, seen, deadline = None, [], time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, f"mmfuse serve exited: {''.join(seen)}"
                continue
            seen.append(line)
            if line.startswith("listening on "):
                url = line.split()[2]
        assert url is not None and url.startswith("http://127.0.0.1:"), "".join(seen)
        assert not any("warning" in s for s in seen)
        assert any("batching: up to 256 rows per model call, wait at most 2.0 ms" in s for s in seen)
        with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
            assert client.get("/health").json()["threads"] == 1
            r = client.post("/predict", json=_json_rows(new_rows.iloc[:5]))
            assert r.status_code == 200
            _same(r.json()["predictions"], run.predict(new_rows.iloc[:5]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
