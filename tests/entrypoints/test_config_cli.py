"""``opsicle config show`` and ``opsicle run migrations``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.errors import Invalid
from entrypoints import settings
from entrypoints.main import run


def test_config_show_names_where_each_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("runner: docker\nslack-app-token: xapp-1-A1-secret\n")
    monkeypatch.setenv("OPSICLE_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("OPSICLE_OUTPUT", "json")
    assert run(["--config", str(config), "config", "show"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["runner"] == {
        "setting": "runner",
        "value": "docker",
        "from": f"config file {config}",
    }
    assert rows["secret-key"]["value"] == "***"
    assert rows["secret-key"]["from"] == "environment OPSICLE_SECRET_KEY"
    assert rows["slack-app-token"]["value"] == "***"
    assert rows["output"]["from"] == "environment OPSICLE_OUTPUT"
    assert rows["listen"]["from"] == "default"


def test_run_migrations_goes_forward_and_refuses_what_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    data = str(tmp_path / "data")
    assert run(["run", "migrations", "--data-dir", data, "--to", "0002"]) == 0
    assert "empty -> 0002" in capsys.readouterr().out
    assert run(["run", "migrations", "--data-dir", data, "-o", "json"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["from"] == "0002" and moved["to"] != "0002"
    assert run(["run", "migrations", "--data-dir", data, "--to", "0001"]) == 2
    assert "only upgrades are done" in capsys.readouterr().err
    assert run(["run", "migrations", "--data-dir", data, "--to", "nope"]) == 2
    assert "Can't locate revision identified by 'nope'" in capsys.readouterr().err


def test_webhook_timeout_comes_from_a_flag_the_environment_or_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("webhook-timeout: 20\n")
    monkeypatch.delenv("OPSICLE_WEBHOOK_TIMEOUT", raising=False)

    def shown() -> dict[str, object]:
        assert run(["--config", str(config), "-o", "json", "config", "show"]) == 0
        rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
        return dict(rows["webhook-timeout"])

    assert shown() == {"setting": "webhook-timeout", "value": 20.0,
                       "from": f"config file {config}"}
    monkeypatch.setenv("OPSICLE_WEBHOOK_TIMEOUT", "2.5")
    assert shown()["value"] == 2.5
    resolved = settings.load(config, {"OPSICLE_WEBHOOK_TIMEOUT": "2.5"}, webhook_timeout=4)
    assert (resolved["webhook-timeout"], resolved.origin("webhook-timeout")) == (
        4.0, "flag --webhook-timeout")
    assert settings.load(None, {"XDG_CONFIG_HOME": str(tmp_path / "none")})[
        "webhook-timeout"] == 10.0
    monkeypatch.setenv("OPSICLE_WEBHOOK_TIMEOUT", "0")
    assert run(["--config", str(config), "config", "show"]) == 2
    err = capsys.readouterr().err
    assert "OPSICLE_WEBHOOK_TIMEOUT: expected seconds above 0 to 3600" in err
    assert "Traceback" not in err
    for role in ("controller", "coordinator", "standalone"):
        assert run(["start", role, "--help"]) == 0
        assert "--webhook-timeout" in capsys.readouterr().out


def test_webhook_retention_is_a_whole_number_of_days_from_the_environment_or_the_file(
    tmp_path: Path,
) -> None:
    none = {"XDG_CONFIG_HOME": str(tmp_path / "none")}
    assert settings.load(None, none)["webhook-retention-days"] == 30
    config = tmp_path / "config.yaml"
    config.write_text("webhook-retention-days: 7\n")
    assert settings.load(config, none)["webhook-retention-days"] == 7
    env = {**none, "OPSICLE_WEBHOOK_RETENTION_DAYS": "0"}
    with pytest.raises(Invalid, match=r"expected a whole number from 1 to 3650, got '0' "
                                      r"\(environment OPSICLE_WEBHOOK_RETENTION_DAYS\)"):
        settings.load(config, env)


def test_migrate_is_a_boolean_setting_from_any_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("OPSICLE_MIGRATE", "yes")
    assert run(["config", "show", "-o", "json"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["migrate"]["value"] is True
    monkeypatch.setenv("OPSICLE_MIGRATE", "sometimes")
    assert run(["config", "show"]) == 2
    assert "migrate: expected true or false, got 'sometimes' (environment OPSICLE_MIGRATE)" in (
        capsys.readouterr().err
    )
