"""The mesh dashboard, driven headless: move a control, check the state it produced."""

from __future__ import annotations

import pytest
import yaml

from labkit.sim import simulate_mesh
from labkit.widgets.mesh import istio_specs, mesh_dashboard, specs_yaml


@pytest.fixture
def dash(headless_dashboard):
    return headless_dashboard(mesh_dashboard, duration=10.0)


def test_dashboard_shows_the_simulators_numbers(dash):
    direct = simulate_mesh(hosts=3, failing_hosts=1, failure_rate=0.5, arrival_rate=100.0, duration=10.0,
                           retries={"attempts": 0}, seed=1)
    assert dash.result == direct
    assert f"{direct.success_rate:.1%}" in dash.summary.value
    assert dash.figure is not None and len(dash.figure.axes) == 4


def test_the_reused_figure_draws_what_a_new_one_would(dash, headless_dashboard):
    figure = dash.figure
    dash.set(hosts=6, failing_hosts=2, failure_rate=1.0, outlier_detection=True)
    dash.set(hosts=2, failing_hosts=1, failure_rate=0.5, outlier_detection=False, attempts=2)
    fresh = headless_dashboard(mesh_dashboard, duration=10.0, hosts=2, attempts=2)
    assert dash.figure is figure and len(figure.axes) == 4
    assert dash.png == fresh.png  # no bar, tick or line left over from the 6-host run


def test_retries_raise_the_success_rate(dash):
    before, runs = dash.result.success_rate, dash.runs
    dash.controls["attempts"].value = 2
    assert dash.runs == runs + 1
    assert dash.specs["retries"] == {"attempts": 2, "retryOn": "5xx"}
    assert dash.result.success_rate > before + 0.1


def test_default_retry_on_list_does_not_retry_503(dash):
    before = dash.result
    dash.set(attempts=2, retry_on="connect-failure,refused-stream,unavailable,cancelled")
    assert dash.result.status_counts == before.status_counts


def test_ejection_takes_load_off_the_failing_host(dash):
    dash.set(failure_rate=1.0)
    kept = dash.result.failing_load
    dash.set(outlier_detection=True, consecutive_5xx=1)
    assert dash.specs["outlierDetection"]["consecutive5xxErrors"] == 1
    assert dash.result.failing_load < kept / 3
    assert dash.result.ejections >= 1


def test_pool_limits_overflow(dash):
    dash.set(max_connections=1, max_pending=1, failing_hosts=0)
    assert dash.result.count_flag("UO") > 0
    assert dash.result.max_active_requests == 1
    assert "<b>" in dash.summary.value and "UO" in dash.summary.value


def test_specs_yaml_is_istio_shaped(dash):
    dash.set(attempts=3, per_try_timeout_ms=50, timeout_ms=200, max_connections=2, outlier_detection=True)
    vs, dr = yaml.safe_load_all(specs_yaml(dash.specs))
    route = vs["spec"]["http"][0]
    assert route["retries"] == {"attempts": 3, "retryOn": "5xx", "perTryTimeout": "50ms"}
    assert route["timeout"] == "200ms"
    assert dr["spec"]["trafficPolicy"]["connectionPool"] == {"tcp": {"maxConnections": 2}}
    assert dr["spec"]["trafficPolicy"]["outlierDetection"]["baseEjectionTime"] == "10s"


def test_more_failing_hosts_than_hosts_is_clamped(dash):
    dash.set(hosts=2, failing_hosts=5)
    assert dash.error is None and dash.result.failing_hosts == ("backend-0", "backend-1")


def test_unknown_control_is_named(dash):
    with pytest.raises(KeyError, match="retry"):
        dash.set(retry=3)


def test_istio_specs_leave_out_unset_blocks():
    s = mesh_dashboard(duration=2.0).settings()
    specs = istio_specs(s)
    assert specs["connectionPool"] is None and specs["outlierDetection"] is None and specs["timeout"] is None


# --- the service graph (parsed from Prometheus text, as Kiali reads Prometheus) -------------

def _sample(reporter, src, src_v, dst, dst_v, code, value, tls="unknown", service="backend"):
    return (f'istio_requests_total{{reporter="{reporter}",source_workload="{src}",source_version="{src_v}",'
            f'destination_workload="{dst}",destination_version="{dst_v}",destination_service_name="{service}",'
            f'connection_security_policy="{tls}",response_code="{code}",response_flags="-"}} {value}')


def test_service_graph_rates_errors_and_mtls():
    from labkit.widgets.service_graph import draw_service_graph, service_graph, snapshot

    before = snapshot([_sample("source", "frontend", "v1", "backend-v2", "v2", "200", 10)])
    after_pages = [
        "# TYPE istio_requests_total counter\n" + "\n".join([
            _sample("source", "frontend", "v1", "backend-v2", "v2", "200", 30),
            _sample("source", "frontend", "v1", "backend-v2", "v2", "503", 20),
            _sample("source", "frontend", "v1", "backend-v1", "v1", "200", 40),
        ]),
        "\n".join([  # the callees' own sidecars: they know the mTLS state, not the caller's version
            _sample("destination", "frontend", "unknown", "backend-v2", "v2", "200", 20, "mutual_tls"),
            _sample("destination", "frontend", "unknown", "backend-v2", "v2", "503", 25, "mutual_tls"),
            _sample("destination", "frontend", "unknown", "backend-v1", "v1", "200", 40, "none"),
            _sample("destination", "unknown", "unknown", "frontend", "unknown", "200", 8, "none", "frontend"),
        ]),
    ]
    graph = service_graph(before, snapshot(after_pages), seconds=10.0)
    v2 = graph.edge("frontend (v1)", "backend-v2 (v2)")
    assert v2.rate == 4.0 and v2.error_rate == 0.5 and v2.mtls  # 40 new requests, caller's view
    v1 = graph.edge("frontend (v1)", "backend-v1 (v1)")
    assert v1.rate == 4.0 and v1.error_rate == 0 and not v1.mtls
    outside = graph.edge("unknown", "frontend (v1)")  # a caller without a sidecar: only the callee saw it
    assert outside.rate == 0.8
    assert "backend-v2 (v2)" in graph.nodes and "frontend (v1)" in graph.table()
    with pytest.raises(KeyError, match="no edge"):
        graph.edge("backend-v1 (v1)", "frontend (v1)")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    draw_service_graph(graph, ax)
    assert len(ax.patches) == len(graph.nodes)
    plt.close(fig)
    with pytest.raises(ValueError, match="seconds"):
        service_graph(before, before, 0)


def test_service_graph_reads_escaped_label_values_back():
    """Label values with a backslash, a quote or a newline, written by prometheus_client's own
    exposition (as the sidecars write them), come back as they were."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from labkit.widgets.service_graph import parse_requests_total

    registry = CollectorRegistry()
    counter = Counter("istio_requests", "requests", ["source_workload", "request_path"], registry=registry)
    odd = {"source_workload": 'C:\\new "app"', "request_path": "line1\nline2\\n"}
    counter.labels(**odd).inc(3)
    counter.labels(source_workload="plain", request_path="/").inc()
    samples = parse_requests_total(generate_latest(registry).decode())
    assert samples == {tuple(sorted(odd.items())): 3.0,
                       (("request_path", "/"), ("source_workload", "plain")): 1.0}
