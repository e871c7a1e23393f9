"""A real server process: restart persistence, kill -9 during ingest loses nothing that was
acknowledged (SQLite and PostgreSQL), and several server processes ingesting into one
PostgreSQL session number its messages without a gap or a duplicate."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import pg_database
from sqlalchemy import select

from memos.client import MemosClient
from memos.errors import BackendUnavailable, MemosError
from memos.store.models import CubeRow, MessageRow
from memos.store.sql import Store


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, env_extra: dict[str, str] | None = None,
           log_name: str = "server.log") -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    env.update(env_extra or {})
    log_path = data_dir / log_name
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memos.cli", "serve", "--port", str(port), "--data-dir",
             str(data_dir), "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log_path


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.time() + 60
    with MemosClient(url, timeout=2) as client:
        while True:
            try:
                client.health()
                return
            except BackendUnavailable:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    pytest.fail(f"server did not start:\n{log_path.read_text()}")
                time.sleep(0.2)


def _serve(data_dir: Path, env_extra: dict[str, str] | None = None
           ) -> tuple[subprocess.Popen[bytes], str]:
    proc, url, log_path = _start(data_dir, env_extra)
    _wait_ready(proc, url, log_path)
    return proc, url


def _store_env(backend: str, pg_server: Any) -> dict[str, str]:
    """The server's environment for ``backend``: SQLite in the data dir, or a fresh
    PostgreSQL database."""
    if backend == "sqlite":
        return {}
    if pg_server is None:
        pytest.skip("PostgreSQL (pgserver) could not start")
    return {"MEMOS_DATABASE_URL": pg_database(pg_server)}


def test_restart_keeps_everything(tmp_path: Path) -> None:
    proc, url = _serve(tmp_path)
    try:
        with MemosClient(url) as client:
            client.create_cube("r")
            client.add_messages("r", session_id="s", messages=[
                {"id": "x1", "role": "user", "speaker": "Kai", "content": "I keep bees."}])
            fact = client.add_memory("r", text="Kai keeps bees")
            client.update_memory("r", fact.id, text="Kai keeps bees and goats")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    banner = (tmp_path / "server.log").read_text()
    assert "127.0.0.1" in banner and "/docs" in banner
    proc, url = _serve(tmp_path)
    try:
        with MemosClient(url) as client:
            hits = client.search("r", query="What animals does Kai keep?", top_k=5).hits
            texts = [h.unit.text for h in hits]
            assert "Kai keeps bees and goats" in texts and "Kai keeps bees" not in texts
            assert len(client.history("r", hits[0].unit.id)) >= 1
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_kill_9_during_ingest_loses_no_acknowledged_message_and_a_resend_stores_nothing_twice(
        backend: str, tmp_path: Path, pg_server: Any) -> None:
    env = _store_env(backend, pg_server)
    proc, url = _serve(tmp_path, env)
    sent: list[tuple[str, list[dict[str, str]]]] = []
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with MemosClient(url, timeout=10) as client:
            client.create_cube("k")
            i = 0
            while not stop.is_set():
                batch = [{"id": f"m{i}-{j}", "role": "user", "speaker": "Zoe",
                          "content": f"Entry {i}.{j}: today I planted {j} tulips."}
                         for j in range(20)]
                sent.append((f"s{i}", batch))
                try:
                    client.add_messages("k", session_id=f"s{i}", messages=batch)
                except MemosError:
                    return
                acknowledged.extend(m["id"] for m in batch)
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.time() + 30
    while len(acknowledged) < 100 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stop.set()
    thread.join(timeout=30)
    assert len(acknowledged) >= 100

    proc, url = _serve(tmp_path, env)
    try:
        with MemosClient(url) as client:
            assert set(acknowledged) <= _stored_turns(client, "k")
            # The index was rebuilt or caught up: the newest acknowledged turn is searchable,
            # first by its own text in the vector index. (The router may rank near-duplicate
            # turns whose facts were derived before the kill above it: its derive job is
            # still pending.)
            last = acknowledged[-1]
            session, j = last[1:].split("-")
            query = f"Entry {session}.{j}: today I planted {j} tulips."
            dense = client.search("k", query=query, top_k=1, mode="dense",
                                  filters={"granularity": ["turn"]}).hits
            assert dense[0].unit.metadata["message_id"] == last
            routed = client.search("k", query=query, top_k=10, mode="router").hits
            assert any(h.unit.metadata.get("message_id") == last for h in routed)
            # A client that never saw its answers sends everything again: nothing doubles.
            for session_id, batch in sent:
                result = client.add_messages("k", session_id=session_id, messages=batch)
                if batch[0]["id"] in acknowledged:
                    assert result.messages_stored == 0
            every_id = {m["id"] for _, batch in sent for m in batch}
            assert _stored_turns(client, "k") == every_id
            page = client.list_memories("k", filters={"granularity": ["turn"]}, limit=1)
            assert page.total == len(every_id)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _stored_turns(client: MemosClient, cube_id: str) -> set[str]:
    stored: set[str] = set()
    offset = 0
    while True:
        items = client.list_memories(cube_id, filters={"granularity": ["turn"]},
                                     offset=offset, limit=500).items
        if not items:
            return stored
        stored.update(m.metadata["message_id"] for m in items)
        offset += len(items)


def test_three_server_processes_ingesting_into_one_postgresql_session_number_it_exactly(
        tmp_path: Path, pg_server: Any) -> None:
    """3 processes x 4 concurrent writers x 6 batches of 10 messages into one session: every
    acknowledged message stored once, seq exactly 0..n-1, no request failed."""
    if pg_server is None:
        pytest.skip("PostgreSQL (pgserver) could not start")
    database_url = pg_database(pg_server)
    # Stateless PostgreSQL workers may share a data directory (no lock is taken for them).
    env = {"MEMOS_DATABASE_URL": database_url, "MEMOS_EMBEDDER": "hashing",
           "MEMOS_EXTRACTOR": "none", "MEMOS_RUN_WORKER": "false"}
    servers = [_start(tmp_path, env, log_name=f"server{n}.log") for n in range(3)]
    errors: list[str] = []
    acknowledged: list[str] = []
    try:
        for proc, url, log_path in servers:
            _wait_ready(proc, url, log_path)
        with MemosClient(servers[0][1]) as client:
            client.create_cube("together")
        barrier = threading.Barrier(12)

        def writer(url: str, name: str) -> None:
            with MemosClient(url, timeout=60) as client:
                barrier.wait()
                for b in range(6):
                    batch = [{"id": f"{name}-{b}-{j}", "role": "user",
                              "content": f"{name} says line {b}.{j}"} for j in range(10)]
                    try:
                        result = client.add_messages("together", session_id="s", messages=batch)
                    except MemosError as exc:
                        errors.append(f"{name}: {exc}")
                        continue
                    if result.messages_stored != len(batch):
                        errors.append(f"{name}: stored {result.messages_stored} of {len(batch)}")
                    acknowledged.extend(m["id"] for m in batch)

        threads = [threading.Thread(target=writer, args=(url, f"p{n}w{t}"))
                   for n, (_, url, _) in enumerate(servers) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for proc, _, _ in servers:
            proc.kill()
            proc.wait(timeout=30)
    assert errors == []
    store = Store(database_url)
    try:
        with store.transaction() as session:
            rows = session.execute(select(MessageRow.seq, MessageRow.id).join(
                CubeRow, CubeRow.key == MessageRow.cube_key).where(
                CubeRow.id == "together", MessageRow.session_id == "s")
                .order_by(MessageRow.seq)).all()
    finally:
        store.dispose()
    assert len(acknowledged) == 3 * 4 * 6 * 10
    assert sorted(message_id for _, message_id in rows) == sorted(acknowledged)
    assert [seq for seq, _ in rows] == list(range(len(acknowledged)))
    # each writer's batches keep their order within the session
    for name in {m.rsplit("-", 2)[0] for m in acknowledged}:
        mine = [message_id for _, message_id in rows if message_id.startswith(name + "-")]
        assert mine == [f"{name}-{b}-{j}" for b in range(6) for j in range(10)]


def test_a_second_server_on_one_data_directory_exits_1_naming_it_and_a_kill_9_frees_it(
        tmp_path: Path) -> None:
    env = {"MEMOS_EMBEDDER": "hashing", "MEMOS_EXTRACTOR": "none"}
    first, url = _serve(tmp_path, env)
    try:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
        second = subprocess.run(
            [sys.executable, "-m", "memos.cli", "serve", "--port", str(_port()),
             "--data-dir", str(tmp_path)], env={**child_env, **env}, capture_output=True,
            text=True, timeout=120)
        assert second.returncode == 1
        assert "Traceback" not in second.stderr and "memos 0.1.0 on" not in second.stdout
        assert second.stderr.strip().splitlines()[-1] == (
            f"memos: the server did not start: Conflict: data directory {tmp_path.resolve()} "
            f"is in use by another memos process (pid {first.pid}); stop it, or give this "
            "one another --data-dir (MEMOS_DATA_DIR)")
        with MemosClient(url) as client:  # the first one is unharmed
            client.create_cube("still-mine")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    third, url = _serve(tmp_path, env)  # the dead holder's lock file does not block
    try:
        with MemosClient(url) as client:
            assert [c.id for c in client.list_cubes()] == ["still-mine"]
    finally:
        third.kill()
        third.wait(timeout=30)


def test_cli_ingest_and_search_against_a_server(tmp_path: Path) -> None:
    import json

    convo = tmp_path / "chat.json"
    convo.write_text(json.dumps([
        {"role": "user", "speaker": "Ola", "content": "I run a small bakery in Gdansk."},
        {"role": "assistant", "content": "What do you bake most?"},
        {"role": "user", "speaker": "Ola", "content": "Rye bread and poppy seed rolls."}]))
    locomo = tmp_path / "locomo.json"
    locomo.write_text(json.dumps([{"sample_id": "x", "observation": "MUST NOT BE READ",
                                   "conversation": {
        "speaker_a": "Ola", "speaker_b": "Jan", "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": "Jan", "dia_id": "D1:1", "text": "I adopted a cat."}]}}]))
    proc, url = _serve(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    try:
        for path in (convo, locomo):
            out = subprocess.run([sys.executable, "-m", "memos.cli", "ingest", str(path),
                                  "--cube", "cli", "--base-url", url],
                                 capture_output=True, text=True, env=env, timeout=120)
            assert out.returncode == 0, out.stderr
        assert "stored 1 messages" in out.stdout
        out = subprocess.run([sys.executable, "-m", "memos.cli", "search", "what does Ola bake?",
                              "--cube", "cli", "--base-url", url, "--top-k", "3"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0 and "Rye bread" in "".join(out.stdout.splitlines()[:3])
        with MemosClient(url) as client:
            texts = [m.text or "" for m in client.list_memories("cli").items]
            assert not any("MUST NOT BE READ" in t for t in texts)
            assert any("2023-05-08" in (m.metadata.get("x") or "2023-05-08") for m in
                       client.list_memories("cli").items)
        out = subprocess.run([sys.executable, "-m", "memos.cli", "search", "x", "--cube",
                              "nope", "--base-url", url], capture_output=True, text=True,
                             env=env, timeout=60)
        assert out.returncode == 2 and "not found" in out.stderr
    finally:
        proc.kill()
        proc.wait(timeout=30)
