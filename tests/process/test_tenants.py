"""Tenants (Admin) on both /api/tenants and /api/v1/tenants: lifecycle, validation, guards, audit."""

import unittest
import urllib.parse
import uuid

import harness
from harness import NodeTestCase

PREFIXES = ("/api/v1/tenants", "/api/tenants")
# The contract's fields plus `usage` (the deployment quota in use: running deployments and
# today's count, docs/deployments.md).
TENANT_KEYS = {"tenantId", "name", "subdomain", "customDomain", "status", "tier", "resourceQuota",
               "createdAt", "suspendedAt", "deletedAt", "contactEmail", "metadata", "usage"}
QUOTA_KEYS = {"maxConcurrentDeployments", "maxDeploymentsPerDay", "maxModules", "maxStorageMB"}
CONCURRENT = {"Free": 1, "Starter": 3, "Professional": 10, "Enterprise": 50}


def tenant_body(**over):
    body = {"name": "Acme Corp", "subdomain": harness.unique("acme-"), "tier": "Professional",
            "contactEmail": "ops@acme.example"}
    body.update(over)
    return body


def location_path(value):
    return urllib.parse.urlsplit(value).path


class TenantsTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node()
        cls.admin = cls.n.token("admin")

    # helpers

    def call(self, method, path, body=None, **kw):
        return self.n.request(method, path, body=body, token=self.admin, **kw)

    def create(self, prefix=PREFIXES[0], **over):
        body = tenant_body(**over)
        resp = self.call("POST", prefix, body)
        self.assertStatus(resp, 201, f"create {body}")
        return resp.body

    def assertTenant(self, t):
        self.assertEqual(set(t), TENANT_KEYS, t)
        self.assertEqual(set(t["resourceQuota"]), QUOTA_KEYS, t)
        for k in QUOTA_KEYS:
            self.assertIsInstance(t["resourceQuota"][k], int, t)
        harness.parse_time(t["createdAt"])

    # -- create -------------------------------------------------------------------------------

    def test_create_on_both_prefixes(self):
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                body = tenant_body(metadata={"team": "payments", "region": "eu"},
                                   customDomain="acme.example.com")
                resp = self.call("POST", prefix, body)
                self.assertStatus(resp, 201)
                self.assertSecurityHeaders(resp)
                t = resp.body
                self.assertTenant(t)
                self.assertTrue(t["tenantId"])
                loc = location_path(resp.headers.get("location", ""))
                self.assertTrue(loc.endswith(f"/tenants/{t['tenantId']}") and loc.startswith("/api/"),
                                f"Location {resp.headers.get('location')!r}")
                self.assertEqual(t["name"], body["name"])
                self.assertEqual(t["subdomain"].lower(), body["subdomain"].lower())
                self.assertEqual(t["status"], "Active")
                self.assertEqual(t["tier"], "Professional")
                self.assertEqual(t["resourceQuota"]["maxConcurrentDeployments"], 10)
                self.assertEqual(t["contactEmail"], body["contactEmail"])
                self.assertEqual(t["customDomain"], "acme.example.com")
                self.assertEqual(t["metadata"], body["metadata"])
                self.assertIsNone(t["suspendedAt"])
                self.assertIsNone(t["deletedAt"])
                self.assertTimeClose(t["createdAt"], harness.utcnow(), 60)
                # readable on both prefixes
                for other in PREFIXES:
                    got = self.call("GET", f"{other}/{t['tenantId']}")
                    self.assertStatus(got, 200)
                    self.assertEqual(got.body, t)

    def test_tier_as_name_or_legacy_integer(self):
        cases = [("Free", "Free"), ("free", "Free"), ("STARTER", "Starter"), (0, "Free"),
                 (1, "Starter"), (2, "Professional"), (3, "Enterprise"), ("enterprise", "Enterprise")]
        for tier, name in cases:
            with self.subTest(tier=tier):
                t = self.create(tier=tier)
                self.assertEqual(t["tier"], name)
                self.assertEqual(t["resourceQuota"]["maxConcurrentDeployments"], CONCURRENT[name])

    def test_custom_tier_takes_the_quota_from_the_body(self):
        quota = {"maxConcurrentDeployments": 7, "maxDeploymentsPerDay": 70, "maxModules": 17,
                 "maxStorageMB": 1700}
        for tier in ("Custom", 4, "custom"):
            with self.subTest(tier=tier):
                t = self.create(tier=tier, resourceQuota=quota)
                self.assertEqual(t["tier"], "Custom")
                self.assertEqual(t["resourceQuota"], quota)
        self.assertValidation(self.call("POST", PREFIXES[0], tenant_body(tier="Custom")), "resourceQuota")

    def test_boundaries_that_are_valid(self):
        self.create(name="x" * 200)
        self.create(name="y")
        self.create(subdomain=harness.unique("a") + "b" * 50)  # 63 characters
        self.create(subdomain=uuid.uuid4().hex[0])  # the only one-character subdomain of this node
        t = self.create(subdomain=harness.unique("UPPER-Case-"))
        self.assertEqual(t["status"], "Active")
        self.create(metadata={f"k{i}": f"v{i}" for i in range(50)})

    def test_every_invalid_field_is_a_400_on_both_prefixes(self):
        cases = [
            ("name", {"name": ""}),
            ("name", {"name": "x" * 201}),
            ("subdomain", {"subdomain": ""}),
            ("subdomain", {"subdomain": "-abc"}),
            ("subdomain", {"subdomain": "abc-"}),
            ("subdomain", {"subdomain": "a_b"}),
            ("subdomain", {"subdomain": "a.b"}),
            ("subdomain", {"subdomain": "a b"}),
            ("subdomain", {"subdomain": "a" * 64}),
            ("tier", {"tier": "Gold"}),
            ("tier", {"tier": 5}),
            ("tier", {"tier": -1}),
            ("contactEmail", {"contactEmail": "not-an-email"}),
            ("contactEmail", {"contactEmail": ""}),
            ("metadata", {"metadata": {f"k{i}": "v" for i in range(51)}}),
            ("metadata", {"metadata": {"k": 1}}),
            ("resourceQuota", {"tier": "Custom"}),
        ]
        for prefix in PREFIXES:
            for field, over in cases:
                with self.subTest(prefix=prefix, field=field, value=str(over)[:60]):
                    body = tenant_body(**over)
                    self.assertValidation(self.call("POST", prefix, body), field)
            for field in ("name", "subdomain"):
                with self.subTest(prefix=prefix, missing=field):
                    body = tenant_body()
                    del body[field]
                    self.assertValidation(self.call("POST", prefix, body), field)
            with self.subTest(prefix=prefix, case="invalid json"):
                self.assertProblem(self.call("POST", prefix, raw="{\"name\":"), 400)

    def test_violations_are_reported_together(self):
        body = tenant_body(name="", subdomain="-bad-", contactEmail="nope")
        self.assertValidation(self.call("POST", PREFIXES[0], body), "name", "subdomain", "contactEmail")

    def test_invalid_tenant_is_not_created(self):
        body = tenant_body(contactEmail="nope")
        self.assertValidation(self.call("POST", PREFIXES[0], body), "contactEmail")
        listed = self.call("GET", PREFIXES[0]).body
        self.assertNotIn(body["subdomain"], {t["subdomain"].lower() for t in listed})

    # -- conflicts ----------------------------------------------------------------------------

    def test_subdomain_taken_is_409_case_insensitive_across_prefixes(self):
        sub = harness.unique("dup-")
        self.create(prefix=PREFIXES[1], subdomain=sub)
        for prefix in PREFIXES:
            for variant in (sub, sub.upper(), sub.capitalize()):
                with self.subTest(prefix=prefix, subdomain=variant):
                    self.assertProblem(self.call("POST", prefix, tenant_body(subdomain=variant)), 409)
        listed = [t for t in self.call("GET", PREFIXES[0]).body if t["subdomain"].lower() == sub]
        self.assertEqual(len(listed), 1)

    # -- read ---------------------------------------------------------------------------------

    def test_unknown_tenant_is_404_for_every_call(self):
        for prefix in PREFIXES:
            for tid in (str(uuid.uuid4()), "no-such-tenant"):
                path = f"{prefix}/{tid}"
                with self.subTest(path=path):
                    self.assertProblem(self.call("GET", path), 404)
                    self.assertProblem(self.call("PUT", path, {"name": "X"}), 404)
                    self.assertProblem(self.call("POST", f"{path}/suspend"), 404)
                    self.assertProblem(self.call("POST", f"{path}/activate"), 404)
                    self.assertProblem(self.call("PUT", f"{path}/subscription", {"tier": "Free"}), 404)
                    self.assertProblem(self.call("DELETE", path), 404)

    def test_list_and_status_filter(self):
        active = self.create()
        suspended = self.create()
        deleted = self.create()
        self.assertStatus(self.call("POST", f"{PREFIXES[0]}/{suspended['tenantId']}/suspend"), 200)
        self.assertStatus(self.call("DELETE", f"{PREFIXES[0]}/{deleted['tenantId']}"), 204)
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                everything = self.call("GET", prefix)
                self.assertStatus(everything, 200)
                self.assertIsInstance(everything.body, list)
                ids = {t["tenantId"] for t in everything.body}
                self.assertTrue({active["tenantId"], suspended["tenantId"]} <= ids)
                for status, member, others in (("Active", active, (suspended, deleted)),
                                               ("Suspended", suspended, (active, deleted)),
                                               ("Deleted", deleted, (active, suspended))):
                    resp = self.call("GET", f"{prefix}?status={status}")
                    self.assertStatus(resp, 200)
                    self.assertTrue(all(t["status"] == status for t in resp.body), resp.body)
                    got = {t["tenantId"] for t in resp.body}
                    self.assertIn(member["tenantId"], got)
                    for o in others:
                        self.assertNotIn(o["tenantId"], got)
                lower = self.call("GET", f"{prefix}?status=active")
                self.assertStatus(lower, 200)
                self.assertIn(active["tenantId"], {t["tenantId"] for t in lower.body})

    # -- update -------------------------------------------------------------------------------

    def test_update_on_both_prefixes(self):
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                t = self.create()
                path = f"{prefix}/{t['tenantId']}"
                upd = {"name": "Renamed", "contactEmail": "new@acme.example",
                       "customDomain": "new.acme.example", "metadata": {"a": "b"}}
                resp = self.call("PUT", path, upd)
                self.assertStatus(resp, 200)
                u = resp.body
                self.assertTenant(u)
                for k, v in upd.items():
                    self.assertEqual(u[k], v)
                for k in ("tenantId", "subdomain", "tier", "status", "createdAt", "resourceQuota"):
                    self.assertEqual(u[k], t[k], k)
                self.assertEqual(self.call("GET", path).body, u)
                # a partial update leaves the rest alone
                resp = self.call("PUT", path, {"name": "Only Name"})
                self.assertStatus(resp, 200)
                self.assertEqual(resp.body["name"], "Only Name")
                self.assertEqual(resp.body["contactEmail"], "new@acme.example")
                self.assertEqual(resp.body["metadata"], {"a": "b"})

    def test_update_validates(self):
        t = self.create()
        path = f"{PREFIXES[0]}/{t['tenantId']}"
        self.assertValidation(self.call("PUT", path, {"contactEmail": "nope"}), "contactEmail")
        self.assertValidation(self.call("PUT", path, {"name": ""}), "name")
        self.assertValidation(self.call("PUT", path, {"name": "z" * 201}), "name")
        self.assertValidation(self.call("PUT", path, {"metadata": {f"k{i}": "v" for i in range(51)}}),
                              "metadata")
        self.assertProblem(self.call("PUT", path, raw="{"), 400)
        self.assertEqual(self.call("GET", path).body, t)

    # -- lifecycle ----------------------------------------------------------------------------

    def test_suspend_and_activate_on_both_prefixes(self):
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                t = self.create()
                path = f"{prefix}/{t['tenantId']}"
                s = self.call("POST", f"{path}/suspend")
                self.assertStatus(s, 200)
                self.assertEqual(s.body["status"], "Suspended")
                self.assertTimeClose(s.body["suspendedAt"], harness.utcnow(), 60)
                self.assertEqual(self.call("GET", path).body["status"], "Suspended")
                a = self.call("POST", f"{path}/activate")
                self.assertStatus(a, 200)
                self.assertEqual(a.body["status"], "Active")
                self.assertIsNone(a.body["deletedAt"])
                self.assertEqual(self.call("GET", path).body["status"], "Active")

    def test_subscription_change_sets_the_tier_quota(self):
        for prefix in PREFIXES:
            t = self.create(prefix=prefix, tier="Free")
            path = f"{prefix}/{t['tenantId']}/subscription"
            for tier, name in (("Enterprise", "Enterprise"), ("Starter", "Starter"),
                               ("professional", "Professional"), (0, "Free"), (3, "Enterprise")):
                with self.subTest(prefix=prefix, tier=tier):
                    resp = self.call("PUT", path, {"tier": tier})
                    self.assertStatus(resp, 200)
                    self.assertEqual(resp.body["tier"], name)
                    self.assertEqual(resp.body["resourceQuota"]["maxConcurrentDeployments"],
                                     CONCURRENT[name])
                    self.assertEqual(self.call("GET", f"{prefix}/{t['tenantId']}").body, resp.body)
            with self.subTest(prefix=prefix, tier="invalid"):
                self.assertValidation(self.call("PUT", path, {"tier": "Gold"}), "tier")
                self.assertValidation(self.call("PUT", path, {"tier": 9}), "tier")
                self.assertValidation(self.call("PUT", path, {}), "tier")

    def test_delete_is_soft_idempotent_and_final(self):
        for prefix in PREFIXES:
            with self.subTest(prefix=prefix):
                t = self.create()
                path = f"{prefix}/{t['tenantId']}"
                resp = self.call("DELETE", path)
                self.assertStatus(resp, 204)
                self.assertEqual(resp.raw, b"")
                got = self.call("GET", path)
                self.assertStatus(got, 200)
                self.assertEqual(got.body["status"], "Deleted")
                self.assertTimeClose(got.body["deletedAt"], harness.utcnow(), 60)
                self.assertEqual(got.body["subdomain"], t["subdomain"])
                self.assertProblem(self.call("POST", f"{path}/activate"), 409)
                self.assertProblem(self.call("POST", f"{path}/suspend"), 409)
                self.assertProblem(self.call("PUT", f"{path}/subscription", {"tier": "Enterprise"}), 409)
                self.assertProblem(self.call("PUT", path, {"name": "Zombie"}), 409)
                self.assertStatus(self.call("DELETE", path), 204)
                after = self.call("GET", path)
                self.assertEqual(after.body["status"], "Deleted")
                self.assertEqual(after.body["name"], t["name"])
                self.assertEqual(after.body["tier"], t["tier"])
                self.assertEqual(after.body["deletedAt"], got.body["deletedAt"],
                                 "a second DELETE must not move deletedAt")

    def test_suspended_tenant_can_be_deleted_and_then_not_activated(self):
        t = self.create()
        path = f"{PREFIXES[0]}/{t['tenantId']}"
        self.assertStatus(self.call("POST", f"{path}/suspend"), 200)
        self.assertStatus(self.call("DELETE", path), 204)
        self.assertProblem(self.call("POST", f"{path}/activate"), 409)
        self.assertEqual(self.call("GET", path).body["status"], "Deleted")

    # -- audit --------------------------------------------------------------------------------

    def test_tenant_changes_are_audited_with_the_request_trace(self):
        tp, trace_id = harness.traceparent()
        created = self.n.request("POST", PREFIXES[0], body=tenant_body(), token=self.admin,
                                 headers={"traceparent": tp})
        self.assertStatus(created, 201)
        tid = created.body["tenantId"]
        path = f"{PREFIXES[1]}/{tid}"
        steps = [("PUT", path, {"name": "Audited"}), ("POST", f"{path}/suspend", None),
                 ("POST", f"{path}/activate", None), ("PUT", f"{path}/subscription", {"tier": "Free"}),
                 ("DELETE", path, None)]
        for method, p, body in steps:
            self.assertLess(self.call(method, p, body).status, 300, (method, p))
        resp = self.call("GET", "/api/v1/auditlogs/category/Tenant?pageNumber=1&pageSize=100")
        self.assertStatus(resp, 200)
        rows = [r for r in resp.body if r.get("entityId") == tid]
        self.assertEqual(len(rows), 6, f"one audit row per change: {rows}")
        stamps = [harness.parse_time(r["timestamp"]) for r in rows]
        self.assertEqual(stamps, sorted(stamps, reverse=True), "newest first")
        for row in rows:
            self.assertEqual(row["eventCategory"], "Tenant")
            self.assertEqual(row["username"], "admin")
            self.assertTrue(row["eventType"])
            self.assertTrue(row["result"])
            self.assertTrue(row["sourceIp"].endswith("127.0.0.1"), row)
        self.assertEqual(len({r["eventType"] for r in rows}), 6, "each change has its own event type")
        traced = [r for r in rows if r["traceId"] == trace_id]
        self.assertEqual(len(traced), 1, f"the create row carries the request's trace id: {rows}")
        create_row = traced[0]
        self.assertIs(create_row, rows[-1], "the create row is the oldest")
        by_trace = self.call("GET", f"/api/v1/auditlogs/trace/{trace_id}")
        self.assertStatus(by_trace, 200)
        self.assertIn(create_row["id"], {r["id"] for r in by_trace.body})

    def test_failed_changes_do_not_change_state(self):
        t = self.create()
        path = f"{PREFIXES[0]}/{t['tenantId']}"
        self.assertStatus(self.call("DELETE", path), 204)
        before = self.call("GET", path).body
        self.assertProblem(self.call("POST", f"{path}/activate"), 409)
        self.assertEqual(self.call("GET", path).body, before)


if __name__ == "__main__":
    unittest.main()
