"""CI smoke test of the README, as a new user would run it (standard library only).

1. The README's first command — the service install, no other extras — in a fresh ``.venv``,
   serving on a free port with a throw-away data directory; its banner must appear.
2. The README's "Try it" curl flow against it, with the answers checked (the dog question
   finds the Pixel message first, the context cites Berlin).
3. The README's SDK-only install in a fresh venv: the installed set must be exactly memos
   plus the dependency closure of httpx and pydantic; then the README's SDK snippet runs
   with that venv against the server.

Run from the repository root: ``python3 .ci/readme_smoke.py``. Exits non-zero on a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.+?)\n```", text, flags=re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fail(message: str, log: Path | None = None) -> None:
    print(f"README smoke FAILED: {message}", file=sys.stderr)
    if log is not None and log.exists():
        print(log.read_text()[-4000:], file=sys.stderr)
    raise SystemExit(1)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"the README's first command exited with {proc.returncode}", log)
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    fail(f"no /healthz answer within {timeout:.0f} s", log)


def inspector(base: str) -> None:
    """The banner's inspector link answers on the server extra alone, with its chart script
    served from the package (no CDN)."""
    with urllib.request.urlopen(base + "/ui", timeout=30) as r:
        page = r.read().decode()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    if not scripts or any(src.startswith(("http:", "https:", "//")) for src in scripts):
        fail(f"/ui should load its scripts from the server itself: {scripts}")
    for src in scripts:
        with urllib.request.urlopen(base + src, timeout=30) as r:
            if r.status != 200:
                fail(f"/ui script {src} answered {r.status}")
    print(f"  ok: /ui serves, its {len(scripts)} scripts from the server itself")


def commands(block: str) -> list[str]:
    """The block's commands: chunks separated by blank lines or comment lines."""
    out, current = [], []
    for line in block.splitlines() + [""]:
        if not line.strip() or line.lstrip().startswith("#"):
            if current:
                out.append("\n".join(current))
                current = []
        else:
            current.append(line)
    return out


def try_it(base: str) -> None:
    steps = commands(blocks(section("Try it"), "bash")[0])
    if len(steps) != 4:
        fail(f"expected 4 commands in the Try it block, found {len(steps)}")
    answers = []
    for step in steps:
        step = step.replace("localhost:8000", base.removeprefix("http://"))
        done = subprocess.run(["bash", "-c", step], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            fail(f"`{step[:60]}…` exited {done.returncode}: {done.stderr}")
        try:
            answers.append(json.loads(done.stdout))
        except json.JSONDecodeError:
            fail(f"`{step[:60]}…` did not answer JSON: {done.stdout[:300]}")
    cube, ingest, search, context = answers
    checks = {
        "the cube is created": cube.get("id") == "ana",
        "both messages are stored": ingest.get("messages_stored") == 2,
        "the dog question finds the Pixel message first":
            "Pixel" in (search.get("hits") or [{}])[0].get("unit", {}).get("text", ""),
        "search says what its scores are": search.get("score_kind") in ("router", "cosine"),
        "the context answers where Ana lives, citing a unit":
            "Berlin" in context.get("text", "") and bool(context.get("unit_ids")),
    }
    for what, ok in checks.items():
        if not ok:
            fail(f"Try it: {what} — got {json.dumps(answers)[:1500]}")
        print(f"  ok: {what}")
    # Facts are extracted in a background job: the example's fact must end up active.
    facts: list = []
    deadline = time.time() + 120
    while time.time() < deadline:
        with urllib.request.urlopen(f"{base}/v1/cubes/ana/sessions/2023-05-08/memories") as r:
            facts = json.load(r)
        if any("Pixel" in f["text"] for f in facts):
            break
        time.sleep(1)
    pixel = [f for f in facts if "Pixel" in f["text"]]
    if not pixel or pixel[0]["status"] != "active":
        fail(f"Try it: the example's fact about Pixel is not stored active: {facts}")
    print(f"  ok: the example's fact is stored active: {pixel[0]['text']!r}")


CLOSURE = """
import importlib.metadata as md, json, re
from pip._vendor.packaging.requirements import Requirement
def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
need, seen = ["httpx", "pydantic"], set()
while need:
    name = norm(need.pop())
    if name not in seen:
        seen.add(name)
        for req in map(Requirement, md.requires(name) or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                need.append(req.name)
installed = {norm(d.metadata["Name"]) for d in md.distributions()}
print(json.dumps({"closure": sorted(seen), "installed": sorted(installed)}))
"""

def sdk_only(base: str, work: Path) -> None:
    install = next(b for b in blocks(section("The Python SDK"), "bash") if "pip install" in b)
    env_dir = re.match(r"python3 -m venv (\S+)", install)
    if env_dir is None:
        fail(f"the SDK install block does not start with `python3 -m venv DIR`: {install}")
    venv = ROOT / env_dir.group(1)  # type: ignore[union-attr]
    shutil.rmtree(venv, ignore_errors=True)
    try:
        done = subprocess.run(["bash", "-c", install], cwd=ROOT, capture_output=True,
                              text=True, timeout=900)
        if done.returncode != 0:
            fail(f"the SDK-only install failed: {done.stderr[-2000:]}")
        python = str(venv / "bin" / "python")
        sets = json.loads(subprocess.run([python, "-c", CLOSURE], capture_output=True,
                                         text=True, check=True).stdout)
        extra = set(sets["installed"]) - set(sets["closure"]) - {"memos-memory", "pip",
                                                                  "setuptools", "wheel"}
        if extra:
            fail(f"the SDK-only install pulled more than httpx and pydantic need: {extra}")
        print(f"  ok: the SDK-only install is memos + {len(sets['closure'])} packages "
              f"({', '.join(sets['closure'])})")
        snippet = blocks(section("The Python SDK"), "python")[0]
        snippet = snippet.replace("http://127.0.0.1:8000", base)
        script = work / "sdk_snippet.py"
        script.write_text(snippet)
        ran = subprocess.run([python, str(script)], capture_output=True, text=True,
                             timeout=300, cwd=work)
        if ran.returncode != 0:
            fail(f"the README's SDK snippet failed:\n{ran.stdout}\n{ran.stderr}")
        expected = ["I started learning the cello", "['superseded', 'active']", "gone"]
        for line in expected:
            if line not in ran.stdout:
                fail(f"the SDK snippet's output lacks {line!r}:\n{ran.stdout}")
        print("  ok: the README's SDK snippet runs with the SDK-only install")
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def main() -> None:
    first = blocks(section("Quick start"), "bash")[0]
    if not first.endswith("memos serve"):
        fail(f"the README's first command should end with `memos serve`: {first}")
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="memos-smoke-"))
    log = work / "serve.log"
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    print(f"README smoke: {first} --port {port} --data-dir {work / 'data'}")
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"{first} --port {port} --data-dir {work / 'data'}"], cwd=ROOT,
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(base, proc, log, timeout=900)
        time.sleep(0.5)  # the banner follows the first /healthz answer
        if f"on {base}" not in log.read_text():
            fail("the start banner did not appear", log)
        print("  ok: the README's first command serves and shows what to do next")
        inspector(base)
        try_it(base)
        sdk_only(base, work)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    print("README smoke passed")


if __name__ == "__main__":
    main()
