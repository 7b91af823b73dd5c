"""Authentication: login, JWT shape, failures, lockout, /me, demo credentials, first admin."""

import datetime
import json
import unittest

import harness
from harness import NodeTestCase

LOGIN = "/api/v1/authentication/login"
ME = "/api/v1/authentication/me"
DEMO = "/api/v1/authentication/demo-credentials"


class DevModeAuthTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node()
        cls.admin_login = cls.n.login_response("admin", "Admin123!")

    def test_login_returns_token_expiry_and_user(self):
        resp = self.admin_login
        self.assertStatus(resp, 200)
        self.assertEqual(resp.content_type, "application/json")
        self.assertSecurityHeaders(resp)
        body = resp.body
        self.assertIsInstance(body["token"], str)
        self.assertTimeClose(body["expiresAt"], harness.utcnow() + datetime.timedelta(minutes=60),
                             120, "expiresAt")
        user = body["user"]
        for key in ("id", "username", "email", "fullName", "roles"):
            self.assertIn(key, user)
        self.assertEqual(user["username"], "admin")
        self.assertEqual(user["roles"], ["Admin"])
        self.assertTrue(user["id"])
        harness.assert_no_secret(self, body["user"], "Admin123!")

    def test_every_demo_user_logs_in_with_its_role(self):
        for name, role in (("deployer", "Deployer"), ("viewer", "Viewer")):
            with self.subTest(user=name):
                resp = self.n.login_response(name, harness.DEMO_PASSWORDS[name])
                self.assertStatus(resp, 200)
                self.assertEqual(resp.body["user"]["roles"], [role])

    def test_jwt_is_hs256_with_kid_and_contract_claims(self):
        body = self.admin_login.body
        header, claims, signature = harness.jwt_parts(body["token"])
        self.assertEqual(header.get("alg"), "HS256", header)
        self.assertIsInstance(header.get("kid"), str, header)
        self.assertTrue(header["kid"], header)
        self.assertEqual(len(signature), 32, "HS256 signatures are 32 bytes")
        self.assertEqual(claims["sub"], body["user"]["id"])
        self.assertEqual(claims["unique_name"], "admin")
        roles = claims["role"] if isinstance(claims["role"], list) else [claims["role"]]
        self.assertEqual(roles, ["Admin"])
        self.assertIn("email", claims)
        self.assertNotIn("tenant_id", claims, "admin belongs to no tenant")
        self.assertEqual(claims["iss"], "hotswap")
        aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        self.assertEqual(aud, ["hotswap-api"])
        for key in ("jti", "iat", "nbf", "exp"):
            self.assertIn(key, claims)
        self.assertIsInstance(claims["exp"], int)
        self.assertEqual(claims["exp"] - claims["iat"], 3600)
        self.assertLessEqual(claims["nbf"], claims["iat"] + 1)
        self.assertAlmostEqual(claims["exp"], harness.parse_time(body["expiresAt"]).timestamp(), delta=1)
        second = self.n.login_response("admin", "Admin123!").body["token"]
        self.assertNotEqual(harness.jwt_parts(second)[1]["jti"], claims["jti"], "jti must be unique")

    def test_blank_fields_are_400_with_errors(self):
        cases = (
            ({"username": "", "password": "Admin123!"}, ["username"]),
            ({"username": "   ", "password": "Admin123!"}, ["username"]),
            ({"username": "admin", "password": ""}, ["password"]),
            ({"username": "admin"}, ["password"]),
            ({}, ["username", "password"]),
        )
        for body, fields in cases:
            with self.subTest(body=body):
                self.assertValidation(self.n.post(LOGIN, body), *fields)

    def test_wrong_password_and_unknown_user_are_401_with_the_same_message(self):
        wrong = self.n.login_response("viewer", "not-the-password")
        unknown = self.n.login_response("nobody-" + harness.unique(), "whatever123!")
        wrong_case = self.n.login_response("viewer", "viewer123!")
        a = self.assertProblem(wrong, 401)
        b = self.assertProblem(unknown, 401)
        c = self.assertProblem(wrong_case, 401)
        self.assertEqual(a["detail"], b["detail"])
        self.assertEqual(a["detail"], c["detail"])
        self.assertEqual(a["title"], b["title"])

    def test_me_returns_the_signed_in_user(self):
        token = self.admin_login.body["token"]
        resp = self.n.get(ME, token=token)
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["id"], self.admin_login.body["user"]["id"])
        self.assertEqual(resp.body["username"], "admin")
        self.assertEqual(resp.body["roles"], ["Admin"])
        for key in ("email", "fullName"):
            self.assertIn(key, resp.body)
        harness.assert_no_secret(self, resp.body, "Admin123!")
        viewer = self.n.get(ME, user="viewer")
        self.assertStatus(viewer, 200)
        self.assertEqual(viewer.body["username"], "viewer")
        self.assertEqual(viewer.body["roles"], ["Viewer"])

    def test_me_without_or_with_a_bad_token_is_401(self):
        self.assertProblem(self.n.get(ME), 401)
        self.assertProblem(self.n.get(ME, token="x"), 401)
        self.assertProblem(self.n.get(ME, headers={"Authorization": "Bearer"}), 401)
        self.assertProblem(self.n.get(ME, headers={"Authorization": "Basic YWRtaW46QWRtaW4xMjMh"}), 401)
        self.assertProblem(self.n.get(ME, headers={"Authorization": "Bearer a.b.c"}), 401)

    def test_tampered_tokens_are_401(self):
        token = self.n.token("viewer")
        h, p, s = token.split(".")
        # flipped signature
        sig = bytearray(harness.b64url_decode(s))
        sig[0] ^= 0x01
        bad_sig = f"{h}.{p}.{harness.b64url_encode(bytes(sig))}"
        self.assertProblem(self.n.get(ME, token=bad_sig), 401)
        # payload promoted to Admin, signature kept
        header, claims, _ = harness.jwt_parts(token)
        claims["role"] = "Admin"
        forged = f"{h}.{harness.b64url_encode(json.dumps(claims).encode())}.{s}"
        self.assertProblem(self.n.get(ME, token=forged), 401)
        self.assertProblem(self.n.get("/api/v1/users", token=forged), 401)
        # alg none
        none_header = harness.b64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        self.assertProblem(self.n.get(ME, token=f"{none_header}.{p}."), 401)
        # signature dropped
        self.assertProblem(self.n.get(ME, token=f"{h}.{p}."), 401)
        # the genuine token still works
        self.assertStatus(self.n.get(ME, token=token), 200)

    def test_demo_credentials_in_dev_mode(self):
        resp = self.n.get(DEMO)
        self.assertStatus(resp, 200)
        self.assertSecurityHeaders(resp)
        self.assertIsInstance(resp.body["message"], str)
        users = {u["username"]: u for u in resp.body["users"]}
        expected = {"admin": ("Admin123!", "Admin"), "deployer": ("Deploy123!", "Deployer"),
                    "viewer": ("Viewer123!", "Viewer")}
        for name, (password, role) in expected.items():
            self.assertIn(name, users)
            self.assertEqual(users[name]["password"], password)
            self.assertIsInstance(users[name]["roles"], list)
            self.assertIn(role, users[name]["roles"])
            self.assertIsInstance(users[name]["description"], str)


