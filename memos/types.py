"""Pydantic schemas shared by the library, the API and the client.

Schemas are split by role (``…Create`` for input, ``…Update`` for patches, ``…Public`` for
output) over small shared bases. Nothing here imports SQLAlchemy, torch or faiss: the SDK
installs with these schemas and httpx alone.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict

#: Largest integer any field or parameter accepts: the largest every JSON client carries
#: exactly (2^53 - 1; a 64-bit column holds more, a JavaScript number does not).
MAX_INT = 2**53 - 1

_EPOCH_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _iso_only(value: Any) -> Any:
    """Pydantic also reads a number, or a numeric string, as Unix seconds; the schema's
    ``format: date-time`` does not allow them, so neither does the server."""
    if isinstance(value, (int, float)) or (
            isinstance(value, str) and _EPOCH_NUMBER.fullmatch(value.strip())):
        raise ValueError("a date-time is an ISO 8601 string, e.g. 2024-05-01T12:00:00Z")
    return value


def _in_utc_range(value: datetime) -> datetime:
    """Stored in UTC: ``0001-01-01T00:00:00+01:00`` has no UTC year, so it is refused; so is
    any time on the first and last day (0001-01-01, 9999-12-31), whose UTC year depends on
    the offset, as the schema's pattern says."""
    if (value.year, value.month, value.day) in ((1, 1, 1), (9999, 12, 31)):
        raise ValueError("the date-time is outside years 1-9999 in UTC: use 0001-01-02 .. "
                         "9999-12-30")
    if value.tzinfo is not None:
        try:
            value.astimezone(timezone.utc)
        except OverflowError as exc:
            raise ValueError("the date-time is outside years 1-9999 in UTC") from exc
    return value


#: A date-time field: an ISO 8601 string (or a ``datetime``), never epoch seconds, within
#: years 1-9999 once in UTC (the first and last day excluded: their UTC year depends on the offset).
Timestamp = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_in_utc_range),
                      Field(json_schema_extra={"pattern": r"^(?!0001-01-01|9999-12-31)"})]


def _is_int(annotation: Any) -> bool:
    """``int``, ``StrictInt``, or either or ``None``."""
    if annotation is int:
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _is_int(args[0])
    return bool(args) and type(None) in args and len(args) == 2 and any(
        _is_int(a) for a in args if a is not type(None))


class _Body(BaseModel):
    """Base of the schemas a request carries. Their integer fields are ``StrictInt`` (no
    strings, no booleans) but, as JSON Schema does, count ``48.0`` as the integer 48."""

    @model_validator(mode="before")
    @classmethod
    def _whole_floats(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ints = {name for name, f in cls.model_fields.items() if _is_int(f.annotation)}
        return {k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v
                for k, v in data.items()}

#: JSON Schema for a text that must hold a non-whitespace character (the validators refuse
#: blank text; the pattern makes the schema say so). Sizes are deployment limits
#: (:mod:`memos.limits`), checked by the service, so they are not fixed in these schemas.
NONBLANK: JsonDict = {"pattern": r"\S"}

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class Kind(str, Enum):
    plaintext = "plaintext"
    activation = "activation"
    parametric = "parametric"


class Granularity(str, Enum):
    turn = "turn"
    session = "session"
    summary = "summary"
    keyword = "keyword"
    fact = "fact"
    cluster = "cluster"


class Status(str, Enum):
    active = "active"
    superseded = "superseded"
    archived = "archived"
    quarantined = "quarantined"
    deleted = "deleted"


class ListedStatus(str, Enum):
    """The statuses a list or search may filter on: every status but ``deleted``, whose
    units are never listed."""

    active = "active"
    superseded = "superseded"
    archived = "archived"
    quarantined = "quarantined"


class SettableStatus(str, Enum):
    """What a patch may set a memory's status to (``DELETE`` deletes)."""

    active = "active"
    archived = "archived"


class LinkType(str, Enum):
    derived_from = "derived_from"
    associated = "associated"
    summarizes = "summarizes"
    supersedes = "supersedes"
    member_of = "member_of"


class SearchMode(str, Enum):
    auto = "auto"
    router = "router"
    dense = "dense"
    hybrid = "hybrid"


class ScoreKind(str, Enum):
    """What a search hit's ``score`` measures.

    ``cosine``: cosine similarity of the query and unit vectors, in [-1, 1] (dense mode).
    ``router``: the multi-granularity router's fused score — a weighted sum of standardised
    (z-scored) dense + BM25 channel scores plus time, speaker and association-graph terms;
    unbounded (it can be negative) and comparable only within one response.
    ``hybrid``: cosine plus 0.3 × the hit's BM25 over the 100 nearest units divided by the
    best BM25 among them, in [-1, 1.3] (hybrid mode; :mod:`memos.retrieval.hybrid`).
    """

    cosine = "cosine"
    router = "router"
    hybrid = "hybrid"


class Role(str, Enum):
    user = "user"
    assistant = "assistant"
    system = "system"
    tool = "tool"


def _nonblank(value: str, field: str) -> str:
    if not value.strip():
        raise ValueError(f"{field} must not be empty or whitespace")
    return value


# --------------------------------------------------------------------------- cubes
# --------------------------------------------------------------------------- embedders
class BundledEmbedderSpec(_Body):
    """The bundled all-MiniLM-L6-v2 (384-d, no network). ``variant`` ``int8-per-channel``
    is the per-channel dynamic int8 quantization of the same model, produced on this
    machine by ``memos embedders quantize`` (never downloaded)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["bundled"]
    variant: Literal["default", "int8-per-channel"] = "default"


class OnnxEmbedderSpec(_Body):
    """Any ONNX sentence-embedding model by path, with its Hugging Face ``tokenizer.json``
    and its pooling declared. The file must lie under one of the server's
    ``MEMOS_ONNX_MODEL_DIRS`` when a cube asks for it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["onnx"]
    # A file path cannot hold a NUL byte (the OS refuses it), so the schema says so too.
    path: str = Field(min_length=1, max_length=1_000, pattern=r"^[^\x00]+$",
                      description="The model.onnx file.")
    tokenizer: str = Field(min_length=1, max_length=1_000, pattern=r"^[^\x00]+$",
                           description="Its tokenizer.json (Hugging Face tokenizers).")
    pooling: Literal["mean", "cls"] = Field(
        default="mean", description="Mean of the token vectors (attention-masked) or the "
        "first ([CLS]) token's vector.")
    normalize: StrictBool = Field(default=True, description="L2-normalise the vectors, so "
                                  "scores are cosines (false: raw inner products).")
    max_length: StrictInt = Field(default=256, ge=1, le=8_192,
                                  description="Tokens read per text; longer texts are cut.")
    dim: StrictInt = Field(ge=1, le=16_000, description="The vector's dimension (checked "
                           "against the model's output when it loads).")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="Pin the model file: loading refuses any other.")


