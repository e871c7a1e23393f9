"""Fit the search ``coverage`` and the offline answerer's abstention threshold on traces.

A *trace* is what ``memos eval halumem --trace FILE`` writes: one JSON line per question
with its hits (text, score), the evidence points' integrity scores against those hits (by
the run's judge), the label of the answer given and the label abstaining would get. Give
one trace per development user. :func:`calibrate`:

1. **coverage** — the target of a question is its evidence coverage: the share of its
   evidence points the judge scores 2 (fully covered) against the hits, and 0 when the
   reference answer itself abstains (the answer is not in the dialogues). A logistic
   model of the retrieval signals of :mod:`memos.retrieval.coverage` over the question's
   *fact* hits (the coverage is the fact search's, whatever else the context held) is
   fitted to it by maximum likelihood (fractional targets, a small L2 penalty);
2. **abstention** — the threshold τ: below it the answerer says "not in memory" (labelled
   as the trace's ``abstain_label``: correct where the reference abstains, else an
   omission). Low hallucination first: τ is the smallest threshold whose hallucination
   rate on each fitting user is at most :data:`MAX_HALLUCINATION` (so the answerer answers
   as much as that bound allows); when none is, the one maximising
   ``correct − HALLUCINATION_COST × hallucination``.

Both are fitted leave-one-user-out (fit on the others, scored on the held-out user: the
figures to trust) and on all users (the shipped constants). Every figure is measured with
the offline judge's labels and so is approximate.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memos.errors import InvalidInput
from memos.retrieval.coverage import FEATURES, Calibration, signals

__all__ = ["load_trace", "fit_logistic", "calibrate", "add_calibrate_command", "reanswer",
           "evidence_limits", "EVIDENCE_PLACES",
           "MAX_HALLUCINATION", "HALLUCINATION_COST", "THRESHOLDS"]

#: The hallucination rate τ must keep on the fitting users (HaluMem QA, offline judge).
MAX_HALLUCINATION = 0.20
#: Without such a τ: how many lost correct answers one hallucination is worth.
HALLUCINATION_COST = 2.0
THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(91))  # 0.00 … 0.90
_L2 = 0.01
_ABSTAINS = re.compile(r"\b(?:unknown|not (?:provided|mentioned|specified|stated|known|"
                       r"available|given)|no (?:information|record|mention))\b", re.I)


def load_trace(path: str | Path) -> list[dict[str, Any]]:
    """The question records of one ``--trace`` file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"--trace {path}: cannot read a JSONL trace ({exc})") from exc
    need = {"question", "hits", "evidence_scores", "label", "abstain_label", "reference"}
    if not rows or any(not need <= set(r) for r in rows):
        raise InvalidInput(f"--trace {path}: not a 'memos eval halumem --trace' file "
                           f"(each line needs {', '.join(sorted(need))})")
    return rows


def reanswer(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trace rows answered anew by today's offline answerer from their hits and
    labelled by the offline judge (``answered``, ``answered_label``, ``abstain_label``), so
    a change to the answerer is measured without rerunning the evaluation."""
    from memos.eval.halumem import NOT_IN_MEMORY, OfflineJudge, Retrieved, offline_answer

    judge = OfflineJudge()
    out = []
    for r in rows:
        hits = [Retrieved(id=str(i), text=h["text"], score=float(h.get("score", 0.0)),
                          metadata=dict(h.get("metadata") or {}))
                for i, h in enumerate(r["hits"])]
        subject = str(r.get("subject", ""))
        answer = offline_answer(r["question"], hits, subject=subject)
        label = judge.qa_label(r["question"], r["reference"], r.get("evidence", []), answer,
                               subject=subject)
        abstain = judge.qa_label(r["question"], r["reference"], r.get("evidence", []),
                                 NOT_IN_MEMORY, subject=subject)
        out.append({**r, "answered": answer, "answered_label": label,
                    "abstain_label": abstain})
    return out


def _target(row: dict[str, Any]) -> float:
    if _ABSTAINS.search(str(row["reference"])):
        return 0.0
    scores = [s or 0 for s in row["evidence_scores"]]
    return sum(1 for s in scores if s == 2) / len(scores) if scores else 0.0


def _fact_texts(row: dict[str, Any]) -> list[str]:
    """The texts of a row's fact hits (a hit without a granularity is a fact: older traces
    held facts only): the coverage is the fact search's, whatever else the context held."""
    return [h["text"] for h in row["hits"]
            if (h.get("metadata") or {}).get("granularity", "fact") == "fact"]


