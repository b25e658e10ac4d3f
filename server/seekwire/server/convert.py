"""Protobuf messages to DeepSeek JSON bodies and back; the JSON is parsed once, upstream."""

from __future__ import annotations

import logging
from typing import Any, TypeVar, cast

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from seekwire.server.upstream.errors import UpstreamError
from seekwire.v1 import chat_pb2

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
_reported: set[str] = set()
# Free-form JSON in the contract (tool parameters, stop, tool_choice): nothing to filter.
_JSON_VALUES = frozenset({"google.protobuf.Struct", "google.protobuf.Value"})


def request_body(request: Message, *, stream: bool) -> bytes:
    """The JSON body DeepSeek gets: the request's set fields, plus how to stream."""
    body: dict[str, Any] = json_format.MessageToDict(request, preserving_proto_field_name=True)
    body["stream"] = stream
    if stream:
        # DeepSeek sends usage on the finish chunk regardless; OpenAI-compatible hosts need this.
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream_options", None)
    return orjson.dumps(body)


def from_json(cls: type[M], data: dict[str, Any]) -> M:
    """Builds `cls` from DeepSeek's JSON; fields seekwire does not know are logged, not fatal."""
    try:
        return cls(**data)
    except (ValueError, TypeError):
        pass
    known = _known_fields(cast(Descriptor, cls.DESCRIPTOR), data, cls.DESCRIPTOR.name)
    try:
        return json_format.ParseDict(known, cls(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise UpstreamError(
            "UPSTREAM_BAD_RESPONSE", f"DeepSeek's {cls.DESCRIPTOR.name} does not parse: {exc}"
        ) from exc


def _known_fields(descriptor: Descriptor, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        return data
    known: dict[str, Any] = {}
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            _report(f"{path}.{key}")
            continue
        if value is None:
            continue
        child_type = field.message_type
        if child_type is not None and child_type.full_name not in _JSON_VALUES:
            child = f"{path}.{key}"
            if isinstance(value, list):
                value = [_known_fields(child_type, v, child) for v in value]
            else:
                value = _known_fields(child_type, value, child)
        known[key] = value
    return known


def usage_of(response: Any) -> Any:
    """The Usage a response carries: a completion's, a stream's finish chunk's, or a Converse
    turn_end's; None when it carries none."""
    if isinstance(response, chat_pb2.ConverseResponse):
        return response.turn_end.usage if response.HasField("turn_end") else None
    if "usage" in response.DESCRIPTOR.fields_by_name and response.HasField("usage"):
        return response.usage
    return None


def _report(name: str) -> None:
    if name not in _reported:
        _reported.add(name)
        log.warning("DeepSeek sent a field seekwire.v1 does not carry yet: %s", name)
