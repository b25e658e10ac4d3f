"""`seekwire chat | models | balance | talk`: the client side of the `seekwire` command.

Exit codes a script can rely on:
  0 success; 1 other failure; 2 usage error;
  3 try again later (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED);
  4 the request must change (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND);
  5 credentials (UNAUTHENTICATED, PERMISSION_DENIED); 130 interrupted.
Errors go to stderr as `seekwire: CODE REASON: message`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

import grpc
import orjson
from google.protobuf import json_format

from seekwire.client.aio import DEFAULT_MODEL, AsyncClient
from seekwire.client.conversation import Conversation
from seekwire.client.errors import SeekwireError, from_status

EXIT_CODES = {
    grpc.StatusCode.UNAVAILABLE: 3,
    grpc.StatusCode.DEADLINE_EXCEEDED: 3,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 3,
    grpc.StatusCode.INVALID_ARGUMENT: 4,
    grpc.StatusCode.FAILED_PRECONDITION: 4,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.UNAUTHENTICATED: 5,
    grpc.StatusCode.PERMISSION_DENIED: 5,
}
INTERRUPTED = 130
Command = Callable[[argparse.Namespace, AsyncClient], Coroutine[Any, Any, int]]


def _to_json(message: Any) -> str:
    return orjson.dumps(
        json_format.MessageToDict(message, preserving_proto_field_name=True)
    ).decode()


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("SEEKWIRE_TARGET", "127.0.0.1:50051"),
        help="gateway host:port (env SEEKWIRE_TARGET)",
    )
    group.add_argument("--api-key", default=None, help="API key (prefer env SEEKWIRE_API_KEY)")
    group.add_argument("--token", default=None, help="JWT bearer token (prefer env SEEKWIRE_TOKEN)")
    group.add_argument(
        "--tls", action="store_true", help="use TLS (implied by --ca-cert or --cert)"
    )
    group.add_argument(
        "--ca-cert", type=Path, help="PEM of the CA that signed the gateway's certificate"
    )
    group.add_argument("--cert", type=Path, help="client certificate PEM, for mTLS")
    group.add_argument("--key", type=Path, help="client private key PEM, for mTLS")
    group.add_argument("--timeout", type=float, default=None, help="deadline in seconds")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--system", help="system prompt")
    parser.add_argument(
        "--thinking", action=argparse.BooleanOptionalAction, default=None, help="thinking mode"
    )
    parser.add_argument("--show-reasoning", action="store_true", help="print reasoning to stderr")


def register(commands: Any) -> None:
    """Adds the client commands to the `seekwire` command's subparsers."""
    chat = commands.add_parser("chat", help="ask the gateway once; streams the answer")
    chat.add_argument("prompt", help="the user message ('-' reads stdin)")
    chat.add_argument(
        "--no-stream", dest="stream", action="store_false", help="wait for the whole answer"
    )
    chat.add_argument(
        "--json", action="store_true", help="print DeepSeek-shaped JSON (a line per chunk)"
    )
    _model_flags(chat)
    _connection_flags(chat)
    chat.set_defaults(client_command=_chat)
    models = commands.add_parser("models", help="list the upstream's models")
    models.add_argument("--json", action="store_true")
    _connection_flags(models)
    models.set_defaults(client_command=_models)
    balance = commands.add_parser("balance", help="the upstream account's balance")
    balance.add_argument("--json", action="store_true")
    _connection_flags(balance)
    balance.set_defaults(client_command=_balance)
    talk = commands.add_parser(
        "talk", help="interactive conversation (Ctrl-C cancels an answer, Ctrl-D ends)"
    )
    talk.add_argument("--session", help="resume this session id")
    _model_flags(talk)
    _connection_flags(talk)
    talk.set_defaults(client_command=_talk)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    if args.thinking is None:
        return {}
    return {"thinking": {"type": "enabled" if args.thinking else "disabled"}}


