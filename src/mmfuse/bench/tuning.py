"""What tuning changed, for the report and the console: a table, a sentence, two figures.

Given the studies (:class:`~mmfuse.bench.tune.StudyResult`) and the summary rows of
the defaults and of the tuned models (each over the bench's seeds, on the test split),
:func:`tuning_summary` gathers per dataset and model the default and tuned test score
(mean and spread), the validation scores of trial 0 and of the best trial, and the
values that changed; :func:`change_sentence` says whether the ranking or the
recommendation changed; :func:`plot_best_so_far` draws the best validation score
against the trial number (one figure per dataset) and :func:`plot_importances` the
hyperparameter importances.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["change_sentence", "plot_best_so_far", "plot_importances", "ranking", "tuning_html", "tuning_summary"]


def ranking(rows: Sequence[Any], dataset: str) -> list[str]:
    """Models of ``dataset`` trained the standard way (baselines included), best mean score first."""
    ok = [r for r in rows if r.dataset == dataset and r.standard and r.score_mean is not None]
    return [r.model for r in sorted(ok, key=lambda r: -r.score_mean if r.higher_is_better else r.score_mean)]


def _pick(verdict: Any) -> str | None:
    rec = getattr(verdict, "recommendation", None)
    return getattr(rec, "pick", None) if rec is not None else None


def change_sentence(dataset: str, default_rows: Sequence[Any], tuned_rows: Sequence[Any],
                    default_found: Mapping[str, Any], tuned_found: Mapping[str, Any]) -> str:
    """One sentence: did tuning change the ranking, and the recommendation, on ``dataset``?"""
    before, after = ranking(default_rows, dataset), ranking(tuned_rows, dataset)
    a, b = _pick(default_found.get(dataset)), _pick(tuned_found.get(dataset))
    if before == after:
        rank = f"Tuning did not change the ranking ({' > '.join(after)})"
    else:
        rank = f"Tuning changed the ranking, from {' > '.join(before)} to {' > '.join(after)}"
    if a is None and b is None:
        rec = "neither comparison made a recommendation"
    elif a == b:
        rec = f"the recommendation stayed {b}"
    elif b is None:
        rec = f"the defaults recommended {a}, the tuned comparison makes no recommendation"
    elif a is None:
        rec = f"the tuned comparison recommends {b}, where the defaults made no recommendation"
    else:
        rec = f"the recommendation changed from {a} to {b}"
        tied = getattr(tuned_found[dataset].recommendation, "tied", ())
        if a in tied:  # a change among ties is a tie-break, not a new winner
            rec += f", though {a} is still among the strategies not significantly worse than the best"
    return f"{rank}; {rec}."


def tuning_summary(results: Sequence[Any], default_rows: Sequence[Any], tuned_rows: Sequence[Any],
                   default_found: Mapping[str, Any], tuned_found: Mapping[str, Any], budget: str) -> dict[str, Any]:
    """The tuning's part of ``results.json``: per dataset, one entry per model and the sentence."""
    def row(rows: Sequence[Any], ds: str, model: str) -> Any:
        return next((r for r in rows if r.dataset == ds and r.model == model and r.standard), None)

    out: dict[str, Any] = {"budget": budget, "datasets": {}}
    for ds in dict.fromkeys(r.dataset for r in results):
        models = []
        for r in (r for r in results if r.dataset == ds):
            d, t = row(default_rows, ds, r.label), row(tuned_rows, ds, r.label)
            counts: dict[str, int] = {}
            for trial in r.trials:
                counts[trial["state"]] = counts.get(trial["state"], 0) + 1
            models.append({
                "model": r.label, "metric": r.metric, "higher_is_better": r.higher_is_better,
                "default_mean": getattr(d, "score_mean", None), "default_std": getattr(d, "score_std", None),
                "tuned_mean": getattr(t, "score_mean", None), "tuned_std": getattr(t, "score_std", None),
                "val_default": r.default_value, "val_best": r.best_value, "changes": r.changes,
                "trials": counts, "ran_now": r.ran_now, "importances": r.importances, "note": r.note,
            })
        out["datasets"][ds] = {"models": models,
                               "sentence": change_sentence(ds, default_rows, tuned_rows, default_found, tuned_found)}
    return out


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _pm(mean: Any, std: Any) -> str:
    return _f(mean) + (f" ± {_f(std)}" if std is not None else "")


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def tuning_html(summary: Mapping[str, Any]) -> str:
    """The report's section "What tuning changed" (HTML)."""
    e = html.escape
    parts = [f"<h2>What tuning changed</h2><p>Every strategy and baseline was tuned on the same budget "
             f"({e(summary['budget'])}): Optuna's TPE sampler, trial 0 the defaults, unpromising trials pruned "
             "on the validation score after each epoch; the objective was the validation main metric only (the "
             "test split was not read). Each best configuration was then retrained over the bench's seeds; the "
             "tables and the recommendation above are those of the tuned models. <i>default</i> and <i>tuned</i>: "
             "test score, mean ± standard deviation over seeds; <i>val</i>: validation score of trial 0 and of the "
             "best trial; <i>trials</i>: complete / pruned / failed. Every trial is in "
             "<code>tuning/trials.csv</code>.</p>"]
    for ds, block in summary["datasets"].items():
        parts.append(f"<h3>{e(ds)}</h3><p><b>{e(block['sentence'])}</b></p>")
        parts.append("<table><tr><th class='l'>model</th><th>default</th><th>tuned</th><th>val default</th>"
                     "<th>val best</th><th>trials</th><th class='l'>chosen values (changed from the defaults)</th>"
                     "<th class='l'>most important</th></tr>")
        for m in block["models"]:
            c = m["trials"]
            changes = ", ".join(f"{k}={_value(v)}" for k, v in m["changes"].items()) or "the defaults"
            imp = m["importances"] or {}
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(imp.items())[:3]) or "–"
            note = f" <span class='muted'>({e(m['note'])})</span>" if m["note"] else ""
            parts.append(f"<tr><td class='l'>{e(m['model'])}</td><td>{_pm(m['default_mean'], m['default_std'])}</td>"
                         f"<td>{_pm(m['tuned_mean'], m['tuned_std'])}</td><td>{_f(m['val_default'])}</td>"
                         f"<td>{_f(m['val_best'])}</td><td>{c.get('complete', 0)} / {c.get('pruned', 0)} / "
                         f"{c.get('fail', 0)}</td><td class='l'>{e(changes)}{note}</td><td class='l'>{e(top)}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts)


def plot_best_so_far(results: Sequence[Any]) -> list[Any]:
    """One figure per dataset: the best validation score so far against the trial number, per model."""
    from matplotlib.figure import Figure as MplFigure

    from mmfuse.bench.plots import _colors, _figure
    from mmfuse.bench.tune import best_so_far

    figs = []
    for ds in dict.fromkeys(r.dataset for r in results):
        mine = [r for r in results if r.dataset == ds]
        fig = MplFigure(figsize=(6.4, 4.0))
        ax = fig.add_subplot(1, 1, 1)
        colors = _colors([r.label for r in mine])
        drawn = False
        dashes = iter([(0, (4, 2)), (0, (1, 1.5)), (0, (4, 1.5, 1, 1.5)), (0, (8, 2)), (0, (2, 3)), (0, (6, 2, 2, 2))] * 4)
        for r in mine:
            pts = best_so_far(r)
            last = max((t["number"] for t in r.trials), default=0)
            if pts:
                pts = [*pts, (last, pts[-1][1])] if last > pts[-1][0] else pts  # flat across later pruned trials
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=r.label,
                        color=colors[r.label], linestyle=next(dashes) if r.label.startswith("uni:") else "-")
                drawn = True
        if not drawn:
            continue
        metric = mine[0].metric
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel(f"best validation {metric} so far")
        ax.set_title(ds)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        slug = ds.replace("/", "-")
        figs.append(_figure(fig, f"tuning_{slug}", f"Tuning on {ds}",
                            f"Best validation {metric} after each trial (trial 0: the defaults), per model; "
                            "pruned and failed trials do not move the line."))
    return figs


def plot_importances(results: Sequence[Any]) -> Any | None:
    """Hyperparameter importances (Optuna's PED-ANOVA) per model, one row of bars per dataset."""
    from matplotlib.figure import Figure as MplFigure

    from mmfuse.bench.plots import _figure

    have = [r for r in results if r.importances]
    if not have:
        return None
    fig = MplFigure(figsize=(7.0, 0.45 * sum(len(r.importances) for r in have) + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    labels, values = [], []
    for r in have:
        for k, v in r.importances.items():
            labels.append(f"{r.dataset} · {r.label} · {k}")
            values.append(v)
    ax.barh(range(len(values)), values, color="#4c72b0")
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("importance (share of the validation score's variation)")
    return _figure(fig, "tuning_importances", "Hyperparameter importances",
                   "How much each hyperparameter mattered to the validation score among each model's completed "
                   "trials (Optuna's PED-ANOVA importance; with few trials, a rough indication).")
