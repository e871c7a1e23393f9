"""Search/context ``coverage``: the signals, the calibrated model, the API and SDK fields,
and the calibration command that fits it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos.client import MemosClient
from memos.errors import InvalidInput
from memos.eval.halumem_calibrate import THRESHOLDS, calibrate, evidence_limits, fit_logistic
from memos.retrieval.coverage import (
    CALIBRATION,
    answer_type,
    carries,
    query_coverage,
    question_parts,
    signals,
)

ANA = ["Ana's dog is named Rex.", "Ana works as a nurse in Oslo.", "Ana likes hiking.",
       "Ana's sister Mia lives in Rome.", "Ana drives a red Volvo."]


def test_no_hits_is_no_coverage_and_every_coverage_is_a_share() -> None:
    assert query_coverage("Where does Ana work?", []) == 0.0
    for query in ("What is the name of Ana's dog?", "What is Ana's blood type?"):
        assert 0.0 <= query_coverage(query, ANA) <= 1.0


def test_coverage_rises_with_the_query_words_the_hits_hold() -> None:
    held = query_coverage("What is the name of Ana's dog?", ANA)
    absent = query_coverage("What is Ana's blood type?", ANA)
    assert held > absent


def test_a_word_most_hits_share_says_nothing_about_the_query() -> None:
    # "Ana" is in every hit: only "blood" and "type" count, and no hit has them
    sig = signals("What is Ana's blood type?", ANA)
    assert sig["lexical_best"] == 0.0 and sig["lexical_top3"] == 0.0
    # with fewer hits than MIN_HITS_FOR_COMMON nothing is left out
    assert signals("Ana's blood type?", ANA[:2])["lexical_best"] > 0


def test_a_date_the_query_names_is_not_a_word_the_hits_must_hold() -> None:
    # "as of Sep 06, 2025" says when; the hit that answers need not repeat the date
    hits = ["Ana dislikes heavy metal music.", *ANA]
    dated = signals("What music does Ana dislike as of Sep 06, 2025?", hits)
    assert dated["answer_best"] == signals("What music does Ana dislike?", hits)[
        "answer_best"] == 1.0


def test_a_two_part_question_is_covered_part_by_part() -> None:
    q = "What is the name of Ana's brother, and in which city does Ana live?"
    assert question_parts(q) == ["What is the name of Ana's brother",
                                 "in which city does Ana live?"]
    hits = ["Ana's brother is named Leo.", "Ana lives in Oslo.", "Ana likes hiking.",
            "Ana drives a red Volvo.", "Ana's cat is grey."]
    # no one hit answers both parts; each part has the hit that answers it
    assert signals(q, hits)["answer_best"] == 1.0
    assert signals(q, [*hits[1:], "Ana's flat is small."])["answer_best"] == 0.5


def test_answer_type_reads_what_the_question_asks_for() -> None:
    assert [answer_type(q) for q in (
        "When did Ana move to Oslo?", "What is Ana's birth date?", "How many kids does Ana have?",
        "What is Ana's monthly income as of May 2025?", "Who is Ana's manager?",
        "Where does Ana live as of September 4, 2025?", "Did Ana move?",
        "What does Ana do for a living?",
        "What is the exact date when Ana plans to start offering golf?",
        "What was Ana's ranking in the chess tournament?")] == [
        "date", "date", "number", "number", "name", "place", "yes_no", "open", "date",
        "number"]


def test_a_hit_carries_an_answer_only_beyond_what_the_question_names() -> None:
    q = "How much did Ana earn in 2024?"
    assert carries("number", "Ana earned 52,000 in 2024.", q)
    assert not carries("number", "Ana's pay rose in 2024.", q)  # only the question's year
    assert carries("date", "Ana moved on 2021-05-03.", "When did Ana move?")
    assert carries("date", "Ana moved last week.", "When did Ana move?")
    assert not carries("date", "Ana moved for work.", "When did Ana move?")
    assert carries("place", "Ana lives in Oslo.", "Where does Ana live?")
    assert not carries("place", "Ana lives near the sea.", "Where does Ana live?")
    assert carries("open", "anything", "What does Ana like?")


def test_answer_best_needs_a_hit_that_adds_the_asked_for_answer() -> None:
    # the hit repeats the question's words but holds no date: it cannot answer "when"
    assert signals("When did Ana move to Oslo?", ["Ana moved to Oslo."])["answer_best"] == 0
    dated = signals("When did Ana move to Oslo?", ["Ana moved to Oslo.",
                                                   "Ana moved to Oslo in May 2021."])
    assert dated["answer_best"] == 1.0
    assert query_coverage("When did Ana move to Oslo?", ["Ana moved to Oslo in May 2021."]) > \
        query_coverage("When did Ana move to Oslo?", ["Ana moved to Oslo."])


def test_the_shipped_calibration_is_monotone_in_every_signal() -> None:
    # more of the query's words in the hits never lowers the coverage
    assert sum(CALIBRATION.weights[1:]) > 0 and CALIBRATION.weights[1] > 0
    low = query_coverage("Ana's dog and boat", ["Ana's cat Tom.", "x", "y"])
    high = query_coverage("Ana's dog and boat", ["Ana's dog Rex and boat Wave.", "x", "y"])
    assert high > low
    # a hit that only repeats the query holds no answer to it
    assert query_coverage("Ana's dog and boat", ["Ana's dog and boat.", "x", "y"]) < high


def test_search_and_context_report_coverage_through_the_sdk(sdk: MemosClient) -> None:
    sdk.create_cube("ana")
    for text in ANA:
        sdk.add_memory("ana", text=text)
    covered = sdk.search("ana", query="What is the name of Ana's dog?")
    missing = sdk.search("ana", query="What is Ana's blood type?")
    assert covered.coverage is not None and missing.coverage is not None
    assert covered.coverage > missing.coverage
    ctx = sdk.context("ana", query="What is the name of Ana's dog?")
    assert ctx.coverage == pytest.approx(covered.coverage)
    sdk.create_cube("empty")
    assert sdk.search("empty", query="anything at all").coverage == 0.0


def test_the_coverage_fields_are_in_the_openapi_schema(client: Any) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("SearchResponse", "ContextResponse"):
        field = schemas[name]["properties"]["coverage"]
        assert "calibrated" in field["description"] or "SearchResponse" in field["description"]


# --------------------------------------------------------------------------- calibration
def test_fit_logistic_recovers_a_monotone_relation() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(400, 1))
    y = (rng.uniform(0, 1, size=400) < 1 / (1 + np.exp(-(6 * x[:, 0] - 3)))).astype(float)
    b, w = fit_logistic(x, y)
    assert w == pytest.approx(6, abs=1.5) and b == pytest.approx(-3, abs=1.0)


def _trace(path: Path, seed: int) -> Path:
    """A synthetic trace: questions whose hits hold their words have their evidence."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(60):
        answerable = i % 3 != 0
        word = f"topic{i}"
        hits = [{"text": f"Ana talked about {word} at length." if answerable and k == 0
                 else f"Ana mentioned filler{i}x{k}.", "score": float(rng.uniform(0.3, 0.8))}
                for k in range(6)]
        rows.append({"question": f"What did Ana say about {word}?", "question_type": "t",
                     "subject": "Ana",
                     "reference": f"{word} at length" if answerable else "unknown",
                     "evidence": ["e"] if answerable else [],
                     "evidence_scores": [2] if answerable else [],
                     "hits": hits, "label": "correct" if answerable else "hallucination",
                     "abstain_label": "omission" if answerable else "correct"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_calibrate_fits_leave_one_user_out_and_abstains_where_memory_is_empty(
        tmp_path: Path) -> None:
    paths = [_trace(tmp_path / "u1.jsonl", 1), _trace(tmp_path / "u2.jsonl", 2)]
    report = calibrate(paths, json_path=tmp_path / "cal.json", print_table=False)
    assert json.loads((tmp_path / "cal.json").read_text())["note"].startswith("approximate")
    for held in report["held_out"].values():
        assert held["fitted_on_others"]["abstain_below"] in THRESHOLDS
        # abstaining turns the unanswerable questions' hallucinations into correct answers
        assert held["qa_with_abstention"]["hallucination"] < \
            held["qa_without_abstention"]["hallucination"]
        assert held["coverage"]["brier"] < held["coverage"]["brier_constant_baseline"]


def test_calibrate_refuses_one_user_or_a_file_that_is_not_a_trace(tmp_path: Path) -> None:
    one = _trace(tmp_path / "u1.jsonl", 1)
    with pytest.raises(InvalidInput, match="at least two"):
        calibrate([one], print_table=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(InvalidInput, match="not a 'memos eval halumem --trace' file"):
        calibrate([one, bad], print_table=False)


def test_calibrate_reads_the_answer_before_a_traced_runs_own_abstention(
        tmp_path: Path) -> None:
    paths = []
    for n in (1, 2):
        path = _trace(tmp_path / f"u{n}.jsonl", n)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for r in rows:  # the traced run abstained everywhere; its answers were these
            r["answered_label"], r["label"] = r["label"], r["abstain_label"]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        paths.append(path)
    held = next(iter(calibrate(paths, print_table=False)["held_out"].values()))
    assert held["qa_without_abstention"]["hallucination"] == pytest.approx(1 / 3)


def test_calibrate_reanswers_and_checks_other_data_it_never_fits_on(tmp_path: Path) -> None:
    paths = [_trace(tmp_path / "u1.jsonl", 1), _trace(tmp_path / "u2.jsonl", 2)]
    other = _trace(tmp_path / "synth.jsonl", 3)
    fitted = calibrate(paths, print_table=False)["all_users"]["weights"]
    report = calibrate(paths, print_table=False, reanswer_traces=True, check=[other])
    assert report["reanswered"] is True
    assert report["all_users"]["weights"] == fitted  # the check is scored, not fitted on
    checked = report["checked"][str(other)]
    assert set(checked) >= {"coverage", "qa_without_abstention", "qa_with_abstention",
                            "qa_by_question_type"}
    # reanswered by the offline answerer: it quotes the hit about the topic where there is
    # one and says unknown where there is none, so every answer is correct
    assert checked["qa_without_abstention"]["correct"] == 1.0


def test_evidence_limits_place_each_point_where_the_judge_first_finds_it() -> None:
    rows = [{"question_type": "a", "evidence_scores": [2, 0, 1, 0],
             "cube_evidence_scores": [2, 2, 1, 0], "turn_evidence_scores": [2, 2, 2, 1],
             "mixed_evidence_scores": [2, 2, 0, 0]},
            {"question_type": "b", "evidence_scores": [], "cube_evidence_scores": [],
             "turn_evidence_scores": [], "mixed_evidence_scores": []}]
    limits = evidence_limits(rows)
    assert limits is not None
    assert limits["all"] == {"n": 1, "in_hits": 0.25, "ranked_out": 0.25,
                             "not_extracted": 0.25, "not_found": 0.25, "mixed_hits": 0.5}
    assert set(limits["by_question_type"]) == {"a"}  # a question without evidence is left out
    assert evidence_limits([{"evidence_scores": [2]}]) is None  # an older trace


def test_tau_keeps_every_fitting_users_hallucination_within_the_bound() -> None:
    from memos.eval.halumem_calibrate import MAX_HALLUCINATION, _choose_tau
    from memos.retrieval.coverage import Calibration

    def row(k: int, answerable: bool, label: str) -> dict[str, Any]:
        text = f"Ana talked about topic{k} at length." if answerable else "Ana mentioned x."
        return {"question": f"What did Ana say about topic{k}?", "hits": [{"text": text}],
                "answered_label": label, "label": label, "abstain_label": "omission"}

    cal = Calibration(weights=(0.0, 4.0), source="test")  # coverage 0.5 or 0.98
    u1 = [row(k, True, "correct") for k in range(10)]
    u2 = [row(k, False, "hallucination") for k in range(3)] + \
        [row(k, True, "correct") for k in range(3, 10)]
    # pooled, 3 hallucinations in 20 are within the bound: no abstention needed
    assert 3 / 20 <= MAX_HALLUCINATION and _choose_tau([u1 + u2], cal) == 0.0
    # per user, user 2's 3 in 10 are not: τ must rise above its uncovered questions
    assert _choose_tau([u1, u2], cal) > 0.5
