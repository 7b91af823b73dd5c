"""Process-level test harness: starts real `hotswapd` processes and talks HTTP to them.

Python 3 standard library only. Conventions (see tests/process/README-less brief in the lead's
issue and api-v1.md):

* the binary comes from env HOTSWAPD; a missing binary is a test error, never a skip;
* every node gets its own temporary directory with node.toml, data/, stdout.log, stderr.log;
* the node's environment is scrubbed of every HOTSWAP* variable of the test runner (so that
  HOTSWAPD, HOTSWAP_SOURCE_DIR and HOTSWAP_TEST_PG_URL are never read as config overrides);
  a test passes the overrides it wants explicitly (Node(env={...}));
* readiness = GET /health answers 200 "Healthy" (polled with a deadline); stop = SIGTERM and exit 0;
* logs of the nodes of a failed test are printed to stderr and their directories kept.
"""

import base64
import datetime
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

START_DEADLINE = 30.0
STOP_DEADLINE = 20.0
POLL_INTERVAL = 0.05

DEMO_PASSWORDS = {
    "admin": "Admin123!",
    "deployer": "Deploy123!",
    "viewer": "Viewer123!",
}

SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "content-security-policy",
    "permissions-policy",
    "x-request-id",
)

# Errors that mean "the peer closed or reset a connection we were using".
CONNECTION_LOST = (
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


# --------------------------------------------------------------------------------------------
# Environment


def hotswapd_binary():
    path = os.environ.get("HOTSWAPD", "")
    if not path:
        raise AssertionError(
            "env HOTSWAPD is not set: run these tests through ctest (it passes "
            "$<TARGET_FILE:hotswapd>) or export HOTSWAPD=/path/to/hotswapd")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError(f"HOTSWAPD={path!r} is not an executable file")
    return path


def source_dir():
    path = os.environ.get("HOTSWAP_SOURCE_DIR", "")
    if path:
        return path
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def child_environment(extra=None):
    """The runner's environment without any HOTSWAP* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HOTSWAP")}
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


_used_ports = set()
_ports_lock = threading.Lock()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (never the same twice per run)."""
    with _ports_lock:
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _used_ports:
                _used_ports.add(port)
                return port
    raise AssertionError("could not find a free TCP port")


def port_accepts(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout, message, interval=POLL_INTERVAL):
    """Polls `predicate` until it returns a truthy value (returned) or fails at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported at the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}{extra}")
        time.sleep(interval)


def unique(prefix="t"):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def traceparent():
    """A fresh W3C traceparent header value and its 32-hex trace id."""
    trace_id = uuid.uuid4().hex
    span_id = uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id


def b64url_decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_parts(token):
    """(header dict, claims dict, signature bytes) of a compact JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AssertionError(f"not a compact JWT (3 dot-separated parts): {token!r}")
    header = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    return header, claims, b64url_decode(parts[2])


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(text):
    """Parses an RFC 3339 timestamp into an aware datetime (fraction truncated to microseconds)."""
    if not isinstance(text, str):
        raise AssertionError(f"not an RFC 3339 timestamp string: {text!r}")
    m = _RFC3339.match(text)
    if not m:
        raise AssertionError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hh, mm, ss = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(8) or "0")[:6].ljust(6, "0"))
    zone = m.group(9)
    if zone in ("Z", "z"):
        tz = datetime.timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime.datetime(year, month, day, hh, mm, ss, micro, tzinfo=tz)


def rfc3339(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


# --------------------------------------------------------------------------------------------
# TOML


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key):
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def render_toml(tables, prefix=""):
    """Renders {table: {key: value | {subtable...}}} as TOML."""
    out = []
    for name, content in tables.items():
        path = f"{prefix}.{_toml_key(name)}" if prefix else _toml_key(name)
        scalars = {k: v for k, v in content.items() if not isinstance(v, dict)}
        subtables = {k: v for k, v in content.items() if isinstance(v, dict)}
        out.append(f"[{path}]")
        for k, v in scalars.items():
            out.append(f"{_toml_key(k)} = {_toml_value(v)}")
        out.append("")
        if subtables:
            out.append(render_toml(subtables, path))
    return "\n".join(out)


def deep_merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


# --------------------------------------------------------------------------------------------
# PostgreSQL


def pg_base_url():
    url = os.environ.get("HOTSWAP_TEST_PG_URL", "")
    if not url:
        raise AssertionError(
            "HOTSWAP_TEST_PG_URL is not set: the PostgreSQL variant of this test needs a "
            "running server, e.g. HOTSWAP_TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres "
            "(the test creates and drops its own database)")
    return url


