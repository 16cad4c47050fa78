"""Channel names to Kafka topic names: the prefix plus the channel, checked, never rewritten.

A channel that is not a legal topic name is refused with :class:`InvalidChannel` rather than
escaped: the topic stays readable in Kafka's own tools and is the one encode/broadcaster used for
the same channel (it took the channel as the topic name), so both can share a cluster.
"""

from __future__ import annotations

import re

from opal_broadcast import InvalidChannel, InvalidOption

__all__ = ["INTERNAL_TOPICS", "MAX_TOPIC_LENGTH", "TopicNames", "check_prefix", "names_for"]

#: Kafka's limit on topic names (``Topic.MAX_NAME_LENGTH``).
MAX_TOPIC_LENGTH = 249
#: Topics the brokers keep for themselves; reading or writing them as a channel would be harmful.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})
_LEGAL = re.compile(r"[A-Za-z0-9._-]*\Z")
#: Names checked once are remembered; past this many distinct names the memory is reset.
_CACHE_LIMIT = 4096


def check_prefix(prefix: object) -> str:
    """The ``topic_prefix`` option, checked (no I/O)."""
    if not isinstance(prefix, str) or not _LEGAL.match(prefix):
        raise InvalidOption(
            f"The kafka:// option 'topic_prefix' must be text of ASCII letters, digits, '.', '_' "
            f"and '-' (the characters of a topic name), not {prefix!r}."
        )
    if len(prefix) >= MAX_TOPIC_LENGTH:
        raise InvalidOption(
            f"The kafka:// option 'topic_prefix' leaves no room for a channel name: topic names "
            f"have at most {MAX_TOPIC_LENGTH} characters."
        )
    return prefix


class TopicNames:
    """Maps channels to topics (``prefix + channel``) for one connection."""

    __slots__ = ("_known", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._known: dict[str, str] = {}

    def topic(self, channel: str) -> str:
        """The topic of ``channel``; :class:`InvalidChannel` if it cannot be one (no I/O)."""
        topic = self._known.get(channel)
        if topic is None:
            topic = self._check(channel)
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            self._known[channel] = topic
        return topic

    def _check(self, channel: str) -> str:
        topic = self.prefix + channel
        problem = None
        if not channel:
            problem = "it is empty"
        elif not _LEGAL.match(channel):
            bad = sorted({c for c in channel if not _LEGAL.match(c)})
            problem = f"it contains {''.join(bad)!r}; topic names allow ASCII letters, digits, '.', '_' and '-'"
        elif len(topic) > MAX_TOPIC_LENGTH:
            problem = (
                f"the topic name {self.prefix!r} + channel would be {len(topic)} characters; "
                f"Kafka allows {MAX_TOPIC_LENGTH}"
            )
        elif topic in (".", ".."):
            problem = "'.' and '..' are not allowed as topic names"
        elif topic in INTERNAL_TOPICS:
            problem = "that is one of Kafka's internal topics"
        if problem is not None:
            raise InvalidChannel(
                f"The channel {channel[:80]!r} cannot be carried by kafka://: {problem}. Each "
                "channel is the Kafka topic '<topic_prefix><channel>'; rename the channel."
            )
        return topic


_by_prefix: dict[str, TopicNames] = {}


def names_for(prefix: str) -> TopicNames:
    """The TopicNames of ``prefix``, shared, for checks made before any connection exists."""
    names = _by_prefix.get(prefix)
    if names is None:
        if len(_by_prefix) >= 64:
            _by_prefix.clear()
        names = _by_prefix[prefix] = TopicNames(prefix)
    return names