def _features(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    out = [[signals(r["question"], _fact_texts(r))[n] for n in FEATURES] for r in rows]
    return np.asarray(out, dtype=float).reshape(len(rows), len(FEATURES))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = _L2, steps: int = 50
                 ) -> tuple[float, ...]:
    """Intercept and weights maximising the Bernoulli likelihood of fractional ``y`` in
    [0, 1] given ``x`` (Newton steps, L2 penalty ``l2`` on the weights only)."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    pen = np.full(a.shape[1], l2)
    pen[0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + pen * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return tuple(round(float(v), 4) for v in w)


def _predict(weights: Sequence[float], x: np.ndarray) -> np.ndarray:
    z = weights[0] + x @ np.asarray(weights[1:])
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


#: Where an evidence point the hits miss is, in order: stored as a fact but ranked below
#: the hits ("ranked_out"), only in the dialogue ("not_extracted"), nowhere the
#: judge finds it ("not_found").
EVIDENCE_PLACES = ("in_hits", "ranked_out", "not_extracted", "not_found")


def evidence_limits(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """What limits evidence coverage, per question type: each evidence point of a question
    is placed by the trace's diagnosis scores (``memos eval halumem --trace``) in the first
    of :data:`EVIDENCE_PLACES` where the judge scores it 2 — the QA hits, every fact read
    back so far, every dialogue turn so far — and the shares are means over questions (as
    evidence coverage is). ``mixed_hits`` is the evidence coverage one search over facts
    and turns together (a granularity list the router cannot take: hybrid search) would
    have had. None for a trace without the diagnosis fields."""
    if not rows or any("cube_evidence_scores" not in r for r in rows):
        return None

    def places(r: dict[str, Any]) -> list[str]:
        out = []
        for hit, cube, turn in zip(r["evidence_scores"], r["cube_evidence_scores"],
                                   r["turn_evidence_scores"], strict=True):
            out.append("in_hits" if hit == 2 else "ranked_out" if cube == 2 else
                       "not_extracted" if turn == 2 else "not_found")
        return out

    def shares(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        group = [r for r in group if r["evidence_scores"]]
        out: dict[str, Any] = {"n": len(group)}
        for place in EVIDENCE_PLACES:
            out[place] = float(np.mean([places(r).count(place) / len(r["evidence_scores"])
                                        for r in group])) if group else 0.0
        out["mixed_hits"] = float(np.mean([
            sum(1 for s in r["mixed_evidence_scores"] if s == 2) / len(r["evidence_scores"])
            for r in group])) if group else 0.0
        return out

    by_type = {t: shares([r for r in rows if r.get("question_type") == t])
               for t in sorted({str(r.get("question_type")) for r in rows})}
    return {"all": shares(rows), "by_question_type": {t: v for t, v in by_type.items()
                                                      if v["n"]}}


def _calibration_figures(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    bins = []
    for lo in (0.0, 0.2, 0.4, 0.6, 0.8):
        sel = (pred >= lo) & (pred < lo + 0.2 if lo < 0.8 else pred <= 1.0)
        if sel.any():
            bins.append({"coverage": [lo, round(lo + 0.2, 1)], "n": int(sel.sum()),
                         "mean_coverage": float(pred[sel].mean()),
                         "mean_evidence_coverage": float(y[sel].mean())})
    base = float(np.mean((y - y.mean()) ** 2)) if len(y) else 0.0
    return {"n": len(y), "brier": float(np.mean((pred - y) ** 2)) if len(y) else None,
            "brier_constant_baseline": base,
            "mean_coverage": float(pred.mean()) if len(y) else None,
            "mean_evidence_coverage": float(y.mean()) if len(y) else None,
            "spearman": _spearman(pred, y), "bins": bins}


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _qa_rates(rows: Sequence[dict[str, Any]], cov: np.ndarray, tau: float) -> dict[str, float]:
    # the label of the answer as given before any abstention of the traced run
    labels = [r["abstain_label"] if c < tau else r.get("answered_label", r["label"])
              for r, c in zip(rows, cov, strict=True)]
    n = len(labels) or 1
    return {"correct": labels.count("correct") / n,
            "hallucination": labels.count("hallucination") / n,
            "omission": labels.count("omission") / n,
            "abstained": float(np.mean(cov < tau)) if len(cov) else 0.0}


def _qa_by_type(rows: Sequence[dict[str, Any]], cov: np.ndarray, tau: float
                ) -> dict[str, dict[str, float]]:
    out = {}
    for t in sorted({str(r.get("question_type")) for r in rows}):
        sel = [i for i, r in enumerate(rows) if str(r.get("question_type")) == t]
        out[t] = {"n": len(sel), **_qa_rates([rows[i] for i in sel], cov[sel], tau)}
    return out


def _choose_tau(users: Sequence[Sequence[dict[str, Any]]], cal: Calibration) -> float:
    """The smallest τ keeping *every* fitting user's hallucination within
    :data:`MAX_HALLUCINATION` (the target holds per user, not pooled); without one, the τ
    maximising pooled correct − :data:`HALLUCINATION_COST` × hallucination."""
    covs = [_coverage(u, cal) for u in users]
    within = [t for t in THRESHOLDS if all(_qa_rates(u, c, t)["hallucination"]
                                           <= MAX_HALLUCINATION for u, c in zip(users, covs,
                                                                               strict=True))]
    if within:
        return float(within[0])
    rows = [r for u in users for r in u]
    cov = np.concatenate(covs) if covs else np.zeros(0)
    best = max(THRESHOLDS, key=lambda t: (
        (r := _qa_rates(rows, cov, t))["correct"] - HALLUCINATION_COST * r["hallucination"],
        -t))
    return float(best)


def _fit(users: Sequence[list[dict[str, Any]]]) -> dict[str, Any]:
    rows = [r for u in users for r in u]
    y = np.asarray([_target(r) for r in rows])
    cal = Calibration(weights=fit_logistic(_features(rows), y), source="fit")
    return {"calibration": cal, "abstain_below": _choose_tau(users, cal)}


def _coverage(rows: Sequence[dict[str, Any]], cal: Calibration) -> np.ndarray:
    return _predict(cal.weights, _features(rows))


def calibrate(paths: Sequence[str | Path], *, json_path: str | Path | None = None,
              print_table: bool = True, reanswer_traces: bool = False,
              check: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Fit and check the coverage model and τ on one trace per user (see module doc).

    ``reanswer_traces``: answer every question anew with today's offline answerer and the
    offline judge (:func:`reanswer`) instead of using the traced answers. ``check``: traces
    of other data (the synthetic set, say) scored with the model and τ fitted on all of
    ``paths``, never fitted on."""
    if len(paths) < 2:
        raise InvalidInput("--trace: give one trace per development user, at least two "
                           "(the fit is checked leave-one-user-out)")
    users = [load_trace(p) for p in paths]
    checks = [load_trace(p) for p in check]
    if reanswer_traces:
        users, checks = [reanswer(u) for u in users], [reanswer(c) for c in checks]
    held: dict[str, Any] = {}
    for k, user in enumerate(users):
        fitted = _fit([u for j, u in enumerate(users) if j != k])
        cal, tau = fitted["calibration"], fitted["abstain_below"]
        cov = _coverage(user, cal)
        y = np.asarray([_target(r) for r in user])
        held[str(paths[k])] = {
            "fitted_on_others": {"weights": cal.weights, "abstain_below": tau},
            "coverage": _calibration_figures(cov, y),
            "qa_without_abstention": _qa_rates(user, cov, 0.0),
            "qa_with_abstention": _qa_rates(user, cov, tau),
            "qa_by_threshold": {str(t): _qa_rates(user, cov, t) for t in THRESHOLDS[::5]},
            "qa_by_question_type": _qa_by_type(user, cov, tau),
            "evidence_limits": evidence_limits(user),
        }
    final = _fit(users)
    cal = final["calibration"]
    pooled = [r for u in users for r in u]
    for path, user in zip(paths, users, strict=True):
        # in-sample: the weights and τ fitted on every user, as shipped
        cov = _coverage(user, cal)
        held[str(path)]["qa_with_all_users_fit"] = {
            **_qa_rates(user, cov, final["abstain_below"]),
            "by_question_type": _qa_by_type(user, cov, final["abstain_below"])}
    checked = {}
    for path, rows in zip(check, checks, strict=True):
        cov = _coverage(rows, cal)
        y = np.asarray([_target(r) for r in rows])
        checked[str(path)] = {
            "coverage": _calibration_figures(cov, y),
            "qa_without_abstention": _qa_rates(rows, cov, 0.0),
            "qa_with_abstention": _qa_rates(rows, cov, final["abstain_below"]),
            "qa_by_question_type": _qa_by_type(rows, cov, final["abstain_below"]),
            "evidence_limits": evidence_limits(rows)}
    report = {
        "note": "approximate: targets and labels are the offline judge's",
        "reanswered": reanswer_traces,
        "features": list(FEATURES),
        "max_hallucination": MAX_HALLUCINATION, "hallucination_cost": HALLUCINATION_COST,
        "held_out": held,
        "all_users": {"weights": cal.weights, "abstain_below": final["abstain_below"],
                      "qa_by_threshold": {str(t): _qa_rates(pooled, _coverage(pooled, cal), t)
                                          for t in THRESHOLDS[::5]}},
        "checked": checked,
    }
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    if print_table:
        _print(report)
    return report


