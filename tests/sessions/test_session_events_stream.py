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


def test_an_event_committed_after_a_later_one_is_still_sent(signed, owner, cluster, create_body):
    """Entries commit in their own order, not their timestamps': the kernel's TERMINATED (stamped
    later) can be read in one poll and the session's TERMINATED (stamped earlier, committed after)
    in the next.  The stream must still send it, and send every event once."""
    from datetime import timedelta

    from asgiref.sync import async_to_sync, sync_to_async
    from django.utils import timezone

    from sessions.models import Kernel, Session

    created = signed(owner).post("/session", {**create_body(), "enqueueOnly": True})
    assert created.status_code == 201, created.content
    session_id = created.json()["sessionId"]
    response = signed(owner).get(f"/events/session?sessionId={session_id}&scope=*")
    moment = timezone.now() + timedelta(seconds=1)

    def kernel_ends():
        kernel = Kernel.objects.get(session_id=session_id)
        kernel.move_to("TERMINATED", now=moment + timedelta(milliseconds=500))
        kernel.save()

    def session_ends():
        session = Session.objects.get(pk=session_id)
        assert session.move_to("TERMINATED", now=moment)
        session.save()

    async def read():
        chunks = response.streaming_content.__aiter__()
        seen = [await chunks.__anext__() for _ in range(2)]  # the opening comment, session_enqueued
        await sync_to_async(kernel_ends)()
        seen.append(await chunks.__anext__())  # kernel_terminated, stamped after the session's end
        await sync_to_async(session_ends)()
        async for chunk in chunks:
            seen.append(chunk)
        return seen

    text = "".join(c.decode() if isinstance(c, bytes) else c for c in async_to_sync(read)())
    names = [line[7:] for line in text.split("\n") if line.startswith("event: ")]
    assert "kernel_terminated" in names and "session_terminated" in names, names
    assert names[-1] == "server_close" and len(names) == len(set(names)), names
