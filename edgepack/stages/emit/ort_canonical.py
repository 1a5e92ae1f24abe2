"""Canonical re-serialisation of ONNX Runtime's ORT-format (.ort) flatbuffers.

ONNX Runtime writes the same model's .ort with its strings and tables in a different place
on every run: it serialises from hash maps whose order depends on the process's memory
addresses (abseil's hash seed is an address; some maps are keyed by pointers). The model
is the same, the bytes are not. Reading the flatbuffer and writing it again in one fixed
order (depth first, fields in schema order, vectors in their stored order) gives the same
bytes for the same model in any process.

The schema below is ONNX Runtime's `ort.fbs` (format version 6, onnxruntime 1.14 to 1.32).
A table field this schema does not know makes `canonical_ort_bytes` raise `UnknownField`
rather than drop it: the caller keeps the file as written.
"""

from __future__ import annotations

import struct
from pathlib import Path

IDENT = b"ORTM"

# Field kinds: "str"; "tab:T" a table; "[str]"; "[tab:T]"; "[raw:SIZE:ALIGN]" a vector of
# scalars or structs copied byte for byte; "uni:TYPE_VOFFSET:T1,T2,..." a union (member 1, 2, ...);
# scalars as (struct format, default).
_U8, _I8, _BOOL, _I32, _U32, _I64, _U64, _F32 = "B", "b", "?", "i", "I", "q", "Q", "f"
SCHEMA: dict[str, dict[int, object]] = {
    "InferenceSession": {4: "str", 6: "tab:Model", 10: "tab:KernelTypeStrResolver"},
    "Model": {4: (_I64, 0), 6: "[tab:OperatorSetId]", 8: "str", 10: "str", 12: "str", 14: (_I64, 0), 16: "str",
              18: "tab:Graph", 20: "str", 22: "[tab:StringStringEntry]"},
    "OperatorSetId": {4: "str", 6: (_I64, 0)},
    "StringStringEntry": {4: "str", 6: "str"},
    "Graph": {4: "[tab:Tensor]", 6: "[tab:ValueInfo]", 8: "[tab:Node]", 10: (_U32, 0), 12: "[tab:NodeEdge]",
              14: "[str]", 16: "[str]", 18: "[tab:SparseTensor]", 20: "tab:RuntimeOptimizations"},
    "Tensor": {4: "str", 6: "str", 8: "[raw:8:8]", 10: (_I32, 0), 12: "[raw:1:16]", 14: "[str]", 16: (_I64, -1)},
    "SparseTensor": {4: "tab:Tensor", 6: "tab:Tensor", 8: "[raw:8:8]"},
    "ValueInfo": {4: "str", 6: "str", 8: "tab:TypeInfo"},
    "TypeInfo": {4: "str", 6: (_U8, 0), 8: "uni:6:TensorTypeAndShape,SequenceType,MapType"},
    "TensorTypeAndShape": {4: (_I32, 0), 6: "tab:Shape"},
    "SequenceType": {4: "tab:TypeInfo"},
    "MapType": {4: (_I32, 0), 6: "tab:TypeInfo"},
    "Shape": {4: "[tab:Dimension]"},
    "Dimension": {4: "tab:DimensionValue", 6: "str"},
    "DimensionValue": {4: (_I8, 0), 6: (_I64, 0), 8: "str"},
    "Node": {4: "str", 6: "str", 8: "str", 10: (_I32, 0), 12: (_U32, 0), 14: "str", 16: (_I32, 0), 18: "str",
             20: "[str]", 22: "[str]", 24: "[tab:Attribute]", 26: "[raw:4:4]", 28: "[str]"},
    "Attribute": {4: "str", 6: "str", 8: (_I32, 0), 10: (_F32, 0.0), 12: (_I64, 0), 14: "str", 16: "tab:Tensor",
                  18: "tab:Graph", 20: "[raw:4:4]", 22: "[raw:8:8]", 24: "[str]", 26: "[tab:Tensor]",
                  28: "[tab:Graph]"},
    "NodeEdge": {4: (_U32, 0), 6: "[raw:12:4]", 8: "[raw:12:4]"},  # EdgeEnd structs: 3 x 4 bytes
    "RuntimeOptimizations": {4: "[tab:RuntimeOptimizationRecordContainerEntry]"},
    "RuntimeOptimizationRecordContainerEntry": {4: "str", 6: "[tab:RuntimeOptimizationRecord]"},
    "RuntimeOptimizationRecord": {4: "str", 6: "tab:NodesToOptimizeIndices", 10: "[str]"},
    "NodesToOptimizeIndices": {4: "[raw:4:4]", 6: (_U32, 0), 8: (_U32, 0), 10: (_BOOL, False),
                               12: (_BOOL, False), 14: (_U32, 0), 16: (_U32, 0)},
    "KernelTypeStrResolver": {4: "[tab:OpIdKernelTypeStrArgsEntry]"},
    "OpIdKernelTypeStrArgsEntry": {4: "str", 6: "[tab:KernelTypeStrArgsEntry]"},
    "KernelTypeStrArgsEntry": {4: "str", 6: "[tab:ArgTypeAndIndex]"},
    "ArgTypeAndIndex": {4: (_I8, 0), 6: (_U32, 0)},
}


class UnknownField(ValueError):
    """The file has a table field (or union member) the schema above does not know."""


