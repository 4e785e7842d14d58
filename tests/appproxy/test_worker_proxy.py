"""The worker's data plane in-process (no Django): permits, headers, streaming,
upgrades, raw TCP, wildcard routing, the setup endpoint and metrics."""
import asyncio
import hashlib
import json
import time

import httpx
import pytest
from worker_support import OWNER, SECRET, FakeCoordinator, circuit, free_port, run, running_worker, upstream_app

from appproxy import tokens


def permit_cookie(c, user=OWNER, ttl=600, secret=SECRET, now=None):
    return {tokens.permit_cookie_name(c["id"]): tokens.make_permit(secret, c["id"], user, ttl, now=now)}


def cookie_header(cookies: dict) -> dict:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def test_a_page_comes_through_with_a_permit_and_is_refused_without_one():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port)

        async def scenario():
            async with running_worker([c]), httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{c['port']}/lab?x=1"
                ok = await client.get(url, headers=cookie_header(permit_cookie(c)))
                assert ok.status_code == 200 and b"bai-test http app at /lab?x=1" in ok.content
                missing = await client.get(url)
                assert missing.status_code == 403 and "needs a permit" in missing.text
                assert missing.headers["content-type"].startswith("text/html")
                as_json = await client.get(url, headers={"Accept": "application/json"})
                assert as_json.json()["error"] == "permit-missing"
                stranger = await client.get(url, headers=cookie_header(permit_cookie(c, user="someone-else")))
                assert stranger.status_code == 403 and "does not admit you" in stranger.text
                forged = await client.get(url, headers=cookie_header(permit_cookie(c, secret="not-the-secret")))
                assert forged.status_code == 403 and "bad signature" in forged.text
                expired = await client.get(url, headers=cookie_header(permit_cookie(c, ttl=10, now=time.time() - 60)))
                assert expired.status_code == 403 and "expired" in expired.text
                other = circuit(port=1, target_port=app_port)
                borrowed = {tokens.permit_cookie_name(c["id"]): tokens.make_permit(SECRET, other["id"], OWNER, 600)}
                wrong_app = await client.get(url, headers=cookie_header(borrowed))
                assert wrong_app.status_code == 403 and "another app" in wrong_app.text

        run(scenario())


def test_public_circuits_need_no_permit_but_the_address_list_still_applies():
    with upstream_app() as app_port:
        public = circuit(port=free_port(), target_port=app_port, public=True)
        fenced = circuit(port=free_port(), target_port=app_port, public=True, ips=["127.0.0.1/32"])

        async def scenario():
            async with running_worker([public, fenced]):
                async with httpx.AsyncClient() as client:
                    assert (await client.get(f"http://127.0.0.1:{public['port']}/")).status_code == 200
                    assert (await client.get(f"http://127.0.0.1:{fenced['port']}/")).status_code == 200
                transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
                async with httpx.AsyncClient(transport=transport) as elsewhere:
                    refused = await elsewhere.get(f"http://127.0.0.1:{fenced['port']}/")
                    assert refused.status_code == 403 and "127.0.0.2 may not use this app" in refused.text
                    assert (await elsewhere.get(f"http://127.0.0.1:{public['port']}/")).status_code == 200

        run(scenario())


