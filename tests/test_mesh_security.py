"""labkit.mesh.security: real TLS handshakes on loopback between CA-issued workload certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass

import pytest
from cryptography import x509

from labkit.mesh import security
from labkit.mesh.security import (
    PLAINTEXT,
    TLS,
    CertificateAuthority,
    IdentityError,
    SpiffeId,
    check_peer,
    detect_protocol,
    identity_from_der,
    peer_identity,
    sniff,
    xfcc,
)
from labkit.net import HOST


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def httpbin(ca: CertificateAuthority) -> security.WorkloadCertificate:
    return ca.issue("default", "httpbin")


@pytest.fixture(scope="module")
def sleep(ca: CertificateAuthority) -> security.WorkloadCertificate:
    return ca.issue("default", "sleep")


@dataclass
class ServerSide:
    peer: SpiffeId | None = None
    error: BaseException | None = None
    version: str | None = None
    alpn: str | None = None
    cipher: str | None = None


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[ServerSide, bytes | BaseException, ssl.SSLSocket | None]:
    """One TLS connection over 127.0.0.1: the server records its view and echoes the peer id.

    Returns the server's view, what the client read (or the exception it got), and the
    client's socket (closed) for inspecting the session.
    """
    seen = ServerSide()
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        seen.peer = peer_identity(tls)
                        seen.version, seen.alpn = tls.version(), tls.selected_alpn_protocol()
                        seen.cipher = tls.cipher()[0]  # type: ignore[index]  # None only before a handshake
                        tls.sendall(str(seen.peer).encode() + b"\n")
                except (ssl.SSLError, OSError) as exc:
                    seen.error = exc

        thread = threading.Thread(target=serve)
        thread.start()
        client: ssl.SSLSocket | None = None
        try:
            raw = socket.create_connection((HOST, port), timeout=10)
            client = client_ctx.wrap_socket(raw)
            got: bytes | BaseException = client.recv(200)
            if not got:  # TLS 1.3: the server's refusal can arrive as a close after the handshake
                got = ConnectionResetError("server closed the connection")
        except (ssl.SSLError, OSError) as exc:
            got = exc
        finally:
            if client is not None:
                client.close()
            thread.join(10)
    return seen, got, client


def test_spiffe_id_forms() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
    assert sid == SpiffeId("cluster.local", "default", "bookinfo-productpage")
    assert sid.principal == "cluster.local/ns/default/sa/bookinfo-productpage"
    assert sid.uri == str(sid) == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert SpiffeId.parse(sid.principal) == sid
    for bad in ("spiffe://cluster.local/default/sleep", "spiffe://cluster.local/ns//sa/x",
                "spiffe://cluster.local/ns/a/sa/b/c", "https://x/ns/a/sa/b"):
        with pytest.raises(IdentityError, match="spiffe|non-empty"):
            SpiffeId.parse(bad)


def test_certificate_carries_only_the_spiffe_uri(ca: CertificateAuthority, sleep: security.WorkloadCertificate) -> None:
    cert = sleep.certificate
    assert cert.subject == x509.Name([])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/default/sa/sleep"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == ca.certificate.subject
    cert.verify_directly_issued_by(ca.certificate)
    assert sleep.not_after - sleep.not_before == dt.timedelta(hours=24) + dt.timedelta(minutes=1)
    assert identity_from_der(sleep.der) == sleep.identity
    assert "URI SAN:     spiffe://cluster.local/ns/default/sa/sleep" in sleep.describe()


def test_rotation_due_at_half_the_lifetime(ca: CertificateAuthority) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    cert = ca.issue("prod", "api", ttl=dt.timedelta(hours=2), now=start)
    assert not cert.needs_rotation(start + dt.timedelta(minutes=50))
    assert cert.needs_rotation(start + dt.timedelta(minutes=61))


def test_mutual_tls_succeeds_and_both_sides_know_the_other(httpbin, sleep) -> None:
    seen, got, _ = handshake(httpbin.server_context(), sleep.client_context())
    assert seen.error is None
    assert seen.peer == SpiffeId("cluster.local", "default", "sleep")
    assert got == b"spiffe://cluster.local/ns/default/sa/sleep\n"
    assert seen.version in ("TLSv1.2", "TLSv1.3")
    assert seen.alpn == "istio-peer-exchange"


def test_client_checks_the_servers_identity(httpbin, sleep) -> None:
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with conn, httpbin.server_context().wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=serve)
        thread.start()
        with sleep.client_context().wrap_socket(socket.create_connection((HOST, port), timeout=10)) as tls:
            assert check_peer(tls, "spiffe://cluster.local/ns/default/sa/httpbin") == httpbin.identity
            assert check_peer(tls, {httpbin.identity, sleep.identity}) == httpbin.identity
            with pytest.raises(IdentityError, match="not one of"):
                check_peer(tls, "cluster.local/ns/default/sa/reviews")
            tls.sendall(b"x")
        thread.join(10)


def test_client_certificate_from_a_foreign_ca_is_refused(httpbin) -> None:
    intruder = CertificateAuthority().issue("default", "sleep")  # same name, other CA
    seen, got, _ = handshake(httpbin.server_context(), intruder.client_context())
    assert isinstance(seen.error, ssl.SSLError)
    assert "certificate verify failed" in str(seen.error).lower() or "unknown ca" in str(seen.error).lower()
    assert seen.peer is None
    assert isinstance(got, (ssl.SSLError, OSError))


def test_server_from_a_foreign_ca_is_refused_by_the_client(sleep) -> None:
    impostor = CertificateAuthority().issue("default", "httpbin")
    seen, got, _ = handshake(impostor.server_context(), sleep.client_context())
    assert isinstance(got, ssl.SSLCertVerificationError)
    assert seen.error is not None


def test_client_without_a_certificate_is_refused(ca, httpbin) -> None:
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cadata=ca.root_pem.decode())
    seen, got, _ = handshake(httpbin.server_context(), bare)
    assert isinstance(seen.error, ssl.SSLError)
    assert "certificate" in str(seen.error).lower()
    assert isinstance(got, (ssl.SSLError, OSError))


def test_expired_certificate_is_refused(ca, httpbin) -> None:
    old = ca.issue("default", "sleep", ttl=dt.timedelta(hours=1),
                   now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    seen, _, _ = handshake(httpbin.server_context(), old.client_context())
    assert isinstance(seen.error, ssl.SSLError) and "expired" in str(seen.error).lower()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused_and_1_2_uses_istios_ciphers(httpbin, sleep) -> None:
    old = sleep.client_context()
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    seen, _, _ = handshake(httpbin.server_context(), old)
    assert seen.error is not None and seen.peer is None

    v12 = sleep.client_context()
    v12.maximum_version = ssl.TLSVersion.TLSv1_2
    seen, _, _ = handshake(httpbin.server_context(), v12)
    assert seen.version == "TLSv1.2" and seen.peer == sleep.identity
    assert seen.cipher in ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_alpn_is_optional(httpbin, sleep) -> None:
    seen, _, _ = handshake(httpbin.server_context(alpn=None), sleep.client_context(alpn=None))
    assert seen.alpn is None and seen.peer == sleep.identity


def test_xfcc_names_server_and_client(httpbin, sleep) -> None:
    value = xfcc(httpbin.identity, sleep.der)
    by, hash_, subject, uri = value.split(";")
    assert by == "By=spiffe://cluster.local/ns/default/sa/httpbin"
    assert hash_.startswith("Hash=") and len(hash_) == 5 + 64
    assert subject == 'Subject=""'
    assert uri == "URI=spiffe://cluster.local/ns/default/sa/sleep"


def _client_hello(ctx: ssl.SSLContext) -> bytes:
    """The first bytes a real TLS client sends (through memory BIOs, no socket)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_sniff_tells_a_client_hello_from_plaintext(sleep) -> None:
    hello = _client_hello(sleep.client_context())
    assert sniff(hello) == TLS
    assert sniff(hello[:6]) == TLS
    assert [sniff(hello[:n]) for n in range(6)] == [None] * 6
    assert sniff(b"GET / HTTP/1.1\r\n") == PLAINTEXT
    assert sniff(b"PRI * HTTP/2.0\r\n") == PLAINTEXT
    assert sniff(b"\x16G") == PLAINTEXT
    assert sniff(b"\x16\x03\x03\x00\x40\x02") == PLAINTEXT  # a ServerHello is not a client opening


