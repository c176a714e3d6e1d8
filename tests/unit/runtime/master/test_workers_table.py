"""The master's worker table keeps its lookups (by id, by address, by connection) true through
every change, and refuses the changes that would make them lie."""

from __future__ import annotations

import pytest

from tests.unit.runtime.fakes import FakeConn
from toolkit.runtime.master.workers import Workers
from toolkit.runtime.records import WorkerInfo
from toolkit.runtime.states import WorkerState


def worker(wid: str, port: int, conn: FakeConn) -> WorkerInfo:
    return WorkerInfo(wid, "10.0.0.2", port, 4, 4096, "http://w", conn,  # type: ignore[arg-type]
                      last_heartbeat=0.0, last_seen=0.0)


def test_a_worker_is_found_by_id_address_and_connection_until_it_dies() -> None:
    table, link = Workers(), FakeConn()
    w1 = worker("w1", 4000, link)
    table.add(w1)
    assert (table["w1"], table.live("w1"), table.live_at("10.0.0.2:4000")) == (w1, w1, w1)
    assert table.on(link) is w1 and table.living() == [w1] and list(table) == ["w1"]
    table.remove(w1, "link closed")
    assert w1.state == WorkerState.DEAD and table["w1"] is w1  # still listed
    assert (table.live("w1"), table.live_at("10.0.0.2:4000"), table.on(link)) == (None,) * 3
    assert table.living() == []


def test_a_new_link_replaces_the_old_one_in_the_lookup() -> None:
    table, first, second = Workers(), FakeConn(), FakeConn()
    w1 = worker("w1", 4000, first)
    table.add(w1)
    assert table.reattach(w1, second) is first  # the caller closes it
    assert table.on(second) is w1 and table.on(first) is None and w1.epoch == 1
    assert table.reattach(w1, second) is None


def test_dead_records_at_an_address_go_when_a_new_worker_takes_it() -> None:
    table = Workers()
    old = worker("old", 4000, FakeConn())
    table.add(old)
    with pytest.raises(ValueError, match=r"10\.0\.0\.2:4000 is held by old"):
        table.add(worker("new", 4000, FakeConn()))
    table.remove(old, "gone")
    assert table.drop_dead_at("10.0.0.2:4000") == [old] and "old" not in table
    table.add(worker("new", 4000, FakeConn()))
    assert table.live_at("10.0.0.2:4000") is table["new"]


def test_only_a_dead_worker_is_culled() -> None:
    table = Workers()
    w1 = worker("w1", 4000, FakeConn())
    table.add(w1)
    with pytest.raises(ValueError, match="only a DEAD one is culled"):
        table.cull(w1)
    table.remove(w1, "timeout")
    table.cull(w1)
    assert len(table) == 0 and table.drop_dead_at("10.0.0.2:4000") == []
