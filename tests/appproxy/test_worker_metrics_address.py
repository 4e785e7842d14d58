"""A proxy worker reports where its /metrics is served, and that address answers."""
from __future__ import annotations

import httpx
from worker_support import free_port, run, running_worker


def test_the_worker_registers_the_address_of_its_metrics_and_serves_them_there():
    async def scenario():
        api_port = free_port()
        async with running_worker(api_port=api_port) as (worker, coordinator):
            address = coordinator.registrations[0]["metrics_address"]
            assert address == f"127.0.0.1:{api_port}"
            async with httpx.AsyncClient(trust_env=False) as client:
                response = await client.get(f"http://{address}/metrics")
            assert response.status_code == 200
            assert "appproxy_alive_circuits" in response.text

    run(scenario())


def test_a_separate_metrics_port_is_the_one_reported():
    async def scenario():
        metrics_port = free_port()
        async with running_worker(metrics_port=metrics_port) as (worker, coordinator):
            address = coordinator.registrations[0]["metrics_address"]
            assert address == f"127.0.0.1:{metrics_port}"
            async with httpx.AsyncClient(trust_env=False) as client:
                assert (await client.get(f"http://{address}/metrics")).status_code == 200

    run(scenario())


def test_a_wildcard_api_host_is_reported_as_a_wildcard_for_the_coordinator_to_fill_in():
    async def scenario():
        api_port = free_port("0.0.0.0")
        async with running_worker(api_port=api_port, api_host="0.0.0.0") as (worker, coordinator):
            assert coordinator.registrations[0]["metrics_address"] == f"0.0.0.0:{api_port}"

    run(scenario())
