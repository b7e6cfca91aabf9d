"""Fixtures: a real master-events server (the binary built from this repository:
target/debug/master-events, or $MASTER_EVENTS_BIN) on a free loopback port, in a temp
dir, killed at the end of each test whatever happens."""

import os
import pathlib
import socket
import subprocess
import time

import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
# The tests test this source tree (the test command also pip-installs it, to show the
# package installs).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
BIN = os.environ.get("MASTER_EVENTS_BIN", str(ROOT / "target" / "debug" / "master-events"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`master-events serve` on one port; `restart()` keeps the port (and the file
    log, when `persistent`)."""

    def __init__(self, workdir, persistent=False, config_extra="", env=None):
        self.workdir = pathlib.Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.workdir / "config.toml"
        text = ""
        if persistent:
            text += f'[[sinks]]\ntype = "file"\ndir = "{self.workdir / "log"}"\nfsync = "always"\n'
        text += config_extra
        self.config.write_text(text)
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("MASTER_EVENTS_USERS", None)
        self.proc = None
        self.start()

    def start(self):
        if not pathlib.Path(BIN).exists():
            pytest.fail(f"{BIN} is missing: build it with `cargo build -p master-events-cli`")
        deadline = time.monotonic() + 30
        while True:
            self.proc = subprocess.Popen(
                [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--config", str(self.config)],
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self.env,
                text=True,
            )
            line = self.proc.stdout.readline()
            if line.startswith("listening on "):
                return
            # The port may still be held by the killed server's sockets: retry.
            self.proc.wait(timeout=10)
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not start on port {self.port}: {line!r}")
            time.sleep(0.1)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture()
def make_server(tmp_path):
    servers = []

    def make(**kwargs):
        workdir = tmp_path / f"s{len(servers)}"
        workdir.mkdir()
        s = Server(workdir, **kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
