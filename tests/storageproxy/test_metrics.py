"""The storage proxy's own /metrics (--metrics-listen) against the real daemon: the volume and
request families after real operations, route patterns as labels, and nothing else served there."""
from __future__ import annotations

import os
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from storageproxy_support import start_storage_proxy

from storageproxy.config import ConfigError, load_config

from .conftest import SECRET, new_vfid

VOLUME_FAMILIES = ("backendai_storage_volume_metric_last_updated_timestamp", "backendai_storage_volume_capacity_bytes",
                   "backendai_storage_volume_used_bytes", "backendai_storage_volume_available_bytes")


def scrape(proxy) -> dict[str, list]:
    response = httpx.get(proxy.metrics_url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(families: dict, sample_name: str, **labels) -> float:
    for sample in (s for samples in families.values() for s in samples):
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return 0.0


def observed(proxy, volume: str) -> dict:
    """The scrape once the start-up measurement of ``volume`` is recorded (it runs in the background)."""
    deadline = time.monotonic() + 20
    while True:
        families = scrape(proxy)
        if value(families, "backendai_storage_volume_stats_observe_total", volume=volume, result="success"):
            return families
        assert time.monotonic() < deadline, "the volume was never measured"
        time.sleep(0.1)


@pytest.fixture
def quiet_proxy(volumes, tmp_path):
    """A proxy that measures its volumes once at start-up (then every hour)."""
    handle = start_storage_proxy(volumes, SECRET, log_path=tmp_path / "proxy.log",
                                 extra_args=("--metrics-interval", "3600"))
    try:
        yield handle
    finally:
        handle.stop()


def test_it_serves_the_volume_families_after_a_volume_operation(quiet_proxy, volumes):
    families = observed(quiet_proxy, "v1")
    observed(quiet_proxy, "v2")
    headers = quiet_proxy.auth_headers
    answer = httpx.get(quiet_proxy.manager_url + "/volume/performance-metric", params={"volume": "v1"},
                       headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    after = scrape(quiet_proxy)
    assert value(after, "backendai_storage_volume_stats_observe_total", volume="v1", result="success") == \
        value(families, "backendai_storage_volume_stats_observe_total", volume="v1", result="success") + 1
    assert value(after, "backendai_storage_volume_stats_observe_duration_seconds_count", volume="v1") == \
        value(families, "backendai_storage_volume_stats_observe_duration_seconds_count", volume="v1") + 1
    for name in VOLUME_FAMILIES:
        assert {s.labels["volume"] for s in after[name]} == {"v1", "v2"}, name
    fs = os.statvfs(volumes["v1"])
    assert value(after, "backendai_storage_volume_capacity_bytes", volume="v1") == fs.f_blocks * fs.f_frsize
    assert value(after, "backendai_storage_volume_capacity_bytes", volume="v1") == \
        answer.json()["metric"]["capacity_bytes"]
    assert 0 < value(after, "backendai_storage_volume_used_bytes", volume="v1") <= fs.f_blocks * fs.f_frsize
    stamp = value(after, "backendai_storage_volume_metric_last_updated_timestamp", volume="v1")
    assert time.time() - 60 < stamp <= time.time() + 1


def test_it_counts_requests_by_route_pattern_and_status(quiet_proxy):
    headers = quiet_proxy.auth_headers
    vfid = new_vfid()
    with httpx.Client(base_url=quiet_proxy.manager_url, headers=headers, timeout=30) as manager:
        assert manager.post("/folder/create", json={"volume": "v1", "vfid": vfid}).status_code == 204
        assert manager.post("/folder/create", json={"volume": "v1", "vfid": new_vfid()}).status_code == 204
        assert manager.post("/folder/create", json={"volume": "nope", "vfid": vfid}).status_code == 404
        assert manager.get(f"/no/such/{vfid}").status_code == 404
        assert manager.get("/metrics").status_code == 404  # not served on the authenticated API
    assert httpx.get(quiet_proxy.manager_url + "/status").status_code == 401
    assert httpx.get(quiet_proxy.client_url + "/download", params={"token": "forged"}).status_code == 403
    families = scrape(quiet_proxy)
    count = "backendai_storage_api_request_count_total"
    assert value(families, count, api="manager", method="POST", endpoint="/folder/create", status_code="204") == 2
    assert value(families, count, api="manager", method="POST", endpoint="/folder/create", status_code="404") == 1
    assert value(families, count, api="manager", method="GET", endpoint="unmatched", status_code="404") == 2
    assert value(families, count, api="manager", method="GET", endpoint="/status", status_code="401") == 1
    assert value(families, count, api="client", method="GET", endpoint="/download", status_code="403") == 1
    assert value(families, "backendai_storage_api_request_duration_sec_count", api="manager", method="POST",
                 endpoint="/folder/create") == 3
    endpoints = {s.labels["endpoint"] for s in families["backendai_storage_api_request_count"]}
    assert not any(vfid.split("/")[1] in e or "no/such" in e for e in endpoints), endpoints


@pytest.mark.parametrize("path", ["/", "/status", "/health", "/metrics/x", "/metrics/../status", "/%2e%2e/metrics",
                                  "/volumes", "/upload", "//metrics"])
def test_it_answers_404_for_any_other_path(proxy, path):
    response = httpx.get(f"http://127.0.0.1:{proxy.metrics_port}{path}", timeout=10)
    assert response.status_code == 404, (path, response.status_code)
    assert b"backendai_" not in response.content


@pytest.mark.parametrize("method, status", [("POST", 405), ("PUT", 405), ("PATCH", 405), ("DELETE", 405),
                                            ("BREW", 400)])  # a method HTTP does not know: the parser's 400
def test_it_answers_405_for_other_methods_of_metrics(proxy, method, status):
    response = httpx.request(method, proxy.metrics_url, content=b"x" * 10, timeout=10)
    assert response.status_code == status
    assert b"backendai_" not in response.content


def test_it_answers_head_without_a_body_and_needs_no_secret(proxy):
    response = httpx.head(proxy.metrics_url, timeout=10)
    assert response.status_code == 200 and response.content == b""
    assert "backendai_storage_api_request_count_total" in httpx.get(proxy.metrics_url, timeout=10).text


def test_it_names_its_metrics_address_in_status(proxy, manager):
    assert manager.get("/status").json()["metrics_address"] == f"127.0.0.1:{proxy.metrics_port}"


def test_it_serves_no_metrics_when_the_listener_is_off(volumes, tmp_path):
    handle = start_storage_proxy(volumes, SECRET, log_path=tmp_path / "proxy.log",
                                 extra_args=("--metrics-listen", "off"))
    try:
        status = httpx.get(handle.manager_url + "/status", headers=handle.auth_headers, timeout=10).json()
        assert "metrics_address" not in status
        with pytest.raises(httpx.ConnectError):
            httpx.get(handle.metrics_url, timeout=5)
    finally:
        handle.stop()


@pytest.mark.parametrize("flag, raw", [("--metrics-listen", "nohost"), ("--metrics-listen", "127.0.0.1:70000"),
                                       ("--metrics-listen", ":80"), ("--metrics-interval", "0"),
                                       ("--metrics-interval", "soon")])
def test_a_bad_metrics_option_names_the_flag(tmp_path, flag, raw):
    with pytest.raises(ConfigError, match=flag):
        load_config(["--volume", f"v1={tmp_path}", "--secret", SECRET, flag, raw], env={})


@pytest.mark.parametrize("raw", ["0.5", "3601", "1e9"])
def test_a_metrics_interval_outside_one_second_to_an_hour_is_refused_naming_the_option(tmp_path, raw):
    with pytest.raises(ConfigError, match=r"--metrics-interval: expected 1 to 3600 seconds"):
        load_config(["--volume", f"v1={tmp_path}", "--secret", SECRET, "--metrics-interval", raw], env={})
    with pytest.raises(ConfigError, match="BAI_STORAGE_METRICS_INTERVAL"):
        load_config(["--volume", f"v1={tmp_path}", "--secret", SECRET], env={"BAI_STORAGE_METRICS_INTERVAL": raw})


@pytest.mark.parametrize("raw, seconds", [("1", 1.0), ("3600", 3600.0), ("2.5", 2.5)])
def test_a_metrics_interval_within_the_bounds_is_taken(tmp_path, raw, seconds):
    config = load_config(["--volume", f"v1={tmp_path}", "--secret", SECRET, "--metrics-interval", raw], env={})
    assert config.metrics_interval == seconds


def test_the_metrics_listener_defaults_to_localhost(tmp_path):
    config = load_config(["--volume", f"v1={tmp_path}", "--secret", SECRET], env={})
    assert config.metrics_listen == ("127.0.0.1", 6023)
    config = load_config(["--volume", f"v1={tmp_path}", "--secret", SECRET],
                         env={"BAI_STORAGE_METRICS_LISTEN": "[::1]:0"})
    assert config.metrics_listen == ("::1", 0)
