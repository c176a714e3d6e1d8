"""`fab rotate-credentials` on fake hosts: a run stopped by a host that is down, in any round,
is finished by running it again, and until the retire round hosts trust both CAs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from tests.unit.ops.fake import FakeHost, Script, healthy
from toolkit import inventory as inventory_module
from toolkit.ops.cluster import Cluster
from toolkit.ops.rotation import rotate
from toolkit.ops.show import Printer
from toolkit.ops.transport import Result

OLD = b"the-first-secret-of-this-cluster-0001"


class Lab:
    """A master and two workers with TLS; w2 is down in the round ``down_in`` (once)."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "fake.yml"
        path.write_text(f"cluster: {{secret_file: {tmp_path}/secret, tls: on}}\n"
                        "defaults: {ember_home: /opt/ember, stop_timeout: 1}\n"
                        "masters: [m1]\nworkers: [w1, w2]\n")
        (tmp_path / "secret").write_bytes(OLD + b"\n")
        (tmp_path / "secret").chmod(0o600)
        self.secret_file = tmp_path / "secret"
        self.creds = Path(f"{tmp_path}/secret.tls")
        self.inventory = inventory_module.load(path)
        self.down_in: str | None = None
        self.rounds: list[str] = []
        self.bundles: dict[str, set[str]] = {}
        self.hosts = {name: FakeHost(name, self.script(name)) for name in ("m1", "w1", "w2")}

    def round_now(self) -> str:
        """Which round the secret file the rotation just wrote is for."""
        lines = self.secret_file.read_bytes().split()
        return "retire" if len(lines) == 1 else "accept" if lines[0] == OLD else "prove"

    def script(self, name: str) -> Script:
        def answer(argv: list[str], stdin: bytes) -> Result:
            step = self.round_now()
            if name == "w1" and (not self.rounds or self.rounds[-1] != step):
                self.rounds.append(step)
            names = {c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(
                (self.creds / "trusted.pem").read_bytes())}
            self.bundles[step] = names
            if name == "w2" and step == self.down_in:
                self.down_in = None
                return Result(name, " ".join(argv), 255, "", "ssh: connection closed by w2")
            return healthy(argv, stdin)
        return answer

    def rotate(self) -> list[str]:
        said: list[str] = []
        cluster = Cluster(self.inventory, events=Printer(said.append),
                          transport=lambda entry: self.hosts[entry.address])
        outcomes = rotate(cluster)
        return [o.message for o in outcomes if not o.ok] + said


@pytest.mark.parametrize("stopped_in", ["accept", "prove", "retire"])
def test_a_rotation_stopped_by_a_host_that_is_down_is_finished_by_running_it_again(
        tmp_path: Path, stopped_in: str) -> None:
    lab = Lab(tmp_path)
    lab.down_in = stopped_in
    first = lab.rotate()
    assert any(f"stopped in round {stopped_in!r}" in line for line in first), first
    old_ca = (lab.creds / "ca.pem").read_bytes() if stopped_in == "accept" else (
        lab.creds / "previous-ca.pem").read_bytes()
    lab.rounds.clear()

    again = lab.rotate()
    assert "rotate-credentials: the old secret and CA are retired" in again[-1], again
    # the retire round was all that was left; from an earlier round, every round again
    assert lab.rounds == (["retire"] if stopped_in == "retire" else
                          ["accept", "prove", "retire"])
    assert lab.secret_file.read_bytes().split() != [OLD]
    assert len(lab.secret_file.read_bytes().split()) == 1
    assert not (lab.creds / "next").exists() and not (lab.creds / "previous-ca.pem").exists()
    new_ca = x509.load_pem_x509_certificate((lab.creds / "ca.pem").read_bytes()).subject
    assert lab.bundles["retire"] == {new_ca.rfc4514_string()}
    old_name = x509.load_pem_x509_certificate(old_ca).subject.rfc4514_string()
    for step in set(lab.rounds) - {"retire"}:  # both CAs trusted until the retire round
        assert lab.bundles[step] == {old_name, new_ca.rfc4514_string()}, step


def test_a_run_stopped_before_it_made_the_next_ca_makes_it_when_run_again(
        tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    (lab.creds / "next").mkdir(parents=True)
    (lab.creds / "next" / "secret").write_bytes(b"the-next-secret-of-this-cluster-0002\n")
    assert lab.rotate()[-1] == "rotate-credentials: the old secret and CA are retired"
    assert lab.rounds == ["accept", "prove", "retire"]
