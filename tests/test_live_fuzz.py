"""Generated frames against a live connection: every reply is a documented code, and the
connection keeps working afterwards."""

import json
from unittest.mock import ANY

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.errors import ErrorCode
from tests.matchers import SERVER_TIME

pytestmark = [pytest.mark.live]

CODES = {code.value for code in ErrorCode}
COMMANDS = ["auth", "subscribe", "unsubscribe", "publish", "logout", "disconnect", "history", "id"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
command_frames = st.builds(
    lambda command, body, extra: json.dumps({command: body, **extra}),
    st.sampled_from(COMMANDS),
    json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "channel": json_values | st.text(max_size=30),
            "event": json_values,
            "data": json_values,
            "secret": json_values,
            "access": st.sampled_from(["read-only", "read-write", "x"]),
        },
    ),
    st.dictionaries(st.sampled_from(["id", "other"]), json_values, max_size=2),
)
frames = (
    st.text(max_size=60)
    | st.binary(max_size=60)
    | json_values.map(json.dumps)
    | command_frames
    | command_frames.map(lambda text: text[: len(text) // 2])
)


def test_generated_frames_get_documented_replies_and_the_connection_survives(fuzz_server, connect):
    state = {"client": connect(fuzz_server)}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frame=frames)
    def check(frame):
        client = state["client"]
        client.send_raw(frame)
        reply = client.recv()
        assert reply.get("ok") is True or reply.get("err") in CODES, reply
        if reply.get("ok") and '"disconnect"' in str(frame):
            state["client"] = client = connect(fuzz_server)
        client.send({"unsubscribe": {"channel": "probe"}, "id": "probe"})
        assert client.recv() == {"ok": True, "id": "probe"}

    check()


# Authenticated, on a real channel -----------------------------------------------------

# A server bug shows up as internal_error: generated input must never cause one.
EXPECTED_CODES = CODES - {ErrorCode.INTERNAL_ERROR.value}
# What may arrive besides replies: publications and notices (docs/protocol.md).
UNSOLICITED = {"message", "join", "leave", "unsubscribed", "missed", "logout"}


# Data a publication may carry: strict JSON (no Infinity), nested a little.
json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def subscriber_frames(name, epoch):
    """The commands a subscriber uses: mostly well-formed and aimed at ``name`` (whose
    stream is in ``epoch``), some with any JSON in every field, and some garbage."""

    def frames(channels, streams, ids, events, data, offsets, epochs, limits):
        since = st.fixed_dictionaries({"offset": offsets, "epoch": epochs})
        bodies = {
            "subscribe": st.fixed_dictionaries({"channel": channels}, optional={"since": since}),
            "unsubscribe": st.fixed_dictionaries({"channel": channels}),
            "publish": st.fixed_dictionaries({"channel": streams, "event": events, "data": data}),
            "history": st.fixed_dictionaries(
                {"channel": streams}, optional={"since": offsets, "limit": limits, "epoch": epochs}
            ),
        }
        return st.sampled_from(sorted(bodies)).flatmap(
            lambda command: st.builds(
                lambda body, request_id: json.dumps(
                    {command: body, **({} if request_id is None else {"id": request_id})}
                ),
                bodies[command],
                ids,
            )
        )

    others = st.sampled_from(["nosuch", "meta/x", "a//b", "*", f"{name}/**"])
    well_formed = frames(
        channels=st.sampled_from([name, f"{name}/sub", f"{name}/*"]) | others,
        streams=st.sampled_from([name, f"{name}/sub"]) | others,
        ids=st.none() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=64),
        events=st.text(min_size=1, max_size=20),
        data=json_data,
        offsets=st.integers(0, 40),
        epochs=st.just(epoch) | st.text(max_size=64),
        limits=st.integers(1, 50),
    )
    anything = frames(*[json_values] * 8)
    garbage = (
        st.text(max_size=60) | st.binary(max_size=60) | anything.map(lambda text: text[: len(text) // 2])
    )
    # Six in ten well-formed (an explicit draw: one_of would give each branch a third).
    return st.integers(0, 9).flatmap(lambda n: well_formed if n < 6 else anything if n < 8 else garbage)


def test_an_authenticated_client_throwing_generated_frames_at_its_channel_gets_documented_replies(
    fuzz_server, connect, make_key, make_channel, uid
):
    channel = make_channel(f"fuzz-{uid}", include_subchannels=True, history_size=20, presence=True)
    name = channel.name
    client = connect(fuzz_server)
    assert client.auth(make_key(channels=[channel]))["ok"] is True
    epoch = client.publish(name, "first", None)["epoch"]

    def reply():
        """The reply to the frame just sent; publications and notices on the way are checked."""
        while True:
            frame = client.recv()
            if "ok" in frame or "err" in frame:
                return frame
            assert len(frame) == 1 and next(iter(frame)) in UNSOLICITED, frame

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frame=subscriber_frames(name, epoch))
    def check(frame):
        client.send_raw(frame)
        answer = reply()
        assert answer.get("ok") is True or answer.get("err") in EXPECTED_CODES, (frame, answer)
        # Still answering, and still authenticated (history needs read access).
        client.send({"history": {"channel": name, "limit": 1}, "id": "probe"})
        probe = reply()
        assert probe["ok"] is True and probe["id"] == "probe", probe

    check()

    bystander = connect(fuzz_server)
    bystander.auth(make_key(access="read-only"))
    assert bystander.subscribe(name)["ok"] is True
    assert client.publish(name, "after", {"still": "works"})["ok"] is True
    assert bystander.next_message()["message"] == {
        "channel": name,
        "event": "after",
        "data": {"still": "works"},
        "time": SERVER_TIME,
        "offset": ANY,
        "epoch": ANY,
    }
