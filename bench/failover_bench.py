"""Cluster failover benchmark (docs/performance.md, "Cluster failover").

Three real hotswapd nodes on one PostgreSQL database and one Redis (HOTSWAP_TEST_PG_URL,
HOTSWAP_TEST_REDIS_URL; scripts/bench.sh starts both). Node A has the roles api + control only;
B and C are also the workers of Development, where a Canary with long steps keeps a deployment
Running. Each trial creates such a deployment on A (A owns it), waits until it analyzes, then:

* kill trials: SIGKILL A; the figure is the time from the kill to the deployment's next
  persisted transition on a survivor (its "DeploymentResumed" audit event, written at the new
  epoch), then A is started again for the next trial;
* SIGTERM trials: SIGTERM A (graceful handoff: passivate, release, leave); same figure.

It also measures the overhead of a command for a remote-owned entity against a local one:
`PUT /api/v1/tenants/{id}` (a write through the owner's tenant actor) and
`GET /api/v1/tenants/{id}`, sent to the owner node and to another node, alternating rounds.

Usage: python3 bench/failover_bench.py [--kills 20] [--terms 5] [--commands 300]
Environment: HOTSWAPD (the binary), HOTSWAP_MODULES_DIR, HOTSWAP_TEST_PG_URL,
HOTSWAP_TEST_REDIS_URL.
"""

import argparse
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "process"))
import harness  # noqa: E402
import test_deployments as td  # noqa: E402

SETTINGS = {"heartbeat_ms": 150, "node_ttl_ms": 800, "takeover_margin_ms": 200,
            "rebalance_ms": 150}


def node_config(name, prefix):
    cfg = {
        "node": {"roles": ["api", "control"] if name == "A" else ["api", "control", "worker"],
                 "environments": ["Development"]},
        "cluster": dict(SETTINGS, registry=os.environ["HOTSWAP_TEST_REDIS_URL"],
                        key_prefix=prefix),
        "rate_limits": {"enabled": False},
        "worker": {"sample_interval_ms": 1000},
        "environments": {"Development": {"strategy": "Canary", "approval": "never",
                                         "step_seconds": 600, "min_samples": 1,
                                         "canary_steps": [50, 100]}},
        "logging": {"level": "warn"},
    }
    return cfg


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


class Cluster:
    def __init__(self):
        prefix = f"b{uuid.uuid4().hex[:8]}:"
        self.nodes = {}
        first = None
        for name in "ABC":
            if first is None:
                n = harness.Node(config=node_config(name, prefix), pg=True, name=f"bench{name}")
                first = n
            else:
                n = harness.Node(config=node_config(name, prefix), store_url=first.store_url,
                                 name=f"bench{name}")
            self.nodes[name] = n
        for n in self.nodes.values():
            n.spawn()
        for n in self.nodes.values():
            n.wait_healthy()

    def close(self, keep=False):
        for n in self.nodes.values():
            n.cleanup()
            if keep:
                print(f"node {n.node_id} kept in {n.dir}", file=sys.stderr)
            else:
                n.remove_dir()


def upload_echo(node):
    for version in ("1.0.0", "2.0.0"):
        data = td.module_bytes("echo", version)
        resp = node.request("POST", td.MODULES, raw=data, user="admin",
                            headers={"Content-Type": "application/octet-stream",
                                     "X-Module-Name": "echo", "X-Module-Version": version})
        assert resp.status in (200, 201), resp


def stage_baseline(cluster):
    for key in "BC":
        resp = cluster.nodes[key].post(
            f"{td.CLUSTERS}/Development/modules/echo/versions/1.0.0/stage", user="admin")
        assert resp.status == 200, resp


def running_deployment(cluster):
    """A deployment owned by A, analyzing its first canary step (600 s long)."""
    a = cluster.nodes["A"]
    resp = a.post(td.DEPLOYMENTS, {"moduleName": "echo", "version": "2.0.0",
                                   "targetEnvironment": "Development",
                                   "requesterEmail": td.EMAIL}, user="deployer")
    assert resp.status == 202, resp
    eid = resp.body["executionId"]

    def analyzing():
        d = a.get(f"{td.DEPLOYMENTS}/{eid}", user="viewer").body
        return d.get("stepsCompleted", 0) >= 2 and d.get("status") == "Running"
    harness.wait_until(analyzing, 60, f"deployment {eid} to analyze")
    return eid


