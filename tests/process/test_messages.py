"""Messages API (api-v1.md, "Messages") on a real hotswapd with the embedded SQLite store:
publish/get/list/acknowledge/delete on /api/v1/messages and the legacy /api/messages, every bad
input as one 4xx problem that stores nothing, authentication, consumer groups, priorities,
redelivery with backoff and the dead-letter topic, expiry, HMAC-signed topics, long polls, and
durability: 10,000 messages published, the node killed with SIGKILL, restarted, and every message
delivered exactly once to each of two groups.
"""

import datetime
import hashlib
import hmac
import json
import threading
import time
import unittest
import urllib.parse

import harness
from harness import NodeTestCase

PREFIXES = ("/api/v1/messages", "/api/messages")
MESSAGE_KEYS = {"messageId", "topicName", "payload", "schemaVersion", "headers", "correlationId",
                "priority", "expiresAt", "partitionKey", "timestamp", "createdAt", "status",
                "acknowledgedAt", "deliveryAttempts"}
SIGNED_TOPIC = "payments.events"
SIGNING_KEY = "test-signing-key-" + harness.unique()
KEY_VAR = "MESSAGES_TEST_HMAC_KEY"
DLQ_HEADERS = ("x-dead-letter-reason", "x-original-message-id", "x-original-topic",
               "x-consumer-group", "x-delivery-attempts")
MIB = 1024 * 1024


def topic(prefix="t"):
    return harness.unique(prefix + ".")


def sign(body_bytes, key=SIGNING_KEY):
    return "sha256=" + hmac.new(key.encode(), body_bytes, hashlib.sha256).hexdigest()


