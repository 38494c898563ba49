"""nginx in front of the gateway: the generated config, the installed binary's abilities, its command line.

Why nginx at all: it buffers whole request bodies and responses, so a slow client never holds a Gunicorn
worker (sync workers are one request at a time), and it keeps connections to the gateway alive. The config
is self-contained and needs no root: every path nginx writes (pid file, logs, body and proxy buffers) lies
in a runtime folder of the stack's own, and ``daemon off`` keeps the master in the foreground, a child of
the stack.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelserve.stack.processes import StackError

# Debian puts nginx in /usr/sbin, which is not on a normal user's PATH.
_FALLBACK_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")
# Temp folders of optional modules: their directive is unknown when the module is not compiled in, and
# their compiled-in default (/var/lib/nginx/...) needs root, so each one present gets a folder of ours.
_OPTIONAL_TEMP_MODULES = ("fastcgi", "uwsgi", "scgi")
_ERROR_LOG_FLAG_SINCE = (1, 19, 5)  # `nginx -e FILE`: the error log before the config is read


@dataclass(frozen=True, slots=True)
class NginxBuild:
    """The nginx binary and what it was built with (read from ``nginx -V``)."""

    binary: str
    version: tuple[int, ...]
    temp_modules: tuple[str, ...]  # optional modules compiled in that have a temp path

    @property
    def has_error_log_flag(self) -> bool:
        return self.version >= _ERROR_LOG_FLAG_SINCE


def find_nginx(binary: str = "nginx") -> NginxBuild:
    """Locate ``binary`` (a name on PATH, in /usr/sbin, or a path) and read its version and modules."""
    path = shutil.which(binary)
    if path is None and "/" not in binary:
        path = next((p for d in _FALLBACK_DIRS if (p := shutil.which(binary, path=d))), None)
    if path is None:
        raise StackError(
            f"nginx not found ({binary!r}): install it (Debian/Ubuntu: apt-get install nginx-light) "
            f"or pass --nginx-binary=/path/to/nginx"
        )
    try:
        done = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise StackError(f"cannot run {path}: {exc}") from exc
    info = done.stdout + done.stderr  # nginx -V prints to stderr
    match = re.search(r"nginx/(\d+(?:\.\d+)*)", info)
    if done.returncode != 0 or match is None:
        raise StackError(f"{path} -V failed (is it nginx?):\n{info.strip()}")
    version = tuple(int(part) for part in match.group(1).split("."))
    modules = tuple(m for m in _OPTIONAL_TEMP_MODULES if f"--without-http_{m}_module" not in info)
    return NginxBuild(binary=path, version=version, temp_modules=modules)


@dataclass(frozen=True, slots=True)
class NginxSettings:
    """What the generated config says: where nginx listens, the gateway it proxies to, limits, timeouts."""

    listen_host: str
    listen_port: int
    gateway_host: str
    gateway_port: int
    workers: str = "1"  # worker_processes: a number or "auto" (one per core)
    keepalive_connections: int = 32  # idle connections to the gateway kept open per nginx worker
    max_body_bytes: int = 16 * 1024 * 1024  # client_max_body_size: the gateway's own limit
    timeout_seconds: float = 30.0  # the gateway's request timeout; nginx waits a little longer
    shutdown_timeout_seconds: float = 30.0  # a graceful stop (SIGQUIT) waits this long for requests
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class NginxFiles:
    """Where one nginx instance keeps its files: a private runtime folder, and logs in the stack's log dir."""

    runtime_dir: Path
    log_dir: Path

    @property
    def config(self) -> Path:
        return self.runtime_dir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.log_dir / "nginx.log"

    @property
    def access_log(self) -> Path:
        return self.log_dir / "nginx-access.log"


def url_host(host: str) -> str:
    """``host`` as it appears in a URL or an nginx address: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host


def connect_host(bind_host: str) -> str:
    """The address to reach a server bound to ``bind_host`` (a wildcard bind is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind_host, bind_host)


