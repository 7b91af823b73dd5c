"""HTTP basics of hotswapd: security headers, problem+json, routing errors, body limits,
operations endpoints, metrics and keep-alive."""

import re
import unittest

import harness
from harness import NodeTestCase

MIB = 1024 * 1024


def metric_sum(text, name):
    """Sum of every sample of `name` (any labels) in Prometheus text exposition."""
    total = 0.0
    found = False
    pattern = re.compile(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+([0-9.eE+-]+|NaN|\+Inf)(\s+\d+)?$")
    for line in text.splitlines():
        m = pattern.match(line.strip())
        if m:
            found = True
            total += float(m.group(2))
    return total if found else None


class HttpTest(NodeTestCase):
    @classmethod
    def setUpClass(cls):
        cls.n = cls.class_node()
        cls.admin = cls.n.token("admin")

    def test_start_prints_the_listening_address_on_stdout(self):
        line = f"listening on http://127.0.0.1:{self.n.port}"
        harness.wait_until(lambda: line in self.n.read_stdout(), 10,
                           f"stdout line containing {line!r}")

    def test_health_is_plain_text_healthy_with_security_headers(self):
        resp = self.n.get("/health")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.content_type, "text/plain")
        self.assertEqual(resp.body.strip(), "Healthy")
        self.assertSecurityHeaders(resp)

    def test_ready_reports_store_and_registry_up(self):
        resp = self.n.get("/ready")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.content_type, "application/json")
        self.assertEqual(resp.body["status"], "Ready")
        self.assertEqual(resp.body["store"]["status"], "Up")
        self.assertEqual(resp.body["registry"]["status"], "Up")
        self.assertSecurityHeaders(resp)

    def test_operations_endpoints_need_no_token(self):
        for path in ("/health", "/ready", "/metrics"):
            with self.subTest(path=path):
                resp = self.n.get(path)
                self.assertStatus(resp, 200)
                self.assertSecurityHeaders(resp)

    def test_metrics_expose_http_and_process_metrics(self):
        resp = self.n.get("/metrics")
        self.assertStatus(resp, 200)
        self.assertTrue(resp.content_type.startswith("text/plain"), resp.headers)
        for name in ("hotswap_http_requests_total", "hotswap_http_request_duration_seconds",
                     "process_resident_memory_bytes"):
            self.assertIn(name, resp.body)
        self.assertIsNotNone(metric_sum(resp.body, "hotswap_http_requests_total"), resp.body[:2000])
        rss = metric_sum(resp.body, "process_resident_memory_bytes")
        self.assertIsNotNone(rss)
        self.assertGreater(rss, 0)

    def test_metrics_count_requests(self):
        before = self.n.get("/metrics").body
        requests_before = metric_sum(before, "hotswap_http_requests_total")
        count_before = metric_sum(before, "hotswap_http_request_duration_seconds_count")
        self.assertIsNotNone(requests_before, before[:2000])
        self.assertIsNotNone(count_before, "the duration histogram has no _count samples")
        for _ in range(5):
            self.assertStatus(self.n.get("/api/v1/authentication/me", token=self.admin), 200)
        self.assertStatus(self.n.get("/api/v1/authentication/me"), 401)
        after = self.n.get("/metrics").body
        self.assertGreaterEqual(metric_sum(after, "hotswap_http_requests_total") - requests_before, 6)
        self.assertGreaterEqual(
            metric_sum(after, "hotswap_http_request_duration_seconds_count") - count_before, 6)

    def test_security_headers_on_an_authenticated_200(self):
        resp = self.n.get("/api/v1/authentication/me", token=self.admin)
        self.assertStatus(resp, 200)
        self.assertSecurityHeaders(resp)

    def test_401_is_a_problem_with_security_headers(self):
        resp = self.n.get("/api/v1/authentication/me")
        self.assertProblem(resp, 401)

    def test_unknown_route_is_a_404_problem(self):
        for path in ("/api/v1/does-not-exist", "/api/v1/tenants/x/y/z/w", "/nothing-here"):
            with self.subTest(path=path):
                resp = self.n.get(path, token=self.admin)
                self.assertProblem(resp, 404)

    def test_wrong_method_on_a_known_route_is_a_405_problem(self):
        self.assertProblem(self.n.delete("/api/v1/authentication/login"), 405)
        self.assertProblem(self.n.get("/api/v1/authentication/login"), 405)
        self.assertProblem(self.n.request("PATCH", "/api/v1/tenants", body={}, token=self.admin), 405)

    def test_invalid_json_is_a_400_problem(self):
        for raw in ('{"username":', "not json at all", "[1, 2", '{"username": "a" "password": "b"}'):
            with self.subTest(raw=raw):
                self.assertProblem(self.n.post("/api/v1/authentication/login", raw=raw), 400)
        self.assertProblem(self.n.post("/api/v1/tenants", raw="{nope", token=self.admin), 400)

    def test_body_over_the_limit_is_a_413_problem(self):
        body = b'{"name":"' + b"x" * MIB + b'"}'
        head = (f"POST /api/v1/tenants HTTP/1.1\r\nHost: 127.0.0.1:{self.n.port}\r\n"
                f"Authorization: Bearer {self.admin}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}")
        resp = harness.raw_exchange(self.n.port, head, body)
        self.assertProblem(resp, 413)
        # the node is unharmed
        self.assertStatus(self.n.get("/health"), 200)

    def test_body_just_over_one_mib_is_413_and_at_one_mib_is_not(self):
        prefix, suffix = b'{"name":"', b'","subdomain":"bad_sub"}'
        exact = prefix + b"x" * (MIB - len(prefix) - len(suffix)) + suffix
        self.assertEqual(len(exact), MIB)
        for body, expected in ((exact + b" ", 413), (exact, 400)):
            with self.subTest(size=len(body)):
                head = (f"POST /api/v1/tenants HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: Bearer {self.admin}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}")
                resp = harness.raw_exchange(self.n.port, head, body)
                self.assertProblem(resp, expected)

    def test_no_server_header_anywhere(self):
        for resp in (self.n.get("/health"), self.n.get("/metrics"),
                     self.n.get("/api/v1/nope", token=self.admin),
                     self.n.get("/api/v1/authentication/me")):
            self.assertNotIn("server", resp.headers, resp.headers)

    def test_request_id_is_echoed_or_generated(self):
        resp = self.n.get("/health", headers={"X-Request-Id": "req-abc-123"})
        self.assertEqual(resp.headers.get("x-request-id"), "req-abc-123")
        resp = self.n.get("/api/v1/authentication/me", headers={"X-Request-Id": "req-def-456"})
        self.assertEqual(resp.headers.get("x-request-id"), "req-def-456")
        first = self.n.get("/health").headers.get("x-request-id")
        second = self.n.get("/health").headers.get("x-request-id")
        self.assertTrue(first and second)
        self.assertNotEqual(first, second, "generated request ids must differ per request")

    def test_problem_trace_id_follows_traceparent(self):
        tp, trace_id = harness.traceparent()
        resp = self.n.get("/api/v1/authentication/me", headers={"traceparent": tp})
        body = self.assertProblem(resp, 401)
        self.assertEqual(body["traceId"], trace_id)

    def test_keep_alive_serves_two_requests_on_one_connection(self):
        conn = self.n.connect()
        try:
            first = harness.http_exchange(conn, "GET", "/health")
            sock = conn.sock
            self.assertIsNotNone(sock, "the server closed the connection after one request")
            self.assertNotEqual(first.headers.get("connection", "").lower(), "close")
            second = harness.http_exchange(conn, "GET", "/api/v1/authentication/me",
                                           headers={"Authorization": f"Bearer {self.admin}"})
            self.assertIs(conn.sock, sock, "the second request needed a new connection")
            third = harness.http_exchange(conn, "POST", "/api/v1/authentication/login",
                                          data=b'{"username":"","password":""}',
                                          headers={"Content-Type": "application/json"})
            self.assertIs(conn.sock, sock, "an error response closed the keep-alive connection")
            self.assertEqual([first.status, second.status, third.status], [200, 200, 400])
        finally:
            conn.close()


if __name__ == "__main__":
    unittest.main()
