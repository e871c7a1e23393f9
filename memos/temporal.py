"""Dates named in a query, and how close a memory's time is to them.

A question such as "What did Nate cook on 9 November, 2022?" or "Where did Joanna travel
in July 2022?" names a period; the memory it asks about was said in or near that period.
:func:`query_periods` finds absolute calendar references in the text (a day, a month, a
year; a day or month without a year stands for that day or month in any year) and
:func:`time_closeness` scores unit times against them: 1 inside a period, decaying with the
distance outside it, on a scale proportional to the period's length (a day-level reference
is sharper than a year-level one). Relative references ("last week") need the time the
question was asked and are not parsed; neither are seasons ("summer"), whose boundaries
differ by hemisphere and habit.

Times are POSIX seconds (UTC). Higher closeness = nearer, in [0, 1]; an unknown time (NaN)
scores 0.

>>> [p.label for p in query_periods("What did Nate cook on 9 November, 2022?")]
['2022-11-09']
>>> [p.label for p in query_periods("Which spot did Joanna visit in May?")]
['*-05']
>>> query_periods("What may Caroline do next?")
[]
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

__all__ = ["Period", "query_periods", "time_closeness"]

_DAY_S = 86400.0
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9
_FULL = "|".join(name for name in calendar.month_name if name)
_ABBR = "|".join([*(name for name in calendar.month_abbr if name), "Sept"])
# "May" is also a modal verb: a month name must carry a day or a year, or follow a
# preposition ("in May"); an abbreviation must carry a day or a year.
_MONTH = rf"(?P<month>{_FULL}|(?:{_ABBR})\.?)"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_PATTERNS = [
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s*{_YEAR})?\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}\s+{_DAY}(?!\d)(?:\s*,?\s*{_YEAR})?\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b(?:in|during|of|since|until|by|early|late|mid|before|after|around)"
               rf"(?:\s+the)?\s+-?\s*(?P<month>{_FULL})\b", re.IGNORECASE),
    re.compile(rf"\b{_YEAR}\b"),
]


@dataclass(frozen=True)
class Period:
    """A calendar period named in a query: ``year``/``month``/``day``, None = unnamed.

    A period with ``year=None`` is the same day or month in every year. ``label`` is an
    ISO-like rendering (``*`` for a missing year), for explanations.
    """

    year: int | None
    month: int | None
    day: int | None

    @property
    def label(self) -> str:
        y = "*" if self.year is None else f"{self.year:04d}"
        parts = [y] + [f"{x:02d}" for x in (self.month, self.day) if x is not None]
        return "-".join(parts)

    def bounds(self, year: int) -> tuple[float, float]:
        """``[start, end)`` in POSIX seconds for this period in ``year`` (its own if set)."""
        y = self.year if self.year is not None else year
        if self.month is None:
            start, end = datetime(y, 1, 1), datetime(y + 1, 1, 1)
        elif self.day is None:
            start = datetime(y, self.month, 1)
            end = datetime(y + (self.month == 12), self.month % 12 + 1, 1)
        else:
            start = datetime(y, self.month, self.day)
            end = datetime.fromordinal(start.toordinal() + 1)
        return _ts(start), _ts(end)


def _ts(d: datetime) -> float:
    return d.replace(tzinfo=timezone.utc).timestamp()


def _valid(year: int | None, month: int | None, day: int | None) -> bool:
    if month is None or day is None:
        return True
    last = calendar.monthrange(year if year is not None else 2000, month)[1]  # 2000: leap
    return 1 <= day <= last


def query_periods(text: str) -> list[Period]:
    """Absolute calendar periods named in ``text``, in order of appearance, deduplicated.

    Understood: "9 November, 2022", "8th December 2023", "November 9, 2022",
    "December 1,2023", "July 2023", "in May", "2024"; a day or month without a year
    matches that day or month in any year.
    """
    taken = np.zeros(len(text), dtype=bool)
    found: list[tuple[int, Period]] = []
    for pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if taken[m.start():m.end()].any():
                continue
            groups = m.groupdict()
            month = _MONTHS[groups["month"].lower().rstrip(".")] if groups.get("month") else None
            day = int(groups["day"]) if groups.get("day") else None
            year = int(groups["year"]) if groups.get("year") else None
            if not _valid(year, month, day):
                continue
            taken[m.start():m.end()] = True
            found.append((m.start(), Period(year, month, day)))
    out: list[Period] = []
    for _, p in sorted(found, key=lambda x: x[0]):
        if p not in out:
            out.append(p)
    return out


def time_closeness(periods: list[Period], times: np.ndarray, *,
                   scale: float = 0.25, min_scale_days: float = 2.0) -> np.ndarray:
    """How near each time is to the nearest period, in [0, 1] (higher = nearer).

    ``exp(-d / s)`` where ``d`` is the distance from the time to the period (0 inside it)
    and ``s = max(min_scale_days, scale · period length)``: a day decays over a couple of
    days, a month over about a week, a year over a season. ``times`` are POSIX seconds;
    NaN (unknown) scores 0, and so does everything when ``periods`` is empty.

    >>> p = query_periods("on 9 November, 2022")
    >>> t = np.array([_ts(datetime(2022, 11, 9, 13)), _ts(datetime(2022, 12, 9)), np.nan])
    >>> np.round(time_closeness(p, t), 2).tolist()
    [1.0, 0.0, 0.0]
    """
    t = np.asarray(times, dtype=np.float64)
    best = np.zeros(t.shape)
    known = np.isfinite(t)
    if not periods or not known.any():
        return best
    first, last = (datetime.fromtimestamp(float(f(t[known])), timezone.utc).year
                   for f in (np.min, np.max))
    for p in periods:
        for y in ([p.year] if p.year is not None else range(first - 1, last + 2)):
            if not 1 <= y <= 9998:
                continue
            start, end = p.bounds(y)
            s = max(min_scale_days * _DAY_S, scale * (end - start))
            d = np.maximum(start - t, 0.0) + np.maximum(t - end, 0.0)
            best = np.maximum(best, np.where(known, np.exp(-d / s), 0.0))
    return best