def test_hop_by_hop_headers_are_dropped_and_forwarding_headers_added():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port)
        name = tokens.permit_cookie_name(c["id"])

        async def scenario():
            async with running_worker([c]):
                reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
                permit = permit_cookie(c)[name]
                writer.write(
                    f"GET /headers HTTP/1.1\r\nHost: apps.example:{c['port']}\r\nConnection: keep-alive, X-Hop\r\n"
                    f"X-Hop: drop me\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n"
                    f"X-Forwarded-For: 10.9.9.9\r\nX-End-To-End: kept\r\n"
                    f"Cookie: theme=dark; {name}={permit}; {tokens.PERMIT_COOKIE_PREFIX}other=x\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
                             .split(b":")[1])
                body = json.loads(await reader.readexactly(length))
                writer.close()
                return head.decode(), {k.lower(): v for k, v in body["headers"]}

        head, seen = run(scenario())
        for hop in ("x-hop", "keep-alive", "te", "proxy-authorization", "connection"):
            assert hop not in seen, hop
        assert seen["x-end-to-end"] == "kept"
        assert seen["host"].startswith("apps.example:")
        assert seen["x-forwarded-for"] == "127.0.0.1", "a chain the client wrote itself is not passed on"
        assert seen["x-real-ip"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"].startswith("apps.example")
        assert seen["cookie"] == "theme=dark", "the proxy's permits never reach the app"
        assert "X-Secret-Hop" not in head and "Keep-Alive" not in head


def test_a_chunked_response_streams_before_the_app_finishes_it():
    with upstream_app() as app_port:
        from worker_support import AppHandler

        c = circuit(port=free_port(), target_port=app_port, public=True)

        async def scenario():
            async with running_worker([c]), httpx.AsyncClient(timeout=10) as client:
                async with client.stream("GET", f"http://127.0.0.1:{c['port']}/chunked") as response:
                    assert response.headers["transfer-encoding"] == "chunked"
                    chunks = response.aiter_raw()
                    first = await chunks.__anext__()
                    assert first == b"first", "the first chunk arrived while the app still holds the last"
                    AppHandler.release.set()
                    rest = b"".join([part async for part in chunks])
                    assert rest == b"last"

        run(scenario())


def test_large_bodies_stream_both_ways_and_the_connection_is_reused():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)
        size = 24 * 1024 * 1024 + 7

        async def body():
            block = b"x" * 65536
            sent = 0
            while sent < size:
                part = block[:min(len(block), size - sent)]
                sent += len(part)
                yield part

        async def scenario():
            async with running_worker([c]) as (worker, _), httpx.AsyncClient(timeout=60) as client:
                base = f"http://127.0.0.1:{c['port']}"
                chunked = await client.post(base + "/upload", content=body())
                expected = hashlib.sha256(b"x" * size).hexdigest()
                assert chunked.json() == {"size": size, "sha256": expected}
                fixed = await client.post(base + "/upload", content=b"y" * 100_000)
                assert fixed.json()["size"] == 100_000
                digest, total = hashlib.sha256(), 0
                async with client.stream("GET", base + f"/big/{size}") as response:
                    async for part in response.aiter_bytes():
                        digest.update(part)
                        total += len(part)
                assert total == size
                closing = await client.get(base + "/close-delimited")
                assert closing.text == "until the end" and closing.headers["transfer-encoding"] == "chunked"
                again = await client.get(base + "/")
                assert again.status_code == 200
                assert len(worker.proxy.connections) == 1, "one keep-alive client connection served them all"

        run(scenario(), timeout=120)


def test_websockets_are_relayed_after_the_upgrade():
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import InvalidStatus

    async def echo(ws):
        async for message in ws:
            await ws.send(f"echo:{message}")

    async def scenario():
        async with serve(echo, "127.0.0.1", 0) as server:
            target = server.sockets[0].getsockname()[1]
            c = circuit(port=free_port(), target_port=target)
            name, value = next(iter(permit_cookie(c).items()))
            async with running_worker([c]) as (worker, _):
                async with connect(f"ws://127.0.0.1:{c['port']}/ws",
                                   additional_headers={"Cookie": f"{name}={value}"}) as ws:
                    for text in ("hello", "x" * 100_000):
                        await ws.send(text)
                        assert await ws.recv() == f"echo:{text}"
                    exposition = worker.metrics.exposition().decode()
                    assert "appproxy_pending_connections_ws" in exposition
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(f"ws://127.0.0.1:{c['port']}/ws"):
                        pass
                assert refused.value.response.status_code == 403

    run(scenario())


