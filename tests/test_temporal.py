"""Dates named in queries and the time closeness the router adds for them."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from memos.temporal import Period, query_periods, time_closeness, without_periods


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(("text", "labels"), [
    ("What did Nate cook on 9 November, 2022?", ["2022-11-09"]),
    ("Which book did Tim finish on 8th December, 2023?", ["2023-12-08"]),
    ("How many tournaments had Nate won by July 10, 2022?", ["2022-07-10"]),
    ("Where was the picture shared on December 1,2023 taken?", ["2023-12-01"]),
    ("Where did Joanna travel to in July 2022?", ["2022-07"]),
    ("Which outdoor spot did Joanna visit in May?", ["*-05"]),
    ("What charity event did John organize in 2024?", ["2024"]),
    ("Where was John between August 11 and August 15 2023?", ["*-08-11", "2023-08-15"]),
    ("Sept 3 2021 and the 3rd of March", ["2021-09-03", "*-03-03"]),
    ("What happened on 31 February, 2023?", ["2023-02"]),  # no such day: the month
    ("What was her health status as of 2027-09-20?", ["2027-09-20"]),  # ISO 8601
    ("Her income in 2027-09 and on 2024-02-30", ["2027-09", "2024"]),
    # no date: a modal "may", a month word without a day, year or preposition
    ("What may Caroline do next?", []),
    ("Who did Melanie march with?", []),
])
def test_query_periods(text, labels):
    assert [p.label for p in query_periods(text)] == labels


def test_without_periods_blanks_exactly_the_dates_query_periods_reads():
    assert without_periods("What did Nate cook on 9 November, 2022?").split() == [
        "What", "did", "Nate", "cook", "on", "?"]
    assert without_periods("On 2027-09-20, did Ana quit?").split() == [
        "On", ",", "did", "Ana", "quit?"]
    # a modal "may" is no date, so it stays
    assert without_periods("What may Caroline do next?") == "What may Caroline do next?"


def test_closeness_is_one_inside_and_decays_outside():
    day = query_periods("on 9 November, 2022")
    t = np.array([_ts(2022, 11, 9, 13), _ts(2022, 11, 10, 12), _ts(2022, 11, 14),
                  _ts(2023, 11, 9), np.nan])
    c = time_closeness(day, t)
    assert c[0] == 1.0 and 1.0 > c[1] > c[2] > c[3] >= 0
    assert c[4] == 0.0  # an unknown time never matches
    # a month decays more slowly than a day: ten days out still counts
    month = query_periods("in November 2022")
    assert time_closeness(month, np.array([_ts(2022, 12, 10)]))[0] > 0.2
    assert time_closeness(day, np.array([_ts(2022, 11, 21)]))[0] < 0.01


def test_a_period_without_a_year_matches_every_year():
    p = [Period(None, 5, None)]
    t = np.array([_ts(2021, 5, 20), _ts(2023, 5, 2), _ts(2023, 9, 1)])
    assert time_closeness(p, t).round(3).tolist()[:2] == [1.0, 1.0]
    assert time_closeness(p, t)[2] < 0.01


def test_nothing_to_match_scores_zero():
    t = np.array([_ts(2022, 1, 1)])
    assert time_closeness([], t).tolist() == [0.0]
    assert time_closeness(query_periods("in 2022"), np.array([np.nan])).tolist() == [0.0]
