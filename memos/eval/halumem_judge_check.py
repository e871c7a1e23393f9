"""How far the offline HaluMem judge agrees with an LLM judge, on records it has judged.

A *judged file* is HaluMem's evaluation output for one user of some memory system, scored
by an LLM with HaluMem's prompts (the format ``eval/evaluation.py`` of HaluMem writes):

- ``memory_integrity_records[]``: a gold (or interference) memory point with
  ``memory_integrity_score`` 0/1/2, or no usable score (``None``/``"judge_failed"``);
- ``memory_accuracy_records[]``: the system's memories, keyed by ``uuid`` and
  ``ssession_id``. HaluMem's integrity judge is shown, for a point, exactly the memories
  the accuracy judge scored for the same ``(uuid, ssession_id)`` (both are
  ``session["extracted_memories"]``), so those are what the offline judge is given; a
  session without memories was scored 0 by rule, not by the LLM, and is skipped;
- ``memory_update_records[]``: ``memories_from_system`` and ``memory_update_type``;
- ``question_answering_records[]``: ``question``, reference ``answer``, ``evidence``,
  ``system_response`` and ``result_type``.

:func:`check_judge` runs an :class:`~memos.eval.halumem.OfflineJudge` on every record with
an LLM verdict and reports, per file and pooled, accuracy, Cohen's kappa (the honest figure
when one label dominates) and confusion matrices. Thresholds can be refitted per user
(:func:`leave_one_out`): fitted on every other file, scored on the held-out one. Every
figure is the agreement of an approximation and is labelled so.

>>> cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
0.5
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.errors import InvalidInput
from memos.eval.halumem import OfflineJudge, coverage

__all__ = [
    "JudgedUser",
    "IntegrityItem",
    "UpdateItem",
    "QAItem",
    "load_judged",
    "cohen_kappa",
    "agreement",
    "offline_verdicts",
    "label_signal",
    "headline_rates",
    "check_judge",
    "leave_one_out",
    "print_check",
    "add_judge_check_command",
    "TASK_LABELS",
    "RECALL_VIEW",
    "FMR_VIEW",
    "FIT_GRID",
]

APPROXIMATE = "approximate: agreement of the offline judge (an approximation) with an LLM judge"
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "integrity": ("0", "1", "2"),
    "update": ("correct", "hallucination", "omission", "other"),
    "qa": ("correct", "hallucination", "omission"),
}
#: Integrity seen as HaluMem's recall sees it: scored 2 or not.
RECALL_VIEW = "integrity_2_vs_rest"
#: Interference records seen as HaluMem's FMR sees them: scored exactly 0 or not.
FMR_VIEW = "interference_0_vs_rest"
#: Offline-judge thresholds refitted per task by :func:`leave_one_out`, with the values
#: tried. Update labels follow from the integrity thresholds and are not fitted on.
FIT_GRID: dict[str, dict[str, tuple[float, ...]]] = {
    "integrity": {"full": (0.6, 0.7), "partial": (0.2, 0.3), "min_shared": (1, 2)},
    "qa": {"qa_full": (0.7, 0.8, 0.9), "qa_partial": (0.2, 0.34, 0.5)},
}


@dataclass(frozen=True)
class IntegrityItem:
    """A point, the memories the LLM judge was shown for it, and its 0/1/2 verdict."""

    point: str
    memories: tuple[str, ...]
    verdict: str
    source: str  # HaluMem's memory_source: "system", "secondary" or "interference"


@dataclass(frozen=True)
class UpdateItem:
    """An updated point, its original memories, what the system retrieved, the verdict."""

    point: str
    originals: tuple[str, ...]
    memories: tuple[str, ...]
    verdict: str


@dataclass(frozen=True)
class QAItem:
    """A question, its reference answer and evidence, the system's answer, the verdict."""

    question: str
    reference: str
    evidence: tuple[str, ...]
    response: str
    verdict: str


