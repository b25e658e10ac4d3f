"""The `seekwire` command: `serve` runs the gateway, `fake` a fake DeepSeek; `chat`, `models`,
`balance` and `talk` are the client's (seekwire.client.cli)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from seekwire.client import cli as client_cli
from seekwire.server import config, keys_cli
from seekwire.server.app import Gateway
from seekwire.server.fake import FakeDeepSeek
from seekwire.server.telemetry import logs

NO_KEY = """\
seekwire: no DeepSeek API key.
  Set one:        DEEPSEEK_API_KEY=sk-... seekwire serve
                  (or deepseek_api_key in a --config TOML file, or --upstreams-file)
  Or run offline: seekwire serve --fake-upstream   (make run does this when no key is set)"""


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(config.Settings):
        flag = "--" + f.name.replace("_", "-")
        help_text = (
            f"{f.metadata['help']} (env {config.Settings.env_name(f.name)}, default {f.default!r})"
        )
        if f.metadata["secret"]:
            help_text = (
                f"{f.metadata['help']} (env {config.Settings.env_name(f.name)}; prefer the env)"
            )
        if f.type == "bool":
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=f.name, default=None, metavar=str(f.type).upper(), help=help_text
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seekwire", description="gRPC gateway to DeepSeek")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML file of settings (env SEEKWIRE_CONFIG)")
    _add_setting_flags(serve)
    fake = commands.add_parser("fake", help="run the fake DeepSeek HTTP server alone")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8000)
    fake.add_argument("--api-key", action="append", help="accepted key (repeatable; default: any)")
    keys_cli.register(commands)
    client_cli.register(commands)
    return parser


async def _first_signal() -> signal.Signals:
    """Waits for SIGTERM or SIGINT and says which came."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def receive(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, receive, sig)
    return await received


async def _serve(settings: config.Settings) -> int:
    gateway = Gateway(settings)
    await gateway.start()
    received = await _first_signal()
    logging.getLogger("seekwire").info("%s: draining", received.name)
    # A person's Ctrl-C need not wait for load balancers to notice.
    await gateway.drain(delay=None if received is signal.SIGTERM else 0)
    return 0


async def _fake(host: str, port: int, keys: list[str] | None) -> int:
    fake = FakeDeepSeek(
        host=host, port=port, api_keys=tuple(keys) if keys else None, keep_requests=1000
    )
    print(f"fake DeepSeek at {await fake.start()}", flush=True)
    await _first_signal()
    await fake.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(args, "client_command"):
        return client_cli.run(args)
    if hasattr(args, "keys_command"):
        return int(args.keys_command(args))
    if args.command == "fake":
        logging.basicConfig(level=logging.INFO)
        return asyncio.run(_fake(args.host, args.port, args.api_key))
    flags: dict[str, Any] = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(config.Settings)
        if getattr(args, f.name) is not None
    }
    try:
        settings = config.load(flags, config_file=args.config)
    except config.SettingsError as exc:
        print(f"seekwire: invalid settings: {exc}", file=sys.stderr)
        return 2
    if not (settings.deepseek_api_key or settings.fake_upstream or settings.upstreams_file):
        print(NO_KEY, file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        if settings.event_loop == "uvloop":
            import uvloop

            return uvloop.run(_serve(settings))
        return asyncio.run(_serve(settings))
    except OSError as exc:
        print(f"seekwire: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
