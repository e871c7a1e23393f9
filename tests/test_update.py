"""ADD / UPDATE / DELETE / NOOP decisions, idempotent replay, and the LLM updater."""

from __future__ import annotations

import itertools
import json
import os
from datetime import datetime

from memos.extract import (
    Action,
    ActiveFact,
    ExtractedFact,
    ExtractInput,
    LLMUpdater,
    RulesExtractor,
    RulesUpdater,
    candidates_for,
    ingest_plan,
    plan,
)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def fact(text: str, ts: datetime, mid: str = "m1") -> ExtractedFact:
    out = RulesExtractor().extract([ExtractInput(mid, "user", "Ana", text, ts)])
    assert len(out) == 1, [f.text for f in out]
    return out[0]


def stored(f: ExtractedFact, id: str) -> ActiveFact:
    return ActiveFact.from_metadata(id, f.text, f.metadata())


T1, T2, T3 = datetime(2023, 1, 5), datetime(2023, 3, 5), datetime(2023, 6, 5)


def decided(text: str, mid: str, known: list[ActiveFact]) -> tuple[Action, str | None]:
    """The action and target the rules updater decides for ``text`` said at T2."""
    new = fact(text, T2, mid=mid)
    d = RulesUpdater().decide(new, candidates_for(new, known))
    return d.action, d.target_fact_id


def test_add_when_nothing_known() -> None:
    d = RulesUpdater().decide(fact("I live in Berlin.", T1), [])
    assert d.action is Action.ADD and d.target_fact_id is None


