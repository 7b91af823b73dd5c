"""Hot swap under load: module versions are staged, switched and retired while client threads keep
invoking, and not one invocation fails; a retired version's library is really unloaded (dlclose:
its file is no longer mapped into the hotswapd process, read from /proc/<pid>/maps).

Needs the example modules (env HOTSWAP_MODULES_DIR, the build's examples/modules directory).
"""

import http.client
import os
import sys
import threading
import time
import unittest

import harness
from harness import NodeTestCase

MODULES = "/api/v1/modules"
CLUSTERS = "/api/v1/clusters"
ENV = "Development"
CLIENTS = 4
REQUEST_DEADLINE = 20.0     # one HTTP request of this test; longer is a hang
COMMAND_DEADLINE = 30.0     # one worker command (stage / weights / retire)
TRAFFIC_DEADLINE = 10.0     # until a newly weighted version has answered clients


def modules_dir():
    path = os.environ.get("HOTSWAP_MODULES_DIR", "")
    if not path:
        binary = os.environ.get("HOTSWAPD", "")
        if binary:  # <build>/tools/hotswapd -> <build>/examples/modules
            path = os.path.join(os.path.dirname(os.path.dirname(binary)), "examples", "modules")
    if not path or not os.path.isdir(path):
        raise AssertionError(
            f"HOTSWAP_MODULES_DIR={path!r} is not a directory: run through ctest (it passes "
            "<build>/examples/modules) or export HOTSWAP_MODULES_DIR; build the "
            "example_modules target first")
    return path


def module_bytes(name, version):
    path = os.path.join(modules_dir(), f"{name}-{version}.so")
    if not os.path.isfile(path):
        raise AssertionError(f"example module {path} is missing: build the example_modules target")
    with open(path, "rb") as f:
        return f.read()


class Clients:
    """CLIENT threads that invoke a module continuously, each on its own keep-alive connection,
    and record every outcome: (status, X-Module-Version, body, expected payload) or an exception."""

    def __init__(self, node, token, module, count=CLIENTS):
        self.node = node
        self.token = token
        self.module = module
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.results = []          # (client, seq, status, header version, body, payload)
        self.errors = []           # (client, seq, repr(exception))
        self.by_version = {}       # version -> successful answers
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                         name=f"client-{i}") for i in range(count)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(REQUEST_DEADLINE + 5)
            if t.is_alive():
                raise AssertionError(f"{t.name} did not finish (a request hangs)")

    def answered(self, version):
        with self.lock:
            return self.by_version.get(version, 0)

    def total(self):
        with self.lock:
            return len(self.results) + len(self.errors)

    def _run(self, client):
        path = f"{MODULES}/{self.module}/invoke?environment={ENV}"
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "text/plain"}
        conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=REQUEST_DEADLINE)
        seq = 0
        try:
            while not self.stop_event.is_set():
                payload = f"client{client}-{seq}"
                try:
                    resp = harness.http_exchange(conn, "POST", path, payload.encode(), headers)
                except Exception as exc:  # noqa: BLE001 - every failure is recorded
                    with self.lock:
                        self.errors.append((client, seq, repr(exc)))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.node.port,
                                                      timeout=REQUEST_DEADLINE)
                else:
                    version = resp.headers.get("x-module-version")
                    with self.lock:
                        self.results.append((client, seq, resp.status, version, resp.body, payload))
                        if resp.status == 200:
                            self.by_version[version] = self.by_version.get(version, 0) + 1
                seq += 1
        finally:
            conn.close()

    def failures(self):
        """Every outcome that is not 200 with body "echo <X-Module-Version>: <payload>"."""
        bad = [("exception", e) for e in self.errors]
        for client, seq, status, version, body, payload in self.results:
            if status != 200 or not version or body != f"echo {version}: {payload}":
                bad.append(("answer", (client, seq, status, version, str(body)[:300])))
        return bad


