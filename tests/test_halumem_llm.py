"""The HaluMem LLM path offline: extractor, judge and answerer through litellm's
``mock_response`` (no network), HaluMem's JSON output keys, retries and the CLI flags."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_halumem import FakeMemosClient

from memos.embed import HashingEmbedder
from memos.errors import InvalidInput
from memos.eval import halumem
from memos.eval.commands import add_eval_commands
from memos.eval.halumem import LLMAnswerer, LLMJudge, run_halumem
from memos.extract import LLMExtractor
from memos.llm import Retry

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "gpt-4o-mini"


def _record() -> dict[str, Any]:
    """One HaluMem-format user: one session, one memory point, one question."""
    return {
        "uuid": "user0001-x", "persona_info": "Name: Ana Li; Age: 30",
        "sessions": [{
            "start_time": "2025-05-08T10:00:00",
            "dialogue": [
                {"role": "user", "content": "I moved to Berlin last month for a new job.",
                 "timestamp": "2025-05-08T10:00:00"},
                {"role": "assistant", "content": "Congratulations on the move!",
                 "timestamp": "2025-05-08T10:00:05"}],
            "memory_points": [{"memory_content": "Ana Li moved to Berlin.",
                               "memory_type": "Event Memory", "is_update": "False",
                               "original_memories": [], "importance": 0.8,
                               "memory_source": "system"}],
            "questions": [{"question": "Which city did Ana Li move to?", "answer": "Berlin",
                           "evidence": [{"memory_content": "Ana Li moved to Berlin."}],
                           "question_type": "Basic Fact Recall", "difficulty": "easy"}],
        }],
    }


#: One reply that answers all four judge prompts in HaluMem's output format.
JUDGE_REPLY = json.dumps({"reasoning": "covered", "score": "2", "accuracy_score": 2,
                          "is_included": "true", "evaluation_result": "Correct"})


def test_llm_extractor_judge_and_answerer_run_offline_with_mock_response(
        tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(_record()) + "\n")
    # run_halumem names turns <cube>-s<session>-t<turn>; the cube is halumem-0-<uuid[:8]>
    facts = {"facts": [{"text": "Ana Li moved to Berlin.", "subject": "Ana Li",
                        "attribute": "city", "value": "Berlin", "memory_type": "Event Memory",
                        "source_id": "halumem-0-user0001-s0-t0", "quote": "I moved to Berlin"}]}
    client = FakeMemosClient(HashingEmbedder())
    client.extractor = LLMExtractor(MODEL, completion_kwargs={"mock_response": json.dumps(facts)})
    judge = LLMJudge(MODEL, completion_kwargs={"mock_response": JUDGE_REPLY})
    answerer = LLMAnswerer(MODEL, completion_kwargs={"mock_response": "Berlin"})
    report = run_halumem(path, client=client, judge=judge, answer_fn=answerer,
                         progress=False, print_table=False, json_path=tmp_path / "r.json")
    assert client.extractor.rejected == []
    assert report["judge"] == f"llm:{MODEL}" and report["approximate"] is False
    assert report["extraction"]["recall"] == 1.0 and report["extraction"]["accuracy"] == 1.0
    assert report["qa"]["correct"] == 1.0 and report["qa"]["unparsed"] == 0
    assert report["evidence_coverage"]["full"] == 1.0
    assert json.loads((tmp_path / "r.json").read_text())["qa"]["n"] == 1


def test_llm_judge_reads_halumem_output_keys_in_any_case() -> None:
    def judge(reply: dict[str, Any]) -> LLMJudge:
        return LLMJudge(MODEL, completion_kwargs={"mock_response": json.dumps(reply)})

    assert judge({"reasoning": "x", "score": "1"}).integrity(
        "Ana moved.", ["Ana moved to Rome."], subject="Ana").score == 1  # type: ignore[union-attr]
    assert judge({"evaluation_result": "Omission"}).qa_label(
        "q", "Oslo", [], "not in memory", subject="Ana") == "omission"
    assert judge({"evaluation_result": "HALLUCINATION"}).update_label(
        "new", ["old"], ["m"], subject="Ana") == "hallucination"
    assert judge({"accuracy_score": 0, "is_included": "false"}).accuracy(
        "m", ["turn"], ["gold"], subject="Ana") == (0, False)
    assert judge({"evaluation_result": "maybe"}).qa_label("q", "a", [], "a",
                                                         subject="Ana") is None
    assert judge({"score": 5}).integrity("p", ["m"], subject="Ana") is None


def test_the_prompts_follow_halumem_task_definitions() -> None:
    assert '"evaluation_result"' in halumem.QA_PROMPT and '"Omission"' in halumem.QA_PROMPT
    assert '"evaluation_result"' in halumem.UPDATE_PROMPT
    assert '"score": 0 | 1 | 2' in halumem.INTEGRITY_PROMPT
    assert '"accuracy_score"' in halumem.ACCURACY_PROMPT
    assert "not in memory" in halumem.ANSWER_PROMPT
    from memos.extract import EXTRACT_PROMPT
    for kind in ("Persona Memory", "Event Memory", "Relationship Memory"):
        assert kind in EXTRACT_PROMPT


def test_a_judge_call_that_keeps_failing_is_retried_then_counted_unparsed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import memos.llm

    waits: list[float] = []
    monkeypatch.setattr(memos.llm, "RETRY", Retry(attempts=3, sleep=waits.append))
    judge = LLMJudge(MODEL, completion_kwargs={"mock_response": "litellm.RateLimitError"})
    assert judge.qa_label("q", "a", [], "a", subject="Ana") is None
    assert waits == [1.0, 2.0]  # two back-offs: three attempts, then a failed judgement


def test_extractor_flag_names_the_local_servers_extractor() -> None:
    assert halumem._extractor_setting(None) is None
    assert halumem._extractor_setting("rules") == "rules"
    assert halumem._extractor_setting("gpt-4o-mini") == "llm:gpt-4o-mini"
    assert halumem._extractor_setting("llm:ollama/llama3") == "llm:ollama/llama3"
    with pytest.raises(InvalidInput):
        halumem._extractor_setting("llm:")


def test_extractor_flag_is_refused_with_a_remote_server(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_eval_commands(parser.add_subparsers())
    args = parser.parse_args(["halumem", "--data", str(tmp_path / "x.jsonl"), "--json",
                              str(tmp_path / "r.json"), "--base-url", "http://127.0.0.1:9",
                              "--extractor", MODEL, "--judge", MODEL, "--answerer", MODEL])
    assert (args.extractor, args.judge, args.answerer) == (MODEL, MODEL, MODEL)
    with pytest.raises(InvalidInput, match="--extractor"):
        args.func(args)