def test_raw_tcp_is_relayed_in_port_mode_and_fenced_by_address():
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def scenario():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        target = server.sockets[0].getsockname()[1]
        c = circuit(port=free_port(), target_port=target, protocol="tcp", app="echo")
        fenced = circuit(port=free_port(), target_port=target, protocol="tcp", ips=["127.0.0.1"], app="fenced")
        async with running_worker([c, fenced]):
            reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
            writer.write(b"ping over tcp")
            assert await reader.readexactly(13) == b"ping over tcp"
            writer.write_eof()
            assert await reader.read() == b""
            reader, writer = await asyncio.open_connection("127.0.0.1", fenced["port"], local_addr=("127.0.0.2", 0))
            writer.write(b"hello")
            try:
                assert await reader.read() == b"", "a client outside allowed_client_ips is cut off"
            except ConnectionResetError:
                pass  # cut off with its bytes unread
        server.close()

    run(scenario())


def test_wildcard_mode_routes_by_host():
    with upstream_app() as app_port:
        c = circuit(subdomain="jupyter-abc", target_port=app_port)
        traffic = free_port()

        async def scenario():
            async with running_worker([c], mode="wildcard", wildcard_domain="apps.test",
                                      wildcard_port=traffic), httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{traffic}/tree"
                ok = await client.get(url, headers={"Host": f"jupyter-abc.apps.test:{traffic}",
                                               **cookie_header(permit_cookie(c))})
                assert ok.status_code == 200 and b"/tree" in ok.content
                unknown = await client.get(url, headers={"Host": "nothing.apps.test"})
                assert unknown.status_code == 404 and "No app is served" in unknown.text
                outside = await client.get(url, headers={"Host": "example.org"})
                assert outside.status_code == 404

        run(scenario())


def test_the_setup_link_sets_a_permit_once_and_refuses_bad_links():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port)

        async def scenario():
            async with running_worker([c]) as (worker, coordinator), httpx.AsyncClient() as client:
                api = f"http://127.0.0.1:{worker.config.api_port}"
                token = tokens.make_setup_token(SECRET, c["id"], OWNER, 60, redirect="/lab")
                setup = await client.get(f"{api}/setup", params={"token": token})
                assert setup.status_code == 302
                assert setup.headers["location"] == f"http://127.0.0.1:{c['port']}/lab"
                cookie = setup.headers["set-cookie"]
                assert cookie.startswith(tokens.permit_cookie_name(c["id"]) + "=")
                assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
                page = await client.get(setup.headers["location"])
                assert page.status_code == 200 and b"/lab" in page.content
                again = await client.get(f"{api}/setup", params={"token": token})
                assert again.status_code == 403 and "already used" in again.text
                alias = await client.get(f"{api}/v2/proxy/{tokens.make_setup_token(SECRET, c['id'], OWNER, 60)}/x")
                assert alias.status_code == 302
                tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
                assert (await client.get(f"{api}/setup", params={"token": tampered})).status_code == 403
                old = tokens.make_setup_token(SECRET, c["id"], OWNER, 10, now=time.time() - 60)
                expired = await client.get(f"{api}/setup", params={"token": old})
                assert expired.status_code == 403 and "expired" in expired.text
                syncs = coordinator.syncs
                unknown = tokens.make_setup_token(SECRET, "00000000-0000-0000-0000-000000000000", OWNER, 60)
                gone = await client.get(f"{api}/setup", params={"token": unknown})
                assert gone.status_code == 404 and coordinator.syncs > syncs, "a miss asks the coordinator first"
                health = await client.get(f"{api}/health")
                assert health.json()["circuits"] == 1 and health.json()["status"] == "ok"
                metrics = (await client.get(f"{api}/metrics")).text
                for name in ("appproxy_requests_received_http_total", "appproxy_responses_sent_http_total",
                             "appproxy_upstream_request_sent_http_total", "appproxy_pending_requests_http",
                             "appproxy_alive_circuits", "appproxy_circuits_created_total"):
                    assert name in metrics, name

        run(scenario())


