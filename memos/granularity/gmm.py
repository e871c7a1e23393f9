"""Gaussian-mixture association (MemGAS) and Gaussian-mixture clustering of unit embeddings.

Association. When a unit arrives, its cosine similarities to the ``top_k`` most similar
earlier units are split by a 2-component 1-D Gaussian mixture; the candidates in the
higher-mean component are linked (an adaptive threshold instead of a magic constant).
A GMM on fewer than ``min_scores`` scores, or on (near-)identical scores, is unstable, so
those cases fall back to a percentile rule. The accepted set is always an upper set of the
scores: if a score is accepted, every higher score is too.

The 1-D mixture is fitted by :func:`fit_two_gaussians` (EM in numpy, deterministic
initialisation at the 25th/75th percentiles, sklearn's ``reg_covar``), vectorised over many
score vectors at once. It is the model ``sklearn.mixture.GaussianMixture(2)`` fits
(``backend="sklearn"`` uses that instead) but costs ~0.4 ms per vector in a batch instead
of 4–25 ms per sklearn fit, which is what keeps ingest above 200 units/s. The two differ
only by initialisation; on clearly bimodal scores they decide alike.

Clustering. :func:`fit_clusters` projects one granularity's vectors on their top principal
axes and fits a diagonal GaussianMixture whose component count minimises BIC within bounds;
:func:`needs_refit` says when growth warrants a refit, and :func:`route_clusters` returns
the clusters that hold ``mass`` of a query's (tempered) posterior, for probe-only search.

>>> mask = gmm_accept(np.array([0.9, 0.88, 0.86, 0.3, 0.28, 0.25, 0.2]))
>>> mask.tolist()
[True, True, True, False, False, False, False]
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from memos.lazy import IMPORT_LOCK

__all__ = [
    "Link",
    "Cluster",
    "ClusterModel",
    "fit_two_gaussians",
    "gmm_accept",
    "associate",
    "fit_clusters",
    "needs_refit",
    "assign_clusters",
    "route_clusters",
]

_REG = 1e-6  # sklearn's default reg_covar: keeps a variance from collapsing to 0


@dataclass(frozen=True)
class Link:
    """An ``associated`` edge: ``src`` (the new unit) → ``dst`` (an earlier unit).

    ``weight`` is the cosine similarity clipped to [0, 1]; higher = stronger.
    """

    src: int
    dst: int
    weight: float


def fit_two_gaussians(x: np.ndarray, *, max_iter: int = 100,
                      tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for 2-component 1-D Gaussian mixtures, one independent mixture per row.

    ``x`` is ``(n,)`` or ``(m, n)`` (m score vectors of equal length, fitted together in
    one vectorised loop). Returns ``(weights, means, variances)``, each ``(2,)`` or
    ``(m, 2)``, with ``means[..., 0] <= means[..., 1]``. Raises ValueError for fewer than 2
    values per row or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    if x.ndim != 2 or x.shape[1] < 2 or not np.all(np.isfinite(x)):
        raise ValueError("need at least 2 finite values per row")
    mu = np.percentile(x, [25.0, 75.0], axis=1).T                     # (m, 2)
    tied = mu[:, 0] == mu[:, 1]
    mu[tied] = np.stack([x[tied].min(axis=1), x[tied].max(axis=1)], axis=1)
    var = np.repeat(x.var(axis=1, keepdims=True) / 2 + _REG, 2, axis=1)
    w = np.full_like(mu, 0.5)
    prev = np.full(len(x), -np.inf)
    active = np.ones(len(x), dtype=bool)
    xe = x[:, :, None]                                                 # (m, n, 1)
    for _ in range(max_iter):
        log_p = (np.log(w) - 0.5 * np.log(2 * np.pi * var))[:, None, :] \
            - 0.5 * (xe - mu[:, None, :]) ** 2 / var[:, None, :]      # (m, n, 2)
        top = log_p.max(axis=2, keepdims=True)
        log_norm = top + np.log(np.exp(log_p - top).sum(axis=2, keepdims=True))
        resp = np.exp(log_p - log_norm)                                # (m, n, 2)
        ll = log_norm[:, :, 0].mean(axis=1)
        # A row stops when its own likelihood settles, so a row fitted in a batch gets
        # exactly the parameters it would get alone.
        active &= ~(np.abs(ll - prev) < tol)
        if not active.any():
            break
        prev = ll
        nk = resp.sum(axis=1) + 10 * np.finfo(float).eps               # (m, 2)
        a = active[:, None]
        w = np.where(a, nk / x.shape[1], w)
        mu = np.where(a, (resp * xe).sum(axis=1) / nk, mu)
        var = np.where(a, (resp * (xe - mu[:, None, :]) ** 2).sum(axis=1) / nk + _REG, var)
    order = np.argsort(mu, axis=1, kind="stable")
    w, mu, var = (np.take_along_axis(a, order, axis=1) for a in (w, mu, var))
    return (w[0], mu[0], var[0]) if single else (w, mu, var)


def _posterior_high(x: np.ndarray, w: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """P(higher-mean component | x) for rows ``x (m, n)`` and parameters ``(m, 2)``."""
    log_p = (np.log(w) - 0.5 * np.log(2 * np.pi * var))[:, None, :] \
        - 0.5 * (x[:, :, None] - mu[:, None, :]) ** 2 / var[:, None, :]
    log_p -= log_p.max(axis=2, keepdims=True)
    p = np.exp(log_p)
    return p[:, :, 1] / p.sum(axis=2)


def gmm_accept(scores: np.ndarray, *, min_scores: int = 5, min_spread: float = 1e-3,
               percentile: float = 75.0, backend: Literal["numpy", "sklearn"] = "numpy",
               seed: int = 0) -> np.ndarray:
    """Boolean mask of the scores to accept (higher score = more similar).

    * ``len(scores) < min_scores`` or ``max - min < min_spread``: the percentile rule,
      accept ``scores >= percentile(scores, percentile)`` (identical scores: all accepted,
      as nothing separates them).
    * otherwise: fit a 2-component GMM, accept the scores whose posterior for the
      higher-mean component is > 0.5, closed upwards (every score at least as high as an
      accepted one is accepted). If the fit separates nothing, the percentile rule applies.

    ``scores`` may also be ``(m, n)``: m independent vectors decided in one vectorised fit
    (the mask is then ``(m, n)``).

    >>> gmm_accept(np.array([0.5, 0.5, 0.5])).tolist()
    [True, True, True]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim not in (1, 2):
        raise ValueError("scores must be 1-d or 2-d")
    if s.size == 0:
        return np.zeros(s.shape, dtype=bool)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if min_scores < 2:
        raise ValueError(f"min_scores must be >= 2, got {min_scores}")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    single = s.ndim == 1
    s = np.atleast_2d(s)
    by_pct = s >= np.percentile(s, percentile, axis=1, keepdims=True)
    if s.shape[1] < min_scores:
        return by_pct[0] if single else by_pct
    fit = np.ptp(s, axis=1) >= min_spread
    out = by_pct.copy()
    if fit.any():
        x = s[fit]
        if backend == "numpy":
            high = _posterior_high(x, *fit_two_gaussians(x)) > 0.5
        elif backend == "sklearn":
            high = np.stack([_sklearn_high(row, seed=seed) for row in x])
        else:
            raise ValueError(f"unknown backend {backend!r}")
        ok = high.any(axis=1) & ~high.all(axis=1)
        thresh = np.where(high, x, np.inf).min(axis=1, keepdims=True)
        rows = np.flatnonzero(fit)[ok]
        out[rows] = x[ok] >= thresh[ok]
    return out[0] if single else out


