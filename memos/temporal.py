"""Dates: relative dates in what was said, calendar dates in what is asked.

The one date parser of memos, in two halves:

- **Statements** — :data:`TIME_EXPR` finds a time expression in a clause ("last week",
  "yesterday", "three days ago", "on Friday", "in May 2023") and
  :func:`resolve_relative_time` resolves it against when it was said into a closed interval
  ``(valid_from, valid_to)`` of naive datetimes (``valid_to`` is the last microsecond of the
  period) and the phrase a fact states it with. Extraction dates facts with it and the
  faithfulness gate checks those dates with it.
- **Queries** — a question such as "What did Nate cook on 9 November, 2022?" or "Where did
  Joanna travel in July 2022?" names a period; the memory it asks about was said in or near
  that period. :func:`query_periods` finds absolute calendar references in the text (a day,
  a month, a year; a day or month without a year stands for that day or month in any year)
  and :func:`time_closeness` scores unit times against them: 1 inside a period, decaying
  with the distance outside it, on a scale proportional to the period's length (a day-level
  reference is sharper than a year-level one). A query has no time it was said at, so
  relative references ("last week") are not parsed there; neither are seasons ("summer"),
  whose boundaries differ by hemisphere and habit.

Query times are POSIX seconds (UTC). Higher closeness = nearer, in [0, 1]; an unknown time
(NaN) scores 0. Pure: nothing here reads a clock.

>>> resolve_relative_time("last week", datetime(2023, 5, 8))[2]
'in the week of 2023-05-01'
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
from datetime import date, datetime, time, timedelta, timezone

import numpy as np

__all__ = [
    "NUMBER_WORDS",
    "TIME_EXPR",
    "resolve_relative_time",
    "Period",
    "query_periods",
    "without_periods",
    "time_closeness",
]


# --------------------------------------------------------------------------- statements
#: Spelled-out cardinals and their values: the one table of number words, for "three weeks
#: ago" here and for the number check of :func:`memos.extract.text.numbers_in`.
NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}

_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTH_NAMES = ["january", "february", "march", "april", "may", "june", "july", "august",
                "september", "october", "november", "december"]
_MONTH_RE = "|".join(_MONTH_NAMES)
_WEEKDAY_RE = "|".join(_WEEKDAYS)
_NUM_RE = r"\d+|" + "|".join(k for k in NUMBER_WORDS if k not in ("zero", "hundred"))
#: A relative or calendar time expression in a statement ("last week", "three days ago",
#: "on Friday", "in May 2023"); :func:`resolve_relative_time` turns a match into dates.
TIME_EXPR = re.compile(
    r"\b(?:(?:the\s+)?day\s+before\s+yesterday|yesterday|today|tonight|this\s+morning|"
    r"this\s+afternoon|this\s+evening|tomorrow|(?:last|this|next)\s+(?:week|month|year|"
    r"weekend|" + _WEEKDAY_RE + r")|(?:on\s+)?(?:" + _WEEKDAY_RE + r")|(?:" + _NUM_RE +
    r"|a|an)\s+(?:day|week|month|year)s?\s+ago|(?:in|on|last|this|next)?\s*(?:" + _MONTH_RE +
    r")(?:\s+\d{1,2}(?:st|nd|rd|th)?)?(?:,?\s+\d{4})?|in\s+\d{4})\b",
    re.IGNORECASE)


def _day(d: date) -> datetime:
    return datetime.combine(d, time.min)


def _span_days(start: date, days: int) -> tuple[datetime, datetime]:
    return _day(start), _day(start + timedelta(days=days)) - timedelta(microseconds=1)


def _month_start(d: date, months: int) -> date:
    """The first day of the month ``months`` after (or, negative, before) ``d``'s month."""
    years, month0 = divmod(d.month - 1 + months, 12)
    return date(d.year + years, month0 + 1, 1)


