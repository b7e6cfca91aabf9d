"""Fixtures: a real master-events server (the binary built from this repository:
target/debug/master-events, built by `cargo build -p master-events-cli` when missing,
or $MASTER_EVENTS_BIN) on a free loopback port, in a temp dir (its log in
server.log there), killed at the end of each test whatever happens."""

import functools
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
# The tests test this source tree (the test command also pip-installs it, to show the
# package installs).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
BIN = os.environ.get("MASTER_EVENTS_BIN", str(ROOT / "target" / "debug" / "master-events"))


@functools.cache
def ensure_binary():
    """The repository's debug binary is built when missing (`$MASTER_EVENTS_BIN`, when
    set, must exist)."""
    if pathlib.Path(BIN).exists():
        return
    if "MASTER_EVENTS_BIN" in os.environ:
        pytest.fail(f"MASTER_EVENTS_BIN={BIN} does not exist")
    build = subprocess.run(["cargo", "build", "-p", "master-events-cli"], cwd=ROOT, timeout=1800)
    if build.returncode != 0 or not pathlib.Path(BIN).exists():
        pytest.fail(f"{BIN} is missing and `cargo build -p master-events-cli` did not build it")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`master-events serve` (or `demo`, with `command`) on one port; `restart()`
    keeps the port (and the file log, when `persistent`). `args`: more flags."""

    def __init__(self, workdir, persistent=False, config_extra="", env=None, args=(), command="serve", scheme="http"):
        self.workdir = pathlib.Path(workdir)
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.command = command
        self.args = list(args)
        self.config = self.workdir / "config.toml"
        text = ""
        if persistent:
            text += f'[[sinks]]\ntype = "file"\ndir = "{self.workdir / "log"}"\nfsync = "always"\n'
        text += config_extra
        self.config.write_text(text)
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("MASTER_EVENTS_USERS", None)
        self.proc = None
        # The server's log, kept in the temp dir (pytest prints its path on a failure).
        self.stderr = open(self.workdir / "server.log", "a")
        self.start()

    def start(self):
        ensure_binary()
        deadline = time.monotonic() + 30
        while True:
            argv = [BIN, self.command, "--listen", f"127.0.0.1:{self.port}", *self.args]
            if self.command == "serve":
                argv += ["--config", str(self.config)]
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                env=self.env,
                text=True,
            )
            line = self.proc.stdout.readline()
            if line.startswith("listening on "):
                # Later output (demo's instructions) goes nowhere: stop reading, but
                # never let a full pipe block the server.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
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

    def close(self):
        self.stop()
        self.stderr.close()

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
        s.close()
