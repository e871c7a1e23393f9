"""Fact memory: the deriver that turns a session's messages into ``fact`` units.

extract (:mod:`memos.extract.rules`) → faithfulness gate (:mod:`memos.extract.gate`) →
update decision (:mod:`memos.extract.update`) → store, in one transaction per session:

- supported facts become active ``fact`` units citing their source span;
- unsupported ones are stored ``quarantined`` with the gate's reasons (never searchable);
- UPDATE / DELETE make the new fact the next version of the old fact's lineage; the old
  version is ``superseded`` with ``valid_to`` = when it stopped being true (and the new
  one, unless it states its own date, is valid from then), so the history keeps every
  value;
- NOOP (already known) records the extra source span on the existing fact.

Idempotent: a fact already stored for the same source span and text (in any status but
retired by a correction of its source) is skipped, so replaying a session, or a job re-run
after a crash, changes nothing. Deleted messages are never extracted from.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from memos.derive import DeriveContext
from memos.derive.sources import retired_by_correction
from memos.extract import (
    Action,
    ActiveFact,
    ExtractInput,
    Extractor,
    LLMExtractor,
    LLMUpdater,
    PlannedFact,
    RulesExtractor,
    RulesUpdater,
    Updater,
    ingest_plan,
)
from memos.store.lineage import queue_stale_rebuild
from memos.store.models import CubeRow, LinkRow, MessageRow, SpanRow, TagRow, UnitRow, utcnow
from memos.store.units import content_hash, new_unit


class FactDeriver:
    """A :class:`memos.derive.Deriver` writing extracted facts for each ingested session."""

    name = "facts"

    def __init__(self, extractor: Extractor | None = None, updater: Updater | None = None) -> None:
        self.extractor = extractor or RulesExtractor()
        self.updater = updater or RulesUpdater()

    @classmethod
    def from_setting(cls, value: str) -> FactDeriver | None:
        """``rules`` (offline default), ``none``, or ``llm:<litellm model>``."""
        if value == "none":
            return None
        if value == "rules":
            return cls()
        if value.startswith("llm:") and len(value) > 4:
            model = value[4:]
            return cls(LLMExtractor(model), LLMUpdater(model))
        raise ValueError(f"unknown extractor {value!r}: use 'rules', 'none' or 'llm:<model>'")

    def derive_session(self, ctx: DeriveContext, *, cube_id: str, session_id: str,
                       tenant: str) -> None:
        with ctx.units.store.transaction() as session:
            cube_row = ctx.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            user_name = (cube_row.meta or {}).get("user_name")
            messages = session.scalars(select(MessageRow).where(
                MessageRow.cube_key == cube_row.key, MessageRow.session_id == session_id,
                MessageRow.deleted_at.is_(None)).order_by(MessageRow.seq)).all()
            active_rows = session.scalars(select(UnitRow).where(
                UnitRow.cube_key == cube_row.key, UnitRow.granularity == "fact",
                UnitRow.status == "active")).all()
            # Facts retired because their source message was corrected are extracted anew
            # from the corrected text; every other fact (deleted, quarantined…) is known.
            known = {_key(r.meta, r.text) for r in session.scalars(select(UnitRow).where(
                UnitRow.cube_key == cube_row.key, UnitRow.session_id == session_id,
                UnitRow.granularity == "fact")) if not retired_by_correction(r)}
        if not messages:
            return
        # A user message without a speaker is the cube's user: ``metadata.user_name`` names
        # them, for the facts ("Ana's dog…" rather than "The user's dog…") and for the gate.
        if not isinstance(user_name, str) or not user_name.strip():
            user_name = None
        inputs = [ExtractInput(id=m.id, role=m.role, content=m.content, timestamp=m.timestamp,
                               speaker=m.speaker or (user_name if m.role == "user" else None))
                  for m in messages]
        active = [ActiveFact.from_metadata(r.id, r.text or "", dict(r.meta or {}))
                  for r in active_rows]
        # Later facts of the batch may update earlier ones: they refer to them by the ids
        # handed out here, which are the ids the units are stored under.
        ids: dict[int, str] = {}
        planned = ingest_plan(inputs, active, extractor=self.extractor, updater=self.updater,
                              id_factory=lambda f: ids.setdefault(id(f), uuid.uuid4().hex))
        fresh = [p for p in planned if p.status != "noop"
                 and _key(p.fact.metadata(), p.fact.text) not in known]
        vectors = ctx.embed([p.fact.text for p in fresh])
        self._store(ctx, cube_id=cube_id, session_id=session_id, tenant=tenant,
                    planned=planned, fresh=fresh, vectors=vectors, ids=ids,
                    message_pks={m.id: m.pk for m in messages},
                    read={m.pk: m.content for m in messages})

    def _store(self, ctx: DeriveContext, *, cube_id: str, session_id: str, tenant: str,
               planned: Sequence[PlannedFact], fresh: Sequence[PlannedFact], vectors: np.ndarray,
               ids: dict[int, str], message_pks: dict[str, int],
               read: dict[int, str]) -> None:
        now = utcnow()
        vector_of = {id(p): v for p, v in zip(fresh, vectors)}
        add_pks: list[int] = []
        add_vectors: list[np.ndarray] = []
        remove_pks: list[int] = []
        with ctx.units.write() as (session, publish):
            cube_row = ctx.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            live = {pk: content for pk, content in session.execute(select(
                MessageRow.pk, MessageRow.content).where(
                MessageRow.pk.in_(list(read)), MessageRow.deleted_at.is_(None)))}
            if live != read:
                # A source message was deleted, corrected or purged since it was read: the
                # change queued this session's next job, which extracts from what is there.
                return
            pending: list[tuple[PlannedFact, UnitRow, UnitRow | None]] = []
            for p in planned:
                fact = p.fact
                if p.status == "noop":
                    if p.decision and p.decision.target_fact_id:
                        _add_source(session, cube_row, p.decision.target_fact_id,
                                    fact.source_message_id, fact.span, message_pks)
                    continue
                if id(p) not in vector_of:
                    continue  # stored by an earlier run of this session
                target = None
                decision = p.decision
                if p.status == "active" and decision and decision.action in (
                        Action.UPDATE, Action.DELETE) and decision.target_fact_id:
                    target = session.scalar(select(UnitRow).where(
                        UnitRow.id == decision.target_fact_id, UnitRow.cube_key == cube_row.key,
                        UnitRow.status == "active"))
                unit_id = ids.get(id(fact)) or uuid.uuid4().hex
                row = new_unit(
                    unit_id=unit_id, cube=cube_row,
                    lineage_id=target.lineage_id if target is not None else unit_id,
                    version=target.version + 1 if target is not None else 1,
                    kind="plaintext", granularity="fact", text=fact.text,
                    content_sha=content_hash(fact.text), session_id=session_id,
                    speaker=fact.subject or None, extractor=fact.extractor_id,
                    status=p.status, status_reason=p.status_reason if p.status ==
                    "quarantined" else (decision.reason if decision else None),
                    tags=[_memory_tag(fact.memory_type)], meta=fact.metadata(),
                    confidence=fact.confidence,
                    # the next version holds from when the one it replaces stopped holding
                    valid_from=fact.valid_from or (decision.valid_to if target is not None
                                                   and decision is not None else None),
                    valid_to=fact.valid_to, created_at=now, embedding=vector_of[id(p)])
                session.add(row)
                pending.append((p, row, target))
            # one flush gives every new row its key (a flush per row was most of the write)
            session.flush()
            for p, row, target in pending:
                fact, decision = p.fact, p.decision
                session.add(TagRow(unit_pk=row.pk, tag=row.tags[0]))
                message_pk = message_pks.get(fact.source_message_id)
                if message_pk is not None:
                    session.add(SpanRow(unit_pk=row.pk, message_pk=message_pk,
                                        start=fact.span[0], end=fact.span[1]))
                if target is not None and decision is not None:
                    # the target, and what the new fact ends with it (retiring ends the job
                    # and the "is employed" status), stop holding when the new fact begins
                    ended = [target, *session.scalars(select(UnitRow).where(
                        UnitRow.id.in_(decision.also_ends), UnitRow.cube_key == cube_row.key,
                        UnitRow.status == "active"))] if decision.also_ends else [target]
                    for old in ended:
                        old.status, old.superseded_at = "superseded", now
                        old.valid_to = decision.valid_to or fact.valid_from or now
                        old.status_reason = f"{decision.action.value.lower()}: {decision.reason}"
                        session.add(LinkRow(cube_key=cube_row.key, src_pk=row.pk, dst_pk=old.pk,
                                            type="supersedes", weight=1.0, created_at=now))
                        remove_pks.append(old.pk)
                if p.status == "active":
                    add_pks.append(row.pk)
                    add_vectors.append(vector_of[id(p)])
            if add_pks or remove_pks:
                ctx.units.bump_index_version(cube_row)
                publish(cube_row, remove=remove_pks, add=add_pks,
                        vectors=np.stack(add_vectors) if add_vectors else None)
            # superseded facts may feed a KV cache or an adapter: rebuild those
            queued = queue_stale_rebuild(session, ctx.jobs, cube=cube_row, changed=remove_pks)
        if queued:
            ctx.jobs.wake()


def _key(meta: dict[str, Any] | None, text: str | None) -> tuple[str, tuple[int, ...], str]:
    meta = meta or {}
    return (str(meta.get("source_message_id", "")), tuple(meta.get("span") or ()), text or "")


def _memory_tag(memory_type: object) -> str:
    value = getattr(memory_type, "value", memory_type)
    return str(value).split()[0].lower()  # "Persona Memory" → "persona"


def _add_source(session: Session, cube: CubeRow, target_id: str, message_id: str,
                span: tuple[int, int], message_pks: dict[str, int]) -> None:
    message_pk = message_pks.get(message_id)
    target = session.scalar(select(UnitRow).where(UnitRow.cube_key == cube.key,
                                                  UnitRow.id == target_id))
    if message_pk is None or target is None:
        return
    exists = session.scalar(select(SpanRow.pk).where(
        SpanRow.unit_pk == target.pk, SpanRow.message_pk == message_pk,
        SpanRow.start == span[0], SpanRow.end == span[1]))
    if exists is None:
        session.add(SpanRow(unit_pk=target.pk, message_pk=message_pk, start=span[0],
                            end=span[1]))

