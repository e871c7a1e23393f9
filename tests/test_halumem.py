"""HaluMem synthetic data, metric definitions and the whole evaluation through a test double.

``FakeMemosClient`` below is a TEST DOUBLE of the memos SDK: an in-process stand-in that
mirrors what the real ingest does (extract → gate → update → store active/quarantined) with
a numpy cosine search. The real store/API/SDK replaces it in the lead's integration tests.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from memos.embed import HashingEmbedder, OnnxMiniLM
from memos.errors import InvalidInput
from memos.eval import halumem_synth
from memos.eval.halumem import (
    UNKNOWN,
    LLMJudge,
    OfflineJudge,
    Retrieved,
    add_halumem_commands,
    extraction_metrics,
    offline_answer,
    run_halumem,
    without_sources,
)
from memos.extract import (
    Action,
    ActiveFact,
    ExtractInput,
    RulesExtractor,
    RulesUpdater,
    candidates_for,
    check,
    ingest_plan,
)
from memos.retrieval.search import dense_query

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


# --------------------------------------------------------------------------- test double
@dataclass
class FakeMemory:
    id: str
    text: str
    session_id: str
    status: str = "active"
    granularity: str = "fact"
    metadata: dict[str, Any] = field(default_factory=dict)
    status_reason: str | None = None
    sources: list[str] = field(default_factory=list)


class FakeMemosClient:
    """TEST DOUBLE of the memos SDK (see the module docstring).

    ``mode`` selects the system under test: ``"memos"`` (extract → gate → update),
    ``"verbatim"`` (every turn stored as a memory: a deliberately bad system) or
    ``"no-gate"`` (extraction with hypotheticals/others' facts kept and no gate: another
    deliberately bad system).
    """

    def __init__(self, embedder: Any, *, mode: str = "memos") -> None:
        self.embedder = embedder
        self.mode = mode
        self.extractor = RulesExtractor()
        self.updater = RulesUpdater()
        self.cubes: dict[str, list[FakeMemory]] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.decisions: list[Any] = []
        self.user_names: dict[str, str | None] = {}

    def create_cube(self, id: str, name: str | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
        self.cubes[id] = []
        self.user_names[id] = (metadata or {}).get("user_name")

    def delete_cube(self, cube_id: str) -> None:
        self.cubes.pop(cube_id, None)

    def _store(self, cube_id: str, mem: FakeMemory) -> FakeMemory:
        self.cubes[cube_id].append(mem)
        self.vectors[mem.id] = self.embedder.embed([mem.text])[0]
        return mem

    def add_messages(self, cube_id: str, *, session_id: str, messages: list[dict[str, Any]],
                     sync: bool = True) -> None:
        inputs = [ExtractInput(id=m["id"], role=m["role"], speaker=m.get("speaker"),
                               content=m["content"],
                               timestamp=datetime.fromisoformat(m["timestamp"]))
                  for m in messages]
        store = self.cubes[cube_id]
        if self.mode == "verbatim":
            for m in inputs:
                self._store(cube_id, FakeMemory(f"{m.id}-v", m.content, session_id))
            return
        if self.mode == "memos":  # exactly what the lead's ingest does, via ingest_plan
            active = [ActiveFact.from_metadata(m.id, m.text, m.metadata) for m in store
                      if m.status == "active"]
            ids = (f"{cube_id}-u{len(store) + k}" for k in itertools.count())
            for p in ingest_plan(inputs, active, extractor=self.extractor,
                                 updater=self.updater, id_factory=lambda f: next(ids)):
                self.decisions.append((p.fact.text, p.decision))
                if p.status == "noop" and p.decision is not None:
                    target = next(m for m in store if m.id == p.decision.target_fact_id)
                    target.sources.append(p.fact.source_message_id)
                    continue
                if p.decision is not None and p.decision.target_fact_id:
                    target = next(m for m in store if m.id == p.decision.target_fact_id)
                    target.status = ("superseded" if p.decision.action is Action.UPDATE
                                     else "deleted")
                mem = FakeMemory(f"{cube_id}-u{len(store)}", p.fact.text, session_id,
                                 "quarantined" if p.status == "quarantined" else "active",
                                 metadata=p.fact.metadata(), status_reason=p.status_reason,
                                 sources=[p.fact.source_message_id])
                self._store(cube_id, mem)
            return
        # "no-gate": a careless pipeline, no gate, plus naively extracted distractors
        facts = self.extractor.extract(inputs) + self._naive_extra(inputs)
        for n, fact in enumerate(facts):
            mid = f"{fact.source_message_id}-f{n}"
            active = [ActiveFact.from_metadata(m.id, m.text, m.metadata) for m in store
                      if m.status == "active"]
            decision = self.updater.decide(fact, candidates_for(fact, active))
            target = next((m for m in store if m.id == decision.target_fact_id), None)
            if decision.action is Action.NOOP:
                continue
            if decision.action in (Action.UPDATE, Action.DELETE) and target is not None:
                target.status = "superseded" if decision.action is Action.UPDATE else "deleted"
            self._store(cube_id, FakeMemory(mid, fact.text, session_id,
                                            metadata=fact.metadata()))

    @staticmethod
    def _naive_extra(inputs: list[ExtractInput]) -> list[Any]:
        """What a careless extractor adds: hypotheticals, wishes and others' facts stated
        as facts about the user."""
        import re

        from memos.extract import ExtractedFact

        patterns = [(r"If I were (an? [\w ]+?),", "{s} is {0}."),
                    (r"Imagine I had (an? \w+ named \w+)", "{s} has {0}."),
                    (r"I wish I lived in (\w+)", "{s} lives in {0}."),
                    (r"said (?:she|he) just moved to (\w+)", "{s} just moved to {0}."),
                    (r"My coworker \w+ is obsessed with ([\w ]+?)\.", "{s} is obsessed with {0}."),
                    (r"Maybe someday I'll try (\w+)", "{s} loves {0}.")]
        out = []
        for m in inputs:
            if m.role != "user":
                continue
            for pattern, template in patterns:
                hit = re.search(pattern, m.content)
                if hit:
                    text = template.format(hit.group(1), s=m.speaker)
                    out.append(ExtractedFact(
                        text=text, subject=m.speaker or "", attribute="naive", value=text,
                        memory_type="Persona Memory", source_message_id=m.id,
                        span=(0, len(m.content))))
        return out

    def session_memories(self, cube_id: str, session_id: str) -> list[FakeMemory]:
        return [m for m in self.cubes[cube_id] if m.session_id == session_id]

    def search(self, cube_id: str, *, query: str, top_k: int,
               filters: dict[str, Any] | None = None, explain: bool = False) -> Any:
        pool = [m for m in self.cubes[cube_id] if m.status == "active"]
        if filters and filters.get("granularity"):
            pool = [m for m in pool if m.granularity in filters["granularity"]
                    or self.mode == "verbatim"]
        if not pool:
            return SimpleNamespace(hits=[])
        q = self.embedder.embed([dense_query(query, self.user_names.get(cube_id))])[0]
        scores = np.stack([self.vectors[m.id] for m in pool]) @ q
        order = np.argsort(-scores)[:top_k]
        return SimpleNamespace(hits=[SimpleNamespace(unit=pool[i], score=float(scores[i]))
                                     for i in order])


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def embedder() -> OnnxMiniLM:
    return OnnxMiniLM()


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("halumem") / "synth.jsonl"
    halumem_synth.write_jsonl(halumem_synth.generate(seed=7, users=4), path)
    return path


# --------------------------------------------------------------------------- synth
def test_synth_is_deterministic_per_seed() -> None:
    a = json.dumps(halumem_synth.generate(seed=3, users=2))
    b = json.dumps(halumem_synth.generate(seed=3, users=2))
    c = json.dumps(halumem_synth.generate(seed=4, users=2))
    assert a == b
    assert a != c


def test_synth_format_is_halumem(tmp_path: Any) -> None:
    path = halumem_synth.write_jsonl(halumem_synth.generate(seed=5, users=3), tmp_path / "x.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    qtypes, sources, mtypes = set(), set(), set()
    for line in lines:
        user = json.loads(line)
        assert set(user) == {"uuid", "persona_info", "sessions"}
        assert user["persona_info"].startswith("Name: ")
        for s in user["sessions"]:
            halumem_synth.parse_time(s["start_time"])
            assert halumem_synth.parse_time(s["end_time"]) >= halumem_synth.parse_time(
                s["start_time"])
            for turn in s["dialogue"]:
                assert turn["role"] in ("user", "assistant")
                assert turn["content"] and isinstance(turn["dialogue_turn"], int)
                halumem_synth.parse_time(turn["timestamp"])
            for mp in s["memory_points"]:
                assert {"index", "memory_content", "memory_type", "memory_source", "is_update",
                        "original_memories", "importance", "timestamp"} <= set(mp)
                assert mp["is_update"] in ("True", "False")
                assert 0 <= mp["importance"] <= 1
                if mp["is_update"] == "True":
                    assert mp["original_memories"]
                if mp["memory_source"] == "interference":
                    assert mp["reason"] and mp["imitates"]
                sources.add(mp["memory_source"])
                mtypes.add(mp["memory_type"])
            for q in s.get("questions", []):
                qtypes.add(q["question_type"])
                if q["question_type"] == "Memory Boundary":
                    assert q["answer"] == "unknown" and q["evidence"] == []
                else:
                    assert q["evidence"]
    assert qtypes == set(halumem_synth.QUESTION_TYPES)
    assert {"primary", "interference"} <= sources
    assert mtypes == {"Persona Memory", "Event Memory", "Relationship Memory"}


def test_gate_catches_planted_unsupported_facts() -> None:
    planted = [p for r in halumem_synth.generate(seed=11, users=6)
               for p in halumem_synth.planted_facts(r, seed=1)]
    bad = [p for p in planted if not p.supported]
    good = [p for p in planted if p.supported]
    assert len(bad) >= 50 and {p.tamper for p in bad} >= {"number", "name", "negation", "value"}
    caught = sum(not check(p.fact, p.source_text).supported for p in bad) / len(bad)
    passed = sum(check(p.fact, p.source_text).supported for p in good) / len(good)
    assert caught >= 0.9, caught
    assert passed >= 0.9, passed


# --------------------------------------------------------------------------- metric formulas
def test_extraction_metric_formulas() -> None:
    gold = [(2, 1.0), (1, 0.5), (0, 0.5), (2, 2.0)]
    distractors = [0, 0, 2, 1]
    accs = [(2, True), (1, True), (0, False), (2, False)]
    m = extraction_metrics(gold, distractors, accs)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["weighted_recall"] == pytest.approx((1.0 * 1 + 0.5 * 0.5 + 0 + 2.0 * 1) / 4.0)
    assert m["fmr"] == pytest.approx(2 / 4)
    assert m["target_precision"] == pytest.approx((1 + 0.5) / 2)
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    p, r = 0.75, 0.5
    assert m["f1"] == pytest.approx(2 * p * r / (p + r))
    # an unparseable judgement (None) counts as failure, and stays in the denominator
    m2 = extraction_metrics([(None, 1.0), (2, 1.0)], [None], [(None, True)])
    assert m2["recall"] == 0.5 and m2["fmr"] == 0.0 and m2["target_precision"] == 0.0


def test_offline_judge_integrity_and_labels() -> None:
    j = OfflineJudge()
    assert j.integrity("Ana works as a nurse.", ["Ana works as a nurse at a clinic."],
                       subject="Ana").score == 2
    assert j.integrity("Ana ran a marathon on May 7, 2023.",
                       ["Ana ran a marathon on 2023-05-07."], subject="Ana").score == 2
    # a wrong date is at most partial, and flagged as a wrong key field
    wrong = j.integrity("Ana ran a marathon on May 7, 2023.",
                        ["Ana ran a marathon on 2023-05-01."], subject="Ana")
    assert wrong.score == 1 and wrong.wrong_key
    assert j.integrity("Ana lives in Oslo.", ["Ana lives in Berlin."], subject="Ana").score == 0
    # someone else's fact does not count as the user's
    assert j.integrity("Ana enjoys chess.", ["Ana's coworker Tom enjoys chess."],
                       subject="Ana").score == 0
    # the negated fact touches the point but contradicts it: partial at most, as HaluMem's
    # LLM judge scores it (test_halumem_judge_check)
    assert j.integrity("Ana works at Acme.", ["Ana no longer works at Acme."],
                       subject="Ana").score == 1
    # update labels
    assert j.update_label("Ana now lives in Oslo.", ["Ana lives in Berlin."],
                          ["Ana moved to Oslo."], subject="Ana") == "correct"
    assert j.update_label("Ana now lives in Oslo.", ["Ana lives in Berlin."],
                          ["Ana moved to Oslo.", "Ana lives in Berlin."],
                          subject="Ana") == "hallucination"
    assert j.update_label("Ana now lives in Oslo.", ["Ana lives in Berlin."],
                          ["Ana has a dog named Rex."], subject="Ana") == "omission"
    # QA labels
    assert j.qa_label("Where does Ana live?", "Oslo", [], "Ana lives in Oslo.",
                      subject="Ana") == "correct"
    assert j.qa_label("Where does Ana live?", "Oslo", [], "Ana lives in Berlin.",
                      subject="Ana") == "hallucination"
    assert j.qa_label("Where does Ana live?", "Oslo", [], "unknown", subject="Ana") == "omission"
    assert j.qa_label("Ana's goldfish?", "unknown", [], "unknown", subject="Ana") == "correct"
    assert j.qa_label("Ana's goldfish?", "unknown", [], "Bubbles", subject="Ana") == \
        "hallucination"
    assert j.qa_label("When?", "May 7, 2023", [], "Ana ran it on 2023-05-07.",
                      subject="Ana") == "correct"


def test_a_turn_its_facts_already_hold_gives_up_its_context_slot() -> None:
    facts = [Retrieved("f1", "Ana adopted a cat named Miso.", 0.7,
                       {"source_message_id": "m1"}),
             Retrieved("f2", "Ana works as a nurse.", 0.6, {"source_message_id": "m2"})]
    turns = [Retrieved("t1", "I adopted a cat named Miso!", 0.8, {"message_id": "m1"}),
             Retrieved("t2", "I work as a nurse, and the night shifts at St. Mary's wear me "
                             "out more every winter.", 0.7, {"message_id": "m2"}),
             Retrieved("t3", "Miso sleeps on my keyboard.", 0.5, {"message_id": "m3"})]
    # t1 says nothing its fact does not; t2 says more than its fact; t3 has no fact here
    assert [t.id for t in without_sources(turns, facts)] == ["t2", "t3"]
    assert [t.id for t in without_sources(turns, [])] == ["t1", "t2", "t3"]


def test_offline_answerer_prefers_recent_and_says_unknown() -> None:
    hits = [Retrieved("1", "Ana works as a nurse.", 0.9, {"valid_from": "2023-01-01"}),
            Retrieved("2", "Ana works as a teacher.", 0.8, {"valid_from": "2023-06-01"}),
            Retrieved("3", "Ana has a dog named Rex.", 0.5, {})]
    # asked for the present value, the newer of two equally supported memories wins
    assert offline_answer("What does Ana currently work as?", hits, subject="Ana") == \
        "Ana works as a teacher."
    # otherwise support decides: the same words, the better search score
    assert offline_answer("What does Ana work as?", hits, subject="Ana") == \
        "Ana works as a nurse."
    assert offline_answer("What is the name of Ana's goldfish?", hits, subject="Ana") == \
        "unknown"


def test_offline_answerer_needs_a_memory_of_the_asked_answer_type() -> None:
    hits = [Retrieved("1", "Ana moved to Oslo for the new job.", 0.9, {}),
            Retrieved("2", "Ana moved to Oslo in May 2021.", 0.6, {}),
            Retrieved("3", "Ana earns 4,200 a month as a nurse.", 0.5, {})]
    # "when" needs a date: the higher-scored undated memory cannot answer it
    assert offline_answer("When did Ana move to Oslo?", hits, subject="Ana") == \
        "Ana moved to Oslo in May 2021."
    assert offline_answer("How much does Ana earn a month?", hits, subject="Ana") == \
        "Ana earns 4,200 a month as a nurse."
    # a "who" question with no name beyond the question's own: nothing qualifies
    assert offline_answer("Who did Ana move to Oslo with?", hits[:1], subject="Ana") == \
        "unknown"
    # nor the rest of the subject's own name ("Who accompanied Sharon …" is not "Brown")
    class_ = [Retrieved("1", "Sharon Brown recently attended a cooking class.", 0.9, {})]
    assert offline_answer("Who accompanied Sharon to the cooking class?", class_,
                          subject="Sharon Brown") == "unknown"
    # a memory that only repeats a yes/no question confirms it
    assert offline_answer("Did Ana move to Oslo?", [Retrieved("1", "Ana moved to Oslo.",
                                                              0.9, {})], subject="Ana") \
        == "Yes, Ana moved to Oslo."


def test_offline_answerer_answers_yes_no_by_the_memorys_stance() -> None:
    hits = [Retrieved("1", "Ana dislikes romantic comedies.", 0.8, {})]
    assert offline_answer("Did Ana express a liking for romantic comedies?", hits,
                          subject="Ana") == "No, Ana dislikes romantic comedies."
    hits = [Retrieved("1", "Ana does not eat meat anymore.", 0.8, {})]
    assert offline_answer("Does Ana eat meat?", hits, subject="Ana").startswith("No, ")


def test_a_memory_that_neither_confirms_nor_denies_does_not_answer_yes_no() -> None:
    """Quoting a memory on the topic reads as an answer; with no stance it is none."""
    hits = [Retrieved("1", "Ana went to the mountain cabin last weekend.", 0.8, {})]
    question = "Did Ana visit the mountain cabin before a calm season at work?"
    assert offline_answer(question, hits, subject="Ana") == UNKNOWN
    # a turn's sentence that takes the other stance still answers
    turn = Retrieved("t", "Ana was not calm at work when she went to the cabin.", 0.7,
                     {"granularity": "turn"})
    assert offline_answer(question, [*hits, turn], subject="Ana").startswith("No, ")


def test_offline_answerer_tries_facts_before_quoting_a_turn() -> None:
    fact = Retrieved("f", "Ana lives in Oslo.", 0.7, {"granularity": "fact"})
    turn = Retrieved("t", "Thanks! Honestly the commute is long. My sister Mia works at "
                     "the Fjord Bakery downtown.", 0.9, {"granularity": "turn"})
    assert offline_answer("Where does Ana live?", [turn, fact], subject="Ana") == \
        "Ana lives in Oslo."
    # no fact qualifies: the turn's sentence that carries the answer, not the whole turn
    assert offline_answer("Where does Ana's sister Mia work?", [turn, fact],
                          subject="Ana") == "My sister Mia works at the Fjord Bakery downtown."



def test_offline_answerer_does_not_quote_for_a_speculation_or_an_explanation() -> None:
    """A quote answers what a memory says, not what someone might do or how one thing
    changed another: for those the answerer abstains, with the supporting memory there."""
    hits = [Retrieved("1", "Ana loves hiking in the Alps every summer.", 0.8, {}),
            Retrieved("2", "Ana was promoted to team lead at Fjord Bank.", 0.7, {})]
    answered = "Ana loves hiking in the Alps every summer."
    assert offline_answer("What does Ana love doing in the Alps?", hits,
                          subject="Ana") == answered
    for question in ("What might Ana do in the Alps next summer?",
                     "What hobby could Ana take up in the Alps?",
                     "Would Ana likely go hiking in the Alps again?",
                     "How did Ana's promotion at Fjord Bank change her hiking?",
                     "How has Ana's hiking in the Alps changed?",
                     "What role does hiking in the Alps play for Ana?"):
        assert offline_answer(question, hits, subject="Ana") == UNKNOWN, question
    # "how many/much/old/long/often" asks for a quantity; a date in May is no modal verb
    hits = [Retrieved("1", "Ana goes hiking in the Alps 3 times a year.", 0.8, {})]
    assert offline_answer("How often does Ana go hiking in the Alps?", hits,
                          subject="Ana") == "Ana goes hiking in the Alps 3 times a year."
    hits = [Retrieved("1", "Ana moved to Oslo on May 5, 2024.", 0.8, {})]
    assert offline_answer("Where did Ana move on May 5, 2024?", hits,
                          subject="Ana") == "Ana moved to Oslo on May 5, 2024."


def test_offline_answerer_recommends_only_from_a_stated_liking() -> None:
    liked = [Retrieved("1", "Daniel absolutely loves tacos from the corner stand.", 0.8, {})]
    assert offline_answer("Which dish should I cook to make Daniel happy?", liked,
                          subject="Daniel") == liked[0].text
    plain = [Retrieved("1", "Daniel ate a dish of tacos at the market.", 0.8, {})]
    assert offline_answer("Which dish should I cook to make Daniel happy?", plain,
                          subject="Daniel") == UNKNOWN
    # what someone would enjoy is asked as a recommendation, not a speculation
    for question in ("Suggest a weekend dish that Daniel would enjoy.",
                     "What dish might Daniel enjoy at the market?"):
        assert offline_answer(question, liked, subject="Daniel") == liked[0].text, question
        assert offline_answer(question, plain, subject="Daniel") == UNKNOWN, question


def test_offline_answerer_answers_a_favourite_or_an_aversion_only_from_that_stance() -> None:
    course = [Retrieved("1", "Sharon attended a cooking class on international cuisines.",
                        0.8, {})]
    assert offline_answer("What is Sharon's favorite international cuisine?", course,
                          subject="Sharon") == UNKNOWN
    loved = [Retrieved("1", "Sharon's favorite cuisine is Thai food.", 0.8, {})]
    assert offline_answer("What is Sharon's favorite cuisine?", loved,
                          subject="Sharon") == loved[0].text
    prefers = [Retrieved("1", "Sharon prefers sports with more action and excitement.", 0.8,
                         {})]
    assert offline_answer("What sports does Sharon dislike?", prefers,
                          subject="Sharon") == UNKNOWN
    dislikes = [Retrieved("1", "Sharon dislikes slow sports such as golf and cricket.", 0.8,
                          {})]
    assert offline_answer("What sports does Sharon dislike?", dislikes,
                          subject="Sharon") == dislikes[0].text


def test_offline_answerer_answers_a_dated_question_from_that_days_memories() -> None:
    """A question that names a day asks about what was said then: a memory of that day
    answers it before a better-supported one from another day, dialogue sentence or not."""
    older = Retrieved("f", "Ana attended a workshop on pottery glazes.", 0.8,
                      {"granularity": "fact", "observed_at": "2027-03-02T10:00:00+00:00"})
    turn = Retrieved("t", "Thanks for asking. I went to a workshop on puzzle games!", 0.6,
                     {"granularity": "turn", "valid_from": "2027-08-22T18:30:00+00:00"})
    hits = [older, turn]
    assert offline_answer("What workshop did Ana attend on Aug 22, 2027?", hits,
                          subject="Ana") == "I went to a workshop on puzzle games!"
    assert offline_answer("What workshop did Ana attend as of 2027-08-22?", hits,
                          subject="Ana") == "I went to a workshop on puzzle games!"
    # no date, or a day with no memory that answers: the whole context, facts first
    assert offline_answer("What workshop did Ana attend?", hits, subject="Ana") == older.text
    assert offline_answer("What workshop did Ana attend on Mar 2, 2027?", hits,
                          subject="Ana") == older.text
    assert offline_answer("What workshop did Ana attend on Jan 5, 2030?", hits,
                          subject="Ana") == older.text

# --------------------------------------------------------------------------- whole runs
def test_run_halumem_through_test_double(synth_file: Any, embedder: OnnxMiniLM,
                                         tmp_path: Any, capsys: Any) -> None:
    client = FakeMemosClient(embedder)
    report = run_halumem(synth_file, client=client, json_path=tmp_path / "r.json",
                         progress=False)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["judge"] == "offline (approximate)"
    for task, keys in (("extraction", ("recall", "weighted_recall", "target_precision",
                                       "accuracy", "fmr", "f1")),
                       ("update", ("correct", "hallucination", "omission", "other")),
                       ("qa", ("correct", "hallucination", "omission"))):
        for k in keys:
            assert 0.0 <= saved[task][k] <= 1.0, (task, k)
    ex = report["extraction"]
    assert ex["recall"] >= 0.7 and ex["fmr"] >= 0.8, ex
    assert report["update"]["correct"] >= 0.7, report["update"]
    assert report["qa"]["correct"] >= 0.5, report["qa"]
    assert set(report["qa"]["by_question_type"]) == set(halumem_synth.QUESTION_TYPES)
    assert set(ex["by_memory_type"]) == {"Persona Memory", "Event Memory",
                                         "Relationship Memory"}
    assert client.cubes == {}  # every cube is deleted afterwards
    assert "HaluMem" in capsys.readouterr().out
    assert report["qa_search"] == "facts+turns"


def test_the_report_says_what_the_dialogue_itself_states(tmp_path: Any) -> None:
    """Each point judged against the session's own turns: the user states one of the two
    memory points, the assistant the other and the planted distractor."""
    ts = "Sep 04, 2025, 10:00:00"
    record = {"uuid": "u1", "persona_info": "Name: Ana Lima; Age: 30", "sessions": [{
        "start_time": ts,
        "dialogue": [
            {"role": "user", "content": "I work as a nurse at Mercy Hospital.", "timestamp": ts},
            {"role": "assistant", "content": "I remember your sister Mia lives in Lisbon, "
             "and that you play the cello.", "timestamp": ts},
            {"role": "user", "content": "Night shifts are tiring.", "timestamp": ts}],
        "memory_points": [
            {"memory_content": "Ana Lima works as a nurse at Mercy Hospital.",
             "memory_type": "Persona Memory", "is_update": "False",
             "original_memories": [], "importance": 1.0, "memory_source": "primary"},
            {"memory_content": "Ana Lima's sister Mia lives in Lisbon.",
             "memory_type": "Relationship Memory", "is_update": "True",
             "original_memories": ["Ana Lima's sister Mia lives in Porto."],
             "importance": 1.0, "memory_source": "primary"},
            {"memory_content": "Ana Lima plays the cello.", "memory_type": "Persona Memory",
             "is_update": "False", "original_memories": [], "importance": 1.0,
             "memory_source": "interference"}],
        "questions": []}]}
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(record) + "\n")
    report = run_halumem(path, client=FakeMemosClient(HashingEmbedder()), progress=False,
                         print_table=False)
    stated = report["extraction"]["stated_in"]
    assert (stated["user"], stated["any"]) == (0.5, 1.0), stated
    assert stated["by_memory_type"]["Relationship Memory"] == {"user": 0.0, "any": 1.0}
    assert stated["interference"] == {"user": 0.0, "any": 1.0}
    assert report["update"]["stated_in"]["user"] == 0.0
    assert report["update"]["stated_in"]["any"] == 1.0
    # an LLM judge would pay two more calls a point: asked for only
    judge = LLMJudge("gpt-4o-mini", completion_kwargs={"mock_response": '{"score": 0}'})
    llm = run_halumem(path, client=FakeMemosClient(HashingEmbedder()), judge=judge,
                      answer_fn=lambda q, hits: "unknown", progress=False, print_table=False)
    assert llm["extraction"]["stated_in"] is None and llm["update"]["stated_in"] is None
    asked = run_halumem(path, client=FakeMemosClient(HashingEmbedder()), judge=judge,
                        answer_fn=lambda q, hits: "unknown", progress=False,
                        print_table=False, stated_in=True)
    assert asked["extraction"]["stated_in"]["any"] == 0.0  # the mock judge scores all 0


def test_run_halumem_refuses_an_unknown_qa_search(synth_file: Any, embedder: OnnxMiniLM
                                                 ) -> None:
    with pytest.raises(InvalidInput, match="qa_search must be one of facts\\+turns, facts"):
        run_halumem(synth_file, client=FakeMemosClient(embedder), qa_search="turns",
                    progress=False, print_table=False)


def test_bad_systems_score_clearly_worse(tmp_path: Any, embedder: OnnxMiniLM) -> None:
    synth_file = halumem_synth.write_jsonl(halumem_synth.generate(seed=8, users=2),
                                           tmp_path / "bad.jsonl")
    good = run_halumem(synth_file, client=FakeMemosClient(embedder), progress=False,
                       print_table=False)
    verbatim = run_halumem(synth_file, client=FakeMemosClient(embedder, mode="verbatim"),
                           progress=False, print_table=False)
    naive = run_halumem(synth_file, client=FakeMemosClient(embedder, mode="no-gate"),
                        progress=False, print_table=False)
    g, v, n = good["extraction"], verbatim["extraction"], naive["extraction"]
    assert v["fmr"] <= g["fmr"] - 0.3, (g["fmr"], v["fmr"])
    assert n["fmr"] <= g["fmr"] - 0.2, (g["fmr"], n["fmr"])
    assert n["accuracy"] < g["accuracy"], (g["accuracy"], n["accuracy"])
    assert n["target_precision"] < g["target_precision"]
    assert verbatim["update"]["correct"] < good["update"]["correct"]


def test_llm_judge_with_mock_response() -> None:
    judge = LLMJudge("gpt-4o-mini", completion_kwargs={
        "mock_response": '{"score": 2, "reason": "covered"}'})
    assert judge.integrity("Ana works as a nurse.", ["Ana is a nurse."], subject="Ana").score == 2
    bad = LLMJudge("gpt-4o-mini", completion_kwargs={"mock_response": "I think it is fine"})
    assert bad.integrity("x", ["y"], subject="Ana") is None
    assert bad.qa_label("q", "a", [], "a", subject="Ana") is None
    qa = LLMJudge("gpt-4o-mini", completion_kwargs={
        "mock_response": '```json\n{"label": "hallucination", "reason": "contradicts"}\n```'})
    assert qa.qa_label("q", "Oslo", [], "Berlin", subject="Ana") == "hallucination"


def test_run_with_llm_judge_counts_unparseable_as_failure(tmp_path: Any) -> None:
    path = halumem_synth.write_jsonl(halumem_synth.generate(seed=2, users=1, sessions=2),
                                     tmp_path / "one.jsonl")
    judge = LLMJudge("gpt-4o-mini", completion_kwargs={"mock_response": "no json here"})
    report = run_halumem(path, client=FakeMemosClient(HashingEmbedder()), judge=judge,
                         answer_fn=lambda q, hits: "unknown", progress=False,
                         print_table=False)
    assert report["judge"] == "llm:gpt-4o-mini"
    assert report["extraction"]["recall"] == 0.0 and report["extraction"]["fmr"] == 0.0
    assert report["qa"]["correct"] == 0.0 and report["qa"]["unparsed"] == report["qa"]["n"]


def test_cli_hooks(tmp_path: Any) -> None:
    import argparse


    parser = argparse.ArgumentParser()
    add_halumem_commands(parser.add_subparsers())
    out = tmp_path / "s.jsonl"
    args = parser.parse_args(["halumem-synth", "--seed", "1", "--out", str(out), "--users", "2"])
    assert args.func(args) == 0 and len(out.read_text().splitlines()) == 2
    args = parser.parse_args(["halumem", "--data", str(out), "--json", str(tmp_path / "r.json"),
                              "--no-progress"])
    # No --base-url: the command starts a real local memos server and drives it over HTTP.
    assert args.func(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["benchmark"] == "halumem"
    assert "approximate" in report["judge"]
    # Floors a regression in extraction, the gate or updating would break (the real store,
    # ingest pipeline and SDK; 2 generated users).
    assert report["extraction"]["recall"] >= 0.7
    assert report["extraction"]["fmr"] >= 0.8
    assert report["update"]["correct"] >= 0.6
