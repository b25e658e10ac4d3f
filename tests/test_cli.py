"""`seekwire chat | models | balance | talk` against a running `seekwire serve --fake-upstream`."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pexpect
import pytest

from tests.conftest import SEEKWIRE, Served, clean_env


async def seekwire(served: Served | None, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    target = served.target if served else "127.0.0.1:1"
    process = await asyncio.create_subprocess_exec(
        *SEEKWIRE,
        *args,
        "--target",
        target,
        env=clean_env(SEEKWIRE_API_KEY=served.api_key if served else "sk-sw-none-none"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_chat_streams_the_answer(served: Served) -> None:
    code, out, err = await seekwire(served, "chat", "Hello", "--show-reasoning")
    assert code == 0
    assert out.startswith("Sure, here is a fake answer")
    assert err.startswith("The user wants")


async def test_chat_no_stream_json_and_stdin(served: Served) -> None:
    code, out, _ = await seekwire(
        served,
        "chat",
        "-",
        "--no-stream",
        "--json",
        "--system",
        "S",
        stdin=b"[fake echo] from stdin",
    )
    assert code == 0
    answer = orjson.loads(out)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "from stdin"
    code, out, _ = await seekwire(served, "chat", "Hello", "--json", "--no-thinking")
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines[0]["object"] == "chat.completion.chunk"
    assert lines[-1]["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize(
    ("prompt", "extra", "code", "message"),
    [
        ("[fake status=429]", (), 3, "RESOURCE_EXHAUSTED UPSTREAM_RATE_LIMITED"),
        ("hi", ("--model", ""), 4, "INVALID_ARGUMENT INVALID_REQUEST"),
        ("[fake status=402]", (), 4, "FAILED_PRECONDITION UPSTREAM_INSUFFICIENT_BALANCE"),
        ("[fake status=401]", (), 1, "INTERNAL UPSTREAM_AUTH"),
    ],
)
async def test_chat_failures_have_exit_codes_and_one_line(
    served: Served, prompt: str, extra: tuple[str, ...], code: int, message: str
) -> None:
    exit_code, _, err = await seekwire(served, "chat", prompt, *extra)
    assert exit_code == code
    assert err.startswith(f"seekwire: {message}")
    assert "Traceback" not in err


async def test_unreachable_gateway_exits_3() -> None:
    code, _, err = await seekwire(None, "models", "--timeout", "5")
    assert code == 3
    assert err.startswith("seekwire: UNAVAILABLE")


async def test_models_and_balance(served: Served) -> None:
    code, out, _ = await seekwire(served, "models")
    assert (code, out.split()) == (0, ["deepseek-v4-flash", "deepseek-v4-pro"])
    code, out, _ = await seekwire(served, "balance")
    assert code == 0
    assert out.splitlines() == ["available", "USD 110.00 (granted 10.00, topped up 100.00)"]
    code, out, _ = await seekwire(served, "balance", "--json")
    assert orjson.loads(out)["balance_infos"][0]["currency"] == "USD"


def _talk(target: str, api_key: str) -> int:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "seekwire.server.cli", "talk", "--target", target, "--no-thinking"],
        env=clean_env(SEEKWIRE_API_KEY=api_key),
        timeout=20,
        encoding="utf-8",
    )
    child.expect("Ctrl-D ends")
    child.expect("> ")
    child.sendline("hello")
    child.expect("Sure, here is a fake answer from\r\n")
    child.expect("> ")
    child.sendline("[fake tokens=3000 token_delay=0.01] a long one")
    child.expect("Sure, here is")
    child.sendintr()  # Ctrl-C: cancels the answer, not the session
    child.expect(r"\[cancelled\]")
    child.expect("> ")
    child.sendline("[fake echo] still here")
    child.expect("still here\r\n")
    child.expect("> ")
    child.sendeof()  # Ctrl-D: ends
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


async def test_talk_through_a_pseudo_terminal(served: Served) -> None:
    assert await asyncio.to_thread(_talk, served.target, served.api_key) == 0
