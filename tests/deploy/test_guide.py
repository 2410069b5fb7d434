"""deploy/README.md's "Running across machines", followed as written on four simulated hosts.

The commands come from the guide's own fenced blocks (tests/support/guide.py reads them and
their markers: ``sh host=N`` runs on host N, ``toml host=N file=PATH`` is that file,
``skip-in-test=WHY`` is not run), changed only by the substitution table the guide prints in
"How this guide is tested": its fixed paths go below a folder per host, 10.0.0.N becomes host
N's address, ``ssh root@10.0.0.N`` runs on host N, the ``torviz`` user is root. The steps then
run in order: folders, the config, ``keys init``, the copies of the bundles, the services (a
line ending in `` &`` keeps running), ``status --json`` until every agent the guide starts is
listed, and ``add`` of a multi-file torrent whose pieces cross file boundaries. Host 4 holds
opentracker and aria2 seeders (not libtorrent); the torrent must download complete and
identical. What ``keys init`` printed must be the guide's commands.

The fast tests at the top need no root: every block of the section is run or marked as not
run, the by-hand path starts every service with a complete command line, and each systemd
unit passes what the guide's command for it passes. Every wait is bounded; every process and
namespace is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.content import (
    ContentSpec,
    TorrentFile,
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
)
from testing.hosts import HostProcess, NamespaceHosts
from tests.support.aria2 import Aria2Seeder, missing_aria2, start_aria2_seeder, wait_announced
from tests.support.guide import (
    GUIDE,
    SERVICES,
    Block,
    Command,
    GuideError,
    HostMap,
    agent_commands,
    commands,
    options_of,
    read_blocks,
)
from tests.support.netns import hosts_or_skip

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
SUBNET = "10.213.23"
"""This module's hosts; other modules pick other subnets."""
HOSTS = 4
SEED_HOST = 4
SIZE = 8 * 1024 * 1024 + 12_345
PIECE = 256 * 1024
SEEDERS = 3
SLOW = 1_000_000
"""Bytes per second each aria2 seeder uploads: a few seconds for the whole torrent."""
COMMAND_TIMEOUT = 60.0
REGISTER_TIMEOUT = 30.0
DOWNLOAD_TIMEOUT = 60.0
REFUSAL_TIMEOUT = 20.0
ROLES = {"storage": "storage_agent", "tracker": "tracker_agent", "peer": "peer_agent"}


# --- the guide, read ---------------------------------------------------------------------------


def guide_blocks() -> list[Block]:
    return read_blocks(GUIDE.read_text(encoding="utf-8"))


def guide_commands() -> list[Command]:
    return [c for b in guide_blocks() if b.language == "sh" and b.skip is None for c in commands(b)]


def guide_services() -> list[Command]:
    return [c for c in guide_commands() if c.background]


def agent_id(argv: list[str]) -> str:
    _, options = options_of(argv)
    return dict(options).get("--agent-id", "")


def role_of(name: str) -> str:
    return next((role for prefix, role in ROLES.items() if name.startswith(prefix)), "")


def test_every_block_of_the_section_is_run_or_marked_as_not_run() -> None:
    blocks = guide_blocks()  # raises on a block with neither host= nor skip-in-test=
    ran = [b for b in blocks if b.skip is None]
    assert ran and all(b.hosts for b in ran)
    assert {b.skip for b in blocks if b.skip is not None} == {"install", "systemd"}
    hosts = {h for b in ran for h in b.hosts}
    assert hosts == {1, 2, 3}, hosts  # host 4 is the test's: the rest of the swarm


def test_an_unmarked_block_is_an_error_not_a_gap() -> None:
    text = "## Running across machines\n\n```sh\ntorviz-coordinator start\n```\n"
    with pytest.raises(GuideError, match="host=N") as caught:
        read_blocks(text)
    assert caught.value.reason == "unmarked_block"
    with pytest.raises(GuideError, match="needs file="):
        read_blocks("## Running across machines\n```toml host=1\n[x]\n```\n")