@dataclass(frozen=True)
class JudgedUser:
    """The LLM-judged records of one judged file, with what was skipped and why."""

    path: str
    subject: str
    integrity: tuple[IntegrityItem, ...]
    update: tuple[UpdateItem, ...]
    qa: tuple[QAItem, ...]
    skipped: dict[str, dict[str, int]]


_NAME_AT_START = re.compile(r"^([A-Z][a-z]+(?: [A-Z][a-z]+)+?)(?:'s)?\b")


def _subject(points: Sequence[str]) -> str:
    """The user's name: HaluMem memory points start with it ("Ana Li's job is …")."""
    names = Counter(m.group(1) for p in points if (m := _NAME_AT_START.match(p)))
    return names.most_common(1)[0][0] if names else "the user"


def _verdict(value: Any, labels: Sequence[str]) -> str | None:
    label = str(value).strip().lower() if value is not None else ""
    return label if label in labels else None


def load_judged(path: str | Path) -> JudgedUser:
    """Read one judged file; records without a usable LLM verdict are counted, not kept."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"--judged {path}: cannot read a JSON judged file ({exc})") from exc
    keys = ("memory_integrity_records", "memory_update_records", "question_answering_records")
    if not isinstance(data, dict) or not any(k in data for k in keys):
        raise InvalidInput(f"--judged {path}: not a HaluMem judged file (it has none of "
                           f"{', '.join(keys)})")
    memories: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rec in data.get("memory_accuracy_records", []):
        memories[(str(rec.get("uuid")), str(rec.get("ssession_id")))].append(
            str(rec.get("memory_content", "")))
    skipped: dict[str, dict[str, int]] = {t: Counter() for t in TASK_LABELS}

    integrity = []
    for rec in data.get("memory_integrity_records", []):
        verdict = _verdict(rec.get("memory_integrity_score"), TASK_LABELS["integrity"])
        seen = memories.get((str(rec.get("uuid")), str(rec.get("ssession_id"))), [])
        if verdict is None:
            skipped["integrity"]["no verdict"] += 1
        elif not seen:
            skipped["integrity"]["no memories (scored 0 by rule, not by the LLM)"] += 1
        else:
            integrity.append(IntegrityItem(str(rec["memory_content"]), tuple(seen), verdict,
                                           str(rec.get("memory_source", ""))))
    update = []
    for rec in data.get("memory_update_records", []):
        verdict = _verdict(rec.get("memory_update_type"), TASK_LABELS["update"])
        if verdict is None:
            skipped["update"]["no verdict"] += 1
            continue
        update.append(UpdateItem(str(rec["memory_content"]),
                                 tuple(map(str, rec.get("original_memories") or [])),
                                 tuple(map(str, rec.get("memories_from_system") or [])),
                                 verdict))
    qa = []
    for rec in data.get("question_answering_records", []):
        verdict = _verdict(rec.get("result_type"), TASK_LABELS["qa"])
        if verdict is None:
            skipped["qa"]["no verdict"] += 1
            continue
        qa.append(QAItem(str(rec["question"]), str(rec.get("answer", "")),
                         tuple(str(e.get("memory_content", "")) for e in
                               rec.get("evidence") or []),
                         str(rec.get("system_response", "")), verdict))
    points = [i.point for i in integrity] + [u.point for u in update]
    return JudgedUser(str(path), _subject(points), tuple(integrity), tuple(update),
                      tuple(qa), {t: dict(c) for t, c in skipped.items()})


# --------------------------------------------------------------------------- agreement
def cohen_kappa(first: Sequence[str], second: Sequence[str], labels: Sequence[str]
                ) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o − p_e) / (1 − p_e).

    p_o is the share of items they agree on, p_e the agreement expected by chance from
    each rater's label frequencies. 1 = perfect, 0 = chance level, < 0 = worse than chance.
    None when it is undefined (both raters gave every item the same single label, or no
    items).
    """
    if len(first) != len(second):
        raise ValueError("cohen_kappa needs two ratings per item")
    n = len(first)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(first, second, strict=True)) / n
    ca, cb = Counter(first), Counter(second)
    p_e = sum(ca[k] * cb[k] for k in labels) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def agreement(llm: Sequence[str], offline: Sequence[str], labels: Sequence[str]
              ) -> dict[str, Any]:
    """Accuracy, kappa, label counts and the confusion matrix (``[llm][offline]``)."""
    n = len(llm)
    confusion = {a: {b: 0 for b in labels} for a in labels}
    for a, b in zip(llm, offline, strict=True):
        confusion[a][b] += 1
    return {"n": n,
            "accuracy": sum(a == b for a, b in zip(llm, offline, strict=True)) / n if n
            else None,
            "kappa": cohen_kappa(llm, offline, labels),
            "llm_counts": {k: sum(1 for a in llm if a == k) for k in labels},
            "offline_counts": {k: sum(1 for b in offline if b == k) for k in labels},
            "confusion_llm_by_offline": confusion}