def _psql(url, sql):
    proc = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                          capture_output=True, text=True, timeout=60,
                          env=child_environment())
    return proc


def _pg_url_with_db(base, dbname):
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("postgres", "postgresql"):
        raise AssertionError(f"HOTSWAP_TEST_PG_URL must be a postgresql:// URL, got {base!r}")
    return urllib.parse.urlunsplit(("postgresql", parts.netloc, "/" + dbname, parts.query, ""))


def create_pg_database():
    """Creates a fresh database on the server of HOTSWAP_TEST_PG_URL; returns (url, name)."""
    base = pg_base_url()
    name = f"hotswap_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    proc = _psql(base, f'CREATE DATABASE "{name}"')
    if proc.returncode != 0:
        raise AssertionError(f"psql could not create database {name} on HOTSWAP_TEST_PG_URL: "
                             f"{proc.stderr.strip()}")
    return _pg_url_with_db(base, name), name


def drop_pg_database(name):
    base = os.environ.get("HOTSWAP_TEST_PG_URL", "")
    if not base:
        return
    proc = _psql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if proc.returncode != 0:
        _psql(base, f'DROP DATABASE IF EXISTS "{name}"')


# --------------------------------------------------------------------------------------------
# HTTP


class Response(tuple):
    """(status, headers, body): headers lower-cased, body parsed JSON or text.

    Also: .raw (bytes), .header_list (list of (name, value) as received), .is_json.
    """

    def __new__(cls, status, headers, body, raw=b"", header_list=None, is_json=False):
        self = super().__new__(cls, (status, headers, body))
        self.raw = raw
        self.header_list = header_list or []
        self.is_json = is_json
        return self

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    body = property(lambda self: self[2])

    @property
    def content_type(self):
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def __repr__(self):
        body = self.body if self.is_json else (self.body[:500] if isinstance(self.body, str) else self.body)
        return f"<Response {self.status} {self.content_type} {body!r}>"


def _headers_dict(header_list):
    headers = {}
    for name, value in header_list:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def make_response(status, header_list, raw):
    headers = _headers_dict(header_list)
    ctype = headers.get("content-type", "").lower()
    text = raw.decode("utf-8", errors="replace")
    if "json" in ctype and raw.strip():
        try:
            return Response(status, headers, json.loads(text), raw, header_list, True)
        except ValueError:
            pass
    return Response(status, headers, text, raw, header_list, False)


def encode_body(body=None, raw=None, headers=None):
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    elif raw is not None:
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        hdrs.setdefault("Content-Type", "application/json")
    return data, hdrs


def http_exchange(conn, method, path, data=None, headers=None):
    """One request on an http.client connection; returns a Response (body fully read)."""
    hdrs = dict(headers or {})
    if data is not None or method in ("POST", "PUT", "PATCH"):
        hdrs.setdefault("Content-Length", str(len(data or b"")))
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    raw = resp.read()
    return make_response(resp.status, resp.getheaders(), raw)


