"""``/v1/cubes``: create, list, read and delete cubes; ingest messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.deps import MemosDep, MetricsDep, ModelMemoryDep, TenantDep
from api.responses import ERRORS
from memos.memory import model_fingerprint
from memos.transfer import export_cube, import_cube
from memos.types import (
    MAX_INT,
    CubeCreate,
    CubeExport,
    CubeImport,
    CubePublic,
    EmbedderSwitch,
    Granularity,
    IngestResult,
    MemoryPublic,
    MessagesIngest,
    ReembedJob,
)

router = APIRouter(prefix="/v1/cubes", tags=["cubes"], responses=ERRORS)


@router.post("", response_model=CubePublic, status_code=status.HTTP_201_CREATED)
def create_cube(body: CubeCreate, memos: MemosDep, tenant: TenantDep) -> CubePublic:
    """Create a cube (409 if the id exists). Unknown cubes are never created implicitly."""
    return memos.create_cube(body, tenant=tenant)


@router.post("/import", response_model=CubePublic, status_code=status.HTTP_201_CREATED)
def import_(body: CubeImport, memos: MemosDep, mm: ModelMemoryDep,
            tenant: TenantDep) -> CubePublic:
    """Recreate an exported cube (texts are re-embedded with this server's model).
    Activation/parametric payloads are verified (sha256, fingerprint) and stored; units
    built for another model than this server's bundled one are imported archived."""

    def fingerprint() -> dict[str, str] | None:
        return model_fingerprint(mm.provider()) if mm.provider.available() else None

    return import_cube(memos, body, tenant=tenant, blobs=mm.blobs, fingerprint=fingerprint)


@router.get("", response_model=list[CubePublic])
def list_cubes(memos: MemosDep, tenant: TenantDep) -> list[CubePublic]:
    return memos.list_cubes(tenant=tenant)


@router.get("/{cube_id}", response_model=CubePublic)
def get_cube(cube_id: str, memos: MemosDep, tenant: TenantDep) -> CubePublic:
    return memos.get_cube(cube_id, tenant=tenant)


@router.delete("/{cube_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_cube(cube_id: str, memos: MemosDep, tenant: TenantDep) -> Response:
    memos.delete_cube(cube_id, tenant=tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{cube_id}/embedder", response_model=ReembedJob,
             status_code=status.HTTP_202_ACCEPTED)
def switch_embedder(cube_id: str, body: EmbedderSwitch, memos: MemosDep,
                    tenant: TenantDep) -> ReembedJob:
    """Re-embed the cube with another embedder: a ``reembed_cube`` job (poll
    ``GET /embedder/jobs/{job_id}``). Searches use the old vectors until the job switches
    the cube over in one commit. 422: the embedder is not allowed here or does not load;
    409: the cube already uses it, or is being re-embedded."""
    return memos.switch_embedder(cube_id, body, tenant=tenant)


@router.get("/{cube_id}/embedder/jobs/{job_id}", response_model=ReembedJob)
def reembed_job(cube_id: str, job_id: Annotated[int, Path(ge=1, le=MAX_INT)],
                memos: MemosDep, tenant: TenantDep) -> ReembedJob:
    """Status and progress (0..1) of a re-embed job of the cube."""
    return memos.reembed_job(cube_id, job_id, tenant=tenant)


@router.get("/{cube_id}/export", response_model=CubeExport)
def export(cube_id: str, memos: MemosDep, mm: ModelMemoryDep, tenant: TenantDep,
           include_payloads: bool = False) -> CubeExport:
    """The whole cube as JSON: messages, every unit version, spans and links; with
    ``include_payloads=true`` also the active activation/parametric units, their
    safetensors payloads in base64 (large: a 1,024-token KV cache is ~45 MB)."""
    return export_cube(memos, cube_id, tenant=tenant,
                       blobs=mm.blobs if include_payloads else None)


@router.post("/{cube_id}/messages", response_model=IngestResult,
             status_code=status.HTTP_201_CREATED)
def ingest(cube_id: str, body: MessagesIngest, memos: MemosDep, tenant: TenantDep,
           metrics: MetricsDep) -> IngestResult:
    """Store a conversation's messages: a ``turn`` unit per message and a ``session`` unit.

    Idempotent: re-sent message ids (or identical messages within the session) are skipped.
    """
    result = memos.ingest(cube_id, body, tenant=tenant)
    metrics.observe_ingest(stored=result.messages_stored, skipped=result.messages_skipped,
                           units=result.units_created)
    return result


@router.get("/{cube_id}/sessions/{session_id}/memories", response_model=list[MemoryPublic])
def session_memories(cube_id: str, session_id: str, memos: MemosDep, tenant: TenantDep,
                     granularity: Granularity = Granularity.fact) -> list[MemoryPublic]:
    """Memories derived from one session (default: extracted facts), any status but deleted:
    what extraction produced, including quarantined facts with their reason."""
    return memos.session_memories(cube_id, session_id, tenant=tenant, granularity=granularity)
