"""Each endpoint's handler table is written out: every message its role accepts on a connection,
and every message it posts to itself, has a handler, and nothing else does. A message with no
handler would be a runtime "unexpected message" and a closed connection."""

from __future__ import annotations

from pathlib import Path

from tests.unit.runtime.fakes import Clock, FakeConn
from toolkit.runtime import messages as m
from toolkit.runtime import wire
from toolkit.runtime.config import MasterConfig
from toolkit.runtime.master import Master
from toolkit.runtime.worker import Worker, WorkerConfig


def master() -> Master:
    clock = Clock()
    return Master(MasterConfig(host="10.0.0.1"), clock=clock, monotonic=clock)


def worker(tmp_path: Path) -> Worker:
    clock = Clock()
    config = WorkerConfig(masters=(("10.0.0.1", 7077),), host="10.0.0.2", cores=1,
                          memory=512, work_dir=tmp_path, port=4000, register_timeout=30)
    return Worker(config, clock=clock, monotonic=clock)


def test_the_master_handles_exactly_what_it_accepts_and_posts_itself() -> None:
    table = master().handlers()
    assert set(table) == {*m.TO_MASTER.__args__, *m.MASTER_INTERNAL.__args__}
    assert Master.accepts is wire.TO_MASTER


def test_the_worker_handles_exactly_what_it_accepts_and_posts_itself(tmp_path: Path) -> None:
    table = worker(tmp_path).handlers()
    assert set(table) == {*m.TO_WORKER.__args__, *m.WORKER_INTERNAL.__args__}
    assert Worker.accepts is wire.TO_WORKER


def test_a_message_without_a_handler_closes_its_connection_and_changes_nothing(
        tmp_path: Path) -> None:
    endpoint = worker(tmp_path)
    conn = FakeConn()
    endpoint.handle(m.RequestDriverList(), conn)  # type: ignore[arg-type]
    assert conn.closed and conn.sent == []
