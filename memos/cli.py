"""The ``memos`` command line: serve, db, keys, ingest, search, bench, mcp, eval, backbone.

``memos serve`` starts the REST API on the embedded default (SQLite + FAISS + blobs under
``--data-dir``, ``$MEMOS_DATA_DIR`` or ``./memos-data``); it needs the ``server`` extra.
``ingest`` and ``search`` talk to a running server through the SDK (``--base-url``,
``$MEMOS_URL``, default http://127.0.0.1:8000), so they never fight the server over its
index, and work with the SDK-only install.

Commands whose modules are heavy (bench, mcp, eval, backbone) are loaded only when named on
the command line, so ``memos --help`` imports nothing but this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memos import __version__
from memos.errors import BackendUnavailable, Conflict, InvalidInput, MemosError, NotFound


def _settings(args: argparse.Namespace) -> Any:
    from memos.config import Settings

    if getattr(args, "data_dir", None):
        os.environ["MEMOS_DATA_DIR"] = str(args.data_dir)
    return Settings()


def _base_url(args: argparse.Namespace) -> str:
    return args.base_url or os.environ.get("MEMOS_URL") or "http://127.0.0.1:8000"


# ------------------------------------------------------------------ serve / db / keys
def _require_server_extra() -> None:
    """Fail in one line, naming the fix, when the service's packages are not installed."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "sqlalchemy", "faiss", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(
            f"`memos serve` needs the server extra ({', '.join(missing)} not installed): "
            "pip install 'memos-memory[server]'")


def cmd_serve(args: argparse.Namespace) -> int:
    _require_server_extra()
    from memos.keys import KeyRing
    from memos.serve import report_start_failure, serve
    from memos.store.lock import DataDirLock
    from memos.store.sql import Store

    settings = _settings(args)
    if settings.is_sqlite:
        # Refuse before touching another server's database; the app itself holds the lock.
        try:
            DataDirLock.acquire(settings.data_dir).release()
        except Conflict as exc:
            return report_start_failure(f"Conflict: {exc.message}")
    store = Store(settings.database_url)
    store.upgrade()
    auth = KeyRing(store, settings.static_keys(),
                   admin_keys=settings.admin_key_list()).auth_enabled()
    store.dispose()
    host = args.host
    if not auth and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"memos: no API keys are configured, so the server binds to 127.0.0.1 only "
              f"(not {host}). Create a key with `memos keys create --tenant NAME` or set "
              f"MEMOS_API_KEYS to listen on other interfaces.", file=sys.stderr)
        host = "127.0.0.1"
    where = (f"data in {settings.data_dir.resolve()}" if settings.is_sqlite
             else "database from MEMOS_DATABASE_URL")
    url = f"http://{host}:{args.port}"

    def banner() -> None:
        print(f"memos {__version__} on {url} ({where}; auth {'on' if auth else 'off: local only'})")
        print(f"  API docs:   {url}/docs")
        print(f"  inspector:  {url}/ui")
        print(f"  try:        curl -X POST {url}/v1/cubes -H 'content-type: application/json' "
              "-d '{\"id\": \"demo\"}'")
        print("  or Python:  from memos.client import MemosClient; "
              f"MemosClient('{url}').create_cube('demo')", flush=True)

    return serve(host=host, port=args.port, log_level=args.log_level, on_ready=banner)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from memos.store.sql import Store

    settings = _settings(args)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url)
    store.upgrade(args.revision)
    print(f"database at revision {store.current_revision()}")
    return 0


def cmd_embedders_quantize(args: argparse.Namespace) -> int:
    from memos.embedders.quantize import quantize_bundled

    settings = _settings(args)
    record = quantize_bundled(settings.models_path)
    print(f"wrote {settings.models_path} (sha256 {record['sha256']}); use it with "
          "MEMOS_EMBEDDER=minilm-int8-per-channel (the default) or a cube embedder "
          '{"kind": "bundled", "variant": "int8-per-channel"}')
    return 0


def cmd_embedders_switch(args: argparse.Namespace) -> int:
    from memos.client import MemosClient

    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--spec is not JSON: {exc}") from exc
    with MemosClient(_base_url(args), api_key=os.environ.get("MEMOS_API_KEY")) as client:
        job = client.switch_embedder(args.cube, spec)
        print(f"re-embed job {job.job_id} queued: {job.source_model} -> {job.target_model}")
        while args.wait and job.status in ("queued", "running"):
            time.sleep(1.0)
            job = client.embedder_job(args.cube, job.job_id)
            print(f"  {job.status} {job.progress:.0%}", flush=True)
    if job.status == "failed":
        print(f"memos: re-embed job {job.job_id} failed: {job.error}", file=sys.stderr)
        return 1
    return 0