def resumed_at(cluster, eid, after):
    """Wall-clock time (s) of the first DeploymentResumed event of eid written after `after`."""
    b = cluster.nodes["B"]

    def find():
        resp = b.get(f"/api/v1/auditlogs/deployments/{eid}?pageSize=100", user="admin")
        if resp.status != 200:
            return None
        for e in resp.body:
            if e["eventType"] == "DeploymentResumed":
                t = harness.parse_time(e["timestamp"]).timestamp()
                if t >= after - 0.002:  # the audit timestamp has millisecond resolution
                    return t
        return None
    return harness.wait_until(find, 60, f"a survivor to resume {eid}", interval=0.01)


def finish(cluster, eid):
    """Cancels the deployment through B (it rolls back what it changed) and waits for the end."""
    b = cluster.nodes["B"]
    resp = b.post(f"{td.DEPLOYMENTS}/{eid}/cancel", user="deployer")
    assert resp.status in (200, 202), resp
    harness.wait_until(lambda: b.get(f"{td.DEPLOYMENTS}/{eid}", user="viewer").body["status"]
                       in td.TERMINAL, 60, f"{eid} to end")


def trials(cluster, count, graceful):
    out = []
    a = cluster.nodes["A"]
    for i in range(count):
        eid = running_deployment(cluster)
        t0 = time.time()
        if graceful:
            a.stop()
        else:
            a.kill()
        t1 = resumed_at(cluster, eid, t0)
        out.append(t1 - t0)
        print(f"  trial {i + 1}: {1000 * (t1 - t0):.0f} ms", flush=True)
        finish(cluster, eid)
        a.start()
    return out


def command_overhead(cluster, count):
    a, b = cluster.nodes["A"], cluster.nodes["B"]
    resp = a.post("/api/v1/tenants", {"name": "Bench", "subdomain": harness.unique("bench-"),
                                      "tier": "Starter", "contactEmail": "ops@bench.example"},
                  user="admin")
    assert resp.status == 201, resp
    tid = resp.body["tenantId"]
    results = {}
    for label, method in (("GET", "get"), ("PUT", "put")):
        times = {"local (owner A)": [], "remote (via B)": []}
        for r in range(4):  # alternating rounds
            for where, node in (("local (owner A)", a), ("remote (via B)", b)):
                for k in range(count // 4):
                    t = time.perf_counter()
                    if method == "get":
                        resp = node.get(f"/api/v1/tenants/{tid}", user="admin")
                    else:
                        resp = node.put(f"/api/v1/tenants/{tid}", {"name": f"Bench {r}-{k}"},
                                        user="admin")
                    times[where].append(time.perf_counter() - t)
                    assert resp.status == 200, resp
        results[label] = times
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--terms", type=int, default=5)
    ap.add_argument("--commands", type=int, default=400)
    args = ap.parse_args()
    for var in ("HOTSWAP_TEST_PG_URL", "HOTSWAP_TEST_REDIS_URL"):
        if not os.environ.get(var):
            sys.exit(f"{var} is not set: run through scripts/bench.sh (or scripts/services.sh run)")
    td.setUpModule()
    cluster = Cluster()
    ok = False
    try:
        a = cluster.nodes["A"]
        upload_echo(a)
        stage_baseline(cluster)
        print(f"settings: cluster {SETTINGS} (takeover wait = node_ttl_ms + takeover_margin_ms)")
        print(f"== kill -9 of the owner, {args.kills} trials: kill -> next persisted transition "
              "on a survivor")
        kills = trials(cluster, args.kills, graceful=False)
        print(f"kill -9: p50 {1000 * statistics.median(kills):.0f} ms, "
              f"p90 {1000 * percentile(kills, 90):.0f} ms, max {1000 * max(kills):.0f} ms "
              f"(target p50 <= 3000, max <= 5000)")
        print(f"== SIGTERM of the owner, {args.terms} trials: signal -> next persisted "
              "transition on a survivor")
        terms = trials(cluster, args.terms, graceful=True)
        print(f"SIGTERM handoff: p50 {1000 * statistics.median(terms):.0f} ms, "
              f"max {1000 * max(terms):.0f} ms (target <= 500)")
        print(f"== command to a remote-owned entity vs a local one ({args.commands} each, "
              "sequential, keep-alive)")
        for label, times in command_overhead(cluster, args.commands).items():
            local = times["local (owner A)"]
            remote = times["remote (via B)"]
            print(f"{label} tenant: local p50 {1e3 * statistics.median(local):.2f} ms, "
                  f"remote p50 {1e3 * statistics.median(remote):.2f} ms, ratio "
                  f"{statistics.median(remote) / statistics.median(local):.2f}x; means "
                  f"{1e3 * statistics.mean(local):.2f} / {1e3 * statistics.mean(remote):.2f} ms")
        ok = True
    finally:
        cluster.close(keep=not ok)
        td.tearDownModule()


if __name__ == "__main__":
    main()
