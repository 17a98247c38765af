"""serviceAccountName: validated, exported, required to exist, and the pod's mesh identity."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import yaml
from mesh_helpers import identity

from labkit.cluster import ApplyError, LocalCluster
from labkit.manifests import ManifestError, export, load
from labkit.mesh.control import control_plane

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      serviceAccountName: greeter
      automountServiceAccountToken: false
      containers:
        - name: hello
          image: labkit/hello
"""
ACCOUNT = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: greeter
automountServiceAccountToken: false
"""


def test_service_account_fields_round_trip_through_export() -> None:
    objects = load(ACCOUNT + "---\n" + DEPLOYMENT)
    text = export(objects)
    assert "serviceAccountName: greeter" in text and "automountServiceAccountToken: false" in text
    assert load(text) == objects
    assert "serviceAccountName" not in export(load(DEPLOYMENT.replace("      serviceAccountName: greeter\n", "")))
    (account,) = yaml.safe_load_all(export(objects[0]))
    assert account == yaml.safe_load(ACCOUNT)


def test_service_account_name_must_be_a_dns_subdomain(write) -> None:
    path = write("bad.yaml", DEPLOYMENT.replace("greeter", "Greeter_1"))
    with pytest.raises(ManifestError) as err:
        load(path)
    assert "bad.yaml:12: Deployment/hello: spec.template.spec.serviceAccountName: 'Greeter_1' is not a valid name" \
        in str(err.value)
    with pytest.raises(ManifestError, match=r"did you mean 'serviceAccountName'"):
        load(DEPLOYMENT.replace("serviceAccountName", "serviceAcountName"))
    with pytest.raises(ManifestError, match="ServiceAccount/Bad: metadata.name"):
        load(ACCOUNT.replace("greeter", "Bad"))


def test_pods_need_their_service_account_to_exist(cluster: LocalCluster, child_pids) -> None:
    before = child_pids()
    with pytest.raises(ApplyError, match="error looking up service account default/greeter: "
                                         "serviceaccount 'greeter' not found"):
        cluster.apply(DEPLOYMENT)
    assert cluster.objects() == [] and child_pids() == before
    cluster.apply([ACCOUNT, DEPLOYMENT])  # in one apply, account first, as kubectl would create it
    status = cluster.get("Deployment", "hello").status
    assert status.ready
    assert cluster.get("ServiceAccount", "greeter").status.message == \
        "identity spiffe://cluster.local/ns/default/sa/greeter"


def test_the_default_account_always_exists(cluster: LocalCluster) -> None:
    cluster.apply(DEPLOYMENT.replace("greeter", "default"))
    assert cluster.get("Deployment", "hello").status.ready


MESH = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: cart, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: orders, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders}}
    spec:
      serviceAccountName: orders
      containers: [{name: orders, image: labkit/mesh-demo, env: [{name: SERVICE_NAME, value: orders}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  template:
    metadata: {labels: {app: cart}}
    spec:
      serviceAccountName: cart
      containers: [{name: cart, image: labkit/mesh-demo, env: [{name: SERVICE_NAME, value: cart}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy, namespace: shop}
spec:
  selector: {matchLabels: {app: legacy}}
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers: [{name: legacy, image: labkit/mesh-demo, env: [{name: SERVICE_NAME, value: legacy}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-from-cart, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
    - from: [{source: {principals: [cluster.local/ns/shop/sa/cart]}}]
"""


def status_through(sidecar) -> int:
    """GET http://orders/ through `sidecar`'s outbound listener (as its app would)."""
    request = urllib.request.Request("http://orders/")
    request.set_proxy(sidecar.outbound_url.removeprefix("http://"), "http")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_mesh_identity_is_the_pods_service_account(cluster: LocalCluster) -> None:
    cluster.apply(MESH)
    identities = {name: identity(cluster, name, "shop") for name in ("orders", "cart", "legacy")}
    assert identities == {"orders": "spiffe://cluster.local/ns/shop/sa/orders",
                          "cart": "spiffe://cluster.local/ns/shop/sa/cart",
                          "legacy": "spiffe://cluster.local/ns/shop/sa/default"}
    # Two workloads, two identities: orders' sidecar lets cart in and keeps legacy out.
    assert status_through(control_plane(cluster).sidecar("cart", "shop")) == 200
    assert status_through(control_plane(cluster).sidecar("legacy", "shop")) == 403


def test_changing_the_service_account_gives_the_workload_a_new_identity(cluster: LocalCluster) -> None:
    cluster.apply(MESH)
    cluster.apply(MESH.replace("serviceAccountName: cart", "serviceAccountName: orders"))
    assert identity(cluster, "cart", "shop") == "spiffe://cluster.local/ns/shop/sa/orders"
    assert status_through(control_plane(cluster).sidecar("cart", "shop")) == 403
