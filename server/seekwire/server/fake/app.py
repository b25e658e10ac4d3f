"""The fake DeepSeek HTTP server (aiohttp), with a record of what it received."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from seekwire.server.fake.behavior import Behavior, behavior_from_json, directive_overrides
from seekwire.server.fake.content import (
    ChatPlan,
    Generator,
    Rejection,
    error_body,
    token_logprob,
)

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("deepseek-v4-flash", "deepseek-v4-pro")
_STATUS_MESSAGES = {
    401: ("Authentication Fails (no such user)", "authentication_error"),
    402: ("Insufficient Balance", "unknown_error"),
    422: ("Invalid Parameters", "invalid_request_error"),
    429: ("Rate Limit Reached", "rate_limit_error"),
    500: ("Server Error", "api_error"),
    503: ("Server Overloaded", "api_error"),
}


@dataclass(slots=True)
class ReceivedRequest:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    peer: str = ""  # the client's address and port: one per upstream connection
    received_at: float = field(default_factory=time.monotonic)
    status: int = 0
    disconnected: bool = False  # the client went away before the answer was complete
    completed: bool = False  # the whole answer was written
    events_sent: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # handler finished

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "peer": self.peer,
            "received_at": self.received_at,
            "status": self.status,
            "disconnected": self.disconnected,
            "completed": self.completed,
            "events_sent": self.events_sent,
        }


class FakeDeepSeek:
    """Start with `await fake.start()`; `fake.base_url` then points at it. `requests` keeps
    every request it received (tests), or the last `keep_requests` of them (long runs)."""

    def __init__(
        self,
        *,
        api_keys: tuple[str, ...] | None = None,
        models: tuple[str, ...] = DEFAULT_MODELS,
        aliases: dict[str, str] | None = None,
        default: Behavior | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_requests: int | None = None,
    ) -> None:
        self.api_keys = api_keys
        self._keep = keep_requests
        self.default = default or Behavior()
        self.generator = Generator(models, aliases or {})
        self.requests: list[ReceivedRequest] = []
        self._queue: list[Behavior] = []
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- control ---------------------------------------------------------------

    def push(self, *behaviors: Behavior) -> None:
        """Queues behaviors for the next requests (one each, first match by path)."""
        self._queue.extend(behaviors)

    def reset(self) -> None:
        self._queue.clear()
        self.requests.clear()

    def _behavior(self, path: str, body: Any) -> Behavior:
        behavior = self.default
        for i, queued in enumerate(self._queue):
            if queued.path is None or queued.path == path:
                behavior = self._queue.pop(i)
                break
        if isinstance(body, dict):
            text = " ".join(
                m.get("content") or ""
                for m in body.get("messages") or []
                if isinstance(m, dict) and isinstance(m.get("content"), str)
            ) + str(body.get("prompt") or "")
            if "[fake" in text:
                behavior = behavior.merged(directive_overrides(text))
        return behavior

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("", "/v1"):
            app.router.add_post(prefix + "/chat/completions", self._chat)
            app.router.add_post(prefix + "/beta/chat/completions", self._chat)
            app.router.add_post(prefix + "/beta/completions", self._fim)
            app.router.add_get(prefix + "/models", self._models)
            app.router.add_get(prefix + "/user/balance", self._balance)
        app.router.add_post("/_fake/behaviors", self._push_behaviors)
        app.router.add_get("/_fake/requests", self._list_requests)
        app.router.add_delete("/_fake/requests", self._clear_requests)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{self._host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing --------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[ReceivedRequest, Any]:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
        path = request.path.removeprefix("/v1")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = ReceivedRequest(
            request.method,
            path,
            dict(request.headers),
            body,
            f"{peer[0]}:{peer[1]}" if peer else "",
        )
        self.requests.append(record)
        if self._keep is not None and len(self.requests) > 2 * self._keep:
            del self.requests[: -self._keep]
        return record, body

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise Rejection(401, "Authentication Fails (no such user)", "authentication_error")
        key = header[7:].strip()
        if self.api_keys is not None and key not in self.api_keys:
            raise Rejection(
                401,
                f"Authentication Fails, Your api key: ****{key[-4:]} is invalid",
                "authentication_error",
            )

    def _headers(self) -> dict[str, str]:
        return {"x-ds-trace-id": uuid.uuid4().hex}

    def _reject(
        self, record: ReceivedRequest, error: Rejection, behavior: Behavior
    ) -> web.Response:
        record.status = error.status
        record.completed = True
        headers = self._headers()
        if behavior.retry_after is not None:
            headers["Retry-After"] = f"{behavior.retry_after:g}"
        if behavior.legacy_422 and error.status == 422:
            return web.Response(
                status=422,
                text="Failed to deserialize the JSON body into the target type: missing field "
                "`messages` at line 4 column 1",
                headers=headers,
            )
        return web.Response(
            status=error.status,
            body=error_body(error.message, error.error_type),
            content_type="application/json",
            headers=headers,
        )

    def _injected_failure(self, behavior: Behavior) -> Rejection | None:
        if behavior.legacy_422:
            return Rejection(422, "legacy")
        status = behavior.status
        if status is None and behavior.fail_ratio and random.random() < behavior.fail_ratio:
            status = behavior.fail_status
        if status is None:
            return None
        message, error_type = _STATUS_MESSAGES.get(status, ("Error", "api_error"))
        return Rejection(status, behavior.message or message, error_type)

    async def _handle(self, request: web.Request, answer: _Answer) -> web.StreamResponse:
        record, body = await self._receive(request)
        behavior = self._behavior(record.path, body)
        try:
            if behavior.delay:
                await asyncio.sleep(behavior.delay)
            self._check_auth(request)
            failure = self._injected_failure(behavior)
            if failure is not None:
                raise failure
            return await answer(request, record, body, behavior)
        except Rejection as error:
            return self._reject(record, error, behavior)
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected = True
            raise
        finally:
            record.ended.set()

    # -- endpoints -------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, self._chat_answer)

    async def _fim(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, self._fim_answer)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        async def answer(
            _request: web.Request, record: ReceivedRequest, _body: Any, _behavior: Behavior
        ) -> web.StreamResponse:
            data = [
                {"id": m, "object": "model", "owned_by": "deepseek"} for m in self.generator.models
            ]
            return self._json(record, {"object": "list", "data": data})

        return await self._handle(request, answer)

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        async def answer(
            _request: web.Request, record: ReceivedRequest, _body: Any, _behavior: Behavior
        ) -> web.StreamResponse:
            info = {
                "currency": "USD",
                "total_balance": "110.00",
                "granted_balance": "10.00",
                "topped_up_balance": "100.00",
            }
            return self._json(record, {"is_available": True, "balance_infos": [info]})

        return await self._handle(request, answer)

    async def _push_behaviors(self, request: web.Request) -> web.Response:
        items = await request.json(loads=orjson.loads)
        self.push(*(behavior_from_json(item) for item in items))
        return web.json_response({"queued": len(self._queue)})

    async def _list_requests(self, _request: web.Request) -> web.Response:
        payload = [r.to_json() for r in self.requests]
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _clear_requests(self, _request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)

    # -- answers ---------------------------------------------------------------

    async def _chat_answer(
        self, request: web.Request, record: ReceivedRequest, body: Any, behavior: Behavior
    ) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise Rejection(400, "Failed to deserialize the JSON body into the target type")
        plan = self.generator.chat(body, behavior)
        if body.get("stream"):
            return await self._stream(request, record, behavior, chat_chunks(plan, behavior))
        return await self._whole(request, record, behavior, chat_completion(plan))

    async def _fim_answer(
        self, request: web.Request, record: ReceivedRequest, body: Any, behavior: Behavior
    ) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise Rejection(400, "Failed to deserialize the JSON body into the target type")
        plan, echo = self.generator.fim(body, behavior)
        if body.get("stream"):
            return await self._stream(request, record, behavior, fim_chunks(plan, behavior, echo))
        return await self._whole(request, record, behavior, fim_completion(plan, echo))

    def _json(self, record: ReceivedRequest, payload: Any) -> web.Response:
        record.status = 200
        record.completed = True
        return web.Response(
            body=orjson.dumps(payload), content_type="application/json", headers=self._headers()
        )

    async def _whole(
        self, request: web.Request, record: ReceivedRequest, behavior: Behavior, payload: Any
    ) -> web.StreamResponse:
        if behavior.blank_body:
            record.status = 200
            record.completed = True
            return web.Response(
                body=b"\n\n", content_type="application/json", headers=self._headers()
            )
        if not behavior.keepalives and behavior.stall_after is None and not behavior.cut_after:
            return self._json(record, payload)
        response = web.StreamResponse(headers=self._headers())
        response.content_type = "application/json"
        await response.prepare(request)
        record.status = 200
        for _ in range(behavior.keepalives):
            await response.write(b"\n")
            await asyncio.sleep(behavior.keepalive_interval)
        if behavior.stall_after is not None:
            await self._stall(response, behavior, b"\n")
        body = orjson.dumps(payload)
        if behavior.cut_after is not None:
            await response.write(body[: len(body) // 2])
            return self._cut(request, response)
        await response.write(body)
        await response.write_eof()
        record.completed = True
        return response

    async def _stream(
        self,
        request: web.Request,
        record: ReceivedRequest,
        behavior: Behavior,
        events: list[dict[str, Any]],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=self._headers())
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        record.status = 200
        for _ in range(behavior.keepalives):
            await response.write(b": keep-alive\n\n")
            await asyncio.sleep(behavior.keepalive_interval)
        for i, event in enumerate(events):
            if i == behavior.stall_after:
                await self._stall(response, behavior, b": keep-alive\n\n")
            if i == behavior.cut_after:
                return self._cut(request, response)
            if i == behavior.error_after:
                error = orjson.loads(error_body(behavior.message or "Server Error", "api_error"))
                await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
                break
            if i and behavior.token_delay:
                await asyncio.sleep(behavior.token_delay)
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
            record.events_sent += 1
        else:
            if behavior.stall_after == len(events):
                await self._stall(response, behavior, b": keep-alive\n\n")
            if not behavior.no_done:
                await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        record.completed = behavior.error_after is None and not behavior.no_done
        return response

    @staticmethod
    async def _stall(response: web.StreamResponse, behavior: Behavior, keepalive: bytes) -> None:
        """Sends no more data, ever; returns only by the client going away (CancelledError)."""
        while True:
            if behavior.stall_keepalive:
                await asyncio.sleep(behavior.stall_keepalive)
                await response.write(keepalive)
            else:
                await asyncio.sleep(3600)

    @staticmethod
    def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Drops the connection mid-body, as DeepSeek's resets do."""
        if request.transport is not None:
            request.transport.close()
        response.force_close()
        return response


