"""Mixture-of-Experts from SmolLM2's dense SwiGLU FFNs, without retraining.

Each FFN neuron ``i`` computes ``h_i = silu(g_i(x)) * u_i(x)`` and adds ``h_i`` times row
``i`` of the down matrix to the output. An *expert* is a group of ``group_size`` consecutive
neurons; ``group_size = 1`` (single-neuron experts) is what quality demands on SmolLM2 —
coarse experts lose most of the model, because the information is in each token's own gate
activations at single-neuron level.

Routing is CATS/TEAL-style, in two optional stages, with the gate projection as the router
(a third of the FFN). Optionally, ``in_k`` makes the router and ``up`` cheaper with TEAL's
input sparsity: only the ``in_k`` largest ``|x_j|`` of the token's FFN input feed gate and
up, so only those columns of both are read (``gate``/``up`` are stored column-major, see
:func:`~memos.backbone.model.decode_layout`: a column is a contiguous row of the transpose).

1. ``top_k``: keep the experts with the largest ``|silu(g)|`` mass; only their ``up`` rows
   are read (``None``: all ``up`` rows);
2. ``down_k``: of those, keep the experts with the largest ``|h| * ||down row||`` mass; only
   their ``down`` rows are read (``None``: all stage-1 experts). ``down`` is stored row-major
   ``[n_neurons, d]`` so a batch-1 decode gathers contiguous rows
   (``F.embedding_bag`` fuses the gather with the weighted sum).

On the final stage, optionally:

* ``n_shared`` — always-on shared expert(s): the experts most used on the calibration set;
* ``n_proto`` — expert prototyping (M6-T): experts split into ``n_proto`` equal groups, each
  contributing its top ``k / n_proto`` (grouped selection also balances load, Pangu MoGE);
* ``skip_beta`` — dynamic skipping (Lu et al. 2024, "Not All Experts are Equal"): a selected
  expert whose routing weight is below ``skip_beta`` x the top weight is skipped;
* :func:`prune_experts` — task-agnostic expert pruning (same paper): the least-used experts
  of each layer are removed physically.

With ``dense_prefill`` (on for every variant a loaded ``Backbone`` uses), multi-token
forwards (prompt prefill) run the dense FFN and only the batch-1 decode is routed; usage
tracking (calibration, perplexity) routes every token regardless.

Invariant: with ``top_k = down_k = in_k = None``, no skipping and no pruning, :class:`MoEMLP`
computes exactly the dense FFN (same ops, bit-identical output; with more than one torch
thread, a batch-1 step sums the same rows in per-thread bags, equal to within float
rounding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import decode_layout

__all__ = [
    "MoEConfig",
    "MoEMLP",
    "to_moe",
    "set_routing",
    "expert_usage",
    "prune_experts",
    "load_cv",
    "ffn_read_frac",
    "select_experts",
    "moe_layers",
    "reset_stats",
    "coactivation_groups",
    "permute_neurons",
]


@dataclass
class MoEConfig:
    """Routing configuration shared by all layers (expert counts are per layer)."""

    group_size: int = 1  # neurons per expert
    top_k: int | None = None  # stage 1: experts whose up rows are read (None: all)
    down_k: int | None = None  # stage 2: experts whose down rows are read (None: all of stage 1)
    n_shared: int = 0  # always-on experts (most used on calibration)
    n_proto: int = 1  # expert prototyping groups on the final stage
    skip_beta: float = 0.0  # skip experts with routing weight < skip_beta * top weight
    in_k: int | None = None  # input sparsity (TEAL): gate and up read the in_k largest |x_j|
    # Multi-token forwards (prompt prefill) run the dense FFN: they are compute-bound matrix
    # products, where skipping rows saves nothing. Usage tracking always routes every token.
    dense_prefill: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _top_mask(w: torch.Tensor, k: int) -> torch.Tensor:
    """``w >= its k-th largest value`` along the last dim: the top-k mask (values tied with
    the k-th are all kept). A threshold from ``kthvalue`` instead of ``topk`` + scatter: about
    3x faster for k near E, which is most of the routing cost of a prefill."""
    return w >= w.kthvalue(w.shape[-1] - k + 1, dim=-1, keepdim=True).values


_BAG_OFFSETS: dict[tuple[int, int], torch.Tensor] = {}


def _rows_sum(idx: torch.Tensor, rows: torch.Tensor, w: torch.Tensor, parts: int) -> torch.Tensor:
    """``sum_i w[i] * rows[idx[i]]`` (a vector), in ``parts`` bags that run in parallel."""
    k = idx.numel()
    parts = max(1, min(parts, k))
    off = _BAG_OFFSETS.get((k, parts))
    if off is None:
        off = _BAG_OFFSETS.setdefault((k, parts), torch.arange(parts) * (k // parts))
    y = F.embedding_bag(idx, rows, off, mode="sum", per_sample_weights=w)  # (parts, out)
    return y.sum(0) if parts > 1 else y.view(-1)


def select_experts(
    w: torch.Tensor,
    k: int | None,
    *,
    n_proto: int = 1,
    skip_beta: float = 0.0,
    shared: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask (N, E) of the ``k`` heaviest experts per row of routing weights w (N, E).

    Weights must be >= 0; ``-inf`` marks experts that are not eligible. ``shared`` (E,) bool
    experts are always selected (on top of k). With ``n_proto = P`` the experts are split
    into P contiguous groups and the ``k // P`` heaviest of each group are kept. Experts
    with weight below ``skip_beta`` x the row's top (non-shared) weight are dropped.
    """
    N, E = w.shape
    if shared is not None and bool(shared.any()):
        w = w.masked_fill(shared, float("inf"))
    if k is None or k >= E:
        mask = w > float("-inf")
    elif n_proto > 1:
        wg = w.view(N, n_proto, E // n_proto)  # (N, P, E/P)
        mask = _top_mask(wg, k // n_proto).view(N, E) & (w > float("-inf"))
    else:
        mask = _top_mask(w, k) & (w > float("-inf"))
    if skip_beta > 0:
        finite = w.masked_fill(~torch.isfinite(w), 0.0)
        top = finite.amax(-1, keepdim=True)
        keep = w >= skip_beta * top
        mask &= keep if shared is None else keep | shared
    return mask


class MoEMLP(nn.Module):
    """SwiGLU FFN with neuron-group experts routed by the gate's own activations.

    Parameters keep the dense names (``gate_proj``, ``up_proj``, ``down_proj``) so LoRA can
    wrap them; the buffer ``down_rows`` is a row-major ``[n, d]`` copy of ``down_proj``.
    LoRA deltas apply on the masked path (T > 1, or a dense config); the sparse batch-1
    decode path reads ``gate_proj``/``up_proj`` weights and ``down_rows`` directly.
    """

    down_rows: torch.Tensor  # buffers, declared for type checkers
    down_norm: torch.Tensor
    shared: torch.Tensor

    def __init__(
        self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, group_size: int = 1
    ):
        super().__init__()
        n, d = up.shape
        if gate.shape != (n, d) or down.shape != (d, n):
            raise ValueError(
                f"bad FFN shapes: gate {tuple(gate.shape)} up {(n, d)} down {tuple(down.shape)}"
            )
        if group_size < 1 or n % group_size:
            raise ValueError(f"n_neurons {n} does not split into groups of {group_size}")
        self.gate_proj = nn.Linear(d, n, bias=False, device="meta")  # weights assigned below
        self.up_proj = nn.Linear(d, n, bias=False, device="meta")
        self.down_proj = nn.Linear(n, d, bias=False, device="meta")
        # (n, d) gate and up, (d, n) down, each in its fastest batch-1 layout (column-major
        # gate and up): the router reads the full gate anyway.
        self.gate_proj.weight = nn.Parameter(decode_layout(gate.detach()))
        self.up_proj.weight = nn.Parameter(decode_layout(up.detach()))
        self.down_proj.weight = nn.Parameter(decode_layout(down.detach()))
        # Row-major copy for the sparse decode path: neuron i's down row is contiguous, so a
        # gather reads only the chosen rows. Costs 1/3 of the FFN memory again; keeping
        # down_proj itself in the dense layout makes "all experts active" bit-identical.
        self.register_buffer(
            "down_rows", self.down_proj.weight.detach().t().contiguous(), persistent=False
        )
        self.group_size = group_size
        self.cfg = MoEConfig(group_size=group_size)
        E = n // group_size
        self.register_buffer(
            "down_norm", self.down_proj.weight.norm(dim=0), persistent=False
        )  # (n,)
        self.register_buffer("shared", torch.zeros(E, dtype=torch.bool), persistent=False)
        self._up_rows: torch.Tensor | None = None  # row-major up, built for sparse-up decode
        self.reset_stats()

    @property
    def n_neurons(self) -> int:
        return self.up_proj.weight.shape[0]

    @property
    def n_experts(self) -> int:
        return self.n_neurons // self.group_size

    def is_dense(self) -> bool:
        c = self.cfg
        full = (c.top_k is None or c.top_k >= self.n_experts) and (
            c.down_k is None or c.down_k >= self.n_experts
        )
        full = full and (c.in_k is None or c.in_k >= self.up_proj.weight.shape[1])
        return full and c.skip_beta <= 0 and not (c.n_proto > 1 and (c.top_k or c.down_k))

    def up_rows(self) -> torch.Tensor:
        """Row-major (n, d) copy of ``up_proj``, built on first use: a sparse-up decode
        gathers whole rows, which the column-major ``up_proj.weight`` would scatter."""
        if self._up_rows is None:
            self._up_rows = self.up_proj.weight.detach().contiguous()
        return self._up_rows

    def _group(self, s: torch.Tensor) -> torch.Tensor:  # (N, n) -> (N, E) expert mass
        return s.view(s.shape[0], -1, self.group_size).sum(-1) if self.group_size > 1 else s

    def _expand(self, mask: torch.Tensor) -> torch.Tensor:  # (N, E) -> (N, n)
        return mask.repeat_interleave(self.group_size, dim=-1) if self.group_size > 1 else mask

    def route(self, a: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert masks (stage 1, final), each (N, E), from a = silu(gate) and h = a * up (N, n)."""
        c = self.cfg
        two_stage = c.down_k is not None
        shared = self.shared if c.n_shared else None
        w1 = self._group(a.abs())
        if two_stage:
            m1 = select_experts(w1, c.top_k, shared=shared)
            w2 = self._group(h.abs() * self.down_norm).masked_fill(~m1, float("-inf"))
            m2 = select_experts(
                w2, c.down_k, n_proto=c.n_proto, skip_beta=c.skip_beta, shared=shared
            )
            return m1, m2
        m1 = select_experts(w1, c.top_k, n_proto=c.n_proto, skip_beta=c.skip_beta, shared=shared)
        return m1, m1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N = x.shape[:-1].numel()
        if self.usage is None:  # not calibrating: the fastest path that computes this config
            one_core_dense = self.is_dense() and torch.get_num_threads() == 1
            if N == 1 and not one_core_dense:
                return self._decode(x)
            if N == 1 or self.is_dense() or self.cfg.dense_prefill:
                self._count(N, None, None)
                return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        frac = self._in_frac(x.shape[-1])
        if frac < 1.0:  # input sparsity: drop all but the in_k largest |x_j| of each token
            x = x * _top_mask(x.abs(), self.cfg.in_k or 0)
        a = F.silu(self.gate_proj(x))  # (B, T, n)
        h = a * self.up_proj(x)
        m1, m2 = self.route(a.reshape(N, -1), h.reshape(N, -1))  # (N, E) each
        keep = self._expand(m2).view_as(h)
        self._count(N, m1, m2, frac)
        if self.mass is not None:
            self.mass += (
                self._group((h.abs() * self.down_norm * keep).reshape(N, -1)).sum(0).double()
            )
        h = h * keep
        return self.down_proj(h)

    def _in_frac(self, d: int) -> float:
        k = self.cfg.in_k
        return 1.0 if k is None or k >= d else k / d

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-1 single token: read only the routed rows, gathering with one bag per thread.

        ``F.embedding_bag`` fuses a row gather with the weighted sum. A BLAS matrix-vector
        product runs on one core at batch 1, while ``parts`` bags run on ``parts`` cores, so
        with more than one thread even the dense rows are summed this way: every variant,
        dense included, then decodes with the same kernel.
        """
        c = self.cfg
        xv = x.reshape(-1)  # (d,)
        parts = torch.get_num_threads()
        frac = self._in_frac(xv.numel())
        cols = None  # (input dims, their values) feeding gate and up; None: all of them
        if frac < 1.0:
            j = xv.abs().topk(c.in_k or 0, sorted=False).indices
            cols = (j, xv.index_select(0, j))
        a = F.silu(self._project(self.gate_proj.weight, xv, cols, parts))  # (n,) the router
        h = None
        if c.top_k is None or c.top_k >= self.n_experts:
            h = a * self._project(self.up_proj.weight, xv, cols, parts)  # (n,)
        if self.group_size == 1 and c.n_proto == 1 and c.skip_beta <= 0 and not c.n_shared:
            idx, hs = self._decode_plain(a, xv, h)  # lean path: topk on neurons, no masks
        else:
            idx, hs = self._decode_general(a, xv, h)
        self.tokens += 1
        self.gate_read += self.n_neurons * frac
        if h is not None:
            self.up_read += self.n_neurons * frac
        if idx is None:  # every down row
            self.down_read += self.n_neurons
            if parts == 1:
                return F.linear(hs.view(1, -1), self.down_proj.weight).view_as(x)
            idx = self._all_neurons
        else:
            self.down_read += idx.numel()
        return _rows_sum(idx, self.down_rows, hs, parts).view_as(x)

    def _project(
        self,
        weight: torch.Tensor,
        xv: torch.Tensor,
        cols: tuple[torch.Tensor, torch.Tensor] | None,
        parts: int,
    ) -> torch.Tensor:
        """``weight @ x`` for a column-major (n, d) weight, from the columns ``cols`` only."""
        rows = weight.t()  # (d, n): row j is column j of the weight
        if not rows.is_contiguous() or (cols is None and parts == 1):
            x = xv if cols is None else torch.zeros_like(xv).index_copy_(0, *cols)
            return F.linear(x.view(1, -1), weight).view(-1)
        if cols is None:
            cols = (self._all_inputs, xv)
        return _rows_sum(cols[0], rows, cols[1], parts)

    def _decode_plain(
        self, a: torch.Tensor, xv: torch.Tensor, h: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(down rows to read or None for all, their weights); ``h`` = a * up when up is
        read whole, else stage 1 picks the ``top_k`` up rows here."""
        c, n = self.cfg, self.n_neurons
        idx = None
        if h is None:
            idx = a.abs().topk(c.top_k or n, sorted=False).indices  # (k1,)
            h = a.index_select(0, idx) * (self.up_rows().index_select(0, idx) @ xv)  # (k1,)
            self.up_read += idx.numel()
        if c.down_k is not None and c.down_k < h.numel():
            dn = self.down_norm if idx is None else self.down_norm.index_select(0, idx)
            j = (h.abs() * dn).topk(c.down_k, sorted=False).indices  # (k2,)
            h = h.index_select(0, j)
            idx = j if idx is None else idx.index_select(0, j)
        return idx, h

    def _decode_general(
        self, a: torch.Tensor, xv: torch.Tensor, h: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        a1 = a.unsqueeze(0)  # (1, n)
        m1 = None
        if h is None:
            m1 = self._expand(self.route(a1, a1)[0])[0]  # (n,) stage 1 depends on a only
            idx1 = m1.nonzero().squeeze(1)
            h = torch.zeros_like(a)
            h[idx1] = a.index_select(0, idx1) * (self.up_rows().index_select(0, idx1) @ xv)
            self.up_read += int(m1.sum())
        if m1 is not None and c.down_k is None:
            m2 = m1
        else:
            m2 = self._expand(self.route(a1, h.unsqueeze(0))[1])[0]  # (n,)
        idx = m2.nonzero().squeeze(1)
        return idx, h.index_select(0, idx)

    def _count(
        self, N: int, m1: torch.Tensor | None, m2: torch.Tensor | None, frac: float = 1.0
    ) -> None:
        """Add N tokens' reads, in rows of d weights; ``frac``: share of input dims read."""
        self.tokens += N
        gs, n = self.group_size, self.n_neurons
        self.gate_read += N * n * frac
        self.up_read += (N * n if m1 is None else int(m1.sum()) * gs) * frac
        self.down_read += N * n if m2 is None else int(m2.sum()) * gs
        if self.usage is not None:
            self.usage += (
                torch.full((self.n_experts,), float(N), dtype=torch.float64)
                if m2 is None
                else m2.sum(0).to(torch.float64)
            )

    def reset_stats(self, track_usage: bool = False) -> None:
        """Zero the read counters. ``track_usage`` also records, per expert, how often it is
        selected (``usage``) and its summed routing weight ``|h| * ||down||`` when selected
        (``mass``); batch-1 tokens then take the masked path so every token is counted."""
        self.tokens = 0
        self.gate_read = self.up_read = self.down_read = 0.0
        E = self.n_experts
        self.usage: torch.Tensor | None = (
            torch.zeros(E, dtype=torch.float64) if track_usage else None
        )
        self.mass: torch.Tensor | None = (
            torch.zeros(E, dtype=torch.float64) if track_usage else None
        )
        self._all_neurons = torch.arange(self.n_neurons)
        self._all_inputs = torch.arange(self.up_proj.weight.shape[1])


def _blocks(model: nn.Module) -> list[Any]:
    """The decoder blocks (``model.layers``), each with an ``mlp``."""
    layers = model.layers
    if not isinstance(layers, nn.ModuleList):
        raise TypeError("model.layers must be an nn.ModuleList of decoder blocks")
    return list(layers)


def to_moe(model: nn.Module, group_size: int = 1) -> nn.Module:
    """Replace every block's dense MLP by an :class:`MoEMLP` sharing its weights (in place)."""
    for blk in _blocks(model):
        m = blk.mlp
        if not isinstance(m, MoEMLP):
            blk.mlp = MoEMLP(m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight, group_size)
    return model


def moe_layers(model: nn.Module) -> list[MoEMLP]:
    layers = [blk.mlp for blk in _blocks(model)]
    if not all(isinstance(m, MoEMLP) for m in layers):
        raise ValueError("model has dense MLPs; call to_moe(model) first")
    return layers


def set_routing(model: nn.Module, cfg: MoEConfig, shared: list[torch.Tensor] | None = None) -> None:
    """Apply one routing config to every layer.

    ``shared[i]`` lists layer i's experts by decreasing calibration usage; the first
    ``cfg.n_shared`` become always-on. Raises ``ValueError`` on inconsistent settings.
    """
    if cfg.n_proto < 1:
        raise ValueError("n_proto must be >= 1")
    final_k = cfg.down_k if cfg.down_k is not None else cfg.top_k
    if cfg.n_proto > 1 and (final_k is None or final_k % cfg.n_proto):
        raise ValueError(f"prototyping needs a final k divisible by n_proto={cfg.n_proto}")
    if not 0.0 <= cfg.skip_beta < 1.0:
        raise ValueError("skip_beta must be in [0, 1)")
    if cfg.in_k is not None and (cfg.in_k < 1 or cfg.top_k is not None):
        raise ValueError("in_k must be >= 1 and combines with down_k only, not top_k")
    if cfg.n_shared and shared is None:
        raise ValueError("n_shared > 0 needs the per-layer usage ranking (shared=...)")
    for i, m in enumerate(moe_layers(model)):
        if cfg.group_size != m.group_size:
            raise ValueError(f"group_size {cfg.group_size} != model's {m.group_size}")
        if cfg.n_proto > 1 and m.n_experts % cfg.n_proto:
            raise ValueError(f"n_experts={m.n_experts} must divide by n_proto={cfg.n_proto}")
        m.cfg = cfg
        m.shared.zero_()
        if cfg.n_shared and shared is not None:
            m.shared[shared[i][: cfg.n_shared]] = True


def reset_stats(model: nn.Module, track_usage: bool = False) -> None:
    for m in moe_layers(model):
        m.reset_stats(track_usage)


def expert_usage(model: nn.Module, *, mass: bool = False) -> list[torch.Tensor]:
    """Per-layer expert selection counts (or, with ``mass``, summed routing weights) since
    ``reset_stats(model, track_usage=True)``."""
    out = []
    for m in moe_layers(model):
        if m.usage is None or m.mass is None:
            raise ValueError("usage tracking is off; call reset_stats(model, track_usage=True)")
        out.append((m.mass if mass else m.usage).clone())
    return out


def load_cv(usage: list[torch.Tensor]) -> float:
    """Load imbalance: coefficient of variation (std / mean) of expert usage, mean over layers.

    0 means every expert is selected equally often.
    """
    cvs = [(u.std(unbiased=False) / u.mean()).item() for u in usage if u.mean() > 0]
    return float(sum(cvs) / len(cvs)) if cvs else 0.0


def ffn_read_frac(model: nn.Module, n_dense: int) -> float:
    """Fraction of the dense FFN weights read per token, router included.

    Per layer: the gate rows of the (possibly pruned) layer — the router — plus the up rows
    and down rows of the routed neurons, over ``3 * n_dense`` rows; gate and up count only
    the share ``in_k / d`` of their columns under input sparsity. Averaged over the tokens
    seen since the last ``reset_stats`` and over layers.
    """
    layers = moe_layers(model)
    tot = 0.0
    for m in layers:
        if m.tokens == 0:
            raise ValueError("no tokens seen since reset_stats")
        tot += (m.gate_read + m.up_read + m.down_read) / m.tokens / (3 * n_dense)
    return tot / len(layers)


def prune_experts(model: nn.Module, usage: list[torch.Tensor], frac: float) -> list[torch.Tensor]:
    """Drop the ``frac`` least-used experts of every layer, physically (Lu et al. 2024).

    ``usage`` comes from :func:`expert_usage` on a calibration set; routing mass
    (``mass=True``) is the better criterion at neuron level, because a few rarely selected
    neurons carry very large activations when they fire. Returns the kept expert
    ids of each layer (ascending). Routing config and shared flags carry over.
    """
    if not 0.0 <= frac < 1.0:
        raise ValueError("frac must be in [0, 1)")
    kept_all = []
    for blk, u in zip(_blocks(model), usage, strict=True):
        m: MoEMLP = blk.mlp
        E, gs = m.n_experts, m.group_size
        kept = u.topk(E - int(round(frac * E))).indices.sort().values
        rows = (kept.unsqueeze(1) * gs + torch.arange(gs)).reshape(-1)
        new = MoEMLP(
            m.gate_proj.weight.data.index_select(0, rows),
            m.up_proj.weight.data.index_select(0, rows),
            m.down_proj.weight.data.index_select(1, rows),
            gs,
        )
        new.cfg = m.cfg
        new.shared.copy_(m.shared[kept])
        blk.mlp = new
        kept_all.append(kept)
    return kept_all


def coactivation_groups(active: torch.Tensor, group_size: int) -> torch.Tensor:
    """Neuron order that puts co-activated neurons into the same expert (greedy, balanced).

    ``active`` (T, n) bool: which neurons a calibration token routes to. Repeatedly seeds a
    group with the most used unassigned neuron and fills it with the unassigned neurons of
    highest Jaccard co-activation with the seed. Returns a permutation (n,) such that
    ``perm[e * group_size : (e + 1) * group_size]`` are expert e's neurons.
    """
    T, n = active.shape
    if n % group_size:
        raise ValueError(f"{n} neurons do not split into groups of {group_size}")
    a = active.float()
    inter = a.T @ a  # (n, n) co-activation counts
    count = inter.diagonal().clone()
    jac = inter / (count[:, None] + count[None, :] - inter).clamp_min(1.0)
    free = torch.ones(n, dtype=torch.bool)
    order = []
    for seed in count.argsort(descending=True).tolist():
        if not free[seed]:
            continue
        free[seed] = False
        sim = jac[seed].masked_fill(~free, -1.0)
        mates = sim.topk(group_size - 1).indices if group_size > 1 else sim[:0].long()
        free[mates] = False
        order.append(seed)
        order.extend(mates.tolist())
    return torch.tensor(order, dtype=torch.long)


def permute_neurons(mlp: MoEMLP, perm: torch.Tensor, group_size: int) -> MoEMLP:
    """The same FFN function with neurons reordered by ``perm`` and grouped into experts."""
    return MoEMLP(
        mlp.gate_proj.weight.data.index_select(0, perm),
        mlp.up_proj.weight.data.index_select(0, perm),
        mlp.down_proj.weight.data.index_select(1, perm),
        group_size,
    )
