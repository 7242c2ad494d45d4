"""``corral.http.coalesce``: a response head waits for the first body bytes, at most until the loop's next turn."""

from __future__ import annotations

import asyncio

from corral.http.coalesce import HeadWithBody


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7


def run(body: object) -> None:
    asyncio.run(body)  # type: ignore[arg-type]


def holding() -> tuple[Recorder, HeadWithBody]:
    """A recorder and the head-holder in front of it, with the head already written; inside a running loop."""
    real = Recorder()
    t = HeadWithBody(real, asyncio.get_running_loop())
    t.write(b"HEAD")
    return real, t


def test_head_and_first_body_bytes_leave_in_one_write() -> None:
    async def main() -> None:
        real, t = holding()
        assert real.writes == []
        t.write(b"body1")
        t.write(b"body2")
        assert real.writes == [b"HEADbody1", b"body2"]
        assert t.write == real.write  # the stream's later writes skip the holder
        await asyncio.sleep(0)  # the scheduled flush finds nothing held
        assert real.writes == [b"HEADbody1", b"body2"]

    run(main())


def test_a_head_alone_goes_out_on_the_next_loop_turn() -> None:
    async def main() -> None:
        real, t = holding()  # a stream whose first bytes are not ready yet
        await asyncio.sleep(0)
        assert real.writes == [b"HEAD"]
        t.write(b"later")
        assert real.writes == [b"HEAD", b"later"]

    run(main())


def test_close_sends_what_is_held_first() -> None:
    async def main() -> None:
        real, t = holding()  # a HEAD request's answer: no body write follows
        t.close()
        assert real.writes == [b"HEAD"] and real.closed
        await asyncio.sleep(0)
        assert real.writes == [b"HEAD"]

    run(main())


def test_nothing_is_written_to_a_closing_connection_and_the_rest_passes_through() -> None:
    async def main() -> None:
        real, t = holding()
        real.closed = True  # the client went away
        await asyncio.sleep(0)
        assert real.writes == [] and t.is_closing()
        assert t.get_write_buffer_size() == 7  # anything else is the transport's

    run(main())
