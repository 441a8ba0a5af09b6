"""Generated frames against a live connection: every reply is a documented code, and the
connection keeps working afterwards."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.errors import ErrorCode

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
