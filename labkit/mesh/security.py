"""Workload identity and mutual TLS: a local CA, SPIFFE certificates, TLS contexts, sniffing.

Istio gives every workload an X.509 certificate whose only name is a URI SAN,
`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, signed by the mesh CA
(istiod); sidecars present these certificates to each other, so both ends of a connection
know who the other is without trusting IP addresses. labkit does the same on one machine:

- `CertificateAuthority` is the mesh CA (self-signed root, ECDSA P-256) and `issue()` makes
  a `WorkloadCertificate` for a namespace and service account. Certificates are short-lived
  (Istio's default workload TTL is 24 h; `needs_rotation` says when to ask again, at half
  the lifetime as istio-agent does). Keys never touch a lasting file: Python's `ssl` can
  only load a certificate chain from a path, so it is written to a private temporary
  directory, loaded, and the directory is removed before `server_context()` returns.
- `server_context()` / `client_context()` are `ssl.SSLContext`s for real mutual TLS: TLS 1.2
  minimum (TLS 1.3 preferred), ECDHE with AES-GCM for 1.2 as Istio configures, the peer's
  certificate required on both sides and verified against the mesh root. Host names are not
  checked: like Envoy, the caller checks the peer's SPIFFE id instead (`check_peer`, Istio's
  "secure naming").
- `peer_identity()` reads the SPIFFE id from a connection (SSLSocket, SSLObject, asyncio
  transport or StreamWriter); `xfcc()` formats the `X-Forwarded-Client-Cert` header the
  server sidecar adds for the app.
- `sniff()` / `detect_protocol()` look at the first bytes of a connection, as Envoy's TLS
  inspector does, so a PERMISSIVE port can take mTLS and plaintext on the same port.

Sources: https://istio.io/latest/docs/concepts/security/ (identity, PKI, secure naming),
https://spiffe.io/docs/latest/spiffe-about/spiffe-concepts/ (SPIFFE ID and SVID),
RFC 8446 §4.1.2 / RFC 5246 §6.2 (TLS record header and ClientHello).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ALPN_CLIENT",
    "ALPN_SERVER",
    "DEFAULT_TRUST_DOMAIN",
    "PLAINTEXT",
    "SNIFF_BYTES",
    "TLS",
    "CertificateAuthority",
    "IdentityError",
    "SpiffeId",
    "WorkloadCertificate",
    "check_peer",
    "detect_protocol",
    "identity_from_der",
    "peer_certificate_der",
    "peer_identity",
    "sniff",
    "xfcc",
]

DEFAULT_TRUST_DOMAIN = "cluster.local"
WORKLOAD_TTL = dt.timedelta(hours=24)   # Istio's DEFAULT_WORKLOAD_CERT_TTL
ROOT_TTL = dt.timedelta(days=3650)      # Istio's self-signed root: 10 years
# Backdate certificates a little: two processes' clocks (or a VM's) may disagree slightly,
# and a certificate "not yet valid" by a second fails the handshake.
_BACKDATE = dt.timedelta(minutes=1)

# ALPN values Istio's sidecars offer to each other (the istio-* tokens tell the peer that
# a sidecar is on the other side; plain http/1.1 keeps a non-Istio TLS peer working).
ALPN_CLIENT = ("istio-peer-exchange", "istio-http/1.1", "istio", "http/1.1")
ALPN_SERVER = ALPN_CLIENT
# Istio's mTLS cipher list for TLS 1.2 (TLS 1.3 suites are all AEAD already).
_TLS12_CIPHERS = ("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")


class IdentityError(ValueError):
    """A malformed SPIFFE id, or a peer whose identity is missing or not the expected one."""


@dataclass(frozen=True, order=True)
class SpiffeId:
    """`spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`, Istio's workload identity."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        for name in ("trust_domain", "namespace", "service_account"):
            value = getattr(self, name)
            if not value or "/" in value or value != value.strip():
                raise IdentityError(f"SpiffeId.{name}: {value!r} must be a non-empty name without '/' or spaces")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Read `spiffe://td/ns/<ns>/sa/<sa>` (also the principal form without `spiffe://`)."""
        text = uri.removeprefix("spiffe://")
        parts = text.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise IdentityError(f"{uri!r} is not an Istio SPIFFE id; expected "
                                "spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")
        return cls(parts[0], parts[2], parts[4])

    @property
    def uri(self) -> str:
        """The full id, as in the certificate SAN and the metric labels `*_principal`."""
        return f"spiffe://{self.principal}"

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy `principals` use: no `spiffe://` scheme."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: Istio's ECC option; generating one takes about a millisecond, an RSA-2048 key
    # (Istio's default) about a hundred, which a lab starting ten workloads would feel.
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """The mesh CA: a self-signed root that signs workload certificates (istiod's job).

    Everything is in memory; two CAs never trust each other's certificates, which is how a
    test shows that a foreign certificate is refused.
    """

    def __init__(self, trust_domain: str = DEFAULT_TRUST_DOMAIN, *,
                 workload_ttl: dt.timedelta = WORKLOAD_TTL, now: dt.datetime | None = None) -> None:
        if not trust_domain or "/" in trust_domain:
            raise IdentityError(f"trust_domain: {trust_domain!r} must be a non-empty name without '/'")
        if workload_ttl <= dt.timedelta(0):
            raise ValueError(f"workload_ttl must be positive, got {workload_ttl}")
        self.trust_domain = trust_domain
        self.workload_ttl = workload_ttl
        start = (now or _now()) - _BACKDATE
        self._key = _key()
        # Istio's self-signed root names the trust domain as its organisation.
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + ROOT_TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.root_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self.issued = 0

    def identity(self, namespace: str, service_account: str) -> SpiffeId:
        return SpiffeId(self.trust_domain, namespace, service_account)

    def issue(self, namespace: str, service_account: str = "default", *,
              ttl: dt.timedelta | None = None, now: dt.datetime | None = None) -> WorkloadCertificate:
        """A fresh key and certificate for the workload running as `service_account` in
        `namespace` (Kubernetes gives every pod the `default` service account unless told)."""
        identity = self.identity(namespace, service_account)
        lifetime = ttl or self.workload_ttl
        if lifetime <= dt.timedelta(0):
            raise ValueError(f"ttl must be positive, got {lifetime}")
        start = (now or _now()) - _BACKDATE
        key = _key()
        cert = (
            x509.CertificateBuilder()
            # Istio's workload certificates have an empty subject: the SAN is the identity,
            # which RFC 5280 then requires to be a critical extension.
            .subject_name(x509.Name([]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + _BACKDATE + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                           critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.issued += 1
        return WorkloadCertificate(identity, cert, _pem_key(key), self.root_pem)

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self.trust_domain} issued={self.issued}>"


@dataclass(frozen=True)
class WorkloadCertificate:
    """A workload's SVID: its certificate, private key (PEM) and the root it chains to."""

    identity: SpiffeId
    certificate: x509.Certificate
    key_pem: bytes = field(repr=False)
    root_pem: bytes = field(repr=False)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def needs_rotation(self, now: dt.datetime | None = None) -> bool:
        """True from half the lifetime on: istio-agent asks for a new certificate then
        (SECRET_GRACE_PERIOD_RATIO 0.5), long before the old one expires."""
        half = self.not_before + (self.not_after - self.not_before) / 2
        return (now or _now()) >= half

    def server_context(self, *, alpn: tuple[str, ...] | None = ALPN_SERVER) -> ssl.SSLContext:
        """For the inbound listener: present this certificate, require the client's."""
        return self._context(ssl.PROTOCOL_TLS_SERVER, alpn)

    def client_context(self, *, alpn: tuple[str, ...] | None = ALPN_CLIENT) -> ssl.SSLContext:
        """For outbound connections to another sidecar: present this certificate, require and
        verify the server's against the mesh root (check its SPIFFE id with `check_peer`)."""
        return self._context(ssl.PROTOCOL_TLS_CLIENT, alpn)

    def _context(self, protocol: int, alpn: tuple[str, ...] | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(_TLS12_CIPHERS)
        # SPIFFE certificates carry no DNS name; the identity check is check_peer's.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.root_pem.decode("ascii"))
        _load_chain(ctx, self.cert_pem, self.key_pem)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def describe(self) -> str:
        """A few lines like `openssl x509 -text` would show, for a notebook."""
        c = self.certificate
        return "\n".join([
            f"Subject:     {c.subject.rfc4514_string() or '(empty)'}",
            f"Issuer:      {c.issuer.rfc4514_string()}",
            f"URI SAN:     {self.identity.uri}",
            f"Valid:       {self.not_before:%Y-%m-%d %H:%M:%S} .. {self.not_after:%Y-%m-%d %H:%M:%S} UTC",
            f"Key:         ECDSA P-256, signature {c.signature_hash_algorithm.name.upper()}",  # type: ignore[union-attr]  # ECDSA has one
            f"SHA-256:     {hashlib.sha256(self.der).hexdigest()}",
        ])


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`ssl` loads a chain only from files: write them into a private directory (mode 0700,
    files 0600), load, and remove the directory before returning."""
    with tempfile.TemporaryDirectory(prefix="labkit-svid-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)


# -- reading the peer's identity --------------------------------------------------------------


def identity_from_der(der: bytes) -> SpiffeId | None:
    """The SPIFFE id in a DER certificate's URI SAN, or None when it has none."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return SpiffeId.parse(uri)
    return None


def _ssl_object(conn: Any) -> ssl.SSLSocket | ssl.SSLObject | None:
    if isinstance(conn, (ssl.SSLSocket, ssl.SSLObject)):
        return conn
    get_extra_info = getattr(conn, "get_extra_info", None)  # asyncio transport or StreamWriter
    if get_extra_info is None:
        raise TypeError(f"expected an SSLSocket, SSLObject, asyncio transport or StreamWriter, "
                        f"got {type(conn).__name__}")
    return get_extra_info("ssl_object")


def peer_certificate_der(conn: Any) -> bytes | None:
    """The peer's certificate (DER) on a TLS connection; None on plaintext or without one."""
    obj = _ssl_object(conn)
    return None if obj is None else obj.getpeercert(binary_form=True)


def peer_identity(conn: Any) -> SpiffeId | None:
    """Who is on the other end of `conn`: its SPIFFE id, or None for plaintext (then an
    AuthorizationPolicy sees no principal and no namespace)."""
    der = peer_certificate_der(conn)
    return None if der is None else identity_from_der(der)


def check_peer(conn: Any, allowed: SpiffeId | str | set[SpiffeId | str] | frozenset[SpiffeId | str]) -> SpiffeId:
    """Secure naming: the peer must present one of the `allowed` identities.

    The certificate chain is already verified by the handshake; this checks *which* workload
    answered (a compromised or misrouted endpoint with another valid identity is refused).
    """
    wanted = {a if isinstance(a, SpiffeId) else SpiffeId.parse(a)
              for a in (allowed if isinstance(allowed, (set, frozenset)) else {allowed})}
    got = peer_identity(conn)
    if got is None:
        raise IdentityError("the peer presented no SPIFFE identity (plaintext or no client certificate)")
    if got not in wanted:
        raise IdentityError(f"peer identity {got} is not one of {sorted(str(w) for w in wanted)}")
    return got


def xfcc(server: SpiffeId, client_der: bytes) -> str:
    """The `X-Forwarded-Client-Cert` value the server sidecar gives its app on mTLS:
    `By=<server id>;Hash=<sha256 of the client cert>;Subject="";URI=<client id>`."""
    client = identity_from_der(client_der)
    uri = client.uri if client else ""
    return f'By={server.uri};Hash={hashlib.sha256(client_der).hexdigest()};Subject="";URI={uri}'


# -- sniffing the first bytes (PERMISSIVE mode) ------------------------------------------------

TLS, PLAINTEXT = "tls", "plaintext"
SNIFF_BYTES = 6  # TLS record header (5 bytes) + handshake type (1 byte)
_HANDSHAKE, _CLIENT_HELLO = 0x16, 0x01


def sniff(data: bytes) -> str | None:
    """What a connection speaks from its first bytes: TLS, PLAINTEXT, or None (need more).

    A TLS connection opens with a handshake record (type 22, version 3.x) carrying a
    ClientHello (handshake type 1); anything else — `GET / HTTP/1.1`, `PRI * HTTP/2.0` —
    is plaintext. Envoy's tls_inspector listener filter makes the same decision.
    """
    expected = (_HANDSHAKE, 0x03)
    for i, want in enumerate(expected):
        if len(data) <= i:
            return None
        if data[i] != want:
            return PLAINTEXT
    if len(data) < SNIFF_BYTES:
        return None
    # data[2] is the minor version (0..4), data[3:5] the record length: not needed to decide.
    return TLS if data[5] == _CLIENT_HELLO else PLAINTEXT


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def detect_protocol(sock: socket.socket, timeout: float | None = 10.0) -> str | None:
    """Peek (without consuming) at an accepted non-blocking socket until `sniff` decides.

    Returns TLS or PLAINTEXT, or None when the peer closed before sending enough. The bytes
    stay in the socket, so the caller can then hand it to `loop.connect_accepted_socket`
    with `ssl=server_context` (TLS) or without (plaintext). TimeoutError if the peer sends
    nothing decisive within `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    sock.setblocking(False)

    async def peek() -> str | None:
        while True:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock.fileno(), _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(sock.fileno())
            try:
                data = sock.recv(SNIFF_BYTES, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                return None
            verdict = sniff(data)
            if verdict is not None:
                return verdict
            if not data:
                return None
            if len(data) < SNIFF_BYTES:
                # The peer sent a partial header; wait briefly for the rest rather than spin
                # on a socket that stays readable.
                await asyncio.sleep(0.001)

    return await asyncio.wait_for(peek(), timeout)
