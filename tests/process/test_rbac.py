"""Role matrix: admin / deployer / viewer / no token against tenants, users, audit and /me."""

import unittest
import uuid

import harness
from harness import NodeTestCase

ROLES = ("admin", "deployer", "viewer", None)


def tenant_body():
    return {"name": "RBAC Tenant", "subdomain": harness.unique("rbac-"), "tier": "Free",
            "contactEmail": "rbac@example.com"}


def user_body():
    name = harness.unique("rbac.")
    return {"username": name, "password": "Passw0rd-123", "email": f"{name}@example.com",
            "fullName": "RBAC User", "roles": ["Viewer"]}


# (description, method, path or callable(test) -> path, body factory or None, expected per role)
MATRIX = [
    ("list tenants v1", "GET", "/api/v1/tenants", None, (200, 403, 403, 401)),
    ("list tenants legacy", "GET", "/api/tenants", None, (200, 403, 403, 401)),
    ("create tenant v1", "POST", "/api/v1/tenants", tenant_body, (201, 403, 403, 401)),
    ("create tenant legacy", "POST", "/api/tenants", tenant_body, (201, 403, 403, 401)),
    ("get tenant", "GET", lambda t: f"/api/v1/tenants/{t.tenant_id}", None, (200, 403, 403, 401)),
    ("suspend tenant", "POST", lambda t: f"/api/v1/tenants/{t.spare_tenant_id}/suspend", None,
     (200, 403, 403, 401)),
    ("list users", "GET", "/api/v1/users", None, (200, 403, 403, 401)),
    ("create user", "POST", "/api/v1/users", user_body, (201, 403, 403, 401)),
    ("get user", "GET", lambda t: f"/api/v1/users/{t.user_id}", None, (200, 403, 403, 401)),
    ("audit by category", "GET", "/api/v1/auditlogs/category/Authentication?pageNumber=1&pageSize=10",
     None, (200, 403, 403, 401)),
    ("audit by trace", "GET", f"/api/v1/auditlogs/trace/{uuid.uuid4().hex}", None, (200, 403, 403, 401)),
    ("audit by user", "GET", "/api/v1/auditlogs/authentication/admin", None, (200, 403, 403, 401)),
    ("audit by deployment", "GET", f"/api/v1/auditlogs/deployments/{uuid.uuid4()}", None,
     (200, 403, 403, 401)),
    ("me", "GET", "/api/v1/authentication/me", None, (200, 200, 200, 401)),
]


class RbacTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node()
        cls.tokens = {name: cls.n.token(name) for name in ROLES if name}
        admin = cls.tokens["admin"]
        t = cls.n.post("/api/v1/tenants", tenant_body(), token=admin)
        assert t.status == 201, t
        cls.tenant_id = t.body["tenantId"]
        t = cls.n.post("/api/v1/tenants", tenant_body(), token=admin)
        assert t.status == 201, t
        cls.spare_tenant_id = t.body["tenantId"]
        u = cls.n.post("/api/v1/users", user_body(), token=admin)
        assert u.status == 201, u
        cls.user_id = u.body["id"]

    def request_as(self, role, method, path, body=None):
        token = self.tokens[role] if role else None
        return self.n.request(method, path, body=body, token=token)

    def test_matrix(self):
        # the admin goes last so that the forbidden calls run first on the same entities
        order = (3, 1, 2, 0)
        for desc, method, path, body_factory, expected in MATRIX:
            for i in order:
                role = ROLES[i]
                p = path(self) if callable(path) else path
                body = body_factory() if body_factory else None
                with self.subTest(call=desc, role=role or "no token"):
                    resp = self.request_as(role, method, p, body)
                    if expected[i] >= 400:
                        self.assertProblem(resp, expected[i])
                    else:
                        self.assertStatus(resp, expected[i])
                        self.assertSecurityHeaders(resp)

    def test_me_reports_each_role(self):
        for role, name in (("admin", "Admin"), ("deployer", "Deployer"), ("viewer", "Viewer")):
            with self.subTest(role=role):
                resp = self.request_as(role, "GET", "/api/v1/authentication/me")
                self.assertStatus(resp, 200)
                self.assertEqual(resp.body["roles"], [name])

    def test_forbidden_writes_change_nothing(self):
        for role in ("deployer", "viewer", None):
            with self.subTest(role=role or "no token"):
                want = 401 if role is None else 403
                tb = tenant_body()
                ub = user_body()
                self.assertProblem(self.request_as(role, "POST", "/api/v1/tenants", tb), want)
                self.assertProblem(self.request_as(role, "POST", "/api/v1/users", ub), want)
                path = f"/api/v1/tenants/{self.tenant_id}"
                self.assertProblem(self.request_as(role, "DELETE", path), want)
                self.assertProblem(
                    self.request_as(role, "PUT", f"{path}/subscription", {"tier": "Enterprise"}), want)
                self.assertProblem(self.request_as(role, "PUT", path, {"name": "Hijacked"}), want)
                self.assertProblem(
                    self.request_as(role, "DELETE", f"/api/v1/users/{self.user_id}"), want)
                tenants = self.request_as("admin", "GET", "/api/v1/tenants").body
                self.assertNotIn(tb["subdomain"], {t["subdomain"].lower() for t in tenants})
                users = self.request_as("admin", "GET", "/api/v1/users").body
                self.assertNotIn(ub["username"], {u["username"] for u in users})
                self.assertProblem(self.n.login_response(ub["username"], ub["password"]), 401)
                tenant = self.request_as("admin", "GET", path).body
                self.assertEqual(tenant["status"], "Active")
                self.assertEqual(tenant["tier"], "Free")
                self.assertEqual(tenant["name"], "RBAC Tenant")
                self.assertStatus(self.request_as("admin", "GET", f"/api/v1/users/{self.user_id}"), 200)


if __name__ == "__main__":
    unittest.main()
