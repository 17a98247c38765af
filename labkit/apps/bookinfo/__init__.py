"""Bookinfo: Istio's four-service sample, the app of its traffic-management tasks.

The built-in images ``docker.io/istio/examples-bookinfo-{productpage-v1, details-v1,
reviews-v1, reviews-v2, reviews-v3, ratings-v1}`` run these modules (labkit.core.images). Each
answers as the real service does where the Istio tasks look (istio/istio
samples/bookinfo/src/): the same paths, JSON and page texts, the same calls and, what the
fault-injection and request-timeout tasks depend on, the same hard-coded client timeouts:

- ``productpage`` (productpage.py) calls ``details`` (3 s timeout) and ``reviews`` (3 s timeout,
  tried twice: "3s + 1 retry for 6s total", the bug the fault-injection task uncovers) and
  renders the book page; a signed-in user is sent on as the ``end-user`` header, and the trace
  headers are propagated.
- ``details`` (details.rb) answers the book's details.
- ``reviews`` (LibertyRestEndpoint.java) answers two reviews; v1 without ratings, v2 and v3 call
  ``ratings`` (timeout 10 s for black stars, 2.5 s for red) and add black (v2) or red (v3) stars.
- ``ratings`` (ratings.js) answers 5 and 4 stars.

Calls go by service name on port 9080, as in the cluster: through the pod's sidecar when it has
one (`HTTP_PROXY`, set by labkit's injection), else to the Service's local address from
Kubernetes' link variables (`labkit.apps.mesh_demo.service_address`). Every app listens on
127.0.0.1:$PORT (labkit maps the containerPort 9080 there) and starts in tens of milliseconds.
"""