_Answer = Callable[[web.Request, ReceivedRequest, Any, Behavior], Awaitable[web.StreamResponse]]


def _chunk(plan: ChatPlan, obj: str, choice: dict[str, Any]) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": plan.id,
        "object": obj,
        "created": plan.created,
        "model": plan.model,
        "system_fingerprint": plan.fingerprint,
        "choices": [choice],
    }
    if plan.include_usage_null:
        chunk["usage"] = None
    return chunk


def _finish(
    chunks: list[dict[str, Any]], plan: ChatPlan, behavior: Behavior
) -> list[dict[str, Any]]:
    """Puts usage where DeepSeek does (the finish chunk), or OpenAI-style after it."""
    if behavior.usage_chunk:
        tail = dict(chunks[-1], choices=[])
        tail["usage"] = plan.usage
        chunks.append(tail)
    else:
        chunks[-1]["usage"] = plan.usage
    return chunks


def chat_chunks(plan: ChatPlan, behavior: Behavior) -> list[dict[str, Any]]:
    def delta(d: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": d, "logprobs": logprobs, "finish_reason": finish}
        return _chunk(plan, "chat.completion.chunk", choice)

    def lp(token: str) -> Any:
        return None if plan.logprobs is None else {"content": [token_logprob(token, plan.logprobs)]}

    chunks: list[dict[str, Any]] = []
    if plan.thinking:
        chunks.append(delta({"role": "assistant", "content": None, "reasoning_content": ""}))
        chunks += [delta({"content": None, "reasoning_content": t}) for t in plan.reasoning]
        chunks += [
            delta({"content": t, "reasoning_content": None}, None, lp(t)) for t in plan.content
        ]
    else:
        chunks.append(delta({"role": "assistant", "content": ""}))
        chunks += [delta({"content": t}, None, lp(t)) for t in plan.content]
    for call in plan.tool_calls:
        head = dict(call, function={"name": call["function"]["name"], "arguments": ""})
        chunks.append(delta({"tool_calls": [head]}))
        arguments = call["function"]["arguments"]
        step = max(1, len(arguments) // 3)
        for start in range(0, len(arguments), step):
            fragment = {
                "index": call["index"],
                "function": {"arguments": arguments[start : start + step]},
            }
            chunks.append(delta({"tool_calls": [fragment]}))
    last: dict[str, Any] = {"content": ""}
    if plan.thinking:
        last["reasoning_content"] = None
    chunks.append(delta(last, plan.finish_reason))
    return _finish(chunks, plan, behavior)


def chat_completion(plan: ChatPlan) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.content)}
    if plan.thinking:
        message["reasoning_content"] = "".join(plan.reasoning)
    if plan.tool_calls:
        message["tool_calls"] = plan.tool_calls
    logprobs = None
    if plan.logprobs is not None:
        logprobs = {"content": [token_logprob(t, plan.logprobs) for t in plan.content]}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": plan.finish_reason,
    }
    return {
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "choices": [choice],
        "usage": plan.usage,
        "system_fingerprint": plan.fingerprint,
    }