def offline_verdicts(judge: OfflineJudge, user: JudgedUser, task: str) -> list[str]:
    """The offline judge's label for each of ``user``'s records of ``task``."""
    s = user.subject
    if task == "integrity":
        return [str(judge.integrity(i.point, i.memories, subject=s).score)
                for i in user.integrity]
    if task == "update":
        return [judge.update_label(u.point, u.originals, u.memories, subject=s)
                for u in user.update]
    if task == "qa":
        return [judge.qa_label(q.question, q.reference, q.evidence, q.response, subject=s)
                for q in user.qa]
    raise ValueError(f"unknown task {task!r}")


def label_signal(user: JudgedUser) -> dict[str, dict[str, float | int]]:
    """Per LLM integrity label: how many points, and the quartiles of each point's best
    key-token coverage by the memories the LLM was shown. Where the labels follow the
    memories, the quartiles rise from 0 to 2; where they do not, no threshold on what the
    memories say can reproduce them (a limit of the records, not of a threshold)."""
    best: dict[str, list[float]] = defaultdict(list)
    for i in user.integrity:
        best[i.verdict].append(max(coverage(i.point, m, [user.subject]) for m in i.memories))
    out: dict[str, dict[str, float | int]] = {}
    for label in TASK_LABELS["integrity"]:
        xs = sorted(best.get(label, []))
        if xs:
            q = [xs[min(len(xs) - 1, int(f * len(xs)))] for f in (0.25, 0.5, 0.75)]
            out[label] = {"n": len(xs), "q25": q[0], "median": q[1], "q75": q[2]}
    return out


def headline_rates(user: JudgedUser, verdicts: dict[str, list[str]]) -> dict[str, float | None]:
    """HaluMem's headline metrics computed from one rater's ``verdicts`` (per task, in
    record order) on ``user``'s judged records, as HaluMem's ``evaluation.py`` aggregates
    them over records with a verdict: recall = share of gold (non-interference) points
    scored 2; FMR = share of interference points scored exactly 0; update and QA label
    shares. Comparing the LLM's and the offline judge's shows how the approximation moves
    each headline figure (on that system's memories)."""
    def share(xs: Sequence[str], label: str) -> float | None:
        return sum(x == label for x in xs) / len(xs) if xs else None

    integrity = verdicts["integrity"]
    gold = [v for v, i in zip(integrity, user.integrity, strict=True)
            if i.source != "interference"]
    distractors = [v for v, i in zip(integrity, user.integrity, strict=True)
                   if i.source == "interference"]
    return {"recall": share(gold, "2"), "fmr": share(distractors, "0"),
            "interference_n": len(distractors),
            "update_correct": share(verdicts["update"], "correct"),
            "qa_correct": share(verdicts["qa"], "correct"),
            "qa_hallucination": share(verdicts["qa"], "hallucination"),
            "qa_omission": share(verdicts["qa"], "omission")}


def _llm_verdicts(user: JudgedUser, task: str) -> list[str]:
    items: Sequence[Any] = getattr(user, task)
    return [i.verdict for i in items]


