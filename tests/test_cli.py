"""The command line a new user meets: help everywhere, a fast ``--help``, clear failures."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from memos.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "memos"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_option_and_argument_has_help() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                missing += [f"{path} {n}" for n in action.choices if not helps.get(n)]
                continue
            if not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "no help text: " + ", ".join(missing)


def test_top_level_help_lists_every_command() -> None:
    text = build_parser().format_help()
    for command in ("serve", "db", "keys", "ingest", "search", "bench", "mcp", "eval",
                    "backbone"):
        assert command in text


def test_help_is_fast_because_commands_load_lazily() -> None:
    code = ("import sys, time; t = time.perf_counter(); from memos.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(time.perf_counter() - t, sorted(m for m in sys.modules if m in "
            "('numpy', 'httpx', 'pydantic', 'torch', 'fastapi', 'sqlalchemy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    seconds, heavy = out.split(" ", 1)
    # What makes it fast is importing nothing heavy; the time itself is only reported.
    assert heavy == "[]", f"`memos --help` imported {heavy} ({float(seconds):.2f} s)"


def test_help_of_a_lazily_loaded_command_shows_its_options(capsys) -> None:
    started = time.perf_counter()
    try:
        build_parser(["bench", "--help"]).parse_args(["bench", "--help"])
    except SystemExit:
        pass
    assert "--units" in capsys.readouterr().out, time.perf_counter() - started


def _serve(tmp_path, env_extra: dict[str, str]) -> subprocess.Popen:
    import os

    from memos.local_server import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "memos.cli", "--data-dir", str(tmp_path), "serve", "--port",
         str(free_port()), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_failed_start_exits_non_zero_with_the_cause_in_one_line_and_no_banner(
        tmp_path) -> None:
    proc = _serve(tmp_path, {"MEMOS_EMBEDDER": "no-such-model"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "memos 0.1.0 on" not in out  # no banner for a server that is not there
    last = err.strip().splitlines()[-1]
    assert last.startswith("memos: the server did not start: InvalidInput: unknown embedder")
    assert "Traceback" not in err


def test_the_banner_comes_once_the_server_answers(tmp_path) -> None:
    import httpx

    proc = _serve(tmp_path, {})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("memos 0.1.0 on http://127.0.0.1:"), first
        url = first.split(" on ", 1)[1].split(" ", 1)[0]
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        shown = "".join(proc.stdout.readline() for _ in range(3))
        assert "/docs" in shown and "/ui" in shown and "try:" in shown, shown
    finally:
        proc.terminate()
        proc.communicate(timeout=60)  # also closes the pipes
