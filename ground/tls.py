"""TLS for `ground serve`: the station link and the operators' browsers over HTTPS.

Two ways to get a certificate:

- ``ground tls init --host ground.example --host 192.0.2.10`` makes a self-signed one in
  ``<home>/tls/`` (key 0600). Stations pin it: ``ground station add`` then writes its SHA-256
  into the token file (``ground_tls_sha256``) and ``onboard link add`` keeps it, so the station
  talks only to this certificate, whoever signed it (no CA to trust, none to compromise).
  Browsers show a warning once; operators compare the fingerprint ``ground tls show`` prints.
- ``ground serve --tls-cert C --tls-key K``: a certificate from the operators' own CA (or ACME);
  stations without a pin then verify it against the system's CAs.

``ground serve --tls`` serves ``<home>/tls/`` (made on first use). TLS 1.2 is the floor.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from durable.files import write_atomic

from .errors import GroundError

TLS_DIR = "tls"
# Long enough not to surprise an operator mid-mission; browsers cap public CAs' leaves, not ours.
VALID_DAYS = 825


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    cert: Path
    key: Path

    @property
    def sha256(self) -> str:
        """The certificate's SHA-256 (of its DER bytes) in hex: what stations pin."""
        return cert_sha256(self.cert)


def home_files(root: Path) -> TlsFiles:
    return TlsFiles(cert=root / TLS_DIR / "cert.pem", key=root / TLS_DIR / "key.pem")


def cert_sha256(path: Path) -> str:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise GroundError(f"cannot read the TLS certificate {path}: {exc}") from exc
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def make_self_signed(root: Path, hosts: list[str], *, now: datetime.datetime | None = None) -> TlsFiles:
    """Write a new self-signed certificate for ``hosts`` (names or IP addresses) into ``<root>/tls``."""
    files = home_files(root)
    if files.cert.exists():
        raise GroundError(
            f"{files.cert} already exists; remove it (and re-issue station tokens) to replace it"
        )
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "orbitpost ground")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(files.cert.parent, 0o700)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(files.key, key_pem, 0o600)
    write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """An HTTPS server context for ``files`` (TLS 1.2 or later)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise GroundError(f"cannot load TLS certificate {files.cert} / key {files.key}: {exc}") from exc
    return ctx