def render_config(settings: NginxSettings, files: NginxFiles, build: NginxBuild) -> str:
    """The nginx.conf text (docs/stack.md shows an example)."""
    runtime = files.runtime_dir
    # nginx must not give up before the gateway does. A gateway request can take up to two model-server
    # calls (REST metadata, then predict) each retried up to twice, so wait beyond that worst case.
    upstream_timeout = math.ceil(settings.timeout_seconds) * 6 + 5
    shutdown_timeout = math.ceil(settings.shutdown_timeout_seconds)
    temp_paths = "\n".join(
        f"    {module}_temp_path {runtime / module};"
        for module in ("client_body", "proxy", *build.temp_modules)
    )
    access_log = (
        f"access_log {files.access_log} combined buffer=64k flush=1s;"
        if settings.access_log
        else "access_log off;"
    )
    return f"""\
# Generated by `modelserve stack`: nginx in front of the modelserve gateway (docs/stack.md).
daemon off;                      # stays a child of `modelserve stack`
worker_processes {settings.workers};
worker_shutdown_timeout {shutdown_timeout}s;  # on SIGQUIT: finish requests, then close
pid {runtime / "nginx.pid"};
error_log {files.error_log} warn;

events {{
    worker_connections 1024;
}}

http {{
    {access_log}
{temp_paths}
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 65s;

    upstream modelserve_gateway {{
        server {url_host(connect_host(settings.gateway_host))}:{settings.gateway_port};
        keepalive {settings.keepalive_connections};
        # Below Gunicorn's own keep-alive (2 s): nginx closes an idle connection before Gunicorn does,
        # so it never sends a request on a connection the gateway is closing.
        keepalive_timeout 1s;
    }}

    server {{
        listen {url_host(settings.listen_host)}:{settings.listen_port};
        client_max_body_size {settings.max_body_bytes};
        client_body_buffer_size 1m;   # typical JSON bodies stay in memory
        # nginx's own errors in the gateway's format ({{"error": ...}}) rather than HTML pages.
        error_page 413 = @too_large;
        error_page 502 503 504 = @gateway_unavailable;
        location @too_large {{
            default_type application/json;
            return 413 '{{"error": "Request body too large: the limit is {settings.max_body_bytes} bytes"}}';
        }}
        location @gateway_unavailable {{
            default_type application/json;
            return 503 '{{"error": "the gateway is not answering"}}';
        }}

        location / {{
            proxy_pass http://modelserve_gateway;
            proxy_http_version 1.1;           # needed for keep-alive to the upstream
            proxy_set_header Connection "";   # ... and so is dropping the client's Connection header
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 5s;
            proxy_send_timeout {upstream_timeout}s;
            proxy_read_timeout {upstream_timeout}s;
        }}
    }}
}}
"""


def write_config(settings: NginxSettings, files: NginxFiles, build: NginxBuild) -> Path:
    """Write nginx.conf into the runtime folder (readable by nginx workers that run as another user)."""
    files.runtime_dir.mkdir(parents=True, exist_ok=True)
    # When the stack runs as root, nginx workers run as "nobody": they must reach the temp folders.
    files.runtime_dir.chmod(0o755)
    files.log_dir.mkdir(parents=True, exist_ok=True)
    files.config.write_text(render_config(settings, files, build))
    return files.config


def nginx_command(build: NginxBuild, files: NginxFiles, *extra: str) -> list[str]:
    """The command line that runs nginx on ``files`` (``extra``: e.g. ``-t`` to only check the config)."""
    command = [build.binary, "-p", f"{files.runtime_dir}/", "-c", str(files.config)]
    if build.has_error_log_flag:
        command += ["-e", str(files.error_log)]  # also for messages before the config is read
    return [*command, *extra]


def check_config(build: NginxBuild, files: NginxFiles) -> None:
    """``nginx -t``: raise StackError with nginx's own message when the config is refused."""
    done = subprocess.run(
        nginx_command(build, files, "-t", "-q"), capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        log = files.error_log.read_text(errors="replace") if files.error_log.exists() else ""
        raise StackError(f"nginx -t refused {files.config}:\n{(done.stdout + done.stderr + log).strip()}")
