"""The self-contained HTML report: one file, images embedded as base64 PNG, no external resources.

Sections: the summary table (with the best unimodal baseline of each dataset and
every strategy's gain over it, negative gains in red), robustness tables, the
figures, failed runs with their errors, and the settings and environment that
reproduce the comparison.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmfuse.bench.plots import Figure
from mmfuse.bench.summary import SummaryRow, datasets_of, other_metrics
from mmfuse.bench.verdict import DatasetVerdict
from mmfuse.experiment.results import RunRecord
from mmfuse.io import atomic_write

__all__ = ["fmt_num", "write_report"]

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;
 color:#1d1d1f;padding:0 16px;line-height:1.45}
h1{font-size:26px;margin-bottom:4px} h2{font-size:20px;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:16px;margin-top:22px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px 0}
th,td{padding:3px 9px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f3f3f5;position:sticky;top:0} td.l,th.l{text-align:left}
tr.uni td{color:#555;background:#fafafa} tr.best td{font-weight:600}
tr.failed td{background:#fdecea}
.neg{color:#b3261e;font-weight:600} .pos{color:#1b7f3b;font-weight:600}
.muted{color:#777} .fail{color:#b3261e;font-weight:600}
figure{margin:18px 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#444;max-width:1000px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;max-height:360px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;margin:10px 0}
.scroll{overflow-x:auto;max-width:100%}
p.rec{font-size:15px;background:#eef6ee;border-left:4px solid #1b7f3b;padding:6px 12px}
"""


def fmt_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_si(x: float | None) -> str:
    """A count with a k/M/G suffix (``"—"`` for missing), for tables."""
    if x is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _gain(g: float | None) -> str:
    if g is None:
        return "<td>—</td>"
    cls = "neg" if g < -0.0005 else ("pos" if g > 0.0005 else "muted")
    return f'<td class="{cls}">{g:+.3f}</td>'


def _e(s: Any) -> str:
    return html.escape(str(s))


def _summary_table(rows: Sequence[Mapping[str, Any]], dataset: str) -> str:
    rs = [r for r in rows if r.dataset == dataset]
    sign = 1 if (rs and rs[0].higher_is_better) else -1
    rs.sort(key=lambda r: (not r.unimodal, not r.standard,
                           -sign * (r.score_mean if r.score_mean is not None else -sign * 1e9)))
    metric = rs[0].metric if rs else "score"
    best = next((r.best_unimodal for r in rs if r.best_unimodal), None)
    others = other_metrics(rs)  # e.g. macro-F1 and AUROC beside accuracy
    head = (f"<tr><th class='l'>model</th><th class='l'>training</th><th>seeds ok</th><th>{_e(metric)} "
            "(ranks)</th>" + "".join(f"<th>{_e(k)}</th>" for k in others)
            + "<th>gain vs best unimodal</th><th>params</th><th>train s</th>"
            "<th>samples/s</th><th>model MiB</th><th>worst missing</th><th>noise max</th></tr>")
    body = []
    for r in rs:
        classes = []
        if r.unimodal:
            classes.append("uni")
        if r.model == best and r.standard:
            classes.append("best")
        if r.n_failed:
            classes.append("failed")
        noise_max = None
        if r.noise_mean:
            top = max(r.noise_mean, key=float)
            noise_max = r.noise_mean[top]
        seeds = f"{r.n_ok}/{r.n_ok + r.n_failed}"
        if r.n_failed:
            seeds = f"<span class='fail'>{seeds} ✗</span>"
        name = _e(r.model) + (" <span class='muted'>(best unimodal)</span>"
                                 if r.model == best and r.standard else "")
        if r.majority_note():
            name += f" <span class='fail'>⚠ {_e(r.majority_note())}</span>"
        body.append(
            f"<tr class='{' '.join(classes)}'><td class='l'>{name}</td>"
            f"<td class='l'>{_e(r.training)}</td>"
            f"<td>{seeds}</td><td>{_pm(r.score_mean, r.score_std)}</td>"
            + "".join(f"<td>{_pm(r.metrics.get(k), r.metrics_std.get(k))}</td>" for k in others)
            + f"{_gain(r.gain)}"
            f"<td>{fmt_si(r.params)}</td><td>{fmt_num(r.train_time_s, 1)}</td>"
            f"<td>{fmt_si(r.throughput_sps)}</td><td>{fmt_num(r.memory_mb, 1)}</td>"
            f"<td>{fmt_num(r.missing_worst)}</td><td>{fmt_num(noise_max)}</td></tr>"
        )
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