def test_permissive_port_serves_mtls_and_plaintext(httpbin, sleep) -> None:
    """One listener, two clients: detect_protocol picks TLS or plaintext per connection."""
    server_ctx = httpbin.server_context()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            peer = peer_identity(transport) if transport.get_extra_info("ssl_object") else None
            transport.write(f"peer={peer.principal if peer else 'none'}\n".encode())  # type: ignore[attr-defined]  # a stream server's transport writes

        def data_received(self, data: bytes) -> None:
            pass

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        verdicts: list[str] = []

        async def accept_one() -> None:
            conn, _ = await loop.sock_accept(listener)
            verdict = await detect_protocol(conn, timeout=10)
            verdicts.append(str(verdict))
            await loop.connect_accepted_socket(Echo, conn, ssl=server_ctx if verdict == TLS else None)

        async def plain_client() -> bytes:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            line = await reader.readline()
            writer.close()
            return line

        async def tls_client() -> bytes:
            reader, writer = await asyncio.open_connection(HOST, port, ssl=sleep.client_context())
            line = await reader.readline()
            writer.close()
            return line

        try:
            accepting = asyncio.ensure_future(accept_one())
            plain = await plain_client()
            await accepting
            accepting = asyncio.ensure_future(accept_one())
            secure = await tls_client()
            await accepting
        finally:
            listener.close()
        return [plain.decode(), secure.decode(), *verdicts]

    plain, secure, first, second = asyncio.run(main())
    assert plain == "peer=none\n"
    assert secure == "peer=cluster.local/ns/default/sa/sleep\n"
    assert (first, second) == (PLAINTEXT, TLS)


