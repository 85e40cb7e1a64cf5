"""Running `.tflite` files: LiteRT's interpreter (`ai-edge-litert`), or `tflite_runtime` when
only that is installed; same `Interpreter` API."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gatewayd.errors import GatewayError


def _interpreter(model: bytes | Path, threads: int):
    # Imported on first use: the runtime's library is about 13 MB of the daemon's memory, which a
    # gateway without a model yet (or with detection off) need not carry.
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # pragma: no cover - only on machines with the older runtime
        from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore[no-redef]
    # Builtin kernels only: the XNNPACK delegate measured no faster on these small graphs (27 us
    # per forest window either way) and logs a line on every load.
    source = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
    return Interpreter(
        **source, num_threads=threads, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )


class ModelError(GatewayError, ValueError):
    """A model file that does not load or does not have the expected inputs (a ValueError, so
    the callers that refuse a bad bundle catch it with the rest)."""


class TfliteModel:
    """One loaded model with a single (batch, width) float32 input. Calls are not thread-safe:
    one instance per scoring thread."""

    def __init__(self, model: bytes | str | Path, *, threads: int = 1):
        # A file is mapped, not read: its pages are shared with the page cache and can be
        # dropped under memory pressure, where a copy in the heap (~0.4 MB per forest) could not.
        # Installed bundle files are never rewritten in place (install.py), so the mapping holds.
        source = Path(model) if isinstance(model, (str, Path)) else bytes(model)
        try:
            self.interpreter = _interpreter(source, threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model: {exc}") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 2:
            raise ModelError(f"expected one (batch, features) input, found {[i['shape'].tolist() for i in inputs]}")
        self.input_index = inputs[0]["index"]
        self.width = int(inputs[0]["shape"][1])
        self.outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self.size = source.stat().st_size if isinstance(source, Path) else len(source)
        self._batch = 1

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Score a (batch, width) array; returns every output by name (copies)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"expected (batch, {self.width}) features, got {x.shape}")
        if x.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self.input_index, list(x.shape), strict=True)
            self.interpreter.allocate_tensors()
            self._batch = x.shape[0]
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self.outputs.items()}
