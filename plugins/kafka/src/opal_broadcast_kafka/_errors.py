"""aiokafka's errors as the core's typed errors, with messages that say what to do.

    KafkaError (aiokafka)                          -> the core's error
    MessageSizeTooLargeError, RecordTooLargeError  -> MessageTooLarge
    TopicAuthorizationFailedError on publish       -> BackboneError (grant WRITE)
    topic creation refused: InvalidTopicError      -> InvalidChannel
                            InvalidReplicationFactorError -> InvalidOption
                            *AuthorizationFailedError     -> BackboneError (grant CREATE)
                            any other retriable code      -> BackboneUnavailable
                            any other code                -> BackboneError
    anything else on the wire                      -> BackboneUnavailable

Every text goes through the connection's redactor: no secret reaches a message.
"""

from __future__ import annotations

from collections.abc import Callable

from opal_broadcast.plugin import (
    BackboneError,
    BackboneUnavailable,
    BroadcastError,
    InvalidChannel,
    InvalidOption,
    MessageTooLarge,
)

from ._driver import kafka_errors

__all__ = ["Errors", "describe", "unauthorized"]


def describe(exc: BaseException) -> str:
    """``Type: message`` for an error (aiokafka's errors already start with their type)."""
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}".rstrip(": ")


class Errors:
    """Builds the typed errors of one connection (``where``: its masked URL)."""

    def __init__(self, where: str, redact: Callable[[str], str]) -> None:
        self.where = where
        self.redact = redact

    def describe(self, exc: BaseException) -> str:
        return self.redact(describe(exc))

    def unavailable(self, doing: str, exc: BaseException) -> BackboneUnavailable:
        """``doing``: what failed, worded to be followed by the URL (``"publish to 'x' on"``)."""
        return BackboneUnavailable(f"Could not {doing} {self.where}: {self.describe(exc)}.")

    def publish_error(self, topic: str, exc: Exception) -> BroadcastError:
        if isinstance(
            exc, kafka_errors.MessageSizeTooLargeError | kafka_errors.RecordTooLargeError
        ):
            return MessageTooLarge(
                f"{self.where} refused a message on {topic!r} as too large "
                f"({self.describe(exc)}); raise the topic's max.message.bytes, or send less."
            )
        if isinstance(exc, kafka_errors.TopicAuthorizationFailedError):
            return BackboneError(
                f"{self.where} does not allow this user to write to {topic!r}: grant WRITE on it."
            )
        return self.unavailable(f"publish to {topic!r} on", exc)

    def creation_refused(
        self, topic: str, error: type[Exception], detail: str, replicas: int
    ) -> BroadcastError:
        """The brokers answered a request to create ``topic`` with ``error`` (not "it exists")."""
        if error is kafka_errors.InvalidTopicError:
            return InvalidChannel(
                f"{self.where} refused the topic name {topic!r}: {detail}. Rename the channel "
                "(Kafka also refuses names that differ from an existing topic only by '.' "
                "versus '_')."
            )
        if error is kafka_errors.InvalidReplicationFactorError:
            return InvalidOption(
                f"{self.where} cannot create {topic!r} with {replicas} replica(s): {detail}. "
                "Set the kafka:// option 'replication_factor'."
            )
        if unauthorized(error):
            return BackboneError(
                f"{self.where} does not allow this user to create the topic {topic!r} "
                f"({detail}). Create it beforehand, or grant CREATE on it."
            )
        kind = BackboneUnavailable if getattr(error, "retriable", False) else BackboneError
        return kind(f"{self.where} could not create the topic {topic!r}: {detail}.")


def unauthorized(error: type[Exception]) -> bool:
    """Whether the brokers refused to create a topic for this user's lack of permission."""
    return error in (
        kafka_errors.TopicAuthorizationFailedError,
        kafka_errors.ClusterAuthorizationFailedError,
    )
