"""Test helpers for object storage: a real S3-compatible server (moto's server mode), an uploader, and a
TCP proxy that can cut the model server off from storage (an outage) and counts the listings it forwards
(a poll happened).

Imported by the test modules of this folder (pytest puts the folder of a test module on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import boto3

BUCKET = "models"


class S3Server:
    """moto's S3 server on 127.0.0.1 with an OS-assigned port, and a boto3 client talking to it."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.address = (host, port)
        self.endpoint = f"http://{host}:{port}"
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.client.create_bucket(Bucket=BUCKET)

    def upload(self, prefix: str, version: int, files: dict[str, bytes]) -> None:
        """Put ``files`` (path under the version -> bytes) at ``<prefix>/<version>/...``, in order."""
        for name, data in files.items():
            self.client.put_object(Bucket=BUCKET, Key=f"{prefix}/{version}/{name}", Body=data)

    def delete_version(self, prefix: str, version: int) -> None:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{version}/")
        for item in listed.get("Contents", []):
            self.client.delete_object(Bucket=BUCKET, Key=item["Key"])

    def stop(self) -> None:
        self._server.stop()


class CuttableProxy:
    """Forwards TCP connections from 127.0.0.1:<port> to ``target`` until ``cut``.

    While cut, open connections are closed and new ones are accepted and closed at once (what a client
    sees of a storage endpoint that went away). ``listings`` counts the S3 list requests forwarded, so a
    test can wait until the model server has polled. ``throttle`` slows down what storage sends (a slow
    download); ``deny`` answers 403 to every GET of the object keys holding a string (an object that can
    never be read), counted in ``denied``.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self.listings = 0
        self.refused = 0  # connections turned away while cut
        self.bytes_per_second: int | None = None
        self.denied_keys: tuple[bytes, ...] = ()
        self.denied = 0
        self._closed = False
        threading.Thread(target=self._accept, name="s3-proxy", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            doomed, self._open = self._open, set()
        for sock in doomed:
            _close(sock)

    def throttle(self, bytes_per_second: int | None) -> None:
        """Forward at most ``bytes_per_second`` from storage on each connection (None: full speed)."""
        self.bytes_per_second = bytes_per_second

    def deny(self, *key_parts: str) -> None:
        """Answer 403 AccessDenied to every GET of an object whose key holds one of ``key_parts``."""
        self.denied_keys = tuple(part.encode() for part in key_parts)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    self.refused += 1
                    _close(client)
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client:
                    with self._lock:
                        self.listings += data.count(b"list-type=2")
                    if self._is_denied(data):
                        source.sendall(_ACCESS_DENIED)
                        return
                    sink.sendall(data)
                    continue
                rate = self.bytes_per_second
                if rate is None:
                    sink.sendall(data)
                    continue
                piece = max(1, rate // 20)
                for start in range(0, len(data), piece):
                    sink.sendall(data[start : start + piece])
                    time.sleep(piece / rate)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, sink}
            _close(source)
            _close(sink)

    def _is_denied(self, data: bytes) -> bool:
        request_line = data.split(b"\r\n", 1)[0]
        if not request_line.startswith(b"GET ") or not any(k in request_line for k in self.denied_keys):
            return False
        with self._lock:
            self.denied += 1
        return True


_DENIED_BODY = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
_ACCESS_DENIED = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_DENIED_BODY)).encode() + b"\r\n\r\n" + _DENIED_BODY
)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
