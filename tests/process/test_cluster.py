"""The cluster: three real hotswapd nodes sharing one PostgreSQL database and one Redis (a key
prefix of their own per test), on loopback. Any node answers any call (commands for an entity
owned elsewhere are forwarded over CAF to its owner); a deployment owned by one node drives the
workers of other nodes; kill -9 of the owner in the middle of a canary, SIGTERM of the owner, and
a paused ("zombie") owner all end with the deployment finished by a survivor, and the zombie's
writes and worker commands refused.

Needs HOTSWAP_TEST_PG_URL and HOTSWAP_TEST_REDIS_URL (scripts/services.sh sets both), the example
modules and the openssl CLI (as test_deployments).

Layout (as examples/cluster): node A serves Development and QA, node B Staging and Production,
node C Production and Development. A Production canary owned by A therefore drives the workers
of B and C, and killing A never kills a worker of the deployment.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import unittest
import threading
import time
import uuid

import harness
from wsclient import WebSocket
import test_deployments as td
import test_store_outage as outage

FAST = harness.FAST_CLUSTER
LAYOUT = {
    "A": ["Development", "QA"],
    "B": ["Staging", "Production"],
    "C": ["Production", "Development"],
}


def setUpModule():
    td.setUpModule()


def tearDownModule():
    td.tearDownModule()


redis_url = harness.redis_url
metric = harness.metric


class ClusterCase(td.DeploymentCase):
    """Three nodes A, B, C; `self.n` is the node the td helpers talk to (switch with use())."""

    def start_cluster(self, cluster=None, environments=None, registry=None, store_url=None):
        prefix = f"t{uuid.uuid4().hex[:10]}:"
        first = None
        self.nodes = {}
        for name in "ABC":
            cfg = td.node_config(environments)
            cfg["node"] = {"environments": LAYOUT[name],
                           "roles": ["api", "control", "worker"]}
            cfg["cluster"] = dict(FAST, registry=registry or redis_url(), key_prefix=prefix)
            if cluster:
                cfg["cluster"].update(cluster)
            if store_url:
                node = self.node(start=False, config=cfg, store_url=store_url)
            elif first is None:
                node = self.node(start=False, config=cfg, pg=True)
                first = node
            else:
                node = self.node(start=False, config=cfg, store_url=first.store_url)
            self.nodes[name] = node
        for node in self.nodes.values():
            node.spawn()
        for node in self.nodes.values():
            node.wait_healthy()
        self.use("A")
        self.wait_members(3)
        return self.nodes

    def use(self, name):
        self.n = self.nodes[name]
        return self.n

    def members(self, node):
        """{environment: totalNodes} as node sees the cluster (None while its registry is down:
        then the Clusters API answers 503)."""
        resp = node.get(td.CLUSTERS, user="viewer")
        if resp.status == 503:
            self.assertEqual(resp.content_type, "application/problem+json", resp)
            return None
        self.assertStatus(resp, 200)
        return {c["environment"]: c["totalNodes"] for c in resp.body}

    def wait_members(self, count):
        want = {"Development": 2, "QA": 1, "Staging": 1, "Production": 2}
        if count == 2:  # A gone
            want = {"Development": 1, "QA": 0, "Staging": 1, "Production": 2}
        for node in self.nodes.values():
            if node.running():
                harness.wait_until(lambda: self.members(node) == want, td.STATE_DEADLINE,
                                   f"{node.node_id} to see the membership {want}")

    def stage_everywhere(self, env, name, version):
        """Stages the baseline on every node that serves env (worker commands are per node)."""
        for key, envs in LAYOUT.items():
            if env in envs:
                self.use(key)
                self.stage_baseline(env, name, version)

    def weights_on(self, key, name, env):
        self.use(key)
        return self.weights(name, env)

    def create_tenant(self, node, name):
        resp = node.post("/api/v1/tenants",
                         {"name": name, "subdomain": harness.unique("c-"),
                          "tier": "Professional", "contactEmail": "ops@c.example"},
                         user="admin")
        self.assertStatus(resp, 201)
        return resp.body["tenantId"]

    def production_canary(self, steps, step_seconds):
        """echo 1.0.0 live on the Production workers (B, C) with traffic through B, and a
        canary to 2.0.0 created on A (so A owns it), waiting for its approval."""
        self.use("A")
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")
        self.stage_everywhere("Production", "echo", "1.0.0")
        self.use("B")
        traffic = self.traffic("echo", "Production")
        self.use("A")
        eid = self.deploy_pending("echo", "2.0.0", "Production",
                                  canary={"steps": steps, "stepDurationSeconds": step_seconds,
                                          "minSamples": 5})
        return eid, traffic

    def active_entities(self):
        """{entity id: [node ids where it is active]} over the running nodes."""
        where = {}
        for node in self.nodes.values():
            if not node.running():
                continue
            resp = node.get("/api/v1/node/entities", user="admin")
            self.assertStatus(resp, 200)
            for kind in ("tenants", "deployments", "approvals"):
                for eid in resp.body[kind]:
                    where.setdefault(f"{kind}/{eid}", []).append(resp.body["nodeId"])
        return where

    def assertSingleOwners(self):
        where = self.active_entities()
        twice = {k: v for k, v in where.items() if len(v) > 1}
        self.assertEqual(twice, {}, "entities active on two nodes at once")
        return where


class ClusterTest(ClusterCase):

    def test_any_node_answers_and_deployments_span_nodes(self):
        nodes = self.start_cluster()
        # Membership: every node sees all three, with their environments.
        for node in nodes.values():
            self.assertEqual(self.members(node),
                             {"Development": 2, "QA": 1, "Staging": 1, "Production": 2})

        # A tenant created on A is read and changed through B and C (its actor lives on A).
        tid = self.create_tenant(nodes["A"], "Acme")
        for key in "BC":
            got = nodes[key].get(f"/api/v1/tenants/{tid}", user="admin")
            self.assertStatus(got, 200, f"tenant through {key}")
            self.assertEqual(got.body["name"], "Acme")
        resp = nodes["C"].put(f"/api/v1/tenants/{tid}", {"name": "Acme 2"}, user="admin")
        self.assertStatus(resp, 200)
        for key in "AB":
            self.assertEqual(nodes[key].get(f"/api/v1/tenants/{tid}", user="admin").body["name"],
                             "Acme 2")
        self.assertGreater(metric(nodes["B"], "hotswap_forwarded_requests_total")
                           + metric(nodes["C"], "hotswap_forwarded_requests_total"), 0)

        # Modules are in the shared store: upload once, stage on the Production workers (B, C).
        self.use("A")
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")
        self.stage_everywhere("Production", "echo", "1.0.0")

        # A Production deployment created on A (no Production worker there), approved through
        # B, read through C: it drives B's and C's workers.
        self.use("A")
        eid = self.deploy_pending("echo", "2.0.0", "Production",
                                  canary={"steps": [50, 100], "stepDurationSeconds": 1,
                                          "minSamples": 1})
        self.use("B")
        self.approve_ok(eid)
        self.use("C")
        self.traffic("echo", "Production")
        self.assertEnded(eid, "Succeeded")
        for key in "BC":
            self.assertEqual(self.weights_on(key, "echo", "Production"), {"2.0.0": 100})
        # A serves no Production worker, yet its Clusters API shows both workers' versions.
        resp = nodes["A"].get(f"{td.CLUSTERS}/Production", user="viewer")
        self.assertStatus(resp, 200)
        shown = {n["nodeId"]: {v["version"]: v["weight"] for m in n["modules"]
                               if m["name"] == "echo" for v in m["versions"]}
                 for n in resp.body["nodes"]}
        self.assertEqual(shown, {nodes["B"].node_id: {"2.0.0": 100},
                                 nodes["C"].node_id: {"2.0.0": 100}})
        # Every node reads the same record.
        views = [nodes[k].get(f"{td.DEPLOYMENTS}/{eid}", user="viewer").body for k in "ABC"]
        self.assertEqual({v["status"] for v in views}, {"Succeeded"})
        self.assertEqual({v["stepsCompleted"] for v in views}, {views[0]["stepsCompleted"]})

        # Rollback through C (the owner is A): 1.0.0 is back on both workers.
        self.use("C")
        resp = self.rollback(eid)
        self.assertStatus(resp, 202)
        for key in "BC":
            harness.wait_until(lambda: self.weights_on(key, "echo", "Production")
                               == {"1.0.0": 100}, td.DEPLOY_DEADLINE,
                               f"1.0.0 back at 100 % on {key}")

    def test_round_robin_requests_are_consistent(self):
        nodes = self.start_cluster()
        self.use("A")
        self.upload("echo", "1.0.0", signed=False)
        self.upload("echo", "2.0.0", signed=False)
        order = "ABC"
        ids = []
        for i in range(6):
            # Created on one node, followed on the next, rolled back (every other one) on the
            # third; one at a time, as deployments of one module in one environment must be.
            self.use(order[i % 3])
            eid = self.deploy_ok("echo", "1.0.0" if i % 2 == 0 else "2.0.0", "Development")
            ids.append(eid)
            self.use(order[(i + 1) % 3])
            self.assertEnded(eid, "Succeeded")
            if i % 2 == 1:
                self.use(order[(i + 2) % 3])
                self.assertStatus(self.rollback(eid), 202)
                for key in "AC":
                    harness.wait_until(lambda: self.weights_on(key, "echo", "Development")
                                       == {"1.0.0": 100}, td.DEPLOY_DEADLINE,
                                       f"1.0.0 back on {key}")
        # The list is the same on every node.
        lists = []
        for key in order:
            resp = nodes[key].get(f"{td.DEPLOYMENTS}?environment=Development", user="viewer")
            self.assertStatus(resp, 200)
            lists.append(sorted(x["executionId"] for x in resp.body))
        self.assertEqual(lists[0], sorted(ids))
        self.assertEqual(lists[0], lists[1])
        self.assertEqual(lists[1], lists[2])


    def test_a_subscriber_on_one_node_sees_events_of_every_owner(self):
        self.start_cluster()
        self.use("A")
        ws = WebSocket(self.n.port, "/api/v1/events", token=self.n.token("viewer"))
        self.addCleanup(ws.close)
        ws.send_json({"subscribe": "all"})
        self.assertEqual(ws.recv_json()["type"], "Subscribed")
        self.upload("echo", "1.0.0", signed=False)
        self.upload("echo", "2.0.0", signed=False)
        owners = {}
        for key, version in (("B", "1.0.0"), ("C", "2.0.0")):
            # Created on B, then on C: each node owns the deployment it created.
            self.use(key)
            eid = self.deploy_ok("echo", version, "Development")
            owners[eid] = self.nodes[key].node_id
            self.assertEnded(eid, "Succeeded")
        seen = {}
        deadline = time.monotonic() + td.DEPLOY_DEADLINE
        while any(seen.get(e, [None])[-1] != "Succeeded" for e in owners):
            self.assertGreater(deadline - time.monotonic(), 0, f"events seen on A: {seen}")
            ev = ws.recv_json(timeout=max(0.1, deadline - time.monotonic()))
            if ev.get("executionId") in owners and ev["type"] == "DeploymentStatusChanged":
                self.assertEqual(ev["details"]["node"], owners[ev["executionId"]], ev)
                seen.setdefault(ev["executionId"], []).append(ev["status"])
        for eid in owners:
            self.assertIn("Running", seen[eid], seen)


class FailoverTest(ClusterCase):

    def canary_owned_by_a(self, step_seconds=2):
        self.start_cluster(environments={"Production": {"inconclusive": "extend"}})
        eid, traffic = self.production_canary([10, 30, 50, 100], step_seconds)
        self.approve_ok(eid)
        before = self.wait_deployment(eid, lambda d: d["status"] in td.TERMINAL
                                      or d["stepsCompleted"] >= 4,
                                      "to reach its second analysis step")
        self.assertEqual(before["status"], "Running", before)
        self.assertLess(before["stepsCompleted"], 7, "too late for a failover in the middle")
        return eid, before, traffic

    def finish_on_survivors(self, eid, before, traffic, survivors="BC"):
        self.use(survivors[0])
        after = self.get_deployment(eid)
        self.assertNotIn(after["status"], ("Failed", "RolledBack", "Cancelled"), after)
        d = self.assertEnded(eid, "Succeeded")
        self.assertGreaterEqual(d["stepsCompleted"], before["stepsCompleted"])
        for key in "BC":
            harness.wait_until(lambda: self.weights_on(key, "echo", "Production")
                               == {"2.0.0": 100}, td.STATE_DEADLINE, f"2.0.0 at 100 % on {key}")
        traffic.stop()
        self.assertEqual(traffic.bad_answers(), [], "a client saw a failed invocation")
        adopted = sum(metric(self.nodes[k], "hotswap_failovers_total") for k in survivors)
        self.assertGreaterEqual(adopted, 1, "no survivor counted an adoption")
        self.assertSingleWriterPerEpoch(eid, resumed_by=[self.nodes[k].node_id
                                                         for k in survivors])
        return d

    def assertSingleWriterPerEpoch(self, eid, resumed_by):
        """The deployment's audit trail (in write order): epochs never go down, each epoch was
        written by one node, and a survivor recorded that it resumed the plan."""
        self.use("B")
        events = sorted(self.audit("deployments", eid), key=lambda e: e["id"])
        writers, last = {}, 0
        for e in events:
            d = e["details"]
            if not isinstance(d, dict) or "epoch" not in d:
                continue
            self.assertGreaterEqual(d["epoch"], last, f"an older epoch wrote after a newer: {e}")
            last = d["epoch"]
            self.assertEqual(writers.setdefault(d["epoch"], d["node"]), d["node"],
                             f"epoch {d['epoch']} written by two nodes")
        resumed = [e for e in events if e["eventType"] == "DeploymentResumed"]
        self.assertTrue(resumed, [e["eventType"] for e in events])
        self.assertIn(resumed[-1]["details"]["node"], resumed_by, resumed[-1])

    def test_kill_owner_mid_canary(self):
        eid, before, traffic = self.canary_owned_by_a()
        self.nodes["A"].kill()
        self.finish_on_survivors(eid, before, traffic)

    def test_sigterm_hands_over(self):
        eid, before, traffic = self.canary_owned_by_a(step_seconds=3)
        self.nodes["A"].stop()  # SIGTERM, exit 0: passivated, released, left the membership
        self.use("B")
        # Another node takes over without waiting for A's TTL: the next step starts while the
        # current analysis window (3 s) has not even ended on A's clock.
        self.finish_on_survivors(eid, before, traffic)

    def test_zombie_owner_is_fenced(self):
        eid, before, traffic = self.canary_owned_by_a()
        a = self.nodes["A"]
        a.signal(signal.SIGSTOP)
        try:
            self.use("B")
            # B or C adopts after A's lease expired and moves the deployment on.
            harness.wait_until(
                lambda: self.get_deployment(eid)["stepsCompleted"] > before["stepsCompleted"] + 1,
                td.DEPLOY_DEADLINE, "a survivor to move the deployment on")
        finally:
            a.signal(signal.SIGCONT)
        # A wakes up, notices it could not renew, fences itself; its writes are refused.
        harness.wait_until(lambda: metric(a, "hotswap_self_fences_total") >= 1,
                           td.STATE_DEADLINE, "A to fence itself after SIGCONT")
        self.finish_on_survivors(eid, before, traffic)
        # A stayed alive and answers, but runs no deployment.
        self.assertTrue(a.running())
        resp = a.get(f"{td.DEPLOYMENTS}/{eid}", user="viewer")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["status"], "Succeeded")


class PrivateRedis:
    """A Redis server of this test only, so the test can restart it: without persistence (it
    comes back empty) or with AOF fsynced on every write (it comes back with every write it
    acknowledged)."""

    def __init__(self, persistent=False):
        self.persistent = persistent
        self.dir = tempfile.mkdtemp(prefix="hstest-redis-")
        self.port = harness.free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        try:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
                 "--dir", self.dir],
                stdout=open(os.path.join(self.dir, "redis.log"), "ab"),
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise AssertionError("redis-server is needed (apt-get install redis-server)")
        harness.wait_until(lambda: harness.port_accepts(self.port), 30, "Redis to accept")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # like a crash: nothing saved
            self.proc.wait(30)
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class MessagesClusterTest(ClusterCase):
    """The message queue of a cluster lives in Redis Streams: every node publishes to and
    consumes from the same queue, and a Redis restart with persistence loses nothing."""

    def publish_many(self, count, topic):
        ids = []
        lock = threading.Lock()

        def run(key, n):
            node = self.nodes[key]
            token = node.token("deployer")
            for i in range(n):
                resp = node.post("/api/v1/messages/publish",
                                 {"topicName": topic, "payload": {"i": i, "via": key},
                                  "schemaVersion": "1.0"}, token=token)
                self.assertEqual(resp.status, 201, resp)
                with lock:
                    ids.append(resp.body["messageId"])
        threads = [threading.Thread(target=run, args=(key, count // 3)) for key in "ABC"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(ids), count // 3 * 3)
        return ids

    def consume_all(self, topic, group, keys="ABC", limit=None):
        """Consumes and acknowledges round robin over `keys` until the queue is empty (or
        `limit` messages); returns the ids in delivery order."""
        got = []
        i = 0
        while limit is None or len(got) < limit:
            node = self.nodes[keys[i % len(keys)]]
            i += 1
            want = 100 if limit is None else min(100, limit - len(got))
            resp = node.post(f"/api/v1/messages/topics/{topic}/consume",
                             {"group": group, "max": want}, user="deployer")
            self.assertStatus(resp, 200)
            if not resp.body:
                break
            for m in resp.body:
                got.append(m["messageId"])
                ack = node.post(f"/api/v1/messages/{m['messageId']}/acknowledge",
                                {"group": group}, user="deployer")
                self.assertStatus(ack, 200)
        return got

    def test_redis_restart_with_persistence_loses_no_message(self):
        redis = PrivateRedis(persistent=True).start()
        self.addCleanup(redis.cleanup)
        self.start_cluster(registry=redis.url)
        topic = harness.unique("orders.")
        ids = self.publish_many(3000, topic)
        first = self.consume_all(topic, "billing", keys="B", limit=500)
        self.assertEqual(len(first), 500)

        redis.stop()  # SIGKILL
        redis.start()  # same directory: the AOF replays
        self.wait_members(3)
        # A node's first request after the restart may meet its broken connection (503); each
        # node's queue answers again by itself.
        for key in "ABC":
            harness.wait_until(
                lambda: self.nodes[key].post(f"/api/v1/messages/topics/{topic}/consume",
                                             {"group": "probe", "max": 1},
                                             user="deployer").status == 200,
                td.STATE_DEADLINE, f"the queue to answer on {key}")

        rest = self.consume_all(topic, "billing")
        delivered = first + rest
        self.assertEqual(len(delivered), len(set(delivered)), "no message twice to one group")
        self.assertEqual(set(delivered), set(ids), "every published message delivered")
        # Nothing comes back after acknowledgement, and another group gets everything.
        self.assertEqual(self.consume_all(topic, "billing"), [])
        audit = self.consume_all(topic, "audit")
        self.assertEqual(sorted(audit), sorted(ids))


class OutageTest(ClusterCase):

    def test_redis_restart_loses_data_and_every_entity_keeps_one_owner(self):
        redis = PrivateRedis().start()
        self.addCleanup(redis.cleanup)
        nodes = self.start_cluster(registry=redis.url,
                                   environments={"Production": {"inconclusive": "extend"}})
        tenants = [self.create_tenant(nodes[key], f"T{key}") for key in "ABC"]
        eid, traffic = self.production_canary([10, 50, 100], 3)
        self.use("C")
        pending = self.deploy_pending("echo", "1.0.0", "Production")
        self.use("A")
        self.approve_ok(eid)
        self.wait_deployment(eid, lambda d: d["stepsCompleted"] >= 2, "to be under way")
        before = self.assertSingleOwners()
        self.assertIn(f"deployments/{eid}", before)

        redis.stop()
        redis.start()  # same port, empty
        self.wait_members(3)

        # Until the canary ends, no entity is ever active on two nodes.
        def ended():
            self.assertSingleOwners()
            return self.get_deployment(eid)["status"] in td.TERMINAL
        harness.wait_until(ended, td.DEPLOY_DEADLINE, "the canary to end after the restart")
        self.assertEnded(eid, "Succeeded")
        where = self.assertSingleOwners()
        traffic.stop()
        self.assertEqual(traffic.bad_answers(), [])
        # Nothing was lost: the pending approval is still pending (and runs somewhere), every
        # tenant answers on every node.
        self.assertEqual(self.get_deployment(pending)["status"], "PendingApproval")
        self.assertIn(f"approvals/{pending}", where)
        for tid in tenants:
            for node in nodes.values():
                self.assertStatus(node.get(f"/api/v1/tenants/{tid}", user="admin"), 200)

    def test_postgres_restart_gives_503_and_recovers_with_everything_intact(self):
        pg = outage.PrivatePostgres()
        self.addCleanup(pg.cleanup)
        pg.start()
        nodes = self.start_cluster(store_url=pg.url)
        tid = self.create_tenant(nodes["A"], "Durable")
        self.use("A")
        self.upload("echo", "1.0.0", signed=False)
        self.use("B")
        done = self.deploy_ok("echo", "1.0.0", "Development")
        self.assertEnded(done, "Succeeded")
        self.upload("echo", "2.0.0")
        self.use("C")
        pending = self.deploy_pending("echo", "2.0.0", "Production")
        for node in nodes.values():  # tokens before the outage (a login needs the store)
            for user in ("admin", "viewer"):
                node.token(user)

        pg.stop()
        for key, node in nodes.items():
            # Reads and writes that need the store: a quick 503 problem, not a hang or a crash.
            resp = node.get(f"{td.DEPLOYMENTS}/{done}", user="viewer")
            self.assertProblem(resp, 503)
            resp = node.post("/api/v1/tenants",
                             {"name": "Nope", "subdomain": harness.unique("n-"),
                              "tier": "Starter", "contactEmail": "ops@n.example"}, user="admin")
            self.assertProblem(resp, 503)
            self.assertTrue(node.running(), f"{key} stopped during the outage")

        pg.start()
        for node in nodes.values():
            harness.wait_until(lambda: node.get("/ready").status == 200, td.STATE_DEADLINE,
                               f"{node.node_id} to recover by itself")
        for node in nodes.values():
            self.assertEqual(node.get(f"/api/v1/tenants/{tid}", user="admin").body["name"],
                             "Durable")
            self.assertEqual(node.get(f"{td.DEPLOYMENTS}/{done}", user="viewer").body["status"],
                             "Succeeded")
            self.assertEqual(node.get(f"{td.DEPLOYMENTS}/{pending}", user="viewer").body["status"],
                             "PendingApproval")
        # The approval's actor (owned by C) decides through B after the outage.
        self.use("B")
        resp = self.decide(pending, "reject", reason="outage drill")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["status"], "Rejected", resp.body)
        self.assertEnded(pending, "Failed")


if __name__ == "__main__":
    unittest.main()
