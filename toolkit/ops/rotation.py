"""`fab rotate-credentials`: a new cluster secret and a new CA, with nothing stopped.

Three rounds; each installs every host's files and has its running masters and workers reload
them (SIGHUP), and the next round starts only when every host has done so:

1. **accept**: hosts accept the old secret and the new one, and certificates of either CA;
   they still prove the old.
2. **prove**: hosts prove the new secret, with certificates of the new CA; both still accepted.
3. **retire**: only the new secret and CA. A connection that proved the old secret or an old
   certificate is dropped, and its peer reconnects with the new ones within a second: workers
   keep their drivers and executors (the reconnect grace of "no lost work").

The next secret and CA wait in ``<secret_file>.tls/next`` until the rotation is done, so a run
that stopped half-way (a host down) is finished by running it again. Jobs' credentials are
rewritten by their workers at each reload.
"""

from __future__ import annotations

import dataclasses
import shutil

from toolkit.ops.certs import Authority
from toolkit.ops.cluster import Cluster, Target
from toolkit.ops.credentials import new_secret, write_private
from toolkit.ops.group import Outcome

ROUNDS = ("accept", "prove", "retire")


def rotate(cluster: Cluster) -> list[Outcome]:
    creds = cluster.credentials
    tls = cluster.inventory.uses_tls
    nxt = creds.directory / "next"
    current = [line for line in creds.secret().splitlines() if line.strip()]
    if not (nxt / "secret").exists():
        write_private(nxt / "secret", new_secret())
    if tls and not (nxt / "ca.pem").exists():  # also when a run stopped before making it
        creds.authority()  # the CA being replaced exists before its successor
        Authority.create(cluster.inventory.name).save(nxt)
    new = (nxt / "secret").read_bytes().strip()
    old = next((s for s in current if s != new), None)
    # The secret file holds only the next secret once the retire round has begun: a run that
    # stopped there (a host down) has only that round left
    steps = ROUNDS if old is not None else ("retire",)
    outcomes: list[Outcome] = []
    for step in steps:
        secrets = [new] if old is None or step == "retire" else (
            [old, new] if step == "accept" else [new, old])
        if tls:
            _trust(cluster, step)
        content = b"".join(s + b"\n" for s in secrets)
        write_private(cluster.inventory.secret_file, content)
        done = _round(cluster, step, content)
        outcomes += done
        if not all(o.ok for o in done):
            cluster.events.note(f"rotate-credentials stopped in round {step!r}: run it again "
                                f"once every host is back")
            return outcomes
    # the previous CA first: a run stopped in between must not trust it again next time
    (creds.directory / "previous-ca.pem").unlink(missing_ok=True)
    shutil.rmtree(nxt)
    cluster.events.note("rotate-credentials: the old secret and CA are retired")
    return outcomes


def _trust(cluster: Cluster, step: str) -> None:
    """The CA files for a round: which CA signs, which ones hosts trust. Decided from what
    the files hold, so that a run stopped anywhere (even between two of these writes) and run
    again trusts both CAs until the retire round."""
    creds = cluster.credentials
    nxt, previous = creds.directory / "next", creds.directory / "previous-ca.pem"
    if step != "accept" and (nxt / "ca-key.pem").exists():  # the new CA signs from now on
        upcoming = Authority.load(nxt)
        if creds.authority().pem != upcoming.pem:  # not switched yet by a stopped run
            write_private(previous, creds.authority().pem)
            upcoming.save(creds.directory)
        (nxt / "ca-key.pem").unlink()
        creds._authority = None
    bundle = [creds.authority().pem]
    if step != "retire":
        for other in (nxt / "ca.pem", previous):
            if other.exists() and other.read_bytes() not in bundle:
                bundle.append(other.read_bytes())
    creds.set_trusted(bundle)


def _round(cluster: Cluster, step: str, secret: bytes) -> list[Outcome]:
    """Every host's files installed and its running roles reloaded."""
    def one(target: Target) -> list[Outcome]:
        return [dataclasses.replace(o, message=f"{step}: {o.message}")
                for role in ("master", "worker")
                for o in cluster.do(target, "reload", role, secret=secret)]
    return cluster.each(list(cluster.targets.values()), one)
