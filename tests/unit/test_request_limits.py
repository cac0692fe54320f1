"""The request guard's field check (server/api/limits.violation) reads only the fields that can hold a
violation, from a plan compiled per message type. Its finding must be the one a plain walk over
every present field (ListFields, depth first) finds first: same code, same field path."""
from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
from server.api.limits import TIMESTAMP_SECONDS, violation

LOW, HIGH = TIMESTAMP_SECONDS


def reference(message: Message, prefix: str = "") -> tuple[str, str] | None:
    """The check as it was first written: every present field, in ListFields order."""
    for field, value in message.ListFields():
        path = prefix + field.name
        repeated = hasattr(value, "append") or hasattr(value, "add")
        items = list(value) if repeated else [value]
        if field.type == field.TYPE_STRING:
            if any("\x00" in item for item in items):
                return "TEXT_HAS_NUL", path
        elif field.type == field.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            for index, item in enumerate(items):
                where = f"{path}[{index}]" if repeated else path
                if field.message_type.full_name == "google.protobuf.Timestamp":
                    if not (LOW <= item.seconds <= HIGH and 0 <= item.nanos <= 999_999_999):
                        return "TIMESTAMP_OUT_OF_RANGE", where
                elif found := reference(item, where + "."):
                    return found
    return None


def found(message: Message) -> tuple[str, str] | None:
    finding = violation(message)
    return (finding.code, finding.field) if finding else None


# -- a test schema with what the service's own messages lack: repeated messages and Timestamps, maps,
# a recursive type, fields declared out of number order, a oneof, and (proto2) extensions.

F = descriptor_pb2.FieldDescriptorProto
REPEATED, OPTIONAL = F.LABEL_REPEATED, F.LABEL_OPTIONAL


