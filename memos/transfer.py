"""Export a cube to JSON and import it elsewhere (``memos.cube.v1``).

The export holds messages, every version of every plaintext unit (tombstones included, so
``as_of`` history survives), provenance spans and links — but no embeddings: the importing
server embeds the texts with its own model, so a cube can move between servers that use
different embedders.

Activation and parametric units are model-specific and large (a 1,024-token KV cache of the
bundled model is ~45 MB), so they are exported only when asked (``include_payloads``): the
active ones, each with its safetensors payload in base64, its ``payload_meta`` (model
fingerprint) and its ``derived_from`` links. On import every payload is checked — base64,
sha256, a readable safetensors header whose fingerprint equals the unit's — and stored in
the blob store; a unit built for another model than the importing server's (when that
server has the bundled model) is imported ``archived``, with the differing fields named.

    data = export_cube(memos, "ana", tenant="t", blobs=BlobStore(root))
    import_cube(memos, CubeImport(data=data, id="ana2", new_ids=True), tenant="t",
                blobs=BlobStore(root), fingerprint=lambda: model_fingerprint(backbone))
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from memos.cube import MemCube
from memos.errors import Conflict, InvalidInput
from memos.public import message_public
from memos.store.blobs import BlobStore, read_safetensors_metadata
from memos.store.models import CubeRow, LinkRow, MessageRow, SpanRow, UnitRow, utcnow
from memos.store.units import content_hash, new_cube_key, new_unit
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
    MessagePublic,
    Status,
)

#: The payload metadata that must agree between a unit and its safetensors header.
FINGERPRINT_FIELDS = ("backbone", "tokenizer", "rope", "dtype", "variant")


def export_cube(memos: MemCube, cube_id: str, *, tenant: str,
                blobs: BlobStore | None = None) -> CubeExport:
    """The cube as JSON; with ``blobs``, its active activation and parametric units too,
    payloads in base64 (``Conflict`` if one is missing from the blob store)."""
    kinds = ["plaintext"] if blobs is None else ["plaintext", "activation", "parametric"]
    with memos.store.transaction() as session:
        cube = memos.units.cube_row(session, cube_id=cube_id, tenant=tenant)
        messages = session.scalars(select(MessageRow).where(MessageRow.cube_key == cube.key)
                                   .order_by(MessageRow.session_id, MessageRow.seq)).all()
        message_ids = {m.pk: m.id for m in messages}
        units = [u for u in session.scalars(select(UnitRow).where(
            UnitRow.cube_key == cube.key, UnitRow.kind.in_(kinds))
            .order_by(UnitRow.created_at, UnitRow.pk)).all()
            if u.kind == "plaintext" or u.status == "active"]
        unit_ids = {u.pk: u.id for u in units}
        spans: dict[int, list[ExportedSpan]] = {}
        for span in session.scalars(select(SpanRow).where(SpanRow.unit_pk.in_(unit_ids))):
            spans.setdefault(span.unit_pk, []).append(ExportedSpan(
                message_id=message_ids[span.message_pk], start=span.start, end=span.end))
        links = [LinkPublic(source_id=unit_ids[lr.src_pk], target_id=unit_ids[lr.dst_pk],
                            type=LinkType(lr.type), weight=lr.weight)
                 for lr in session.scalars(select(LinkRow).where(LinkRow.cube_key == cube.key))
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
                deleted_at=u.deleted_at, spans=spans.get(u.pk, []),
                **_payload(u, blobs)) for u in units],
            links=links)


def _payload(unit: UnitRow, blobs: BlobStore | None) -> dict[str, Any]:
    if unit.kind == "plaintext" or blobs is None or unit.payload_sha256 is None:
        return {}
    data = blobs.read_bytes(unit.payload_sha256)
    return {"payload_sha256": unit.payload_sha256, "payload_meta": dict(unit.payload_meta or {}),
            "payload": base64.b64encode(data).decode("ascii")}


def _check_payload(unit: ExportedUnit) -> bytes:
    """The decoded payload of an exported activation/parametric unit, verified."""
    if not unit.payload or not unit.payload_sha256:
        raise InvalidInput(f"{unit.kind.value} unit {unit.id} has no payload; export with "
                           "include_payloads=true", details={"unit_id": unit.id})
    try:
        data = base64.b64decode(unit.payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"payload of unit {unit.id} is not valid base64",
                           details={"unit_id": unit.id}) from exc
    if hashlib.sha256(data).hexdigest() != unit.payload_sha256:
        raise InvalidInput(f"payload of unit {unit.id} does not match its sha256",
                           details={"unit_id": unit.id})
    header = read_safetensors_metadata(data)
    declared = unit.payload_meta or {}
    differ = [k for k in FINGERPRINT_FIELDS if header.get(k) != declared.get(k)]
    if differ:
        raise InvalidInput(f"payload of unit {unit.id} carries another fingerprint than the "
                           f"unit ({', '.join(differ)} differ)",
                           details={"unit_id": unit.id, "fields": differ})
    return data


def _message_sha(m: MessagePublic) -> str:
    """The dedupe hash a message is stored under: of what was said, as ingest computes it;
    a purged message (deleted, no content) gets one of its own, so it matches nothing."""
    if m.deleted_at is not None and not m.content:
        return f"purged:{m.id}"
    return content_hash(m.role.value, m.speaker, m.content,
                        m.timestamp.isoformat() if m.timestamp else None)


def _check_unique(data: CubeExport) -> None:
    """``InvalidInput`` naming the first id (or key) the document holds twice: what the
    store's unique constraints would otherwise refuse halfway through the write."""
    keys: dict[str, list[tuple[str, Any]]] = {
        "message id": [(m.id, m.id) for m in data.messages],
        "message (session_id, seq)": [(f"{m.session_id}#{m.seq}", (m.session_id, m.seq))
                                      for m in data.messages],
        "message content in a session": [(m.id, (m.session_id, _message_sha(m)))
                                         for m in data.messages],
        "unit id": [(u.id, u.id) for u in data.units],
        "unit (lineage_id, version)": [(f"{u.lineage_id} v{u.version}",
                                        (u.lineage_id, u.version)) for u in data.units],
        "link (source_id, target_id, type)": [
            (f"{lk.source_id} -> {lk.target_id} ({lk.type.value})",
             (lk.source_id, lk.target_id, lk.type)) for lk in data.links],
    }
    for what, items in keys.items():
        seen: set[Any] = set()
        for name, key in items:
            if key in seen:
                raise InvalidInput(f"the export holds {what} {name!r} twice",
                                   details={"duplicate": name, "field": what})
            seen.add(key)


