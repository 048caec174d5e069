"""Run `kakitome serve` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

_KEY = re.compile(r"API key \(shown once, keep it\): (\S+)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """`python -m kakitome serve` with the given environment; output kept in a log file."""

    def __init__(self, env: dict[str, str], workdir: Path, roles: tuple[str, ...] = ()) -> None:
        # Inbound listeners off unless a test asks for them: the default ports (25, 587,
        # 465 on every address) belong to no test.
        quiet = {
            "KAKITOME_INBOUND__MX_PORT": "0",
            "KAKITOME_INBOUND__SUBMISSION_PORT": "0",
            "KAKITOME_INBOUND__SUBMISSIONS_PORT": "0",
        }
        self.env = {**os.environ, **quiet, **env}
        self.port = int(self.env.setdefault("KAKITOME_HTTP__PORT", str(free_port())))
        self.workdir = workdir
        self.roles = roles
        self.proc: subprocess.Popen[str] | None = None
        self.terminated = False
        self.output: list[str] = []
        self.api_key: str | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        args = [sys.executable, "-m", "kakitome", "serve"]
        for role in self.roles:
            args += ["--role", role]
        self.terminated = False
        self.proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("service exited early:\n" + "".join(self.output))
            if "web" not in self.roles and self.roles:
                if any("worker started" in line for line in self.output):
                    return self
            else:
                try:
                    healthy = httpx.get(self.url + "/healthz", timeout=1).status_code == 200
                    if healthy and any("Stop with Ctrl-C" in line for line in self.output):
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("service did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            match = _KEY.search(line)
            if match:
                self.api_key = match.group(1)

    def wait_for_key(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while self.api_key is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.api_key, "no API key printed:\n" + "".join(self.output)
        return self.api_key

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM without waiting (stop several at the same moment, then ``stop`` each)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        if not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def log(self) -> str:
        return "".join(self.output)
