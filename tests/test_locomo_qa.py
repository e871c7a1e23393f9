"""LoCoMo QA scoring (the official rules) and a small run with the offline answerer."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SHARED_DATA, needs_shared

from memos.eval.locomo_qa import ABSTAIN, run_locomo_qa, score_answer, token_f1

DATA = SHARED_DATA / "locomo" / "locomo_dev.json"


def test_official_scoring_rules() -> None:
    assert score_answer("7 May 2023", "7 May 2023", 2) == 1.0
    assert token_f1("the adoption agencies", "adoption agency") == 1.0  # articles, stems
    assert score_answer("Berlin, Paris", "Paris, Rome", 1) == 0.5  # each gold part, best match
    assert score_answer("running", "running; jogging", 3) == 1.0  # first alternative only
    assert score_answer(ABSTAIN, None, 5) == 1.0
    assert score_answer("She went to Paris", "Berlin", 5) == 0.0  # the trap answer never wins
    assert score_answer("", "Berlin", 4) == 0.0


@needs_shared("locomo", "locomo_dev.json")
def test_offline_qa_run_on_a_slice(tmp_path: Path) -> None:
    out = tmp_path / "qa.json"
    report = run_locomo_qa(DATA, answerer="offline", conversations=["conv-26"],
                           max_questions=40, json_path=out, progress=False)
    assert json.loads(out.read_text())["by_category"].keys() == {"1", "2", "3", "4", "5"}
    assert report["f1_categories_1_4"] is not None and report["f1_categories_1_4"] > 0
