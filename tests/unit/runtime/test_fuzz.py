"""Fuzzing what a peer can send: the wire decoder of every role takes any bytes, and every
message a decoder lets through is handled by the master and the worker without a handler
failing. A bounded run here; `bench/fuzz.py` runs the same tests much longer
(EMBER_FUZZ_EXAMPLES)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.runtime.fakes import Clock, FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.config import MasterConfig
from toolkit.runtime.master import Master
from toolkit.runtime.worker import Worker, WorkerConfig

EXAMPLES = int(os.environ.get("EMBER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROLES = {"master": wire.TO_MASTER, "worker": wire.TO_WORKER, "client": wire.TO_CLIENT}

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=12), inner, max_size=4), max_leaves=12)


def fields_of(inbound: wire.Inbound) -> list[str]:
    names: set[str] = set()
    for kind in inbound._accepted.__args__:
        names.update(kind.__struct_fields__)
    return sorted(names)


IDS = st.sampled_from(["driver-20261201000000-0001", "app-20261201000000-0000", "worker-1",
                       "10.0.0.9:7077", "ember://10.0.0.9:7077", "", "../x", "a\nb"])


def fitting(kind: Any) -> st.SearchStrategy[Any]:
    """Values a decoder accepts for one field (msgspec.inspect's view of its type)."""
    name = type(kind).__name__
    if name == "StrType":
        return IDS | st.text(max_size=20)
    if name == "IntType":
        low = kind.ge if kind.ge is not None else (kind.gt + 1 if kind.gt is not None else -5)
        return st.integers(low, low + 2**20)
    if name == "FloatType":
        return st.floats(0, 1e6)
    if name == "BoolType":
        return st.booleans()
    if name == "NoneType":
        return st.none()
    if name == "EnumType":
        return st.sampled_from([e.value for e in kind.cls])
    if name == "ListType":
        return st.lists(fitting(kind.item_type), min_size=kind.min_length or 0, max_size=3)
    if name == "DictType":
        return st.dictionaries(st.text(max_size=8), fitting(kind.value_type), max_size=3)
    if name == "UnionType":
        return st.one_of([fitting(t) for t in kind.types])
    if name == "StructType":
        return struct_dicts(kind)
    return json_values


def struct_dicts(kind: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {f.encode_name: fitting(f.type) for f in kind.fields if f.required},
        optional={f.encode_name: fitting(f.type) for f in kind.fields if not f.required})


def bodies(inbound: wire.Inbound) -> st.SearchStrategy[bytes]:
    """JSON objects shaped like the role's messages: most of them valid messages of every type
    the role accepts (any values their types allow), some with any mix of fields and values."""
    import msgspec.inspect

    valid = st.one_of([struct_dicts(msgspec.inspect.type_info(kind)).map(
        lambda fields, name=kind.__name__: {"type": name, **fields})
        for kind in inbound._accepted.__args__])
    known = fields_of(inbound)
    shaped = st.builds(lambda kind, extra: {"type": kind, **extra},
                       st.sampled_from(sorted(inbound.names)),
                       st.dictionaries(st.sampled_from(known), json_values,
                                       max_size=len(known)))
    return (valid | valid | shaped).map(lambda body: json.dumps(body).encode())


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_message_or_a_bad_message_for_every_role(data: bytes) -> None:
    for inbound in ROLES.values():
        with contextlib.suppress(wire.BadMessage):
            inbound.decode(data)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_message_shaped_json_is_a_message_or_a_bad_message(role: str) -> None:
    inbound = ROLES[role]

    @FUZZ
    @given(bodies(inbound))
    def decode(body: bytes) -> None:
        try:
            message = inbound.decode(body)
        except wire.BadMessage:
            return
        assert type(message).__name__ in inbound.names

    decode()


def handle_all(endpoint: Any, messages: list[m.Message]) -> None:
    """Each message on one connection, in a running loop: a handler that fails raises."""
    async def run() -> None:
        conn = FakeConn("10.0.0.9:40000")
        for message in messages:
            endpoint.handle(message, conn)
        await endpoint.close_tasks()

    asyncio.run(run())


def decoded(inbound: wire.Inbound, raw: list[bytes]) -> list[m.Message]:
    found = []
    for body in raw:
        try:
            found.append(inbound.decode(body))
        except wire.BadMessage:
            continue
    return found


def test_no_message_a_master_decodes_makes_a_handler_fail() -> None:
    @FUZZ
    @given(st.lists(bodies(wire.TO_MASTER), min_size=1, max_size=8))
    def run(raw: list[bytes]) -> None:
        clock = Clock()
        master = Master(MasterConfig(host="10.0.0.1", port=7077), clock=clock,
                        monotonic=clock)
        handle_all(master, decoded(wire.TO_MASTER, raw))

    run()


def test_no_message_a_worker_decodes_makes_a_handler_fail() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)

        @FUZZ
        @given(st.lists(bodies(wire.TO_WORKER), min_size=1, max_size=8))
        def run(raw: list[bytes]) -> None:
            clock = Clock()
            worker = Worker(WorkerConfig(masters=(("10.0.0.9", 7077),), host="10.0.0.2",
                                         cores=2, memory=1024, work_dir=work, port=4000),
                            clock=clock, monotonic=clock)
            worker.id = "worker-1"
            handle_all(worker, decoded(wire.TO_WORKER, raw))

        run()