def _robust_table(rows: Sequence[Mapping[str, Any]], dataset: str) -> str:
    rs = [r for r in rows if r.dataset == dataset and r.score_mean is not None]
    mods = sorted({m for r in rs for m in r.missing})
    scales = sorted({s for r in rs for s in r.noise_mean}, key=float)
    if not mods and not scales:
        return ""
    head = ("<tr><th class='l'>model</th><th class='l'>training</th><th>clean</th>"
            + "".join(f"<th>no {_e(m)}</th>" for m in mods)
            + "".join(f"<th>noise {_e(s)}</th>" for s in scales) + "</tr>")
    body = []
    for r in sorted(rs, key=lambda r: (not r.unimodal, r.model, not r.standard)):
        cells = "".join(f"<td>{fmt_num(r.missing.get(m))}</td>" for m in mods)
        cells += "".join(f"<td>{fmt_num(r.noise_mean.get(s))}</td>" for s in scales)
        body.append(f"<tr class='{'uni' if r.unimodal else ''}'><td class='l'>{_e(r.model)}</td>"
                    f"<td class='l'>{_e(r.training)}</td>"
                    f"<td>{fmt_num(r.score_mean)}</td>{cells}</tr>")
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


def _calibration_table(rows: Sequence[SummaryRow], dataset: str) -> str:
    """Per model trained the standard way: accuracy, ECE, NLL, Brier, AURC, the selective
    accuracy, the worst ECE with a modality missing, and the temperature's effect."""
    rs = [r for r in rows if r.dataset == dataset and r.standard and r.calibration]
    if not rs:
        return ""
    scaled = any(r.temperature is not None for r in rs)
    head = ("<tr><th class='l'>model</th><th>accuracy</th><th>ECE</th><th>NLL</th><th>Brier</th><th>AURC</th>"
            "<th>acc@90%</th><th>acc@80%</th><th>acc@50%</th><th>worst ECE missing</th>"
            + ("<th>T</th><th>ECE before T</th><th>NLL before T</th>" if scaled else "") + "</tr>")
    body = []
    for r in sorted(rs, key=lambda r: (r.unimodal, r.calibration.get("ece") or 0.0)):
        c = r.calibration
        worst = [v.get("ece") for v in r.calibration_missing.values() if v.get("ece") is not None]
        cells = "".join(f"<td>{fmt_num(c.get(k))}</td>" for k in ("ece", "nll", "brier", "aurc", "acc@90",
                                                                   "acc@80", "acc@50"))
        extra = ""
        if scaled:
            extra = (f"<td>{fmt_num(r.temperature, 2)}</td><td>{fmt_num(r.uncalibrated.get('ece'))}</td>"
                     f"<td>{fmt_num(r.uncalibrated.get('nll'))}</td>")
        body.append(f"<tr class='{'uni' if r.unimodal else ''}'><td class='l'>{_e(r.model)}</td>"
                    f"<td>{fmt_num(r.metrics.get('accuracy'))}</td>{cells}"
                    f"<td>{fmt_num(max(worst) if worst else None)}</td>{extra}</tr>")
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"


