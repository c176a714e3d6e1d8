"""The cluster's certificate authority, kept beside the cluster secret on the control machine.

`fab start-all` makes it on first use: a CA key (0600) and certificate, then a key and a
certificate per host, naming the host's addresses (its SANs), valid for HOST_DAYS and
reissued when a third of that is left, when its names change, or when the CA does. The CA's
key never leaves the control machine; a host gets its own key and certificate and the CA
bundle (``ca.pem``: the CAs its peers may present, two while a rotation runs).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from toolkit.errors import ConfigError

CA_DAYS = 3650
HOST_DAYS = 397
RENEW_FRACTION = 1 / 3
"""A host certificate with less than this share of its life left is reissued."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name)


_PUBLIC = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
BACKDATE = datetime.timedelta(hours=1)
"""Certificates are valid from an hour before they are made: a host whose clock is behind the
control machine's (by less than that) takes them at once, where a reload would otherwise load
a certificate its peers call "not yet valid" and drop every link at the retire round."""


@dataclass(frozen=True)
class Issued:
    """A host's files: its certificate and key (PEM)."""

    cert: bytes
    key: bytes


class Authority:
    """One CA: its key and certificate, in ``directory`` (ca-key.pem, ca.pem)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key, self.cert = key, cert

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, cluster: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        stamp = _now().strftime("%Y%m%d%H%M%S")
        key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()[:16]
        # The key's id in the name: a successor made within the same second (a rotation
        # right after start-all) must not share its predecessor's subject. The cluster's name
        # goes in O, cut to the 64 characters a name attribute may hold.
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster[:64] or "ember"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Ember cluster CA {stamp} {key_id}")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        try:
            key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(),
                                                     None)
            cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        except OSError as exc:
            raise ConfigError(f"cluster CA in {directory}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"cluster CA in {directory}: not a CA key and certificate "
                              f"({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"cluster CA in {directory}: ca-key.pem is not an EC key")
        if key.public_key().public_bytes(*_PUBLIC) != cert.public_key().public_bytes(*_PUBLIC):
            raise ConfigError(f"cluster CA in {directory}: ca-key.pem is not the key of ca.pem "
                              f"(a run stopped while writing them?): restore both from a "
                              f"backup, or remove both to make a new CA")
        return cls(key, cert)

    def save(self, directory: Path) -> None:
        _write(directory / "ca-key.pem", _key_pem(self.key), 0o600)
        _write(directory / "ca.pem", self.pem, 0o644)

    def issue(self, names: list[str], days: int = HOST_DAYS,
              now: datetime.datetime | None = None) -> Issued:
        """A host's key and certificate for ``names`` (host names and addresses), for both
        serving and connecting (mutual TLS), valid ``days`` from ``now``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = now or _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def signed(self, cert_pem: bytes) -> bool:
        """Whether ``cert_pem`` was issued by this CA."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def needs_reissue(cert_pem: bytes, names: list[str], authority: Authority,
                  key_pem: bytes | None = None) -> str | None:
    """Why a host certificate (and its key, when given) must be reissued, or None while it is
    good."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "it is not a certificate"
    if key_pem is not None:
        try:
            key = serialization.load_pem_private_key(key_pem, None)
        except ValueError:
            return "its key is not a key"
        if key.public_key().public_bytes(*_PUBLIC) != cert.public_key().public_bytes(*_PUBLIC):
            return "its key is not the certificate's"
    if not authority.signed(cert_pem):
        return "the cluster CA changed"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it names no host"
    if set(san) != {_san(n) for n in names}:
        return "the host's names changed"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    left = cert.not_valid_after_utc - _now()
    if left < life * RENEW_FRACTION:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None