def test_the_by_hand_path_starts_every_service_completely() -> None:
    services = guide_services()
    by_id: dict[str, Command] = {}
    coordinator = []
    for command in services:
        argv = command.argv
        program, options = options_of(argv)
        keys = {key for key, _ in options}
        if program == "torviz-coordinator":
            assert argv[1] == "start", command
            assert {"--config", "--state-dir"} <= keys, command
            coordinator.append(command)
            continue
        assert program in SERVICES, command
        name = agent_id(argv)
        assert name not in by_id, f"{name} started twice: one agent id, one process"
        by_id[name] = command
        assert {"--coordinator", "--agent-id", "--keys", "--config"} <= keys, command
        assert program == f"torviz-{role_of(name).replace('_', '-')}", (name, program)
        if program == "torviz-storage-agent":
            assert {"--data", "--state-dir"} <= keys, command  # resume state kept
    assert [c.host for c in coordinator] == [1]
    assert {(by_id[n].host, n) for n in by_id} == {
        (1, "storage"),
        *((host, f"{kind}-{host}") for host in (2, 3) for kind in ("peer", "tracker")),
    }


def _unit_command(unit: Path, instance: str) -> list[str]:
    settings = dict(
        line.split("=", 1)
        for line in unit.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    state = settings.get("StateDirectory", "")
    text = (
        settings["ExecStart"]
        .replace("${TORVIZ_COORDINATOR}", "tcp://10.0.0.1:7700")
        .replace("${STATE_DIRECTORY}", f"/var/lib/{state}")
        .replace("%i", instance)
    )
    return shlex.split(text)


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.stem)
def test_each_unit_passes_what_the_guide_passes_by_hand(unit: Path) -> None:
    services = {agent_id(c.argv) or "coordinator": c.argv for c in guide_services()}
    program = unit.stem.removesuffix("@")
    if unit.stem.endswith("@"):
        kind = program.removeprefix("torviz-").split("-")[0]
        instance = next(name for name in services if role_of(name) == ROLES[kind])
    else:
        instance = "storage" if "storage" in program else "coordinator"
    unit_program, unit_options = options_of(_unit_command(unit, instance))
    guide_program, guide_options = options_of(services[instance])
    assert unit_program == guide_program == program
    # The unit may leave out what the config says (--data); it passes nothing else.
    assert unit_options <= guide_options, unit_options - guide_options


def test_the_substitution_table() -> None:
    mapping = HostMap(
        roots={1: Path("/w/h1"), 2: Path("/w/h2")},
        addresses={1: "10.9.9.1", 2: "10.9.9.2"},
        netns={1: "ns-1", 2: "ns-2"},
        bin_dir=Path("/venv/bin"),
        torrent=Path("/w/t.torrent"),
    )
    line = (
        "tar -C /etc/torviz/keys/agents -c peer-2 | ssh root@10.0.0.2 "
        "'install -d -m 0700 /etc/torviz/keys && tar -x && chown -R torviz:torviz /etc/torviz'"
    )
    assert mapping.command(Command(1, 1, line)) == (
        "tar -C /w/h1/etc/torviz/keys/agents -c peer-2 | ip netns exec ns-2 bash -c "
        "'install -d -m 0700 /w/h2/etc/torviz/keys && tar -x && chown -R root:root "
        "/w/h2/etc/torviz'"
    )
    line = "sudo -u torviz /opt/torviz/bin/torviz-coordinator add --state-dir /var/lib/torviz/c"
    line += " FILE.torrent"
    assert mapping.text(line, 2) == (
        "/venv/bin/torviz-coordinator add --state-dir /w/h2/var/lib/torviz/c /w/t.torrent"
    )
    assert mapping.text("install -d -o torviz -g torviz /srv/torviz/x", 1) == (
        "install -d -o root -g root /w/h1/srv/torviz/x"
    )
    assert mapping.text('bus = "tcp://10.0.0.1:7700"', 2) == 'bus = "tcp://10.9.9.1:7700"'
    assert mapping.unmap("--keys /w/h1/etc/torviz/keys --coordinator tcp://10.9.9.1:7700") == (
        "--keys /etc/torviz/keys --coordinator tcp://10.0.0.1:7700"
    )
    for bad in ("ls /opt/torviz/lib", "ping 10.0.0.7"):
        with pytest.raises(GuideError):
            mapping.text(bad, 1)


