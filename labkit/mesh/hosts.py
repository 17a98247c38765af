"""Host names: which service a request's Host header means, and which names a rule covers.

Sources: https://istio.io/latest/docs/reference/config/networking/virtual-service/#VirtualService
(`hosts`: short names are resolved in the rule's namespace) and Kubernetes DNS
(https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/): a pod's resolver
tries `<name>.<own ns>.svc.cluster.local`, then `<name>.svc.cluster.local`, then the name. Envoy's
outbound virtual hosts list the same short forms, so a sidecar routes `httpbin`, `httpbin:8000`
and `httpbin.default.svc.cluster.local:8000` alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Sequence

from labkit.mesh import spec

__all__ = ["DOMAIN_SUFFIX", "check_hosts", "host_covers", "qualify_host", "resolve_authority",
           "shadow_authority", "split_host_port"]

DOMAIN_SUFFIX = "cluster.local"


def split_host_port(authority: str) -> tuple[str, int | None]:
    """'httpbin:8000' -> ('httpbin', 8000); '[::1]:80' -> ('::1', 80); no port -> None."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return authority, None


def qualify_host(host: str, namespace: str, domain: str = DOMAIN_SUFFIX) -> str:
    """A VirtualService/DestinationRule host as Istio resolves it: a short name (no dot) is
    taken in the rule's namespace (`reviews` in `default` -> reviews.default.svc.cluster.local);
    anything with a dot, and wildcards, are left as written."""
    if host == "*" or host.startswith("*.") or "." in host:
        return host.lower()
    return f"{host}.{namespace}.svc.{domain}".lower()


def resolve_authority(authority: str, client_namespace: str, services: Container[str] | None = None,
                      domain: str = DOMAIN_SUFFIX) -> tuple[str, int | None]:
    """The host (service FQDN when it is one) and port a request's Host header refers to.

    Names are tried as Kubernetes DNS search paths try them from a pod in `client_namespace`
    (Envoy's outbound virtual hosts list the same short forms): `httpbin` ->
    httpbin.<client ns>.svc.cluster.local; `httpbin.foo` and `httpbin.foo.svc` ->
    httpbin.foo.svc.cluster.local; then the name as written. With `services` (the known
    FQDNs) the first candidate that exists wins, so `example.com` stays `example.com`;
    without it the first candidate is returned.
    """
    host, port = split_host_port(authority.strip().lower())
    host = host.rstrip(".")
    svc = f".svc.{domain}"
    if "." not in host:
        candidates = [f"{host}.{client_namespace}{svc}"]
    elif host.endswith(".svc"):
        candidates = [f"{host}.{domain}", host]
    elif host.count(".") == 1:  # name.namespace (service names have no dots)
        candidates = [f"{host}{svc}", host]
    else:
        candidates = [host]
    if services is None:
        return candidates[0], port
    return next((c for c in candidates if c in services), host), port


def shadow_authority(authority: str) -> str:
    """Host of a mirrored copy when Envoy appends its suffix: `-shadow` before the port
    (`httpbin:8000` -> `httpbin-shadow:8000`, Istio's mirroring task). Envoy always did so
    unless `disable_shadow_host_suffix_append`; istiod sets that field from
    DISABLE_SHADOW_HOST_SUFFIX, which defaults to true from Istio 1.28: the compatibility
    profile for 1.27 lists `DISABLE_SHADOW_HOST_SUFFIX: "false"` under "1.28 behavioral
    changes" (istio/istio manifests/helm-profiles/compatibility-version-1.27.yaml; release note
    1.28.0, issue #57530). labkit models 1.28-1.30, so a copy keeps its Host unless the mesh
    asks for the old form (`MeshConfig.shadow_host_suffix`)."""
    host, port = split_host_port(authority)
    return f"{host}-shadow" + (f":{port}" if port is not None else "")


def host_covers(a: str, b: str) -> bool:
    """Does host pattern `a` match every name `b` matches (Istio's host.Name.Matches)?"""
    if a == "*" or a == b:
        return True
    return a.startswith("*.") and b.endswith(a[1:])


def check_hosts(hosts: Sequence[str], *, for_mesh: bool) -> None:
    """VirtualService hosts as istiod validates them: DNS names (a leading `*.` allowed) or IPs,
    no `*` alone for sidecars, no duplicates (including one wildcard covering another)."""
    for i, host in enumerate(hosts):
        path = spec.join("hosts", i)
        if host == "*":
            if for_mesh:
                raise spec.SpecError(path, "wildcard host * is not allowed for virtual services bound to "
                                           "the mesh gateway")
            continue
        name = host.removeprefix("*.")
        try:
            ipaddress.ip_address(host)
            continue
        except ValueError:
            pass
        labels = name.rstrip(".").split(".")
        if len(name) > 255 or not all(spec.is_dns_label(label) for label in labels) or labels[-1].isdigit():
            raise spec.SpecError(path, f"{host!r} is not a valid host name (lower-case DNS labels, "
                                       "optionally starting with '*.')")
    for i, a in enumerate(hosts):
        for b in hosts[i + 1:]:
            if host_covers(a, b) or host_covers(b, a):
                raise spec.SpecError("hosts", f"duplicate hosts: {a} and {b}")