def test_update_supersedes_single_valued_attribute() -> None:
    old = stored(fact("I live in Berlin.", T1), "f1")
    new = fact("I moved to Munich.", T2)
    d = RulesUpdater().decide(new, candidates_for(new, [old]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f1"
    assert d.valid_to == T2  # the old value stopped being true when the new one began
    assert "berlin" in d.reason and "munich" in d.reason


def test_multi_valued_attribute_adds() -> None:
    old = stored(fact("I love hiking.", T1), "f1")
    new = fact("I love pottery.", T2)
    assert RulesUpdater().decide(new, candidates_for(new, [old])).action is Action.ADD


def test_noop_for_known_fact() -> None:
    old = stored(fact("I live in Berlin.", T1), "f1")
    new = fact("I'm living in Berlin.", T2)
    d = RulesUpdater().decide(new, candidates_for(new, [old]))
    assert d.action is Action.NOOP and d.target_fact_id == "f1"


def test_delete_on_explicit_retraction() -> None:
    old = stored(fact("I work at Google.", T1), "f1")
    for text in ["I no longer work at Google.", "I quit my job at Google."]:
        new = fact(text, T2)
        d = RulesUpdater().decide(new, candidates_for(new, [old]))
        assert d.action is Action.DELETE and d.target_fact_id == "f1", text
        assert d.valid_to == T2
    # a retraction of something never stored is kept as a negative fact
    new = fact("I no longer work at Meta.", T2)
    assert RulesUpdater().decide(new, candidates_for(new, [old])).action is Action.ADD
    # no longer working as something ends that job
    nurse = stored(fact("I work as a nurse at St. Mary's.", T1), "f2")
    for text in ["I no longer work as a nurse.", "I stopped working as a nurse.",
                 "I don't work as a nurse anymore."]:
        new = fact(text, T2)
        assert (new.attribute, new.negated) == ("job", True), text
        d = RulesUpdater().decide(new, candidates_for(new, [nurse]))
        assert d.action is Action.DELETE and d.target_fact_id == "f2", text


def test_leaving_an_employer_ends_the_job_held_there() -> None:
    job = stored(fact("I work at Partnership Enterprise as a Senior Consultant.", T1), "f1")
    other = stored(fact("I work as a volunteer coach.", T1), "f2")
    for text in ["I quit my job at Partnership Enterprise.",
                 "I've finally retired from my role as Senior Consultant at Partnership "
                 "Enterprise.",
                 "I stepped down from my position at Partnership Enterprise."]:
        new = fact(text, T2)
        assert new.negated and new.attribute == "employer", text
        d = RulesUpdater().decide(new, candidates_for(new, [job, other]))
        assert d.action is Action.DELETE and d.target_fact_id == "f1", text
        assert d.valid_to == T2
    # leaving somewhere else ends neither
    new = fact("I quit my job at Meta.", T2)
    assert RulesUpdater().decide(new, candidates_for(new, [job, other])).action is Action.ADD
    # retiring from a sport names no employer: no retraction
    assert not fact("I retired from baseball.", T2).negated


def test_retiring_ends_the_job_and_the_employment_status() -> None:
    job = stored(fact("I work at Partnership Enterprise as a Senior Consultant.", T1), "f1")
    status = stored(fact("I am currently employed, working in the technology industry.", T1),
                    "f2")
    hobby = stored(fact("I love hiking.", T1), "f3")
    for text in ["I've finally made the decision to retire from my role as Senior Consultant "
                 "at Partnership Enterprise.", "I retired last month.", "I'm retired now."]:
        new = fact(text, T2)
        d = RulesUpdater().decide(new, candidates_for(new, [job, status, hobby]))
        assert (d.action, d.target_fact_id, d.also_ends) == (Action.DELETE, "f1", ("f2",)), text
        assert d.valid_to == (new.valid_from or T2)  # "last month": February
        # with the job already ended, the status alone
        d = RulesUpdater().decide(new, candidates_for(new, [status, hobby]))
        assert (d.action, d.target_fact_id, d.also_ends) == (Action.DELETE, "f2", ()), text
    # a retirement on the way to something else, or from a sport, ends nothing
    for text in ["After retiring from baseball, I moved into the technology industry.",
                 "I retired from baseball."]:
        new = fact(text, T2)
        d = RulesUpdater().decide(new, candidates_for(new, [status, hobby]))
        assert d.action is Action.ADD, (text, d)
    # plan() drops both from the active set
    new = fact("I retired last month.", T2)
    _, active = plan([new], [job, status, hobby], RulesUpdater(), id_factory=lambda f: "f4")
    assert [a.id for a in active] == ["f3"]


def test_a_consideration_ends_nothing() -> None:
    job = stored(fact("I work at Acme as an engineer.", T1), "f1")
    coffee = stored(fact("I love coffee.", T1), "f2")
    for text in ["I'm thinking about quitting my job at Acme.",
                 "I'm considering switching from coffee to tea.",
                 "I'm considering retiring from my role at Acme."]:
        new = fact(text, T2)
        d = RulesUpdater().decide(new, candidates_for(new, [job, coffee]))
        assert d.action is Action.ADD and "consideration" in d.reason, (text, d)


def test_the_same_value_with_more_said_is_kept_and_ends_with_it() -> None:
    first = stored(fact("I got promoted to Head of Social Initiatives.", T1), "f1")
    again = fact("I've been promoted to Head of Social Initiatives, and it's been quite a "
                 "journey balancing my career with managing Chronic Fatigue Syndrome.", T2)
    d = RulesUpdater().decide(again, candidates_for(again, [first]))
    assert d.action is Action.ADD and "more said" in d.reason
    # a bare repeat is still known already
    repeat = fact("I was promoted to Head of Social Initiatives.", T2)
    assert RulesUpdater().decide(repeat, candidates_for(repeat, [first])).action is Action.NOOP
    # the next job ends both statements of this one
    second = stored(again, "f2")
    new = fact("I got promoted to Director of Social Initiatives.", T3)
    d = RulesUpdater().decide(new, candidates_for(new, [first, second]))
    assert (d.action, d.target_fact_id, d.also_ends) == (Action.UPDATE, "f2", ("f1",))
    # and a retraction ends every statement of what it retracts
    new = fact("I'm no longer Head of Social Initiatives.", T3)
    d = RulesUpdater().decide(new, candidates_for(new, [first, second]))
    assert d.action is Action.DELETE and {d.target_fact_id, *d.also_ends} == {"f1", "f2"}


def test_older_value_never_overwrites_newer() -> None:
    current = stored(fact("I moved to Munich.", T3), "f2")
    stale = fact("I live in Berlin.", T1)
    d = RulesUpdater().decide(stale, candidates_for(stale, [current]))
    assert d.action is Action.NOOP and "older" in d.reason


def test_replaying_a_session_is_idempotent() -> None:
    sessions = [
        (T1, ["I live in Berlin.", "I work as a nurse.", "I have a dog named Rex.",
              "I love hiking and I also play the guitar."]),
        (T2, ["I moved to Munich.", "I got a new job as a teacher.",
              "Last week I ran a marathon."]),
        (T3, ["I no longer work at the school.", "My sister Mia lives in Paris."]),
    ]
    counter = itertools.count()
    updater = RulesUpdater()
    active: list[ActiveFact] = []
    first_run = []
    for ts, lines in sessions:
        msgs = [ExtractInput(f"{ts.date()}-{i}", "user", "Ana", line, ts)
                for i, line in enumerate(lines)]
        decisions, active = plan(RulesExtractor().extract(msgs), active, updater,
                                 id_factory=lambda f: f"f{next(counter)}")
        first_run += [d.action for _, d in decisions]
    assert Action.UPDATE in first_run
    snapshot = sorted(a.text for a in active)
    assert "Ana lives in Munich." not in snapshot  # "moved to" is the stored wording
    assert any("Munich" in t for t in snapshot) and not any("Berlin" in t for t in snapshot)
    # replay every session, in order: nothing changes
    for ts, lines in sessions:
        msgs = [ExtractInput(f"{ts.date()}-{i}", "user", "Ana", line, ts)
                for i, line in enumerate(lines)]
        decisions, active = plan(RulesExtractor().extract(msgs), active, updater,
                                 id_factory=lambda f: f"f{next(counter)}")
        assert all(d.action is Action.NOOP for _, d in decisions), decisions
    assert sorted(a.text for a in active) == snapshot


def test_llm_updater_with_mock_response_and_fallback() -> None:
    old = stored(fact("I live in Berlin.", T1), "f1")
    new = fact("I moved to Munich.", T2)
    answer = {"action": "UPDATE", "target_id": "f1", "reason": "moved"}
    llm = LLMUpdater("gpt-4o-mini", completion_kwargs={"mock_response": json.dumps(answer)})
    d = llm.decide(new, [old])
    assert d.action is Action.UPDATE and d.target_fact_id == "f1" and d.valid_to == T2
    assert d.reason.startswith("LLM (gpt-4o-mini)")
    bad = LLMUpdater("gpt-4o-mini", completion_kwargs={"mock_response": "hmm"})
    d = bad.decide(new, [old])
    assert d.action is Action.UPDATE and d.reason.startswith("LLM answer unparseable")
    wrong_id = LLMUpdater("gpt-4o-mini", completion_kwargs={"mock_response": json.dumps(
        {"action": "DELETE", "target_id": "nope"})})
    assert "unknown" in wrong_id.decide(new, [old]).reason
    # an exact duplicate never reaches the model
    dup = fact("I live in Berlin.", T1)
    assert LLMUpdater("x", completion=lambda **kw: 1 / 0).decide(dup, [old]).action is \
        Action.NOOP


def test_ingest_plan_gates_then_decides() -> None:
    class Tamper:
        """An extractor that hallucinates: it changes the city it read."""

        name, version = "tamper", "1"

        def extract(self, messages, *, session_time=None):  # type: ignore[no-untyped-def]
            out = RulesExtractor().extract(messages, session_time=session_time)
            return out + [ExtractedFact(**{**out[0].__dict__, "text": "Ana moved to Madrid."})]

    msgs = [ExtractInput("m1", "user", "Ana", "I moved to Berlin.", T1)]
    planned = ingest_plan(msgs, [], extractor=Tamper())
    assert [p.status for p in planned] == ["active", "quarantined"]
    assert planned[0].decision is not None and planned[0].decision.action is Action.ADD
    assert "Madrid" in planned[1].status_reason and planned[1].decision is None
    # replay against what was stored: NOOP, nothing new to store
    stored_fact = ActiveFact.from_metadata("u1", planned[0].fact.text, planned[0].fact.metadata())
    again = ingest_plan(msgs, [stored_fact], extractor=RulesExtractor())
    assert [p.status for p in again] == ["noop"]
    assert again[0].decision is not None and again[0].decision.target_fact_id == "u1"


def test_own_attribute_value_is_single_valued() -> None:
    old = stored(fact("My monthly income is 15,700 USD.", T1), "f1")
    new = fact("My monthly income is now 18,000 USD.", T2)
    assert new.attribute == old.attribute == "own:monthli_incom"
    assert new.value == "18,000 usd"
    d = RulesUpdater().decide(new, candidates_for(new, [old]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f1" and d.valid_to == T2
    same = fact("My monthly income is 15,700 USD.", T3, mid="m3")
    assert RulesUpdater().decide(same, candidates_for(same, [old])).action is Action.NOOP
    # a change told in the past tense sets the value too, the new one ("to …")
    for text, value in [("With the promotion, my monthly income rose to 18,000 USD.",
                         "18,000 usd"),
                        ("My monthly income has increased to 18,000 USD.", "18,000 usd"),
                        ("After retiring, my monthly income decreased from 15,700 to 5,000 "
                         "USD.", "5,000 usd")]:
        new = fact(text, T2)
        assert (new.attribute, new.value) == ("own:monthli_incom", value), text
        d = RulesUpdater().decide(new, candidates_for(new, [old]))
        assert d.action is Action.UPDATE and d.target_fact_id == "f1", text


def test_promotion_sets_the_job() -> None:
    old = stored(fact("I work as a director at Acme.", T1), "f1")
    new = fact("I've just been promoted to senior director at Acme.", T2)
    assert (new.attribute, new.value) == ("job", "senior director")
    d = RulesUpdater().decide(new, candidates_for(new, [old]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f1"


def test_a_description_does_not_replace_a_quantity() -> None:
    # "my income is 11800 USD … my income is stable": two aspects, both kept
    amount = stored(fact("My monthly income is 11800 USD.", T1), "f1")
    described = fact("My monthly income is stable.", T1, mid="m2")
    d = RulesUpdater().decide(described, candidates_for(described, [amount]))
    assert d.action is Action.ADD and "another aspect" in d.reason
    # a later amount replaces the amount, not the description
    desc = stored(described, "f2")
    raise_ = fact("My monthly income is now 12,000 USD.", T2, mid="m3")
    d = RulesUpdater().decide(raise_, candidates_for(raise_, [amount, desc]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f1"


def test_income_and_monthly_income_are_one_attribute() -> None:
    old = stored(fact("My monthly income is 11800 USD.", T1), "f1")
    new = fact("My income is now $12,000.", T2)
    assert new.attribute == "own:incom" and old.attribute == "own:monthli_incom"
    d = RulesUpdater().decide(new, candidates_for(new, [old]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f1" and d.valid_to == T2
    # two different attributes that share a word stay apart
    body = stored(fact("My physical health is normal.", T1), "f2")
    mind = fact("My mental health is stable.", T2)
    assert RulesUpdater().decide(mind, candidates_for(mind, [body])).action is Action.ADD


def test_a_long_description_does_not_replace_another() -> None:
    old = stored(fact("My social network has been incredibly supportive of my new career.",
                      T1), "f1")
    new = fact("My social network has been instrumental in supporting my health journey.", T2)
    d = RulesUpdater().decide(new, candidates_for(new, [old]))
    assert d.action is Action.ADD and "description" in d.reason


def test_a_preference_turned_around_supersedes_the_old_one() -> None:
    dislike = stored(fact("I don't like to play puzzle games.", T1), "f1")
    other = stored(fact("I don't like to eat spicy food.", T1, mid="m0"), "f0")
    assert dislike.text == "Ana dislikes playing puzzle games."
    now = fact("I have started to appreciate puzzle games for their strategy.", T2, mid="m2")
    cands = candidates_for(now, [dislike, other])
    assert [c.id for c in cands] == ["f1"]  # found whatever attribute each was keyed by
    d = RulesUpdater().decide(now, cands)
    assert d.action is Action.UPDATE and d.target_fact_id == "f1" and d.valid_to == T2
    assert "turned around" in d.reason
    # the other way: a liking that fades
    likes = stored(fact("I like rock music, because it energizes me.", T1), "f3")
    fades = fact("My interest in rock music has decreased.", T3, mid="m3")
    d = RulesUpdater().decide(fades, candidates_for(fades, [likes]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f3"
    # excitement about what was disliked turns it around too
    pants = stored(fact("I don't like to wear cargo pants.", T1, mid="m6"), "f6")
    keen = fact("I'm really excited about adding these stylish cargo pants to my wardrobe.",
                T3, mid="m7")
    d = RulesUpdater().decide(keen, candidates_for(keen, [pants]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f6"
    # a dislike of something else that names it is no reversal
    jazz = fact("I dislike jazz because it sounds nothing like rock music.", T3, mid="m4")
    assert RulesUpdater().decide(jazz, candidates_for(jazz, [likes])).action is Action.ADD


def test_taking_something_off_a_list_of_dislikes_or_likes_ends_that_stance() -> None:
    sodas = stored(fact("I dislike sugary sodas because they feel overly sweet.", T1), "f1")
    jogging = stored(fact("I love jogging.", T1, mid="m0"), "f0")
    known = [sodas, jogging]

    assert decided("Removing sugary sodas from my disliked list is part of this shift.",
                   "m2", known) == (Action.UPDATE, "f1")
    assert decided("I took jogging off my list of favourites.", "m3", known) == (
        Action.UPDATE, "f0")
    # a list of the same leaning, or something else taken off, ends nothing
    assert decided("I took sugary sodas off my shopping list.", "m4", known)[0] is Action.ADD
    assert decided("I removed the old photos from my phone.", "m5", known)[0] is Action.ADD


def test_a_stance_called_past_supersedes_it() -> None:
    bowling = stored(fact("I dislike bowling, because it is slow.", T1), "f1")
    rock = stored(fact("I like rock music.", T1, mid="m0"), "f0")
    known = [bowling, rock]

    assert decided("The league has been thrilling, altering my previous dislike for "
                   "bowling.", "m2", known) == (Action.UPDATE, "f1")
    assert decided("I was initially skeptical about bowling, but the league changed "
                   "that.", "m3", known) == (Action.UPDATE, "f1")
    assert decided("I used to love rock music.", "m4", known) == (Action.UPDATE, "f0")
    assert decided("I no longer dislike bowling.", "m7", known) == (Action.UPDATE, "f1")
    # a past stance on something else, or the same stance named as past, ends nothing
    assert decided("My previous dislike for golf is gone.", "m5", known)[0] is Action.ADD
    assert decided("My old love for rock music keeps growing.", "m6", known)[0] is not Action.UPDATE


def test_a_stated_change_ends_the_state_it_left() -> None:
    boston = stored(fact("I live in Boston.", T1), "f1")
    trips = stored(fact("I like road trips across Canada.", T1, mid="m0"), "f0")
    body = stored(fact("My physical health is normal.", T1, mid="m5"), "f5")
    pressure = stored(fact("My blood pressure is normal.", T1, mid="m6"), "f6")
    known = [boston, trips, body, pressure]

    def changed(text: str, mid: str) -> tuple[Action, str | None]:
        new = fact(text, T2, mid=mid)
        d = RulesUpdater().decide(new, candidates_for(new, known))
        if d.action is Action.UPDATE:
            assert d.valid_to == T2 and "changed from" in d.reason
        return d.action, d.target_fact_id

    # the move is keyed as an event, the home as a city: found whatever the keys
    assert changed("I moved from Boston to Chicago.", "m2") == (Action.UPDATE, "f1")
    assert changed("My preferences have shifted from road trips across Canada to "
                   "international travel.", "m3") == (Action.UPDATE, "f0")
    # one word changed from: only the state with that value and the same topic
    assert changed("My physical health changed from normal to affected.", "m4") == (
        Action.UPDATE, "f5")
    # a change away from something never stated, or a past change, ends nothing
    assert changed("I moved from Denver to Austin.", "m7")[0] is Action.ADD
    moved = stored(fact("I moved to Boston from Denver.", T1, mid="m8"), "f8")
    new = fact("I transitioned from Boston to remote work.", T2, mid="m9")
    assert RulesUpdater().decide(new, candidates_for(new, [moved])).action is Action.ADD


def test_work_at_a_place_as_a_role_is_the_job_a_promotion_replaces() -> None:
    old = stored(fact("I work at Oracle as a manager.", T1), "f1")
    assert (old.attribute, old.value) == ("job", "manager")
    new = fact("I've just been promoted to senior manager at Oracle.", T2)
    d = RulesUpdater().decide(new, candidates_for(new, [old]))
    assert d.action is Action.UPDATE and d.target_fact_id == "f1"
