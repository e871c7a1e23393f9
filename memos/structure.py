"""What the cube's structure looks like, for people: cluster maps and association mixtures.

Two read-only views of the Gaussian-mixture machinery of :mod:`memos.granularity.gmm`, as
the web inspector plots them (and any client can fetch them):

* :func:`cluster_map` fits the clustering :func:`~memos.granularity.gmm.fit_clusters` fits
  (a diagonal mixture on the top principal axes, component count by BIC) to the newest
  ``limit`` active units of one granularity, and returns each unit's position on the first
  two principal axes with its cluster label. It is fitted on request, from SQL, so it shows
  what the vectors say now; its cost is bounded by ``limit``, not by the cube.
* :func:`association_mixture` redoes the association decision for one unit: its cosine
  similarities to the ``top_k`` most similar earlier units of its granularity, the two
  Gaussians :func:`~memos.granularity.gmm.fit_two_gaussians` fits to them, and the
  threshold :func:`~memos.granularity.gmm.gmm_accept` draws (the lowest accepted score).
  Earlier units are scanned exactly up to :data:`EXACT_SCAN_MAX`; past it the cube's vector
  index names the candidates (as ingest does past ``exhaustive_max_turns``).

>>> density(0.5, weight=1.0, mean=0.5, var=1.0) > 0.39
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from memos.errors import InvalidInput
from memos.granularity import gmm
from memos.store.models import CubeRow, UnitRow
from memos.types import (
    AssociationMixture,
    ClusterMap,
    ClusterPoint,
    Granularity,
    MixtureComponent,
    MixtureScore,
)

__all__ = ["cluster_map", "association_mixture", "density", "EXACT_SCAN_MAX", "CURVE_POINTS"]

#: Up to this many earlier units of a granularity, the association view scans them all.
EXACT_SCAN_MAX = 20_000
#: Points on each drawn Gaussian curve.
CURVE_POINTS = 60


def density(x: float, *, weight: float, mean: float, var: float) -> float:
    """``weight`` times the normal density at ``x`` (what one mixture component draws)."""
    return weight * math.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def _active(cube: CubeRow, granularity: str) -> tuple[ColumnElement[bool], ...]:
    return (UnitRow.cube_key == cube.key, UnitRow.kind == "plaintext",
            UnitRow.granularity == granularity, UnitRow.status == "active",
            UnitRow.embedding.is_not(None))


def cluster_map(session: Session, *, cube: CubeRow, granularity: Granularity,
                limit: int) -> ClusterMap:
    """The clustering of the newest ``limit`` active ``granularity`` units, in 2-D."""
    rows = session.execute(
        select(UnitRow.pk, UnitRow.id, UnitRow.text, UnitRow.embedding)
        .where(*_active(cube, granularity.value)).order_by(UnitRow.pk.desc()).limit(limit)
    ).all()
    empty = ClusterMap(granularity=granularity, units=len(rows), clusters=0, points=[], bic={})
    if len(rows) < 4:
        return empty
    ids = np.array([r.pk for r in rows], dtype=np.int64)
    vectors = np.stack([np.asarray(r.embedding, dtype=np.float32) for r in rows])
    model = gmm.fit_clusters(ids, vectors, granularity=granularity.value,
                             min_cluster_size=max(2, min(10, len(rows) // 4)))
    xy = model.project(vectors)[:, :2]                                   # (n, 2)
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    points = [ClusterPoint(id=r.id, x=round(float(x), 5), y=round(float(y), 5),
                           cluster=model.labels[r.pk], text=(r.text or "")[:160])
              for r, (x, y) in zip(rows, xy, strict=True)]
    return ClusterMap(granularity=granularity, units=len(rows), clusters=model.n_components,
                      points=points, bic={str(k): round(v, 2) for k, v in model.bic.items()})


def association_mixture(session: Session, *, cube: CubeRow, unit: UnitRow, top_k: int,
                        nearest: Callable[[np.ndarray, int], list[int]]) -> AssociationMixture:
    """The association decision for ``unit`` against its earlier units (see module doc).

    ``nearest(vector, k)`` names candidate unit keys from the cube's vector index; it is
    used only when the granularity has more than :data:`EXACT_SCAN_MAX` earlier units.
    """
    if unit.embedding is None or unit.kind != "plaintext":
        raise InvalidInput(f"memory {unit.id!r} has no embedding to associate",
                           details={"memory_id": unit.id})
    vec = np.asarray(unit.embedding, dtype=np.float32)
    earlier = (*_active(cube, unit.granularity), UnitRow.pk < unit.pk)
    stmt = select(UnitRow.pk, UnitRow.id, UnitRow.text, UnitRow.embedding).where(*earlier)
    n_earlier = len(session.execute(select(UnitRow.pk).where(*earlier)
                                    .limit(EXACT_SCAN_MAX + 1)).all())
    if n_earlier > EXACT_SCAN_MAX:
        keys = [k for k in nearest(vec, 8 * top_k) if k < unit.pk]
        stmt = stmt.where(UnitRow.pk.in_(keys))
    rows = session.execute(stmt).all()
    scan: Literal["exact", "index"] = "exact" if n_earlier <= EXACT_SCAN_MAX else "index"
    if not rows:
        return AssociationMixture(id=unit.id, granularity=Granularity(unit.granularity),
                                  top_k=top_k, scan=scan, scores=[], components=[],
                                  threshold=None, rule="none", curve=[])
    sims = np.stack([np.asarray(r.embedding, dtype=np.float32) for r in rows]) @ vec
    order = np.argsort(-sims, kind="stable")[:top_k]
    top = sims[order].astype(np.float64)
    accepted = gmm.gmm_accept(top)
    scores = [MixtureScore(id=rows[i].id, score=float(sims[i]),
                           accepted=bool(a), text=(rows[i].text or "")[:160])
              for i, a in zip(order, accepted, strict=True)]
    threshold = float(top[accepted].min()) if accepted.any() else None
    components: list[MixtureComponent] = []
    curve: list[list[float]] = []
    rule: Literal["gmm", "percentile", "none"] = "percentile"
    if len(top) >= 5 and np.ptp(top) >= 1e-3:
        w, mu, var = gmm.fit_two_gaussians(top)
        components = [MixtureComponent(weight=round(float(a), 5), mean=round(float(b), 5),
                                       var=float(c)) for a, b, c in zip(w, mu, var, strict=True)]
        # the GMM decided unless it separated nothing (then gmm_accept used percentiles)
        rule = "gmm" if 0 < accepted.sum() < len(top) else "percentile"
        lo = min(float(top.min()), float(mu[0] - 3 * math.sqrt(var[0])))
        hi = max(float(top.max()), float(mu[1] + 3 * math.sqrt(var[1])))
        for x in np.linspace(lo, hi, CURVE_POINTS):
            curve.append([round(float(x), 5)] + [
                round(density(float(x), weight=c.weight, mean=c.mean, var=c.var), 5)
                for c in components])
    return AssociationMixture(id=unit.id, granularity=Granularity(unit.granularity),
                              top_k=top_k, scan=scan, scores=scores, components=components,
                              threshold=threshold, rule=rule, curve=curve)
