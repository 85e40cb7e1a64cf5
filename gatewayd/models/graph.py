"""Writing `.tflite` files without TensorFlow: a small graph builder over the flatbuffer schema
that ships with LiteRT (`ai_edge_litert.schema_py_generated`, object API, `flatbuffers`).

Tensors are numbered as they are added; constants carry their data in a buffer of their own.
The first dimension of every non-constant tensor is the batch, left open (-1 in the shape
signature) so one file scores one window or many; the interpreter infers every intermediate
shape when tensors are allocated, so the shapes given here only need the right rank.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.bool_): schema.TensorType.BOOL,
}
_OPTIONS = {  # builtin operator -> (options union member, options class)
    "ADD": ("AddOptions", schema.AddOptionsT),
    "SUB": ("SubOptions", schema.SubOptionsT),
    "MUL": ("MulOptions", schema.MulOptionsT),
    "CAST": ("CastOptions", schema.CastOptionsT),
    "EXP": ("ExpOptions", schema.ExpOptionsT),
    "GATHER": ("GatherOptions", schema.GatherOptionsT),
    "GREATER": ("GreaterOptions", schema.GreaterOptionsT),
    "NOT_EQUAL": ("NotEqualOptions", schema.NotEqualOptionsT),
    "LOGICAL_AND": ("LogicalAndOptions", schema.LogicalAndOptionsT),
    "LOGICAL_OR": ("LogicalOrOptions", schema.LogicalOrOptionsT),
    "SUM": ("ReducerOptions", schema.ReducerOptionsT),
    "MEAN": ("ReducerOptions", schema.ReducerOptionsT),
    "FULLY_CONNECTED": ("FullyConnectedOptions", schema.FullyConnectedOptionsT),
    "SQUARED_DIFFERENCE": ("SquaredDifferenceOptions", schema.SquaredDifferenceOptionsT),
}
_ACTIVATIONS = {
    None: schema.ActivationFunctionType.NONE,
    "relu": schema.ActivationFunctionType.RELU,
    "tanh": schema.ActivationFunctionType.TANH,
}


class Graph:
    """One subgraph under construction. Methods return tensor indices."""

    def __init__(self) -> None:
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [schema.BufferT()]  # buffer 0: the empty buffer, by convention
        self.operators: list[Any] = []
        self.opcodes: dict[int, int] = {}
        self.inputs: list[int] = []

    def _tensor(self, name: str, shape: tuple[int, ...], dtype: np.dtype, buffer: int, batched: bool) -> int:
        t = schema.TensorT()
        t.name = name
        t.type = _TYPES[np.dtype(dtype)]
        t.buffer = buffer
        t.shape = np.array([1 if batched and i == 0 else d for i, d in enumerate(shape)], dtype=np.int32)
        if batched:
            t.shapeSignature = np.array([-1, *shape[1:]], dtype=np.int32)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, name: str, width: int, dtype: type = np.float32) -> int:
        """A (batch, width) input."""
        index = self._tensor(name, (1, width), np.dtype(dtype), 0, batched=True)
        self.inputs.append(index)
        return index

    def const(self, name: str, value: Any, dtype: type) -> int:
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
        self.buffers.append(buffer)
        return self._tensor(name, array.shape, array.dtype, len(self.buffers) - 1, batched=False)

    def op(
        self, kind: str, inputs: list[int], *, name: str, rank: int, dtype: type = np.float32, **options: Any
    ) -> int:
        """Append one builtin operator with one batched output of the given rank."""
        code = getattr(schema.BuiltinOperator, kind)
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        out = self._tensor(name, (1,) * rank, np.dtype(dtype), 0, batched=True)
        o = schema.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs = np.array(inputs, dtype=np.int32)
        o.outputs = np.array([out], dtype=np.int32)
        if kind in _OPTIONS:
            member, cls = _OPTIONS[kind]
            opts = cls()
            for key, value in options.items():
                if key == "fusedActivationFunction":
                    value = _ACTIVATIONS[value]
                setattr(opts, key, value)
            o.builtinOptionsType = getattr(schema.BuiltinOptions, member)
            o.builtinOptions = opts
        elif options:
            raise ValueError(f"{kind} takes no options")
        self.operators.append(o)
        return out

    def finish(self, outputs: list[int], description: str) -> bytes:
        """Serialize to the bytes of a `.tflite` file."""
        subgraph = schema.SubGraphT()
        subgraph.tensors = self.tensors
        subgraph.inputs = np.array(self.inputs, dtype=np.int32)
        subgraph.outputs = np.array(outputs, dtype=np.int32)
        subgraph.operators = self.operators
        subgraph.name = "main"
        model = schema.ModelT()
        model.version = 3
        model.description = description
        model.subgraphs = [subgraph]
        model.buffers = self.buffers
        model.operatorCodes = []
        for code in sorted(self.opcodes, key=self.opcodes.__getitem__):
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = 1
            model.operatorCodes.append(oc)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def operators_of(model: bytes) -> list[str]:
    """Names of the builtin operators a `.tflite` file uses, in order of first use."""
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in m.operatorCodes]