def _fim_logprobs(tokens: list[str], top: int | None) -> Any:
    if top is None:
        return None
    offsets, offset = [], 0
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {
        "text_offset": offsets,
        "token_logprobs": [-0.25] * len(tokens),
        "tokens": tokens,
        "top_logprobs": [{t: -0.25} for t in tokens] if top else [],
    }


def fim_chunks(plan: ChatPlan, behavior: Behavior, echo: str) -> list[dict[str, Any]]:
    texts = ([echo] if echo else []) + plan.content
    chunks = [
        _chunk(
            plan,
            "text_completion",
            {
                "text": t,
                "index": 0,
                "logprobs": _fim_logprobs([t], plan.logprobs),
                "finish_reason": None,
            },
        )
        for t in texts
    ]
    finish = {"text": "", "index": 0, "logprobs": None, "finish_reason": plan.finish_reason}
    chunks.append(_chunk(plan, "text_completion", finish))
    return _finish(chunks, plan, behavior)


def fim_completion(plan: ChatPlan, echo: str) -> dict[str, Any]:
    choice = {
        "text": echo + "".join(plan.content),
        "index": 0,
        "logprobs": _fim_logprobs(plan.content, plan.logprobs),
        "finish_reason": plan.finish_reason,
    }
    return {
        "id": plan.id,
        "object": "text_completion",
        "created": plan.created,
        "model": plan.model,
        "system_fingerprint": plan.fingerprint,
        "choices": [choice],
        "usage": plan.usage,
    }