def _schema() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    proto3 = descriptor_pb2.FileDescriptorProto(name="limits_test.proto", package="lt", syntax="proto3",
                                                dependency=["google/protobuf/timestamp.proto"])

    def field(message, name, number, kind, label=OPTIONAL, type_name="", oneof=None):  # type: ignore[no-untyped-def]
        added = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            added.type_name = type_name
        if oneof is not None:
            added.oneof_index = oneof

    tree = proto3.message_type.add(name="Tree")  # recursive
    field(tree, "label", 2, F.TYPE_STRING)
    field(tree, "children", 1, F.TYPE_MESSAGE, REPEATED, ".lt.Tree")
    field(tree, "at", 3, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")

    counts = proto3.message_type.add(name="Counts")  # nothing to check at any depth
    field(counts, "n", 1, F.TYPE_INT64)
    field(counts, "blob", 2, F.TYPE_BYTES)

    top = proto3.message_type.add(name="Top")
    entry = top.nested_type.add(name="TagsEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_STRING)
    top.oneof_decl.add(name="choice")
    field(top, "notes", 7, F.TYPE_STRING, REPEATED)
    field(top, "name", 2, F.TYPE_STRING)
    field(top, "stamps", 5, F.TYPE_MESSAGE, REPEATED, ".google.protobuf.Timestamp")
    field(top, "tree", 4, F.TYPE_MESSAGE, type_name=".lt.Tree")
    field(top, "trees", 9, F.TYPE_MESSAGE, REPEATED, ".lt.Tree")
    field(top, "tags", 6, F.TYPE_MESSAGE, REPEATED, ".lt.Top.TagsEntry")
    field(top, "counts", 3, F.TYPE_MESSAGE, type_name=".lt.Counts")
    field(top, "when", 8, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    field(top, "either_text", 11, F.TYPE_STRING, oneof=0)
    field(top, "either_tree", 10, F.TYPE_MESSAGE, type_name=".lt.Tree", oneof=0)
    pool.Add(proto3)

    proto2 = descriptor_pb2.FileDescriptorProto(name="limits_test2.proto", package="lt2", syntax="proto2")
    open_ = proto2.message_type.add(name="Open")
    field(open_, "name", 1, F.TYPE_STRING)
    open_.extension_range.add(start=100, end=200)
    wrapper = proto2.message_type.add(name="Wrapper")
    field(wrapper, "open", 1, F.TYPE_MESSAGE, type_name=".lt2.Open")
    field(wrapper, "title", 2, F.TYPE_STRING)
    proto2.extension.add(name="remark", number=100, type=F.TYPE_STRING, label=OPTIONAL, extendee=".lt2.Open")
    defaulted = proto2.message_type.add(name="Defaulted")
    defaulted.field.add(name="note", number=1, type=F.TYPE_STRING, label=OPTIONAL, default_value="a\x00b")
    pool.Add(proto2)
    return pool


POOL = _schema()
Top = message_factory.GetMessageClass(POOL.FindMessageTypeByName("lt.Top"))
Tree = message_factory.GetMessageClass(POOL.FindMessageTypeByName("lt.Tree"))
Wrapper = message_factory.GetMessageClass(POOL.FindMessageTypeByName("lt2.Wrapper"))
REMARK = POOL.FindExtensionByName("lt2.remark")
Defaulted = message_factory.GetMessageClass(POOL.FindMessageTypeByName("lt2.Defaulted"))
Stamp = message_factory.GetMessageClass(POOL.FindMessageTypeByName("google.protobuf.Timestamp"))  # this pool's own


def test_nul_in_strings_is_found_at_its_path() -> None:
    assert found(Top(name="a\x00b")) == ("TEXT_HAS_NUL", "name")
    assert found(Top(notes=["ok", "b\x00"])) == ("TEXT_HAS_NUL", "notes")  # a repeated string: no index
    assert found(Top(tree=Tree(children=[Tree(), Tree(children=[Tree(label="\x00")])]))) == (
        "TEXT_HAS_NUL", "tree.children[1].children[0].label")
    assert found(Top(trees=[Tree(), Tree(label="x\x00")])) == ("TEXT_HAS_NUL", "trees[1].label")
    assert found(Top(either_tree=Tree(label="\x00"))) == ("TEXT_HAS_NUL", "either_tree.label")
    assert found(Top(either_text="\x00")) == ("TEXT_HAS_NUL", "either_text")
    assert found(Top(tags={"k\x00": "v\x00"})) is None  # map fields are not checked


@pytest.mark.parametrize("seconds,nanos", [(LOW - 1, 0), (HIGH + 1, 0), (0, -1), (0, 1_000_000_000)])
def test_a_timestamp_out_of_range_is_found_at_its_path(seconds: int, nanos: int) -> None:
    bad = Stamp(seconds=seconds, nanos=nanos)
    assert found(Top(when=bad)) == ("TIMESTAMP_OUT_OF_RANGE", "when")
    assert found(Top(stamps=[Stamp(), bad])) == ("TIMESTAMP_OUT_OF_RANGE", "stamps[1]")
    assert found(Top(trees=[Tree(children=[Tree(at=bad)])])) == ("TIMESTAMP_OUT_OF_RANGE", "trees[0].children[0].at")


def test_timestamps_at_the_ends_of_the_range_pass() -> None:
    ends = [Stamp(seconds=LOW), Stamp(seconds=HIGH, nanos=999_999_999)]
    assert found(Top(stamps=ends, when=ends[1], name="plain")) is None


def test_the_first_violation_in_field_number_order_depth_first_is_reported() -> None:
    both = Top(name="\x00", when=Stamp(seconds=HIGH + 1))
    assert found(both) == ("TEXT_HAS_NUL", "name")  # 2 before 8
    # field 4 (tree, declared before 2 in the schema but numbered after) holds one deep down; 2 comes first
    assert found(Top(tree=Tree(label="\x00"), name="\x00")) == ("TEXT_HAS_NUL", "name")
    # within Tree: children (1) before label (2), and a child's whole subtree before the next field
    assert found(Tree(label="\x00", children=[Tree(at=Stamp(nanos=-1))])) == (
        "TIMESTAMP_OUT_OF_RANGE", "children[0].at")


def test_extensions_are_checked_like_fields() -> None:
    wrapper = Wrapper(title="\x00")
    wrapper.open.Extensions[REMARK] = "r\x00"
    assert found(wrapper) == reference(wrapper) == ("TEXT_HAS_NUL", "open.remark")


def test_an_unset_proto2_string_is_not_read_as_its_default() -> None:
    assert Defaulted().note == "a\x00b"
    assert found(Defaulted()) is None and found(Defaulted(note="ok")) is None
    assert found(Defaulted(note="\x00")) == ("TEXT_HAS_NUL", "note")


def test_the_service_requests_are_checked_at_their_paths() -> None:
    request = mpb.MatchClaimRequest(line=mpb.EntrySummaryLine(entry_number="B76\x00"))
    assert found(request) == ("TEXT_HAS_NUL", "line.entry_number")
    request.line.entry_number = "B76"
    request.line.paid_at.seconds = HIGH + 1
    assert found(request) == ("TIMESTAMP_OUT_OF_RANGE", "line.paid_at")
    assert found(qpb.WatchQuotasRequest(tpl_numbers=["9823.53.01", "\x00"])) == ("TEXT_HAS_NUL", "tpl_numbers")
    submit = tpb.SubmitCertificateRequest()
    submit.envelope.certificate.exporter.name = "\x00"
    assert found(submit) == ("TEXT_HAS_NUL", "envelope.certificate.exporter.name")


# -- any message: the same finding as the plain walk --------------------------------------------------

texts = st.sampled_from(["", "a", "\x00", "b\x00c", "é"])
stamps = st.tuples(st.sampled_from([0, LOW, HIGH, LOW - 1, HIGH + 1]), st.sampled_from([0, 999_999_999, -1, 1_000_000_000]))


def _fill(cls: Any, draw: Any, depth: int) -> Message:
    message = cls()
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        repeated = field.label == field.LABEL_REPEATED if not hasattr(field, "is_repeated") else field.is_repeated
        if field.type == field.TYPE_STRING:
            values = draw(st.lists(texts, max_size=3)) if repeated else [draw(texts)]
            if repeated:
                getattr(message, field.name).extend(values)
            else:
                setattr(message, field.name, values[0])
        elif field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            getattr(message, field.name).update(draw(st.dictionaries(texts, texts, max_size=2)))
        elif field.type == field.TYPE_MESSAGE and (depth < 3 or field.message_type.full_name == "google.protobuf.Timestamp"):
            count = draw(st.integers(0, 3)) if repeated else 1
            for _ in range(count):
                target = getattr(message, field.name).add() if repeated else getattr(message, field.name)
                if field.message_type.full_name == "google.protobuf.Timestamp":
                    target.seconds, target.nanos = draw(stamps)
                else:
                    target.CopyFrom(_fill(type(target), draw, depth + 1))
    return message


@st.composite
def messages(draw: Any) -> Message:
    cls = draw(st.sampled_from([Top, Tree, mpb.MatchClaimRequest, mpb.FilePostImportationClaimRequest,
                                tpb.SubmitCertificateRequest, qpb.WatchQuotasRequest, qpb.ListQuotasRequest]))
    return _fill(cls, draw, 0)


@settings(max_examples=400, deadline=None)
@given(messages())
def test_the_compiled_check_finds_what_the_plain_walk_finds(message: Message) -> None:
    assert found(message) == reference(message)
