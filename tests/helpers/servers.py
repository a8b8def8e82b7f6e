"""The server tests' tiny run, and a real `groklm serve` process on loopback.

Starting a server imports torch in a new process, seconds on a busy machine, so the server
test modules share one: `shared_server()` starts it on first use and stops it when the test
process exits (and, on Linux, the kernel stops it if the test process dies first).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers.runs import tiny_run

MODEL = "tiny"
KEY = "test-key-0123456789"
BLOCK_SIZE = 512  # room for a tools prompt in characters
MAX_BATCH = 32
MAX_BODY = 64 * 1024


@dataclass
class Server:
    url: str
    run: Path
    log: Path
    process: subprocess.Popen

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {KEY}"}


def make_server_run(directory: Path) -> Path:
    """A random tiny GPT with an ASCII character tokenizer: fast, and its greedy output is fixed."""
    return tiny_run(directory, block_size=BLOCK_SIZE, n_embd=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_server(run: Path, log: Path, *options: str) -> Server:
    """`groklm serve RUN` on a free loopback port, up and answering /health."""
    port = free_port()
    command = [sys.executable, "-m", "groklm", "serve", str(run), "--port", str(port), "--model-name", MODEL, *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model decodes fastest on one thread
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
    server = Server(f"http://127.0.0.1:{port}", run, log, process)
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"the server did not come up:\n{log.read_text()}")
        time.sleep(0.2)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


_shared: list[Server] = []


def shared_server() -> Server:
    """The test session's server: key KEY, MAX_BATCH slots and no waiting line (so the
    MAX_BATCH + 1st request in flight gets 429), bodies up to MAX_BODY bytes."""
    if not _shared:
        directory = Path(tempfile.mkdtemp(prefix="groklm-serve-test-"))
        run = make_server_run(directory / "run")
        server = start_server(run, directory / "server.log", "--api-key", KEY, "--max-batch", str(MAX_BATCH),
                              "--max-waiting", "0", "--max-body-bytes", str(MAX_BODY))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        atexit.register(stop_server, server)  # runs first: atexit is last in, first out
        _shared.append(server)
    return _shared[0]


def wait_idle(server: Server, until: Callable[[dict], bool] = lambda health: True) -> dict:
    """Poll /health until no request is in flight and `until(health)` holds; return it.

    `until` waits out what "in flight" does not show: a request the server has counted but not
    yet handed to the engine, or one whose engine slot is freed but whose ending is not yet counted."""
    deadline = time.monotonic() + 30
    while True:
        health = httpx.get(server.url + "/health").json()
        if health["in_flight"] == 0 and health["running"] == 0 and health["waiting"] == 0 and until(health):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"requests still in flight, or not settled: {health}")
        time.sleep(0.05)


@contextmanager
def held(server: Server):
    """The server process stopped (SIGSTOP), every thread of it: the kernel still takes a
    client's bytes, but nothing runs and nothing comes back until it resumes. Entering returns
    once the process has actually stopped, so whatever it sent before is in the client's socket."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        tasks = Path(f"/proc/{server.process.pid}/task")
        deadline = time.monotonic() + 30
        while not all(stopped(task / "stat") for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise AssertionError("the server process did not stop on SIGSTOP")
            time.sleep(0.001)
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def stopped(stat: Path) -> bool:
    """Is this thread stopped by a signal? (/proc/PID/task/TID/stat: state after the name's ')')."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "T"
    except FileNotFoundError:  # the thread ended meanwhile
        return True


def chat_body(**fields) -> dict:
    """A small valid chat request (two tokens of reply), with `fields` added or replaced."""
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}


def assert_error(response: httpx.Response, status: int, says: str = "") -> dict:
    """The response is an OpenAI-shaped error with this status whose message contains `says`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert says.lower() in error["message"].lower(), error["message"]
    return error
