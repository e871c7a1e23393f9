"""The litellm wrapper: bounded retries on transient failures only, lenient JSON replies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memos.llm import Retry, ask_json, is_transient, load_litellm

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MESSAGES = [{"role": "user", "content": "x"}]


def test_a_rate_limit_is_retried_with_back_off_then_raised() -> None:
    waits: list[float] = []
    calls: list[int] = []
    litellm = load_litellm()

    def call() -> object:
        calls.append(1)
        return litellm.completion(model="gpt-4o-mini", messages=MESSAGES,
                                  mock_response="litellm.RateLimitError")

    retry = Retry(attempts=3, initial_delay=0.5, max_delay=0.75, sleep=waits.append)
    with pytest.raises(litellm.RateLimitError):
        retry.call(call, transient=is_transient)
    assert len(calls) == 3 and waits == [0.5, 0.75]


def test_a_transient_failure_that_passes_returns_the_answer() -> None:
    litellm = load_litellm()
    replies = iter(["litellm.RateLimitError", '{"ok": true}'])

    def call() -> object:
        return litellm.completion(model="gpt-4o-mini", messages=MESSAGES,
                                  mock_response=next(replies))

    response = Retry(sleep=lambda s: None).call(call, transient=is_transient)
    assert response.choices[0].message.content == '{"ok": true}'


def test_a_bad_request_is_not_retried() -> None:
    calls: list[int] = []
    litellm = load_litellm()

    def call() -> object:
        calls.append(1)
        return litellm.completion(model="no-provider-model", messages=MESSAGES)

    with pytest.raises(litellm.BadRequestError):
        Retry(sleep=lambda s: pytest.fail("slept")).call(call, transient=is_transient)
    assert len(calls) == 1


def test_retry_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)


def test_ask_json_reads_fenced_bare_or_no_json() -> None:
    def reply(text: str) -> dict[str, object] | None:
        return ask_json(None, model="gpt-4o-mini", system="s", user="u",
                        options={"mock_response": text})

    assert reply('```json\n{"a": 1}\n```') == {"a": 1}
    assert reply('Here: {"a": 2} done') == {"a": 2}
    assert reply("no json") is None


def test_preload_imports_litellm_off_the_calling_thread_once() -> None:
    """A fresh interpreter: the API's startup preload imports litellm on a thread, and a
    second preload (litellm already there) starts nothing."""
    script = ("import sys\n"
              "from memos.llm import preload_litellm\n"
              "thread = preload_litellm()\n"
              "assert thread is not None and thread.name == 'memos-litellm-preload'\n"
              "thread.join(120)\n"
              "assert 'litellm' in sys.modules and preload_litellm() is None\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
