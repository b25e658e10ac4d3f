"""DeepSeek over HTTP: one pooled client per upstream, bodies and SSE read under timeouts."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from opentelemetry.context import Context
from yarl import URL

from seekwire.server.upstream.errors import (
    UpstreamError,
    error_from_event,
    error_from_response,
)
from seekwire.server.upstream.sse import SSEParser
from seekwire.server.upstream.timing import StallClock, Timeouts

log = logging.getLogger(__name__)

JSON = dict[str, Any]
_MAX_ERROR_BODY = 64 * 1024
_WHITESPACE = b" \t\r\n"
DEFAULT_TIMEOUTS = Timeouts()
_GZIP_MIN = 1024  # smaller bodies are not worth compressing
ACCEPT_ENCODING = "gzip, deflate, br" if importlib.util.find_spec("brotli") else "gzip, deflate"


@dataclass(slots=True)
class CallInfo:
    """One call's description for the upstream layer, and what it reports back.

    operation and model name the call in telemetry (`chat deepseek-v4-flash`);
    trace_context is the parent of the attempts' spans; attempts and endpoint come back.
    """

    operation: str = ""
    model: str = ""
    trace_context: Context | None = None
    attempts: int = 0
    endpoint: str = ""


class Upstream(Protocol):
    """What handlers need from DeepSeek; the resilient pool implements it.

    `deadline` is the caller's deadline on the event loop's clock, or None.
    """

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float | None,
        info: CallInfo | None = None,
    ) -> JSON:
        """One request whose answer is a single JSON object."""
        ...

    def stream(
        self, path: str, body: bytes, deadline: float | None, info: CallInfo | None = None
    ) -> AsyncGenerator[JSON, None]:
        """One streamed request; yields each SSE event's JSON until `[DONE]`."""
        ...


