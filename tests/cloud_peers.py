"""Local stand-ins for Google Cloud on 127.0.0.1 (the gcp-storage-emulator process, a GCE metadata server that hands out
a token), and `isolated_env`: a subprocess environment that cannot import chosen packages or resolve public names."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

PROJECT = "test-project"

# Loaded by every Python process started with isolated_env (workers of the local runner too): names in
# WEBTEXT_TEST_BLOCK cannot be imported, as if not installed; resolving a name other than a loopback one is an error.
SITECUSTOMIZE = textwrap.dedent('''
    import importlib.machinery, os, socket, sys

    class _WithoutBlocked:
        """Python's path finder, blind to the blocked packages (a top-level name or a dotted one, e.g. google.cloud.storage):
        find_spec gives None and import fails, as if absent."""

        names = set(filter(None, os.environ.get("WEBTEXT_TEST_BLOCK", "").split(",")))

        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if any(name == blocked or name.startswith(blocked + ".") for blocked in self.names):
                return None
            return self.finder.find_spec(name, path, target)

        def __getattr__(self, attribute):
            return getattr(self.finder, attribute)

    sys.meta_path[:] = [_WithoutBlocked(f) if f is importlib.machinery.PathFinder else f for f in sys.meta_path]

    _getaddrinfo = socket.getaddrinfo
    _LOCAL = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "", None}

    def _loopback_only(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOCAL and not str(name).startswith("127."):
            with open(os.environ["WEBTEXT_TEST_RESOLVED"], "a") as seen:
                seen.write(f"{name}\\n")
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: public name looked up in a test")
        return _getaddrinfo(host, *args, **kwargs)

    if os.environ.get("WEBTEXT_TEST_RESOLVED"):
        socket.getaddrinfo = _loopback_only
''')


def isolated_env(folder: Path, block: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """Environment for a subprocess: `block` unimportable, public names unresolvable (each recorded in
    folder/resolved.txt)."""
    site = folder / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["WEBTEXT_TEST_BLOCK"] = ",".join(block)
    env["WEBTEXT_TEST_RESOLVED"] = str(folder / "resolved.txt")
    env.update(extra)
    return env


def public_names_resolved(folder: Path) -> list[str]:
    path = folder / "resolved.txt"
    return sorted(set(path.read_text().split())) if path.exists() else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class StorageEmulator:
    url: str  # http://127.0.0.1:PORT, the value of STORAGE_EMULATOR_HOST
    bucket: str
    data_dir: Path


@contextmanager
def storage_emulator(data_dir: Path, bucket: str = "bucket") -> Iterator[StorageEmulator]:
    """The gcp-storage-emulator package's server, as its own process on 127.0.0.1, storing files under data_dir."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "--data-dir", str(data_dir), "start",
                                "--host", "127.0.0.1", "--port", str(port), "--default-bucket", bucket, "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        yield StorageEmulator(f"http://127.0.0.1:{port}", bucket, data_dir)
    finally:
        process.terminate()
        process.wait(timeout=10)


class _Metadata(BaseHTTPRequestHandler):
    """The GCE metadata endpoints google-auth reads: the ping, the project, the default account and its token."""

    ANSWERS = {
        "/": "",
        "/computeMetadata/v1/project/project-id": PROJECT,
        "/computeMetadata/v1/instance/service-accounts/default/": json.dumps(
            {"email": f"worker@{PROJECT}.iam.gserviceaccount.com", "aliases": ["default"],
             "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}),
        "/computeMetadata/v1/instance/service-accounts/default/token": json.dumps(
            {"access_token": "test-token", "expires_in": 3600, "token_type": "Bearer"}),
    }

    def do_GET(self) -> None:
        answer = self.ANSWERS.get(self.path.split("?", 1)[0])
        body = (answer if answer is not None else "not found").encode()
        self.send_response(200 if answer is not None else 404)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/json" if body.startswith(b"{") else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def metadata_server() -> Iterator[str]:
    """A GCE metadata server on 127.0.0.1: google-auth finds "Compute Engine" credentials at once, offline.

    Yields host:port for GCE_METADATA_HOST and GCE_METADATA_IP."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def google_env(emulator: StorageEmulator, metadata: str) -> dict[str, str]:
    """What points Beam's GCS client at the emulator and google-auth at the local metadata server."""
    return {"STORAGE_EMULATOR_HOST": emulator.url, "GCE_METADATA_HOST": metadata, "GCE_METADATA_IP": metadata,
            "GOOGLE_CLOUD_PROJECT": PROJECT, "GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": "/nonexistent"}
