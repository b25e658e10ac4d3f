"""The framework floor: the least a grpc.aio + aiohttp relay to DeepSeek can do (request to
JSON, one pooled HTTP call, JSON to message), with none of seekwire's features. The bench
runs it beside seekwire to show what the features cost and what the frameworks cost.

    python -m bench.relay 127.0.0.1:PORT http://127.0.0.1:FAKE_PORT
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import orjson
import uvloop
from google.protobuf import json_format

from seekwire.v1 import chat_pb2, chat_pb2_grpc

HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}


class Relay(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session, self._url = session, base_url + "/chat/completions"

    def _body(self, request: chat_pb2.ChatCompletionRequest, stream: bool) -> bytes:
        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        return orjson.dumps({**body, "stream": stream})

    async def CreateChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Any
    ) -> chat_pb2.ChatCompletion:
        async with self._session.post(self._url, data=self._body(request, False)) as response:
            return chat_pb2.ChatCompletion(**orjson.loads(await response.read()))

    async def StreamChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Any
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        async with self._session.post(self._url, data=self._body(request, True)) as response:
            async for line in response.content:
                if line.startswith(b"data: {"):
                    yield chat_pb2.ChatCompletionChunk(**orjson.loads(line[6:]))


async def main(listen: str, base_url: str) -> None:
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        server = grpc.aio.server()
        chat_pb2_grpc.add_ChatServiceServicer_to_server(Relay(session, base_url), server)
        server.add_insecure_port(listen)
        await server.start()
        print("relay listening on", listen, flush=True)
        await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2]))