def raw_exchange(port, head, body=b"", timeout=30.0):
    """Sends a request over a raw socket and reads one response.

    `head` is the request line and headers (without the blank line). The body is sent in chunks;
    sending stops as soon as the server has answered or closed (an early 413 is legal), and the
    response is read afterwards.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
        view = memoryview(body)
        sent = 0
        while sent < len(view):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sent += sock.send(view[sent:sent + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break
        return _read_raw_response(sock, timeout)
    finally:
        sock.close()


def _read_raw_response(sock, timeout):
    deadline = time.monotonic() + timeout
    buf = b""

    def more():
        nonlocal buf
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out reading a raw HTTP response")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        buf += chunk
        return bool(chunk)

    while b"\r\n\r\n" not in buf:
        if not more():
            raise AssertionError(f"connection closed before a complete response head: {buf[:200]!r}")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    status = int(status_parts[1])
    header_list = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        header_list.append((name.strip(), value.strip()))
    headers = _headers_dict(header_list)
    buf = rest
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buf) < length:
            if not more():
                raise AssertionError("connection closed inside the response body")
        body = buf[:length]
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            while b"\r\n" not in buf:
                if not more():
                    raise AssertionError("connection closed inside a chunked body")
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                if not more():
                    raise AssertionError("connection closed inside a chunk")
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        while more():
            pass
        body = buf
    return make_response(status, header_list, body)


# --------------------------------------------------------------------------------------------
# Node


# --------------------------------------------------------------------------------------------
# Clusters (test_cluster*, bench/failover_bench.py)

# Fast cluster timings for tests: failover in about two seconds.
FAST_CLUSTER = {"heartbeat_ms": 200, "node_ttl_ms": 1000, "takeover_margin_ms": 300,
                "rebalance_ms": 200}


def redis_url():
    """The Redis of the test run (scripts/services.sh); a missing one is an error, not a skip."""
    url = os.environ.get("HOTSWAP_TEST_REDIS_URL", "")
    if not url:
        raise AssertionError("HOTSWAP_TEST_REDIS_URL is not set: run through scripts/test.sh or "
                             "scripts/services.sh run -- ctest ...")
    return url


def metric(node, name):
    """Sum of a Prometheus counter over its label sets on `node` (0 when absent)."""
    resp = node.get("/metrics")
    total = 0.0
    for line in str(resp.body).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class NodeStartError(AssertionError):
    pass


class Node:
    """One hotswapd process with its own directory, config, port and store."""

    _counter = 0
    _counter_lock = threading.Lock()

    def __init__(self, dev_mode=True, config=None, extra_toml="", env=None, rate_limits=None,
                 pg=False, store_url=None, name=None):
        with Node._counter_lock:
            Node._counter += 1
            self.index = Node._counter
        self.binary = hotswapd_binary()
        self.pg_db = None
        if pg:
            store_url, self.pg_db = create_pg_database()
        self.dir = tempfile.mkdtemp(prefix=f"hstest-{name or 'node'}-")
        self.data_dir = os.path.join(self.dir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.config_path = os.path.join(self.dir, "node.toml")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.node_id = f"test-{self.index}"
        self.port = free_port()
        self.cluster_port = free_port()
        self.dev_mode = dev_mode
        self.env = dict(env or {})
        self.store_url = store_url or f"sqlite://{self.data_dir}/hotswap.db"
        cfg = {
            "node": {"id": self.node_id, "data_dir": self.data_dir, "dev_mode": dev_mode},
            "http": {"listen": f"127.0.0.1:{self.port}"},
            "store": {"url": self.store_url},
            "cluster": {"listen": f"127.0.0.1:{self.cluster_port}"},
            "rate_limits": {"login": 1000, "global": 100000},
        }
        if rate_limits:
            deep_merge(cfg["rate_limits"], rate_limits)
        if config:
            deep_merge(cfg, config)
        self.config = cfg
        self.extra_toml = extra_toml
        self.write_config()
        self.proc = None
        self.starts = 0
        self._tokens = {}
        self._users = {}
        self._local = threading.local()
        self._conns = []
        self._conns_lock = threading.Lock()

    # -- config and process -------------------------------------------------------------------

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def write_config(self):
        text = render_toml(self.config)
        if self.extra_toml:
            text += "\n" + self.extra_toml.strip() + "\n"
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(text)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, args=None):
        """Starts the process without waiting for readiness."""
        if self.running():
            raise AssertionError("node is already running")
        self.starts += 1
        for path in (self.stdout_path, self.stderr_path):
            with open(path, "ab") as f:
                f.write(f"\n===== harness: start #{self.starts} =====\n".encode())
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        try:
            cmd = [self.binary] + (args if args is not None else ["--config", self.config_path])
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=child_environment(self.env), cwd=self.dir,
                                         start_new_session=True)
        finally:
            out.close()
            err.close()
        return self.proc

    def start(self, timeout=START_DEADLINE):
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=START_DEADLINE):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise NodeStartError(
                    f"hotswapd exited with code {rc} before /health answered\n{self.logs()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    resp = http_exchange(conn, "GET", "/health")
                finally:
                    conn.close()
                if resp.status == 200 and str(resp.body).strip() == "Healthy":
                    return
                last = resp
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            if time.monotonic() >= deadline:
                self.kill()
                raise NodeStartError(
                    f"hotswapd did not become healthy within {timeout:.0f}s (last: {last!r})\n"
                    f"{self.logs()}")
            time.sleep(POLL_INTERVAL)

    def wait_exit(self, timeout=STOP_DEADLINE):
        """Waits for the process to exit on its own; returns the exit code or fails."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"hotswapd did not exit within {timeout:.0f}s\n{self.logs()}")

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def stop(self, timeout=STOP_DEADLINE, expect=0):
        """SIGTERM; waits for the exit and checks its code (None = don't check). Returns it."""
        self.close_connections()
        if not self.running():
            rc = self.proc.returncode if self.proc else None
            if expect is not None and rc != expect:
                raise AssertionError(f"hotswapd had already exited with {rc}\n{self.logs()}")
            return rc
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if expect is not None and rc != expect:
            raise AssertionError(f"hotswapd exited with {rc} after SIGTERM, expected {expect}\n"
                                 f"{self.logs()}")
        return rc

    def kill(self):
        """SIGKILL (no chance to persist anything)."""
        self.close_connections()
        if self.running():
            self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                pass

    def restart(self, kill=False, timeout=START_DEADLINE):
        """Stops (SIGTERM, exit 0 expected) or kills, then starts on the same dir, store and port."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def cleanup(self):
        """Ends the process (kill if needed) and drops the PostgreSQL database; keeps the dir."""
        try:
            self.kill()
        finally:
            if self.pg_db:
                drop_pg_database(self.pg_db)
                self.pg_db = None

    def remove_dir(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def read_stdout(self):
        return _read_text(self.stdout_path)

    def read_stderr(self):
        return _read_text(self.stderr_path)

    def logs(self, tail=200):
        def cut(text):
            lines = text.splitlines()
            if len(lines) > tail:
                lines = [f"... ({len(lines) - tail} earlier lines in the file)"] + lines[-tail:]
            return "\n".join(lines)
        return (f"----- {self.node_id} ({self.dir}) stdout -----\n{cut(self.read_stdout())}\n"
                f"----- {self.node_id} stderr -----\n{cut(self.read_stderr())}\n"
                f"----- end {self.node_id} -----")

    # -- HTTP ---------------------------------------------------------------------------------

    def connect(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def _thread_conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            conn._hs_used = 0
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _drop_thread_conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            with self._conns_lock:
                if conn in self._conns:
                    self._conns.remove(conn)
        self._local.conn = None

    def close_connections(self):
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def request(self, method, path, body=None, raw=None, token=None, user=None, headers=None):
        """One request on this thread's keep-alive connection.

        body: JSON-serialisable object; raw: bytes/str sent as is; token: bearer token;
        user: a user name whose cached token is used (demo password unless set with login()).
        Returns Response (status, headers lower-cased, JSON or text).
        """
        hdrs = dict(headers or {})
        if user is not None:
            token = self.token(user)
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data, hdrs = encode_body(body, raw, hdrs)
        for attempt in (1, 2):
            conn = self._thread_conn()
            reused = conn._hs_used > 0 and conn.sock is not None
            try:
                resp = http_exchange(conn, method, path, data, hdrs)
                conn._hs_used += 1
                return resp
            except CONNECTION_LOST:
                self._drop_thread_conn()
                # A keep-alive connection the server closed while idle: retry once, fresh.
                if attempt == 1 and reused:
                    continue
                raise
            except Exception:
                self._drop_thread_conn()
                raise

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- authentication -----------------------------------------------------------------------

    def login_response(self, username, password, headers=None):
        return self.post("/api/v1/authentication/login",
                         {"username": username, "password": password}, headers=headers)

    def login(self, username, password=None):
        """Logs in (once per user and password; cached) and returns the token."""
        if password is None:
            password = self._users.get(username) or DEMO_PASSWORDS.get(username)
            if password is None:
                raise AssertionError(f"no known password for user {username!r}")
        key = (username, password)
        if key not in self._tokens:
            resp = self.login_response(username, password)
            if resp.status != 200:
                raise AssertionError(f"login of {username!r} failed: {resp!r}")
            self._tokens[key] = resp.body["token"]
        self._users[username] = password
        return self._tokens[key]

    def token(self, username):
        return self.login(username)

    def forget_tokens(self):
        self._tokens.clear()


def _read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------------------------
# Test base class


class NodeTestCase(unittest.TestCase):
    """unittest.TestCase that owns nodes: per test (self.node()) or per class (cls.class_node()).

    Nodes are ended after their test/class; when a test fails, the logs of every node it could
    see are printed to stderr and their directories kept for inspection.
    """

    _class_failed = False
    _class_tests_run = 0

    # -- per-class nodes ----------------------------------------------------------------------

    @classmethod
    def class_node(cls, start=True, **kw):
        """A node shared by the tests of this class; ended by a class cleanup (which also runs
        when setUpClass fails)."""
        if "_class_failed" not in cls.__dict__:
            cls._class_failed = False
            cls._class_tests_run = 0
        node = Node(name=cls.__name__, **kw)
        cls.addClassCleanup(cls._finish_class_node, node)
        if start:
            node.start()
        return node

    @classmethod
    def _finish_class_node(cls, node):
        node.cleanup()
        if cls._class_failed or cls.__dict__.get("_class_tests_run", 0) == 0:
            sys.stderr.write(f"\n[harness] {cls.__name__} had a failure; node dir kept: {node.dir}\n"
                             f"{node.logs()}\n")
        else:
            node.remove_dir()

    # -- per-test nodes -----------------------------------------------------------------------

    def node(self, start=True, **kw):
        node = Node(name=self.id().rsplit(".", 1)[-1], **kw)
        self._test_nodes().append(node)
        self.addCleanup(node.cleanup)
        if start:
            node.start()
        return node

    def _test_nodes(self):
        if not hasattr(self, "_nodes"):
            self._nodes = []
        return self._nodes

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        failed = len(result.failures) + len(result.errors) > before
        type(self)._class_tests_run = getattr(type(self), "_class_tests_run", 0) + 1
        nodes = self._test_nodes()
        if failed:
            type(self)._class_failed = True
            for node in nodes:
                sys.stderr.write(f"\n[harness] {self.id()} failed; node dir kept: {node.dir}\n"
                                 f"{node.logs()}\n")
        else:
            for node in nodes:
                node.remove_dir()
        return result

    # -- assertions ---------------------------------------------------------------------------

    def assertStatus(self, resp, status, msg=""):
        self.assertEqual(resp.status, status, f"{msg} unexpected response: {resp!r}")

    def assertSecurityHeaders(self, resp):
        h = resp.headers
        for name in SECURITY_HEADERS:
            self.assertIn(name, h, f"missing {name} on {resp!r}; headers: {h}")
            self.assertTrue(h[name].strip(), f"empty {name} on {resp!r}")
        self.assertEqual(h["x-content-type-options"].lower(), "nosniff")
        self.assertEqual(h["x-frame-options"].upper(), "DENY")
        self.assertNotIn("server", h, f"a Server header leaks the implementation: {h.get('server')}")

    def assertProblem(self, resp, status):
        """`resp` is an application/problem+json error with the full contract shape."""
        self.assertStatus(resp, status)
        self.assertEqual(resp.content_type, "application/problem+json", repr(resp))
        self.assertTrue(resp.is_json and isinstance(resp.body, dict), repr(resp))
        body = resp.body
        for key in ("type", "title", "status", "detail", "traceId", "error", "message"):
            self.assertIn(key, body, f"problem lacks {key!r}: {body}")
        self.assertEqual(body["status"], status, body)
        self.assertIsInstance(body["type"], str)
        self.assertIsInstance(body["title"], str)
        self.assertTrue(body["title"], body)
        self.assertIsInstance(body["detail"], str)
        self.assertIsInstance(body["traceId"], str)
        self.assertTrue(body["traceId"], body)
        self.assertEqual(body["error"], body["title"], "legacy `error` must equal `title`")
        self.assertEqual(body["message"], body["detail"], "legacy `message` must equal `detail`")
        self.assertSecurityHeaders(resp)
        return body

    def assertValidation(self, resp, *fields):
        """400 problem whose `errors` object names each of `fields` (case-insensitive prefix)."""
        body = self.assertProblem(resp, 400)
        self.assertIn("errors", body, f"validation problem without `errors`: {body}")
        errors = body["errors"]
        self.assertIsInstance(errors, dict, body)
        self.assertTrue(errors, body)
        keys = [k.lower().lstrip("$.") for k in errors]
        for field in fields:
            f = field.lower()
            self.assertTrue(any(k == f or k.startswith(f + ".") or k.startswith(f + "[")
                                for k in keys),
                            f"`errors` does not name {field!r}: {errors}")
        for k, v in errors.items():
            self.assertIsInstance(v, list, f"errors[{k!r}] must be a list of messages: {errors}")
            self.assertTrue(v and all(isinstance(m, str) and m for m in v), errors)
        return body

    def assertTimeClose(self, text, expected, tolerance_s, msg=""):
        value = parse_time(text)
        delta = abs((value - expected).total_seconds())
        self.assertLessEqual(delta, tolerance_s, f"{msg} {text} is {delta:.1f}s from {expected}")


def assert_no_secret(testcase, obj, *secrets):
    """No key mentioning password/hash/salt and no secret value anywhere in `obj`."""
    text = json.dumps(obj)
    for secret in secrets:
        testcase.assertNotIn(secret, text, "a secret appears in a response")

    def walk(o, path="$"):
        if isinstance(o, dict):
            for k, v in o.items():
                lk = k.lower()
                testcase.assertFalse("password" in lk or "hash" in lk or "salt" in lk,
                                     f"{path}.{k} exposes credential material")
                walk(v, f"{path}.{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{path}[{i}]")
    walk(obj)
