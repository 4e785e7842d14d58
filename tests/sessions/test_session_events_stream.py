"""``GET /events/session``: every block of the stream is either a comment or a
whole event (``event:`` and JSON ``data:``), from its opening to
``server_close``, which is what the official clients' SSE readers need."""
import json

import pytest

from helpers import slug

pytestmark = pytest.mark.django_db


def blocks(response) -> list[list[str]]:
    """The stream cut at its blank lines, each block a list of lines."""
    from asgiref.sync import async_to_sync

    async def read(chunks):
        return [chunk async for chunk in chunks]

    text = b"".join(async_to_sync(read)(response.streaming_content)).decode()
    return [block.split("\n") for block in text.split("\n\n") if block]


@pytest.fixture
def cancelled(signed, owner, cluster, create_body):
    created = signed(owner).post("/session", create_body())
    assert created.status_code == 201, created.content
    session_id = created.json()["sessionId"]
    assert signed(owner).delete(f"/session/{session_id}").status_code == 200
    return session_id


@pytest.mark.parametrize("scope", ["*", "session", "session,kernel"])
def test_the_stream_opens_with_a_comment_and_holds_only_whole_events(signed, owner, cancelled, scope):
    response = signed(owner).get(f"/events/session?sessionId={cancelled}&scope={scope}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    stream = blocks(response)
    assert stream[0] == [": ok"]
    names = []
    for block in stream:
        fields = [line for line in block if not line.startswith(":")]
        if not fields:
            continue  # a comment: clients skip it
        assert fields[0].startswith("event: ") and any(f.startswith("data: ") for f in fields), block
        for line in fields:
            assert line.split(":", 1)[0] in ("event", "data", "retry"), block
        names.append(fields[0][7:])
        json.loads("\n".join(f[6:] for f in fields if f.startswith("data: ")))
    assert names[0] == "session_enqueued" and names[-1] == "server_close"
    assert "session_cancelled" in names


def test_an_unknown_scope_is_refused(signed, owner, cancelled):
    response = signed(owner).get(f"/events/session?sessionId={cancelled}&scope=everything")
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