class HotSwapTest(NodeTestCase):

    def setUp(self):
        self.n = self.node(config={"rate_limits": {"enabled": False}})
        self.modules_root = os.path.realpath(os.path.join(self.n.data_dir, "modules")) + os.sep
        for version in ("1.0.0", "2.0.0"):
            resp = self.n.request(
                "POST", f"{MODULES}?environment={ENV}", raw=module_bytes("echo", version),
                user="admin", headers={"Content-Type": "application/octet-stream",
                                       "X-Module-Name": "echo", "X-Module-Version": version})
            self.assertStatus(resp, 201, f"upload of echo {version}")
            self.assertFalse(resp.body["signed"])

    # -- helpers ----------------------------------------------------------------------------

    def command(self, method, path, body=None):
        started = time.monotonic()
        resp = self.n.request(method, path, body=body, user="admin")
        self.assertLess(time.monotonic() - started, COMMAND_DEADLINE, f"{method} {path} took too long")
        self.assertStatus(resp, 200, f"{method} {path} {body}")
        return resp.body

    def stage(self, version, weight):
        return self.command("POST", f"{CLUSTERS}/{ENV}/modules/echo/versions/{version}/stage",
                            {"weight": weight})

    def weights(self, weights):
        return self.command("PUT", f"{CLUSTERS}/{ENV}/modules/echo/weights", {"weights": weights})

    def retire(self, version):
        body = self.command("POST", f"{CLUSTERS}/{ENV}/modules/echo/versions/{version}/retire")
        self.assertEqual(body["state"], "Retired", body)
        return body

    def mapped_modules(self):
        """Distinct module files mapped into the hotswapd process (from /proc/<pid>/maps)."""
        self.assertTrue(self.n.running(), "hotswapd is not running")
        paths = set()
        with open(f"/proc/{self.n.proc.pid}/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                path = parts[5].strip()
                if path.endswith(" (deleted)"):
                    path = path[: -len(" (deleted)")]
                if path.startswith(self.modules_root):
                    paths.add(path)
        return paths

    def mapped_versions(self):
        """{version: count of mapped files} of module echo."""
        out = {}
        for path in self.mapped_modules():
            name = os.path.basename(path)
            for version in ("1.0.0", "2.0.0"):
                if name.startswith(f"echo-{version}-"):
                    out[version] = out.get(version, 0) + 1
        return out

    def loaded_libraries(self):
        resp = self.n.get(f"{CLUSTERS}/{ENV}", user="viewer")
        self.assertStatus(resp, 200)
        nodes = [n for n in resp.body["nodes"] if n["nodeId"] == self.n.node_id]
        self.assertEqual(len(nodes), 1, resp.body)
        return nodes[0]["loadedLibraries"]

    def wait_traffic(self, clients, version, since):
        harness.wait_until(lambda: clients.answered(version) > since + 5, TRAFFIC_DEADLINE,
                           f"clients to be answered by echo {version}")

    def assertNoFailures(self, clients):
        bad = clients.failures()
        self.assertEqual(bad, [], f"{len(bad)} of {clients.total()} invocations failed; "
                                  f"first ones: {bad[:10]}")

    def check_clients_alive(self, clients):
        for t in clients.threads:
            self.assertTrue(t.is_alive(), f"{t.name} ended early")

    # -- tests ------------------------------------------------------------------------------

    def test_twenty_swaps_under_load_fail_no_invocation_and_unload_retired_versions(self):
        self.stage("1.0.0", 100)
        self.assertEqual(self.mapped_versions(), {"1.0.0": 1})
        clients = Clients(self.n, self.n.token("viewer"), "echo").start()
        self.addCleanup(clients.stop_event.set)
        started = time.monotonic()
        try:
            self.wait_traffic(clients, "1.0.0", 0)
            live, other = "1.0.0", "2.0.0"
            for swap in range(20):
                with self.subTest(swap=swap, old=live, new=other):
                    before = clients.answered(other)
                    view = self.stage(other, 0)
                    self.assertEqual(view["weight"], 0, view)
                    self.assertEqual(self.mapped_versions(), {live: 1, other: 1})
                    module = self.weights({other: 100})  # the old version is omitted: weight 0
                    self.assertEqual({v["version"]: v["weight"] for v in module["versions"]},
                                     {live: 0, other: 100})
                    # retired right after the switch, as a deployment does: invocations of
                    # the old version may still be in flight and are drained
                    self.retire(live)
                    # the retire answers after dlclose: the old library is gone right away
                    self.assertEqual(self.mapped_versions(), {other: 1},
                                     f"after retiring {live}: {sorted(self.mapped_modules())}")
                    self.wait_traffic(clients, other, before)
                    self.check_clients_alive(clients)
                live, other = other, live
            self.assertEqual(self.mapped_versions(), {live: 1})
        finally:
            clients.stop()
        elapsed = time.monotonic() - started
        total = clients.total()
        sys.stderr.write(f"\n[hotswap] 20 swaps under load: {total} invocations by {CLIENTS} "
                         f"clients in {elapsed:.1f}s ({clients.by_version})\n")
        self.assertNoFailures(clients)
        self.assertGreater(clients.answered("1.0.0"), 0)
        self.assertGreater(clients.answered("2.0.0"), 0)
        self.assertEqual(len(self.mapped_modules()), 1, sorted(self.mapped_modules()))
        self.assertEqual(self.loaded_libraries(), 1)
        self.retire(live)
        self.assertEqual(self.mapped_modules(), set())
        self.assertEqual(self.loaded_libraries(), 0)
        resp = self.n.request("POST", f"{MODULES}/echo/invoke?environment={ENV}", raw="x",
                              user="viewer", headers={"Content-Type": "text/plain"})
        self.assertProblem(resp, 404)

    def test_thirty_stage_retire_cycles_of_one_version_leave_nothing_mapped(self):
        self.stage("1.0.0", 100)
        clients = Clients(self.n, self.n.token("viewer"), "echo").start()
        self.addCleanup(clients.stop_event.set)
        started = time.monotonic()
        try:
            self.wait_traffic(clients, "1.0.0", 0)
            for cycle in range(30):
                with self.subTest(cycle=cycle):
                    before = clients.answered("2.0.0")
                    # 2.0.0 takes a share of the traffic while it is loaded, so every retire
                    # drains invocations that are in flight
                    self.stage("2.0.0", 50)
                    self.assertEqual(self.mapped_versions(), {"1.0.0": 1, "2.0.0": 1})
                    self.wait_traffic(clients, "2.0.0", before)
                    self.retire("2.0.0")
                    self.assertEqual(self.mapped_versions(), {"1.0.0": 1},
                                     f"after retire #{cycle}: {sorted(self.mapped_modules())}")
                    self.check_clients_alive(clients)
        finally:
            clients.stop()
        elapsed = time.monotonic() - started
        sys.stderr.write(f"\n[hotswap] 30 stage/retire cycles: {clients.total()} invocations by "
                         f"{CLIENTS} clients in {elapsed:.1f}s ({clients.by_version})\n")
        self.assertNoFailures(clients)
        self.assertGreater(clients.answered("2.0.0"), 0)
        self.assertEqual(self.mapped_versions(), {"1.0.0": 1})
        self.assertEqual(self.loaded_libraries(), 1)


if __name__ == "__main__":
    unittest.main()