def _balance_table(rows: Sequence[SummaryRow], dataset: str) -> str:
    """Per fusion, standard training beside each balancing method: score, each modality's
    accuracy inside the model (probe), the score with each modality missing."""
    rs = [r for r in rows if r.dataset == dataset and not r.unimodal and r.variant in ("standard",)
          or (r.dataset == dataset and r.variant.startswith("balance:"))]
    if not any(r.variant.startswith("balance:") for r in rs):
        return ""
    mods = sorted({m for r in rs for m in (*r.probe, *r.missing)})
    alone = {r.model[4:]: r.score_mean for r in rows if r.dataset == dataset and r.unimodal}
    head = ("<tr><th class='l'>model</th><th class='l'>training</th><th>score</th>"
            + "".join(f"<th>{_e(m)} inside (alone {fmt_num(alone.get(m))})</th>" for m in mods)
            + "".join(f"<th>no {_e(m)}</th>" for m in mods) + "</tr>")
    body = []
    for r in sorted(rs, key=lambda r: (r.model, not r.standard, r.variant)):
        cells = "".join(f"<td>{fmt_num(r.probe.get(m))}</td>" for m in mods)
        cells += "".join(f"<td>{fmt_num(r.missing.get(m))}</td>" for m in mods)
        body.append(f"<tr><td class='l'>{_e(r.model)}</td><td class='l'>{_e(r.training)}</td>"
                    f"<td>{_pm(r.score_mean, r.score_std)}</td>{cells}</tr>")
    return f"<div class='scroll'><table>{head}{''.join(body)}</table></div>"



def _dataset_section(header: str, tables: list[tuple[str, str]]) -> list[str]:
    """``header`` (its heading and introduction) and one table per dataset, leaving out the
    datasets without one; nothing at all when no dataset has one."""
    kept = [(ds, table) for ds, table in tables if table]
    return [header, *(f"<h3>{_e(ds)}</h3>{table}" for ds, table in kept)] if kept else []


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f"<figure><h3>{_e(fig.title)}</h3><img alt='{_e(fig.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(fig.caption)}</figcaption></figure>")


def _headline(rows: Sequence[Mapping[str, Any]], dataset: str) -> str:
    rs = [r for r in rows if r.dataset == dataset and r.standard and not r.unimodal
          and r.gain is not None]
    if not rs:
        return ""
    best = max(rs, key=lambda r: r.score_mean if r.higher_is_better else -(r.score_mean or 0.0))
    worse = [r.model for r in rs if r.gain < -0.0005]
    ref = best.best_unimodal
    text = (f"Best fusion: <b>{_e(best.model)}</b> ({best.metric} {best.score_mean:.3f}, "
            f"{'+' if best.gain >= 0 else ''}{best.gain:.3f} better than the best unimodal baseline "
            f"<b>{_e(ref)}</b> at {best.best_unimodal_score:.3f}).")
    if worse:
        clear = [r.model for r in rs if r.gain < -max(r.score_std or 0.0, 0.0005)]
        text += (f" <span class='neg'>{len(worse)} of {len(rs)} strategies do worse than the best single "
                 f"modality</span>: {_e(', '.join(worse))}")
        text += (f" ({len(clear)} of them by more than their seed standard deviation"
                 f"{': ' + _e(', '.join(clear)) if clear else ''}).")
    small = [r for r in rs if r.score_std is not None and abs(r.gain) <= r.score_std]
    if small:
        text += (f" <span class='muted'>{len(small)} of {len(rs)} gains or losses are within one seed "
                 f"standard deviation: treat them as ties.</span>")
    return f"<p>{text}</p>"


def _verdict(v: DatasetVerdict) -> str:
    parts = []
    if v.recommendation is not None:
        cls = "" if v.recommendation.decisive else " muted"
        parts.append(f"<p class='rec'>{_e(v.recommendation.sentence)}"
                     f" <span class='muted{cls}'>({_e(v.recommendation.test)})</span></p>")
        if v.calibration:
            parts.append(f"<p>{_e(v.calibration)}</p>")
    elif v.problem:
        parts.append(f"<p class='rec muted'>No recommendation: {_e(v.problem)}.</p>")
    if v.diagnosis is not None and v.recommendation is None:  # a recommendation quotes it already
        parts.append(f"<p class='muted'>Interactions in the data (partial information decomposition, "
                     f"{_e(v.diagnosis.method)}): {_e(v.diagnosis.sentence())}.</p>")
    if v.majority:  # models no better than always predicting the majority class
        parts.append(f"<p class='fail'>{_e(v.majority)}</p>")
    for s in v.skipped:
        parts.append(f"<p class='muted'><b>{_e(s.model)}</b> was not run: {_e(s.reason)}</p>")
    return "".join(parts)


