"""The offline HaluMem judge against LLM verdicts: kappa, the judged-file reader, the command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, needs_shared

from memos.errors import InvalidInput
from memos.eval.commands import add_eval_commands
from memos.eval.halumem import OfflineJudge
from memos.eval.halumem_judge_check import agreement, check_judge, cohen_kappa, load_judged

#: The offline judge's agreement with the LLM verdicts on the dev users, frozen: pooled over
#: users 3 and 12 at the shipped thresholds (``memos eval halumem-judge-check``, README;
#: approximate figures). The issue's target is 0.80 accuracy on integrity and QA; the judge
#: is not there (user 12's LLM verdicts do not follow the memories it was shown, and the two
#: users disagree on what "partly covered" means; README). A change to the judge may raise
#: these, never lower them, and states before/after in its commit message.
#: Before the stance/update/yes-no rules: integrity 0.617/0.323, QA 0.667/0.439, update
#: 0.868/0.086 (accuracy/kappa, pooled); per user integrity 0.671 (u3) / 0.579 (u12).
FROZEN_AGREEMENT = {"integrity": {"accuracy": 0.63, "kappa": 0.36},
                    "qa": {"accuracy": 0.68, "kappa": 0.47},
                    "update": {"accuracy": 0.91, "kappa": 0.14}}
FROZEN_PER_USER_ACCURACY = {"integrity": 0.59, "qa": 0.64, "update": 0.88}


@needs_shared("halumem", "judged_user3.json")
@needs_shared("halumem", "judged_user12.json")
def test_offline_judge_agreement_on_the_dev_users_does_not_drop() -> None:
    paths = [SHARED_DATA / "halumem" / f"judged_user{u}.json" for u in (3, 12)]
    report = check_judge(paths, refit=False, print_table=False)
    for task, floor in FROZEN_AGREEMENT.items():
        pooled = report["pooled"][task]
        assert pooled["accuracy"] >= floor["accuracy"], (task, pooled["accuracy"])
        assert pooled["kappa"] >= floor["kappa"], (task, pooled["kappa"])
        for path, f in report["files"].items():
            assert f[task]["accuracy"] >= FROZEN_PER_USER_ACCURACY[task], (task, path)
    # what was judged: every LLM verdict but the failed ones and the rule-scored session
    assert report["pooled"]["integrity"]["n"] == 358 and report["pooled"]["qa"]["n"] == 108


def test_kappa_matches_hand_computed_two_label_example() -> None:
    # 10 items: agree on 4 "a" and 3 "b" → p_o = 0.7; rater one 5 a / 5 b, rater two 6 a /
    # 4 b → p_e = (5·6 + 5·4) / 100 = 0.5; kappa = (0.7 − 0.5) / (1 − 0.5) = 0.4.
    first = ["a"] * 5 + ["b"] * 5
    second = ["a", "a", "a", "a", "b", "a", "a", "b", "b", "b"]
    assert cohen_kappa(first, second, ["a", "b"]) == pytest.approx(0.4)


def test_kappa_matches_hand_computed_three_label_example() -> None:
    # confusion [[2,1,0],[0,3,1],[1,0,2]]: p_o = 0.7, margins 3/4/3 both ways,
    # p_e = (9 + 16 + 9) / 100 = 0.34, kappa = 0.36 / 0.66.
    pairs = ([("0", "0")] * 2 + [("0", "1")] + [("1", "1")] * 3 + [("1", "2")] +
             [("2", "0")] + [("2", "2")] * 2)
    first, second = zip(*pairs, strict=True)
    assert cohen_kappa(first, second, ["0", "1", "2"]) == pytest.approx(0.36 / 0.66)
    a = agreement(first, second, ["0", "1", "2"])
    assert a["accuracy"] == pytest.approx(0.7)
    assert a["confusion_llm_by_offline"]["1"] == {"0": 0, "1": 3, "2": 1}


def test_kappa_is_zero_at_chance_and_undefined_for_one_shared_label() -> None:
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "a", "b", "b"], ["a", "b"]) == 0.0
    assert cohen_kappa(["a", "a"], ["a", "a"], ["a", "b"]) is None
    assert cohen_kappa([], [], ["a"]) is None
    with pytest.raises(ValueError):
        cohen_kappa(["a"], [], ["a"])


def _judged_file(tmp_path: Path) -> Path:
    """A judged file in HaluMem's format, written here (no benchmark data is copied)."""
    uid = "u-1"
    data = {
        "memory_accuracy_records": [
            {"uuid": uid, "ssession_id": 1, "memory_content": "Ana Li works as a nurse in Lyon."},
            {"uuid": uid, "ssession_id": 1, "memory_content": "Ana Li has a dog named Rex."},
        ],
        "memory_integrity_records": [
            {"uuid": uid, "ssession_id": 0, "memory_content": "Ana Li's name is Ana Li",
             "memory_source": "system", "memory_integrity_score": 0},
            {"uuid": uid, "ssession_id": 1, "memory_content": "Ana Li works as a nurse",
             "memory_source": "system", "memory_integrity_score": 2},
            {"uuid": uid, "ssession_id": 1, "memory_content": "Ana Li plays the cello",
             "memory_source": "secondary", "memory_integrity_score": 0},
            {"uuid": uid, "ssession_id": 1, "memory_content": "Ana Li has a cat",
             "memory_source": "interference", "memory_integrity_score": "judge_failed"},
        ],
        "memory_update_records": [
            {"memory_content": "Ana Li now works as a doctor",
             "original_memories": ["Ana Li works as a nurse"],
             "memories_from_system": ["Ana Li works as a nurse in Lyon."],
             "memory_update_type": "Omission"},
            {"memory_content": "Ana Li moved to Paris", "original_memories": [],
             "memories_from_system": [], "memory_update_type": None},
        ],
        "question_answering_records": [
            {"question": "What is Ana Li's job?", "answer": "Nurse", "evidence": [
                {"memory_content": "Ana Li works as a nurse"}], "system_response": "A nurse.",
             "result_type": "Correct"},
            {"question": "What is Ana Li's blood type?", "answer": "Unknown",
             "evidence": [], "system_response": "Type O.", "result_type": "Hallucination"},
        ],
    }
    path = tmp_path / "judged_ana.json"
    path.write_text(json.dumps(data))
    return path