def _pct(x: float | None) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.1f}"


def _print(report: dict[str, Any]) -> None:
    print(f"HaluMem coverage / abstention calibration ({report['note']})")
    print(f"{'held-out user':<28}{'tau':>6}{'brier':>8}{'base':>8}{'rho':>7}{'cov':>7}"
          f"{'evid':>7} | {'corr':>6}{'hall':>6}{'omis':>6} -> {'corr':>6}{'hall':>6}"
          f"{'omis':>6}{'abst':>6}")
    for path, h in report["held_out"].items():
        c, a, b = h["coverage"], h["qa_without_abstention"], h["qa_with_abstention"]
        rho = "   n/a" if c["spearman"] is None else f"{c['spearman']:7.2f}"
        print(f"{Path(path).name[:27]:<28}{h['fitted_on_others']['abstain_below']:>6.2f}"
              f"{c['brier']:>8.3f}{c['brier_constant_baseline']:>8.3f}{rho}"
              f"{_pct(c['mean_coverage'])}{_pct(c['mean_evidence_coverage'])} | "
              f"{_pct(a['correct'])}{_pct(a['hallucination'])}{_pct(a['omission'])} -> "
              f"{_pct(b['correct'])}{_pct(b['hallucination'])}{_pct(b['omission'])}"
              f"{_pct(b['abstained'])}")
        for bin_ in c["bins"]:
            print(f"    coverage {bin_['coverage'][0]:.1f}-{bin_['coverage'][1]:.1f}: "
                  f"n={bin_['n']:<4} mean coverage {bin_['mean_coverage']:.2f}  mean "
                  f"evidence coverage {bin_['mean_evidence_coverage']:.2f}")
        _print_limits(h.get("evidence_limits"))
    for path, h in report.get("checked", {}).items():
        c, a, b = h["coverage"], h["qa_without_abstention"], h["qa_with_abstention"]
        rho = "   n/a" if c["spearman"] is None else f"{c['spearman']:7.2f}"
        print(f"check {Path(path).name[:21]:<22}{'':>6}{c['brier']:>8.3f}"
              f"{c['brier_constant_baseline']:>8.3f}{rho}{_pct(c['mean_coverage'])}"
              f"{_pct(c['mean_evidence_coverage'])} | {_pct(a['correct'])}"
              f"{_pct(a['hallucination'])}{_pct(a['omission'])} -> {_pct(b['correct'])}"
              f"{_pct(b['hallucination'])}{_pct(b['omission'])}{_pct(b['abstained'])}")
        _print_limits(h.get("evidence_limits"))
    f = report["all_users"]
    print(f"all users: weights {f['weights']} (intercept, {', '.join(report['features'])})  "
          f"abstain below {f['abstain_below']:.2f}")