def _with(base: OfflineJudge, params: dict[str, float]) -> OfflineJudge:
    fields: dict[str, Any] = dict(params)
    return dataclasses.replace(base, **fields)


def _fit(users: Sequence[JudgedUser], task: str, base: OfflineJudge) -> dict[str, float]:
    """The grid point with the highest pooled kappa on ``users`` (then accuracy)."""
    grid = FIT_GRID[task]
    best: tuple[float, float] | None = None
    best_params: dict[str, float] = {}
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        judge = _with(base, params)
        llm = [v for u in users for v in _llm_verdicts(u, task)]
        off = [v for u in users for v in offline_verdicts(judge, u, task)]
        a = agreement(llm, off, TASK_LABELS[task])
        key = (a["kappa"] if a["kappa"] is not None else -1.0, a["accuracy"] or 0.0)
        if best is None or key > best:
            best, best_params = key, params
    return best_params


def leave_one_out(users: Sequence[JudgedUser], base: OfflineJudge
                  ) -> dict[str, dict[str, Any]]:
    """Per fitted task: for each file, thresholds fitted on the others, scored on it."""
    out: dict[str, dict[str, Any]] = {}
    for task in FIT_GRID:
        held_llm: list[str] = []
        held_off: list[str] = []
        per_file = {}
        for k, user in enumerate(users):
            params = _fit([u for j, u in enumerate(users) if j != k], task, base)
            off = offline_verdicts(_with(base, params), user, task)
            llm = _llm_verdicts(user, task)
            held_llm += llm
            held_off += off
            per_file[user.path] = {"fitted": params, **agreement(llm, off, TASK_LABELS[task])}
        out[task] = {"per_file": per_file,
                     "pooled": agreement(held_llm, held_off, TASK_LABELS[task])}
    return out