class LiteLLMEmbedderSpec(_Body):
    """Any embedding model litellm reaches (OpenAI, Voyage, Cohere, Ollama, …). Its
    credentials come from the server's environment (e.g. ``OPENAI_API_KEY``), never from a
    request; a cube may use it only when the server allows the model
    (``MEMOS_LITELLM_EMBEDDING_MODELS``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["litellm"]
    model: str = Field(min_length=1, max_length=200,
                       description="litellm model name, e.g. openai/text-embedding-3-small.")
    dim: StrictInt = Field(ge=1, le=16_000, description="The vectors' dimension (every "
                           "response is checked against it).")
    api_base: str | None = Field(default=None, max_length=1_000,
                                 description="Provider URL (e.g. an Ollama server).")
    shorten: StrictBool = Field(default=False, description="Ask the provider for `dim`-long "
                                "(shortened) vectors: litellm's `dimensions`, for models "
                                "that support it (OpenAI text-embedding-3).")
    batch_size: StrictInt = Field(default=128, ge=1, le=2_048,
                                  description="Texts per request.")


class HashingEmbedderSpec(_Body):
    """Bag-of-words hashing vectors: no semantics, for tests only."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["hashing"]
    dim: StrictInt = Field(default=64, ge=8, le=4_096)


#: Which embedder a cube's vectors come from, chosen by ``kind``.
EmbedderSpec = Annotated[BundledEmbedderSpec | OnnxEmbedderSpec | LiteLLMEmbedderSpec
                         | HashingEmbedderSpec, Field(discriminator="kind")]


class EmbedderSwitch(_Body):
    """Re-embed a cube with another embedder (``POST /v1/cubes/{id}/embedder``)."""

    model_config = ConfigDict(extra="forbid")

    embedder: EmbedderSpec


class ReembedJob(BaseModel):
    """A cube's re-embed job: every vector recomputed with ``target_model``, then switched
    in one commit (until then searches use the old vectors)."""

    job_id: int
    status: str = Field(description="queued | running | done | failed")
    progress: float = Field(description="0..1: share of the cube's vectors re-embedded.")
    error: str | None = None
    source_model: str
    target_model: str
    target_dim: int


class CubeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN,
                           description="Cube id; generated when omitted.")
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2_000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedder: EmbedderSpec | None = Field(
        default=None, description="The cube's embedder; the server's default "
        "(MEMOS_EMBEDDER) when omitted. Switch later with POST /v1/cubes/{id}/embedder.")


class CubePublic(BaseModel):
    id: str
    name: str | None = None
    description: str | None = None
    tenant: str
    embedding_model: str = Field(description="Fingerprint of the model the cube's "
                                 "vectors come from.")
    embedding_dim: int
    embedder: dict[str, Any] | None = Field(
        default=None, description="The embedder spec the cube was created or switched "
        "with (null: the server's default, for cubes older than per-cube embedders).")
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: Timestamp
    units: int = Field(default=0, description="Active memory units in the cube.")
    pending_jobs: int = Field(default=0, description="Background jobs (derived units, "
                              "extraction) queued or running for the cube.")


