"""The processes under test: the fake DeepSeek, seekwire and LiteLLM's proxy, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

BENCH = Path(__file__).parent
LITELLM_VENV = BENCH / ".litellm-venv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@contextlib.asynccontextmanager
async def process(
    *args: str, ready: str = "", port: int = 0, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Runs a peer until the block ends; ready when it prints `ready` or accepts on `port`.
    Once it is ready, `cat` drains its output (as a container runtime would): reading a
    gateway's access log in the load generator would take CPU from it, and writing it to a
    file costs the gateway more than a pipe."""
    read_end, write_end = os.pipe()
    env = dict(env or os.environ, PYTHONUNBUFFERED="1")  # readiness lines come at once
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=write_end, stderr=subprocess.STDOUT, env=env
    )
    os.close(write_end)
    drain: asyncio.subprocess.Process | None = None
    try:
        async with asyncio.timeout(180):
            if port:
                while not await _listening(port):
                    if proc.returncode is not None:
                        raise RuntimeError(f"{args[:3]} exited before it was ready")
                    await asyncio.sleep(0.5)
            elif not await asyncio.to_thread(_wait_for, read_end, ready.encode()):
                raise RuntimeError(f"{args[:3]} exited before it was ready")
        drain = await asyncio.create_subprocess_exec(
            "cat", stdin=read_end, stdout=subprocess.DEVNULL
        )
        yield proc
    finally:
        os.close(read_end)
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        if drain is not None:
            await drain.wait()


def _wait_for(fd: int, text: bytes) -> bool:
    """Reads `fd` until `text` appears (True) or the writer exits (False)."""
    seen = b""
    while text not in seen:
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        seen = seen[-len(text) :] + chunk
    return True


def litellm() -> Path | None:
    """LiteLLM's proxy in a venv of its own (its dependencies are not seekwire's); None when it
    cannot be installed here."""
    executable = LITELLM_VENV / "bin" / "litellm"
    if not executable.exists():
        print("installing LiteLLM's proxy into bench/.litellm-venv (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"]
        if subprocess.run(pip, check=False).returncode != 0:
            shutil.rmtree(LITELLM_VENV, ignore_errors=True)
            return None
    return executable


LITELLM_MASTER_KEY = "sk-bench-" + "0123456789abcdef" * 4


def litellm_config(path: Path, fake_url: str) -> Path:
    """deepseek/ provider at the fake; a master key, so LiteLLM authenticates each call too."""
    path.write_text(
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
        "model_list:\n"
        "  - model_name: deepseek-v4-flash\n"
        "    litellm_params:\n"
        "      model: deepseek/deepseek-v4-flash\n"
        f"      api_base: {fake_url}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
    )
    return path


@dataclass
class Sink:
    url: str
    exports: int = 0
    bytes: int = 0


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[Sink]:
    """An OTLP/HTTP receiver that counts what it gets and answers with an empty success."""
    port = free_port()
    sink = Sink(f"http://127.0.0.1:{port}")

    async def receive(request: web.Request) -> web.Response:
        sink.exports += 1
        sink.bytes += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield sink
    finally:
        await runner.cleanup()
