"""The seekwire client: a channel factory, async and sync helpers, Converse, errors, the CLI."""

from seekwire.client.aio import DEFAULT_MODEL, AsyncClient
from seekwire.client.channel import create_channel
from seekwire.client.conversation import Answer, Conversation
from seekwire.client.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SeekwireError,
    Unauthenticated,
    Unavailable,
)
from seekwire.client.sync import Client, SyncConversation

__all__ = [
    "DEFAULT_MODEL",
    "Answer",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Conversation",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SeekwireError",
    "SyncConversation",
    "Unauthenticated",
    "Unavailable",
    "create_channel",
]
