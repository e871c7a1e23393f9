"""Settings, read from ``MEMOS_*`` environment variables (or passed directly in tests).

>>> Settings(data_dir="/tmp/x").database_url
'sqlite:////tmp/x/memos.db'
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMOS_", extra="ignore")

    data_dir: Path = Field(default=Path("memos-data"),
                           description="Embedded default: SQLite file, FAISS indexes and blobs.")
    database_url_override: str | None = Field(
        default=None, alias="MEMOS_DATABASE_URL",
        description="PostgreSQL (with pgvector) URL for scale-out; SQLite in data_dir if unset.")
    durability: Literal["full", "normal"] = Field(
        default="full", description="Embedded SQLite: 'full' (default) fsyncs every commit, "
        "so an acknowledged write survives a power loss; 'normal' survives a process crash "
        "but a power or OS failure can drop the last commits (ingest cost: see Benchmarks). "
        "PostgreSQL follows its own server settings.")
    sqlite_cache_mb: int = Field(
        default=128, ge=1, description="Embedded SQLite: page cache per connection in MiB, "
        "filled as pages are read. A big cube ingests fast only while its indexes fit "
        "(about 130 MB at 100k turns); SQLite's own default is 2 MiB.")
    api_keys: str = Field(default="", description="Comma-separated static API keys (tenant "
                          "'default'), or 'tenant:key' pairs.")
    admin_keys: str = Field(default="", description="Comma-separated operator keys for the "
                            "server-wide routes (/metrics); they open no tenant's cubes.")
    embedder: str = Field(default="minilm-int8-per-channel", description="The default "
                          "embedder of new cubes: 'minilm-int8-per-channel' (default: the "
                          "bundled MiniLM with per-channel dynamic int8 quantization, built "
                          "from the shipped model on first use), 'minilm' (the shipped "
                          "model as is), 'hashing' (tests only), or a JSON embedder spec "
                          "(kind onnx or litellm; see README Embedders).")
    models_dir: Path | None = Field(default=None, description="Where embedding models built "
                                    "on this machine are kept (the int8 MiniLM); default "
                                    "~/.cache/memos/models.")
    onnx_model_dirs: str = Field(default="", description="Comma-separated directories whose "
                                 "ONNX models a cube may ask for by path (none by default).")
    litellm_embedding_models: str = Field(
        default="", description="Comma-separated litellm embedding models a cube may ask "
        "for ('*': any); they run with the server's credentials (none by default).")
    embed_batch_size: int = 64
    query_cache_size: int = Field(
        default=4096, ge=0, description="Query vectors kept for repeated searches, least "
        "recently used out first (about 1.5 KB each; 0 disables the cache).")
    extractor: str = Field(default="rules", description="Fact extraction after ingest: "
                           "'rules' (offline), 'none', or 'llm:<litellm model>'.")
    router_max_units: int = Field(
        default=1_000_000, ge=0, description="Memory guard: cubes with at most this many "
        "turns are searched by the multi-granularity router (0 disables it), larger ones by "
        "hybrid search over the vector index. Router search scores a bounded candidate pool, "
        "so its cost grows slowly with a cube (HTTP p95 22.5 ms at 100k turns, 48.4 ms at 1M); "
        "what grows with it is the router cache (about 10 KB per routed unit per worker; "
        "14.1 GB for a whole worker at 1M turns).")
    router_cache_units: int = Field(
        default=2_000_000, ge=1, description="Routed units one worker process keeps cached "
        "over all cubes (least recently used cubes are dropped past it and rebuilt from SQL "
        "on their next search): bounds router memory per worker at about 10 KB per unit.")
    run_worker: bool = Field(default=True, description="Run a background job worker in the "
                             "API process (derived units, extraction).")
    retrieval_flush_seconds: float = Field(
        default=5.0, ge=0, description="How often the API adds the search hits it counted "
        "to memory_units.retrievals and queues due scheduler ticks (0: only at shutdown and "
        "before each tick).")
    scheduler_tick_every_retrievals: int = Field(
        default=50, ge=0, description="Default scheduler policy: queue a tick for a cube "
        "after this many new search hits (0: never automatically); per cube, "
        "metadata.scheduler_policy overrides it.")
    index_snapshot_every: int = Field(
        default=10_000, description="Write the FAISS snapshot after this many index changes "
        "(grows with the index, so persistence stays O(1) amortised per write).")

    # Request limits (memos.limits.Limits): each is named, with its value, in its error.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="Bytes "
                                "of one request body (import excepted), counted as it is read.")
    max_import_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Bytes "
                                  "of one cube import body.")
    max_text_chars: int = Field(default=32_000, ge=1, description="Characters "
                                "of one message, memory text or chat message.")
    max_query_chars: int = Field(default=4_000, ge=1, description="Characters "
                                 "of one search, context or activation query.")
    max_messages_per_request: int = Field(default=5_000, ge=1,
                                          description="Messages in one ingest request.")
    max_request_chars: int = Field(default=200_000, ge=1, description=""
                                   "Characters of all messages of one ingest request together.")
    max_tags: int = Field(default=64, ge=0, description="Tags on one memory unit.")
    max_tag_chars: int = Field(default=200, ge=1, le=200, description="Characters of one "
                               "tag (at most 200, the width of the tags column).")
    max_metadata_bytes: int = Field(default=64 * 1024, ge=2, description=""
                                    "Bytes of one metadata object as compact JSON.")

    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{self.data_dir.resolve()}/memos.db"

    @property
    def models_path(self) -> Path:
        """:attr:`models_dir`, or ``~/.cache/memos/models``."""
        return self.models_dir or Path.home() / ".cache" / "memos" / "models"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def static_keys(self) -> dict[str, str]:
        """``key → tenant`` for keys given in ``MEMOS_API_KEYS``."""
        keys: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.api_keys.split(","))):
            tenant, sep, key = item.rpartition(":")
            keys[key] = tenant if sep else "default"
        return keys

    def admin_key_list(self) -> list[str]:
        """The keys given in ``MEMOS_ADMIN_KEYS``."""
        return [key for key in (part.strip() for part in self.admin_keys.split(",")) if key]


@lru_cache
def get_settings() -> Settings:
    """The process settings, read once from the environment."""
    return Settings()