def resolve_relative_time(expr: str, ref: datetime | None, *, past: bool = True
                          ) -> tuple[datetime, datetime, str] | None:
    """Resolve a time expression against ``ref`` → ``(valid_from, valid_to, phrase)``.

    ``past`` says whether the clause is in the past tense (it decides whether a bare
    weekday means the last or the next one). ``phrase`` is how the fact text states it.
    Without a ``ref`` (a message with no timestamp) only an expression that names its
    year resolves ("in 2019", "on May 3, 2021", "in March 2020").

    >>> resolve_relative_time("last week", datetime(2023, 5, 8))[2]
    'in the week of 2023-05-01'
    >>> resolve_relative_time("yesterday", datetime(2023, 5, 8))[2]
    'on 2023-05-07'
    >>> resolve_relative_time("in 2019", None)[2], resolve_relative_time("last week", None)
    ('in 2019', None)
    """
    e = re.sub(r"\s+", " ", expr.strip().lower())
    if ref is None:
        named = re.fullmatch(r"in (\d{4})|(?:(?:in|on) )?(?:" + _MONTH_RE + r")"
                             r"(?: \d{1,2}(?:st|nd|rd|th)?)?,? \d{4}", e)
        # a named year needs no date to count from: any reference date gives the same
        return None if named is None else resolve_relative_time(e, datetime(2000, 1, 1),
                                                                 past=past)
    today = ref.date()

    def day(d: date) -> tuple[datetime, datetime, str]:
        a, b = _span_days(d, 1)
        return a, b, f"on {d.isoformat()}"

    def week(d: date) -> tuple[datetime, datetime, str]:
        monday = d - timedelta(days=d.weekday())
        a, b = _span_days(monday, 7)
        return a, b, f"in the week of {monday.isoformat()}"

    def month(d: date) -> tuple[datetime, datetime, str]:
        first = d.replace(day=1)
        a = _day(first)
        b = _day(_month_start(first, 1)) - timedelta(microseconds=1)
        return a, b, f"in {first.strftime('%B %Y')}"

    def year(y: int) -> tuple[datetime, datetime, str]:
        return datetime(y, 1, 1), datetime(y + 1, 1, 1) - timedelta(microseconds=1), f"in {y}"

    if e in ("yesterday",):
        return day(today - timedelta(days=1))
    if e in ("the day before yesterday", "day before yesterday"):
        return day(today - timedelta(days=2))
    if e in ("today", "tonight", "this morning", "this afternoon", "this evening"):
        return day(today)
    if e == "tomorrow":
        return day(today + timedelta(days=1))
    m = re.fullmatch(r"(last|this|next) (week|weekend|month|year)", e)
    if m:
        shift = {"last": -1, "this": 0, "next": 1}[m.group(1)]
        unit = m.group(2)
        if unit == "week":
            return week(today + timedelta(weeks=shift))
        if unit == "weekend":
            saturday = today - timedelta(days=today.weekday()) + timedelta(days=5 + 7 * shift)
            a, b = _span_days(saturday, 2)
            return a, b, f"on the weekend of {saturday.isoformat()}"
        if unit == "month":
            return month(_month_start(today, shift))
        return year(today.year + shift)
    m = re.fullmatch(r"(?:(last|this|next|on) )?(" + _WEEKDAY_RE + ")", e)
    if m:
        target = _WEEKDAYS.index(m.group(2))
        mode = m.group(1) or "on"
        if mode == "last" or (mode == "on" and past):
            delta = (today.weekday() - target) % 7 or 7
            return day(today - timedelta(days=delta))
        if mode == "this":
            return day(today - timedelta(days=today.weekday()) + timedelta(days=target))
        delta = (target - today.weekday()) % 7 or 7
        return day(today + timedelta(days=delta))
    m = re.fullmatch(r"(" + _NUM_RE + r"|a|an) (day|week|month|year)s? ago", e)
    if m:
        raw = m.group(1)
        n = 1 if raw in ("a", "an") else int(raw) if raw.isdigit() else NUMBER_WORDS[raw]
        unit = m.group(2)
        if unit == "day":
            return day(today - timedelta(days=n))
        if unit == "week":
            return week(today - timedelta(weeks=n))
        if unit == "month":
            return month(_month_start(today, -n))
        return year(today.year - n)
    m = re.fullmatch(r"in (\d{4})", e)
    if m:
        return year(int(m.group(1)))
    m = re.fullmatch(r"(?:(in|on|last|this|next) )?(" + _MONTH_RE +
                     r")(?: (\d{1,2})(?:st|nd|rd|th)?)?(?:,? (\d{4}))?", e)
    if m:
        mon = _MONTH_NAMES.index(m.group(2)) + 1
        if m.group(4):
            yr = int(m.group(4))
        elif m.group(1) == "next" or (not past and m.group(1) != "last"):
            yr = today.year if mon >= today.month else today.year + 1
        else:
            yr = today.year if mon <= today.month else today.year - 1
        if m.group(3):
            try:
                return day(date(yr, mon, int(m.group(3))))
            except ValueError:
                return None
        return month(date(yr, mon, 1))
    return None


# --------------------------------------------------------------------------- queries
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
    # ISO 8601: "2027-09-20", "2027-09"
    re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<month>0[1-9]|1[0-2])(?:-(?P<day>[0-3]\d))?\b"),
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
    "December 1,2023", "July 2023", "in May", "2024", ISO "2022-11-09" and "2022-11"; a
    day or month without a year matches that day or month in any year.
    """
    out: list[Period] = []
    for _, _, p in _period_spans(text):
        if p not in out:
            out.append(p)
    return out


def without_periods(text: str) -> str:
    """``text`` with the calendar references :func:`query_periods` finds blanked out: what
    a question asks about, apart from when ("What did Ana cook on 9 November, 2022?" →
    "What did Ana cook on  ?").

    >>> without_periods("What does Ana dislike as of Sep 06, 2025?")
    'What does Ana dislike as of  ?'
    """
    out, end = [], 0
    for start, stop, _ in _period_spans(text):
        out.append(text[end:start] + " ")
        end = stop
    return "".join(out) + text[end:]


def _period_spans(text: str) -> list[tuple[int, int, Period]]:
    """(start, end, period) of each calendar reference in ``text``, in order."""
    taken = np.zeros(len(text), dtype=bool)
    found: list[tuple[int, int, Period]] = []
    for pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if taken[m.start():m.end()].any():
                continue
            groups = m.groupdict()
            name = (groups.get("month") or "").lower().rstrip(".")
            month = (int(name) if name.isdigit() else _MONTHS[name]) if name else None
            day = int(groups["day"]) if groups.get("day") else None
            year = int(groups["year"]) if groups.get("year") else None
            if not _valid(year, month, day):
                continue
            taken[m.start():m.end()] = True
            found.append((m.start(), m.end(), Period(year, month, day)))
    return sorted(found, key=lambda x: x[0])


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
