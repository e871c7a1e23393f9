"""Load generators, run through the shipped paths only (a real server over HTTP, the real
backbone): :mod:`memos.bench.server` (``memos bench``: ingest and search speed) and
:mod:`memos.bench.model_memory` (``memos bench model-memory``: KV-cache time to first
token, LoRA adapters). This package file does no work at import time.
"""
