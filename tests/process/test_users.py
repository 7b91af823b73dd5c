"""User management (Admin): CRUD, validation, conflicts, self-delete, login effects, audit."""

import unittest
import uuid

import harness
from harness import NodeTestCase

USERS = "/api/v1/users"
USER_KEYS = {"id", "username", "email", "fullName", "roles", "tenantId", "active", "createdAt",
             "updatedAt"}


def update_body(body, **over):
    """A full PUT body for the user created from `body` (no password unless given)."""
    upd = {k: v for k, v in body.items() if k != "password"}
    upd.update(over)
    return upd


def user_body(**over):
    name = over.pop("username", None) or harness.unique("user.")
    body = {"username": name, "password": "Passw0rd-123", "email": f"{name}@example.com",
            "fullName": "Test User", "roles": ["Deployer"]}
    body.update(over)
    return body


class UsersTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node()
        cls.admin = cls.n.token("admin")

    def create(self, **over):
        body = user_body(**over)
        resp = self.n.post(USERS, body, token=self.admin)
        self.assertStatus(resp, 201)
        return body, resp.body

    def assertUser(self, user, body):
        self.assertEqual(set(user) - {"lastLoginAt"}, USER_KEYS, user)
        self.assertEqual(user["username"], body["username"])
        self.assertEqual(user["email"], body["email"])
        self.assertEqual(user["fullName"], body["fullName"])
        self.assertEqual(sorted(user["roles"]), sorted(body["roles"]))
        self.assertEqual(user["tenantId"], body.get("tenantId"))
        self.assertEqual(user["active"], body.get("active", True))
        harness.parse_time(user["createdAt"])
        harness.parse_time(user["updatedAt"])
        harness.assert_no_secret(self, user, body["password"])

    # -- create / read ------------------------------------------------------------------------

    def test_create_returns_201_location_and_the_user_without_secrets(self):
        body = user_body(roles=["Viewer", "Deployer"])
        resp = self.n.post(USERS, body, token=self.admin)
        self.assertStatus(resp, 201)
        self.assertSecurityHeaders(resp)
        user = resp.body
        self.assertUser(user, body)
        self.assertEqual(resp.headers.get("location"), f"{USERS}/{user['id']}")
        self.assertTimeClose(user["createdAt"], harness.utcnow(), 60)

        got = self.n.get(f"{USERS}/{user['id']}", token=self.admin)
        self.assertStatus(got, 200)
        self.assertEqual(got.body, user)

        listed = self.n.get(USERS, token=self.admin)
        self.assertStatus(listed, 200)
        self.assertIsInstance(listed.body, list)
        mine = [u for u in listed.body if u["id"] == user["id"]]
        self.assertEqual(mine, [user])
        for u in listed.body:
            harness.assert_no_secret(self, u)
        self.assertIn("admin", {u["username"] for u in listed.body})

    def test_new_user_can_log_in_with_its_roles(self):
        body, user = self.create(roles=["Deployer"])
        resp = self.n.login_response(body["username"], body["password"])
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["user"]["id"], user["id"])
        self.assertEqual(resp.body["user"]["roles"], ["Deployer"])
        me = self.n.get("/api/v1/authentication/me", token=resp.body["token"])
        self.assertStatus(me, 200)
        self.assertEqual(me.body["username"], body["username"])

    def test_password_of_eight_characters_is_enough_in_dev_mode(self):
        body, _ = self.create(password="Abcdef1!")
        self.assertStatus(self.n.login_response(body["username"], "Abcdef1!"), 200)

    def test_user_of_an_existing_tenant(self):
        tenant = self.n.post("/api/v1/tenants", {
            "name": "Users Tenant", "subdomain": harness.unique("ut-"), "tier": "Free",
            "contactEmail": "ops@example.com"}, token=self.admin)
        self.assertStatus(tenant, 201)
        tid = tenant.body["tenantId"]
        body, user = self.create(tenantId=tid, roles=["Viewer"])
        self.assertEqual(user["tenantId"], tid)
        login = self.n.login_response(body["username"], body["password"])
        self.assertStatus(login, 200)
        _, claims, _ = harness.jwt_parts(login.body["token"])
        self.assertEqual(claims.get("tenant_id"), tid)

    def test_tenant_id_must_name_an_existing_tenant(self):
        resp = self.n.post(USERS, user_body(tenantId=str(uuid.uuid4())), token=self.admin)
        self.assertValidation(resp, "tenantId")

    # -- validation ---------------------------------------------------------------------------

    def test_every_invalid_field_is_a_400(self):
        cases = [
            ("username", {"username": "ab"}),
            ("username", {"username": "a" * 65}),
            ("username", {"username": "bad name"}),
            ("username", {"username": "bad/name"}),
            ("username", {"username": "bäd"}),
            ("username", {"username": ""}),
            ("password", {"password": "Abc12!x"}),  # 7 < 8 (dev mode)
            ("password", {"password": ""}),
            ("email", {"email": "not-an-email"}),
            ("email", {"email": "a@"}),
            ("roles", {"roles": []}),
            ("roles", {"roles": ["Superuser"]}),
            ("roles", {"roles": ["Admin", "Root"]}),
        ]
        for field, over in cases:
            with self.subTest(field=field, value=over):
                body = user_body()
                body.update(over)
                self.assertValidation(self.n.post(USERS, body, token=self.admin), field)
        for field in ("username", "password", "roles"):
            with self.subTest(missing=field):
                body = user_body()
                del body[field]
                self.assertValidation(self.n.post(USERS, body, token=self.admin), field)
        # boundaries that are valid
        for name in ("abc", harness.unique("x") + "y" * 51, "A.b_c-9"):
            with self.subTest(valid_username=name):
                self.create(username=name)

    def test_invalid_user_is_not_created(self):
        body = user_body(email="nope")
        self.assertValidation(self.n.post(USERS, body, token=self.admin), "email")
        listed = self.n.get(USERS, token=self.admin).body
        self.assertNotIn(body["username"], {u["username"] for u in listed})
        self.assertProblem(self.n.login_response(body["username"], body["password"]), 401)

    def test_invalid_json_and_wrong_shapes_are_400(self):
        self.assertProblem(self.n.post(USERS, raw="{", token=self.admin), 400)
        self.assertProblem(self.n.post(USERS, raw="[]", token=self.admin), 400)
        body = user_body()
        body["roles"] = "Admin"
        self.assertProblem(self.n.post(USERS, body, token=self.admin), 400)

    def test_update_validates_too(self):
        body, user = self.create()
        path = f"{USERS}/{user['id']}"
        self.assertValidation(self.n.put(path, update_body(body, email="not-an-email"), token=self.admin),
                              "email")
        self.assertValidation(self.n.put(path, update_body(body, roles=[]), token=self.admin), "roles")
        self.assertValidation(self.n.put(path, update_body(body, password="short"), token=self.admin),
                              "password")
        self.assertEqual(self.n.get(path, token=self.admin).body, user)

    # -- conflicts and not found --------------------------------------------------------------

    def test_duplicate_user_name_is_409_case_insensitive(self):
        base = harness.unique("Dup.")
        self.create(username=base)
        for name in (base, base.lower(), base.upper()):
            with self.subTest(name=name):
                self.assertProblem(self.n.post(USERS, user_body(username=name), token=self.admin), 409)
        self.assertProblem(self.n.post(USERS, user_body(username="ADMIN"), token=self.admin), 409)

    def test_unknown_user_is_404_for_every_call(self):
        for uid in (str(uuid.uuid4()), "does-not-exist"):
            path = f"{USERS}/{uid}"
            with self.subTest(id=uid):
                self.assertProblem(self.n.get(path, token=self.admin), 404)
                self.assertProblem(self.n.put(path, update_body(user_body()), token=self.admin), 404)
                self.assertProblem(self.n.delete(path, token=self.admin), 404)

    def test_admin_cannot_delete_themselves(self):
        me = self.n.get("/api/v1/authentication/me", token=self.admin).body
        self.assertProblem(self.n.delete(f"{USERS}/{me['id']}", token=self.admin), 409)
        self.assertStatus(self.n.get(f"{USERS}/{me['id']}", token=self.admin), 200)
        self.assertStatus(self.n.get("/api/v1/authentication/me", token=self.admin), 200)

    # -- update / delete ----------------------------------------------------------------------

    def test_update_without_password_keeps_the_password(self):
        body, user = self.create(roles=["Viewer"])
        path = f"{USERS}/{user['id']}"
        update = {"username": body["username"], "email": "changed@example.com",
                  "fullName": "Changed Name", "roles": ["Deployer", "Viewer"]}
        resp = self.n.put(path, update, token=self.admin)
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["email"], "changed@example.com")
        self.assertEqual(resp.body["fullName"], "Changed Name")
        self.assertEqual(sorted(resp.body["roles"]), ["Deployer", "Viewer"])
        self.assertEqual(resp.body["id"], user["id"])
        self.assertEqual(resp.body["createdAt"], user["createdAt"])
        self.assertGreaterEqual(harness.parse_time(resp.body["updatedAt"]),
                                harness.parse_time(user["updatedAt"]))
        harness.assert_no_secret(self, resp.body, body["password"])
        self.assertEqual(self.n.get(path, token=self.admin).body, resp.body)
        login = self.n.login_response(body["username"], body["password"])
        self.assertStatus(login, 200)
        self.assertEqual(sorted(login.body["user"]["roles"]), ["Deployer", "Viewer"])

    def test_updated_password_replaces_the_old_one(self):
        body, user = self.create()
        new_password = "N3w-Password-456"
        resp = self.n.put(f"{USERS}/{user['id']}", update_body(body, password=new_password),
                          token=self.admin)
        self.assertStatus(resp, 200)
        harness.assert_no_secret(self, resp.body, new_password)
        self.assertStatus(self.n.login_response(body["username"], new_password), 200)
        self.assertProblem(self.n.login_response(body["username"], body["password"]), 401)

    def test_inactive_user_cannot_log_in(self):
        body, user = self.create()
        wrong = self.assertProblem(self.n.login_response(body["username"], "wrong-password"), 401)
        resp = self.n.put(f"{USERS}/{user['id']}", update_body(body, active=False), token=self.admin)
        self.assertStatus(resp, 200)
        self.assertIs(resp.body["active"], False)
        inactive = self.assertProblem(self.n.login_response(body["username"], body["password"]), 401)
        self.assertEqual(inactive["detail"], wrong["detail"])
        resp = self.n.put(f"{USERS}/{user['id']}", update_body(body, active=True), token=self.admin)
        self.assertStatus(resp, 200)
        self.assertStatus(self.n.login_response(body["username"], body["password"]), 200)

    def test_created_inactive_user_cannot_log_in(self):
        body, user = self.create(active=False)
        self.assertIs(user["active"], False)
        self.assertProblem(self.n.login_response(body["username"], body["password"]), 401)

    def test_delete_removes_the_user(self):
        body, user = self.create()
        path = f"{USERS}/{user['id']}"
        resp = self.n.delete(path, token=self.admin)
        self.assertStatus(resp, 204)
        self.assertEqual(resp.raw, b"")
        self.assertProblem(self.n.get(path, token=self.admin), 404)
        self.assertProblem(self.n.delete(path, token=self.admin), 404)
        self.assertNotIn(user["id"], {u["id"] for u in self.n.get(USERS, token=self.admin).body})
        self.assertProblem(self.n.login_response(body["username"], body["password"]), 401)

    # -- audit --------------------------------------------------------------------------------

    def test_user_changes_are_audited_without_the_password(self):
        body, user = self.create()
        self.assertStatus(self.n.put(f"{USERS}/{user['id']}", update_body(body, fullName="Audited"),
                                     token=self.admin), 200)
        self.assertStatus(self.n.delete(f"{USERS}/{user['id']}", token=self.admin), 204)
        resp = self.n.get("/api/v1/auditlogs/category/User?pageNumber=1&pageSize=100", token=self.admin)
        self.assertStatus(resp, 200)
        rows = [r for r in resp.body if r.get("entityId") == user["id"]]
        self.assertGreaterEqual(len(rows), 3, f"expected create, update and delete rows: {rows}")
        for row in rows:
            self.assertEqual(row["eventCategory"], "User")
            self.assertEqual(row["username"], "admin")
            self.assertTrue(row["eventType"])
        self.assertEqual(len({r["eventType"] for r in rows}), len(rows),
                         "create, update and delete must be distinct event types")
        harness.assert_no_secret(self, [r.get("details") for r in rows] + [r.get("message") for r in rows],
                                 body["password"])


class NonDevUsersTest(NodeTestCase):
    def test_passwords_need_twelve_characters_outside_dev_mode(self):
        n = self.node(dev_mode=False, env={"HOTSWAP_ADMIN_PASSWORD": "Initial-Admin-Pw1"})
        admin = n.login("admin", "Initial-Admin-Pw1")
        self.assertValidation(n.post(USERS, user_body(password="Abcdefgh-1!"), token=admin), "password")
        body = user_body(password="Abcdefgh-12!")
        self.assertStatus(n.post(USERS, body, token=admin), 201)
        self.assertStatus(n.login_response(body["username"], body["password"]), 200)


if __name__ == "__main__":
    unittest.main()