def test_load_judged_keeps_llm_verdicts_and_counts_what_it_skips(tmp_path: Path) -> None:
    user = load_judged(_judged_file(tmp_path))
    assert user.subject == "Ana Li"
    # the integrity judge saw the memories HaluMem's accuracy judge scored for the same
    # (uuid, session); session 0 had none and was scored 0 by rule, not by the LLM
    assert [i.point for i in user.integrity] == ["Ana Li works as a nurse",
                                                 "Ana Li plays the cello"]
    assert user.integrity[0].memories == ("Ana Li works as a nurse in Lyon.",
                                          "Ana Li has a dog named Rex.")
    assert user.skipped["integrity"] == {"no verdict": 1,
                                         "no memories (scored 0 by rule, not by the LLM)": 1}
    assert [u.verdict for u in user.update] == ["omission"]
    assert user.skipped["update"] == {"no verdict": 1}
    assert [q.verdict for q in user.qa] == ["correct", "hallucination"]


def test_check_judge_reports_agreement_labelled_approximate(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    path = _judged_file(tmp_path)
    report = check_judge([path], json_path=tmp_path / "out.json")
    assert "approximate" in report["note"]
    assert report["pooled"]["integrity"]["n"] == 2
    assert report["pooled"]["integrity"]["accuracy"] == 1.0
    assert report["pooled"]["qa"]["accuracy"] == 1.0
    assert "leave_one_out" not in report  # one file: nothing to hold out
    assert json.loads((tmp_path / "out.json").read_text())["pooled"] == report["pooled"]
    out = capsys.readouterr().out
    assert "approximate" in out and "integrity" in out and "1.000" in out


def test_judge_check_refits_thresholds_leaving_each_file_out(tmp_path: Path) -> None:
    a = _judged_file(tmp_path)
    b = tmp_path / "judged_copy.json"
    b.write_text(a.read_text())
    report = check_judge([a, b], print_table=False)
    loo = report["leave_one_out"]
    assert set(loo) == {"integrity", "qa"}
    for task in loo.values():
        assert set(task["per_file"]) == {str(a), str(b)}
        assert all("fitted" in f for f in task["per_file"].values())
        assert task["pooled"]["n"] == sum(f["n"] for f in task["per_file"].values())


def test_judge_check_refuses_a_file_that_is_not_judged_records(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sessions": []}))
    with pytest.raises(InvalidInput, match="not a HaluMem judged file"):
        check_judge([bad], print_table=False)
    with pytest.raises(InvalidInput, match="--judged"):
        check_judge([tmp_path / "missing.json"], print_table=False)
    good = _judged_file(tmp_path)
    with pytest.raises(InvalidInput, match="more than once"):
        check_judge([good, good], print_table=False)


def test_judge_check_is_a_memos_eval_command(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_eval_commands(parser.add_subparsers(dest="cmd"))
    path = _judged_file(tmp_path)
    copy = tmp_path / "judged_copy.json"
    copy.write_text(path.read_text())
    out = tmp_path / "report.json"
    args = parser.parse_args(["halumem-judge-check", "--judged", str(path), "--judged",
                              str(copy), "--json", str(out), "--no-refit"])
    assert args.func(args) == 0
    assert "leave_one_out" not in json.loads(out.read_text())


# --------------------------------------------------------------------------- judge rules
# Each rule below was a disagreement with the LLM judge on the dev users, fixed generically.
def test_qa_abstentions_are_recognised_in_any_phrasing() -> None:
    j = OfflineJudge()
    for reference in ("This information is not provided.", "Unknown; not in the input.",
                      "The information is not provided"):
        for answer in ("Middle name not provided.", "No job title information.",
                       "The memories do not mention it.", "No record of that."):
            assert j.qa_label("What is Ana's middle name?", reference, [], answer,
                              subject="Ana") == "correct"
        assert j.qa_label("What is Ana's middle name?", reference, [], "Rose.",
                          subject="Ana") == "hallucination"
    assert j.qa_label("Where does Ana work?", "Acme", [], "Not specified.",
                      subject="Ana") == "omission"


def test_qa_answer_need_not_repeat_the_question() -> None:
    j = OfflineJudge()
    assert j.qa_label("What is Ana's birth date?", "Ana's birth date is 1990-05-07.", [],
                      "May 7, 1990", subject="Ana") == "correct"
    assert j.qa_label("What is Ana's birth date?", "Ana's birth date is 1990-05-07.", [],
                      "May 8, 1990", subject="Ana") == "hallucination"
    # numbers are compared without thousands separators
    assert j.qa_label("How much has Ana saved?", "21900 USD", [], "$21,900",
                      subject="Ana") == "correct"


def test_qa_yes_no_answers_are_judged_by_their_polarity() -> None:
    j = OfflineJudge()
    q = "Did Ana like the film on May 7, 2023?"
    assert j.qa_label(q, "No, she found it dull.", [], "No.", subject="Ana") == "correct"
    assert j.qa_label(q, "No, she found it dull.", [], "Yes, she loved it.",
                      subject="Ana") == "hallucination"
    # a reference that corrects the question must not be contradicted
    assert j.qa_label("Did Ana move to Rome before the summer?",
                      "No, she moved to Paris after the summer festival season.", [],
                      "No, she stayed home.", subject="Ana") == "hallucination"


def test_integrity_judges_polarity_and_person_by_the_clause_that_carries_the_point() -> None:
    j = OfflineJudge()
    assert j.integrity("Ana exercises regularly.",
                       ["Ana has no chronic diseases; she exercises regularly and eats well."],
                       subject="Ana").score == 2
    assert j.integrity("Ana leads social initiatives at Oracle.",
                       ["Ana plans to use her manager role to lead social initiatives at "
                        "Oracle."], subject="Ana").score == 2
    # still: someone else's fact is not the point
    assert j.integrity("Ana enjoys chess.", ["Ana's coworker Tom enjoys chess."],
                       subject="Ana").score == 0


def test_integrity_gives_a_contradicting_memory_partial_credit_at_most() -> None:
    # HaluMem's LLM judge gave 9 of 12 such dev-user points 1 (it touches the point but
    # says the other thing), so the offline judge does too: never 2
    j = OfflineJudge()
    assert j.integrity("Ana works at Acme.", ["Ana no longer works at Acme."],
                       subject="Ana").score == 1
    assert j.integrity("Ana has a new interest in romantic comedies.",
                       ["Ana enjoys adventure films and dislikes romantic comedies."],
                       subject="Ana").score == 1
    # the stance is read where the shared words are: a negation elsewhere does not count
    assert j.integrity("Ana exercises regularly to stay healthy.",
                       ["Ana has no chronic diseases, stays healthy by exercising "
                        "regularly."], subject="Ana").score == 2
    # a stance read on the words it governs: across a colon, not past "because", not
    # counting the user's name, and not where a text uses a word both ways
    for point, memory in [
            ("Ana Clothing I dislike: Oversized sweaters",
             "Ana dislikes wearing oversized sweaters."),
            ("Ana dislikes cargo pants because they feel utilitarian.",
             "Ana dislikes cargo pants, because they feel utilitarian."),
            ("Ana finds heavy metal aggressive; it doesn't match my upbeat personality.",
             "Ana finds heavy metal aggressive; it doesn't match Ana's upbeat personality.")]:
        assert j.integrity(point, [memory], subject="Ana").score == 2, point
    assert not j.integrity("Ana Music I dislike Heavy metal reason: I find heavy metal "
                           "aggressive.", ["Ana finds heavy metal aggressive."],
                           subject="Ana").why.startswith("opposite")
    # a memory that states another number for the point still counts partly (4 of 5)
    m = j.integrity("Ana earns 5200 dollars a month.", ["Ana earns 4800 dollars a month."],
                    subject="Ana")
    assert m.score == 1 and m.wrong_key


def test_integrity_scores_an_attribute_by_its_value() -> None:
    j = OfflineJudge()
    assert j.integrity("Ana's birth date is 1990-05-07",
                       ["Ana, born on May 7, 1990, lives in Oslo."], subject="Ana").score == 2
    # partial credit needs an identifying word in common, not just "lives"
    assert j.integrity("Ana lives in Oslo.", ["Ana lives in Berlin."], subject="Ana").score == 0
    assert j.integrity("Ana lives in Oslo with her dog.", ["Ana's dog is called Rex."],
                       subject="Ana").score == 1
    # a one- or two-word value stated in full identifies its attribute
    assert j.integrity("Ana's MBTI personality type is INFP",
                       ["Ana says the MBTI test calls her an INFP."], subject="Ana").score == 2
    assert j.integrity("Ana's gender is Female",
                       ["Ana, a 30-year-old female, lives in Oslo."], subject="Ana").score == 2
    # with min_shared=2 one shared identifying word is not a partial cover
    strict = OfflineJudge(min_shared=2)
    assert strict.integrity("Ana lives in Oslo with her dog.", ["Ana's dog is called Rex."],
                            subject="Ana").score == 0


def test_update_with_only_the_old_value_is_an_omission() -> None:
    j = OfflineJudge()
    assert j.update_label("Ana now lives in Oslo.", ["Ana lives in Berlin."],
                          ["Ana lives in Berlin."], subject="Ana") == "omission"
    assert j.update_label("Ana now lives in Oslo.", ["Ana lives in Berlin."],
                          ["Ana moved to Oslo.", "Ana lives in Berlin."],
                          subject="Ana") == "hallucination"


def test_qa_incomplete_answer_with_unsupported_content_is_a_hallucination() -> None:
    j = OfflineJudge()
    q, ref = "Which films does Ana like?", "Mystery thrillers and adventure films."
    evidence = ["Ana likes mystery thrillers and adventure films."]
    assert j.qa_label(q, ref, evidence, "Mystery thrillers.", subject="Ana") == "omission"
    assert j.qa_label(q, ref, evidence, "Mystery thrillers and romantic dramas.",
                      subject="Ana") == "hallucination"


def test_qa_yes_no_answer_to_a_reference_that_states_the_fact() -> None:
    j = OfflineJudge()
    # the reference takes the other stance on the question's words: it answers "no"
    q = "Did Ana decide to keep drinking soda after the seminar?"
    ref = "Ana decided to avoid soda entirely."
    assert j.qa_label(q, ref, [], "No, she avoids soda.", subject="Ana") == "correct"
    assert j.qa_label(q, ref, [], "Yes, she still drinks soda.",
                      subject="Ana") == "hallucination"
    # it replaces the question's claim with another one: also "no"
    q = "Did Ana express confusion and indecision about her choices?"
    ref = "Ana expressed clarity and determination in her choices."
    assert j.qa_label(q, ref, [], "No, she didn't.", subject="Ana") == "correct"
    # it states the question's claim: "yes"
    assert j.qa_label("Did Ana adopt a rescue dog?", "Ana adopted a rescue dog.", [],
                      "No.", subject="Ana") == "hallucination"


def test_update_reads_what_memories_state_not_when_they_were_recorded() -> None:
    j = OfflineJudge()
    # the old value kept is an omission, also when the memory carries its record time
    assert j.update_label("Ana's monthly income changed from 5000 to 6200.",
                          ["Ana's monthly income is 5000."],
                          ["2025-09-05T13:30:48+00:00: Ana's monthly income is 5000."],
                          subject="Ana") == "omission"
    # a value that is neither the new nor an old one is a hallucinated update
    assert j.update_label("Ana's monthly income changed from 5000 to 6200.",
                          ["Ana's monthly income is 5000."],
                          ["Ana's monthly income changed to 7100."],
                          subject="Ana") == "hallucination"
    # a point that restates the old one is updated only by a memory that differs from it
    old = "Ana is committed to mentoring young athletes."
    assert j.update_label("Ana is committed to mentoring young athletes.", [old], [old],
                          subject="Ana") == "omission"


def test_judge_check_reports_halumem_headline_rates_of_both_raters(tmp_path: Path) -> None:
    report = check_judge([_judged_file(tmp_path)], print_table=False)
    f = next(iter(report["files"].values()))
    llm, off = f["headline"]["llm"], f["headline"]["offline"]
    # one gold point with a verdict scored 2, one 0: recall 0.5; the interference record
    # had no verdict, so there is no FMR
    assert llm["recall"] == 0.5 and llm["fmr"] is None and llm["interference_n"] == 0
    assert llm["qa_correct"] == 0.5 and llm["qa_hallucination"] == 0.5
    assert off == llm  # the offline judge agrees on every record here
