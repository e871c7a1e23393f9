"""Store rows as the API's models: what every read of a unit or a message returns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from memos.store.models import MessageRow, UnitRow
from memos.types import Granularity, Kind, MemoryPublic, MessagePublic, Role, Status

__all__ = ["PUBLIC_COLUMNS", "unit_public", "message_public"]

#: The unit columns :func:`unit_public` reads (and ``pk``): a read of many units selects
#: these instead of whole rows, whose vector and payload metadata it does not need.
PUBLIC_COLUMNS = (UnitRow.pk, UnitRow.id, UnitRow.lineage_id, UnitRow.version, UnitRow.kind,
                  UnitRow.granularity, UnitRow.text, UnitRow.session_id, UnitRow.speaker,
                  UnitRow.status, UnitRow.status_reason, UnitRow.extractor,
                  UnitRow.payload_sha256, UnitRow.tags, UnitRow.meta, UnitRow.confidence,
                  UnitRow.valid_from, UnitRow.valid_to, UnitRow.created_at,
                  UnitRow.superseded_at)


def unit_public(row: UnitRow | Row[Any], cube_id: str) -> MemoryPublic:
    """``row`` of the cube whose public id is ``cube_id`` (rows hold its internal key): a
    whole row, or one of :data:`PUBLIC_COLUMNS` selected."""
    return MemoryPublic(
        id=row.id, cube_id=cube_id, lineage_id=row.lineage_id, version=row.version,
        kind=Kind(row.kind), granularity=Granularity(row.granularity), text=row.text,
        session_id=row.session_id, speaker=row.speaker, status=Status(row.status),
        status_reason=row.status_reason,
        extractor=row.extractor, payload_sha256=row.payload_sha256, tags=list(row.tags or []),
        metadata=dict(row.meta or {}), confidence=row.confidence, valid_from=row.valid_from,
        valid_to=row.valid_to, created_at=row.created_at, superseded_at=row.superseded_at)


def message_public(row: MessageRow) -> MessagePublic:
    return MessagePublic(id=row.id, session_id=row.session_id, role=Role(row.role),
                         speaker=row.speaker, content=row.content, timestamp=row.timestamp,
                         seq=row.seq, created_at=row.created_at, deleted_at=row.deleted_at)
