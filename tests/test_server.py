"""A real server process: restart persistence, and kill -9 during ingest loses nothing
that was acknowledged."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memos.client import MemosClient
from memos.errors import BackendUnavailable, MemosError


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    with (data_dir / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memos.cli", "serve", "--port", str(port), "--data-dir",
             str(data_dir), "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    with MemosClient(url, timeout=2) as client:
        while True:
            try:
                client.health()
                return proc, url
            except BackendUnavailable:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    out = (data_dir / "server.log").read_text()
                    pytest.fail(f"server did not start:\n{out}")
                time.sleep(0.2)


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


def test_kill_9_during_ingest_loses_no_acknowledged_message(tmp_path: Path) -> None:
    proc, url = _serve(tmp_path)
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

    proc, url = _serve(tmp_path)
    try:
        with MemosClient(url) as client:
            page = client.list_memories("k", filters={"granularity": ["turn"]}, limit=1)
            assert page.total >= len(acknowledged)
            stored = set()
            offset = 0
            while True:
                items = client.list_memories("k", filters={"granularity": ["turn"]},
                                             offset=offset, limit=500).items
                if not items:
                    break
                stored.update(m.metadata["message_id"] for m in items)
                offset += len(items)
            assert set(acknowledged) <= stored
            # The index was rebuilt or caught up: the newest acknowledged turn is searchable.
            last = acknowledged[-1]
            session, j = last[1:].split("-")
            hits = client.search("k", query=f"Entry {session}.{j}: today I planted {j} tulips.",
                                 top_k=3, filters={"granularity": ["turn"]}).hits
            assert any(h.unit.metadata["message_id"] == last for h in hits)
    finally:
        proc.kill()
        proc.wait(timeout=30)


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
