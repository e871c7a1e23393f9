"""Fuzz the HTTP API with schemathesis, every check on (``.ci/schemathesis.toml``, which
names the four exceptions and why), for a bounded time; exit 1 on any
failure (a server error, a status or header the OpenAPI schema does not state, a valid
request refused or an invalid one accepted, a 405 without ``Allow``, ...).

A real server (uvicorn, real keep-alive connections) on a fresh data directory, run twice:
without API keys and with them (``MEMOS_API_KEYS``; the fuzzer sends the key, and its
``ignored_auth`` check also tries without). The routes that run the bundled model (chat,
activations, adapters, scheduler) are fuzzed with the model prepared and a small number of
examples, since each call may run the model; the rest for ``--seconds`` each run.

    python .ci/fuzz.py [--seconds 30] [--model-examples 8] [--seed N | --seed random]

CI runs a fixed seed, so a red run replays exactly (``--seed``); explore with
``--seed random`` and longer ``--seconds``, and fix what it finds before changing the seed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL_ROUTES = r"/chat$|/activations|/adapters|/scheduler"
KEY = "fuzz-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_backbone(data_dir: Path) -> bool:
    """The bundled model in ``data_dir`` (as ``memos backbone prepare``, with a short
    calibration); False when its weights are not on this machine."""
    try:
        from memos.backbone.gguf import find_smollm2_gguf
        from memos.backbone.prepare import prepare

        gguf = find_smollm2_gguf()
    except (ImportError, FileNotFoundError) as exc:
        print(f"!! bundled model unavailable ({exc}); its routes are fuzzed without it")
        return False
    prepare(data_dir, gguf_path=str(gguf), progress=False, calib_tokens=256)
    return True


def serve(data_dir: Path, port: int, keys: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEMOS_DATA_DIR": str(data_dir), "MEMOS_EMBEDDER": "hashing",
           "MEMOS_API_KEYS": keys, "PYTHONPATH": str(ROOT),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start")


def tracebacks(log: str) -> list[str]:
    """The traceback blocks in a server log (each up to its exception line)."""
    blocks, current = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            current = [line]
        elif current is not None:
            current.append(line)
            if line and not line.startswith((" ", "\t")):
                blocks.append("\n".join(current))
                current = None
    return blocks


def schemathesis(port: int, *, keys: bool, args: list[str], workdir: Path,
                 seed: str) -> int:
    """One run; its crash cache and reports go to ``workdir``, never into the checkout."""
    cmd = [str(BIN / "schemathesis"), "--config-file", str(ROOT / ".ci" / "schemathesis.toml"),
           "run", f"http://127.0.0.1:{port}/openapi.json",
           "--suppress-health-check", "all", *args]  # every check: see the config
    if seed != "random":
        cmd += ["--seed", seed]
    if keys:
        cmd += ["-H", f"Authorization: Bearer {KEY}"]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30,
                        help="fuzzing time for the plain routes, per run (default 30)")
    parser.add_argument("--model-examples", type=int, default=8,
                        help="examples per model route, per run (default 8)")
    parser.add_argument("--seed", default="20261202",
                        help="hypothesis seed (default: CI's fixed one), or 'random'")
    opts = parser.parse_args()
    failed = 0
    server_logs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="memos-fuzz-") as tmp:
        prepared = Path(tmp) / "model"
        has_model = prepare_backbone(prepared)
        for keys in (False, True):
            data_dir = Path(tmp) / ("keys" if keys else "open")
            data_dir.mkdir()
            if has_model:
                (data_dir / "backbone").symlink_to(prepared / "backbone")
            port = free_port()
            log_path = Path(tmp) / f"server-{data_dir.name}.log"
            with log_path.open("wb") as log:
                server = serve(data_dir, port, f"fuzz:{KEY}" if keys else "", log)
            try:
                failed |= schemathesis(port, keys=keys, workdir=data_dir, seed=opts.seed, args=[
                    "--exclude-path-regex", MODEL_ROUTES, "--max-time", str(opts.seconds),
                    # a slow answer fails as slow (over 30 s), not as a dropped connection
                    "--max-response-time", "30", "--request-timeout", "40"])
                failed |= schemathesis(port, keys=keys, workdir=data_dir, seed=opts.seed, args=[
                    "--include-path-regex", MODEL_ROUTES,
                    # no coverage phase: its hundreds of boundary cases each run the model
                    "--max-examples", str(opts.model_examples), "--phases", "examples,fuzzing",
                    # the bundled model on CPU: a chat may generate up to its context
                    "--max-response-time", "120", "--request-timeout", "150"])
            finally:
                server.terminate()
                server.wait(timeout=30)
                server_logs.append(log_path.read_text(errors="replace"))
        # the servers' tracebacks (any 500) last, where a truncated CI log still shows them
        for text in server_logs:
            for block in tracebacks(text):
                print(block, flush=True)
    print("fuzz:", "FAILED" if failed else "0 failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