async def _chat(args: argparse.Namespace, client: AsyncClient) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    kwargs = {"model": args.model, "system": args.system, "timeout": args.timeout, **_options(args)}
    if not args.stream:
        answer = await client.chat(prompt, **kwargs)
        if args.json:
            print(_to_json(answer))
        else:
            message = answer.choices[0].message
            if args.show_reasoning and message.reasoning_content:
                print(message.reasoning_content, file=sys.stderr)
            print(message.content)
        return 0
    async for chunk in client.stream_chat(prompt, **kwargs):
        if args.json:
            print(_to_json(chunk), flush=True)
            continue
        for choice in chunk.choices:
            if args.show_reasoning and choice.delta.reasoning_content:
                sys.stderr.write(choice.delta.reasoning_content)
                sys.stderr.flush()
            if choice.delta.content:
                sys.stdout.write(choice.delta.content)
                sys.stdout.flush()
    if not args.json:
        print()
    return 0


async def _models(args: argparse.Namespace, client: AsyncClient) -> int:
    for model in await client.models(timeout=args.timeout):
        print(_to_json(model) if args.json else model.id)
    return 0


async def _balance(args: argparse.Namespace, client: AsyncClient) -> int:
    balance = await client.balance(timeout=args.timeout)
    if args.json:
        print(_to_json(balance))
        return 0
    print("available" if balance.is_available else "NOT available")
    for info in balance.balance_infos:
        print(
            f"{info.currency} {info.total_balance} "
            f"(granted {info.granted_balance}, topped up {info.topped_up_balance})"
        )
    return 0


async def _talk(args: argparse.Namespace, client: AsyncClient) -> int:
    conversation = await client.conversation(
        model=args.model, system=args.system, session_id=args.session, **_options(args)
    )
    resumed = f", {conversation.resumed_messages} messages resumed" if args.session else ""
    print(
        f"session {conversation.session_id}{resumed}. Ctrl-C cancels an answer, Ctrl-D ends.",
        file=sys.stderr,
    )
    loop = asyncio.get_running_loop()
    running: list[str] = []  # the turn being answered, if any
    cancels: set[asyncio.Task[None]] = set()

    def interrupt() -> None:
        if running:
            task = loop.create_task(conversation.cancel(running[0]))
            cancels.add(task)
            task.add_done_callback(cancels.discard)

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        while True:
            sys.stdout.write("> ")
            sys.stdout.flush()
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:  # Ctrl-D
                print(file=sys.stdout)
                break
            if not line.strip():
                continue
            running.append(await conversation.send(line.rstrip("\n")))
            try:
                await _print_turn(conversation, running[0], args.show_reasoning, sys.stdout)
            finally:
                running.clear()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await conversation.close()
        conversation.abort()
    return 0


async def _print_turn(
    conversation: Conversation, turn_id: str, show_reasoning: bool, out: TextIO
) -> None:
    async for event in conversation.receive_turn(turn_id):
        kind = event.WhichOneof("event")
        if kind == "chunk":
            if show_reasoning and event.chunk.reasoning_content:
                sys.stderr.write(event.chunk.reasoning_content)
                sys.stderr.flush()
            if event.chunk.content:
                out.write(event.chunk.content)
                out.flush()
        elif kind == "turn_end":
            out.write("\n")
        elif kind == "error":
            error = from_status(event.error.status)
            label = "[cancelled]" if error.code is grpc.StatusCode.CANCELLED else f"[error] {error}"
            out.write(f"\n{label}\n")
            out.flush()


def run(args: argparse.Namespace) -> int:
    command: Command = args.client_command
    options: dict[str, Any] = {
        "api_key": args.api_key or os.environ.get("SEEKWIRE_API_KEY"),
        "bearer_token": args.token or os.environ.get("SEEKWIRE_TOKEN"),
        "tls": args.tls,
    }
    try:
        for name, path in (
            ("root_certificates", args.ca_cert),
            ("certificate_chain", args.cert),
            ("private_key", args.key),
        ):
            if path is not None:
                options[name] = path.read_bytes()
    except OSError as exc:
        print(f"seekwire: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        async with AsyncClient.connect(args.target, **options) as client:
            return await command(args, client)

    try:
        return asyncio.run(main())
    except SeekwireError as error:
        print(f"seekwire: {error}", file=sys.stderr)
        return EXIT_CODES.get(error.code, 1)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.stdout.write("\n")
        return INTERRUPTED
