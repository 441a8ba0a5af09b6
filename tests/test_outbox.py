import asyncio

import pytest

from realtime.outbox import Outbox


class Transport:
    """A fake ASGI ``send``: records text frames, and can be told to stall or fail."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.calls = 0
        self.stall_on: set[str] = set()
        self.fail_on: set[str] = set()
        self.gate = asyncio.Event()
        self.cancelled: list[str] = []

    async def send(self, message: dict) -> None:
        self.calls += 1
        text = message.get("text", message["type"])
        if text in self.fail_on:
            raise OSError("connection reset")
        if text in self.stall_on:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(text)
                raise
            if text in self.fail_on:
                raise OSError("connection reset")
        self.sent.append(text)


class Overflows:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def make_outbox(transport, limit=10):
    overflow = Overflows()
    return Outbox(transport.send, limit=limit, on_overflow=overflow), overflow


def other_tasks() -> set[asyncio.Task]:
    return asyncio.all_tasks() - {asyncio.current_task()}


@pytest.mark.asyncio
async def test_sends_that_complete_at_once_are_delivered_in_order_without_a_task():
    transport = Transport()
    outbox, overflow = make_outbox(transport)
    before = other_tasks()

    for text in ["1", "2", "3"]:
        outbox.push(text)
        # Delivered during push itself, before anything is awaited.
        assert transport.sent[-1] == text

    assert transport.sent == ["1", "2", "3"]
    assert other_tasks() == before
    assert not outbox.closed
    assert overflow.count == 0


@pytest.mark.asyncio
async def test_push_wraps_text_in_a_websocket_send_message():
    messages = []

    async def send(message):
        messages.append(message)

    outbox = Outbox(send, limit=10, on_overflow=lambda: None)
    outbox.push('{"ok":true}')
    outbox.push_message({"type": "websocket.close", "code": 4004})

    assert messages == [
        {"type": "websocket.send", "text": '{"ok":true}'},
        {"type": "websocket.close", "code": 4004},
    ]


@pytest.mark.asyncio
async def test_a_suspended_send_queues_later_frames_in_order_until_it_completes():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, overflow = make_outbox(transport)

    for text in ["1", "2", "3", "4"]:
        outbox.push(text)
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    assert transport.sent == []
    assert transport.calls == 1  # later frames wait their turn instead of overtaking

    transport.gate.set()
    await outbox.flush()

    assert transport.sent == ["1", "2", "3", "4"]
    assert overflow.count == 0
    assert not outbox.closed


@pytest.mark.asyncio
async def test_a_suspended_send_is_finished_by_one_writer_task():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    before = other_tasks()

    outbox.push("1")
    outbox.push("2")

    assert len(other_tasks() - before) == 1
    transport.gate.set()
    await outbox.flush()
    await asyncio.sleep(0)
    assert other_tasks() == before


@pytest.mark.asyncio
async def test_frames_pushed_while_the_backlog_drains_keep_their_order():
    transport = Transport()
    transport.stall_on = {"1", "3"}
    outbox, _ = make_outbox(transport)

    outbox.push("1")
    outbox.push("2")
    outbox.push("3")
    transport.gate.set()
    await asyncio.sleep(0)
    outbox.push("4")
    outbox.push("5")
    await outbox.flush()

    assert transport.sent == ["1", "2", "3", "4", "5"]


@pytest.mark.asyncio
async def test_after_the_backlog_drains_sends_complete_at_once_again():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    transport.gate.set()
    await outbox.flush()
    before = other_tasks()

    outbox.push("2")

    assert transport.sent == ["1", "2"]
    assert other_tasks() == before


@pytest.mark.asyncio
async def test_a_send_suspended_on_a_bare_yield_is_finished():
    sent = []

    async def send(message):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        sent.append(message["text"])

    outbox = Outbox(send, limit=10, on_overflow=lambda: None)
    outbox.push("1")
    outbox.push("2")
    await outbox.flush()

    assert sent == ["1", "2"]


@pytest.mark.asyncio
async def test_a_send_suspended_on_a_timer_is_finished():
    sent = []

    async def send(message):
        await asyncio.sleep(0.01)
        sent.append(message["text"])

    outbox = Outbox(send, limit=10, on_overflow=lambda: None)
    outbox.push("1")
    outbox.push("2")
    await outbox.flush()

    assert sent == ["1", "2"]
    assert not outbox.closed


@pytest.mark.asyncio
async def test_a_suspended_send_reads_a_failed_future_itself():
    sent = []
    future = asyncio.get_running_loop().create_future()

    async def send(message):
        if message["text"] == "1":
            try:
                await future
            except OSError:
                sent.append("1 retried")
                return
        sent.append(message["text"])

    outbox = Outbox(send, limit=10, on_overflow=lambda: None)
    outbox.push("1")
    outbox.push("2")
    future.set_exception(OSError("buffer full"))
    await outbox.flush()

    assert sent == ["1 retried", "2"]
    assert not outbox.closed


@pytest.mark.asyncio
async def test_overflow_past_the_limit_calls_on_overflow_once_and_drops_further_frames():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, overflow = make_outbox(transport, limit=3)

    for text in ["1", "2", "3", "4"]:
        outbox.push(text)
    assert overflow.count == 0  # "1" is in flight; three frames wait, which is the limit

    outbox.push("5")
    assert outbox.closed
    assert overflow.count == 0  # called soon, never from inside push
    await asyncio.sleep(0)
    assert overflow.count == 1

    outbox.push("6")
    outbox.push("7")
    await asyncio.sleep(0)
    assert overflow.count == 1

    transport.gate.set()
    await outbox.flush()
    assert transport.sent == ["1"]
    assert transport.calls == 1


@pytest.mark.asyncio
async def test_a_send_that_raises_at_once_closes_the_outbox_without_raising():
    transport = Transport()
    transport.fail_on = {"2"}
    outbox, overflow = make_outbox(transport)

    outbox.push("1")
    outbox.push("2")
    outbox.push("3")

    assert outbox.closed
    assert transport.sent == ["1"]
    assert transport.calls == 2  # nothing is sent on a closed outbox
    assert overflow.count == 0


@pytest.mark.asyncio
async def test_a_send_that_raises_after_suspending_closes_the_outbox_and_drops_the_backlog():
    transport = Transport()
    transport.stall_on = {"1"}
    transport.fail_on = set()
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    outbox.push("2")
    transport.fail_on = {"1"}

    transport.gate.set()
    await outbox.flush()

    assert outbox.closed
    assert transport.sent == []
    outbox.push("3")
    assert transport.sent == []


@pytest.mark.asyncio
async def test_a_queued_send_that_raises_closes_the_outbox():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    outbox.push("2")
    outbox.push("3")
    transport.fail_on = {"2"}

    transport.gate.set()
    await outbox.flush()

    assert outbox.closed
    assert transport.sent == ["1"]


@pytest.mark.asyncio
async def test_flush_returns_at_once_when_nothing_is_queued():
    transport = Transport()
    outbox, _ = make_outbox(transport)
    await outbox.flush()
    outbox.push("1")
    await outbox.flush()
    assert transport.sent == ["1"]


@pytest.mark.asyncio
async def test_flush_waits_for_the_backlog():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    outbox.push("2")

    flushing = asyncio.ensure_future(outbox.flush())
    await asyncio.sleep(0.01)
    assert not flushing.done()

    transport.gate.set()
    await asyncio.wait_for(flushing, timeout=1)
    assert transport.sent == ["1", "2"]


@pytest.mark.asyncio
async def test_cancelling_a_flush_does_not_cancel_the_writer():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    outbox.push("2")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(outbox.flush(), timeout=0.01)

    transport.gate.set()
    await outbox.flush()
    assert transport.sent == ["1", "2"]


@pytest.mark.asyncio
async def test_cancel_stops_the_writer_and_drops_everything_queued():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, overflow = make_outbox(transport)
    before = other_tasks()
    outbox.push("1")
    outbox.push("2")
    (writer,) = other_tasks() - before
    await asyncio.sleep(0)

    outbox.cancel()
    await asyncio.wait([writer])

    assert writer.cancelled()
    assert transport.cancelled == ["1"]  # the suspended send was told, not abandoned
    assert outbox.closed
    outbox.push("3")
    transport.gate.set()
    await asyncio.sleep(0)
    assert transport.sent == []
    assert transport.calls == 1
    assert overflow.count == 0


@pytest.mark.asyncio
async def test_flush_after_cancel_returns_without_raising():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    await asyncio.sleep(0)

    outbox.cancel()
    await asyncio.wait_for(outbox.flush(), timeout=1)
    assert outbox.closed


@pytest.mark.asyncio
async def test_flush_after_cancel_before_the_writer_ever_ran_returns():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    outbox.push("1")

    outbox.cancel()
    await asyncio.wait_for(outbox.flush(), timeout=1)
    assert outbox.closed


@pytest.mark.asyncio
async def test_cancel_without_a_writer_just_closes():
    transport = Transport()
    outbox, _ = make_outbox(transport)
    outbox.push("1")

    outbox.cancel()
    outbox.push("2")

    assert outbox.closed
    assert transport.sent == ["1"]


@pytest.mark.asyncio
async def test_cancel_after_the_send_was_released_but_before_it_resumed_still_stops_it():
    transport = Transport()
    transport.stall_on = {"1"}
    outbox, _ = make_outbox(transport)
    before = other_tasks()
    outbox.push("1")
    outbox.push("2")
    (writer,) = other_tasks() - before
    await asyncio.sleep(0)

    transport.gate.set()  # the writer is woken, but has not run yet
    outbox.cancel()
    await asyncio.wait([writer])

    assert writer.cancelled()
    assert transport.sent == []
    assert transport.calls == 1


# ASGI promises an awaitable, not a coroutine: granian's send returns a future that
# already carries the frame and resolves a little later, from the server's own thread.


class FutureTransport:
    """A ``send`` that returns an asyncio future, as granian's does; each is resolved
    when the test says (``complete``), or at once with ``immediate``."""

    def __init__(self, *, immediate: bool = False) -> None:
        self.sent: list[str] = []
        self.futures: list[asyncio.Future] = []
        self.immediate = immediate

    def send(self, message: dict) -> asyncio.Future:
        self.sent.append(message.get("text", message["type"]))
        future = asyncio.get_running_loop().create_future()
        if self.immediate:
            future.set_result(None)
        self.futures.append(future)
        return future

    def complete(self, error: Exception | None = None) -> None:
        """Resolve the oldest unresolved future, as the server's thread would (soon)."""
        future = next(future for future in self.futures if not future.done())
        if error is None:
            asyncio.get_running_loop().call_soon(future.set_result, None)
        else:
            asyncio.get_running_loop().call_soon(future.set_exception, error)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_send_returning_a_future_is_followed_by_later_frames_in_order_without_a_task():
    transport = FutureTransport()
    outbox, overflow = make_outbox(transport)
    before = other_tasks()

    for text in ["1", "2", "3"]:
        outbox.push(text)

    assert transport.sent == ["1"]  # one send at a time: later frames wait their turn
    assert other_tasks() == before
    for _ in range(3):
        transport.complete()
        await settle()
        assert other_tasks() == before

    assert transport.sent == ["1", "2", "3"]
    assert all(future.done() for future in transport.futures)
    assert not outbox.closed and overflow.count == 0


