"""A store that is down gets a clear 503 and automatic recovery, never a crash or a hang.

The test runs its own private PostgreSQL server (independent of HOTSWAP_TEST_PG_URL) because it
stops and restarts it underneath a running hotswapd node:

1. node on the private server, admin logs in, a tenant is created;
2. PostgreSQL is stopped: /ready is 503 with store Down, writes and store reads are quick 503
   problems with Retry-After, /health stays 200 and the process keeps running;
3. PostgreSQL is started again (same port and data directory): /ready becomes 200 by itself,
   writes and reads work again and the tenant of step 1 is still there;
4. the node stops cleanly on SIGTERM.
"""

import glob
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import harness
from harness import NodeTestCase

# Deadline of one HTTP request of this test: a request that takes longer is a hang.
REQUEST_DEADLINE = 20.0
# The node's own deadline for one request (http.request_timeout_ms); a 503 for a store that is
# down must come well before it (not as the sweep's 504).
NODE_REQUEST_TIMEOUT_MS = 15000
FAST_ANSWER = NODE_REQUEST_TIMEOUT_MS / 1000.0 / 2
RECOVERY_DEADLINE = 30.0
PG_START_DEADLINE = 60


def _pg_bindir():
    candidates = []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in candidates:
        if os.access(os.path.join(d, "initdb"), os.X_OK) and \
                os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    raise AssertionError("PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
                         "with: apt-get install -y postgresql")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 that the test may stop and start again."""

    def __init__(self):
        self.bindir = _pg_bindir()
        self.as_root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="hstest-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "pg")
        self.sock = os.path.join(self.dir, "pgsock")
        self.log = os.path.join(self.data, "server.log")
        self.port = None
        self.started = False
        os.makedirs(self.data, mode=0o700)
        os.makedirs(self.sock)
        if self.as_root:
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        self._run(["initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--no-locale"], "initdb")

    def _cmd(self, args):
        cmd = [os.path.join(self.bindir, args[0])] + list(args[1:])
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return cmd

    def _run(self, args, what, check=True, timeout=PG_START_DEADLINE + 30):
        proc = subprocess.run(self._cmd(args), capture_output=True, text=True, timeout=timeout,
                              env=harness.child_environment(), cwd=self.dir)
        if check and proc.returncode != 0:
            raise AssertionError(f"{what} failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
                                 f"\n{self.server_log()}")
        return proc

    @property
    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        """Starts the server (first time: on a free port; later: on the same port)."""
        ports = [self.port] if self.port else [harness.free_port() for _ in range(5)]
        last = None
        for port in ports:
            proc = self._run(["pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t",
                              str(PG_START_DEADLINE), "-o",
                              f"-p {port} -k {self.sock} -c listen_addresses=127.0.0.1", "start"],
                             "pg_ctl start", check=False)
            if proc.returncode == 0:
                self.port = port
                self.started = True
                return self
            last = proc
        raise AssertionError(f"PostgreSQL did not start: {last.stdout}{last.stderr}\n"
                             f"{self.server_log()}")

    def stop(self, mode="fast"):
        self._run(["pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop"],
                  f"pg_ctl stop -m {mode}")
        self.started = False

    def cleanup(self):
        try:
            if self.started or os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run(["pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30", "stop"],
                          "pg_ctl stop -m immediate", check=False)
                self.started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def server_log(self, tail=40):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return "(no PostgreSQL server log)"
        return "----- PostgreSQL server log -----\n" + "\n".join(lines[-tail:])


def tenant_body():
    return {"name": "Outage Corp", "subdomain": harness.unique("outage-"), "tier": "Professional",
            "contactEmail": "ops@outage.example"}


class StoreOutageTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = PrivatePostgres()
        # Runs after tearDownClass, also when setUpClass fails: pg_ctl -m immediate stop + rm.
        cls.addClassCleanup(cls.pg.cleanup)
        cls.pg.start()

    # -- helpers --------------------------------------------------------------------------------

    def timed(self, method, path, body=None, token=None):
        """One request on a fresh connection with a hard deadline: (Response, seconds)."""
        data, hdrs = harness.encode_body(body, None, {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.n.port, timeout=REQUEST_DEADLINE)
        t0 = time.monotonic()
        try:
            resp = harness.http_exchange(conn, method, path, data, hdrs)
        except (socket.timeout, TimeoutError):
            self.fail(f"{method} {path} hung: no answer within {REQUEST_DEADLINE:.0f}s")
        finally:
            conn.close()
        return resp, time.monotonic() - t0

    def assertAlive(self):
        self.assertTrue(self.n.running(),
                        f"hotswapd exited (code {self.n.proc.poll()}) during the outage")

    def assertStoreUnavailable(self, resp, elapsed, what):
        self.assertLess(elapsed, FAST_ANSWER,
                        f"{what} took {elapsed:.1f}s: a store that is down must be answered well "
                        f"under the request timeout ({NODE_REQUEST_TIMEOUT_MS} ms); got {resp!r}")
        body = self.assertProblem(resp, 503)
        self.assertIn("retry-after", resp.headers, f"{what}: 503 without Retry-After: {resp!r}")
        self.assertTrue(resp.headers["retry-after"].strip().isdigit(),
                        f"{what}: Retry-After must be delay-seconds: {resp.headers['retry-after']!r}")
        return body

    # -- the scenario ---------------------------------------------------------------------------

    def test_store_down_is_503_and_recovers_without_restart(self):
        self.n = self.node(store_url=self.pg.url,
                           config={"http": {"request_timeout_ms": NODE_REQUEST_TIMEOUT_MS}})

        # Before the outage: login (needs the store; tokens are verified locally later).
        admin = self.n.token("admin")
        ready, _ = self.timed("GET", "/ready")
        self.assertStatus(ready, 200, "/ready before the outage")
        self.assertEqual(ready.body["store"]["status"], "Up", ready)
        created, _ = self.timed("POST", "/api/v1/tenants", tenant_body(), token=admin)
        self.assertStatus(created, 201, "tenant before the outage")
        before = created.body

        # -- outage -----------------------------------------------------------------------------
        self.pg.stop("fast")

        ready, elapsed = self.timed("GET", "/ready")
        self.assertStatus(ready, 503, "/ready with the store down")
        self.assertTrue(ready.is_json, repr(ready))
        self.assertEqual(ready.body.get("status"), "NotReady", ready)
        self.assertEqual(ready.body["store"]["status"], "Down", ready)
        self.assertLess(elapsed, FAST_ANSWER, f"/ready took {elapsed:.1f}s")
        self.assertAlive()

        resp, elapsed = self.timed("POST", "/api/v1/tenants", tenant_body(), token=admin)
        self.assertStoreUnavailable(resp, elapsed, "POST /api/v1/tenants")
        self.assertAlive()

        resp, elapsed = self.timed("GET", "/api/v1/tenants?status=Active", token=admin)
        self.assertStoreUnavailable(resp, elapsed, "GET /api/v1/tenants?status=Active")
        self.assertAlive()

        health, elapsed = self.timed("GET", "/health")
        self.assertStatus(health, 200, "/health (liveness) during the outage")
        self.assertEqual(str(health.body).strip(), "Healthy", health)
        self.assertLess(elapsed, FAST_ANSWER, f"/health took {elapsed:.1f}s")

        # Still down a while later (no crash after the errors were handled).
        ready, _ = self.timed("GET", "/ready")
        self.assertStatus(ready, 503, "/ready still down")
        self.assertAlive()

        # -- recovery ---------------------------------------------------------------------------
        self.pg.start()

        last = []

        def ready_again():
            self.assertAlive()
            r, _ = self.timed("GET", "/ready")
            last[:] = [r]
            return r.status == 200

        try:
            harness.wait_until(ready_again, RECOVERY_DEADLINE, "/ready to answer 200 again",
                               interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last /ready: {last[0] if last else None!r}") from None
        self.assertEqual(last[0].body["store"]["status"], "Up", last[0])

        resp, _ = self.timed("POST", "/api/v1/tenants", tenant_body(), token=admin)
        self.assertStatus(resp, 201, "create after recovery")
        after = resp.body
        got, _ = self.timed("GET", f"/api/v1/tenants/{after['tenantId']}", token=admin)
        self.assertStatus(got, 200, "read of the tenant created after recovery")
        self.assertEqual(got.body, after)

        listed, _ = self.timed("GET", "/api/v1/tenants?status=Active", token=admin)
        self.assertStatus(listed, 200, "list after recovery")
        ids = {t["tenantId"] for t in listed.body}
        self.assertIn(before["tenantId"], ids, "the tenant created before the outage is lost")
        self.assertIn(after["tenantId"], ids)

        # -- clean stop -------------------------------------------------------------------------
        self.n.stop(expect=0)


if __name__ == "__main__":
    unittest.main()
