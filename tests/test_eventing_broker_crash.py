"""kill -9 of the broker process between accept and delivery loses nothing (at-least-once).

The subscriber of one trigger is not listening yet, so every accepted event is still pending
in the log when the broker is killed; the other trigger's subscriber hangs on its first attempt,
so deliveries are in flight at the kill. After a restart on the same store file, every event
that was answered 202 reaches both subscribers.
"""

from __future__ import annotations

import httpx
from conftest import wait_for

from labkit.eventing.broker_control import broker_handle
from labkit.eventing.sink import InProcessSink, SinkBehaviour
from labkit.net import free_port


def _post(url: str, event_id: str) -> int | None:
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/crash",
               "ce-type": "com.example.crash", "content-type": "application/json"}
    try:
        return httpx.post(url, headers=headers, content=b'{"n": 1}', timeout=5).status_code
    except httpx.TransportError:
        return None  # not accepted: the producer knows it must send again


def test_sigkill_between_accept_and_delivery_loses_no_accepted_event(cluster, process_alive):
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}"
    with InProcessSink(SinkBehaviour(hang_first=1, hang_seconds=60)) as hanging:
        cluster.apply(f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 1000, backoffPolicy: linear, backoffDelay: PT0.01S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: late}}
spec:
  broker: default
  subscriber: {{uri: "{late_url}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: hanging}}
spec:
  broker: default
  subscriber: {{uri: "{hanging.url}"}}
  delivery: {{retry: 3, timeout: PT2S}}
""")
        broker = broker_handle(cluster, "default")
        accepted = {f"before-{i}" for i in range(200) if _post(broker.url, f"before-{i}") == 202}
        assert len(accepted) == 200
        wait_for(lambda: broker.state()["triggers"]["hanging"]["in_flight"] > 0,
                 what="deliveries in flight to the hanging subscriber")
        state = broker.state()
        assert state["triggers"]["late"]["pending"] + state["triggers"]["late"]["in_flight"] > 0
        assert state["triggers"]["late"]["delivered"] == 0

        old_pid = broker.kill()
        assert not process_alive(old_pid)
        assert _post(broker.url, "while-down") is None  # refused, so not accepted

        broker.restart()
        assert broker.process is not None and broker.process.pid != old_pid
        accepted |= {f"after-{i}" for i in range(50) if _post(broker.url, f"after-{i}") == 202}
        assert len(accepted) == 250

        with InProcessSink(port=late_port) as late:
            def ids(sink: InProcessSink) -> set[str]:
                return {r["attributes"]["id"] for r in sink.received()}

            wait_for(lambda: ids(late) >= accepted, timeout=60,
                     what="every accepted event at the late subscriber")
            wait_for(lambda: ids(hanging) >= accepted, timeout=60,
                     what="every accepted event at the hanging subscriber")
            assert "while-down" not in ids(late)
            counts = broker.state()["triggers"]["late"]
            assert counts["delivered"] == 250 and counts["dropped"] == 0
