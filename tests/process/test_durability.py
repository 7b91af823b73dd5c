"""Durability: everything acknowledged before a SIGKILL is there after a restart, on SQLite and
on PostgreSQL; the JWT signing key survives restarts."""

import unittest

import harness
from harness import NodeTestCase

TIME_FIELDS = {"createdAt", "updatedAt", "suspendedAt", "deletedAt", "lastLoginAt"}


def tenant_body(**over):
    body = {"name": "Durable Tenant", "subdomain": harness.unique("dur-"), "tier": "Starter",
            "contactEmail": "dur@example.com"}
    body.update(over)
    return body


def user_body(**over):
    name = harness.unique("dur.")
    body = {"username": name, "password": "Passw0rd-123", "email": f"{name}@example.com",
            "fullName": "Durable User", "roles": ["Deployer"]}
    body.update(over)
    return body


class DurabilityScenario:
    """Mixin: the scenario, run by subclasses on one store or another."""

    def make_node(self):
        raise NotImplementedError

    def assertSameEntity(self, before, after):
        """Equal field by field; timestamps equal as instants (to the microsecond)."""
        self.assertEqual(set(before), set(after), f"{before} vs {after}")
        for key, value in before.items():
            if key in TIME_FIELDS and value is not None:
                self.assertIsNotNone(after[key], key)
                self.assertEqual(harness.parse_time(after[key]), harness.parse_time(value),
                                 f"{key}: {value} vs {after[key]}")
            else:
                self.assertEqual(after[key], value, f"{key} changed across the restart")

    def test_acknowledged_writes_survive_sigkill(self):
        n = self.make_node()
        admin = n.token("admin")
        tenants, users = [], []

        def create_tenant(**over):
            resp = n.post("/api/v1/tenants", tenant_body(**over), token=admin)
            self.assertStatus(resp, 201)
            tenants.append(resp.body["tenantId"])
            return resp.body["tenantId"]

        create_tenant(metadata={"owner": "team-a", "cost-center": "42"}, customDomain="a.example.com")
        create_tenant(tier="Enterprise")
        custom = {"maxConcurrentDeployments": 4, "maxDeploymentsPerDay": 40, "maxModules": 14,
                  "maxStorageMB": 1400}
        create_tenant(tier="Custom", resourceQuota=custom)
        suspended = create_tenant()
        self.assertStatus(n.post(f"/api/v1/tenants/{suspended}/suspend", token=admin), 200)
        deleted = create_tenant()
        self.assertStatus(n.delete(f"/api/v1/tenants/{deleted}", token=admin), 204)
        renamed = create_tenant()
        self.assertStatus(n.put(f"/api/v1/tenants/{renamed}", {"name": "Renamed"}, token=admin), 200)
        upgraded = create_tenant(tier="Free")
        self.assertStatus(n.put(f"/api/v1/tenants/{upgraded}/subscription", {"tier": "Professional"},
                                token=admin), 200)

        passwords = {}
        for over in ({}, {"tenantId": tenants[0], "roles": ["Viewer"]}, {"active": False},
                     {"roles": ["Admin", "Deployer"]}):
            body = user_body(**over)
            resp = n.post("/api/v1/users", body, token=admin)
            self.assertStatus(resp, 201)
            users.append(resp.body["id"])
            passwords[resp.body["id"]] = (body["username"], body["password"])
        changed = users[-1]
        new_password = "Changed-Passw0rd-9"
        upd = {k: v for k, v in user_body(roles=["Viewer"]).items() if k != "password"}
        upd["username"] = passwords[changed][0]
        upd["password"] = new_password
        self.assertStatus(n.put(f"/api/v1/users/{changed}", upd, token=admin), 200)
        passwords[changed] = (passwords[changed][0], new_password)

        before_t = {tid: n.get(f"/api/v1/tenants/{tid}", token=admin).body for tid in tenants}
        before_u = {uid: n.get(f"/api/v1/users/{uid}", token=admin).body for uid in users}
        # the very last write is acknowledged right before the kill
        last = n.post("/api/v1/tenants", tenant_body(name="Last Write"), token=admin)
        self.assertStatus(last, 201)
        before_t[last.body["tenantId"]] = last.body
        n.kill()

        n.start()
        for tid, before in before_t.items():
            with self.subTest(tenant=tid):
                resp = n.get(f"/api/v1/tenants/{tid}", token=admin)
                self.assertStatus(resp, 200)
                self.assertSameEntity(before, resp.body)
        for uid, before in before_u.items():
            with self.subTest(user=uid):
                resp = n.get(f"/api/v1/users/{uid}", token=admin)
                self.assertStatus(resp, 200)
                self.assertSameEntity(before, resp.body)
        listed = {t["tenantId"] for t in n.get("/api/v1/tenants", token=admin).body}
        self.assertTrue(set(before_t) <= listed)
        # state-dependent rules hold after the restart too
        self.assertProblem(n.post(f"/api/v1/tenants/{deleted}/activate", token=admin), 409)
        self.assertProblem(n.post("/api/v1/tenants", tenant_body(subdomain=before_t[renamed]["subdomain"]),
                                  token=admin), 409)
        # passwords (hashes) survived too
        for uid in (users[0], users[1], changed):
            name, password = passwords[uid]
            with self.subTest(login=name):
                self.assertStatus(n.login_response(name, password), 200)
        inactive_name, inactive_pw = passwords[users[2]]
        self.assertProblem(n.login_response(inactive_name, inactive_pw), 401)
        # audit rows of the writes survived
        audit = n.get("/api/v1/auditlogs/category/Tenant?pageNumber=1&pageSize=100", token=admin)
        self.assertStatus(audit, 200)
        audited = {r["entityId"] for r in audit.body}
        self.assertTrue(set(before_t) <= audited, "audit rows written with the state change")
        n.stop()

    def test_tokens_survive_restarts(self):
        n = self.make_node()
        token = n.token("viewer")
        kid = harness.jwt_parts(token)[0]["kid"]
        n.restart()  # graceful
        me = n.get("/api/v1/authentication/me", token=token)
        self.assertStatus(me, 200)
        self.assertEqual(me.body["username"], "viewer")
        n.restart(kill=True)  # crash
        self.assertStatus(n.get("/api/v1/authentication/me", token=token), 200)
        fresh = n.login_response("viewer", "Viewer123!")
        self.assertStatus(fresh, 200)
        self.assertEqual(harness.jwt_parts(fresh.body["token"])[0]["kid"], kid,
                         "a restart must not rotate the signing key")
        n.stop()

    def test_a_restarted_dev_node_does_not_duplicate_demo_users(self):
        n = self.make_node()
        admin = n.token("admin")
        first = sorted(u["username"] for u in n.get("/api/v1/users", token=admin).body)
        n.restart()
        second = sorted(u["username"] for u in n.get("/api/v1/users", token=admin).body)
        self.assertEqual(first, second)
        self.assertEqual(second.count("admin"), 1)
        n.stop()


class SqliteDurabilityTest(DurabilityScenario, NodeTestCase):
    def make_node(self):
        return self.node()


class PostgresDurabilityTest(DurabilityScenario, NodeTestCase):
    def make_node(self):
        return self.node(pg=True)


if __name__ == "__main__":
    unittest.main()