def test_a_removed_circuit_answers_404_at_once_and_an_unreachable_app_502():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)
        dead = circuit(port=free_port(), target_port=free_port(), public=True)

        async def scenario():
            async with running_worker([c, dead]) as (worker, coordinator), httpx.AsyncClient(timeout=5) as client:
                assert (await client.get(f"http://127.0.0.1:{c['port']}/")).status_code == 200
                down = await client.get(f"http://127.0.0.1:{dead['port']}/")
                assert down.status_code == 502 and "does not answer" in down.text
                coordinator.set([dead])
                await worker.sync()
                gone = await client.get(f"http://127.0.0.1:{c['port']}/")
                assert gone.status_code == 404 and "session may have ended" in gone.text
                await worker.heartbeat()
                assert coordinator.heartbeats[-1][0].keys() >= {dead["id"]}, "access times are reported"

        run(scenario())


def test_a_hint_must_be_signed_and_makes_the_worker_sync():
    async def scenario():
        async with running_worker([]) as (worker, coordinator), httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{worker.config.api_port}/v1/hint"
            body = b'{"revision": 5}'
            bad = await client.post(url, content=body, headers={"X-AppProxy-Signature": "t=1,s=00"})
            assert bad.status_code == 403
            syncs = coordinator.syncs
            good = await client.post(url, content=body, headers={"X-AppProxy-Signature": tokens.sign_hint(SECRET, body)})
            assert good.status_code == 202
            for _ in range(50):
                if coordinator.syncs > syncs:
                    break
                await asyncio.sleep(0.02)
            assert coordinator.syncs > syncs

    run(scenario())


def test_shutdown_says_goodbye_to_the_coordinator():
    async def scenario():
        async with running_worker([]) as (worker, coordinator):
            pass
        return coordinator

    assert run(scenario()).shutdowns == 1


# --- issue 9: forwarded addresses, header injection, cookie flags, one-time links ----------------