def in_future(seconds):
    t = harness.utcnow() + datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class MessagesApiTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node(
            config={
                "messages": {"ack_deadline_seconds": 1, "max_attempts": 3,
                             "backoff_initial_ms": 200,
                             "topics": {SIGNED_TOPIC: {"hmac_key_env": KEY_VAR}}},
                # Room for bodies above 1 MiB, so that the payload rule itself answers.
                "http": {"max_body_bytes": 3 * MIB},
            },
            env={KEY_VAR: SIGNING_KEY})
        cls.token = cls.n.token("viewer")

    # -- helpers --------------------------------------------------------------------------------

    def call(self, method, path, body=None, **kw):
        kw.setdefault("token", self.token)
        return self.n.request(method, path, body=body, **kw)

    def publish(self, body, prefix=PREFIXES[0], expect=201, **kw):
        resp = self.call("POST", f"{prefix}/publish", body, **kw)
        self.assertStatus(resp, expect, f"publish {str(body)[:200]}")
        return resp.body

    def listing(self, name, prefix=PREFIXES[0], limit=None):
        q = f"?limit={limit}" if limit is not None else ""
        resp = self.call("GET", f"{prefix}/topic/{name}{q}")
        self.assertStatus(resp, 200)
        self.assertIsInstance(resp.body, list)
        return resp.body

    def consume(self, name, group, max=None, wait_ms=None, prefix=PREFIXES[0], expect=200):
        body = {"group": group}
        if max is not None:
            body["max"] = max
        if wait_ms is not None:
            body["waitMs"] = wait_ms
        resp = self.call("POST", f"{prefix}/topics/{name}/consume", body)
        self.assertStatus(resp, expect)
        return resp.body

    def ack(self, message_id, group=None, prefix=PREFIXES[0], expect=200):
        body = {"group": group} if group is not None else None
        resp = self.call("POST", f"{prefix}/{message_id}/acknowledge", body)
        self.assertStatus(resp, expect)
        return resp

    def assertMessage(self, m):
        self.assertEqual(set(m), MESSAGE_KEYS, m)
        self.assertIsInstance(m["deliveryAttempts"], int)
        self.assertIn(m["status"], ("Pending", "Delivered", "Acknowledged", "Failed", "Expired"))
        harness.parse_time(m["timestamp"])
        self.assertEqual(m["timestamp"], m["createdAt"])

    # -- publish, get, list, delete ----------------------------------------------------------------

    def test_publish_get_and_list_on_both_prefixes(self):
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                name = topic("orders")
                body = {"messageId": harness.unique("m-"), "topicName": name,
                        "payload": {"orderId": 42, "items": [1, 2], "note": "caf\u00e9"},
                        "schemaVersion": "2.1", "headers": {"source": "test"},
                        "correlationId": "corr-1", "priority": 7,
                        "expiresAt": in_future(3600), "partitionKey": "customer-9"}
                resp = self.call("POST", f"{prefix}/publish", body)
                self.assertStatus(resp, 201)
                self.assertSecurityHeaders(resp)
                m = resp.body
                self.assertMessage(m)
                loc = urllib.parse.urlsplit(resp.headers.get("location", "")).path
                self.assertEqual(loc, f"{prefix}/{body['messageId']}")
                self.assertEqual(m["messageId"], body["messageId"])
                self.assertEqual(m["topicName"], name)
                self.assertEqual(m["payload"], body["payload"])  # JSON, not a string of JSON
                self.assertEqual(m["schemaVersion"], "2.1")
                self.assertEqual(m["headers"], {"source": "test"})
                self.assertEqual(m["correlationId"], "corr-1")
                self.assertEqual(m["priority"], 7)
                self.assertEqual(m["partitionKey"], "customer-9")
                self.assertEqual(m["status"], "Pending")
                self.assertEqual(m["deliveryAttempts"], 0)
                self.assertIsNone(m["acknowledgedAt"])
                self.assertTimeClose(m["createdAt"], harness.utcnow(), 60)
                self.assertTimeClose(m["expiresAt"], harness.utcnow() + datetime.timedelta(hours=1), 60)
                # GET on both prefixes.
                for p in PREFIXES:
                    got = self.call("GET", f"{p}/{m['messageId']}")
                    self.assertStatus(got, 200)
                    self.assertEqual(got.body, m)
                # An idempotent retry: 200, the same message, nothing new stored.
                again = self.publish(body, prefix=prefix, expect=200)
                self.assertEqual(again["messageId"], m["messageId"])
                # The same id with other content: 409, nothing changed.
                other = dict(body, payload={"orderId": 43})
                self.assertProblem(self.call("POST", f"{prefix}/publish", other), 409)
                listed = self.listing(name, prefix)
                self.assertEqual([x["messageId"] for x in listed], [m["messageId"]])
                self.assertEqual(listed[0]["payload"], body["payload"])

    def test_an_empty_or_absent_message_id_gets_a_uuid(self):
        name = topic("ids")
        a = self.publish({"topicName": name, "payload": 1, "messageId": ""})
        b = self.publish({"topicName": name, "payload": "text"})
        for m in (a, b):
            self.assertRegex(m["messageId"], r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
            self.assertEqual(m["schemaVersion"], "1.0")
            self.assertEqual(m["priority"], 0)
        self.assertNotEqual(a["messageId"], b["messageId"])
        self.assertEqual(b["payload"], "text")

    def test_every_bad_input_is_one_400_problem_and_stores_nothing(self):
        name = topic("bad")
        good = {"topicName": name, "payload": {"x": 1}, "schemaVersion": "1.0"}
        cases = [
            ({"payload": {"x": 1}}, ["topicName"]),
            (dict(good, topicName=""), ["topicName"]),
            (dict(good, topicName="has space"), ["topicName"]),
            (dict(good, topicName="x" * 201), ["topicName"]),
            (dict(good, topicName=5), ["topicName"]),
            ({"topicName": name}, ["payload"]),
            (dict(good, payload=None), ["payload"]),
            (dict(good, payload="y" * (MIB + 10)), ["payload"]),
            (dict(good, schemaVersion=3), ["schemaVersion"]),
            (dict(good, schemaVersion=""), ["schemaVersion"]),
            (dict(good, headers="x"), ["headers"]),
            (dict(good, headers={"a": 1}), ["headers"]),
            (dict(good, headers=["a"]), ["headers"]),
            (dict(good, priority=10), ["priority"]),
            (dict(good, priority=-1), ["priority"]),
            (dict(good, priority=5.5), ["priority"]),
            (dict(good, priority="5"), ["priority"]),
            (dict(good, expiresAt="tomorrow"), ["expiresAt"]),
            (dict(good, expiresAt="2001-01-01T00:00:00Z"), ["expiresAt"]),
            (dict(good, expiresAt=12345), ["expiresAt"]),
            (dict(good, messageId="has space"), ["messageId"]),
            (dict(good, messageId="x" * 129), ["messageId"]),
            (dict(good, messageId=7), ["messageId"]),
            (dict(good, correlationId=5), ["correlationId"]),
            (dict(good, partitionKey={}), ["partitionKey"]),
            # Every violated rule in one problem.
            ({"topicName": "bad topic", "priority": 11, "expiresAt": "never", "headers": 3,
              "messageId": "a b", "schemaVersion": False},
             ["topicName", "payload", "priority", "expiresAt", "headers", "messageId",
              "schemaVersion"]),
        ]
        for prefix in PREFIXES:
            for body, fields in cases:
                with self.subTest(prefix=prefix, fields=fields, body=str(body)[:80]):
                    resp = self.call("POST", f"{prefix}/publish", body)
                    self.assertValidation(resp, *fields)
                    if len(fields) > 1:
                        self.assertEqual(set(resp.body["errors"]), set(fields), resp.body)
        for raw in ("not json", "[1, 2]", ""):
            with self.subTest(raw=raw):
                self.assertProblem(self.call("POST", f"{PREFIXES[0]}/publish", raw=raw), 400)
        self.assertEqual(self.listing(name), [])
        # Control: the good body is accepted.
        self.publish(good)
        self.assertEqual(len(self.listing(name)), 1)

    def test_listing_is_newest_first_limited_and_validated(self):
        name = topic("list")
        ids = [self.publish({"topicName": name, "payload": i, "priority": i % 10})["messageId"]
               for i in range(5)]
        newest_first = list(reversed(ids))
        self.assertEqual([m["messageId"] for m in self.listing(name)], newest_first)
        self.assertEqual([m["messageId"] for m in self.listing(name, limit=3)], newest_first[:3])
        self.assertEqual([m["messageId"] for m in self.listing(name, PREFIXES[1], 1000)], newest_first)
        for bad in ("0", "1001", "x", "-1", "2.5"):
            with self.subTest(limit=bad):
                self.assertValidation(self.call("GET", f"{PREFIXES[0]}/topic/{name}?limit={bad}"),
                                      "limit")
        self.assertValidation(self.call("GET", f"{PREFIXES[0]}/topic/bad%20name"), "topicName")
        self.assertEqual(self.listing(topic("empty")), [])

    def test_unknown_messages_are_404_and_delete_is_204(self):
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                m = self.publish({"topicName": topic("del"), "payload": {}}, prefix=prefix)
                mid = m["messageId"]
                resp = self.call("DELETE", f"{prefix}/{mid}")
                self.assertStatus(resp, 204)
                self.assertEqual(resp.raw, b"")
                self.assertProblem(self.call("GET", f"{prefix}/{mid}"), 404)
                self.assertProblem(self.call("DELETE", f"{prefix}/{mid}"), 404)
                self.assertProblem(self.call("POST", f"{prefix}/{mid}/acknowledge"), 404)
                self.assertEqual(self.listing(m["topicName"], prefix), [])
                self.assertProblem(self.call("GET", f"{prefix}/{harness.unique('none-')}"), 404)

    def test_acknowledge_for_a_group_and_as_a_whole(self):
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                name = topic("ack")
                a = self.publish({"topicName": name, "payload": "a"}, prefix=prefix)
                b = self.publish({"topicName": name, "payload": "b"}, prefix=prefix)
                got = self.consume(name, "g1", prefix=prefix)
                self.assertEqual({m["messageId"] for m in got}, {a["messageId"], b["messageId"]})
                # For a group.
                r = self.ack(a["messageId"], "g1", prefix)
                self.assertMessage(r.body)
                self.assertEqual(r.body["status"], "Acknowledged")
                self.assertTimeClose(r.body["acknowledgedAt"], harness.utcnow(), 60)
                self.assertEqual(r.body["deliveryAttempts"], 1)
                self.assertEqual(self.ack(a["messageId"], "g1", prefix).body["status"], "Acknowledged")
                # A group that never received it: 409.
                self.assertProblem(self.call("POST", f"{prefix}/{a['messageId']}/acknowledge",
                                             {"group": "never"}), 409)
                self.assertValidation(self.call("POST", f"{prefix}/{a['messageId']}/acknowledge",
                                                {"group": "bad group"}), "group")
                self.assertProblem(self.call("POST", f"{prefix}/{a['messageId']}/acknowledge",
                                             raw="[]"), 400)
                # Legacy: without a body, for the message as a whole.
                r = self.ack(b["messageId"], None, prefix)
                self.assertEqual(r.body["status"], "Acknowledged")
                self.assertEqual(self.call("GET", f"{prefix}/{b['messageId']}").body["status"],
                                 "Acknowledged")
                # Neither comes back to g1 after the ack deadline; a new group gets only a.
                time.sleep(1.5)  # past ack deadline (1 s) + backoff (0.2 s): no condition to poll
                self.assertEqual(self.consume(name, "g1", prefix=prefix), [])
                fresh = self.consume(name, "g-new", prefix=prefix)
                self.assertEqual([m["messageId"] for m in fresh], [a["messageId"]])

    def test_every_route_needs_a_signed_in_user(self):
        mid = harness.unique("m-")
        name = topic("auth")
        for prefix in PREFIXES:
            routes = [("POST", f"{prefix}/publish", {"topicName": name, "payload": 1}),
                      ("GET", f"{prefix}/{mid}", None),
                      ("GET", f"{prefix}/topic/{name}", None),
                      ("POST", f"{prefix}/{mid}/acknowledge", None),
                      ("DELETE", f"{prefix}/{mid}", None),
                      ("POST", f"{prefix}/topics/{name}/consume", {"group": "g"})]
            for method, path, body in routes:
                with self.subTest(method=method, path=path):
                    self.assertProblem(self.n.request(method, path, body=body), 401)
                    self.assertProblem(self.n.request(method, path, body=body, token="not.a.token"),
                                       401)
        self.assertEqual(self.listing(name), [])
        # Any role may use the queue.
        for user in ("viewer", "deployer", "admin"):
            resp = self.n.request("POST", f"{PREFIXES[0]}/publish",
                                  body={"topicName": name, "payload": user}, user=user)
            self.assertStatus(resp, 201)

    # -- consumers ---------------------------------------------------------------------------------

    def test_consumer_groups_each_receive_every_message_once(self):
        name = topic("groups")
        ids = {self.publish({"topicName": name, "payload": i})["messageId"] for i in range(6)}
        g1 = self.consume(name, "g1", max=100)
        self.assertEqual({m["messageId"] for m in g1}, ids)
        for m in g1:
            self.assertMessage(m)
            self.assertEqual(m["deliveryAttempts"], 1)
            self.assertEqual(m["status"], "Delivered")
        self.assertEqual(self.consume(name, "g1"), [])
        g2 = self.consume(name, "g2", prefix=PREFIXES[1], max=100)
        self.assertEqual({m["messageId"] for m in g2}, ids)
        # Two consumers of one group never get the same message.
        c1 = self.consume(name, "g3", max=4)
        c2 = self.consume(name, "g3", max=4)
        got1 = {m["messageId"] for m in c1}
        got2 = {m["messageId"] for m in c2}
        self.assertEqual(len(c1), 4)
        self.assertEqual(len(c2), 2)
        self.assertFalse(got1 & got2)
        self.assertEqual(got1 | got2, ids)
        # The default max is 10.
        many = topic("many")
        for i in range(12):
            self.publish({"topicName": many, "payload": i})
        self.assertEqual(len(self.consume(many, "g")), 10)
        self.assertEqual(len(self.consume(many, "g")), 2)

    def test_consume_rejects_bad_input(self):
        name = topic("cbad")
        path = f"{PREFIXES[0]}/topics/{name}/consume"
        cases = [({}, ["group"]), ({"group": ""}, ["group"]), ({"group": "a b"}, ["group"]),
                 ({"group": 5}, ["group"]),
                 ({"group": "g", "max": 0}, ["max"]), ({"group": "g", "max": 101}, ["max"]),
                 ({"group": "g", "max": "5"}, ["max"]), ({"group": "g", "waitMs": -1}, ["waitMs"]),
                 ({"group": "g", "waitMs": 30001}, ["waitMs"]),
                 ({"max": 0, "waitMs": 1.5}, ["group", "max", "waitMs"])]
        for body, fields in cases:
            with self.subTest(body=body):
                self.assertValidation(self.call("POST", path, body), *fields)
        self.assertValidation(self.call("POST", f"{PREFIXES[0]}/topics/bad%20topic/consume",
                                        {"group": "g"}), "topicName")
        self.assertProblem(self.call("POST", path, raw="nope"), 400)

    def test_priority_nine_comes_before_zero_then_oldest_first(self):
        name = topic("prio")
        spec = [("a", 0), ("b", 9), ("c", 5), ("d", 9), ("e", 0), ("f", 1)]
        ids = {}
        for label, prio in spec:
            ids[label] = self.publish({"topicName": name, "payload": label, "priority": prio})["messageId"]
        got = self.consume(name, "g", max=100)
        self.assertEqual([m["payload"] for m in got], ["b", "d", "c", "f", "a", "e"])
        self.assertEqual([m["priority"] for m in got], [9, 9, 5, 1, 0, 0])

    def test_redelivery_with_backoff_then_dead_letter_topic(self):
        # ack_deadline 1 s, backoff 200 ms, max_attempts 3: lease n ends 1 s + 0.2 s * 2^(n-1)
        # after delivery n; after the third the message goes to "<topic>.dlq".
        name = topic("redeliver")
        dlq = name + ".dlq"
        before = harness.metric(self.n, "hotswap_messages_redelivered_total")
        m = self.publish({"topicName": name, "payload": {"job": 1}, "headers": {"k": "v"}})
        mid = m["messageId"]
        first = self.consume(name, "workers")
        self.assertEqual([x["deliveryAttempts"] for x in first], [1])
        delivered_at = time.monotonic()
        self.assertEqual(self.consume(name, "workers"), [])
        for attempt, lease in ((2, 1.2), (3, 1.4)):
            got = harness.wait_until(lambda: self.consume(name, "workers"), lease + 5,
                                     f"delivery attempt {attempt}")
            now = time.monotonic()
            self.assertEqual([x["messageId"] for x in got], [mid])
            self.assertEqual(got[0]["deliveryAttempts"], attempt)
            self.assertGreaterEqual(now - delivered_at, lease - 0.1,
                                    f"attempt {attempt} came before the lease ended")
            self.assertLess(now - delivered_at, lease + 3.0)
            delivered_at = now
        # Lease 3 ends after 1.8 s: the next consume dead-letters it instead.
        def dead_lettered():
            self.assertEqual(self.consume(name, "workers"), [])
            return self.listing(dlq)
        copies = harness.wait_until(dead_lettered, 8, "the dead-letter copy")
        self.assertGreaterEqual(time.monotonic() - delivered_at, 1.8 - 0.1)
        self.assertEqual(len(copies), 1)
        c = copies[0]
        self.assertMessage(c)
        self.assertNotEqual(c["messageId"], mid)
        self.assertEqual(c["topicName"], dlq)
        self.assertEqual(c["payload"], {"job": 1})
        self.assertEqual(c["headers"]["k"], "v")
        for h in DLQ_HEADERS:
            self.assertTrue(c["headers"].get(h), f"{h} missing: {c['headers']}")
        self.assertEqual(c["headers"]["x-original-message-id"], mid)
        self.assertEqual(c["headers"]["x-original-topic"], name)
        self.assertEqual(c["headers"]["x-consumer-group"], "workers")
        self.assertEqual(c["headers"]["x-delivery-attempts"], "3")
        orig = self.call("GET", f"{PREFIXES[0]}/{mid}").body
        self.assertEqual(orig["status"], "Failed")
        self.assertEqual(orig["deliveryAttempts"], 3)
        # Too late to acknowledge; never again to this group.
        self.assertProblem(self.call("POST", f"{PREFIXES[0]}/{mid}/acknowledge",
                                     {"group": "workers"}), 409)
        self.assertEqual(self.consume(name, "workers"), [])
        # The DLQ reads and consumes like any topic.
        d = self.consume(dlq, "ops", prefix=PREFIXES[1])
        self.assertEqual([x["messageId"] for x in d], [c["messageId"]])
        self.assertEqual(self.ack(c["messageId"], "ops").body["status"], "Acknowledged")
        self.assertGreaterEqual(harness.metric(self.n, "hotswap_messages_redelivered_total") - before, 2)
        self.assertGreaterEqual(harness.metric(self.n, "hotswap_messages_dead_lettered_total"), 1)

    def test_expired_messages_are_never_delivered(self):
        name = topic("expiry")
        soon = self.publish({"topicName": name, "payload": "soon", "priority": 9,
                             "expiresAt": in_future(1.5)})
        keep = self.publish({"topicName": name, "payload": "keep"})
        self.assertEqual(soon["status"], "Pending")
        expires = harness.parse_time(soon["expiresAt"])
        # Wait for the expiry itself (a time, not a condition the node could signal).
        time.sleep(max(0.0, (expires - harness.utcnow()).total_seconds()) + 0.2)
        got = self.consume(name, "g", max=100)
        self.assertEqual([m["messageId"] for m in got], [keep["messageId"]])
        self.assertEqual(self.call("GET", f"{PREFIXES[0]}/{soon['messageId']}").body["status"],
                         "Expired")
        self.assertEqual([m["messageId"] for m in self.consume(name, "late-group", max=100)],
                         [keep["messageId"]])
        self.assertGreaterEqual(harness.metric(self.n, "hotswap_messages_expired_total"), 1)

    # -- signed topics -----------------------------------------------------------------------------

    def test_signed_topic_requires_a_valid_signature(self):
        mid = harness.unique("pay-")
        body = json.dumps({"messageId": mid, "topicName": SIGNED_TOPIC,
                           "payload": {"amount": 100, "currency": "EUR"}}).encode()
        url = f"{PREFIXES[0]}/publish"
        before = len(self.listing(SIGNED_TOPIC, limit=1000))
        bad = {
            "unsigned": {},
            "forged": {"X-Message-Signature": sign(body, "wrong-key")},
            "other bytes": {"X-Message-Signature": sign(body + b" ")},
            "not hex": {"X-Message-Signature": "sha256=zz"},
            "other scheme": {"X-Message-Signature": sign(body).replace("sha256=", "md5=")},
            "bare hex": {"X-Message-Signature": sign(body)[len("sha256="):]},
        }
        for label, headers in bad.items():
            with self.subTest(label):
                resp = self.call("POST", url, raw=body, headers=headers)
                self.assertProblem(resp, 401)
        self.assertProblem(self.call("GET", f"{PREFIXES[0]}/{mid}"), 404)
        self.assertEqual(len(self.listing(SIGNED_TOPIC, limit=1000)), before)
        # Signed over the exact request body: accepted (upper-case hex too), retry idempotent.
        resp = self.call("POST", url, raw=body, headers={"X-Message-Signature": sign(body)})
        self.assertStatus(resp, 201)
        self.assertEqual(resp.body["payload"], {"amount": 100, "currency": "EUR"})
        upper = "sha256=" + sign(body)[len("sha256="):].upper()
        self.assertStatus(self.call("POST", PREFIXES[1] + "/publish", raw=body,
                                    headers={"X-Message-Signature": upper}), 200)
        self.assertEqual(len(self.listing(SIGNED_TOPIC, limit=1000)), before + 1)
        # A string payload may be signed over its value (the old API's "HMAC of the payload");
        # a forged one is still refused and a non-string payload has no such form.
        text = 'order 7: {"amount": 5}'
        sbody = json.dumps({"topicName": SIGNED_TOPIC, "payload": text}).encode()
        resp = self.call("POST", url, raw=sbody,
                         headers={"X-Message-Signature": sign(text.encode())})
        self.assertStatus(resp, 201)
        self.assertEqual(resp.body["payload"], text)
        self.assertProblem(self.call("POST", url, raw=sbody, headers={
            "X-Message-Signature": sign(text.encode(), "wrong-key")}), 401)
        self.assertProblem(self.call("POST", url, raw=body, headers={
            "X-Message-Signature": sign(json.dumps({"amount": 100, "currency": "EUR"})
                                        .encode())}), 401)
        # Other topics need no signature.
        self.publish({"topicName": topic("unsigned"), "payload": 1})

    # -- long polls --------------------------------------------------------------------------------

    def test_long_poll_is_answered_when_a_message_arrives(self):
        name = topic("poll")
        result = {}

        def waiter():
            started = time.monotonic()
            try:
                result["resp"] = self.call("POST", f"{PREFIXES[0]}/topics/{name}/consume",
                                           {"group": "g", "waitMs": 10000})
            except Exception as exc:  # noqa: BLE001 - reported below
                result["error"] = exc
            result["took"] = time.monotonic() - started

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)  # let the poll reach the broker; it has nothing to signal
        m = self.publish({"topicName": name, "payload": "wake up"})
        t.join(15)
        self.assertFalse(t.is_alive(), "the long poll did not return")
        self.assertNotIn("error", result)
        self.assertStatus(result["resp"], 200)
        self.assertEqual([x["messageId"] for x in result["resp"].body], [m["messageId"]])
        self.assertLess(result["took"], 5.0, "answered by the publish, not the wait")
        # Nothing arrives: an empty answer after the wait.
        started = time.monotonic()
        self.assertEqual(self.consume(name, "g", wait_ms=1000), [])
        took = time.monotonic() - started
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 4.0)

    def test_message_metrics_are_exported(self):
        name = topic("metrics")
        m = self.publish({"topicName": name, "payload": 1})
        self.consume(name, "g")
        self.ack(m["messageId"], "g")
        text = str(self.n.get("/metrics").body)
        for metric in ("hotswap_messages_published_total", "hotswap_messages_delivered_total",
                       "hotswap_messages_acknowledged_total", "hotswap_message_consumer_lag"):
            self.assertIn(metric, text)
        self.assertGreaterEqual(harness.metric(self.n, "hotswap_messages_published_total"), 1)
        self.assertGreaterEqual(harness.metric(self.n, "hotswap_messages_acknowledged_total"), 1)