def _use_it(v: DatasetVerdict, records: Sequence[RunRecord], path: str | Path) -> str:
    """Where the recommended model's bundle is, and the command that predicts with it."""
    if v.recommendation is None:
        return ""
    pick = v.recommendation.pick
    runs = sorted((r.spec.seed, r.train_key) for r in records if r.ok and r.dataset == v.dataset
                  and r.label == pick and r.spec.variant.value in ("standard", "unimodal"))
    if not runs:
        return ""
    seed, key = runs[0]
    folder = Path(path).parent
    where = f"<p class='muted'>Use it: its run bundle (seed {seed}) is <code>models/{_e(key)}</code>"
    one_table = (len({r.dataset for r in records if r.ok}) == 1
                 and all(r.spec.data.name == "table" for r in records if r.ok))
    if not one_table:  # predict reads new rows of a user's table, from a bench of that one table
        return where + " (<code>mmfuse.load_run</code> loads it).</p>"
    return (where + f"; <code>mmfuse predict {_e(str(folder))} --data NEW.csv --out predictions.csv</code> "
            "predicts new rows with it (<code>--strategy NAME</code> for another strategy).</p>")


def write_report(path: str | Path, rows: Sequence[SummaryRow], records: Sequence[RunRecord],
                 figures: Sequence[Figure], meta: Mapping[str, Any],
                 found: Mapping[str, DatasetVerdict] | None = None) -> Path:
    """Write the report to ``path`` (atomically) and return it."""
    datasets = datasets_of(rows)
    failed = [r for r in records if not r.ok]
    n_ok = len(records) - len(failed)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>mmfuse bench: {_e(', '.join(datasets))}</title><style>{_CSS}</style></head><body>",
        "<h1>mmfuse bench</h1>",
        f"<p class='muted'>{n_ok} runs ok, {len(failed)} failed · datasets: {_e(', '.join(datasets))} · "
        f"finished {_e(meta['finished_at'])} · mmfuse {_e(meta['versions']['mmfuse'])}"
        f" · git {_e(str(meta['git_commit'] or 'n/a')[:12])}</p>",
    ]
    if failed:
        parts.append(f"<div class='note'><span class='fail'>{len(failed)} run(s) failed</span>; they are marked "
                     "✗ in the tables and listed under <a href='#failed'>Failed runs</a>.</div>")
    versions = meta["code_versions"]
    if len(versions) > 1:
        parts.append(f"<div class='note'>These results come from {len(versions)} versions of the code (the "
                     "results folder was resumed after the code changed): compare with care, or re-run into a "
                     "fresh folder. Each run's <code>code</code> field in <code>results.json</code> says which "
                     "version produced it.</div>")
    found = found or {}
    if any(v.recommendation or v.problem or v.diagnosis for v in found.values()):
        parts.append("<h2>Recommendations</h2>")
        for ds in datasets:
            if ds in found:
                parts.append(f"<h3>{_e(ds)}</h3>{_verdict(found[ds])}{_use_it(found[ds], records, path)}")
    if meta.get("tuning"):
        from mmfuse.bench.tuning import tuning_html

        parts.append(tuning_html(meta["tuning"]))
    schemas = meta.get("schemas") or {}
    if schemas:
        parts.append("<h2>Data</h2><p>How each table was read: every column's kind, modality and missing rate, "
                     "the task, and the split sizes (the same as <code>mmfuse data inspect</code>).</p>")
        for ds, text in schemas.items():
            parts.append(f"<h3>{_e(ds)}</h3><pre>{_e(text)}</pre>")
    parts.append("<h2>Summary</h2><p>Scores (the task's main metric, e.g. accuracy) are means ± standard "
                 "deviation over seeds on the test split. <b>Gain</b> is how much better the mean score is than "
                 "that of the best unimodal baseline of "
                 "the dataset (grey rows; the best one in bold): <span class='neg'>red</span> means the fusion "
                 "did worse than using one modality alone. Worst missing: the lowest accuracy when one modality "
                 "is removed at test time; noise max: accuracy at the largest noise scale (mean over the noised "
                 "modality).</p>")
    for ds in datasets:
        parts.append(f"<h3>{_e(ds)}</h3>{_headline(rows, ds)}{_summary_table(rows, ds)}")
    parts.append("<h2>Robustness</h2><p>Test accuracy with each modality removed (<i>no m</i>) and with Gaussian "
                 "noise of the given standard deviation added to one modality at a time (mean over modalities; "
                 "tabular data: numeric columns only; token ids: the fraction scale / largest scale of the "
                 "tokens is replaced by random ones). A modality is removed only from test samples that keep "
                 "another one.</p>")
    for ds in datasets:
        table = _robust_table(rows, ds)
        if table:
            parts.append(f"<h3>{_e(ds)}</h3>{table}")
    parts += _dataset_section(
        "<h2>Calibration</h2><p>How far the predicted probabilities can be trusted, on the test "
        "split (mean over seeds; classification only). <b>ECE</b>: expected calibration error, the "
        "sample-weighted mean gap between accuracy and confidence (top-label, 15 equal-width "
        "confidence bins); <b>NLL</b>: mean negative log-likelihood (nats); <b>Brier</b>: mean "
        "squared error of the probability vector (summed over classes); lower is better for all "
        "three. <b>acc@x%</b>: the accuracy when the model answers only its x % most confident "
        "test samples; <b>AURC</b>: the area under that risk-coverage curve (lower: its errors "
        "are its least confident answers). <b>Worst ECE missing</b>: the highest ECE with one "
        "modality removed (a model that stays as confident without it is dangerous). With "
        "<code>calibrate=temperature</code>, <b>T</b> is the temperature fitted on the "
        "validation split and the last columns are the numbers before it (accuracy is "
        "unchanged). The reliability diagrams are under Figures.</p>",
        [(ds, _calibration_table(rows, ds)) for ds in datasets])
    parts += _dataset_section(
        "<h2>Balanced training</h2><p>Each fusion trained the standard way and with each balancing "
        "method (mean over seeds). <i>m inside</i>: the test accuracy of a linear probe on modality "
        "m's encoder inside the fused model (fitted on the train split), beside m's own unimodal "
        "baseline (<i>alone</i>): a modality starved by the others probes well below its baseline. "
        "<i>no m</i>: the score with m missing at test time.</p>",
        [(ds, _balance_table(rows, ds)) for ds in datasets])
    if figures:
        parts.append("<h2>Figures</h2>")
        parts.extend(_img(f) for f in figures)
    if failed:
        parts.append("<h2 id='failed'>Failed runs</h2><table><tr><th class='l'>dataset</th><th class='l'>model</th>"
                     "<th class='l'>training</th><th>seed</th><th class='l'>error</th></tr>")
        for r in failed:
            parts.append(f"<tr class='failed'><td class='l'>{_e(r.dataset)}</td>"
                         f"<td class='l'>{_e(r.label)}</td><td class='l'>{_e(r.spec.variant.value)}</td>"
                         f"<td>{_e(r.spec.seed)}</td><td class='l'>{_e(r.error)}</td></tr>")
        parts.append("</table>")
        for r in failed:
            if r.traceback:
                parts.append(f"<details><summary>{_e(r.label)} · {_e(r.dataset)} · "
                             f"seed {_e(r.spec.seed)}</summary><pre>{_e(r.traceback)}</pre></details>")
    parts.append("<h2>Settings and environment</h2><p>Everything needed to reproduce this comparison: re-run "
                 "<code>mmfuse bench</code> with these settings (each run's own settings are in "
                 "<code>results.json</code>).</p>")
    parts.append(f"<pre>{_e(json.dumps(dict(meta), indent=2, sort_keys=True, default=str))}</pre>")
    parts.append("</body></html>\n")
    path = Path(path)
    atomic_write(path, "\n".join(parts))
    return path