@contextmanager
def _raced(cube_id: str) -> Iterator[None]:
    """``Conflict`` when another request created the cube or one of its unit ids between
    the checks inside the write and its commit."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"cube {cube_id!r} or one of its unit ids was created by another "
                       "request at the same time", details={"cube_id": cube_id}) from exc


def import_cube(memos: MemCube, body: CubeImport, *, tenant: str,
                blobs: BlobStore | None = None,
                fingerprint: Callable[[], dict[str, str] | None] | None = None) -> CubePublic:
    """Recreate an exported cube. Activation/parametric units need ``blobs`` (their payloads
    are verified and stored there); ``fingerprint()`` gives the running model's fingerprint
    (None when there is no bundled model), asked only when such units are imported."""
    data = body.data
    cube_id = body.id or data.cube.id or f"cube_{uuid.uuid4().hex[:16]}"
    _check_unique(data)
    memos.limits.check_import(data)
    remap = {u.id: (uuid.uuid4().hex if body.new_ids else u.id) for u in data.units}
    lineages = {u.lineage_id: remap.get(u.lineage_id, u.lineage_id) for u in data.units}
    model_units = [u for u in data.units if u.kind is not Kind.plaintext]
    if model_units and blobs is None:
        raise InvalidInput("this server cannot import activation or parametric units (no "
                           "blob store)")
    payloads = {u.id: _check_payload(u) for u in model_units}  # all verified before writing
    current = fingerprint() if (model_units and fingerprint is not None) else None
    texts = [u.text for u in data.units if u.text is not None and u.kind is Kind.plaintext]
    vectors = iter(memos.embed(texts)) if texts else iter(())
    with _raced(cube_id), memos.units.write() as (session, _publish):
        # Unit and message ids are unique within their cube, and this cube is new: ids that
        # exist in other cubes (any tenant's) neither collide nor show.
        if session.scalar(select(CubeRow.key).where(CubeRow.tenant == tenant,
                                                    CubeRow.id == cube_id)):
            raise Conflict(f"cube {cube_id!r} already exists", details={"cube_id": cube_id})
        cube = CubeRow(key=new_cube_key(), id=cube_id, tenant=tenant, name=data.cube.name,
                       description=data.cube.description, meta=data.cube.metadata,
                       embedding_model=memos.embedder.name,
                       embedding_dim=memos.embedder.dim,
                       embedder=memos.embedders.default_spec, index_version=1,
                       created_at=utcnow())
        session.add(cube)
        session.flush()
        message_pks: dict[str, int] = {}
        message_lengths = {m.id: len(m.content) for m in data.messages}
        for m in data.messages:
            message = MessageRow(id=m.id, cube_key=cube.key, session_id=m.session_id,
                                 seq=m.seq, role=m.role.value, speaker=m.speaker,
                                 content=m.content, content_sha=_message_sha(m),
                                 timestamp=m.timestamp, created_at=m.created_at,
                                 deleted_at=m.deleted_at)
            session.add(message)
            session.flush()
            message_pks[m.id] = message.pk
        unit_pks: dict[str, int] = {}
        for u in data.units:
            missing = [s.message_id for s in u.spans if s.message_id not in message_pks]
            if missing:
                raise InvalidInput(f"unit {u.id} cites unknown messages {missing[:3]}")
            plain = u.kind is Kind.plaintext
            status, reason, meta = u.status.value, u.status_reason, u.metadata
            sha = None
            if not plain:
                assert blobs is not None
                sha = blobs.put_bytes(payloads[u.id])
                meta = {**meta, "sources": [remap.get(s, s) for s in meta.get("sources", [])],
                        "job_id": None}  # another server's job ids mean nothing here
                differ = sorted(k for k, v in (current or {}).items()
                                if k in FINGERPRINT_FIELDS and (u.payload_meta or {}).get(k) != v)
                if differ and status == "active":
                    status = "archived"
                    reason = f"built for another model ({', '.join(differ)} differ)"
            row = new_unit(
                unit_id=remap[u.id], cube=cube, lineage_id=lineages[u.lineage_id],
                version=u.version, kind=u.kind.value, granularity=u.granularity.value,
                text=u.text, content_sha=content_hash(u.text) if u.text is not None else None,
                session_id=u.session_id, speaker=u.speaker, extractor=u.extractor,
                status=status, status_reason=reason, tags=u.tags,
                meta=meta, confidence=u.confidence, valid_from=u.valid_from,
                valid_to=u.valid_to, created_at=u.created_at, superseded_at=u.superseded_at,
                deleted_at=u.deleted_at, payload_sha256=sha,
                payload_meta=u.payload_meta if not plain else None,
                embedding=next(vectors) if plain and u.text is not None else None)
            session.add(row)
            session.flush()
            unit_pks[u.id] = row.pk
            memos.units.set_tags(session, row, u.tags)
            for s in u.spans:
                start, end = s.start, s.end
                if u.granularity is Granularity.session:
                    # exports before migration 0007 gave transcript offsets: cite the message
                    start, end = 0, message_lengths[s.message_id]
                session.add(SpanRow(unit_pk=row.pk, message_pk=message_pks[s.message_id],
                                    start=start, end=end))
        for link in data.links:
            if link.source_id in unit_pks and link.target_id in unit_pks:
                session.add(LinkRow(cube_key=cube.key, src_pk=unit_pks[link.source_id],
                                    dst_pk=unit_pks[link.target_id], type=link.type.value,
                                    weight=link.weight, created_at=utcnow()))
    # The new cube's index is built from SQL on its first search.
    return memos.get_cube(cube_id, tenant=tenant)
