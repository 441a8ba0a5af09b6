"""Matchers for fields the server fills in, for tests that compare whole frames."""

import time


class _ServerTime:
    """Equal to a publication's ``time``: Unix seconds as a float, within a minute of now."""

    def __eq__(self, other) -> bool:
        return isinstance(other, float) and abs(other - time.time()) < 60

    def __repr__(self) -> str:
        return "SERVER_TIME"


SERVER_TIME = _ServerTime()