def _print_limits(limits: dict[str, Any] | None) -> None:
    if not limits:
        return
    print(f"    {'evidence points, by question type':<34}{'n':>4}{'in hits':>9}{'ranked':>8}"
          f"{'not ext':>8}{'nowhere':>8}{'mixed':>8}")
    for t, v in [("all", limits["all"]), *limits["by_question_type"].items()]:
        print(f"    {t[:33]:<34}{v['n']:>4}{_pct(v['in_hits']):>9}{_pct(v['ranked_out']):>8}"
              f"{_pct(v['not_extracted']):>8}{_pct(v['not_found']):>8}"
              f"{_pct(v['mixed_hits']):>8}")


def _cmd(args: Any) -> int:
    calibrate(args.trace, json_path=args.json, reanswer_traces=args.reanswer,
              check=args.check or ())
    return 0


def add_calibrate_command(subparsers: Any) -> None:
    """Add ``halumem-calibrate`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "halumem-calibrate",
        help="fit search coverage and the abstention threshold on HaluMem traces "
             "(leave-one-user-out; approximate)")
    p.add_argument("--trace", action="append", required=True, metavar="FILE",
                   help="a 'memos eval halumem --trace' file of one user (repeat per user)")
    p.add_argument("--check", action="append", default=None, metavar="FILE",
                   help="a trace of other data (the synthetic set, say) to score with the "
                   "model fitted on every --trace, never fitted on (repeatable)")
    p.add_argument("--reanswer", action="store_true",
                   help="answer every traced question anew with today's offline answerer and "
                   "offline judge instead of the traced answers")
    p.add_argument("--json", default=None, help="write the JSON report here")
    p.set_defaults(func=_cmd)
