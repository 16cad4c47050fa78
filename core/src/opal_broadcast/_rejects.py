"""Payloads a plugin rejected (undecodable, malformed framing): counted per channel, logged as
one line per channel and interval with a count, so a hostile publisher cannot flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

__all__ = ["RejectLog"]

logger = logging.getLogger("opal_broadcast")

#: Seconds between two log lines about one channel's rejected payloads.
LOG_INTERVAL = 10.0

#: Channels counted by name; rejections on further channels count in the total only.
_CHANNELS_KEPT = 1_000


class RejectLog:
    """How many payloads were rejected, in total and per channel (see :meth:`Link.reject`)."""

    __slots__ = ("_logged_at", "_unlogged", "by_channel", "count")

    def __init__(self) -> None:
        self.count = 0
        self.by_channel: dict[str, int] = {}
        #: When each channel's last line was written, and what was rejected since then.
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def report(self, url: str, channel: str, reason: str) -> None:
        """Count one rejected payload; log it unless this channel was logged within the interval."""
        self.count += 1
        if channel in self.by_channel or len(self.by_channel) < _CHANNELS_KEPT:
            self.by_channel[channel] = self.by_channel.get(channel, 0) + 1
        now = time.monotonic()
        last = self._logged_at.get(channel)
        if last is not None and now - last < LOG_INTERVAL:
            self._unlogged[channel] = self._unlogged.get(channel, 0) + 1
            return
        if len(self._logged_at) >= _CHANNELS_KEPT:
            self._logged_at.clear()
        self._logged_at[channel] = now
        count = self._unlogged.pop(channel, 0) + 1
        logger.warning(
            "%s: dropped %d payload(s) on channel %r that no opal-broadcast publisher wrote "
            "(last: %s); subscribers are not affected (health().rejected counts them)",
            url,
            count,
            channel,
            reason,
        )

    def snapshot(self) -> Mapping[str, int]:
        """A copy of the per-channel counts."""
        return dict(self.by_channel)
