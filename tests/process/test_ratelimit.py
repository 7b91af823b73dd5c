"""Rate limits: global per user / per address, login per user name and address, exemptions,
X-Forwarded-For handling, and switching limits off."""

import unittest

import harness
from harness import NodeTestCase

ME = "/api/v1/authentication/me"
DEMO = "/api/v1/authentication/demo-credentials"
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class RateLimitAsserts:
    def assertRateHeaders(self, resp, limit):
        for name in RATE_HEADERS:
            self.assertIn(name, resp.headers, f"{name} missing on {resp!r}")
            self.assertTrue(resp.headers[name].strip())
        self.assertEqual(int(resp.headers["x-ratelimit-limit"]), limit)
        return int(resp.headers["x-ratelimit-remaining"])

    def assertLimited(self, resp, limit):
        self.assertProblem(resp, 429)
        self.assertIn("retry-after", resp.headers, resp.headers)
        retry = int(resp.headers["retry-after"])
        self.assertGreaterEqual(retry, 1)
        self.assertLessEqual(retry, 60)
        self.assertEqual(self.assertRateHeaders(resp, limit), 0)


class GlobalLimitTest(RateLimitAsserts, NodeTestCase):
    LIMIT = 5

    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node(rate_limits={"global": cls.LIMIT, "login": 1000})
        # logins happen first: they are API requests of this address
        cls.tokens = {name: cls.n.token(name) for name in ("admin", "deployer", "viewer")}

    def test_sixth_request_of_a_user_is_429_and_other_users_have_their_own_bucket(self):
        remaining = []
        for i in range(self.LIMIT):
            resp = self.n.get(ME, token=self.tokens["admin"])
            self.assertStatus(resp, 200, f"request {i + 1}")
            remaining.append(self.assertRateHeaders(resp, self.LIMIT))
        self.assertEqual(remaining, [4, 3, 2, 1, 0])
        limited = self.n.get(ME, token=self.tokens["admin"])
        self.assertLimited(limited, self.LIMIT)
        # the limit holds for every route of that user, not just one
        self.assertLimited(self.n.get("/api/v1/tenants", token=self.tokens["admin"]), self.LIMIT)
        # another user is not affected
        for i in range(self.LIMIT):
            resp = self.n.get(ME, token=self.tokens["deployer"])
            self.assertStatus(resp, 200, f"deployer request {i + 1}")
            self.assertEqual(self.assertRateHeaders(resp, self.LIMIT), self.LIMIT - 1 - i)
        self.assertLimited(self.n.get(ME, token=self.tokens["deployer"]), self.LIMIT)
        # the viewer still has a full bucket
        resp = self.n.get(ME, token=self.tokens["viewer"])
        self.assertStatus(resp, 200)
        self.assertEqual(self.assertRateHeaders(resp, self.LIMIT), self.LIMIT - 1)

    def test_address_limit_ignores_x_forwarded_for_and_spares_operations(self):
        statuses = []
        for i in range(self.LIMIT + 1):
            resp = self.n.get(DEMO, headers={"X-Forwarded-For": f"203.0.113.{i + 1}"})
            statuses.append(resp.status)
            if resp.status == 429:
                self.assertLimited(resp, self.LIMIT)
                break
            self.assertStatus(resp, 200)
        self.assertEqual(statuses[-1], 429,
                         f"{self.LIMIT + 1} anonymous requests with spoofed X-Forwarded-For "
                         f"were never limited: {statuses}")
        for ip in ("198.51.100.7", "10.1.2.3", "127.0.0.2"):
            with self.subTest(xff=ip):
                self.assertLimited(self.n.get(DEMO, headers={"X-Forwarded-For": ip,
                                                             "X-Real-IP": ip}), self.LIMIT)
        # the address is exhausted, yet the operations endpoints still answer
        for _ in range(3 * self.LIMIT):
            for path in ("/health", "/ready", "/metrics"):
                resp = self.n.get(path)
                self.assertStatus(resp, 200, path)


class LoginLimitTest(RateLimitAsserts, NodeTestCase):
    def test_third_login_attempt_is_429(self):
        n = self.node(rate_limits={"login": 2, "global": 100000})
        self.assertStatus(n.login_response("viewer", "Viewer123!"), 200)
        self.assertProblem(n.login_response("viewer", "wrong-password"), 401)
        third = n.login_response("viewer", "Viewer123!")
        self.assertProblem(third, 429)
        self.assertIn("retry-after", third.headers)
        self.assertGreaterEqual(int(third.headers["retry-after"]), 1)
        for name in RATE_HEADERS:
            self.assertIn(name, third.headers)
        self.assertEqual(int(third.headers["x-ratelimit-limit"]), 2)
        # spoofing the address does not help
        self.assertProblem(n.login_response("viewer", "Viewer123!",
                                            headers={"X-Forwarded-For": "203.0.113.9"}), 429)
        # the limit is per user name: another user from the same address may log in
        self.assertStatus(n.login_response("deployer", "Deploy123!"), 200)
        self.assertStatus(n.login_response("admin", "Admin123!"), 200)
        # further attempts stay limited, whatever the password
        for _ in range(5):
            self.assertProblem(n.login_response("viewer", "wrong-password"), 429)


class TrustedProxyTest(RateLimitAsserts, NodeTestCase):
    def test_x_forwarded_for_is_used_only_from_a_trusted_proxy(self):
        limit = 3
        n = self.node(rate_limits={"global": limit, "login": 1000, "trusted_proxies": ["127.0.0.1"]})
        for i in range(limit):
            self.assertStatus(n.get(DEMO, headers={"X-Forwarded-For": "203.0.113.10"}), 200, f"#{i + 1}")
        self.assertLimited(n.get(DEMO, headers={"X-Forwarded-For": "203.0.113.10"}), limit)
        # a different client behind the trusted proxy has its own bucket
        resp = n.get(DEMO, headers={"X-Forwarded-For": "203.0.113.11"})
        self.assertStatus(resp, 200)
        self.assertEqual(self.assertRateHeaders(resp, limit), limit - 1)


class DisabledTest(RateLimitAsserts, NodeTestCase):
    def test_enabled_false_turns_every_limit_off(self):
        n = self.node(rate_limits={"enabled": False, "global": 1, "login": 1})
        for _ in range(3):
            self.assertStatus(n.login_response("viewer", "Viewer123!"), 200)
        token = n.token("admin")
        for _ in range(10):
            self.assertStatus(n.get(ME, token=token), 200)
        for _ in range(5):
            self.assertStatus(n.get(DEMO), 200)


if __name__ == "__main__":
    unittest.main()
