"""A sidecar used on its own, configured with a `MeshConfig` snapshot by hand (what the bench
and a student's experiment do): push without restart, secure naming over mutual TLS."""

from __future__ import annotations

import asyncio

import httpx

from labkit.mesh.proxy import Sidecar
from labkit.mesh.proxy_config import Endpoint, MeshConfig, ServiceInfo, Workload
from labkit.mesh.security import CertificateAuthority


async def _app() -> tuple[asyncio.AbstractServer, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _mesh(version: int, address: str, principal: str | None) -> MeshConfig:
    endpoint = Endpoint(address, "app", sidecar=True, principal=principal)
    service = ServiceInfo("app", "default", (8000,), (endpoint,))
    return MeshConfig(version, {service.fqdn: service})


def test_a_pushed_snapshot_takes_effect_on_the_running_listener() -> None:
    async def scenario() -> tuple[int, int, str, bool]:
        ca = CertificateAuthority()
        app, port = await _app()
        server = Sidecar(Workload("app", service_account="app"), app_port=port,
                         tls=ca.issue("default", "app"))
        client = Sidecar(Workload("sleep", service_account="sleep"), tls=ca.issue("default", "sleep"))
        await server.start()
        await client.start()
        listener = client.outbound_url
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                client.push(_mesh(1, server.inbound_url.removeprefix("http://"),
                                  "spiffe://cluster.local/ns/default/sa/app"))
                good = await http.get(listener + "/", headers={"host": "app"})
                server_port = server.inbound_ports[next(iter(server.inbound_ports))]
                await server.close()  # the endpoint is gone; the client is told by a push
                client.push(_mesh(2, f"127.0.0.1:{server_port}", None))
                gone = await http.get(listener + "/", headers={"host": "app"})
                return good.status_code, gone.status_code, gone.text, client.outbound_url == listener
        finally:
            await client.close()
            app.close()

    good, gone, body, same_listener = asyncio.run(scenario())
    assert good == 200 and same_listener
    assert gone == 503 and "connection failure" in body  # retried twice (Istio's default), then UF


def test_secure_naming_refuses_a_wrong_identity_on_a_new_connection() -> None:
    async def scenario() -> tuple[int, str, dict[str, str]]:
        ca = CertificateAuthority()
        app, port = await _app()
        server = Sidecar(Workload("app", service_account="app"), app_port=port,
                         tls=ca.issue("default", "app"))
        client = Sidecar(Workload("sleep", service_account="sleep"), tls=ca.issue("default", "sleep"))
        await server.start()
        await client.start()
        try:
            client.push(_mesh(1, server.inbound_url.removeprefix("http://"),
                              "spiffe://cluster.local/ns/default/sa/impostor"))
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.get(client.outbound_url + "/", headers={"host": "app"})
            return r.status_code, r.text, client.telemetry.metrics.samples()[0][0]
        finally:
            await client.close()
            await server.close()
            app.close()

    status, body, labels = asyncio.run(scenario())
    assert status == 503 and body.startswith("upstream connect error")
    assert labels["response_flags"] == "UF,URX"