@pytest.mark.asyncio
async def test_after_a_future_chain_ends_the_next_push_sends_at_once():
    transport = FutureTransport()
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    transport.complete()
    await settle()

    outbox.push("2")

    assert transport.sent == ["1", "2"]


@pytest.mark.asyncio
async def test_a_future_that_is_done_when_returned_needs_no_callback():
    transport = FutureTransport(immediate=True)
    outbox, _ = make_outbox(transport)

    for text in ["1", "2", "3"]:
        outbox.push(text)
        assert transport.sent[-1] == text

    await outbox.flush()
    assert not outbox.closed


@pytest.mark.asyncio
async def test_flush_waits_for_a_future_chain():
    transport = FutureTransport()
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    outbox.push("2")

    flushing = asyncio.ensure_future(outbox.flush())
    await settle()
    assert not flushing.done()

    transport.complete()
    await settle()
    assert not flushing.done()
    transport.complete()
    await asyncio.wait_for(flushing, timeout=1)
    assert transport.sent == ["1", "2"]


@pytest.mark.asyncio
async def test_a_future_chain_counts_against_the_limit():
    transport = FutureTransport()
    outbox, overflow = make_outbox(transport, limit=3)

    for text in ["1", "2", "3", "4"]:
        outbox.push(text)
    assert overflow.count == 0  # "1" is in flight; three frames wait, which is the limit

    outbox.push("5")
    assert outbox.closed
    await asyncio.sleep(0)
    assert overflow.count == 1

    transport.complete()
    await settle()
    assert transport.sent == ["1"]  # nothing queued is sent once the connection is dropped
    await asyncio.wait_for(outbox.flush(), timeout=1)