class DeepSeekClient:
    """A pooled keep-alive HTTP client for one DeepSeek-compatible endpoint; the API key is
    chosen per request, so one connection pool serves every key of the endpoint."""

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        pool_size: int = 1024,
        user_agent: str = "seekwire",
        gzip_requests: bool = False,
    ) -> None:
        self._base = URL(base_url.rstrip("/").removesuffix("/v1"))
        self._timeouts = timeouts
        self._pool_size = pool_size
        self._gzip_requests = gzip_requests
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": user_agent,
        }
        self._urls: dict[str, URL] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return self._base.host or ""

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect),
            auto_decompress=True,
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._base.with_path(self._base.path.rstrip("/") + path)
        return url

    async def _open(
        self,
        method: str,
        path: str,
        body: bytes | None,
        clock: StallClock,
        api_key: str,
        extra_headers: Mapping[str, str] | None,
    ) -> aiohttp.ClientResponse:
        """Sends the request and returns a 2xx response; any other status raises."""
        if self._session is None:
            raise RuntimeError("DeepSeekClient.start() was not awaited")
        loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {api_key}"}
        if extra_headers:
            headers.update(extra_headers)
        if body is not None and self._gzip_requests and len(body) >= _GZIP_MIN:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        try:
            headers_by = min(clock.read_by(loop.time()) + self._timeouts.connect, clock.deadline)
            async with asyncio.timeout_at(headers_by):
                response = await self._session.request(
                    method, self._url(path), data=body, headers=headers
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamError(
                "UPSTREAM_CONNECT_TIMEOUT", f"connecting to {self.host} timed out"
            ) from exc
        except TimeoutError as exc:
            raise self._timeout_error(clock, loop.time(), None) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(
                "UPSTREAM_CONNECT_FAILED", f"cannot connect to {self.host}: {exc.strerror}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                "UPSTREAM_CONNECT_FAILED", f"request to {self.host} failed: {type(exc).__name__}"
            ) from exc
        if response.status < 300:
            return response
        try:
            async with asyncio.timeout_at(clock.read_by(loop.time())):
                raw = await response.content.read(_MAX_ERROR_BODY)
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        finally:
            response.close()
        raise error_from_response(
            response.status,
            raw,
            trace_id=response.headers.get("x-ds-trace-id"),
            retry_after=response.headers.get("Retry-After"),
            secrets=(api_key,),
        )

    def _timeout_error(self, clock: StallClock, now: float, trace_id: str | None) -> UpstreamError:
        reason = clock.expired_reason(now)
        messages = {
            "DEADLINE_EXCEEDED": "the caller's deadline expired while waiting for DeepSeek",
            "UPSTREAM_TIMEOUT": "DeepSeek did not finish within the total timeout",
            "UPSTREAM_QUEUE_TIMEOUT": "DeepSeek kept the request queued past the queue timeout",
            "UPSTREAM_FIRST_BYTE_TIMEOUT": "DeepSeek sent nothing before the first-byte timeout",
            "UPSTREAM_STALLED": "DeepSeek stopped sending data (idle timeout)",
        }
        return UpstreamError(reason, messages[reason], trace_id=trace_id)

    async def _read(
        self, response: aiohttp.ClientResponse, clock: StallClock, trace_id: str | None
    ) -> bytes:
        """The next bytes of the body (b"" at its end), or the timeout that came first."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(clock.read_by(loop.time())):
                return await response.content.readany()
        except TimeoutError as exc:
            raise self._timeout_error(clock, loop.time(), trace_id) from exc
        except aiohttp.ClientError as exc:
            what = "stream" if clock.started else "response"
            raise UpstreamError(
                "UPSTREAM_STREAM_CUT",
                f"DeepSeek closed the connection mid-{what} ({type(exc).__name__})",
                trace_id=trace_id,
            ) from exc

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        deadline: float | None,
        *,
        api_key: str,
        headers: Mapping[str, str] | None = None,
    ) -> JSON:
        loop = asyncio.get_running_loop()
        clock = StallClock(self._timeouts, loop.time(), deadline)
        response = await self._open(method, path, body, clock, api_key, headers)
        trace_id = response.headers.get("x-ds-trace-id")
        buffer = bytearray()
        try:
            while chunk := await self._read(response, clock, trace_id):
                # While queued DeepSeek writes blank lines before the JSON body.
                if buffer or chunk.strip(_WHITESPACE):
                    clock.data(loop.time())
                    buffer += chunk
        except BaseException:
            response.close()
            raise
        response.release()
        if not buffer.strip(_WHITESPACE):
            raise UpstreamError(
                "UPSTREAM_EMPTY_RESPONSE", "DeepSeek answered with an empty body", trace_id=trace_id
            )
        try:
            result = orjson.loads(buffer)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "UPSTREAM_BAD_RESPONSE", "DeepSeek's answer is not valid JSON", trace_id=trace_id
            ) from exc
        if not isinstance(result, dict):
            raise UpstreamError(
                "UPSTREAM_BAD_RESPONSE", "DeepSeek's answer is not a JSON object", trace_id=trace_id
            )
        if "error" in result:
            raise error_from_event(result, trace_id=trace_id, secrets=(api_key,))
        return result

    async def stream(
        self,
        path: str,
        body: bytes,
        deadline: float | None,
        *,
        api_key: str,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[JSON, None]:
        loop = asyncio.get_running_loop()
        clock = StallClock(self._timeouts, loop.time(), deadline)
        response = await self._open("POST", path, body, clock, api_key, headers)
        trace_id = response.headers.get("x-ds-trace-id")
        parser = SSEParser()
        finished = False
        try:
            while chunk := await self._read(response, clock, trace_id):
                for data in parser.feed(chunk):
                    if data.startswith(b"[DONE]"):
                        finished = True
                        return
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError as exc:
                        raise UpstreamError(
                            "UPSTREAM_BAD_RESPONSE",
                            "DeepSeek sent an event that is not valid JSON",
                            trace_id=trace_id,
                        ) from exc
                    if not isinstance(event, dict):
                        raise UpstreamError(
                            "UPSTREAM_BAD_RESPONSE",
                            "DeepSeek sent an event that is not a JSON object",
                            trace_id=trace_id,
                        )
                    if "error" in event:
                        raise error_from_event(event, trace_id=trace_id, secrets=(api_key,))
                    clock.data(loop.time())
                    yield event
            raise UpstreamError(
                "UPSTREAM_STREAM_CUT",
                "DeepSeek ended the stream without [DONE]",
                trace_id=trace_id,
            )
        finally:
            # A finished stream returns its connection to the pool; anything else
            # (cancel, deadline, error) closes it so DeepSeek stops generating.
            if finished:
                response.release()
            else:
                response.close()
