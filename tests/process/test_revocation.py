"""Tokens follow the user's current state: deleting, deactivating or demoting a user takes
effect on requests carrying an already issued token within the bridge's re-check interval
(5 s), not when the token expires."""

import unittest

import harness
from harness import NodeTestCase

USERS = "/api/v1/users"
DEADLINE = 15  # seconds: the 5 s re-check interval plus generous slack


class RevocationTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node()
        cls.admin = cls.n.token("admin")

    def make_user(self, roles):
        name = harness.unique("rev.")
        body = {"username": name, "password": "Passw0rd-123", "email": f"{name}@example.com",
                "fullName": "Revocation Test", "roles": roles}
        resp = self.n.post(USERS, body, token=self.admin)
        self.assertStatus(resp, 201)
        token = self.n.login(name, "Passw0rd-123")
        return body, resp.body["id"], token

    def eventually_status(self, path, token, status, message):
        """Polls until several requests in a row answer `status`: each bridge actor (one per
        io thread) re-checks the user on its own schedule, so all of them must have."""
        def settled():
            return all(self.n.get(path, token=token).status == status for _ in range(4))
        return harness.wait_until(settled, DEADLINE, message)

    def test_a_deleted_users_token_stops_working(self):
        # An admin route (no user lookup of its own): only the bridge's check can refuse it.
        _, uid, token = self.make_user(["Admin"])
        self.assertStatus(self.n.get("/api/v1/tenants", token=token), 200)
        self.assertStatus(self.n.delete(f"{USERS}/{uid}", token=self.admin), 204)
        self.eventually_status("/api/v1/tenants", token, 401,
                               "the deleted user's token to be refused")
        resp = self.n.get("/api/v1/tenants", token=token)
        self.assertProblem(resp, 401)

    def test_a_deactivated_users_token_stops_working_and_reactivation_restores_it(self):
        body, uid, token = self.make_user(["Viewer"])
        self.assertStatus(self.n.get("/api/v1/authentication/me", token=token), 200)
        upd = {k: v for k, v in body.items() if k != "password"}
        upd["active"] = False
        self.assertStatus(self.n.put(f"{USERS}/{uid}", upd, token=self.admin), 200)
        self.eventually_status("/api/v1/authentication/me", token, 401,
                               "the deactivated user's token to be refused")
        upd["active"] = True
        self.assertStatus(self.n.put(f"{USERS}/{uid}", upd, token=self.admin), 200)
        self.eventually_status("/api/v1/authentication/me", token, 200,
                               "the reactivated user's token to work again")

    def test_a_demoted_admin_loses_admin_access_with_the_same_token(self):
        body, uid, token = self.make_user(["Admin"])
        self.assertStatus(self.n.get("/api/v1/tenants", token=token), 200)
        upd = {k: v for k, v in body.items() if k != "password"}
        upd["roles"] = ["Viewer"]
        self.assertStatus(self.n.put(f"{USERS}/{uid}", upd, token=self.admin), 200)
        self.eventually_status("/api/v1/tenants", token, 403,
                               "the demoted admin to be refused admin routes")
        self.assertStatus(self.n.get("/api/v1/authentication/me", token=token), 200)


if __name__ == "__main__":
    unittest.main()