# --------------------------------------------------------------------------- messages
class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN,
                           description="Stable message id; re-sending it creates nothing new.")
    role: Role = Role.user
    speaker: str | None = Field(default=None, max_length=200)
    content: str = Field(json_schema_extra=NONBLANK, description="At most "
                         "MEMOS_MAX_TEXT_CHARS characters.")
    timestamp: Timestamp | None = None

    @field_validator("content")
    @classmethod
    def _content_nonblank(cls, v: str) -> str:
        return _nonblank(v, "content")


class MessagesIngest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(pattern=ID_PATTERN)
    messages: list[MessageIn] = Field(min_length=1, description="At most "
                                      "MEMOS_MAX_MESSAGES_PER_REQUEST messages, "
                                      "MEMOS_MAX_REQUEST_CHARS characters together.")
    sync: StrictBool = Field(default=False, description="Build derived units (summaries, keywords, "
                       "facts) before returning instead of in a background job.")


class MessagePublic(_Body):
    id: str = Field(min_length=1, max_length=128)
    session_id: str = Field(min_length=1, max_length=128)
    role: Role
    speaker: str | None = Field(default=None, max_length=200)
    content: str
    timestamp: Timestamp | None = None
    seq: StrictInt = Field(ge=0, le=MAX_INT)
    created_at: Timestamp
    deleted_at: Timestamp | None = Field(
        default=None, description="When the message's turn was deleted: no longer a source "
                                  "of derived memory (a purge also empties the content).")


class IngestResult(BaseModel):
    session_id: str
    messages_stored: int
    messages_skipped: int = Field(description="Already-known messages (same id or content).")
    units_created: int
    message_ids: list[str]
    unit_ids: list[str]


# --------------------------------------------------------------------------- memories
class SpanIn(_Body):
    model_config = ConfigDict(extra="forbid")

    message_id: str
    start: StrictInt | None = Field(default=None, ge=0, le=MAX_INT,
                                    description="Character offset, inclusive.")
    end: StrictInt | None = Field(default=None, ge=0, le=MAX_INT,
                                  description="Character offset, exclusive.")


class MemoryBase(BaseModel):
    tags: list[str] = Field(default_factory=list, description="At most MEMOS_MAX_TAGS.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="At most "
                                     "MEMOS_MAX_METADATA_BYTES as JSON.")
    confidence: StrictFloat = Field(default=1.0, ge=0.0, le=1.0)
    valid_from: Timestamp | None = Field(default=None, description="Event time: true from.")
    valid_to: Timestamp | None = Field(default=None, description="Event time: true until.")


class MemoryCreate(MemoryBase):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(json_schema_extra=NONBLANK,
                      description="At most MEMOS_MAX_TEXT_CHARS characters.")
    granularity: Granularity = Granularity.fact
    session_id: str | None = Field(default=None, pattern=ID_PATTERN)
    speaker: str | None = Field(default=None, max_length=200)
    sources: list[SpanIn] = Field(default_factory=list)
    derived_from: list[str] = Field(default_factory=list)
    extractor: str = Field(default="user", max_length=200)
    embedding: list[float] | None = Field(
        default=None, json_schema_extra={"anyOf": [{"type": "array", "items": {
            "type": "number", "minimum": -1e300, "maximum": 1e300},
            "contains": {"not": {"const": 0}}}, {"type": "null"}]},
        description="Optional precomputed vector of the cube's embedding model: as many "
        "values as that model has dimensions (the server's schema states the number for "
        "its default embedder; a cube created with its own embedder takes that one's), "
        "not all zero.")

    @field_validator("text")
    @classmethod
    def _text_nonblank(cls, v: str) -> str:
        return _nonblank(v, "text")


