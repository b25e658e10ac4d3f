"""Settings precedence and validation: defaults < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from seekwire.server import config


def test_defaults() -> None:
    settings = config.load(env={})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.deepseek_base_url == "https://api.deepseek.com"
    assert settings.deepseek_api_key == ""


def test_precedence(tmp_path: Path) -> None:
    file = tmp_path / "seekwire.toml"
    file.write_text(
        'listen = "127.0.0.1:1"\nidle_timeout = 11\nqueue_timeout = 12\nreflection = false\n'
    )
    env = {
        "SEEKWIRE_CONFIG": str(file),
        "SEEKWIRE_IDLE_TIMEOUT": "21",
        "SEEKWIRE_LISTEN": "127.0.0.1:2",
    }
    settings = config.load({"listen": "127.0.0.1:3"}, env=env)
    assert settings.listen == "127.0.0.1:3"
    assert settings.idle_timeout == 21
    assert settings.queue_timeout == 12
    assert settings.reflection is False


def test_deepseek_names_for_key_and_url() -> None:
    settings = config.load(
        env={"DEEPSEEK_API_KEY": "sk-abc", "DEEPSEEK_BASE_URL": "http://127.0.0.1:9"}
    )
    assert settings.deepseek_api_key == "sk-abc"
    assert settings.deepseek_base_url == "http://127.0.0.1:9"
    assert "sk-abc" not in repr(settings)
    assert settings.public()["deepseek_api_key"] == "***"


def test_unknown_key_in_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("idle_timout = 3\n")
    with pytest.raises(config.SettingsError, match="unknown setting 'idle_timout'"):
        config.load(env={}, config_file=str(file))


def test_every_problem_is_named() -> None:
    with pytest.raises(config.SettingsError) as caught:
        config.load({"listen": "x", "total_timeout": "0", "max_message_bytes": "1"}, env={})
    message = str(caught.value)
    assert "listen" in message
    assert "total_timeout" in message
    assert "max_message_bytes" in message


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in config.Settings.__dataclass_fields__:
        assert f"| {config.Settings.env_name(name)} |" in readme, name
