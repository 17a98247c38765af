"""Lab 02's feature dashboard: each mesh feature changes what the callers get."""

from __future__ import annotations

import math

from labkit.widgets.mesh_features import features_dashboard, istio_objects


def test_without_sidecars_everything_is_plaintext_and_nobody_retries() -> None:
    d = features_dashboard()
    assert d.result is not None
    r = d.result
    assert r.plaintext_share == 1.0
    assert {o.caller: o.denied + o.refused for o in r.outcomes} == {"frontend": 0, "sleep": 0, "legacy-job": 0}
    # one of three pods fails half its requests: about a sixth of all requests fail
    assert 0.1 < r.outcome("frontend").failed < 0.25
    assert "no sidecars" in istio_objects(d.settings())


def test_retries_hide_the_flaky_pod_only_for_callers_with_a_sidecar() -> None:
    d = features_dashboard(sidecars=True)
    assert d.result is not None
    before = d.result.outcome("frontend").ok
    d.set(attempts=3)
    r = d.result
    assert r.outcome("frontend").ok > max(before, 0.99)
    assert r.outcome("legacy-job").ok < 0.9       # no sidecar, nobody retries for it
    assert r.outcome("frontend").p99_ms > r.outcome("legacy-job").p99_ms  # retries cost time


def test_strict_resets_the_plaintext_client_and_permissive_lets_it_through() -> None:
    d = features_dashboard(sidecars=True, mtls="PERMISSIVE")
    assert d.result is not None
    assert d.result.outcome("legacy-job").refused == 0 and d.result.outcome("legacy-job").plaintext
    assert not d.result.outcome("frontend").plaintext
    assert math.isclose(d.result.plaintext_share, 0.1)
    d.set(mtls="STRICT")
    assert d.result.outcome("legacy-job").refused == 1.0
    assert d.result.outcome("frontend").refused == 0


def test_deny_by_principal_needs_mutual_tls() -> None:
    d = features_dashboard(sidecars=True, authz=True)
    assert d.result is not None
    assert d.result.outcome("sleep").denied == 1.0
    assert d.result.outcome("frontend").denied == 0
    d.set(mtls="DISABLE")  # no certificate, no principal: the DENY rule cannot match
    assert d.result.outcome("sleep").denied == 0
    assert d.result.plaintext_share == 1.0
    assert "AuthorizationPolicy" in istio_objects(d.settings())


def test_outlier_detection_and_pool_limits_change_the_simulation() -> None:
    d = features_dashboard(sidecars=True)
    assert d.result is not None
    plain_ok = d.result.outcome("frontend").ok
    d.set(outlier_detection=True)
    assert d.result.meshed is not None
    assert d.result.meshed.ejections > 0
    assert d.result.outcome("frontend").ok > plain_ok
    d.set(outlier_detection=False, circuit_breaking=True, arrival_rate=400.0)
    assert d.result.meshed.count_flag("UO") > 0


def test_same_seed_same_result() -> None:
    assert features_dashboard(sidecars=True, attempts=2).result == features_dashboard(sidecars=True, attempts=2).result