class MemoryUpdate(BaseModel):
    """A patch: the given fields change, in a new version; the old version is superseded.
    At least one field besides ``reason`` must be given."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": [name]} for name in ("text", "tags", "metadata", "confidence",
                                          "valid_from", "valid_to", "status")]})

    text: str | None = Field(default=None, json_schema_extra={"anyOf": [
        {"type": "string", **NONBLANK}, {"type": "null"}]})
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    confidence: StrictFloat | None = Field(default=None, ge=0.0, le=1.0)
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None
    status: SettableStatus | None = Field(default=None, description="Archive a memory or "
                                          "make it active again (DELETE deletes it).")
    reason: str | None = Field(default=None, max_length=1_000)

    @field_validator("text")
    @classmethod
    def _text_nonblank(cls, v: str | None) -> str | None:
        return None if v is None else _nonblank(v, "text")


class MemoryPublic(MemoryBase):
    id: str
    cube_id: str
    lineage_id: str
    version: int
    kind: Kind
    granularity: Granularity
    text: str | None
    session_id: str | None = None
    speaker: str | None = None
    status: Status
    status_reason: str | None = None
    extractor: str
    payload_sha256: str | None = None
    created_at: Timestamp
    superseded_at: Timestamp | None = None


class DeletionReport(BaseModel):
    """What deleting a memory changed; with ``purge``, what was erased and from where."""

    memory_id: str
    purged: bool
    versions: int = Field(description="Versions of the memory tombstoned (or erased).")
    messages: list[str] = Field(
        default_factory=list,
        description="Source messages of a deleted turn: no longer derived from (a purge "
                    "also empties their content).")
    retired: list[str] = Field(
        default_factory=list,
        description="Memories derived from the deleted source that cited nothing else "
                    "(extracted facts, memories created with sources): deleted, or erased.")
    restored: list[str] = Field(
        default_factory=list,
        description="Earlier versions current again because the version that replaced "
                    "them was retired.")
    sessions: list[str] = Field(
        default_factory=list,
        description="Sessions whose session unit was rewritten and whose summary, keywords "
                    "and facts are derived again (a queued job).")
    model_memory: list[str] = Field(
        default_factory=list,
        description="Activation and parametric units built from what a purge erased: "
                    "erased with their payload files.")
    erased_from: list[str] = Field(
        default_factory=list,
        description="Where a purge erased (e.g. 'sql', 'vector_index', 'blobs').")


class MemoryPage(BaseModel):
    items: list[MemoryPublic]
    total: int
    offset: int
    limit: int


class SpanPublic(BaseModel):
    message: MessagePublic
    start: int
    end: int
    quote: str


class LinkPublic(BaseModel):
    source_id: str
    target_id: str
    type: LinkType
    weight: StrictFloat


class ProvenancePublic(BaseModel):
    unit: MemoryPublic
    extractor: str
    sources: list[SpanPublic]
    derived_from: list[MemoryPublic]
    links: list[LinkPublic] = Field(default_factory=list)


# --------------------------------------------------------------------------- search
#: JSON Schema of the rule :func:`memos.retrieval.search.filter_conditions` applies:
#: ``as_of`` (the units active then) takes no status filter other than ``active``.
_AS_OF_TAKES_NO_STATUS: JsonDict = {
    "if": {"properties": {"as_of": {"type": "string"}}, "required": ["as_of"]},
    "then": {"properties": {"status": {"enum": [None, "active"]}}}}


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_AS_OF_TAKES_NO_STATUS)

    kind: Kind | None = None
    granularity: list[Granularity] | None = None
    status: ListedStatus | None = None
    session_id: str | None = None
    tags: list[str] | None = Field(default=None, description="Units carrying all these tags.")
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    as_of: Timestamp | None = Field(default=None, description="What the cube held at this time.")


#: JSON Schema of the rule router search applies (:class:`memos.retrieval.search.Searcher`):
#: ``mode: router`` ranks turns, so its filters may hold only the granularity list ``["turn"]``.
_ROUTER_TAKES_NO_FILTERS: JsonDict = {
    "if": {"properties": {"mode": {"const": "router"}}, "required": ["mode"]},
    "then": {"properties": {"filters": {
        "properties": {
            **{name: {"type": "null"} for name in ("kind", "status", "session_id", "tags",
                                                   "created_after", "created_before",
                                                   "as_of")},
            "granularity": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0},
                                      {"type": "array", "items": {"const": "turn"}}]}}}}}}


class SearchRequest(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_ROUTER_TAKES_NO_FILTERS)

    query: str = Field(json_schema_extra=NONBLANK,
                       description="At most MEMOS_MAX_QUERY_CHARS characters.")
    top_k: StrictInt = Field(default=10, ge=1, le=100)
    filters: Filters = Field(default_factory=Filters)
    explain: StrictBool = False
    mode: SearchMode = Field(
        default=SearchMode.auto,
        description="'router': multi-granularity (dense + BM25 per granularity, entropy "
        "router, association graph) ranking turns and sessions; 'dense': vector search over "
        "the units the filters select, by cosine; 'hybrid': the 100 nearest of those units "
        "re-ranked by cosine plus BM25 within them; 'auto': router when the filters allow "
        "it (none besides the granularity list ['turn']) and the cube is within "
        "MEMOS_ROUTER_MAX_UNITS (a memory guard), else hybrid.")

    @field_validator("query")
    @classmethod
    def _query_nonblank(cls, v: str) -> str:
        return _nonblank(v, "query")


class Hit(BaseModel):
    unit: MemoryPublic
    score: float = Field(description="Higher is more relevant; the response's `score_kind` "
                         "says what it measures.")
    explain: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    hits: list[Hit]
    sessions: list[Hit] = Field(default_factory=list,
                                description="Router mode: the best sessions (session units).")
    mode: SearchMode = SearchMode.dense
    score_kind: ScoreKind = Field(
        default=ScoreKind.cosine, description="What every hit's score measures: 'cosine' "
        "(dense mode: cosine similarity in [-1, 1]), 'hybrid' (hybrid mode: cosine plus 0.3 "
        "× BM25 over the 100 nearest units relative to the best of them, in [-1, 1.3]) or "
        "'router' (router mode: a fused, unbounded score comparable only within this "
        "response).")
    took_ms: float
    router: dict[str, Any] | None = Field(
        default=None, description="Router mode: the weight (non-negative, summing to 1) and "
        "normalised entropy of each granularity channel: turn, context (a turn with its "
        "neighbours), session, summary, keyword, and fact when the cube has facts.")
    coverage: float | None = Field(
        default=None, ge=0.0, le=1.0, description="How well the hits cover the query, in "
        "[0, 1]: the estimated share of the memory the answer rests on that the hits hold "
        "(0: nothing relevant found). A logistic model of lexical signals, chiefly the "
        "share of the query's content words in the best of the top 5 hits that can answer "
        "it (says more than the query and holds the date, number, name or place the query "
        "asks for), calibrated on the HaluMem dev users against the offline judge's "
        "evidence coverage (approximate; README, Honest answers). Not a probability that "
        "an answer is right. The offline answerer says 'not in memory' below "
        "memos.eval.halumem.ABSTAIN_BELOW.")


class ContextRequest(_Body):
    """Prompt-ready memory for ``query`` within ``max_tokens``.

    With ``model`` ("bundled" or a litellm model name) the budget is counted with that
    model's tokenizer, as ``/chat`` does; without one, by the documented estimate
    :func:`memos.retrieval.search.estimate_tokens`: ``max(words × 1.3, characters / 4)`` per line,
    rounded up, so text without spaces is not undercounted.
    """

    model_config = ConfigDict(extra="forbid")

    query: str = Field(json_schema_extra=NONBLANK,
                       description="At most MEMOS_MAX_QUERY_CHARS characters.")
    max_tokens: StrictInt = Field(default=512, ge=16, le=32_000, description="Token budget of "
                                  "the lines: by `model`'s tokenizer, else by the estimate "
                                  "max(words × 1.3, characters / 4).")
    top_k: StrictInt = Field(default=20, ge=1, le=100)
    filters: Filters = Field(default_factory=Filters)
    model: str | None = Field(default=None, min_length=1, max_length=200, description="Count "
                              "tokens with this model's tokenizer: 'bundled' or a litellm "
                              "model name (default: the estimate).")

    @field_validator("query")
    @classmethod
    def _query_nonblank(cls, v: str) -> str:
        return _nonblank(v, "query")


class Truncation(BaseModel):
    """What retrieved memory was cut to fit a token budget.

    Lines are taken best first; one that does not fit is dropped, except the best line,
    which is shortened instead (its text ends with `` …`` before the ``[unit id]``).
    """

    budget: int = Field(description="Tokens the memory lines could use.")
    dropped_unit_ids: list[str] = Field(default_factory=list, description="Retrieved units "
                                        "left out whole, best first.")
    shortened_unit_ids: list[str] = Field(default_factory=list, description="Units whose "
                                          "line was cut short to fit.")
    tokens_cut: int = Field(default=0, description="Tokens of memory left out: dropped lines "
                            "plus what was cut from shortened ones, by the same counter.")


class ContextResponse(BaseModel):
    text: str = Field(description="Prompt-ready lines, each ending with its [unit id].")
    unit_ids: list[str]
    tokens: int = Field(description="Sum of the lines' token counts (≤ max_tokens), by the "
                        "request's `model` tokenizer or the estimate.")
    truncated: Truncation | None = Field(default=None, description="What did not fit the "
                                         "budget; null when every retrieved unit fit whole.")
    coverage: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The search's coverage of the query by "
        "every retrieved hit (before packing); see SearchResponse.coverage.")


# --------------------------------------------------------------------------- chat
#: The chat ``model`` value that selects the bundled backbone.
BUNDLED = "bundled"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(description="At most MEMOS_MAX_TEXT_CHARS characters.")


class MemoryOptions(BaseModel):
    """Which memory the answer may use.

    ``activation``/``parametric``: ``None`` (off), ``"auto"`` (let the server pick) or the id
    of an activation/parametric unit; bundled model only.
    """

    model_config = ConfigDict(extra="forbid")

    plaintext: StrictBool = Field(default=True, description="Put retrieved plaintext memory, with "
                            "[unit id] citations, into the system prompt.")
    activation: str | None = Field(default=None, min_length=1, max_length=64,
                                   description="KV-cache memory: null, 'auto' or a unit id "
                                   "(bundled model only).")
    parametric: str | None = Field(default=None, min_length=1, max_length=64,
                                   description="LoRA-adapter memory: null, 'auto' or a unit "
                                   "id (bundled model only).")


class ChatRequest(_Body):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1, max_length=1_000, json_schema_extra={
        "contains": {"properties": {"role": {"const": "user"}, "content": NONBLANK},
                     "required": ["role", "content"]}},
        description="At least one user message with non-blank content.")
    model: str = Field(default=BUNDLED, min_length=1, max_length=200,
                       description="'bundled' or any litellm model name (e.g. 'gpt-4o-mini').")
    memory: MemoryOptions = Field(default_factory=MemoryOptions)
    stream: StrictBool = Field(default=False, description="Answer as Server-Sent Events.")
    max_tool_rounds: StrictInt = Field(default=4, ge=0, le=16, description="Rounds of memory tool "
                                 "calls the model may make before it must answer (0: no tools).")
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=32_000)
    temperature: StrictFloat | None = Field(default=None, ge=0.0, le=2.0)

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.content.strip() for m in v):
            raise ValueError("at least one non-empty user message is needed")
        return v


class ToolCallRecord(BaseModel):
    name: str
    arguments: dict[str, Any] | str = Field(description="Parsed JSON, or the raw string the "
                                            "model produced when it was not valid JSON.")
    result: dict[str, Any]


class ChatResponse(BaseModel):
    reply: str
    model: str
    memory_unit_ids: list[str] = Field(description="Every unit the model was shown: prompt "
                                       "context and tool results, first use first.")
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: dict[str, int] | None = Field(default=None, description="prompt_tokens, "
                                         "completion_tokens, total_tokens summed over every "
                                         "model call (the bundled model counts its own).")
    truncated: Truncation | None = Field(default=None, description="Retrieved memory cut to "
                                         "fit the model's context (prompt + max_tokens) and "
                                         "the context budget; null when nothing was cut.")


class ChatStreamEvent(BaseModel):
    """One Server-Sent Event of a streamed chat (``stream: true``; SDK ``chat_stream``).

    In order: one ``start`` (``model``, ``memory_unit_ids`` of the prompt's memory and
    ``truncated``, sent before generation starts); ``delta`` events (``text``: the next
    piece of the reply as the model generates it; the pieces concatenate to ``reply``);
    one ``response`` (``response``: the whole :class:`ChatResponse`, ``usage`` included).
    A failure after the start is an ``error`` event whose data is ``{"error": {...}}``;
    the SDK raises it as the matching :class:`~memos.errors.MemosError`.
    """

    event: Literal["start", "delta", "response"]
    text: str = Field(default="", description="delta: the next piece of the reply.")
    model: str | None = Field(default=None, description="start: the answering model.")
    memory_unit_ids: list[str] = Field(default_factory=list, description="start: the units "
                                       "in the prompt (tool results come in the response).")
    truncated: Truncation | None = Field(default=None, description="start: memory cut to fit.")
    response: ChatResponse | None = Field(default=None, description="response: the whole "
                                          "answer, with usage and tool calls.")

    def data(self) -> dict[str, Any]:
        """The event's wire data: what its ``data:`` line carries as JSON."""
        if self.event == "delta":
            return {"text": self.text}
        if self.event == "start":
            return self.model_dump(mode="json", include={"model", "memory_unit_ids",
                                                         "truncated"})
        if self.response is None:
            raise ValueError("a response event carries the response")
        return self.response.model_dump(mode="json")

    @classmethod
    def from_wire(cls, event: str, data: dict[str, Any]) -> ChatStreamEvent:
        """The inverse of :meth:`data`, for ``event`` start, delta or response."""
        if event == "response":
            return cls(event="response", response=ChatResponse.model_validate(data))
        return cls.model_validate({**data, "event": event})


