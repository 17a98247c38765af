from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import yaml

from labkit import manifests
from labkit.core import images
from labkit.core.models import Deployment, Service
from labkit.manifests import KubeObject, ManifestError, export, load, load_text

HELLO_YAML = Path(__file__).resolve().parents[1] / "data" / "manifests" / "hello.yaml"

Write = Callable[[str, str], Path]

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: labkit/hello
"""


def errors_of(source: object) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load(source)  # type: ignore[arg-type]  # any input, wrong kinds included: the errors are the test
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)
    return [str(e) for e in info.value.errors]


def test_hello_example_loads() -> None:
    deployment, service = load(HELLO_YAML)
    assert isinstance(deployment, Deployment) and isinstance(service, Service)
    assert deployment.spec.replicas == 2
    assert deployment.container.env[0].name == "TARGET"
    assert deployment.metadata.namespace == "default"
    assert service.spec.selector == {"app": "hello"} and service.spec.type == "ClusterIP"
    assert service.spec.ports[0].target_port == 8080


def test_misspelt_field_suggests_the_closest(write: Write) -> None:
    path = write("d.yaml", DEPLOYMENT.replace("  replicas: 2", "  replcas: 2"))
    assert errors_of(path) == [
        f"{path}:6: Deployment/web: spec.replcas: unknown field 'replcas'; did you mean 'replicas'?"
    ]


def test_unknown_field_without_a_close_match_lists_the_allowed_ones(write: Write) -> None:
    path = write("d.yaml", DEPLOYMENT.replace("  replicas: 2", "  strategy: {}"))
    (error,) = errors_of(path)
    assert error == (
        f"{path}:6: Deployment/web: spec.strategy: unknown field 'strategy' "
        "(allowed here: replicas, selector, template)"
    )


def test_wrong_types_name_the_value_and_how_to_fix_it(write: Write) -> None:
    text = DEPLOYMENT.replace("  replicas: 2", '  replicas: "2"') + (
        "          env:\n            - name: DEBUG\n              value: yes\n"
    )
    path = write("d.yaml", text)
    assert errors_of(path) == [
        f"{path}:6: Deployment/web: spec.replicas: expected an integer, got string '2' "
        "(remove the quotes)",
        f"{path}:20: Deployment/web: spec.template.spec.containers[0].env[0].value: expected a "
        'string, got boolean true (YAML reads yes as boolean; quote it: "yes")',
    ]


def test_missing_required_field_points_at_its_parent(write: Write) -> None:
    path = write("d.yaml", DEPLOYMENT.replace("          image: labkit/hello\n", ""))
    assert errors_of(path) == [
        f"{path}:16: Deployment/web: spec.template.spec.containers[0].image: required field is missing"
    ]


def test_bad_values(write: Write) -> None:
    text = DEPLOYMENT.replace("  replicas: 2", "  replicas: -1").replace(
        "  name: web\nspec", "  name: Web_1\nspec"
    )
    path = write("d.yaml", text)
    assert errors_of(path) == [
        f"{path}:6: Deployment/Web_1: spec.replicas: must be >= 0, got integer -1",
    ]
    path = write("d2.yaml", text.replace("replicas: -1", "replicas: 0"))
    (error,) = errors_of(path)
    assert error.startswith(
        f"{path}:4: Deployment/Web_1: metadata.name: 'Web_1' is not a valid name"
    )


def test_selector_must_match_template_labels(write: Write) -> None:
    path = write(
        "d.yaml", DEPLOYMENT.replace("        app: web\n    spec", "        app: other\n    spec")
    )
    (error,) = errors_of(path)
    assert error.startswith(
        f"{path}:12: Deployment/web: spec.template.metadata.labels: selector does not match "
        "template labels"
    )
    assert "Kubernetes rejects" in error


def test_container_without_command_needs_a_built_in_image(write: Write) -> None:
    path = write("d.yaml", DEPLOYMENT.replace("image: labkit/hello", "image: nginx:1.27"))
    (error,) = errors_of(path)
    assert error.startswith(
        f"{path}:17: Deployment/web: spec.template.spec.containers[0].image: image 'nginx:1.27' "
        "is not a built-in image"
    )
    assert "labkit/hello" in error and "command" in error
    # With a command, any image name is fine: the command is what runs locally.
    ok = DEPLOYMENT.replace("image: labkit/hello", "image: nginx:1.27\n          command: [nginx]")
    [deployment] = load(write("ok.yaml", ok))
    assert isinstance(deployment, Deployment) and deployment.container.command == ["nginx"]


def test_unknown_kind_and_api_version(write: Write) -> None:
    text = (
        "apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: a}\n"
        "---\n"
        "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: b}\n"
    )
    path = write("k.yaml", text)
    assert errors_of(path) == [
        f"{path}:2: Deploymnet/a: kind: unknown kind 'Deploymnet' (apiVersion 'apps/v1'); did "
        "you mean 'Deployment'? apps/v1 has: Deployment",
        f"{path}:5: Deployment/b: apiVersion: unknown apiVersion 'apps/v1beta1' for kind "
        "Deployment; use 'apps/v1'",
    ]


def test_missing_kind_and_non_mapping_documents(write: Write) -> None:
    path = write("m.yaml", "metadata: {name: a}\n---\n- a list\n")
    assert errors_of(path) == [
        f"{path}:1: apiVersion: required field is missing",
        f"{path}:1: kind: required field is missing",
        f"{path}:3: a manifest document must be a mapping with apiVersion and kind, got a list",
    ]


def test_yaml_syntax_error_has_a_line(write: Write) -> None:
    path = write("s.yaml", DEPLOYMENT.replace("    matchLabels:", "    matchLabels: [oops"))
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:9: YAML syntax error:")


def test_an_empty_file_is_an_error_not_a_silent_no_op(write: Write) -> None:
    path = write("empty.yaml", "# nothing here\n---\n")
    assert errors_of(path) == [f"{path}: no Kubernetes objects found (the YAML is empty)"]
    assert load(DEPLOYMENT + "---\n")[0].metadata.name == "web"  # a trailing --- is fine


def test_duplicate_keys_are_refused_like_the_api_server_does(write: Write) -> None:
    path = write("d.yaml", DEPLOYMENT.replace("  replicas: 2", "  replicas: 2\n  replicas: 3"))
    assert errors_of(path) == [
        f"{path}:7: Deployment/web: spec.replicas: duplicate key (first at line 6)"
    ]


def test_only_the_second_document_bad_rejects_the_whole_file(write: Write) -> None:
    service = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n    - prot: 80\n"
    )
    path = write("two.yaml", DEPLOYMENT + "---\n" + service)
    assert errors_of(path) == [
        f"{path}:24: Service/web: spec.ports[0].port: required field is missing",
        f"{path}:24: Service/web: spec.ports[0].prot: unknown field 'prot'; did you mean 'port'?",
    ]


def test_all_errors_of_all_files_are_reported(write: Write) -> None:
    one = write("one.yaml", DEPLOYMENT.replace("  replicas: 2", "  replicas: two"))
    two = write(
        "two.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: []\n"
    )
    missing = one.parent / "missing.yaml"
    errors = errors_of([one, two, missing])
    assert errors[0].startswith(f"{one}:6: Deployment/web: spec.replicas: expected an integer")
    assert errors[1] == f"{two}:5: Service/s: spec.ports: must have at least 1 item(s)"
    assert errors[2] == f"{missing}: cannot read file: No such file or directory"


def test_service_rules() -> None:
    text = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n"
        "    - port: 80\n    - port: 80\n      protocol: UDP\n"
    )
    errors = errors_of(text)
    assert errors == [
        "<string>:6: Service/s: spec.ports[0]: a name is required when a Service has more than one port",
        "<string>:7: Service/s: spec.ports[1]: a name is required when a Service has more than one port",
        "<string>:7: Service/s: spec.ports[1].port: duplicate port 80",
        "<string>:8: Service/s: spec.ports[1].protocol: labkit forwards TCP only, got 'UDP'",
    ]


def test_objects_defined_twice_are_refused() -> None:
    errors = errors_of(DEPLOYMENT + "---\n" + DEPLOYMENT)
    assert errors == [
        "<string>:22: Deployment/web: metadata.name: defined twice (first at <string>:4)"
    ]


def test_inputs_yaml_string_dict_model_and_one_line_yaml() -> None:
    (from_text,) = load(DEPLOYMENT)
    data = yaml.safe_load(DEPLOYMENT)
    assert load(data) == [from_text]
    assert load(from_text) == [from_text]
    assert errors_of([from_text, data]) == [
        "<object 2>: Deployment/web: metadata.name: defined twice (first at <model Deployment/web>)"
    ]
    flow = "{apiVersion: v1, kind: Service, metadata: {name: s}, spec: {ports: [{port: 80}]}}"
    [service] = load_text(flow)
    assert isinstance(service, Service) and service.spec.ports[0].port == 80
    data["spec"]["replicas"] = "3"
    assert errors_of(data) == [
        "<object 1>: Deployment/web: spec.replicas: expected an integer, got string '3' "
        "(remove the quotes)"
    ]


def test_models_changed_in_python_are_checked_too() -> None:
    (deployment,) = load(DEPLOYMENT)
    assert isinstance(deployment, Deployment)
    deployment.spec.replicas = -1  # pydantic does not validate assignments
    deployment.spec.template.metadata.labels = {"app": "other"}
    assert errors_of(deployment) == [
        "<model Deployment/web>: Deployment/web: spec.replicas: must be >= 0, got integer -1"
    ]
    deployment.spec.replicas = 1
    (error,) = errors_of(deployment)
    assert error.startswith(
        "<model Deployment/web>: Deployment/web: spec.template.metadata.labels: selector does "
        "not match template labels"
    )


def test_export_round_trip_is_stable() -> None:
    objects = load(HELLO_YAML)
    text = export(objects)
    assert load(text) == objects
    assert export(load(text)) == text
    first = yaml.safe_load(text.split("---\n")[0])
    assert list(first)[:2] == ["apiVersion", "kind"]
    # Defaults that were not written stay implicit, as in the source manifest.
    assert "namespace" not in first["metadata"] and "type" not in text


def test_export_of_models_built_in_python() -> None:
    from labkit.core.models import ServicePort, ServiceSpec
    from labkit.manifests import ObjectMeta

    service = Service(
        metadata=ObjectMeta(name="web"),
        spec=ServiceSpec(selector={"app": "web"}, ports=[ServicePort(port=80, target_port="http")]),
    )
    text = export(service)
    assert yaml.safe_load(text) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    assert load(text) == [service]


class Widget(KubeObject):
    api_version: Literal["example.com/v1"] = "example.com/v1"
    kind: Literal["Widget"] = "Widget"
    size: int


def test_components_register_their_own_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(manifests._KINDS, ("example.com/v1", "Widget"), Widget)
    text = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nsize: 3\n"
    (widget,) = load(text)
    assert isinstance(widget, Widget) and widget.size == 3
    assert ("example.com/v1", "Widget") in manifests.supported_kinds()
    assert errors_of(text.replace("size", "sise")) == [
        "<string>:1: Widget/w: size: required field is missing",
        "<string>:4: Widget/w: sise: unknown field 'sise'; did you mean 'size'?",
    ]
    with pytest.raises(TypeError):
        manifests.register_kind("x/v1", "Y", dict)  # type: ignore[arg-type]  # not a model: the TypeError is the test


def test_images_registry_and_command_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(images._IMAGES, "example/app", lambda: ["app-server"])
    assert images.image_command("example/app:1.2") == ["app-server"]
    assert images.image_command("example/app@sha256:abc") == ["app-server"]
    assert images.image_command("localhost:5000/other") is None
    command = images.container_command(
        "example/app", None, ["--port", "$(PORT)", "$(UNSET)", "$$(PORT)"], {"PORT": "8080"}
    )
    assert command == ["app-server", "--port", "8080", "$(UNSET)", "$(PORT)"]
    with pytest.raises(ValueError, match="not a built-in image"):
        images.container_command("nginx", None, None, {})


def test_the_broken_example_shows_one_error_of_each_common_kind() -> None:
    broken = HELLO_YAML.parent / "broken.yaml"
    assert errors_of(broken) == [
        f"{broken}:9: Deployment/hello: spec.replica: unknown field 'replica'; did you mean "
        "'replicas'?",
        f"{broken}:23: Deployment/hello: spec.template.spec.containers[0].env[0].value: expected "
        'a string, got integer 42 (YAML reads 42 as integer; quote it: "42")',
        f"{broken}:34: Service/hello: spec.ports[0].targetport: unknown field 'targetport'; did "
        "you mean 'targetPort'?",
    ]


def test_knative_sample_image_runs_the_built_in_hello() -> None:
    from labkit.net import python_command

    hello = python_command("labkit.apps.hello")
    assert images.image_command("ghcr.io/knative/helloworld-go:latest") == hello
    assert images.image_command("labkit/hello") == hello
