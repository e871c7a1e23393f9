"""How well the retrieved memory covers a query: a calibrated ``coverage`` in [0, 1].

:func:`query_coverage` turns retrieval signals into one number, the estimated share of the
memory points a question's answer rests on that the hits hold (0 = nothing relevant was
found, 1 = all of it), so a caller can tell "the answer is in memory" from "memory has
nothing on this" before it answers. The signals are lexical: the share of the query's
content words (stemmed, stopwords out, see :class:`memos.lexical.Analyzer`) that the best
of the top :data:`TOP_HITS` hits contains (``lexical_best``) and that the top three
together contain (``lexical_top3``). A word that most of the hits share (the cube's user
name, say) tells nothing about this query and is left out when at least
:data:`MIN_HITS_FOR_COMMON` hits came back. The hits' scores are not used: router scores
are not comparable across queries, and on the development users the best dense cosine did
not predict evidence coverage (Spearman ≈ 0; README, "Honest answers").

A logistic model maps the signals to the coverage (:data:`CALIBRATION`). Its weights were
fitted with ``memos eval halumem-calibrate`` on the two HaluMem development users (3 and
12) against the offline judge's evidence coverage of each question (the share of its
evidence points the judge scores fully covered by the hits; 0 for a question whose answer
is not in the dialogues), and checked leave-one-user-out. The signals are properties of the
query and the hits, not of one extractor, so the model carries over to other extractors as
far as the hits do; it is an approximation and is documented as one.

>>> query_coverage("Where does Ana work?", [])
0.0
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from memos.lexical import Analyzer

__all__ = ["Calibration", "CALIBRATION", "TOP_HITS", "MIN_HITS_FOR_COMMON", "COMMON_SHARE",
           "signals", "query_coverage", "FEATURES"]

#: The hits whose words count for ``lexical_best``.
TOP_HITS = 5
#: With at least this many hits, a word in :data:`COMMON_SHARE` of them is left out.
MIN_HITS_FOR_COMMON = 5
COMMON_SHARE = 0.6
#: Signal names, in the order the calibration's weights use them.
FEATURES = ("lexical_best", "lexical_top3")


@dataclass(frozen=True)
class Calibration:
    """Logistic weights: coverage = σ(intercept + Σ weight · signal) over :data:`FEATURES`."""

    weights: tuple[float, ...]  # intercept, then one weight per FEATURES
    source: str


#: Fitted by ``memos eval halumem-calibrate`` on the traces of HaluMem users 3 and 12
#: (``memos eval halumem --trace``, rules extractor, offline judge; README, "Honest answers").
CALIBRATION = Calibration(weights=(-1.4849, 1.446, -0.1588),
                          source="halumem-calibrate on HaluMem dev users 3 and 12")


@functools.lru_cache(maxsize=1)
def _analyzer() -> Analyzer:
    return Analyzer()


def signals(query: str, texts: Sequence[str]) -> dict[str, float]:
    """The retrieval signals of ``query`` against hit ``texts`` (best first)."""
    analyzer = _analyzer()
    want = set(analyzer.tokens(query))
    docs = [set(analyzer.tokens(t)) for t in texts]
    if len(docs) >= MIN_HITS_FOR_COMMON:
        counts = Counter(tok for d in docs for tok in d)
        common = {t for t, n in counts.items() if n >= COMMON_SHARE * len(docs)}
        want = (want - common) or want
    out = {"lexical_best": 0.0, "lexical_top3": 0.0}
    if want and docs:
        out["lexical_best"] = max(len(want & d) for d in docs[:TOP_HITS]) / len(want)
        out["lexical_top3"] = len(want & set().union(*docs[:3])) / len(want)
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def query_coverage(query: str, texts: Sequence[str], *,
                   calibration: Calibration = CALIBRATION) -> float:
    """The calibrated coverage of ``query`` by hit ``texts`` (best first); no hits: 0."""
    if not texts:
        return 0.0
    sig = signals(query, texts)
    w = calibration.weights
    z = w[0] + sum(wi * sig[n] for n, wi in zip(FEATURES, w[1:], strict=True))
    return round(_sigmoid(z), 4)