@pytest.mark.asyncio
async def test_a_failed_future_closes_the_outbox_and_drops_the_backlog():
    transport = FutureTransport()
    outbox, overflow = make_outbox(transport)
    outbox.push("1")
    outbox.push("2")

    transport.complete(OSError("connection reset"))
    await settle()

    assert outbox.closed
    assert transport.sent == ["1"]
    outbox.push("3")
    assert transport.sent == ["1"]
    await asyncio.wait_for(outbox.flush(), timeout=1)
    assert overflow.count == 0


@pytest.mark.asyncio
async def test_cancel_abandons_a_future_chain_and_flush_returns():
    transport = FutureTransport()
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    outbox.push("2")

    outbox.cancel()
    await asyncio.wait_for(outbox.flush(), timeout=1)  # the future never resolves
    transport.complete()
    await settle()

    assert outbox.closed
    assert transport.sent == ["1"]


@pytest.mark.asyncio
async def test_a_close_message_goes_behind_a_future_chain():
    transport = FutureTransport()
    outbox, _ = make_outbox(transport)
    outbox.push("1")
    outbox.push_message({"type": "websocket.close", "code": 4001})

    transport.complete()
    await settle()

    assert transport.sent == ["1", "websocket.close"]


class Awaitable:
    """Neither a coroutine nor a future: only ``__await__``."""

    def __init__(self, sent: list, text: str) -> None:
        self.sent, self.text = sent, text

    def __await__(self):
        yield  # a bare yield, as asyncio.sleep(0) does
        self.sent.append(self.text)