def test_detect_protocol_reports_an_early_close() -> None:
    async def main() -> str | None:
        a, b = socket.socketpair()
        b.close()
        try:
            return await detect_protocol(a, timeout=5)
        finally:
            a.close()

    assert asyncio.run(main()) is None


def test_peer_identity_of_plaintext_and_bad_input() -> None:
    class Plain:
        def get_extra_info(self, name: str) -> None:
            return None

    assert peer_identity(Plain()) is None
    with pytest.raises(TypeError, match="SSLSocket"):
        peer_identity(object())


def test_wiretap_sees_plaintext_but_not_inside_mtls(httpbin, sleep) -> None:
    """The same request through a recording relay: readable in plaintext, ciphertext under mTLS."""
    from labkit.mesh.wiretap import WireTap, preview, printable_share

    def serve_once(listener: socket.socket, ctx: ssl.SSLContext | None) -> None:
        conn, _ = listener.accept()
        with conn:
            stream = ctx.wrap_socket(conn, server_side=True) if ctx else conn
            with stream:
                stream.recv(1000)
                stream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

    for ctx_pair in ((None, None), (httpbin.server_context(), sleep.client_context())):
        server_ctx, client_ctx = ctx_pair
        with socket.create_server((HOST, 0)) as listener:
            thread = threading.Thread(target=serve_once, args=(listener, server_ctx))
            thread.start()
            with WireTap(listener.getsockname()) as tap:
                raw = socket.create_connection((HOST, tap.port), timeout=10)
                stream = client_ctx.wrap_socket(raw) if client_ctx else raw
                with stream:
                    stream.sendall(b"GET /token HTTP/1.1\r\nHost: x\r\n\r\n")
                    got = b""
                    while b"secret" not in got:
                        chunk = stream.recv(1000)
                        if not chunk:
                            break
                        got += chunk
                thread.join(10)
                wire = bytes(tap.to_server + tap.to_client)
            assert got.endswith(b"secret") and tap.connections == 1
            if client_ctx is None:
                assert b"GET /token" in tap.to_server and b"secret" in tap.to_client
                assert printable_share(wire) == 1.0 and preview(wire).startswith("GET /token")
            else:
                assert b"GET /token" not in wire and b"secret" not in wire
                assert printable_share(wire) < 0.6