class LockoutTest(NodeTestCase):
    def test_five_wrong_passwords_lock_the_user(self):
        n = self.node()
        # four failures do not lock
        for _ in range(4):
            self.assertProblem(n.login_response("viewer", "wrong-password"), 401)
        self.assertStatus(n.login_response("viewer", "Viewer123!"), 200)
        # five do
        details = set()
        for _ in range(5):
            details.add(self.assertProblem(n.login_response("deployer", "wrong-password"), 401)["detail"])
        locked = self.assertProblem(n.login_response("deployer", "Deploy123!"), 401)
        details.add(locked["detail"])
        self.assertEqual(len(details), 1, f"locked and wrong-password messages differ: {details}")
        self.assertProblem(n.login_response("deployer", "Deploy123!"), 401)
        # the lock is per user
        self.assertStatus(n.login_response("admin", "Admin123!"), 200)


class NonDevModeTest(NodeTestCase):
    ADMIN_PASSWORD = "S3cure-Admin-Passw0rd!"

    def test_demo_credentials_are_404_outside_dev_mode(self):
        n = self.node(dev_mode=False, env={"HOTSWAP_ADMIN_PASSWORD": self.ADMIN_PASSWORD})
        self.assertProblem(n.get(DEMO), 404)

    def test_admin_password_from_the_environment(self):
        n = self.node(dev_mode=False, env={"HOTSWAP_ADMIN_PASSWORD": self.ADMIN_PASSWORD})
        resp = n.login_response("admin", self.ADMIN_PASSWORD)
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["user"]["roles"], ["Admin"])
        self.assertStatus(n.get(ME, token=resp.body["token"]), 200)
        # no compiled-in or demo credentials
        for name, password in harness.DEMO_PASSWORDS.items():
            with self.subTest(user=name):
                self.assertProblem(n.login_response(name, password), 401)
        users = n.get("/api/v1/users", token=resp.body["token"])
        self.assertStatus(users, 200)
        self.assertEqual(sorted(u["username"] for u in users.body), ["admin"])
        # the password is not echoed in logs
        self.assertNotIn(self.ADMIN_PASSWORD, n.read_stdout() + n.read_stderr())

    def test_admin_password_from_the_config_file(self):
        password = "File-Admin-Passw0rd!"
        n = self.node(dev_mode=False, config={"auth": {"initial_admin_password": password}})
        self.assertStatus(n.login_response("admin", password), 200)
        self.assertProblem(n.login_response("admin", "Admin123!"), 401)

    def test_issuer_and_audience_come_from_their_own_keys(self):
        n = self.node(dev_mode=False, env={"HOTSWAP_ADMIN_PASSWORD": self.ADMIN_PASSWORD},
                      config={"auth": {"issuer": "hs-test-issuer", "audience": "hs-test-audience",
                                       "token_minutes": 5}})
        resp = n.login_response("admin", self.ADMIN_PASSWORD)
        self.assertStatus(resp, 200)
        _, claims, _ = harness.jwt_parts(resp.body["token"])
        self.assertEqual(claims["iss"], "hs-test-issuer")
        aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        self.assertEqual(aud, ["hs-test-audience"])
        self.assertEqual(claims["exp"] - claims["iat"], 300)
        self.assertStatus(n.get(ME, token=resp.body["token"]), 200)

    def test_start_without_an_admin_password_exits_2_naming_both_sources(self):
        n = self.node(dev_mode=False, start=False)
        n.spawn()
        rc = n.wait_exit(harness.STOP_DEADLINE)
        self.assertEqual(rc, 2, n.logs())
        output = n.read_stderr() + n.read_stdout()
        self.assertIn("auth.initial_admin_password", output)
        self.assertIn("HOTSWAP_ADMIN_PASSWORD", output)
        self.assertFalse(harness.port_accepts(n.port))


if __name__ == "__main__":
    unittest.main()
