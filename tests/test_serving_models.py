"""The Knative Service manifest: what loads, what the webhook rules refuse, and where."""

from __future__ import annotations

import textwrap

import pytest

from labkit import manifests
from labkit.manifests import ManifestError, export, load_text
from labkit.serving.models import KnativeService, TrafficTarget

GOOD = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: shop
spec:
  template:
    metadata:
      name: shop-v2
      annotations:
        autoscaling.knative.dev/target: "10"
        autoscaling.knative.dev/window: "6s"
    spec:
      containerConcurrency: 4
      timeoutSeconds: 30
      containers:
        - image: labkit/httpbin
          env:
            - name: TARGET
              value: v2
          ports:
            - containerPort: 8080
          readinessProbe:
            httpGet:
              path: /
  traffic:
    - revisionName: shop-v1
      percent: 90
    - latestRevision: true
      percent: 10
      tag: candidate
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_text(text)
    return [str(e) for e in info.value.errors]


def _service(spec_tail: str, template_meta: str = "", container: str = "") -> str:
    return textwrap.dedent("""\
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: shop
        spec:
          template:
            metadata:
              annotations: {}
        %s
            spec:
              containers:
                - image: labkit/httpbin
        %s
        %s
        """) % (template_meta, container, spec_tail)


def test_a_full_service_loads_with_its_fields() -> None:
    [svc] = load_text(GOOD)
    assert isinstance(svc, KnativeService)
    assert svc.spec.template.spec.container_concurrency == 4
    assert svc.spec.template.spec.container.ready_path == "/"
    assert [t.percent for t in svc.traffic] == [90, 10]
    assert svc.traffic[1].follows_latest and not svc.traffic[0].follows_latest


def test_the_default_traffic_block_is_all_to_the_latest_ready_revision() -> None:
    [svc] = load_text(_service(""))
    assert isinstance(svc, KnativeService)
    assert svc.traffic == [TrafficTarget(latest_revision=True, percent=100)]


def test_both_service_kinds_stay_apart() -> None:
    kinds = manifests.supported_kinds()
    assert ("serving.knative.dev/v1", "Service") in kinds and ("v1", "Service") in kinds


def test_traffic_must_sum_to_100_with_the_line_of_the_block() -> None:
    text = _service("""\
  traffic:
    - latestRevision: true
      percent: 60
    - revisionName: shop-00001
      percent: 30""")
    [error] = _errors(text)
    line = text.splitlines().index("  traffic:") + 1
    assert error == f"<string>:{line}: Service/shop: spec.traffic: traffic targets sum to 90, want 100"


def test_revision_name_and_latest_revision_exclude_each_other() -> None:
    errors = _errors(_service("""\
  traffic:
    - revisionName: shop-00001
      latestRevision: true
      percent: 100"""))
    assert len(errors) == 1
    assert "spec.traffic[0].latestRevision: may not be true when revisionName" in errors[0]


def test_latest_revision_false_needs_a_revision_name() -> None:
    [error] = _errors(_service("""\
  traffic:
    - latestRevision: false
      percent: 100"""))
    assert "spec.traffic[0]: expected exactly one of revisionName or latestRevision" in error


def test_tags_are_unique_dns_labels() -> None:
    errors = _errors(_service("""\
  traffic:
    - latestRevision: true
      percent: 100
      tag: blue
    - revisionName: shop-00001
      percent: 0
      tag: blue
    - revisionName: shop-00002
      percent: 0
      tag: Green"""))
    assert any("spec.traffic[1].tag: duplicate tag 'blue' (first in traffic[0])" in e
               for e in errors)
    assert any("spec.traffic[2].tag: 'Green' is not a valid name" in e for e in errors)


def test_percent_range_and_status_only_url() -> None:
    errors = _errors(_service("""\
  traffic:
    - latestRevision: true
      percent: 101
      url: http://x.example.com"""))
    assert any("spec.traffic[0].percent: expected 0 <= 101 <= 100" in e for e in errors)
    assert any("spec.traffic[0].url: url is set by Knative in status" in e for e in errors)


def test_bad_annotations_use_knatives_messages_at_the_annotation_line() -> None:
    text = textwrap.dedent("""\
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: shop
        spec:
          template:
            metadata:
              annotations:
                autoscaling.knative.dev/target: "fast"
                autoscaling.knative.dev/min-scale: "5"
                autoscaling.knative.dev/max-scale: "2"
            spec:
              containers:
                - image: labkit/httpbin
        """)
    errors = _errors(text)
    assert ("<string>:9: Service/shop: spec.template.metadata.annotations"
            "['autoscaling.knative.dev/target']: target fast should be at least 0.01") in errors
    assert any(e.startswith("<string>:10:") and "max-scale=2 is less than min-scale=5" in e
               for e in errors)
    assert any(e.startswith("<string>:11:") and "max-scale=2 is less than min-scale=5" in e
               for e in errors)


def test_revision_spec_limits() -> None:
    errors = _errors(textwrap.dedent("""\
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: shop
        spec:
          template:
            metadata:
              name: other-v1
            spec:
              containerConcurrency: 1001
              timeoutSeconds: 601
              containers:
                - image: labkit/httpbin
                  ports:
                    - containerPort: 8012
        """))
    joined = "\n".join(errors)
    assert "spec.template.metadata.name: revision name 'other-v1' must start with" in joined
    assert "spec.template.spec.containerConcurrency: expected 0 <= 1001 <= 1000" in joined
    assert "spec.template.spec.timeoutSeconds: expected 0 <= 601 <= 600" in joined
    assert "spec.template.spec.containers[0].ports[0].containerPort: port 8012 is reserved" in joined


def test_unknown_image_without_command_and_misspelt_field() -> None:
    errors = _errors(textwrap.dedent("""\
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: shop
        spec:
          template:
            spec:
              containerConcurency: 2
              containers:
                - image: example.com/unknown:1
        """))
    joined = "\n".join(errors)
    assert "<string>:8: Service/shop: spec.template.spec.containerConcurency: unknown field" in joined
    assert "did you mean 'containerConcurrency'" in joined


def test_export_round_trips_and_passes_the_official_crd(crd_validate) -> None:
    objects = load_text(GOOD)
    text = export(objects)
    assert load_text(text) == objects
    assert "OK" in crd_validate(text)