@pytest.mark.asyncio
async def test_any_other_awaitable_is_awaited_by_a_writer_task_in_order():
    sent = []
    outbox = Outbox(lambda message: Awaitable(sent, message["text"]), limit=10, on_overflow=lambda: None)

    for text in ["1", "2", "3"]:
        outbox.push(text)
    assert sent == []
    await outbox.flush()

    assert sent == ["1", "2", "3"]
    assert not outbox.closed


@pytest.mark.asyncio
async def test_a_send_that_raises_when_called_closes_the_outbox_without_raising():
    def send(message):
        raise RuntimeError("the server refused")

    outbox = Outbox(send, limit=10, on_overflow=lambda: None)
    outbox.push("1")
    outbox.push("2")

    assert outbox.closed


# The direct frame writer (realtime's uvicorn class) --------------------------------


class Writer:
    """A fake direct frame writer: takes frames until told to decline."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.declining = False

    def __call__(self, data: bytes) -> bool:
        if self.declining:
            return False
        self.written.append(data)
        return True


def test_frame_bytes_are_the_frames_websockets_makes():
    from websockets.frames import Frame, Opcode

    from realtime.outbox import frame_bytes

    for size in (0, 125, 126, 65535, 65536, 70000):
        text = "é" * (size // 2) + "x" * (size % 2)
        expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
        assert frame_bytes(text) == expected


@pytest.mark.asyncio
async def test_frames_go_to_the_writer_framed_once_per_publication():
    from realtime.outbox import framed

    transport, writer = Transport(), Writer()
    boxes = [Outbox(transport.send, 10, Overflows(), writer) for _ in range(3)]
    frame = '{"message":{"channel":"a","event":"e","data":1}}'
    for box in boxes:
        box.push(frame)
    assert len(writer.written) == 3 and transport.sent == []
    # One bytes object for all three: framed once.
    assert writer.written[0] is writer.written[1] is writer.written[2] is framed(frame)


@pytest.mark.asyncio
async def test_a_declined_write_goes_through_send_and_later_frames_queue_behind_it():
    transport, writer = Transport(), Writer()
    box = Outbox(transport.send, 10, Overflows(), writer)
    box.push("one")
    writer.declining = True  # the socket buffer is full: send() waits for it to drain
    transport.stall_on.add("two")
    box.push("two")
    writer.declining = False
    box.push("three")  # must not overtake "two"
    assert transport.sent == []
    transport.gate.set()
    await box.flush()
    assert [len(data) for data in writer.written] == [5]
    assert transport.sent == ["two", "three"]


@pytest.mark.asyncio
async def test_several_frames_go_out_in_one_write():
    from realtime.outbox import frame_bytes

    transport, writer = Transport(), Writer()
    box = Outbox(transport.send, 10, Overflows(), writer)
    box.push_many(["a", "b", "c"])
    assert writer.written == [frame_bytes("a") + frame_bytes("b") + frame_bytes("c")]
    writer.declining = True
    box.push_many(["d", "e"])
    await box.flush()
    assert transport.sent == ["d", "e"]