def check_judge(paths: Sequence[str | Path], *, judge: OfflineJudge | None = None,
                refit: bool = True, json_path: str | Path | None = None,
                print_table: bool = True) -> dict[str, Any]:
    """Agreement of ``judge`` (default: ``OfflineJudge()``) with the LLM verdicts in
    ``paths``, per file and pooled, plus leave-one-file-out figures when ``refit`` and
    there are at least two files. Returns the report (also written to ``json_path``)."""
    if not paths:
        raise InvalidInput("--judged: give at least one judged file")
    if len({str(p) for p in paths}) != len(paths):
        raise InvalidInput("--judged: a file is given more than once")
    the_judge = judge or OfflineJudge()
    users = [load_judged(p) for p in paths]
    per_file: dict[str, Any] = {}
    labels_of = {**TASK_LABELS, RECALL_VIEW: ("2", "<2"), FMR_VIEW: ("0", ">0")}
    pooled: dict[str, tuple[list[str], list[str]]] = {t: ([], []) for t in labels_of}
    for user in users:
        verdicts = {t: (_llm_verdicts(user, t), offline_verdicts(the_judge, user, t))
                    for t in TASK_LABELS}
        llm_scores, off_scores = verdicts["integrity"]
        verdicts[RECALL_VIEW] = ([v if v == "2" else "<2" for v in llm_scores],
                                 [v if v == "2" else "<2" for v in off_scores])
        interference = [k for k, i in enumerate(user.integrity) if i.source == "interference"]
        verdicts[FMR_VIEW] = ([llm_scores[k] if llm_scores[k] == "0" else ">0"
                               for k in interference],
                              [off_scores[k] if off_scores[k] == "0" else ">0"
                               for k in interference])
        tasks = {}
        for task, labels in labels_of.items():
            llm, off = verdicts[task]
            pooled[task][0].extend(llm)
            pooled[task][1].extend(off)
            skipped = user.skipped["integrity" if task in (RECALL_VIEW, FMR_VIEW) else task]
            tasks[task] = {**agreement(llm, off, labels), "skipped": skipped}
        per_file[user.path] = {
            "subject": user.subject, **tasks,
            "integrity_label_signal": label_signal(user),
            "headline": {"llm": headline_rates(user, {t: verdicts[t][0] for t in TASK_LABELS}),
                         "offline": headline_rates(user, {t: verdicts[t][1]
                                                          for t in TASK_LABELS})}}
    report: dict[str, Any] = {
        "judge": the_judge.name,
        "note": APPROXIMATE,
        "thresholds": {k: getattr(the_judge, k) for grid in FIT_GRID.values() for k in grid},
        "files": per_file,
        "pooled": {t: agreement(*pooled[t], labels_of[t]) for t in labels_of},
    }
    if refit and len(users) > 1:
        report["leave_one_out"] = leave_one_out(users, the_judge)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    if print_table:
        print_check(report)
    return report


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def print_check(report: dict[str, Any]) -> None:
    """A readable table: accuracy and kappa per task, file, pool and held-out fit."""
    print(f"HaluMem judge check  judge: {report['judge']}  ({report['note']})")
    print(f"{'task':<24}{'set':<34}{'n':>5}{'accuracy':>10}{'kappa':>8}  skipped")
    rows = []
    for task in (*TASK_LABELS, RECALL_VIEW, FMR_VIEW):
        for path, f in report["files"].items():
            skipped = ", ".join(f"{v} {k}" for k, v in f[task]["skipped"].items()) or "-"
            rows.append((task, Path(path).name, f[task], skipped))
        rows.append((task, "pooled", report["pooled"][task], ""))
        loo = report.get("leave_one_out", {}).get(task)
        if loo:
            for path, f in loo["per_file"].items():
                rows.append((task, f"held out: {Path(path).name}", f, ""))
            rows.append((task, "held out: pooled", loo["pooled"], ""))
    for task, name, a, skipped in rows:
        print(f"{task:<24}{name[:33]:<34}{a['n']:>5}{_fmt(a['accuracy']):>10}"
              f"{_fmt(a['kappa']):>8}  {skipped}")
    for task, labels in TASK_LABELS.items():
        m = report["pooled"][task]["confusion_llm_by_offline"]
        print(f"{task} pooled confusion (rows: LLM, columns: offline): " + "; ".join(
            f"{a}: " + " ".join(str(m[a][b]) for b in labels) for a in labels))
    print("HaluMem's headline metrics on these records, LLM verdicts vs offline judge:")
    for path, f in report["files"].items():
        llm, off = f["headline"]["llm"], f["headline"]["offline"]
        print(f"  {Path(path).name}: " + "; ".join(
            f"{k} {_fmt(llm[k])} vs {_fmt(off[k])}" for k in llm if k != "interference_n"))
    print("best key-token coverage of a point by the memories the LLM was shown, per LLM "
          "integrity label (q25 / median / q75):")
    for path, f in report["files"].items():
        cells = "; ".join(f"{label}: n={v['n']} {v['q25']:.2f}/{v['median']:.2f}/{v['q75']:.2f}"
                          for label, v in f.get("integrity_label_signal", {}).items())
        print(f"  {Path(path).name}: {cells}")
    print("All figures are approximate: the offline judge approximates HaluMem's LLM judge.")


# --------------------------------------------------------------------------- CLI
def _cmd_judge_check(args: Any) -> int:
    check_judge(args.judged, refit=not args.no_refit, json_path=args.json)
    return 0


def add_judge_check_command(subparsers: Any) -> None:
    """Add ``halumem-judge-check`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "halumem-judge-check",
        help="agreement of the offline HaluMem judge with LLM-judged records (approximate)")
    p.add_argument("--judged", action="append", required=True, metavar="FILE",
                   help="a HaluMem judged-records JSON file (repeat for several users)")
    p.add_argument("--json", default=None, help="write the JSON report here")
    p.add_argument("--no-refit", action="store_true",
                   help="skip the leave-one-file-out threshold fit")
    p.set_defaults(func=_cmd_judge_check)