class MessageDurabilityTest(NodeTestCase):
    """10,000 messages survive SIGKILL; each group receives each one exactly once."""

    TOTAL = 10000
    THREADS = 8

    def parallel(self, n, items, fn):
        """Runs fn(item) over `items` on n threads (each with its own keep-alive connection)."""
        errors = []
        lock = threading.Lock()
        chunks = [items[i::n] for i in range(n)]

        def run(chunk):
            try:
                for item in chunk:
                    fn(item)
            except Exception as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def drain(self, n, token, name, group, ack):
        """Consumes `name` as `group` in batches until empty; returns every id received."""
        received = []
        while True:
            resp = n.request("POST", f"/api/v1/messages/topics/{name}/consume",
                             body={"group": group, "max": 100}, token=token)
            self.assertStatus(resp, 200)
            batch = resp.body
            if not batch:
                return received
            for m in batch:
                self.assertEqual(m["deliveryAttempts"], 1, m)
            ids = [m["messageId"] for m in batch]
            received.extend(ids)
            if ack:
                def acknowledge(mid):
                    r = n.request("POST", f"/api/v1/messages/{mid}/acknowledge",
                                  body={"group": group}, token=token)
                    self.assertStatus(r, 200)
                self.parallel(self.THREADS, ids, acknowledge)

    def test_ten_thousand_messages_survive_sigkill_and_reach_each_group_once(self):
        n = self.node()
        token = n.token("deployer")
        name = topic("durable")
        ids = [f"dur-{i:05d}-{harness.unique()}" for i in range(self.TOTAL)]
        started = time.monotonic()

        def publish(mid):
            r = n.request("POST", "/api/v1/messages/publish",
                          body={"messageId": mid, "topicName": name,
                                "payload": {"id": mid, "pad": "x" * 64}, "priority": hash(mid) % 10},
                          token=token)
            if r.status != 201:
                raise AssertionError(f"publish {mid}: {r!r}")

        self.parallel(self.THREADS, ids, publish)
        published_in = time.monotonic() - started
        # Every publish was answered 201: kill the node before anything is consumed.
        n.kill()
        n.start()
        n.forget_tokens()
        token = n.token("deployer")
        got = self.drain(n, token, name, "g1", ack=True)
        self.assertEqual(len(got), self.TOTAL, "every message exactly once to g1")
        self.assertEqual(len(set(got)), self.TOTAL, "no duplicates")
        self.assertEqual(set(got), set(ids))
        # Acknowledged: nothing comes back to g1, not even after the ack deadline would matter.
        resp = n.request("POST", f"/api/v1/messages/topics/{name}/consume",
                         body={"group": "g1", "max": 100}, token=token)
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body, [])
        # A second group receives all of them too.
        got2 = self.drain(n, token, name, "g2", ack=False)
        self.assertEqual(len(got2), self.TOTAL)
        self.assertEqual(set(got2), set(ids))
        total = time.monotonic() - started
        print(f"published {self.TOTAL} in {published_in:.1f}s, whole test {total:.1f}s")

    def test_on_postgresql_messages_survive_sigkill_too(self):
        # The same store code on PostgreSQL (what a cluster uses until the Redis store is wired).
        n = self.node(pg=True)
        token = n.token("deployer")
        name = topic("durable-pg")
        ids = [f"pg-{i:04d}-{harness.unique()}" for i in range(500)]

        def publish(mid):
            r = n.request("POST", "/api/v1/messages/publish",
                          body={"messageId": mid, "topicName": name, "payload": {"id": mid}},
                          token=token)
            if r.status != 201:
                raise AssertionError(f"publish {mid}: {r!r}")

        self.parallel(self.THREADS, ids, publish)
        n.kill()
        n.start()
        n.forget_tokens()
        token = n.token("deployer")
        got = self.drain(n, token, name, "g1", ack=True)
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(self.drain(n, token, name, "g1", ack=False), [])
        self.assertEqual(sorted(self.drain(n, token, name, "g2", ack=False)), sorted(ids))


if __name__ == "__main__":
    unittest.main()
