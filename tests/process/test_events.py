"""The event stream over WebSocket (/api/v1/events and /hubs/deployment) against a real node:
authentication of the handshake, the events of a deployment from creation to Succeeded in order,
resume after an id (exactly the missed events, also after a node restart), tenant isolation and
bad commands.

Reuses test_deployments' module, key and deployment helpers (the echo example modules and the
openssl CLI are needed as there)."""

import time
import unittest

import harness
import test_deployments as td
from wsclient import Closed, HandshakeError, WebSocket

EVENTS = "/api/v1/events"
TENANTS = "/api/v1/tenants"
EVENT_DEADLINE = 30.0


def setUpModule():
    td.setUpModule()


def tearDownModule():
    td.tearDownModule()


class EventsCase(td.DeploymentCase):
    def connect(self, user="viewer", path=EVENTS, header_token=False, token=None):
        ws = WebSocket(self.n.port, path, token=token or self.n.token(user),
                       header_token=header_token)
        self.addCleanup(ws.close)
        return ws

    def subscribe(self, ws, after=None, execution_id=None):
        msg = {"subscribe": "deployment" if execution_id else "all"}
        if execution_id:
            msg["executionId"] = execution_id
        if after:
            msg["after"] = after
        ws.send_json(msg)
        reply = ws.recv_json()
        self.assertEqual(reply["type"], "Subscribed", reply)
        self.assertEqual(reply["subscription"], msg["subscribe"], reply)
        return reply

    def read_until(self, ws, predicate, what, timeout=EVENT_DEADLINE):
        """Events until (and including) the first that satisfies `predicate`."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event {what} within {timeout} s; got {got}")
            ev = ws.recv_json(timeout=left)
            got.append(ev)
            if predicate(ev):
                return got

    def assertOrdered(self, events):
        ids = [tuple(int(x) for x in e["id"].split("-")) for e in events]
        self.assertEqual(ids, sorted(ids), "event ids in stream order")
        self.assertEqual(len(set(ids)), len(ids), "no event twice")

    def development_deployment(self):
        """echo 1.0.0 serves Development; returns the id of a deployment of 2.0.0 there."""
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")
        self.stage_baseline("Development", "echo", "1.0.0")
        return self.deploy_ok("echo", "2.0.0", "Development")

    def tenant(self, name):
        resp = self.n.post(TENANTS, {"name": name, "subdomain": harness.unique("ev-"),
                                     "tier": "Free", "contactEmail": "ops@example.com"},
                           user="admin")
        self.assertStatus(resp, 201)
        return resp.body["tenantId"]

    def touch_tenant(self, tid, name):
        resp = self.n.request("PUT", f"{TENANTS}/{tid}", {"name": name,
                                                          "contactEmail": "ops@example.com"},
                              user="admin")
        self.assertStatus(resp, 200)


class EventStreamTest(EventsCase):
    def setUp(self):
        self.start_node(environments={"Development": {}})

    def test_handshake_needs_a_valid_token(self):
        for token in (None, "not-a-token"):
            with self.subTest(token=token):
                with self.assertRaises(HandshakeError) as ctx:
                    WebSocket(self.n.port, EVENTS, token=token)
                self.assertEqual(ctx.exception.status, 401)
                self.assertIn("application/problem+json",
                              ctx.exception.headers.get("content-type", ""))
        # The token in the Authorization header works as well as ?access_token=, on both paths.
        for path in (EVENTS, "/hubs/deployment"):
            with self.subTest(path=path):
                ws = self.connect(path=path, header_token=True)
                self.subscribe(ws)
        # A plain GET (no upgrade) is told to upgrade.
        resp = self.n.get(EVENTS, user="viewer")
        self.assertStatus(resp, 426)

    def test_deployment_events_in_order_from_start_to_succeeded(self):
        ws = self.connect()
        self.subscribe(ws)
        eid = self.development_deployment()
        got = self.read_until(ws, lambda e: e.get("executionId") == eid
                              and e["type"] == "DeploymentStatusChanged"
                              and e["status"] in td.TERMINAL, "of the deployment's end")
        mine = [e for e in got if e.get("executionId") == eid]
        self.assertOrdered(got)
        self.assertEqual(mine[-1]["status"], "Succeeded", mine)
        statuses = [e["status"] for e in mine if e["type"] == "DeploymentStatusChanged"]
        self.assertIn("Running", statuses)
        self.assertLess(statuses.index("Running"), statuses.index("Succeeded"))
        progress = [e for e in mine if e["type"] == "DeploymentProgress"]
        self.assertTrue(progress, f"a DeploymentProgress event: {mine}")
        values = [e["progress"] for e in progress]
        self.assertEqual(values, sorted(values), "progress never goes back")
        self.assertLessEqual(max(values), 100)
        for e in mine:
            self.assertTrue({"id", "type", "executionId", "status", "stage", "progress",
                             "timestamp", "details"} <= set(e), e)
            harness.parse_time(e["timestamp"])
        # The deployment's REST view agrees with the last event.
        self.assertEqual(self.get_deployment(eid)["status"], "Succeeded")
        # Metrics: what this node appended and sent, and the open subscriber.
        self.assertGreaterEqual(harness.metric(self.n, "hotswap_events_published_total"),
                                len(mine))
        self.assertGreaterEqual(harness.metric(self.n, "hotswap_events_delivered_total"),
                                len(mine))
        self.assertEqual(harness.metric(self.n, "hotswap_event_subscribers"), 1)
        ws.close()
        harness.wait_until(lambda: harness.metric(self.n, "hotswap_event_subscribers") == 0,
                           EVENT_DEADLINE, "the subscriber gauge to drop")

    def test_resume_after_an_id_replays_exactly_the_missed_events(self):
        full = self.connect()  # stays connected throughout: the reference
        self.subscribe(full)
        eid = self.development_deployment()
        # A second client sees the first event of the deployment, then drops.
        early = self.connect()
        self.subscribe(early, execution_id=eid, after="0")
        first = early.recv_json()
        self.assertEqual(first["executionId"], eid)
        early.close()
        self.wait_terminal(eid)
        # A marker after the deployment ended: everything before it is in the stream.
        marker = self.tenant("Marker")
        reference = self.read_until(full, lambda e: e["type"] == "TenantChanged"
                                    and e.get("details", {}).get("tenantId") == marker, "marker")
        # Resume after the last id the dropped client saw.
        again = self.connect()
        self.subscribe(again, after=first["id"])
        replayed = self.read_until(again, lambda e: e["type"] == "TenantChanged"
                                   and e.get("details", {}).get("tenantId") == marker, "marker")
        expected = [e for e in reference if tuple(map(int, e["id"].split("-")))
                    > tuple(map(int, first["id"].split("-")))]
        self.assertEqual([e["id"] for e in replayed], [e["id"] for e in expected])
        self.assertEqual(replayed, expected)
        # Live events continue after the replay, without a duplicate.
        self.touch_tenant(marker, "Marker 2")
        live = again.recv_json()
        self.assertEqual(live["type"], "TenantChanged")
        self.assertNotIn(live["id"], [e["id"] for e in replayed])

    def test_events_survive_a_restart(self):
        ws = self.connect()
        self.subscribe(ws)
        t1 = self.tenant("Before Restart")
        before = self.read_until(ws, lambda e: e["type"] == "TenantChanged", "of the tenant")
        ws.close()
        self.n.restart(kill=True)
        self.n.forget_tokens()
        t2 = self.tenant("After Restart")
        ws = self.connect()
        self.subscribe(ws, after="0")
        got = self.read_until(ws, lambda e: e["type"] == "TenantChanged"
                              and e["details"].get("tenantId") == t2, "of the second tenant")
        ids = [e["id"] for e in got]
        self.assertIn(before[-1]["id"], ids, "an event from before the kill is replayed")
        self.assertIn(t1, [e["details"].get("tenantId") for e in got])
        self.assertOrdered(got)

    def test_tenant_users_see_only_their_tenant(self):
        mine = self.tenant("Mine")
        other = self.tenant("Other")
        name = harness.unique("evuser.")
        resp = self.n.post("/api/v1/users", {"username": name, "password": "Passw0rd-123",
                                             "email": f"{name}@example.com", "fullName": "T U",
                                             "roles": ["Viewer"], "tenantId": mine},
                           user="admin")
        self.assertStatus(resp, 201)
        ws = WebSocket(self.n.port, EVENTS, token=self.n.login(name, "Passw0rd-123"))
        self.addCleanup(ws.close)
        self.subscribe(ws)
        self.touch_tenant(other, "Other 2")
        self.development_deployment()  # platform events
        self.touch_tenant(mine, "Mine 2")
        got = self.read_until(ws, lambda e: e["type"] == "TenantChanged"
                              and e["details"].get("name") == "Mine 2", "of the own tenant")
        self.assertEqual({e.get("tenantId") for e in got}, {mine}, got)

    def test_bad_commands_get_an_error_and_the_connection_stays(self):
        ws = self.connect()
        for bad in ("not json", {"subscribe": "everything"}, {"subscribe": "deployment"},
                    {"subscribe": "all", "after": "abc"}, {"hello": 1}):
            with self.subTest(bad=bad):
                if isinstance(bad, str):
                    ws.send_frame(0x1, bad.encode())
                else:
                    ws.send_json(bad)
                reply = ws.recv_json()
                self.assertEqual(reply["type"], "Error", reply)
                self.assertTrue(reply["message"])
        self.subscribe(ws)
        ws.send_json({"unsubscribe": "all"})
        self.assertEqual(ws.recv_json()["type"], "Unsubscribed")


class ModulePubSubTest(EventsCase):
    """The example module `watcher` subscribes to the event stream and to topic watcher.in through
    its module context and publishes to watcher.out (examples/modules/watcher.cpp)."""

    MESSAGES = "/api/v1/messages"

    def setUp(self):
        self.start_node(environments={"Development": {}},
                        messages={"ack_deadline_seconds": 1, "max_attempts": 2,
                                  "backoff_initial_ms": 100})
        self.upload("watcher", "1.0.0")
        self.stage_baseline("Development", "watcher", "1.0.0")

    def topic(self, name):
        resp = self.n.get(f"{self.MESSAGES}/topic/{name}?limit=1000", user="viewer")
        self.assertStatus(resp, 200)
        return resp.body

    def publish(self, topic, payload):
        resp = self.n.post(f"{self.MESSAGES}/publish", {"topicName": topic, "payload": payload,
                                                        "schemaVersion": "1.0"}, user="deployer")
        self.assertStatus(resp, 201)
        return resp.body["messageId"]

    def wait_out(self, predicate, what):
        return harness.wait_until(
            lambda: [m for m in self.topic("watcher.out") if predicate(m["payload"])],
            EVENT_DEADLINE, what)

    def test_module_consumes_a_topic_and_publishes(self):
        mid = self.publish("watcher.in", {"order": 7})
        out = self.wait_out(lambda p: p.get("seen", {}).get("messageId") == mid,
                            "the module's answer on watcher.out")
        self.assertEqual(out[0]["payload"]["seen"]["payload"], {"order": 7})
        self.assertEqual(out[0]["headers"].get("x-module-version"), "1.0.0", out[0])
        harness.wait_until(lambda: self.n.get(f"{self.MESSAGES}/{mid}", user="viewer")
                           .body["status"] == "Acknowledged", EVENT_DEADLINE,
                           "the module's acknowledgement")

    def test_a_message_the_module_rejects_is_redelivered_then_dead_lettered(self):
        mid = self.publish("watcher.in", {"please": "reject"})
        dlq = harness.wait_until(
            lambda: [m for m in self.topic("watcher.in.dlq")
                     if m["headers"].get("x-original-message-id") == mid],
            EVENT_DEADLINE, "the rejected message in watcher.in.dlq")
        self.assertEqual(dlq[0]["headers"].get("x-consumer-group"), "module:watcher", dlq[0])
        self.assertTrue(dlq[0]["headers"].get("x-dead-letter-reason"), dlq[0])
        self.assertEqual(self.n.get(f"{self.MESSAGES}/{mid}", user="viewer").body["status"],
                         "Failed")
        counters = self.invoke("watcher", "", "Development").body
        self.assertIn("rejected=2", counters, "two attempts (max_attempts = 2)")

    def test_module_reacts_to_deployment_events(self):
        self.upload("echo", "1.0.0")
        eid = self.deploy_ok("echo", "1.0.0", "Development")
        self.wait_out(lambda p: p.get("deploymentSucceeded") == eid,
                      "the module's message about the deployment")
        counters = self.invoke("watcher", "", "Development").body
        self.assertNotIn("events=0", counters)


if __name__ == "__main__":
    unittest.main()
