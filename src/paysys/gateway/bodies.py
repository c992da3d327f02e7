"""Request bodies at the gateway: nothing goes upstream while the client is still sending.

api-contracts §2.1: a body of at most `buffer_limit` bytes (`MAX_BODY_BYTES`, 1 MiB) is read
completely before the upstream request starts; a larger one (only `PUT/PATCH /api/profile`,
avatar data URLs, §6) is streamed on only after its first `STREAM_AFTER` bytes arrived (when its
`Content-Length` announces it) or after `buffer_limit` bytes (chunked, size unknown). Until
then the request holds no upstream connection and no pool slot, so clients that stall inside
their bodies cost the services nothing. The body deadline (408) and the body limit (413) are
enforced outside the proxy (the server protocol and `BodyLimitMiddleware`); both end a body by
a `http.disconnect`, after which nothing is forwarded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.types import Receive

STREAM_AFTER = 64 * 1024


class ClientGone(Exception):
    """The client disconnected while its body was being forwarded."""


class StreamedBody:
    """The rest of a large body, forwarded as it arrives (after the part already read)."""

    __slots__ = ("gone", "head", "receive")

    def __init__(self, head: list[bytes], receive: Receive) -> None:
        self.head = head
        self.receive = receive
        self.gone = False  # the client disconnected mid-body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.head:
            yield chunk
        self.head = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


async def read_more(
    first: bytes, receive: Receive, declared: int | None, buffer_limit: int
) -> bytes | StreamedBody | None:
    """The body of a request whose first ASGI message (`first`) said more is coming (a body in
    one message, the usual case, needs no call): the whole bytes, a `StreamedBody` for a large
    one, or None when the client went away (or the body was refused) before it was complete."""
    # A body announced as large streams after its first 64 KiB; one of unknown size once it has
    # proved larger than the buffer limit.
    large = declared is not None and declared > buffer_limit
    stream_at = STREAM_AFTER if large else buffer_limit + 1
    chunks = [first]
    size = len(first)
    while size < stream_at:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
    return StreamedBody(chunks, receive)
