"""Cluster-wide rate limits: two real hotswapd nodes sharing one PostgreSQL database and one
Redis (a key prefix of their own) take their tokens from the same buckets in Redis, so together
they admit what one node would, not twice as much. The login bucket holds across nodes too.
When Redis fails, each node falls back to its own buckets (counted in
hotswap_rate_limit_fallbacks_total, one warning per outage) and returns to the shared buckets
once Redis answers again.

Needs HOTSWAP_TEST_PG_URL and HOTSWAP_TEST_REDIS_URL (scripts/services.sh sets both) and
redis-server for the outage test (a private server it can kill).
"""

import unittest
import uuid

import harness
from harness import NodeTestCase
from test_cluster import PrivateRedis, metric, redis_url
from test_ratelimit import RateLimitAsserts

CLUSTERS = "/api/v1/clusters"
ME = "/api/v1/authentication/me"
FALLBACKS = "hotswap_rate_limit_fallbacks_total"
LIMITS = {"enabled": True, "global": 1000, "deployments": 10, "clusters": 6, "approvals": 30,
          "login": 3}
OUTAGE_WARNING = "shared rate limits unavailable"
RECOVERED = "shared rate limits reachable again"


def cluster_config(registry):
    return {"cluster": {"registry": registry, "key_prefix": f"t{uuid.uuid4().hex[:10]}:"}}


class SharedLimitsTest(RateLimitAsserts, NodeTestCase):
    """Two nodes on one store and one Redis, with the limits of LIMITS."""

    @classmethod
    def setUpClass(cls):
        cfg = cluster_config(redis_url())
        cls.n1 = cls.class_node(config=cfg, rate_limits=LIMITS, pg=True)
        # The second node after the first: it reads the signing keys the first one stored.
        cls.n2 = cls.class_node(config=cfg, rate_limits=LIMITS, store_url=cls.n1.store_url)
        cls.nodes = (cls.n1, cls.n2)

    def assertNoFallbacks(self):
        for node in self.nodes:
            self.assertEqual(metric(node, FALLBACKS), 0,
                             f"{node.node_id} fell back to its local limits")

    def test_category_limit_holds_across_nodes(self):
        limit = LIMITS["clusters"]
        # One login per node (the deployer's login bucket allows 3).
        tokens = [node.token("deployer") for node in self.nodes]
        remaining = []
        for i in range(limit):
            node = self.nodes[i % 2]
            resp = node.get(CLUSTERS, token=tokens[i % 2])
            self.assertStatus(resp, 200, f"request {i + 1} (on {node.node_id})")
            remaining.append(self.assertRateHeaders(resp, limit))
        # One bucket for both nodes: the count goes down across them.
        self.assertEqual(remaining, list(range(limit - 1, -1, -1)))
        for i in (0, 1):
            with self.subTest(node=self.nodes[i].node_id):
                self.assertLimited(self.nodes[i].get(CLUSTERS, token=tokens[i]), limit)
        # The global bucket of the same user still has room: other routes answer.
        resp = self.n2.get(ME, token=tokens[1])
        self.assertStatus(resp, 200)
        self.assertLess(self.assertRateHeaders(resp, LIMITS["global"]), LIMITS["global"])
        # Another user has a bucket of its own.
        resp = self.n1.get(CLUSTERS, user="admin")
        self.assertStatus(resp, 200)
        self.assertEqual(self.assertRateHeaders(resp, limit), limit - 1)
        self.assertNoFallbacks()

    def test_login_limit_holds_across_nodes(self):
        limit = LIMITS["login"]
        for i in range(limit):
            node = self.nodes[i % 2]
            self.assertProblem(node.login_response("viewer", "wrong-password"), 401)
        fourth = self.nodes[limit % 2].login_response("viewer", "wrong-password")
        self.assertProblem(fourth, 429)
        self.assertGreaterEqual(int(fourth.headers["retry-after"]), 1)
        self.assertEqual(int(fourth.headers["x-ratelimit-limit"]), limit)
        self.assertEqual(int(fourth.headers["x-ratelimit-remaining"]), 0)
        self.assertIn("x-ratelimit-reset", fourth.headers)
        # The right password does not help, on either node.
        for node in self.nodes:
            self.assertProblem(node.login_response("viewer", "Viewer123!"), 429)
        self.assertNoFallbacks()


class RedisOutageTest(RateLimitAsserts, NodeTestCase):
    LIMIT = 5

    def test_redis_outage_falls_back_to_local_limits_and_recovers(self):
        redis = PrivateRedis().start()
        self.addCleanup(redis.cleanup)
        n = self.node(config=cluster_config(redis.url),
                      rate_limits={"global": self.LIMIT, "login": 1000})
        token = n.token("deployer")  # one request of the address, not of the user
        resp = n.get(ME, token=token)
        self.assertStatus(resp, 200)
        self.assertEqual(self.assertRateHeaders(resp, self.LIMIT), self.LIMIT - 1)
        self.assertEqual(metric(n, FALLBACKS), 0)

        redis.stop()
        # This node's own buckets decide now: they are full (they were never used), and
        # they limit all the same.
        for i in range(self.LIMIT):
            resp = n.get(ME, token=token)
            self.assertStatus(resp, 200, f"request {i + 1} during the outage")
            self.assertEqual(self.assertRateHeaders(resp, self.LIMIT), self.LIMIT - 1 - i)
        self.assertLimited(n.get(ME, token=token), self.LIMIT)
        self.assertGreaterEqual(metric(n, FALLBACKS), self.LIMIT + 1)
        self.assertEqual(n.read_stderr().count(OUTAGE_WARNING), 1,
                         "one warning per outage, not one per request")

        redis.start()  # same port, empty: the shared bucket is full again
        def shared_again():
            before = metric(n, FALLBACKS)
            resp = n.get(ME, token=token)
            return resp.status == 200 and metric(n, FALLBACKS) == before
        harness.wait_until(shared_again, 30, "the node to take its tokens from Redis again")
        harness.wait_until(lambda: RECOVERED in n.read_stderr(), 10, "the recovery notice")
        self.assertEqual(n.read_stderr().count(OUTAGE_WARNING), 1)


if __name__ == "__main__":
    unittest.main()