# --- the guide, followed on simulated hosts ------------------------------------------------------


@dataclass
class Seeded:
    content: ContentSpec
    torrent: TorrentFile
    seeders: list[Aria2Seeder]


class GuideRun:
    """The guide's steps, run on the hosts in order; the services it starts, by agent id
    (``coordinator`` for ``start``); what each one-shot command printed."""

    def __init__(self, hosts: NamespaceHosts, mapping: HostMap, work: Path) -> None:
        self.hosts = hosts
        self.mapping = mapping
        self.work = work
        self.services: dict[str, HostProcess] = {}
        self.outputs: list[tuple[Command, str]] = []
        self.status_command: Command | None = None

    def follow(self, blocks: list[Block]) -> None:
        for block in blocks:
            if block.skip is not None:
                continue
            if block.file is not None:
                for host in block.hosts:
                    self.write(block, host)
                continue
            for command in commands(block):
                if command.background:
                    self.start(command)
                else:
                    self.run(command)

    def write(self, block: Block, host: int) -> None:
        assert block.file is not None
        path = self.mapping.path(block.file, host)
        assert path.parent.is_dir(), (
            f"guide line {block.line}: {block.file} is written on host {host} before its "
            "folder exists"
        )
        path.write_text(self.mapping.text(block.text, host), encoding="utf-8")

    def start(self, command: Command) -> None:
        argv = shlex.split(self.mapping.text(shlex.join(command.argv), command.host))
        name = agent_id(argv) or "coordinator"
        assert name not in self.services, f"guide line {command.line}: {name} started twice"
        self.services[name] = self.hosts.start(
            command.host, name, argv, log_dir=self.work / "logs", cwd=self.work
        )

    def run(
        self, command: Command, *, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        if " status --json" in command.text:
            # The check step: run until it lists every agent started so far (the daemon may
            # not answer yet right after its start, as for a person typing it).
            self.status_command = command
            started = {name for name in self.services if name != "coordinator"}
            self.wait_status(
                lambda d: started <= set(agents_of(d)),
                REGISTER_TIMEOUT,
                f"agents {sorted(started)} registered",
            )
        shell = self.mapping.command(command)
        result = self.hosts.run(
            command.host, ["bash", "-o", "pipefail", "-c", shell], timeout, cwd=self.work
        )
        if check:
            assert result.returncode == 0, (
                f"guide line {command.line} on host {command.host} exited {result.returncode}: "
                f"{command.text}\nran: {shell}\n{result.stdout}{result.stderr}"
                f"{self.exited()}"
            )
        self.outputs.append((command, result.stdout))
        return result

    def output_of(self, needle: str) -> str:
        return next(out for command, out in self.outputs if needle in command.text)

    def exited(self) -> str:
        """The services that exited, with their log tails (for failure messages)."""
        return "".join(
            f"\n{name} exited {p.wait(0)}: {p.log_tail('welcomed cli')}"
            for name, p in self.services.items()
            if not p.is_running()
        )

    def status(self) -> dict[str, Any]:
        """The guide's own ``status --json`` command, run again."""
        assert self.status_command is not None, "the guide has no status --json step"
        shell = self.mapping.command(self.status_command)
        result = self.hosts.run(
            self.status_command.host, ["bash", "-o", "pipefail", "-c", shell], COMMAND_TIMEOUT
        )
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert isinstance(document, dict)
        return document

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if self.exited():
                pytest.fail(f"waiting for {what}: a service exited:{self.exited()}")
            try:
                document = self.status()
            except (AssertionError, ValueError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
            else:
                if predicate(document):
                    return document
                last = json.dumps(document)[-3000:]
            if time.monotonic() > deadline:
                coordinator = self.services.get("coordinator")
                log = coordinator.log_tail("welcomed cli") if coordinator else ""
                pytest.fail(
                    f"{what}: not within {timeout:.0f} s; last status: {last}\n"
                    f"coordinator log: {log}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        for process in self.services.values():
            process.send_signal(signal.SIGTERM)
        for process in self.services.values():
            process.stop()


def agents_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agent["id"]: agent for agent in document["agents"]}


def torrent_of(document: dict[str, Any]) -> dict[str, Any] | None:
    torrents = document["torrents"]
    return torrents[0] if torrents else None


@pytest.fixture(scope="module")
def hosts(
    tmp_path_factory: pytest.TempPathFactory, interop_tools: None
) -> Iterator[NamespaceHosts]:
    missing = missing_aria2()
    if missing:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{missing} (CI=true: CI installs it, so this is a failure)")
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("guide")
    with hosts_or_skip(work, HOSTS, SUBNET, prefix=f"tvg{os.getpid()}") as made:
        yield made


@pytest.fixture(scope="module")
def seeded(hosts: NamespaceHosts) -> Iterator[Seeded]:
    """The content, its torrent (announcing to opentracker on host 4) and aria2 seeders there,
    each on its own address, known to opentracker."""
    root = hosts.work_dir / "seed"
    content = make_content(root, multi_file_layout(SIZE), seed=23)
    assert content.pieces_spanning_files(PIECE) >= 3
    probe = make_torrent(content, PIECE, [], hosts.work_dir / "probe.torrent")
    tracker = hosts.tracker(SEED_HOST, [probe.info_hash])
    torrent = make_torrent(
        content, PIECE, [tracker.http_announce_url], hosts.work_dir / "t.torrent"
    )
    assert torrent.info_hash == probe.info_hash
    seeders: list[Aria2Seeder] = []
    try:
        for i in range(SEEDERS):
            seeders.append(
                start_aria2_seeder(
                    torrent.path,
                    root,
                    hosts.add_address(SEED_HOST, 101 + i),
                    hosts.work_dir / "logs",
                    upload_limit=SLOW,
                    netns=hosts[SEED_HOST].netns,
                )
            )
        wait_announced(
            tracker.host,
            tracker.port,
            torrent.info_hash,
            SEEDERS,
            15.0,
            netns=hosts[SEED_HOST].netns,
        )
        yield Seeded(content, torrent, seeders)
    finally:
        for seeder in seeders:
            seeder.stop()


@pytest.fixture(scope="module")
def deployment(hosts: NamespaceHosts, seeded: Seeded) -> Iterator[GuideRun]:
    """The guide followed up to and with ``add``: every service runs, every agent is listed."""
    work = hosts.work_dir / "run"
    mapping = HostMap(
        roots={h.index: work / f"h{h.index}" for h in hosts.hosts},
        addresses={h.index: h.address for h in hosts.hosts},
        netns={h.index: h.netns for h in hosts.hosts},
        bin_dir=Path(sys.executable).parent,
        torrent=seeded.torrent.path,
    )
    assert (mapping.bin_dir / "torviz-coordinator").exists(), (
        f"{mapping.bin_dir} has no torviz-coordinator: pip install -e . in the test's venv"
    )
    for root in mapping.roots.values():
        root.mkdir(parents=True)  # a fresh host: nothing of torviz on it yet
    run = GuideRun(hosts, mapping, work)
    try:
        run.follow(guide_blocks())
        yield run
    finally:
        run.stop()


@pytest.mark.interop
def test_the_guide_as_written_downloads_a_torrent_on_four_hosts(
    hosts: NamespaceHosts, seeded: Seeded, deployment: GuideRun
) -> None:
    run = deployment
    listed = agents_of(run.status())
    for name in (n for n in run.services if n != "coordinator"):
        assert listed[name]["role"] == role_of(name), listed[name]
        assert listed[name]["pid"] == run.services[name].pid, listed[name]
    for host in (2, 3):
        # A peer agent tells the address it is reached at: its own host's.
        assert listed[f"peer-{host}"]["address"].startswith(f"{hosts[host].address}:")
    seen: dict[str, int] = {}

    def complete(document: dict[str, Any]) -> bool:
        for name, agent in agents_of(document).items():
            seen[name] = max(seen.get(name, 0), int(agent["connections"]))
        torrent = torrent_of(document)
        return torrent is not None and torrent["progress"] == 1.0

    run.wait_status(complete, DOWNLOAD_TIMEOUT, "the torrent downloaded")
    downloads = run.mapping.path("/srv/torviz/downloads", 1)
    assert compare_content(seeded.content.root, downloads, seeded.content) == []
    assert seen.get("peer-2", 0) > 0 and seen.get("peer-3", 0) > 0, seen
    for seeder in seeded.seeders:
        assert seeder.process.is_running(), seeder.log_tail()


@pytest.mark.interop
def test_keys_init_prints_the_commands_of_the_guide(deployment: GuideRun) -> None:
    run = deployment
    printed = agent_commands(run.mapping.unmap(run.output_of(" keys init ")))
    assert printed, f"keys init printed no agent command: {run.output_of(' keys init ')}"
    guide = {
        agent_id(c.argv): options_of(c.argv)
        for c in guide_services()
        if options_of(c.argv)[0] in SERVICES
    }
    for argv in printed:
        name = agent_id(argv)
        assert name in guide, f"keys init printed a command for {name!r}: {shlex.join(argv)}"
        assert options_of(argv) == guide[name], (shlex.join(argv), guide[name])
    assert {agent_id(argv) for argv in printed} == set(guide)


@pytest.mark.interop
def test_the_guides_copy_commands_are_those_keys_init_printed(deployment: GuideRun) -> None:
    run = deployment
    printed = [
        " ".join(line.split())
        for line in run.mapping.unmap(run.output_of(" keys init ")).splitlines()
        if "| ssh HOST " in line
    ]
    copies = [c for c in guide_commands() if "| ssh root@" in c.text]
    assert copies, "the guide copies no bundle"
    for command in copies:
        target = command.text.split("| ssh ", 1)[1].split()[0]
        filled = {line.replace("| ssh HOST ", f"| ssh {target} ") for line in printed}
        assert " ".join(command.text.split()) in filled, (command.text, printed)


@pytest.mark.interop
def test_each_tracker_agent_announces_its_hosts_peer_agent(
    hosts: NamespaceHosts, deployment: GuideRun
) -> None:
    document = deployment.wait_status(
        lambda d: (t := torrent_of(d)) is not None and len(t.get("announces", ())) >= 2,
        REGISTER_TIMEOUT,
        "both tracker agents announcing",
    )
    torrent = torrent_of(document)
    assert torrent is not None
    announces = {a["tracker_agent"]: a for a in torrent["announces"]}
    agents = agents_of(document)
    for host in (2, 3):
        # From its own host, the port of the peer agent there: where trackers send peers.
        announce = announces[f"tracker-{host}"]
        assert announce["peer_agent"] == f"peer-{host}", announce
        assert announce["address"] == agents[f"peer-{host}"]["address"], (announce, agents)
        assert announce["address"].startswith(f"{hosts[host].address}:"), announce
        assert agents[f"tracker-{host}"]["address"] == hosts[host].address
    assert torrent["reachable"] is True


@pytest.mark.interop
def test_a_second_process_with_a_live_agents_id_exits_with_status_2(
    deployment: GuideRun,
) -> None:
    run = deployment
    [original] = [c for c in guide_services() if agent_id(c.argv) == "peer-2"]
    again = Command(3, original.line, original.text.rstrip().removesuffix("&").rstrip())
    try:
        result = run.run(again, check=False, timeout=REFUSAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second peer-2 process still ran after {REFUSAL_TIMEOUT:.0f} s")
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert [line for line in result.stderr.splitlines() if line.strip()], "no line saying why"
    assert run.services["peer-2"].is_running()
    listed = agents_of(run.status())
    assert listed["peer-2"]["pid"] == run.services["peer-2"].pid
