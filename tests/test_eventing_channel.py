"""InMemoryChannel / Channel + Subscription: fan-out, replies, retries, dead letters, in memory."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import wait_for

from labkit.eventing.channel import channel_handle
from labkit.eventing.sink import InProcessSink, SinkBehaviour


def _post(url: str, event_id: str, type_: str = "com.example.c") -> int:
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/chan",
               "ce-type": type_, "content-type": "application/json"}
    return httpx.post(url, headers=headers, content=b'{"v": 1}').status_code


def _subscription(name: str, channel: str, subscriber: str, extra: str = "",
                  kind: str = "InMemoryChannel") -> str:
    return f"""
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: {name}}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: {kind}, name: {channel}}}
  subscriber: {{uri: "{subscriber}"}}
{extra}
"""


CHANNEL = """
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: ch}
"""


def test_every_subscription_gets_every_event_even_with_the_same_subscriber(cluster):
    with InProcessSink() as a, InProcessSink() as b:
        cluster.apply(CHANNEL + _subscription("s1", "ch", a.url) + _subscription("s2", "ch", b.url)
                      + _subscription("s3", "ch", b.url))
        url = cluster.url("InMemoryChannel", "ch")
        assert _post(url, "1") == 202 and _post(url, "2") == 202
        wait_for(lambda: len(a.received()) == 2 and len(b.received()) == 4, what="fan-out")
        assert sorted(r["attributes"]["id"] for r in b.received()) == ["1", "1", "2", "2"]
        assert all(r["prefer"] == "reply" for r in a.received())


@pytest.mark.parametrize("path, status", [("/default/ch", 202), ("/x/y", 404)])
def test_channel_ingress_paths(cluster, path, status):
    cluster.apply(CHANNEL)
    assert _post(cluster.url("InMemoryChannel", "ch") + path, "p") == status


def test_channel_ingress_rejects_non_events_and_other_methods(cluster):
    cluster.apply(CHANNEL)
    url = cluster.url("InMemoryChannel", "ch")
    answer = httpx.post(url, headers={"content-type": "application/json"}, content=b"{}")
    assert answer.status_code == 400 and "not a CloudEvent" in answer.json()["error"]
    assert httpx.get(url).status_code == 405


def test_reply_goes_to_the_reply_destination_or_is_dropped(cluster):
    replier = SinkBehaviour(reply_type="com.example.reply", function="echo")
    with InProcessSink(replier) as fn, InProcessSink(replier) as fn2, InProcessSink() as out:
        cluster.apply(CHANNEL + _subscription("with-reply", "ch", fn.url,
                                              f'  reply: {{uri: "{out.url}"}}')
                      + _subscription("no-reply", "ch", fn2.url))
        assert _post(cluster.url("InMemoryChannel", "ch"), "r") == 202
        wait_for(lambda: len(out.received()) == 1, what="reply delivered")
        assert out.received()[0]["attributes"]["type"] == "com.example.reply"
        wait_for(lambda: any(r["what"] == "reply" and "dropped" in str(r.get("detail"))
                             for r in channel_handle(cluster, "ch").log.since()),
                 what="reply dropped for the subscription without reply")


def test_subscription_delivery_retries_then_dead_letters(cluster):
    with InProcessSink(SinkBehaviour(fail_first=10, fail_status=500)) as bad, \
            InProcessSink() as dls:
        cluster.apply(CHANNEL + _subscription("s", "ch", bad.url, f"""  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.01S
    deadLetterSink: {{uri: "{dls.url}"}}"""))
        assert _post(cluster.url("InMemoryChannel", "ch"), "d") == 202
        wait_for(lambda: len(dls.received()) == 1, what="dead letter")
        assert len(bad.received(successful_only=False)) == 3
        attributes = dls.received()[0]["attributes"]
        assert attributes["knativeerrorcode"] == "500"
        assert attributes["knativeerrordest"] == bad.url


def test_channel_delivery_is_the_default_for_subscriptions_without_one(cluster):
    with InProcessSink(SinkBehaviour(fail_first=1)) as once:
        cluster.apply("""
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: generic}
spec:
  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel}
  delivery: {retry: 1}
""" + _subscription("s", "generic", once.url, kind="Channel"))
        assert _post(cluster.url("Channel", "generic"), "c") == 202
        wait_for(lambda: len(once.received()) == 1, what="delivered on the retry")
        assert once.received()[0]["attempt"] == 2


def test_subscription_status_names_a_missing_channel(cluster):
    with InProcessSink() as a:
        cluster.apply(_subscription("orphan", "nowhere", a.url).lstrip("-\n"))
        status = cluster.get("Subscription", "orphan").status
        assert not status.ready and "nowhere" in status.message


def test_channel_metrics_count_accepted_and_delivered(cluster):
    with InProcessSink() as a:
        cluster.apply(CHANNEL + _subscription("s", "ch", a.url))
        assert _post(cluster.url("InMemoryChannel", "ch"), "m") == 202
        wait_for(lambda: len(a.received()) == 1, what="delivery")
        text = channel_handle(cluster, "ch").metrics_text()
        wait_for(lambda: 'subscription_events_delivered_total{channel_name="ch"' in
                 channel_handle(cluster, "ch").metrics_text(), what="delivered counter")
        assert 'channel_events_accepted_total{channel_name="ch",namespace_name="default"} 1.0' \
            in text
        json.loads(json.dumps(channel_handle(cluster, "ch").log.since()))  # serialisable