# --------------------------------------------------------------------------- model memory
class ActivationCreate(_Body):
    """Which plaintext units to compile: explicit ``unit_ids`` (in that order), or the
    units a search for ``query`` returns, best first, while the prefix fits ``max_tokens``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"properties": {"unit_ids": {"type": "array"}}, "required": ["unit_ids"]},
        {"properties": {"query": {"type": "string"}}, "required": ["query"]}]})

    unit_ids: list[str] | None = Field(default=None, min_length=1, max_length=1_000)
    query: str | None = Field(default=None, json_schema_extra={"anyOf": [
        {"type": "string", **NONBLANK}, {"type": "null"}]})

    @field_validator("query")
    @classmethod
    def _query_nonblank(cls, v: str | None) -> str | None:
        return None if v is None else _nonblank(v, "query")
    max_tokens: StrictInt = Field(default=1024, ge=16, le=8_000,
                            description="Most tokens the compiled prefix may hold.")
    top_k: StrictInt = Field(default=50, ge=1, le=100, description="Search depth for `query`.")

    @model_validator(mode="after")
    def _one_source(self) -> ActivationCreate:
        if (self.unit_ids is None) == (self.query is None):
            raise ValueError("give exactly one of unit_ids or query")
        return self


class ActivationPublic(BaseModel):
    """An activation unit as the API shows it: the unit, its payload metadata, its sources."""

    unit: MemoryPublic
    payload_meta: dict[str, Any]
    source_ids: list[str]
    n_tokens: int


class ActivationRefresh(BaseModel):
    """What a refresh did (inline), or the job that will do it (``background``)."""

    archived: list[str] = Field(default_factory=list, description="Stale units archived.")
    rebuilt: dict[str, str] = Field(default_factory=dict,
                                    description="Archived unit id → its rebuilt replacement.")
    job_id: int | None = Field(default=None, description="The queued job (background only).")


class AdapterCreate(_Body):
    """Train an adapter from plaintext units (facts)."""

    model_config = ConfigDict(extra="forbid")

    unit_ids: list[str] = Field(min_length=1, max_length=2_000)
    rank: StrictInt = Field(default=8, ge=1, le=64)
    steps: StrictInt = Field(default=60, ge=1, le=5_000)
    lr: StrictFloat = Field(default=2e-3, gt=0, le=1.0)
    n_layers: StrictInt = Field(default=12, ge=0, le=64,
                                description="Adapt the top n blocks (0: all).")
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj", "o_proj"],
                               min_length=1)
    rehearsal: StrictFloat = Field(default=0.5, ge=0.0, le=4.0, description="Generic-text windows "
                             "mixed into training per fact example (0: none). Rehearsal keeps "
                             "the model's NLL on unrelated text flat.")
    sync: StrictBool = Field(default=False, description="Train inside the request (small jobs and "
                       "tests) instead of as a background `train_adapter` job.")


class AdapterPublic(BaseModel):
    unit: MemoryPublic
    payload_meta: dict[str, Any]
    source_ids: list[str]


class TrainingJob(BaseModel):
    job_id: int
    status: str
    progress: float
    error: str | None = None
    unit_id: str | None = Field(default=None, description="The adapter, once trained.")


# --------------------------------------------------------------------------- scheduler
class CubeStats(BaseModel):
    """How many units a cube holds, grouped (every name listed, zeros included)."""

    granularity: dict[str, int] = Field(description="Active units per granularity.")
    kind: dict[str, int] = Field(description="Active units per kind.")
    status: dict[str, int] = Field(description="Units per status, every granularity "
                                   "(deleted units are never counted).")


# --------------------------------------------------------------------------- structure
class ClusterPoint(BaseModel):
    """One unit on the cluster map: its first two principal coordinates and its cluster."""

    id: str
    x: float
    y: float
    cluster: int = Field(ge=0)
    text: str = Field(description="The unit's text, cut to 160 characters.")


class ClusterMap(BaseModel):
    """The Gaussian-mixture clustering of a granularity's newest units, projected to 2-D
    (``x``, ``y``: the first two principal axes of the vectors; the mixture itself is
    fitted on up to 32 axes, component count by BIC)."""

    granularity: Granularity
    units: int = Field(ge=0, description="Units fitted (the newest `limit` active ones).")
    clusters: int = Field(ge=0, description="Mixture components chosen (0: under 4 units).")
    points: list[ClusterPoint]
    bic: dict[str, float] = Field(description="BIC per component count tried (lower wins).")


class MixtureScore(BaseModel):
    """One candidate of the association: its cosine similarity and whether it was linked."""

    id: str
    score: float = Field(description="Cosine similarity to the unit (higher = closer).")
    accepted: bool
    text: str = Field(description="The candidate's text, cut to 160 characters.")


class MixtureComponent(BaseModel):
    """One Gaussian of the 2-component mixture fitted to the similarity scores."""

    weight: float
    mean: float
    var: float


class AssociationMixture(BaseModel):
    """How GMM association decided one unit's links: the top-``top_k`` similarities to
    earlier units of its granularity, the two Gaussians fitted to them and the threshold
    (the lowest accepted score). ``rule`` is ``gmm`` when the mixture decided,
    ``percentile`` when too few or too similar scores fell back to the 75th percentile."""

    id: str
    granularity: Granularity
    top_k: int
    scan: Literal["exact", "index"] = Field(description="Earlier units scanned exactly, or "
                                            "named by the vector index (big granularities).")
    scores: list[MixtureScore]
    components: list[MixtureComponent]
    threshold: float | None
    rule: Literal["gmm", "percentile", "none"]
    curve: list[list[float]] = Field(description="Points to draw the two Gaussians: "
                                     "[x, density of the lower, of the higher component].")


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class JobPublic(BaseModel):
    """A background job of a cube (deriving units and facts, model memory, training)."""

    id: int
    kind: str
    status: JobStatus
    attempts: int = Field(description="Runs so far; a job is retried with back-off, then "
                          "marked failed with its error.")
    progress: float = Field(ge=0.0, le=1.0)
    error: str | None = Field(default=None, description="The last attempt's error (its tail).")
    created_at: Timestamp
    run_after: Timestamp = Field(description="Not run before this time (the back-off).")
    finished_at: Timestamp | None = None


class JobPage(BaseModel):
    items: list[JobPublic]
    total: int
    offset: int
    limit: int


class SchedulerPolicy(BaseModel):
    """Thresholds of the memory scheduler; per cube, ``metadata.scheduler_policy``
    overrides them (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    pinned_tag: str = "pinned"
    hot_min_retrievals: StrictInt = Field(default=5, ge=1, description="Search hits (summed over "
                                    "a memory's versions) that make a unit hot.")
    activation_max_tokens: StrictInt = Field(default=1024, ge=16, le=8_000)
    stable_after_s: StrictFloat = Field(default=24 * 3600, ge=0)
    stable_min_confidence: StrictFloat = Field(default=0.8, ge=0, le=1)
    adapter_min_facts: StrictInt = Field(default=5, ge=1)
    adapter_steps: StrictInt = Field(default=60, ge=1)
    adapter_rank: StrictInt = Field(default=8, ge=1, le=64)
    rebuild_on_change: StrictBool = Field(default=True, description="Recompile stale KV caches "
                                    "(false: only archive them).")
    tick_every_retrievals: StrictInt = Field(default=50, ge=0, description="Queue a tick after "
                                       "this many new search hits in the cube (0: never "
                                       "automatically).")
    history_size: StrictInt = Field(default=200, ge=1)


class Decision(BaseModel):
    """One scheduler decision: what moved, why, from which units, with what result."""

    action: str = Field(description="rebuild_activation | archive_activation | "
                        "archive_adapter | compile_activation | train_adapter")
    reason: str
    unit_ids: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


class SchedulerState(BaseModel):
    policy: SchedulerPolicy
    activations: list[str]
    adapters: list[str]
    hot_units: list[str]
    retrievals: dict[str, int] = Field(default_factory=dict, description="Search hits of "
                                       "each hot unit, summed over its versions.")
    stable_facts: list[str]
    last_tick: str | None = None
    history: list[Decision]


class SchedulerTick(BaseModel):
    """The decisions of an inline tick, or the queued job (``background``)."""

    decisions: list[Decision] = Field(default_factory=list)
    job_id: int | None = None


# --------------------------------------------------------------------------- export / keys
class ExportedSpan(_Body):
    message_id: str
    start: StrictInt = Field(ge=0, le=MAX_INT)
    end: StrictInt = Field(ge=0, le=MAX_INT)


class ExportedUnit(_Body):
    """One version of a memory unit, with its provenance (no embedding: the importing
    server embeds with its own model). Activation and parametric units are exported only
    when asked (``include_payloads``), with their safetensors payload in base64."""

    id: str = Field(min_length=1, max_length=64)
    lineage_id: str = Field(min_length=1, max_length=64)
    version: StrictInt = Field(ge=1, le=MAX_INT)
    kind: Kind
    granularity: Granularity
    text: str | None
    session_id: str | None = Field(default=None, max_length=128)
    speaker: str | None = Field(default=None, max_length=200)
    extractor: str = Field(max_length=200)
    status: Status
    status_reason: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    confidence: StrictFloat = Field(default=1.0, ge=0.0, le=1.0)
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None
    created_at: Timestamp
    superseded_at: Timestamp | None = None
    deleted_at: Timestamp | None = None
    spans: list[ExportedSpan] = Field(default_factory=list)
    payload_sha256: str | None = Field(default=None, description="Activation/parametric "
                                       "units: sha256 of the safetensors payload.")
    payload_meta: dict[str, Any] | None = Field(default=None, description="Activation/"
                                                "parametric units: fingerprint, shapes.")
    payload: str | None = Field(default=None, description="The safetensors payload, base64 "
                                "(exports asked for with include_payloads).")


class CubeExport(BaseModel):
    """A whole cube as JSON: messages, every unit version, spans and links."""

    format: str = Field(default="memos.cube.v1", pattern=r"^memos\.cube\.v1$")
    cube: CubeCreate
    exported_at: Timestamp
    embedding_model: str
    messages: list[MessagePublic]
    units: list[ExportedUnit]
    links: list[LinkPublic]


class CubeImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN,
                           description="New cube id (default: the exported cube's id).")
    new_ids: StrictBool = Field(default=False, description="Give every unit a fresh id (ids "
                          "are unique per cube, so importing never needs it; use it to tell "
                          "the copy's units from the original's).")
    data: CubeExport


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=ID_PATTERN)
    name: str | None = None


class KeyPublic(BaseModel):
    id: str
    tenant: str
    name: str | None = None
    created_at: Timestamp
    key: str | None = Field(default=None, description="Shown once, at creation.")


class Health(BaseModel):
    status: str
    version: str
    database: str
    index: str
