"""Extraction (rules + LLM through litellm mock_response) and the faithfulness gate."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime

import pytest

from memos.embed import HashingEmbedder
from memos.extract import (
    EXTRACT_PROMPT_VERSION,
    ExtractedFact,
    ExtractInput,
    LLMExtractor,
    RulesExtractor,
    check,
)
from memos.temporal import resolve_relative_time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TS = datetime(2023, 5, 8, 10, 30)  # a Monday


def facts(text: str, *, role: str = "user", speaker: str | None = "Ana",
          ts: datetime | None = TS, **kw: object) -> list[ExtractedFact]:
    msg = ExtractInput(id="m1", role=role, speaker=speaker, content=text, timestamp=ts)
    return RulesExtractor(**kw).extract([msg])  # type: ignore[arg-type]


def one(text: str, **kw: object) -> ExtractedFact:
    out = facts(text, **kw)  # type: ignore[arg-type]
    assert len(out) == 1, [f.text for f in out]
    return out[0]


def test_first_person_resolved_to_speaker() -> None:
    f = one("I moved to Berlin.")
    assert f.text == "Ana moved to Berlin."
    assert (f.subject, f.attribute, f.value) == ("Ana", "city", "berlin")
    assert f.memory_type == "Persona Memory"
    assert f.source_message_id == "m1" and f.span == (0, len("I moved to Berlin."))
    assert f.extractor == "rules" and f.extractor_version == "rules/1"
    assert f.resolved_names == ("Ana",)


def test_possessives_and_relationships() -> None:
    f = one("My sister lives in Paris.")
    assert f.text == "Ana's sister lives in Paris."
    assert f.subject == "Ana's sister" and f.attribute == "city"
    assert f.memory_type == "Relationship Memory"
    g = one("I have a younger sister named Mia.")
    assert (g.attribute, g.value, g.memory_type) == ("sibling", "mia", "Relationship Memory")
    h = one("My brother is called Anton.")
    assert (h.subject, h.attribute, h.value) == ("Ana", "sibling", "Anton")
    assert one("My favorite food is sushi.").text == "Ana's favorite food is sushi."


def test_second_person_and_unknown_speaker() -> None:
    f = one("I told you about my sister yesterday.")
    assert f.text.startswith("Ana told the assistant about Ana's sister")
    g = one("I work as a nurse.", speaker=None, user_name="Bob")
    assert g.text == "Bob works as a nurse."
    h = one("I work as a nurse.", speaker=None)
    assert h.text == "The user works as a nurse."
    # between two people, "you" is the other speaker
    msgs = [ExtractInput("m1", "user", "Mel", "How was the trip?", TS),
            ExtractInput("m2", "user", "Caro", "I told you about my sister last week.", TS)]
    out = RulesExtractor().extract(msgs)
    assert out[0].text.startswith("Caro told Mel about Caro's sister")
    assert set(out[0].resolved_names) == {"Caro", "Mel"}


@pytest.mark.parametrize("expr,start,phrase", [
    ("last week", "2023-05-01", "in the week of 2023-05-01"),
    ("yesterday", "2023-05-07", "on 2023-05-07"),
    ("last year", "2022-01-01", "in 2022"),
    ("next month", "2023-06-01", "in June 2023"),
    ("on Saturday", "2023-05-06", "on 2023-05-06"),
    ("last Friday", "2023-05-05", "on 2023-05-05"),
    ("two days ago", "2023-05-06", "on 2023-05-06"),
    ("in March", "2023-03-01", "in March 2023"),
])
def test_relative_dates(expr: str, start: str, phrase: str) -> None:
    resolved = resolve_relative_time(expr, TS)
    assert resolved is not None
    assert resolved[0].date().isoformat() == start and resolved[2] == phrase


def test_relative_dates_in_facts() -> None:
    f = one("Last week I ran a marathon.")
    assert f.text == "Ana ran a marathon in the week of 2023-05-01."
    assert f.valid_from == datetime(2023, 5, 1)
    assert f.valid_to is not None and f.valid_to.date().isoformat() == "2023-05-07"
    assert f.memory_type == "Event Memory"
    g = one("I visited the Louvre yesterday.")
    assert g.text == "Ana visited the Louvre on 2023-05-07."
    nxt = one("Next month I'm going to Japan.")
    assert nxt.valid_from == datetime(2023, 6, 1)
    # a fronted time with its comma belongs to the clause after it
    assert one("Last week, I ran a marathon.").text == f.text
    assert one("On May 3, 2021, I adopted a cat.").text == "Ana adopted a cat on 2021-05-03."


def test_a_time_with_no_date_to_count_from_is_kept_as_said() -> None:
    for text, want in [("Last week, I ran a marathon.", "Ana ran a marathon last week."),
                       ("I retired last month.", "Ana retired last month."),
                       ("In May, I adopted a cat.", "Ana adopted a cat in May.")]:
        f = one(text, ts=None)
        assert (f.text, f.valid_from, f.time_text) == (want, None, ""), text


def test_a_date_that_names_its_year_needs_no_timestamp() -> None:
    for text, want, start in [
            ("I moved to Berlin in 2019.", "Ana moved to Berlin in 2019.", datetime(2019, 1, 1)),
            ("On May 3, 2021, I adopted a cat.", "Ana adopted a cat on 2021-05-03.",
             datetime(2021, 5, 3)),
            ("The move in 2019 was hard for me.", "The move in 2019 was hard for Ana.",
             datetime(2019, 1, 1))]:
        f = one(text, ts=None)
        assert (f.text, f.valid_from) == (want, start), text


@pytest.mark.parametrize("text", [
    "Hi! How are you?", "Thanks, that's really helpful!", "Good morning!",
    "Can you recommend a good book?", "Do you think I should get a cat?",
    "If I were a pilot, I would fly to Tokyo.", "Imagine I had a dog named Rex.",
    "I wish I lived in Oslo.", "Maybe someday I'll try sushi.",
    "My friend Tom said he moved to Oslo.", "Haha, okay.",
    "If the offer comes through, I'm considering moving to Oslo.",
    "I'm considering whether I could run a marathon.",
    "Good, let me introduce my family.", "Okay, let me tell you about my work.",
])
def test_no_facts_from_greetings_questions_hypotheticals(text: str) -> None:
    assert facts(text) == []


def test_a_consideration_is_a_memory_that_keeps_its_word() -> None:
    assert one("I'm even considering adding golf to my academy's curriculum.").text == (
        "Ana is even considering adding golf to Ana's academy's curriculum.")
    assert one("I've been thinking about moving to Denver.").text == (
        "Ana has been thinking about moving to Denver.")
    assert one("Lately I'm thinking of starting a podcast.").text == (
        "Ana is thinking of starting a podcast.")


def test_a_pronoun_that_points_back_takes_the_sentence_it_points_to() -> None:
    text = ("Yes, the emotional support from friends like Matthew and Linda has been "
            "invaluable. They've really encouraged me when I've faced challenges.")
    f = one(text)
    assert f.text == ("The emotional support from friends like Matthew and Linda has been "
                      "invaluable; they've really encouraged Ana when Ana has faced "
                      "challenges.")
    assert f.span == (0, len(text))  # provenance covers both sentences
    # a sentence about the speaker that stated no fact (a plan) is no antecedent, and a
    # pronoun with nothing before it stays as it is
    they = "They keep Ana grounded and give Ana the calm Ana needs."
    assert one("I'll ask my old teammates for advice. They keep me grounded and give me "
               "the calm I need.").text == they
    assert one("They keep me grounded and give me the calm I need.").text == they


def test_a_sentence_about_the_exchange_is_a_fact_only_with_what_follows() -> None:
    assert facts("Good, let me introduce my family.") == []
    f = one("Good, let me introduce my family. Both parents are deceased, divorced, "
            "one child.")
    assert f.text.endswith("; both parents are deceased, divorced, one child.")
    # what follows the announcement is taken in whatever it opens with, one sentence
    out = facts("Good, let me introduce my family. One parent is deceased, married, one "
                "child. The weather is nice.")
    assert [f.text for f in out] == [
        "Good, let Ana introduce Ana's family; one parent is deceased, married, one child."]


def test_a_clause_joined_to_the_speakers_by_and_or_but_stays_with_it() -> None:
    f = one("Emotional support from colleagues and friends is vital, and I seek "
            "interactions that resonate emotionally.")
    assert f.text == ("Emotional support from colleagues and friends is vital, and Ana seeks "
                      "interactions that resonate emotionally.")
    assert f.span[0] == 0
    # a comma splice runs two statements together; a named attribute stays atomic
    assert one("Life in Munich is pretty good, I live close to the center.").text == (
        "Ana lives close to the center.")
    assert [f.text for f in facts("I love hiking and I also play the guitar.")] == [
        "Ana loves hiking.", "Ana also plays the guitar."]


def test_a_clause_naming_the_speaker_is_about_the_speaker() -> None:
    f = one("The motivation for this goal is Sharon's life in sports.", speaker="Sharon Brown")
    assert f.text == "The motivation for this goal is Sharon's life in sports."
    # a first name with another surname is someone else
    assert facts("Sharon Jackson has been incredible lately.", speaker="Sharon Brown") == []


def test_a_verb_after_a_bare_i_is_conjugated_once() -> None:
    assert one("I need a break from work.").text == "Ana needs a break from work."
    assert one("I love the calm I need to focus.").text == (
        "Ana loves the calm Ana needs to focus.")
    assert one("I agreed to coach the team.").text == "Ana agreed to coach the team."
    # an adverb between "I" and the verb is not conjugated ("onces", "activelies" before)
    assert one("It's amazing how a sport I once disliked has become exciting.").text == (
        "It's amazing how a sport Ana once disliked has become exciting.")
    assert one("The goals I actively pursue matter to me.").text == (
        "The goals Ana actively pursues matter to Ana.")
    assert one("The people I rely on help me.").text == "The people Ana relies on help Ana."


def test_assistant_boilerplate_and_suggestions_produce_nothing() -> None:
    for text in ["I'm happy to help with that!", "You could try pottery sometime.",
                 "So you moved to Berlin? That sounds exciting."]:
        assert facts(text, role="assistant", speaker="assistant") == []
    assert facts("I'm happy to help!", role="assistant", include_assistant=True) == []


def test_retractions_are_negated() -> None:
    f = one("I no longer work at Google.")
    assert f.negated and (f.attribute, f.value) == ("employer", "google")
    assert f.text == "Ana no longer works at Google."
    g = one("I quit my job at Acme.")
    assert g.negated and g.attribute == "employer"


def test_multiple_clauses_and_types() -> None:
    out = facts("I love hiking and I also play the guitar. My dog is called Rex.")
    assert [f.attribute for f in out][:2] == ["hobby", "instrument"]
    assert len({f.span for f in out}) == len(out)
    content = "I love hiking and I also play the guitar."
    assert content[out[1].span[0]:out[1].span[1]] == "I also play the guitar."
    assert content[out[0].span[0]:out[0].span[1]] == "I love hiking"


def test_rules_extractor_is_fast_on_600_turns() -> None:
    lines = ["I moved to Berlin last week and I love hiking.", "Hi! How are you?",
             "My sister Mia works as a nurse in Lisbon.", "If I were rich I'd buy a boat.",
             "Yesterday I visited the Louvre with my brother.", "Can you help me?"]
    msgs = [ExtractInput(id=f"m{i}", role="user" if i % 2 == 0 else "assistant",
                         speaker="Ana", content=lines[i % len(lines)], timestamp=TS)
            for i in range(600)]
    t0 = time.perf_counter()
    out = RulesExtractor().extract(msgs)
    assert time.perf_counter() - t0 < 20
    assert out


# --------------------------------------------------------------------------- gate
def test_gate_supports_faithful_facts() -> None:
    for text in ["I moved to Berlin.", "Last week I ran a marathon.", "I'm 32 years old.",
                 "My sister Mia lives in Paris.", "I no longer work at Google."]:
        f = one(text)
        v = check(f, text[f.span[0]:f.span[1]])
        assert v.supported, (text, v.reasons)
        assert 0 < v.score <= 1 and v.reasons[0].startswith("supported")


def test_gate_rejects_tampered_facts_with_reasons() -> None:
    src = "I'm 32 years old and I live in Berlin."
    f = one("I'm 32 years old.")
    v = check(f.__class__(**{**f.__dict__, "text": "Ana is 35 years old."}), src)
    assert not v.supported and "number 35 not in source" in v.reasons
    v = check("Ana lives in Madrid.", src, aliases=["Ana"])
    assert not v.supported and "name 'Madrid' not in source" in v.reasons
    v = check("Ana does not live in Berlin.", src, aliases=["Ana"])
    assert not v.supported and any(r.startswith("negation mismatch") for r in v.reasons)
    v = check("Ana is a pilot.", "If I were a pilot I would travel.", aliases=["Ana"])
    assert not v.supported and any("hypothetical" in r for r in v.reasons)
    v = check("Ana has a cat named Rex.", "I have a dog named Rex.", aliases=["Ana"])
    assert not v.supported and v.score == 0.0 and "missing: cat" in v.reasons[0]


def test_gate_checks_resolved_dates_and_embedding() -> None:
    f = one("Yesterday I visited the Louvre.")
    assert check(f, "Yesterday I visited the Louvre").supported
    moved = f.__class__(**{**f.__dict__, "valid_from": datetime(2023, 5, 1)})
    v = check(moved, "Yesterday I visited the Louvre")
    assert not v.supported and any("resolves to" in r for r in v.reasons)
    assert not check(f, "I visited the Louvre").supported  # no time expression at all
    v = check("Ana moved to Berlin.", "I moved to Berlin.", aliases=["Ana"],
              embedder=HashingEmbedder(), min_similarity=-1.0)
    assert v.supported and "similarity" in v.checks


# --------------------------------------------------------------------------- LLM extractor
def test_llm_extractor_with_mock_response() -> None:
    content = "I moved to Berlin last week. Hi!"
    payload = {"facts": [
        {"text": "Ana moved to Berlin.", "subject": "Ana", "attribute": "city",
         "value": "Berlin", "memory_type": "Persona Memory", "negated": False,
         "source_id": "m1", "quote": "I moved to Berlin", "valid_from": "2023-05-01",
         "valid_to": None, "confidence": 0.9},
        {"text": "Ana owns a yacht.", "source_id": "m9", "quote": "yacht"},
        {"text": "Ana likes jazz.", "source_id": "m1", "quote": "I like jazz"},
    ]}
    ex = LLMExtractor("gpt-4o-mini", completion_kwargs={"mock_response": json.dumps(payload)})
    msg = ExtractInput(id="m1", role="user", speaker="Ana", content=content, timestamp=TS)
    out = ex.extract([msg])
    assert len(out) == 1
    f = out[0]
    assert f.span == (0, len("I moved to Berlin")) and f.attribute == "city"
    assert f.valid_from == datetime(2023, 5, 1)
    assert f.extractor == "llm:gpt-4o-mini" and f.extractor_version == EXTRACT_PROMPT_VERSION
    assert len(ex.rejected) == 2  # unknown source id, quote not in the turn
    assert check(f, content[f.span[0]:f.span[1]]).supported


def test_llm_extractor_unparseable_response_yields_nothing() -> None:
    ex = LLMExtractor("gpt-4o-mini", completion_kwargs={"mock_response": "sorry, no JSON"})
    msg = ExtractInput(id="m1", role="user", speaker="Ana", content="I moved to Berlin.")
    assert ex.extract([msg]) == [] and ex.rejected == ["unparseable response"]


def test_clauses_that_mention_the_speaker_without_opening_with_them() -> None:
    f = one("Maintaining a balanced diet is essential for my health.")
    assert f.text == "Maintaining a balanced diet is essential for Ana's health."
    assert f.attribute.startswith("about:") and f.subject == "Ana"
    assert f.span == (0, len("Maintaining a balanced diet is essential for my health."))
    g = one("When I travel, I keep a journal of places I like.")
    assert g.text == "When Ana travels, Ana keeps a journal of places Ana likes."
    # a fronted subordinate clause does not split off: the statement stays whole
    h = one("I believe that by doing so, I can create a positive ripple effect.")
    assert h.text.startswith("Ana believes that by doing so, Ana can create")
    # about the listener, or too little content: nothing
    assert facts("Your advice helped my team a lot.") == []
    assert facts("It is my thing.") == []


def test_wants_plans_and_feelings_are_facts_with_their_verb() -> None:
    assert one("I want to learn Spanish.").text == "Ana wants to learn Spanish."
    assert one("I feel proud of my team's progress.").text == \
        "Ana feels proud of Ana's team's progress."
    assert facts("I would love to visit Japan someday.") == []  # irrealis stays out


def test_dislike_is_stated_with_one_verb_and_passes_the_gate() -> None:
    f = one("I don't like to wear cargo pants.")
    assert f.text == "Ana dislikes wearing cargo pants." and not f.negated
    assert check(f, "I don't like to wear cargo pants.").supported
    # "dislikes" still disagrees with an affirmative source
    assert not check("Ana dislikes cargo pants.", "I like cargo pants.", aliases=["Ana"]).supported


def test_assistant_statement_counts_once_the_user_confirms_it() -> None:
    said = ExtractInput(id="a1", role="assistant", speaker="assistant", timestamp=TS,
                        content="You have been training for the marathon since March. "
                                "I recall you also love cycling. You could try yoga too.")
    yes = ExtractInput(id="m2", role="user", speaker="Ana", timestamp=TS,
                       content="Yes, it has been hard work.")
    no = ExtractInput(id="m2", role="user", speaker="Ana", timestamp=TS,
                      content="It has been hard work.")
    out = RulesExtractor().extract([said, yes])
    confirmed = [f for f in out if f.source_message_id == "a1"]
    assert [f.text for f in confirmed] == [
        "Ana has been training for the marathon since March."]
    assert confirmed[0].confirmed_by == "m2" and confirmed[0].span == (0, 52)
    assert not [f for f in RulesExtractor().extract([said, no]) if f.source_message_id == "a1"]
    # "you've" is "Ana has", conjugated once ("Ana hases …" before)
    said = ExtractInput(id="a1", role="assistant", speaker="assistant", timestamp=TS,
                        content="You've also expressed a desire to mentor young athletes.")
    yes = ExtractInput(id="m2", role="user", speaker="Ana", timestamp=TS,
                       content="Yes, mentoring young athletes matters to me.")
    assert [f.text for f in RulesExtractor().extract([said, yes])][0] == (
        "Ana has also expressed a desire to mentor young athletes.")


def test_confirmation_must_address_the_claim() -> None:
    said = ExtractInput(id="a1", role="assistant", speaker="assistant", timestamp=TS,
                        content="You ran the Berlin marathon in April. "
                                "You have also been painting mountain landscapes.")

    def confirmed(reply: str) -> list[str]:
        msg = ExtractInput(id="m2", role="user", speaker="Ana", timestamp=TS, content=reply)
        return [f.text for f in RulesExtractor().extract([said, msg])
                if f.source_message_id == "a1"]

    # the reply names the marathon: that claim is confirmed, the painting one is not
    assert confirmed("Yes, the marathon was tough but I finished it.") == [
        "Ana ran the Berlin marathon in April."]
    # agreement, then talk about something else: nothing is confirmed
    assert confirmed("Absolutely, my new job keeps me busy with spreadsheets and meetings.") == []
    # an agreement that turns into a correction confirms nothing
    assert confirmed("Yes, but it was the Paris marathon.") == []
    # a bare agreement answers the last claim of the turn only
    assert confirmed("Yes, exactly.") == ["Ana has also been painting mountain landscapes."]


def test_a_sentence_that_goes_on_about_a_statement_joins_its_fact() -> None:
    content = ("I've finally retired from my consulting career. It's a mix of relief and "
               "anticipation for what's next. Their support has been invaluable during my move. "
               "My sister lives in Paris. The weather there is lovely in spring.")
    out = RulesExtractor().extract([ExtractInput("m1", "user", "Ana", content, TS)])
    first = out[0]
    assert first.text == ("Ana has finally retired from Ana's consulting career; it's a mix "
                          "of relief and anticipation for what's next; their support has been "
                          "invaluable during Ana's move.")
    assert first.span == (0, content.index(" My sister"))
    assert check(first, content[slice(*first.span)], speakers=["Ana"]).supported
    # a named attribute stays crisp: what follows it is not taken in
    assert [f.text for f in out[1:]] == ["Ana's sister lives in Paris."]


def test_elaboration_needs_an_adjacent_generic_statement() -> None:
    # nothing stated before it: a sentence about "it" alone is no fact about the speaker
    assert facts("It was a lovely evening with great food.") == []
    # a question in between breaks the chain
    content = "I attended a jazz festival. Was it fun? It was loud and crowded all night."
    out = RulesExtractor().extract([ExtractInput("m1", "user", "Ana", content, TS)])
    assert [f.text for f in out] == ["Ana attended a jazz festival."]