def _keyring(args: argparse.Namespace) -> Any:
    from memos.keys import KeyRing
    from memos.store.sql import Store

    settings = _settings(args)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url)
    store.upgrade()
    return KeyRing(store, settings.static_keys(), admin_keys=settings.admin_key_list())


def cmd_keys_create(args: argparse.Namespace) -> int:
    key = _keyring(args).create(tenant=args.tenant, name=args.name)
    print(f"created key {key.id} for tenant {key.tenant!r}; store it now, it is not shown again:")
    print(key.key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    for key in _keyring(args).list():
        print(f"{key.id}  tenant={key.tenant}  name={key.name or '-'}  "
              f"created={key.created_at:%Y-%m-%d %H:%M}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _keyring(args).revoke(args.key_id)
    print(f"revoked {args.key_id}")
    return 0


# ------------------------------------------------------------------ ingest / search
def load_conversations(path: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """Sessions from a LoCoMo file or a plain ``[{role, content, …}]`` list.

    Returns ``(session_id, messages)`` pairs. LoCoMo's annotator fields (``observation``,
    ``session_summary``, ``event_summary``) are never read.
    """
    from memos.eval.loaders import locomo_sessions

    data = json.loads(path.read_text())
    if isinstance(data, dict) and "conversation" in data:
        data = [data]
    if isinstance(data, list) and data and isinstance(data[0], dict) and "conversation" in data[0]:
        out = []
        for sample in data:
            for session_id, messages in locomo_sessions(sample):
                out.append((session_id, messages))
        return out
    if isinstance(data, list) and all(isinstance(m, dict) and "content" in m for m in data):
        return [(path.stem, data)]
    raise ValueError(f"{path}: expected a LoCoMo JSON file or a list of "
                     "{role, content, ...} messages")


def _progress(total: int, desc: str) -> Any:
    """A tqdm bar when tqdm is installed (the server extra), else a plain counter on stderr:
    the SDK-only install has httpx and pydantic alone."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return tqdm(total=total, unit="msg", desc=desc)


class _PlainProgress:
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *_: object) -> None:
        print(file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        print(f"\r{self.desc}: {self.done}/{self.total} msg", end="", file=sys.stderr,
              flush=True)


def cmd_ingest(args: argparse.Namespace) -> int:
    from memos.client import MemosClient

    sessions = load_conversations(Path(args.file))
    total = sum(len(m) for _, m in sessions)
    with MemosClient(_base_url(args)) as client:
        try:
            client.get_cube(args.cube)
        except NotFound:
            client.create_cube(args.cube)
            print(f"created cube {args.cube!r}")
        stored = skipped = 0
        with _progress(total, f"ingest → {args.cube}") as bar:
            for session_id, messages in sessions:
                for start in range(0, len(messages), args.batch):
                    chunk = messages[start:start + args.batch]
                    result = client.add_messages(args.cube, session_id=session_id,
                                                 messages=chunk)
                    stored += result.messages_stored
                    skipped += result.messages_skipped
                    bar.update(len(chunk))
    print(f"stored {stored} messages ({skipped} already known) in {len(sessions)} sessions")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from memos.client import MemosClient

    with MemosClient(_base_url(args)) as client:
        result = client.search(args.cube, query=args.query, top_k=args.top_k)
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    for rank, hit in enumerate(result.hits, 1):
        unit = hit.unit
        text = " ".join((unit.text or "").split())
        who = f"{unit.speaker}: " if unit.speaker else ""
        print(f"{rank:>2}. {hit.score:.3f} [{unit.granularity.value}] {who}{text[:160]}  "
              f"({unit.id})")
    print(f"({result.took_ms:.1f} ms)")
    return 0


# ------------------------------------------------------------------ parser
#: Commands loaded only when named: (module, function adding the command, top-level help).
_LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("memos.bench.server", "add_bench_command",
              "ingest/search speed over HTTP; `bench model-memory`: KV cache and LoRA"),
    "mcp": ("memos.mcp_server", "add_mcp_command",
            "serve a cube's memory tools over MCP (stdio or streamable HTTP)"),
    "eval": ("memos.eval.commands", "add_eval_group",
             "evaluations: LoCoMo retrieval, HaluMem hallucination"),
    "backbone": ("memos.backbone.cli", "add_backbone_commands",
                 "the bundled MoE model: prepare, chat, eval (needs the backbone extra)"),
}


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (skipping the global ``--data-dir DIR``)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--data-dir":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``argv``, only the lazily loaded command it names is loaded
    (the others appear in the help with their one-line description)."""
    parser = argparse.ArgumentParser(prog="memos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"memos {__version__}")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory (default $MEMOS_DATA_DIR or ./memos-data)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="start the REST API (needs the server extra)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; others need API keys)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                   help="data directory (default $MEMOS_DATA_DIR or ./memos-data)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug", "trace"],
                   help="server log level (default info; debug shows start-up tracebacks)")
    p.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_cmd", required=True, metavar="COMMAND")
    p = db.add_parser("upgrade", help="apply Alembic migrations (default: to head)")
    p.add_argument("revision", nargs="?", default="head",
                   help="Alembic revision to upgrade to (default head)")
    p.set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_cmd", required=True, metavar="COMMAND")
    p = keys.add_parser("create", help="create a key for a tenant (printed once)")
    p.add_argument("--tenant", required=True, help="tenant the key belongs to")
    p.add_argument("--name", help="a label for the key (shown by `keys list`)")
    p.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list active keys").set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke a key by id")
    p.add_argument("key_id", help="key id, as printed by `keys create` or `keys list`")
    p.set_defaults(func=cmd_keys_revoke)

    emb = sub.add_parser("embedders", help="embedding models").add_subparsers(
        dest="embedders_cmd", required=True, metavar="COMMAND")
    p = emb.add_parser("quantize", help="(re)build the bundled model's per-channel dynamic "
                       "int8 variant into $MEMOS_MODELS_DIR (default ~/.cache/memos/models) "
                       "from the shipped model, offline")
    p.set_defaults(func=cmd_embedders_quantize)
    p = emb.add_parser("switch", help="re-embed a cube on a server with another embedder")
    p.add_argument("--cube", required=True, help="cube to re-embed")
    p.add_argument("--spec", required=True,
                   help='embedder spec as JSON, e.g. \'{"kind": "bundled"}\'')
    p.add_argument("--wait", action="store_true", help="poll the job until it ends")
    p.add_argument("--base-url", help="memos server (default $MEMOS_URL or "
                   "http://127.0.0.1:8000)")
    p.set_defaults(func=cmd_embedders_switch)

    p = sub.add_parser("ingest", help="send a LoCoMo file or a message list to a server")
    p.add_argument("file", help="a LoCoMo JSON file or a JSON list of {role, content, ...}")
    p.add_argument("--cube", required=True, help="cube to ingest into (created if missing)")
    p.add_argument("--base-url", help="memos server (default $MEMOS_URL or "
                   "http://127.0.0.1:8000)")
    p.add_argument("--batch", type=int, default=200, help="messages per request")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search a cube on a server")
    p.add_argument("query", help="what to look for, in plain words")
    p.add_argument("--cube", required=True, help="cube to search")
    p.add_argument("--top-k", type=int, default=10, help="how many hits (default 10)")
    p.add_argument("--base-url", help="memos server (default $MEMOS_URL or "
                   "http://127.0.0.1:8000)")
    p.add_argument("--json", action="store_true", help="print the raw JSON response")
    p.set_defaults(func=cmd_search)

    wanted = _command_word(argv) if argv is not None else None
    for name, (module, function, summary) in _LAZY_COMMANDS.items():
        if argv is None or name == wanted:
            _add_lazy_command(sub, name, module, function, summary)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _add_lazy_command(sub: Any, name: str, module: str, function: str, summary: str) -> None:
    import importlib

    try:
        add = getattr(importlib.import_module(module), function)
    except ImportError as exc:  # an optional extra is not installed
        problem = str(exc)
        p = sub.add_parser(name, help=f"{summary} [unavailable: {problem}]")
        p.set_defaults(func=lambda _args: _unavailable(name, problem))
        return
    add(sub)


def _unavailable(name: str, problem: str) -> int:
    extra = {"backbone": "backbone", "mcp": "llm"}.get(name, "server")
    raise BackendUnavailable(f"`memos {name}` is not available: {problem} "
                             f"(pip install 'memos-memory[{extra}]')")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MemosError as exc:
        print(f"memos: {exc.message}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"memos: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
