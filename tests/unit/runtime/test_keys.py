"""Keys, scopes and the certificate authority: the logic, without sockets."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from tests.unit.runtime.fakes import FakeConn
from toolkit.errors import ConfigError
from toolkit.ops.certs import Authority, needs_reissue
from toolkit.runtime import messages as m
from toolkit.runtime.config import MasterConfig, read_secrets
from toolkit.runtime.keys import Keys, key_id, read_credential_file, scoped_key
from toolkit.runtime.master import Master, scopes
from toolkit.runtime.states import DriverState
from toolkit.runtime.wire import Proven

OLD, NEW = b"o" * 32, b"n" * 32


def test_a_rotation_proves_the_first_secret_and_accepts_every_one() -> None:
    keys = Keys((NEW, OLD))
    assert keys.secret == NEW
    assert keys.accepted(None) == [NEW, OLD]
    # a job's key is derived per scope: another scope's key is another key
    assert keys.accepted("driver:a") == [scoped_key(NEW, "driver:a"), scoped_key(OLD, "driver:a")]
    assert scoped_key(NEW, "driver:a") != scoped_key(NEW, "driver:b")
    assert key_id(NEW) != key_id(OLD) and NEW.hex() not in key_id(NEW)


def test_a_secret_file_holds_one_secret_per_line(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(NEW + b"\n" + OLD + b"\n\n")
    path.chmod(0o600)
    assert read_secrets(path) == (NEW, OLD)
    path.write_bytes(NEW + b"\nshort\n")
    with pytest.raises(ConfigError, match=r"secret file .* \(line 2\) holds 5 bytes"):
        read_secrets(path)


def test_a_job_credential_names_its_scope_and_never_holds_the_secret(tmp_path: Path) -> None:
    import json

    content = Keys((NEW,)).for_job("driver:driver-1")
    assert NEW.decode() not in json.dumps(content)
    path = tmp_path / "credential"
    path.write_text(json.dumps(content))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="make it private"):
        read_credential_file(path)
    path.chmod(0o600)
    keys = read_credential_file(path)
    assert keys.scope == "driver:driver-1"
    assert keys.secret == scoped_key(NEW, "driver:driver-1")
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not an Ember job credential"):
        read_credential_file(path)


def _submit(master: Master) -> str:
    client = FakeConn()
    master.handle(m.RequestSubmitDriver(m.DriverDescription(["true"]), request_id=1), client)
    reply = client.sent[0]
    assert isinstance(reply, m.SubmitDriverResponse) and reply.driver_id
    return reply.driver_id


def test_a_jobs_connection_gets_only_its_own_work() -> None:
    master = Master(MasterConfig(host="127.0.0.1"))
    own, other = _submit(master), _submit(master)
    job = FakeConn(proven=Proven(scope=f"driver:{own}"))
    master.handle(m.RequestSubmitDriver(m.DriverDescription(["true"], owner="forged"),
                                        request_id=2), job)
    child = job.sent[-1]
    assert isinstance(child, m.SubmitDriverResponse) and child.success and child.driver_id
    assert master.work.drivers.get(child.driver_id).desc.owner == f"driver:{own}"  # type: ignore[union-attr]
    master.handle(m.RequestKillDriver(child.driver_id, request_id=3), job)
    assert isinstance(job.sent[-1], m.KillDriverResponse) and job.sent[-1].success
    master.handle(m.RequestKillDriver(other, request_id=4), job)
    refused = job.sent[-1]
    assert isinstance(refused, m.KillDriverResponse) and not refused.success
    assert "may act only on itself" in refused.message
    master.handle(m.RequestDriverList(request_id=5), job)
    listed = job.sent[-1]
    assert isinstance(listed, m.DriverListResponse)
    assert {d.driver_id for d in listed.drivers} == {own, child.driver_id}  # not `other`
    master.handle(m.RequestKillAllDrivers(request_id=6), job)
    every = job.sent[-1]
    assert isinstance(every, m.KillAllDriversResponse) and not every.success
    assert "not allowed with a job's credential" in every.message
    master.handle(m.RequestClearCompletedDriversAndApps(request_id=7), job)
    assert isinstance(job.sent[-1], m.ClearCompletedDriversAndAppsResponse)
    assert not job.sent[-1].success
    worker = FakeConn(proven=Proven(scope=f"driver:{own}"))
    master.handle(m.RegisterWorker("worker-x", "127.0.0.1", 1, 1, 64, "http://x", "u"), worker)
    assert isinstance(worker.sent[-1], m.RegisterWorkerFailed) and not master.workers.values()
    assert all(d.state == DriverState.SUBMITTED for d in master.work.drivers.values()
               if d.id != child.driver_id)  # nothing else was killed


def test_an_ended_drivers_credential_is_refused() -> None:
    master = Master(MasterConfig(host="127.0.0.1"))
    job = FakeConn(proven=Proven(scope="driver:driver-20990101000000-0001"))
    master.handle(m.RequestDriverStatus("driver-20990101000000-0001", request_id=1), job)
    reply = job.sent[-1]
    assert isinstance(reply, m.DriverStatusResponse) and "no longer valid" in str(reply.message)


def test_with_tls_a_worker_registers_only_for_its_certificates_host(tmp_path: Path) -> None:
    assert not scopes.certified(FakeConn(proven=Proven(hosts=frozenset({"10.0.0.9"}))),
                                "10.0.0.2", tls=True)
    assert scopes.certified(FakeConn(proven=Proven(hosts=frozenset({"10.0.0.2", "w2"}))),
                            "10.0.0.2", tls=True)
    assert scopes.certified(FakeConn(), "10.0.0.2", tls=False)


def test_host_certificates_are_reissued_before_they_expire_or_when_names_or_ca_change() -> None:
    ca = Authority.create("t")
    fresh = ca.issue(["10.0.0.2", "w2.example.com"])
    assert needs_reissue(fresh.cert, ["10.0.0.2", "w2.example.com"], ca) is None
    assert needs_reissue(fresh.cert, ["10.0.0.3"], ca) == "the host's names changed"
    assert needs_reissue(fresh.cert, ["10.0.0.2", "w2.example.com"],
                         Authority.create("t")) == "the cluster CA changed"
    now = datetime.datetime.now(datetime.UTC)
    ageing = ca.issue(["10.0.0.2"], days=90, now=now - datetime.timedelta(days=70))
    assert str(needs_reissue(ageing.cert, ["10.0.0.2"], ca)).startswith("it expires on")
    assert ca.signed(fresh.cert) and not Authority.create("x").signed(fresh.cert)


def test_a_successor_ca_made_in_the_same_second_has_its_own_name() -> None:
    # a rotation right after start-all: the trusted bundle holds both, told apart by name
    first, second = Authority.create("c"), Authority.create("c")
    assert first.cert.subject != second.cert.subject
    issued = second.issue(["10.0.0.2"])
    assert x509.load_pem_x509_certificate(issued.cert).issuer == second.cert.subject


def test_certificates_are_valid_already_for_a_host_whose_clock_is_behind() -> None:
    ca = Authority.create("c")
    issued = x509.load_pem_x509_certificate(ca.issue(["10.0.0.2"]).cert)
    behind = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=30)
    assert issued.not_valid_before_utc <= behind
    assert ca.cert.not_valid_before_utc <= behind


def test_a_host_key_that_is_not_its_certificates_is_reissued() -> None:
    ca = Authority.create("c")
    first, second = ca.issue(["10.0.0.2"]), ca.issue(["10.0.0.2"])
    assert needs_reissue(first.cert, ["10.0.0.2"], ca, first.key) is None
    assert needs_reissue(first.cert, ["10.0.0.2"], ca, second.key) == (
        "its key is not the certificate's")  # a run stopped between the two writes


def test_a_ca_made_anew_does_not_leave_hosts_trusting_an_earlier_one(tmp_path: Path) -> None:
    from toolkit.inventory import load
    from toolkit.ops.credentials import Credentials
    from toolkit.ops.group import Silent

    path = tmp_path / "c.yml"
    path.write_text(f"cluster: {{secret_file: {tmp_path}/secret, tls: on}}\nmasters: [m1]\n"
                    "workers: [w1]\n")
    creds = Credentials(load(path), Silent())
    creds.set_trusted([Authority.create("lost").pem])  # its key is gone
    made = creds.authority()
    assert creds.trusted() == made.pem


def test_a_cluster_of_any_name_gets_its_ca() -> None:
    name = "production-east1-analytics-" * 4  # over the 64 characters a name part may hold
    ca = Authority.create(name)
    assert name[:64] in ca.cert.subject.rfc4514_string()
    assert ca.signed(ca.issue(["10.0.0.2"]).cert)


def test_a_host_name_is_its_own_whatever_its_case_or_final_dot() -> None:
    from toolkit.runtime.session import own_host

    assert own_host("Master1.Corp.:8080", "master1.corp")
    assert own_host("LOCALHOST:8080", None) and own_host("[::1]:8080", None)
    assert not own_host("evil.example:8080", "master1.corp")


def test_two_runs_that_make_the_ca_at_once_make_one(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    create = Authority.create.__func__  # type: ignore[attr-defined]

    def slow(cls: type[Authority], cluster: str) -> Authority:
        time.sleep(0.05)  # the window in which another run would make its own
        return create(cls, cluster)  # type: ignore[no-any-return]
    monkeypatch.setattr(Authority, "create", classmethod(slow))

    from toolkit.inventory import load
    from toolkit.ops.credentials import Credentials
    from toolkit.ops.group import Silent

    path = tmp_path / "c.yml"
    path.write_text(f"cluster: {{secret_file: {tmp_path}/secret, tls: on}}\nmasters: [m1]\n"
                    "workers: [w1]\n")
    runs = [Credentials(load(path), Silent()) for _ in range(4)]  # as separate fab processes
    made: list[bytes] = []
    threads = [threading.Thread(target=lambda c=c: made.append(c.authority().pem))
               for c in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 1
    assert Authority.load(tmp_path / "secret.tls").pem == made[0]


def test_a_ca_key_that_is_not_its_certificates_is_named(tmp_path: Path) -> None:
    Authority.create("a").save(tmp_path)
    other = tmp_path / "other"
    Authority.create("b").save(other)
    (tmp_path / "ca-key.pem").write_bytes((other / "ca-key.pem").read_bytes())
    with pytest.raises(ConfigError, match=r"ca-key\.pem is not the key of ca\.pem"):
        Authority.load(tmp_path)
