"""Export a cube to JSON and import it elsewhere (``memos.cube.v1``).

The export holds messages, every version of every plaintext unit (tombstones included, so
``as_of`` history survives), provenance spans and links — but no embeddings: the importing
server embeds the texts with its own model, so a cube can move between servers that use
different embedders. Activation and parametric payloads are model-specific and not exported.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from memos.cube import MemCube, content_hash, message_public
from memos.errors import Conflict, InvalidInput
from memos.store.models import CubeRow, LinkRow, MessageRow, SpanRow, UnitRow, utcnow
from memos.types import (
    CubeCreate,
    CubeExport,
    CubeImport,
    CubePublic,
    ExportedSpan,
    ExportedUnit,
    Granularity,
    Kind,
    LinkPublic,
    LinkType,
    Status,
)


def export_cube(memos: MemCube, cube_id: str, *, tenant: str) -> CubeExport:
    with memos.store.transaction() as session:
        cube = memos.cube_row(session, tenant, cube_id)
        messages = session.scalars(select(MessageRow).where(MessageRow.cube_id == cube_id)
                                   .order_by(MessageRow.session_id, MessageRow.seq)).all()
        message_ids = {m.pk: m.id for m in messages}
        units = session.scalars(select(UnitRow).where(
            UnitRow.cube_id == cube_id, UnitRow.kind == "plaintext")
            .order_by(UnitRow.created_at, UnitRow.pk)).all()
        unit_ids = {u.pk: u.id for u in units}
        spans: dict[int, list[ExportedSpan]] = {}
        for span in session.scalars(select(SpanRow).where(SpanRow.unit_pk.in_(unit_ids))):
            spans.setdefault(span.unit_pk, []).append(ExportedSpan(
                message_id=message_ids[span.message_pk], start=span.start, end=span.end))
        links = [LinkPublic(source_id=unit_ids[lr.src_pk], target_id=unit_ids[lr.dst_pk],
                            type=LinkType(lr.type), weight=lr.weight)
                 for lr in session.scalars(select(LinkRow).where(LinkRow.cube_id == cube_id))
                 if lr.src_pk in unit_ids and lr.dst_pk in unit_ids]
        return CubeExport(
            cube=CubeCreate(id=cube.id, name=cube.name, description=cube.description,
                            metadata=dict(cube.meta or {})),
            exported_at=utcnow(), embedding_model=cube.embedding_model,
            messages=[message_public(m) for m in messages],
            units=[ExportedUnit(
                id=u.id, lineage_id=u.lineage_id, version=u.version, kind=Kind(u.kind),
                granularity=Granularity(u.granularity), text=u.text, session_id=u.session_id,
                speaker=u.speaker, extractor=u.extractor, status=Status(u.status),
                status_reason=u.status_reason, tags=list(u.tags or []),
                metadata=dict(u.meta or {}), confidence=u.confidence, valid_from=u.valid_from,
                valid_to=u.valid_to, created_at=u.created_at, superseded_at=u.superseded_at,
                deleted_at=u.deleted_at, spans=spans.get(u.pk, [])) for u in units],
            links=links)


def import_cube(memos: MemCube, body: CubeImport, *, tenant: str) -> CubePublic:
    data = body.data
    cube_id = body.id or data.cube.id
    if cube_id is None:
        raise InvalidInput("give an id for the imported cube")
    remap = {u.id: (uuid.uuid4().hex if body.new_ids else u.id) for u in data.units}
    lineages = {u.lineage_id: remap.get(u.lineage_id, u.lineage_id) for u in data.units}
    texts = [u.text for u in data.units if u.text is not None]
    vectors = iter(memos.embed(texts)) if texts else iter(())
    with memos.write() as (session, _publish):
        if session.get(CubeRow, cube_id) is not None:
            raise Conflict(f"cube {cube_id!r} already exists", details={"cube_id": cube_id})
        taken = session.scalars(select(UnitRow.id).where(UnitRow.id.in_(remap.values()))).all()
        if taken:
            raise Conflict(f"{len(taken)} unit ids already exist on this server; import "
                           "with new_ids=true", details={"example_id": taken[0]})
        session.add(CubeRow(id=cube_id, tenant=tenant, name=data.cube.name,
                            description=data.cube.description, meta=data.cube.metadata,
                            embedding_model=memos.embedder.name,
                            embedding_dim=memos.embedder.dim, index_version=1,
                            created_at=utcnow()))
        session.flush()
        message_pks: dict[str, int] = {}
        for m in data.messages:
            message = MessageRow(id=m.id, cube_id=cube_id, session_id=m.session_id, seq=m.seq,
                             role=m.role.value, speaker=m.speaker, content=m.content,
                             content_sha=content_hash(m.role.value, m.speaker, m.content,
                                              m.timestamp.isoformat() if m.timestamp else None),
                             timestamp=m.timestamp, created_at=m.created_at)
            session.add(message)
            session.flush()
            message_pks[m.id] = message.pk
        unit_pks: dict[str, int] = {}
        for u in data.units:
            missing = [s.message_id for s in u.spans if s.message_id not in message_pks]
            if missing:
                raise InvalidInput(f"unit {u.id} cites unknown messages {missing[:3]}")
            row = UnitRow(
                id=remap[u.id], cube_id=cube_id, tenant=tenant, lineage_id=lineages[u.lineage_id],
                version=u.version, kind=u.kind.value, granularity=u.granularity.value,
                text=u.text, content_sha=content_hash(u.text) if u.text is not None else None,
                session_id=u.session_id, speaker=u.speaker, extractor=u.extractor,
                status=u.status.value, status_reason=u.status_reason, tags=u.tags,
                meta=u.metadata, confidence=u.confidence, valid_from=u.valid_from,
                valid_to=u.valid_to, created_at=u.created_at, superseded_at=u.superseded_at,
                deleted_at=u.deleted_at, embedding=next(vectors) if u.text is not None else None)
            session.add(row)
            session.flush()
            unit_pks[u.id] = row.pk
            memos.set_tags(session, row, u.tags)
            for s in u.spans:
                session.add(SpanRow(unit_pk=row.pk, message_pk=message_pks[s.message_id],
                                    start=s.start, end=s.end))
        for link in data.links:
            if link.source_id in unit_pks and link.target_id in unit_pks:
                session.add(LinkRow(cube_id=cube_id, src_pk=unit_pks[link.source_id],
                                    dst_pk=unit_pks[link.target_id], type=link.type.value,
                                    weight=link.weight, created_at=utcnow()))
    # The new cube's index is built from SQL on its first search.
    return memos.get_cube(cube_id, tenant=tenant)