def _sklearn_mixture() -> tuple[Any, type[Warning]]:
    """``sklearn.mixture.GaussianMixture`` and ``ConvergenceWarning``, imported on first use
    (a 1-5 s import the CLI should not pay) under :data:`memos.lazy.IMPORT_LOCK`: two
    threads' first imports at once can each see the other's half-initialised module (a
    server fitting a cluster map while a background job refits the router's clusters, or
    while another request imports torch)."""
    with IMPORT_LOCK:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture
    return GaussianMixture, ConvergenceWarning


def _sklearn_high(s: np.ndarray, *, seed: int) -> np.ndarray:
    """The same decision with ``sklearn.mixture.GaussianMixture(2)`` (reference backend)."""
    GaussianMixture, ConvergenceWarning = _sklearn_mixture()

    gm = GaussianMixture(2, init_params="random_from_data", random_state=seed,
                         means_init=np.percentile(s, [25.0, 75.0])[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(s[:, None])
    high = int(np.argmax(gm.means_[:, 0]))
    return gm.predict_proba(s[:, None])[:, high] > 0.5


def associate(new_id: int, new_vec: np.ndarray, cand_ids: np.ndarray, cand_vecs: np.ndarray,
              *, top_k: int = 10, **accept: object) -> list[Link]:
    """Links from ``new_id`` to the earlier units accepted by :func:`gmm_accept`.

    ``cand_vecs`` is ``(n, dim)`` unit-norm (inner product = cosine); ``new_id`` itself is
    never a candidate. The top ``top_k`` cosine scores go through the accept rule; links
    come back best first with weight = cosine clipped to [0, 1].
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    cand_ids = np.asarray(cand_ids, dtype=np.int64)
    if len(cand_ids) != len(cand_vecs):
        raise ValueError(f"{len(cand_ids)} ids but {len(cand_vecs)} vectors")
    keep = cand_ids != new_id
    cand_ids, cand_vecs = cand_ids[keep], np.asarray(cand_vecs)[keep]
    if not len(cand_ids):
        return []
    sims = cand_vecs @ np.asarray(new_vec, dtype=np.float32)     # (n,)
    k = min(top_k, len(sims))
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top], kind="stable")]
    mask = gmm_accept(sims[top], **accept)  # type: ignore[arg-type]
    return [Link(int(new_id), int(cand_ids[i]), float(np.clip(sims[i], 0.0, 1.0)))
            for i in top[mask]]


# ---------------------------------------------------------------------------- clustering
@dataclass(frozen=True)
class Cluster:
    """One mixture component: its member ids and centroid (unit-norm, in embedding space)."""

    label: int
    members: tuple[int, ...]
    centroid: np.ndarray


@dataclass
class ClusterModel:
    """A fitted clustering of one granularity. In-memory cache; rebuild it from vectors.

    ``labels`` maps every assigned id to its cluster label; ``n_at_fit`` is the number of
    units the mixture was fitted on (for :func:`needs_refit`).
    """

    granularity: str
    n_at_fit: int
    mean: np.ndarray                 # (dim,) PCA centre
    components: np.ndarray           # (d, dim) PCA axes
    gmm: object                      # sklearn GaussianMixture fitted in the projected space
    bic: dict[int, float]
    labels: dict[int, int] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.gmm.n_components)  # type: ignore[attr-defined]

    def clusters(self, vectors_by_id: Mapping[int, np.ndarray] | None = None) -> list[Cluster]:
        """Clusters with their members; centroids are member means when vectors are given,
        else the back-projected mixture means."""
        members: dict[int, list[int]] = {k: [] for k in range(self.n_components)}
        for unit_id, label in self.labels.items():
            members[label].append(unit_id)
        back = self.gmm.means_ @ self.components + self.mean  # type: ignore[attr-defined]
        out = []
        for label, ids in members.items():
            if vectors_by_id is not None and ids:
                c = np.mean([vectors_by_id[i] for i in ids], axis=0)
            else:
                c = back[label]
            c = np.asarray(c, dtype=np.float32)
            out.append(Cluster(label, tuple(sorted(ids)), c / max(np.linalg.norm(c), 1e-12)))
        return out

    def project(self, vectors: np.ndarray) -> np.ndarray:
        return (np.asarray(vectors, dtype=np.float64) - self.mean) @ self.components.T


def needs_refit(n_now: int, n_at_fit: int, *, growth: float = 0.25) -> bool:
    """True when the unit count moved by more than ``growth`` (relative) since the fit.

    >>> needs_refit(126, 100), needs_refit(120, 100), needs_refit(5, 0)
    (True, False, True)
    """
    if n_now < 0 or n_at_fit < 0 or growth <= 0:
        raise ValueError("counts must be >= 0 and growth > 0")
    if n_at_fit == 0:
        return n_now > 0
    return abs(n_now - n_at_fit) > growth * n_at_fit


def fit_clusters(ids: np.ndarray, vectors: np.ndarray, *, granularity: str = "turn",
                 min_components: int = 2, max_components: int = 16,
                 min_cluster_size: int = 10, dims: int = 32, seed: int = 0,
                 near: int | None = None) -> ClusterModel:
    """Fit a diagonal GaussianMixture, component count by BIC in ``[min, max]``.

    The upper bound is also capped at ``n // min_cluster_size`` so every component has data.
    Candidates are a geometric grid (2, 3, 4, 6, 8, 12, …); ``near`` (the previous fit's
    count) narrows them to ``near/2 … 2·near`` so refits stay cheap. Vectors are projected
    on their top ``dims`` principal axes first: a 384-d diagonal mixture on a few hundred
    points is noise. Deterministic for a given ``seed``.
    """
    GaussianMixture, ConvergenceWarning = _sklearn_mixture()

    ids = np.asarray(ids, dtype=np.int64)
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(ids) != len(x):
        raise ValueError("vectors must be (n, dim) with one id per row")
    if min_components < 1 or max_components < min_components:
        raise ValueError("need 1 <= min_components <= max_components")
    n = len(ids)
    if n < max(2, min_components):
        raise ValueError(f"need at least {max(2, min_components)} units to cluster, got {n}")
    mean = x.mean(axis=0)
    xc = x - mean
    # top principal axes from the (dim, dim) scatter matrix: cheaper than an SVD of x
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    components = evecs[:, ::-1][:, :min(dims, n - 1, x.shape[1])].T  # (d, dim)
    z = xc @ components.T                                          # (n, d)
    hi = max(min_components, min(max_components, n // max(min_cluster_size, 1)))
    lo_k, hi_k = min_components, hi
    if near is not None:
        lo_k, hi_k = max(min_components, near // 2), max(min(hi, 2 * near), min_components)
    candidates = sorted({k for k in (lo_k, 2, 3, 4, 6, 8, 12, 16, 24, 32, hi_k)
                         if lo_k <= k <= hi_k and k <= n})
    best, bic = None, {}
    for k in candidates:
        gm = GaussianMixture(k, covariance_type="diag", random_state=seed, n_init=1,
                             init_params="k-means++", max_iter=100, reg_covar=1e-4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(z)
        bic[k] = float(gm.bic(z))
        if best is None or bic[k] < bic[best.n_components]:
            best = gm
    if best is None:  # unreachable: min_components <= hi guarantees one candidate
        raise ValueError("no component count to try")
    model = ClusterModel(granularity=granularity, n_at_fit=n, mean=mean, components=components,
                         gmm=best, bic=bic)
    model.labels = dict(zip(ids.tolist(), best.predict(z).tolist(), strict=True))
    return model


def assign_clusters(model: ClusterModel, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Put new units into their most probable existing cluster (between refits)."""
    if len(ids) == 0:
        return
    labels = model.gmm.predict(model.project(vectors))  # type: ignore[attr-defined]
    model.labels.update(zip(np.asarray(ids, dtype=np.int64).tolist(), labels.tolist(),
                            strict=True))


def route_clusters(model: ClusterModel, query_vec: np.ndarray, *, mass: float = 0.9,
                   temperature: float = 1.0) -> list[int]:
    """Cluster labels holding ``mass`` of the query's posterior, most probable first.

    ``temperature`` divides the log-posterior before renormalising; in 32 dimensions the raw
    posterior is nearly one-hot, so a temperature > 1 spreads the probe over more clusters.
    """
    if not 0.0 < mass <= 1.0 or temperature <= 0:
        raise ValueError("need 0 < mass <= 1 and temperature > 0")
    z = model.project(np.asarray(query_vec)[None, :])
    log_resp = model.gmm._estimate_weighted_log_prob(z)[0] / temperature  # type: ignore[attr-defined]
    p = np.exp(log_resp - log_resp.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order])
    n_take = int(np.searchsorted(cum, mass - 1e-12) + 1)
    return [int(k) for k in order[:n_take]]
