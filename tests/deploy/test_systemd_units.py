"""The systemd units stop restarting on a configuration error: each unit's own ``ExecStart`` is
run with a broken config, and the exit status must be one its ``RestartPreventExitStatus``
lists (else ``Restart=on-failure`` would start it again every few seconds, forever). The
templates (``torviz-peer-agent@``, ``torviz-tracker-agent@``) run as instance ``peer-2`` and
``tracker-2``, as in deploy/README.md; tests/deploy/test_guide.py checks that each unit passes
what the guide's by-hand command for it passes."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"

BROKEN_CONFIGS = {
    "unknown key": "[coordinator]\nmax_peers = 3\n",
    "not TOML": "[coordinator\n",
    "tcp bus without keys": '[coordinator]\nbus = "tcp://127.0.0.1:7799"\n',
}


def unit_settings(unit: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[key.strip()] = value.strip()
    return settings


def command_of(unit: Path, config: Path, scratch: Path) -> list[str]:
    """The unit's ExecStart as this checkout runs it, with its paths moved into ``scratch``."""
    settings = unit_settings(unit)
    (scratch / "keys").mkdir(exist_ok=True)
    (scratch / "state").mkdir(mode=0o700, exist_ok=True)
    text = (
        settings["ExecStart"]
        .replace("${STATE_DIRECTORY}", str(scratch / "state"))
        .replace("${TORVIZ_COORDINATOR}", "tcp://127.0.0.1:7798")
        .replace("%i", unit.stem.removeprefix("torviz-").split("-")[0] + "-2")  # peer-2, ...
        .replace("/etc/torviz/config.toml", str(config))
    )
    argv = shlex.split(text)
    argv = [str(scratch / "keys") if arg.startswith("/etc/torviz/keys") else arg for arg in argv]
    program = Path(argv[0]).name.removeprefix("torviz-").replace("-", "_")
    return [sys.executable, "-m", f"torviz.services.{program}", *argv[1:]]


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.stem)
@pytest.mark.parametrize("broken", list(BROKEN_CONFIGS), ids=list(BROKEN_CONFIGS))
def test_a_config_error_does_not_restart_the_unit(unit: Path, broken: str, tmp_path: Path) -> None:
    settings = unit_settings(unit)
    assert settings["Restart"] == "on-failure"
    prevented = {int(code) for code in settings["RestartPreventExitStatus"].split()}
    config = tmp_path / "config.toml"
    config.write_text(BROKEN_CONFIGS[broken])
    result = subprocess.run(
        command_of(unit, config, tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode in prevented, (result.returncode, result.stderr)
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "error" in line
