"""The app proxy worker's answers to a browser are the control panel's styled error pages with
a way back to the web UI (unknown circuit, refused, app down, bad setup link); API clients
(``Accept: application/json``) keep their JSON."""
import httpx
from worker_support import circuit, free_port, run, running_worker, upstream_app

from appproxy.worker.http1 import error_page

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
API = {"Accept": "application/json"}
WEBUI = "https://panel.example.com"


def assert_styled_page(response, status: int, words: str, back: str = WEBUI):
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert "<main>" in html and "<h1>" in html and "<style>" in html
    assert words in html
    assert f'href="{back}/ui/sessions/" id="way-back"' in html, "a way back to the web UI"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in csp, "the page runs no script"


def test_an_unknown_circuit_answers_a_browser_with_the_styled_page_and_an_api_client_with_json():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)

        async def scenario():
            async with running_worker([c], webui_url=WEBUI) as (worker, coordinator), \
                    httpx.AsyncClient(timeout=5) as client:
                url = f"http://127.0.0.1:{c['port']}/lab"
                assert (await client.get(url, headers=BROWSER)).status_code == 200
                coordinator.set([])
                await worker.sync()
                page = await client.get(url, headers=BROWSER)
                assert_styled_page(page, 404, "open the app again from the session page")
                api = await client.get(url, headers=API)
                assert api.status_code == 404 and api.headers["content-type"] == "application/json"
                assert api.json()["error"] == "no-circuit" and "<" not in api.text

        run(scenario())


def test_a_refused_browser_and_a_down_app_get_the_styled_page_with_the_way_back():
    with upstream_app() as app_port:
        fenced = circuit(port=free_port(), target_port=app_port)
        dead = circuit(port=free_port(), target_port=free_port(), public=True)

        async def scenario():
            async with running_worker([fenced, dead], webui_url=WEBUI), httpx.AsyncClient(timeout=5) as client:
                refused = await client.get(f"http://127.0.0.1:{fenced['port']}/", headers=BROWSER)
                assert_styled_page(refused, 403, "needs a permit")
                down = await client.get(f"http://127.0.0.1:{dead['port']}/", headers=BROWSER)
                assert_styled_page(down, 502, "does not answer")
                as_json = await client.get(f"http://127.0.0.1:{dead['port']}/", headers=API)
                assert as_json.status_code == 502 and as_json.json()["error"] == "upstream-unreachable"

        run(scenario())


def test_a_bad_setup_link_answers_the_styled_page_and_json_to_an_api_client():
    async def scenario():
        async with running_worker([], webui_url=WEBUI) as (worker, _), httpx.AsyncClient(timeout=5) as client:
            setup = f"http://127.0.0.1:{worker.config.api_port}/setup"
            page = await client.get(setup, params={"token": "not-a-token"}, headers=BROWSER)
            assert_styled_page(page, 403, "This app link is not valid")
            api = await client.get(setup, params={"token": "not-a-token"}, headers=API)
            assert api.status_code == 403 and api.json()["error"] == "setup-token-invalid"

    run(scenario())


def test_the_way_back_defaults_to_the_coordinator_url():
    async def scenario():
        async with running_worker([]) as (worker, _), httpx.AsyncClient(timeout=5) as client:
            assert worker.config.webui_url == "http://127.0.0.1:9"
            page = await client.get(f"http://127.0.0.1:{worker.config.api_port}/setup", params={"token": "x"},
                                    headers=BROWSER)
            assert_styled_page(page, 403, "not valid", back="http://127.0.0.1:9")

    run(scenario())


def test_the_message_and_the_way_back_are_escaped():
    body = error_page(404, "<script>alert(1)</script>", back='https://x.example/"><b>').decode()
    assert "<script>alert" not in body and "&lt;script&gt;" in body
    assert '"><b>' not in body
