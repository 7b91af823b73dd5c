"""Audit log API: paging, trace ids, per-user authentication history, login rows."""

import datetime
import unittest
import uuid

import harness
from harness import NodeTestCase

AUDIT = "/api/v1/auditlogs"
ROW_KEYS = {"id", "timestamp", "eventCategory", "eventType", "result", "entityType", "entityId",
            "tenantId", "username", "sourceIp", "traceId", "message", "details"}


class AuditTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node()
        cls.admin = cls.n.token("admin")

    def get(self, path, **kw):
        return self.n.get(path, token=self.admin, **kw)

    def create_user(self):
        name = harness.unique("audit.")
        body = {"username": name, "password": "Passw0rd-123", "email": f"{name}@example.com",
                "fullName": "Audit User", "roles": ["Viewer"]}
        self.assertStatus(self.n.post("/api/v1/users", body, token=self.admin), 201)
        return name, body["password"]

    def assertRow(self, row):
        self.assertEqual(set(row), ROW_KEYS, row)
        harness.parse_time(row["timestamp"])

    def assertNewestFirst(self, rows):
        stamps = [harness.parse_time(r["timestamp"]) for r in rows]
        self.assertEqual(stamps, sorted(stamps, reverse=True), "rows must be newest first")

    # -- paging -------------------------------------------------------------------------------

    def test_page_size_and_number_bounds(self):
        base = f"{AUDIT}/category/Authentication"
        for query in ("pageSize=0", "pageSize=101", "pageSize=-1", "pageSize=abc", "pageNumber=0",
                      "pageNumber=-1", "pageNumber=x", "pageNumber=1&pageSize=1000"):
            with self.subTest(query=query):
                self.assertProblem(self.get(f"{base}?{query}"), 400)
        for size in (1, 100):
            with self.subTest(pageSize=size):
                resp = self.get(f"{base}?pageNumber=1&pageSize={size}")
                self.assertStatus(resp, 200)
                self.assertIsInstance(resp.body, list)
                self.assertLessEqual(len(resp.body), size)
                self.assertGreaterEqual(len(resp.body), 1, "the admin's login is there")
        self.assertStatus(self.get(base), 200)  # defaults

    def test_pages_are_disjoint_consecutive_and_newest_first(self):
        # at least 6 authentication rows, and nothing else writes while we page
        for i in range(6):
            self.assertStatus(self.n.login_response(f"ghost-{uuid.uuid4().hex[:8]}", "nope-nope"), 401)
        base = f"{AUDIT}/category/Authentication"
        whole = self.get(f"{base}?pageNumber=1&pageSize=6")
        self.assertStatus(whole, 200)
        self.assertEqual(len(whole.body), 6)
        pages = []
        for number in (1, 2, 3):
            resp = self.get(f"{base}?pageNumber={number}&pageSize=2")
            self.assertStatus(resp, 200)
            self.assertEqual(len(resp.body), 2)
            pages.extend(resp.body)
        self.assertEqual([r["id"] for r in pages], [r["id"] for r in whole.body])
        self.assertEqual(len({r["id"] for r in pages}), 6)
        self.assertNewestFirst(whole.body)
        for row in whole.body:
            self.assertRow(row)
            self.assertEqual(row["eventCategory"], "Authentication")
        beyond = self.get(f"{base}?pageNumber=100000&pageSize=100")
        self.assertStatus(beyond, 200)
        self.assertEqual(beyond.body, [])

    # -- login rows ---------------------------------------------------------------------------

    def test_login_success_and_failure_are_recorded(self):
        name, password = self.create_user()
        ok = self.n.login_response(name, password)
        self.assertStatus(ok, 200)
        self.assertProblem(self.n.login_response(name, "wrong-password"), 401)
        ghost = harness.unique("ghost-")
        self.assertProblem(self.n.login_response(ghost, "wrong-password"), 401)

        resp = self.get(f"{AUDIT}/category/Authentication?pageNumber=1&pageSize=20")
        self.assertStatus(resp, 200)
        mine = [r for r in resp.body if r["username"] == name]
        self.assertEqual([r["eventType"] for r in mine], ["LoginFailed", "LoginSucceeded"])
        failed, succeeded = mine
        for row in mine:
            self.assertRow(row)
            self.assertEqual(row["eventCategory"], "Authentication")
            self.assertTrue(row["sourceIp"].endswith("127.0.0.1"), row)
            self.assertTrue(row["traceId"])
            self.assertTrue(row["result"])
            self.assertTimeClose(row["timestamp"], harness.utcnow(), 60)
            harness.assert_no_secret(self, [row["message"], row["details"]], password, "wrong-password")
        self.assertNotEqual(failed["result"], succeeded["result"])
        ghost_rows = [r for r in resp.body if r["username"] == ghost]
        self.assertEqual([r["eventType"] for r in ghost_rows], ["LoginFailed"])

    # -- trace --------------------------------------------------------------------------------

    def test_rows_by_trace_id_from_traceparent(self):
        tp, trace_id = harness.traceparent()
        resp = self.n.login_response("admin", "Admin123!", headers={"traceparent": tp})
        self.assertStatus(resp, 200)
        rows = self.get(f"{AUDIT}/trace/{trace_id}")
        self.assertStatus(rows, 200)
        self.assertEqual(len(rows.body), 1, rows.body)
        row = rows.body[0]
        self.assertRow(row)
        self.assertEqual(row["traceId"], trace_id)
        self.assertEqual(row["eventType"], "LoginSucceeded")
        self.assertEqual(row["username"], "admin")

    def test_trace_id_of_a_problem_finds_its_audit_row(self):
        ghost = harness.unique("ghost-")
        failed = self.assertProblem(self.n.login_response(ghost, "nope-nope"), 401)
        rows = self.get(f"{AUDIT}/trace/{failed['traceId']}")
        self.assertStatus(rows, 200)
        self.assertEqual([(r["eventType"], r["username"]) for r in rows.body], [("LoginFailed", ghost)])
        self.assertEqual(rows.body[0]["traceId"], failed["traceId"])

    def test_one_trace_spans_several_changes(self):
        tp, trace_id = harness.traceparent()
        body = {"name": "Trace Tenant", "subdomain": harness.unique("trace-"), "tier": "Free",
                "contactEmail": "t@example.com"}
        created = self.n.post("/api/v1/tenants", body, token=self.admin, headers={"traceparent": tp})
        self.assertStatus(created, 201)
        tid = created.body["tenantId"]
        tp2 = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
        self.assertStatus(self.n.post(f"/api/v1/tenants/{tid}/suspend", token=self.admin,
                                      headers={"traceparent": tp2}), 200)
        rows = self.get(f"{AUDIT}/trace/{trace_id}")
        self.assertStatus(rows, 200)
        self.assertEqual(len(rows.body), 2, rows.body)
        self.assertTrue(all(r["entityId"] == tid and r["eventCategory"] == "Tenant" for r in rows.body))

    def test_unknown_trace_deployment_and_approval_are_empty(self):
        for path in (f"{AUDIT}/trace/{uuid.uuid4().hex}", f"{AUDIT}/deployments/{uuid.uuid4()}",
                     f"{AUDIT}/approvals/{uuid.uuid4()}"):
            with self.subTest(path=path):
                resp = self.get(path)
                self.assertStatus(resp, 200)
                self.assertEqual(resp.body, [])

    # -- authentication history ---------------------------------------------------------------

    def test_authentication_history_of_a_user_in_a_date_range(self):
        name, password = self.create_user()
        start = harness.utcnow() - datetime.timedelta(seconds=5)
        self.assertStatus(self.n.login_response(name, password), 200)
        self.assertProblem(self.n.login_response(name, "wrong-password"), 401)
        self.assertStatus(self.n.login_response("viewer", "Viewer123!"), 200)
        end = harness.utcnow() + datetime.timedelta(seconds=60)

        def history(query=""):
            resp = self.get(f"{AUDIT}/authentication/{name}{query}")
            self.assertStatus(resp, 200)
            return resp.body

        q = f"?startDate={harness.rfc3339(start)}&endDate={harness.rfc3339(end)}"
        rows = history(q)
        self.assertEqual([r["eventType"] for r in rows], ["LoginFailed", "LoginSucceeded"])
        for row in rows:
            self.assertRow(row)
            self.assertEqual(row["username"], name)
            self.assertEqual(row["eventCategory"], "Authentication")
        self.assertNewestFirst(rows)
        self.assertEqual([r["id"] for r in history()], [r["id"] for r in rows])
        past = harness.utcnow() - datetime.timedelta(days=2)
        self.assertEqual(history(f"?startDate={harness.rfc3339(past - datetime.timedelta(days=1))}"
                                 f"&endDate={harness.rfc3339(past)}"), [])
        future = harness.utcnow() + datetime.timedelta(days=1)
        self.assertEqual(history(f"?startDate={harness.rfc3339(future)}"), [])
        self.assertEqual(len(history(f"?startDate={harness.rfc3339(start)}")), 2)
        self.assertEqual(len(history(f"?endDate={harness.rfc3339(end)}")), 2)
        unknown = self.get(f"{AUDIT}/authentication/{harness.unique('nobody-')}")
        self.assertStatus(unknown, 200)
        self.assertEqual(unknown.body, [])

    def test_bad_dates_are_400(self):
        for query in ("?startDate=yesterday", "?endDate=2024-13-45T00:00:00Z"):
            with self.subTest(query=query):
                self.assertProblem(self.get(f"{AUDIT}/authentication/admin{query}"), 400)

    # -- user changes -------------------------------------------------------------------------

    def test_user_category_records_user_creation(self):
        name, _ = self.create_user()
        resp = self.get(f"{AUDIT}/category/User?pageNumber=1&pageSize=10")
        self.assertStatus(resp, 200)
        users = self.n.get("/api/v1/users", token=self.admin).body
        uid = next(u["id"] for u in users if u["username"] == name)
        rows = [r for r in resp.body if r["entityId"] == uid]
        self.assertEqual(len(rows), 1, resp.body)
        self.assertRow(rows[0])
        self.assertEqual(rows[0]["eventCategory"], "User")
        self.assertEqual(rows[0]["username"], "admin")


if __name__ == "__main__":
    unittest.main()
