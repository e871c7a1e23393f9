"""Which model memory is stale, and the plaintext units model memory is built from.

A KV cache or adapter whose source units are no longer active (superseded, deleted,
archived) is archived with :data:`STALE_REASON` (:func:`mark_stale`); the rebuild job
recompiles caches from the sources' current versions. Pure SQL: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select

from memos.errors import InvalidInput, NotFound
from memos.store.models import LinkRow, UnitRow, utcnow
from memos.store.units import UnitRepository

__all__ = ["STALE_REASON", "source_rows", "mark_stale", "model_unit_ids",
           "active_plaintext_units"]

#: ``status_reason`` of an activation/parametric unit whose sources changed.
STALE_REASON = "stale: source changed"


def source_rows(session: Any, unit: UnitRow) -> list[UnitRow]:
    """The units ``unit`` was derived from (its ``derived_from`` links), any status."""
    return list(session.scalars(select(UnitRow).join(LinkRow, LinkRow.dst_pk == UnitRow.pk)
                                .where(LinkRow.src_pk == unit.pk,
                                       LinkRow.type == "derived_from")
                                .order_by(LinkRow.pk)).all())


def mark_stale(units: UnitRepository, cube_id: str, *, tenant: str,
               kinds: Sequence[str] = ("activation", "parametric"),
               on_stale: Callable[[UnitRow, list[UnitRow]], None] | None = None) -> list[str]:
    """Archive active model-memory units any of whose sources is no longer active.

    A source that was superseded (a new version), deleted or archived changes what the
    derived KV cache / adapter should contain, so the derived unit is archived with
    ``status_reason`` :data:`STALE_REASON` and ``metadata.stale_sources`` listing the
    source ids. Returns the ids archived. ``on_stale(row, sources)`` is called inside the
    transaction (the rebuild job uses it to plan a replacement).
    """
    archived: list[str] = []
    with units.write() as (session, _publish):
        key = units.cube_row(session, cube_id=cube_id, tenant=tenant).key
        rows = session.scalars(select(UnitRow).where(
            UnitRow.cube_key == key, UnitRow.kind.in_(list(kinds)),
            UnitRow.status == "active")).all()
        now = utcnow()
        for row in rows:
            sources = source_rows(session, row)
            changed = [s.id for s in sources if s.status != "active"]
            if not changed:
                continue
            row.status, row.status_reason = "archived", STALE_REASON
            row.meta = {**(row.meta or {}), "stale_sources": changed,
                        "stale_at": now.isoformat()}
            archived.append(row.id)
            if on_stale is not None:
                on_stale(row, sources)
    return archived


def model_unit_ids(units: UnitRepository, cube_id: str, kind: str, *, tenant: str,
                   active_only: bool = True) -> list[str]:
    """Ids of the tenant's cube's units of ``kind`` (``activation`` or ``parametric``),
    active ones unless ``active_only`` is false, newest first."""
    with units.store.transaction() as session:
        key = units.cube_row(session, cube_id=cube_id, tenant=tenant).key
        query = select(UnitRow.id).where(UnitRow.cube_key == key, UnitRow.kind == kind)
        if active_only:
            query = query.where(UnitRow.status == "active")
        return list(session.scalars(query.order_by(UnitRow.created_at.desc(),
                                                   UnitRow.pk.desc())))


def active_plaintext_units(units: UnitRepository, cube_id: str, unit_ids: Sequence[str], *,
                           tenant: str) -> list[UnitRow]:
    """The units ``unit_ids`` (duplicates dropped, order kept) of the tenant's cube, each an
    active plaintext unit with text: the sources of a KV cache or an adapter. An unknown or
    deleted id is :class:`NotFound`; any other unit is :class:`InvalidInput`."""
    ids = list(dict.fromkeys(unit_ids))
    with units.store.transaction() as session:
        key = units.cube_row(session, cube_id=cube_id, tenant=tenant).key
        rows = {r.id: r for r in session.scalars(select(UnitRow).where(
            UnitRow.cube_key == key, UnitRow.id.in_(ids)))}
    out = []
    for uid in ids:
        row = rows.get(uid)
        if row is None or row.status == "deleted":
            raise NotFound(f"memory {uid!r} not found in cube {cube_id!r}",
                           details={"memory_id": uid})
        if row.kind != "plaintext" or row.status != "active" or not row.text:
            raise InvalidInput(f"memory {uid!r} is not an active plaintext unit",
                               details={"memory_id": uid, "kind": row.kind,
                                        "status": row.status})
        out.append(row)
    return out