def _u32(buf: bytes, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _read_table(buf: bytes, pos: int, name: str) -> dict:
    """{voffset: value} of the fields present in the table at `pos`."""
    schema = SCHEMA[name]
    vtable = pos - struct.unpack_from("<i", buf, pos)[0]
    vlen = struct.unpack_from("<H", buf, vtable)[0]
    out = {}
    for voff in range(4, vlen, 2):
        fo = struct.unpack_from("<H", buf, vtable + voff)[0]
        if fo == 0:
            continue
        if voff not in schema:
            raise UnknownField(f"{name}: field at vtable offset {voff}")
        kind, at = schema[voff], pos + fo
        if isinstance(kind, tuple):
            out[voff] = struct.unpack_from("<" + kind[0], buf, at)[0]
            continue
        target = at + _u32(buf, at)
        if kind == "str":
            out[voff] = _string(buf, target)
        elif kind.startswith("tab:"):
            out[voff] = _read_table(buf, target, kind[4:])
        elif kind.startswith("uni:"):
            _, type_voff, members = kind.split(":")
            member = out.get(int(type_voff), 0)
            names = members.split(",")
            if not 1 <= member <= len(names):
                raise UnknownField(f"{name}: union member {member}")
            out[voff] = _read_table(buf, target, names[member - 1])
        else:  # a vector
            n, start = _u32(buf, target), target + 4
            if kind == "[str]":
                out[voff] = [_string(buf, start + 4 * i + _u32(buf, start + 4 * i)) for i in range(n)]
            elif kind.startswith("[tab:"):
                out[voff] = [_read_table(buf, start + 4 * i + _u32(buf, start + 4 * i), kind[5:-1])
                             for i in range(n)]
            else:
                size = int(kind[5:-1].split(":")[0])
                out[voff] = bytes(buf[start:start + n * size])
    return out


def _string(buf: bytes, pos: int) -> bytes:
    n = _u32(buf, pos)
    return bytes(buf[pos + 4:pos + 4 + n])


def _string_offset(b, value: bytes) -> int:
    # one copy of each string (names recur in nodes, node args and edges), as onnxruntime writes them
    share = getattr(b, "CreateSharedString", None)
    return share(value) if share is not None else b.CreateString(value)


def _end_vector(b, n: int) -> int:
    try:
        return b.EndVector()  # flatbuffers >= 2
    except TypeError:
        return b.EndVector(n)


def _write_table(b, name: str, fields: dict) -> int:
    schema = SCHEMA[name]
    offsets = {}
    for voff in sorted(fields):  # children first, in field order
        kind, value = schema[voff], fields[voff]
        if isinstance(kind, tuple):
            continue
        if kind == "str":
            offsets[voff] = _string_offset(b, value)
        elif kind.startswith("tab:"):
            offsets[voff] = _write_table(b, kind[4:], value)
        elif kind.startswith("uni:"):
            members = kind.split(":")[2].split(",")
            offsets[voff] = _write_table(b, members[fields[int(kind.split(":")[1])] - 1], value)
        elif kind == "[str]" or kind.startswith("[tab:"):
            items = ([_string_offset(b, s) for s in value] if kind == "[str]"
                     else [_write_table(b, kind[5:-1], t) for t in value])
            b.StartVector(4, len(items), 4)
            for o in reversed(items):
                b.PrependUOffsetTRelative(o)
            offsets[voff] = _end_vector(b, len(items))
        else:
            size, align = (int(x) for x in kind[5:-1].split(":"))
            n = len(value) // size
            b.StartVector(size, n, align)
            b.head -= len(value)
            b.Bytes[b.head:b.head + len(value)] = value
            offsets[voff] = _end_vector(b, n)
    b.StartObject(max(schema) // 2 - 1)
    for voff in sorted(fields):
        kind, slot = schema[voff], voff // 2 - 2
        if isinstance(kind, tuple):
            fmt, default = kind
            prepend = {_U8: b.PrependUint8Slot, _I8: b.PrependInt8Slot, _BOOL: b.PrependBoolSlot,
                       _I32: b.PrependInt32Slot, _U32: b.PrependUint32Slot, _I64: b.PrependInt64Slot,
                       _U64: b.PrependUint64Slot, _F32: b.PrependFloat32Slot}[fmt]
            prepend(slot, fields[voff], default)
        else:
            b.PrependUOffsetTRelativeSlot(slot, offsets[voff], 0)
    return b.EndObject()


def canonical_ort_bytes(data: bytes) -> bytes:
    """The same ORT-format model, serialised in one fixed order."""
    import flatbuffers

    if len(data) < 8 or data[4:8] != IDENT:
        raise ValueError("not an ORT-format file (no ORTM identifier)")
    root = _read_table(data, _u32(data, 0), "InferenceSession")
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(_write_table(b, "InferenceSession", root), file_identifier=IDENT)
    return bytes(b.Output())


def canonicalise(path: Path) -> bool:
    """Rewrite an .ort file in canonical form; False (file as written) when the file has
    something the schema above does not know."""
    path = Path(path)
    data = path.read_bytes()
    try:
        canonical = canonical_ort_bytes(data)
    except (UnknownField, ValueError, struct.error, IndexError):
        return False
    if canonical != data:
        path.write_bytes(canonical)
    return True