async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes no HTTP client would send; the whole answer (the worker closes after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


def test_trusted_proxies_come_from_the_flag_or_the_environment_and_default_to_nobody():
    import ipaddress

    from appproxy.worker.config import ConfigError, load_config

    base = ["--coordinator-url", "http://127.0.0.1:9", "--port-range", "40000-40001"]
    assert load_config(base, env={}).trusted_proxies == ()
    config = load_config(base, env={"BAI_PROXY_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"})
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32"))
    with pytest.raises(ConfigError, match="--trusted-proxies"):
        load_config([*base, "--trusted-proxies", "not-a-network"], env={})


def test_forwarded_addresses_are_believed_only_from_trusted_proxies():
    with upstream_app() as app_port:
        fenced = circuit(port=free_port(), target_port=app_port, public=True, ips=["10.9.9.9/32"])
        spoof = {"X-Forwarded-For": "10.9.9.9", "X-Real-IP": "10.9.9.9"}

        async def scenario(trusted):
            options = {"trusted_proxies": trusted} if trusted else {}
            async with running_worker([fenced], **options), httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{fenced['port']}/headers"
                return [await client.get(url, headers=spoof),
                        await client.get(url, headers={"X-Forwarded-For": "10.9.9.9, 192.0.2.1"})]

        for untrusted in (None, "127.0.0.2/32,10.0.0.0/8"):
            spoofed, chained = run(scenario(untrusted))
            assert spoofed.status_code == 403 and "127.0.0.1 may not use this app" in spoofed.text, untrusted
            assert chained.status_code == 403
        believed, chained = run(scenario("127.0.0.0/8"))
        assert believed.status_code == 200, believed.text
        seen = {k.lower(): v for k, v in believed.json()["headers"]}
        assert seen["x-forwarded-for"] == "10.9.9.9, 127.0.0.1" and seen["x-real-ip"] == "10.9.9.9"
        assert chained.status_code == 403 and "192.0.2.1 may not use this app" in chained.text, \
            "the right-most hop that is not a trusted proxy is the client"


def test_a_setup_redirect_is_a_same_origin_path_and_never_splits_the_answer():
    c = circuit(port=free_port(), target_port=free_port())

    async def scenario():
        async with running_worker([c]) as (worker, coordinator):
            port = worker.config.api_port
            answers = {}
            for target in ("/lab\r\nSet-Cookie: evil=1", "/lab\nX-Evil: 1", "//evil.example", "/\\evil.example",
                           "https://evil.example/", "/a b"):
                # make_setup_token refuses these: sign the claims directly, as a compromised issuer could
                token = tokens.sign(SECRET, "setup", {"c": c["id"], "u": OWNER, "e": int(time.time() + 60),
                                                      "n": target.encode().hex(), "r": target})
                answers[target] = await raw_exchange(port, f"GET /setup?token={token} HTTP/1.1\r\n"
                                                           f"Host: 127.0.0.1\r\n\r\n".encode())
            smuggled = await raw_exchange(port, b"GET /setup?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                b"X-Forwarded-Proto: https\nSet-Cookie: evil=1\r\n\r\n")
            control = await raw_exchange(port, b"GET /setup?token=\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return answers, smuggled, control, coordinator.redeemed

    answers, smuggled, control, redeemed = run(scenario())
    for target, answer in answers.items():
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 400 "), (target, head)
        assert b"evil" not in head.lower() and b"location" not in head.lower() and b"set-cookie" not in head.lower()
    assert not redeemed, "a refused link is not used up"
    for answer in (smuggled, control):
        assert answer.startswith(b"HTTP/1.1 400 ") and b"set-cookie" not in answer.lower()


def test_the_permit_cookie_is_http_only_lax_and_secure_over_tls():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port)

        async def setup_cookie(headers=None, **options):
            async with running_worker([c], **options) as (worker, _), httpx.AsyncClient() as client:
                token = tokens.make_setup_token(SECRET, c["id"], OWNER, 60, redirect="/lab")
                answer = await client.get(f"http://127.0.0.1:{worker.config.api_port}/setup",
                                          params={"token": token}, headers=headers or {})
                assert answer.status_code == 302, answer.text
                return [p.strip() for p in answer.headers["set-cookie"].split(";")]

        plain = run(setup_cookie())
        assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(plain) and "Secure" not in plain
        assert "Secure" not in run(setup_cookie({"X-Forwarded-Proto": "https"})), "an untrusted peer's word"
        assert "Secure" in run(setup_cookie({"X-Forwarded-Proto": "https"}, trusted_proxies="127.0.0.1/32"))
        assert "Secure" in run(setup_cookie(scheme="https"))


def test_the_lax_permit_rides_the_cross_site_redirect_from_the_setup_link():
    """SameSite=Lax, not Strict: the setup link is opened from the manager's site, and the
    browser follows the worker's 302 to the app as a top-level navigation.  A Strict cookie
    is withheld on a navigation whose redirect chain began on another site, so the app's
    first page would be refused; Lax cookies ride top-level GET navigations and are still
    withheld from cross-site subresource requests and POSTs (the CSRF that matters)."""
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port)

        async def scenario():
            async with running_worker([c]) as (worker, _), httpx.AsyncClient(follow_redirects=True) as client:
                token = tokens.make_setup_token(SECRET, c["id"], OWNER, 60, redirect="/lab")
                page = await client.get(f"http://127.0.0.1:{worker.config.api_port}/setup",
                                        params={"token": token}, headers={"Referer": "http://manager.example/"})
                return page

        page = run(scenario())
        assert page.status_code == 200 and b"bai-test http app at /lab" in page.content
        assert [r.status_code for r in page.history] == [302]


def test_a_used_setup_link_stays_used_after_the_worker_restarts():
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port)
        coordinator = FakeCoordinator([c])
        token = tokens.make_setup_token(SECRET, c["id"], OWNER, 60)

        async def visit():
            async with running_worker([c], coordinator=coordinator) as (worker, _), httpx.AsyncClient() as client:
                return await client.get(f"http://127.0.0.1:{worker.config.api_port}/setup",
                                        params={"token": token}, headers={"Accept": "application/json"})

        coordinator.down = True
        unavailable = run(visit())
        assert unavailable.status_code == 503 and unavailable.json()["error"] == "coordinator-unavailable"
        coordinator.down = False
        assert run(visit()).status_code == 200, "a link the coordinator could not check is not used up"
        replayed = run(visit())  # a fresh worker: nothing in memory
        assert replayed.status_code == 403 and replayed.json()["error"] == "setup-token-used"
