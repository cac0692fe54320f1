"""Hostile inputs, generically: any protobuf message built from hostile field values, and raw bytes.

Strategies are derived from the message descriptors, so every RPC of every ecert.v1 service gets
them, including services added later, without a list to keep in step.
"""
from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

SPECIAL_TEXT = [
    "", " ", "\x00", "MX\x00", "MX26-00000001\x00", "\u202e", "💥" * 50, "'; DROP TABLE certificates; --",
    "-1", "-0", "0", "1e999999", "NaN", "Infinity", "-Infinity", "99999999999999999999999999999",
    "0.0000001", "1,5", " 12 ", "0x10", "１２", "9823.53.03", "0000-00-00", "0001-01-01", "9999-12-31",
    "2026-02-30", "+275760-09-13", "2026-1-1", "../../etc/passwd", "%s%s%n", "\ud7ff", "\r\n",
]

hostile_text = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.text(max_size=40),
    st.integers(0, 1_500_000).map(lambda n: "x" * n),  # huge, up to about a third of the size limit
)
hostile_int32 = st.one_of(st.sampled_from([*INT32, -1, 0, 1, 2021, 9999]), st.integers(*INT32))
hostile_int64 = st.one_of(st.sampled_from([*INT64, -1, 0, 253402300800, -62135596801]), st.integers(*INT64))
hostile_uint = st.one_of(st.sampled_from([0, 2**32 - 1, 2**64 - 1]), st.integers(0, 2**32 - 1))


def _repeated(field: FieldDescriptor) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # newer protobuf; `label` is gone there
    return bool(is_repeated) if is_repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return hostile_text
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=100)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), hostile_int32)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return hostile_int32
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return hostile_int64
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return hostile_uint.map(lambda v: v % 2**32)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return hostile_uint
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    raise NotImplementedError(field.full_name)


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """Messages of this type with any subset of fields set to hostile values."""
    cls = message_factory.GetMessageClass(descriptor)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.GetOptions().map_entry:
                continue
            value = message(field.message_type, depth + 1)
        else:
            value = _scalar(field)
        optional[field.name] = st.lists(value, max_size=3) if _repeated(field) else value

    def build(values: dict[str, Any]) -> Any:
        built = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            target = getattr(built, name)
            if _repeated(field):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(built, name, value)
        return built

    return st.fixed_dictionaries({}, optional=optional).map(build)


def corrupted(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Well-formed bytes with one byte changed, cut short, or invalid UTF-8 spliced in."""

    @st.composite
    def damage(draw: st.DrawFn) -> bytes:
        raw = bytearray(draw(data))
        how = draw(st.sampled_from(["flip", "cut", "splice"]))
        if how == "flip" and raw:
            at = draw(st.integers(0, len(raw) - 1))
            raw[at] ^= draw(st.integers(1, 255))
        elif how == "cut" and raw:
            raw = raw[: draw(st.integers(0, len(raw) - 1))]
        else:
            at = draw(st.integers(0, len(raw)))
            raw[at:at] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
        return bytes(raw)

    return damage()


def request_bytes(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    serialized = message(descriptor).map(lambda m: m.SerializeToString())
    return st.one_of(serialized, corrupted(serialized), st.binary(max_size=300))
