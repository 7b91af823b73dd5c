"""Deployments and approvals: the four strategies (Direct in Development, Rolling in QA, Blue-Green
in Staging, Canary in Production) end to end against real workers, requested and automatic
rollbacks, cancel, approvals (separation of duties, reject, expiry, restart), the Security Scan of
unsigned versions, request validation, Idempotency-Key, the list with filters and cursors, crash
and resume of a canary, and the deployment audit trail.

Needs the example modules (env HOTSWAP_MODULES_DIR, the build's examples/modules directory with
echo-1.0.0.so .. echo-4.0.0.so, slow-1.0.0.so, slow-2.0.0.so) and the openssl CLI (the trusted
module key and the signatures are made with it in setUpModule, as a module author would).

Canary analysis compares the canary's errors and p95 with the baseline's over each step window,
so every canary test drives traffic (client threads invoking the module continuously) while the
deployment runs.
"""

import base64
import hashlib
import http.client
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

import harness
from harness import NodeTestCase

MODULES = "/api/v1/modules"
CLUSTERS = "/api/v1/clusters"
DEPLOYMENTS = "/api/v1/deployments"
APPROVALS = "/api/v1/approvals"
TERMINAL = ("Succeeded", "Failed", "RolledBack", "Cancelled")
EMAIL = "deployer@example.com"

DEPLOY_DEADLINE = 60.0      # one deployment from its 202 to a terminal status
STATE_DEADLINE = 30.0       # a state change that follows a request
REQUEST_DEADLINE = 20.0     # one HTTP request of a traffic client

KEYS = {}  # filled by setUpModule: "ec" -> {"private", "public", "id"}
_key_dir = None


# --------------------------------------------------------------------------------------------
# Modules, keys and signatures (as in test_modules)


def modules_dir():
    path = os.environ.get("HOTSWAP_MODULES_DIR", "")
    if not path:
        binary = os.environ.get("HOTSWAPD", "")
        if binary:  # <build>/tools/hotswapd -> <build>/examples/modules
            path = os.path.join(os.path.dirname(os.path.dirname(binary)), "examples", "modules")
    if not path or not os.path.isdir(path):
        raise AssertionError(
            f"HOTSWAP_MODULES_DIR={path!r} is not a directory: run through ctest (it passes "
            "<build>/examples/modules) or export HOTSWAP_MODULES_DIR; build the "
            "example_modules target first")
    return path


def module_bytes(name, version):
    path = os.path.join(modules_dir(), f"{name}-{version}.so")
    if not os.path.isfile(path):
        raise AssertionError(f"example module {path} is missing: build the example_modules target")
    with open(path, "rb") as f:
        return f.read()


def openssl(*args):
    try:
        proc = subprocess.run(["openssl", *args], capture_output=True, timeout=60,
                              env=harness.child_environment())
    except FileNotFoundError:
        raise AssertionError("the openssl CLI is needed by this test (apt-get install openssl)")
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def make_key(directory, name):
    private = os.path.join(directory, f"{name}.pem")
    public = os.path.join(directory, f"{name}.pub.pem")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", private)
    openssl("pkey", "-in", private, "-pubout", "-out", public)
    der = openssl("pkey", "-pubin", "-in", public, "-outform", "DER")
    return {"private": private, "public": public, "id": hashlib.sha256(der).hexdigest()[:16]}


def sign(data, key="ec"):
    """base64 of what `openssl dgst -sha256 -sign KEY -out SIG FILE` writes for `data`."""
    with tempfile.TemporaryDirectory(prefix="hstest-sign-") as d:
        path = os.path.join(d, "module.so")
        sig = os.path.join(d, "module.sig")
        with open(path, "wb") as f:
            f.write(data)
        openssl("dgst", "-sha256", "-sign", KEYS[key]["private"], "-out", sig, path)
        with open(sig, "rb") as f:
            return base64.b64encode(f.read()).decode("ascii")


def setUpModule():
    global _key_dir
    _key_dir = tempfile.mkdtemp(prefix="hstest-depkeys-")
    KEYS["ec"] = make_key(_key_dir, "ec")


def tearDownModule():
    if _key_dir:
        shutil.rmtree(_key_dir, ignore_errors=True)


def node_config(environments=None, **over):
    """Fast deployments: small canary steps and blue-green hold, no rate limits, 200 ms samples."""
    cfg = {
        "auth": {"trusted_module_keys": [KEYS["ec"]["public"]]},
        "worker": {"sample_interval_ms": 200, "instances_per_version": 2},
        "rate_limits": {"enabled": False},
        "environments": {
            "Staging": {"bluegreen_keep_seconds": 1},
            "Production": {"step_seconds": 1, "min_samples": 10},
        },
    }
    if environments:
        harness.deep_merge(cfg["environments"], environments)
    return harness.deep_merge(cfg, over)


# --------------------------------------------------------------------------------------------
# Traffic


class Traffic:
    """Client threads that invoke `module` in `env` continuously, each on its own keep-alive
    connection, and record every outcome. A good answer is 200 whose body is what `module`
    answers for the payload (echo: "echo <X-Module-Version>: <payload>", slow: "slow: <payload>").
    Connection errors (a node being killed) are recorded apart and followed by a short backoff."""

    def __init__(self, node, module, env, token, clients=2):
        self.node = node
        self.module = module
        self.env = env
        self.token = token
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.answers = []        # (monotonic time, status, version, good)
        self.bad = []            # (status, version, body) of answers that are not good
        self.exceptions = []     # repr of connection errors
        self.by_version = {}     # version -> good answers
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                         name=f"traffic-{module}-{i}") for i in range(clients)]
        self.started = False

    def start(self):
        self.started = True
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        if not self.started or self.stop_event.is_set():
            return
        self.stop_event.set()
        for t in self.threads:
            t.join(REQUEST_DEADLINE + 5)
            if t.is_alive():
                raise AssertionError(f"{t.name} did not finish (a request hangs)")

    def good(self, version):
        with self.lock:
            return self.by_version.get(version, 0)

    def total(self):
        with self.lock:
            return len(self.answers)

    def bad_answers(self):
        with self.lock:
            return list(self.bad)

    def _expected(self, version, payload):
        if self.module == "echo":
            return f"echo {version}: {payload}"
        if self.module == "slow":
            return f"slow: {payload}"
        return None

    def _run(self, client):
        path = f"{MODULES}/{self.module}/invoke?environment={self.env}"
        conn = None
        seq = 0
        try:
            while not self.stop_event.is_set():
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.node.port,
                                                      timeout=REQUEST_DEADLINE)
                payload = f"c{client}-{seq}"
                seq += 1
                headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "text/plain"}
                try:
                    resp = harness.http_exchange(conn, "POST", path, payload.encode(), headers)
                except Exception as exc:  # noqa: BLE001 - recorded; the node may be restarting
                    with self.lock:
                        self.exceptions.append(repr(exc))
                    conn.close()
                    conn = None
                    self.stop_event.wait(0.05)  # backoff while the node is down
                    continue
                version = resp.headers.get("x-module-version")
                expected = self._expected(version, payload)
                good = resp.status == 200 and (expected is None or resp.body == expected)
                with self.lock:
                    self.answers.append((time.monotonic(), resp.status, version, good))
                    if good:
                        self.by_version[version] = self.by_version.get(version, 0) + 1
                    else:
                        self.bad.append((resp.status, version, str(resp.body)[:200]))
        finally:
            if conn is not None:
                conn.close()


# --------------------------------------------------------------------------------------------
# Base class


class DeploymentCase(NodeTestCase):
    """Helpers; `self.n` is the node of the current test."""

    def start_node(self, environments=None, extra_toml="", **over):
        self.n = self.node(config=node_config(environments, **over), extra_toml=extra_toml)
        return self.n

    # -- modules and workers ------------------------------------------------------------------

    def upload(self, name, version, signed=True, user="admin", environment=None):
        data = module_bytes(name, version)
        hdrs = {"Content-Type": "application/octet-stream", "X-Module-Name": name,
                "X-Module-Version": version}
        if signed:
            hdrs["X-Module-Signature"] = sign(data)
        path = MODULES
        if environment is not None:
            path += "?environment=" + urllib.parse.quote(environment)
        resp = self.n.request("POST", path, raw=data, user=user, headers=hdrs)
        self.assertIn(resp.status, (200, 201), f"upload of {name} {version}: {resp!r}")
        self.assertIs(resp.body["signed"], signed, resp.body)
        return resp.body

    def stage_baseline(self, env, name, version):
        """Loads `version` in `env` with the Admin's worker command (first version: 100 %)."""
        resp = self.n.post(f"{CLUSTERS}/{env}/modules/{name}/versions/{version}/stage",
                           user="admin")
        self.assertStatus(resp, 200, f"stage of {name} {version} in {env}")
        self.assertEqual(resp.body["weight"], 100, resp.body)

    def node_view(self, env):
        resp = self.n.get(f"{CLUSTERS}/{env}", user="viewer")
        self.assertStatus(resp, 200)
        nodes = [x for x in resp.body["nodes"] if x["nodeId"] == self.n.node_id]
        self.assertEqual(len(nodes), 1, f"this node in the {env} cluster view: {resp.body}")
        return nodes[0]

    def weights(self, name, env):
        """{version: weight} of module `name` on this node's worker for `env` ({} when none)."""
        for m in self.node_view(env)["modules"]:
            if m["name"] == name:
                return {v["version"]: v["weight"] for v in m["versions"]}
        return {}

    def wait_weights(self, name, env, expected, timeout=STATE_DEADLINE):
        seen = []

        def check():
            w = self.weights(name, env)
            seen.append(w)
            return w == expected
        try:
            harness.wait_until(check, timeout, f"{name} weights {expected} in {env}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {seen[-1:]}") from None

    def invoke(self, name, payload, env, user="viewer"):
        return self.n.request("POST", f"{MODULES}/{name}/invoke?environment={env}", raw=payload,
                              user=user, headers={"Content-Type": "text/plain"})

    def assertAnswers(self, env, version, name="echo"):
        resp = self.invoke(name, "ping", env)
        self.assertStatus(resp, 200, f"invoke {name} in {env}")
        self.assertEqual(resp.headers.get("x-module-version"), version, resp.headers)
        if name == "echo":
            self.assertEqual(resp.body, f"echo {version}: ping")

    def traffic(self, module, env, clients=2):
        t = Traffic(self.n, module, env, self.n.token("viewer"), clients)
        self.addCleanup(t.stop)  # cleanups run last-in first-out: before the node is ended
        return t.start()

    # -- deployments --------------------------------------------------------------------------

    def deploy(self, module, version, env, user="deployer", headers=None, **fields):
        body = {"moduleName": module, "version": version, "targetEnvironment": env,
                "requesterEmail": EMAIL}
        body.update(fields)
        return self.n.post(DEPLOYMENTS, body, user=user, headers=headers)

    def deploy_ok(self, module, version, env, user="deployer", **fields):
        resp = self.deploy(module, version, env, user=user, **fields)
        self.assertStatus(resp, 202, f"deployment of {module} {version} to {env}")
        eid = resp.body["executionId"]
        location = urllib.parse.urlsplit(resp.headers.get("location", "")).path
        self.assertEqual(location, f"{DEPLOYMENTS}/{eid}", resp.headers)
        return eid

    def get_deployment(self, eid, user="viewer"):
        resp = self.n.get(f"{DEPLOYMENTS}/{eid}", user=user)
        self.assertStatus(resp, 200, f"GET deployment {eid}")
        return resp.body

    def wait_deployment(self, eid, predicate, what, timeout=DEPLOY_DEADLINE):
        last = {}

        def check():
            d = self.get_deployment(eid)
            last["d"] = d
            return d if predicate(d) else None
        try:
            return harness.wait_until(check, timeout, f"deployment {eid} {what}")
        except AssertionError as exc:
            d = last.get("d") or {}
            raise AssertionError(f"{exc}; last seen status {d.get('status')!r}, "
                                 f"message {d.get('message')!r}, stages "
                                 f"{[(s['name'], s['status'], s['message']) for s in d.get('stages', [])]}, "
                                 f"steps {d.get('stepsCompleted')}/{d.get('stepsTotal')}") from None

    def wait_status(self, eid, *statuses, timeout=DEPLOY_DEADLINE):
        return self.wait_deployment(eid, lambda d: d["status"] in statuses,
                                    f"to reach {'/'.join(statuses)}", timeout)

    def wait_terminal(self, eid, timeout=DEPLOY_DEADLINE):
        return self.wait_status(eid, *TERMINAL, timeout=timeout)

    def assertEnded(self, eid, status, timeout=DEPLOY_DEADLINE):
        d = self.wait_terminal(eid, timeout)
        self.assertEqual(d["status"], status,
                         f"deployment {eid} ended {d['status']}: message {d.get('message')!r}, "
                         f"stages {[(s['name'], s['status'], s['message']) for s in d['stages']]}")
        harness.parse_time(d["endTime"])
        self.assertTrue(d["duration"], d)
        return d

    def stages(self, d):
        return {s["name"]: s for s in d["stages"]}

    def rollback(self, eid, user="deployer"):
        return self.n.post(f"{DEPLOYMENTS}/{eid}/rollback", user=user)

    def cancel(self, eid, user="deployer"):
        return self.n.post(f"{DEPLOYMENTS}/{eid}/cancel", user=user)

    # -- approvals ----------------------------------------------------------------------------

    def decide(self, eid, verb, user="admin", **body):
        return self.n.post(f"{APPROVALS}/deployments/{eid}/{verb}", body or None, user=user)

    def approve_ok(self, eid, user="admin", **body):
        resp = self.decide(eid, "approve", user=user, **body)
        self.assertStatus(resp, 200, f"approval of {eid} by {user}")
        self.assertEqual(resp.body["status"], "Approved", resp.body)
        self.assertEqual(resp.body["respondedBy"], user, resp.body)
        return resp.body

    def approval(self, eid):
        resp = self.n.get(f"{APPROVALS}/deployments/{eid}", user="viewer")
        self.assertStatus(resp, 200, f"approval of {eid}")
        return resp.body

    def pending(self):
        resp = self.n.get(f"{APPROVALS}/pending", user="viewer")
        self.assertStatus(resp, 200)
        self.assertIsInstance(resp.body, list, resp)
        return {a["deploymentExecutionId"]: a for a in resp.body}

    def deploy_pending(self, module, version, env, user="deployer", **fields):
        """POST a deployment that needs an approval; waits until it waits for one."""
        resp = self.deploy(module, version, env, user=user, **fields)
        self.assertStatus(resp, 202)
        self.assertEqual(resp.body["status"], "PendingApproval", resp.body)
        eid = resp.body["executionId"]
        d = self.wait_status(eid, "PendingApproval", timeout=STATE_DEADLINE)
        self.assertEqual(d["stages"][0]["name"], "Approval", d["stages"])
        self.assertEqual(d["stages"][0]["status"], "WaitingForApproval", d["stages"])
        return eid

    # -- audit --------------------------------------------------------------------------------

    def audit(self, kind, eid):
        resp = self.n.get(f"/api/v1/auditlogs/{kind}/{eid}?pageSize=100", user="admin")
        self.assertStatus(resp, 200)
        return resp.body


# --------------------------------------------------------------------------------------------
# Direct, Rolling, Blue-Green


class DirectTest(DeploymentCase):

    def test_direct_deploy_redeploy_and_rollback(self):
        self.start_node()
        self.upload("echo", "1.0.0", signed=False)
        self.upload("echo", "2.0.0", signed=False)

        resp = self.deploy("echo", "1.0.0", "Development")
        self.assertStatus(resp, 202)
        self.assertSecurityHeaders(resp)
        body = resp.body
        for key in ("executionId", "status", "startTime", "estimatedDuration", "traceId", "links"):
            self.assertIn(key, body, body)
        self.assertEqual(body["status"], "Running")
        self.assertTimeClose(body["startTime"], harness.utcnow(), 60)
        self.assertRegex(body["estimatedDuration"], r"^P")
        one = body["executionId"]
        self.assertEqual(body["links"]["self"], f"{DEPLOYMENTS}/{one}")
        self.assertEqual(urllib.parse.urlsplit(resp.headers["location"]).path,
                         f"{DEPLOYMENTS}/{one}")

        d = self.assertEnded(one, "Succeeded")
        self.assertEqual((d["moduleName"], d["version"], d["targetEnvironment"], d["strategy"],
                          d["requesterEmail"]),
                         ("echo", "1.0.0", "Development", "Direct", EMAIL), d)
        self.assertEqual([s["name"] for s in d["stages"]],
                         ["Security Scan", "Deploy to Development", "Validation"])
        for s in d["stages"]:
            self.assertEqual(s["status"], "Succeeded", s)
            harness.parse_time(s["startTime"])
            harness.parse_time(s["endTime"])
        deploy_stage = self.stages(d)["Deploy to Development"]
        self.assertEqual(deploy_stage["strategy"], "Direct")
        self.assertEqual(deploy_stage["nodesDeployed"], 1, deploy_stage)
        self.assertEqual(deploy_stage["progress"], 100, deploy_stage)
        self.assertIn("unsigned", self.stages(d)["Security Scan"]["message"].lower())
        self.assertEqual(self.weights("echo", "Development"), {"1.0.0": 100})
        self.assertAnswers("Development", "1.0.0")

        two = self.deploy_ok("echo", "2.0.0", "Development")
        self.assertNotEqual(two, one)
        d2 = self.assertEnded(two, "Succeeded")
        self.assertTrue(all(s["status"] == "Succeeded" for s in d2["stages"]), d2["stages"])
        self.wait_weights("echo", "Development", {"2.0.0": 100})
        self.assertEqual(self.node_view("Development")["loadedLibraries"], 1)
        self.assertAnswers("Development", "2.0.0")

        # rollback of the 2.0.0 deployment restores 1.0.0
        self.assertProblem(self.rollback(two, user="viewer"), 403)
        self.assertProblem(self.rollback("00000000-0000-4000-8000-000000000000"), 404)
        resp = self.rollback(two)
        self.assertStatus(resp, 202)
        self.assertEqual(resp.body["status"], "InProgress", resp.body)
        self.assertEqual(resp.body["nodesAffected"], 1, resp.body)
        self.assertTrue(resp.body["rollbackId"], resp.body)
        seen = []

        def rolled_back():
            d = self.get_deployment(two)
            seen.append(d["status"])
            return d if d["status"] in TERMINAL else None
        d2 = harness.wait_until(rolled_back, DEPLOY_DEADLINE, "the rollback to end")
        self.assertEqual(d2["status"], "RolledBack", d2)
        self.assertEqual(d2["rollbackId"], resp.body["rollbackId"])
        self.assertIn("1.0.0", d2["message"] or "", d2)
        self.assertTrue(set(seen) <= {"RollingBack", "RolledBack"}, seen)
        # The RollingBack state may pass faster than a poll: the audit trail holds it.
        if "RollingBack" not in seen:
            states = [e["details"].get("status") for e in self.audit("deployments", two)
                      if isinstance(e.get("details"), dict)]
            self.assertIn("RollingBack", states, "RollingBack was never recorded")
        self.wait_weights("echo", "Development", {"1.0.0": 100})
        harness.wait_until(lambda: self.node_view("Development")["loadedLibraries"] == 1,
                           STATE_DEADLINE, "2.0.0 to be unloaded")
        self.assertAnswers("Development", "1.0.0")

        self.assertProblem(self.rollback(two), 409)
        self.assertEqual(self.get_deployment(two)["status"], "RolledBack")
        self.assertEqual(self.get_deployment(one)["status"], "Succeeded")
        self.assertProblem(self.cancel(two), 409)

    def test_failed_stage_rolls_back_automatically(self):
        """echo 4.0.0 fails its self-check: staging it fails, the deployment rolls back what it
        did and ends Failed with a message; 1.0.0 keeps all traffic."""
        self.start_node()
        self.upload("echo", "1.0.0", signed=False)
        self.upload("echo", "4.0.0", signed=False)
        self.assertEnded(self.deploy_ok("echo", "1.0.0", "Development"), "Succeeded")
        bad = self.deploy_ok("echo", "4.0.0", "Development")
        d = self.assertEnded(bad, "Failed")
        message = d["message"] or ""
        self.assertIn("self-check", message, d)
        self.assertIn("rolled back", message, d)
        self.assertNotIn("rollback failed", message, d)
        stages = self.stages(d)
        self.assertEqual(stages["Security Scan"]["status"], "Succeeded", stages)
        self.assertEqual(stages["Deploy to Development"]["status"], "Failed", stages)
        self.assertIn("self-check", stages["Deploy to Development"]["message"] or "", stages)
        self.assertIn(stages["Validation"]["status"], ("Skipped", "Pending"), stages)
        self.wait_weights("echo", "Development", {"1.0.0": 100})
        self.assertAnswers("Development", "1.0.0")
        self.assertProblem(self.rollback(bad), 409)  # it ended Failed: nothing to roll back


class StrategiesTest(DeploymentCase):

    def test_rolling_in_qa(self):
        self.start_node()
        self.upload("echo", "1.0.0", signed=False)
        self.upload("echo", "2.0.0", signed=False)
        d = self.assertEnded(self.deploy_ok("echo", "1.0.0", "QA"), "Succeeded")
        self.assertEqual(d["strategy"], "Rolling")
        self.assertEqual([s["name"] for s in d["stages"]], ["Security Scan", "Deploy to QA", "Validation"])
        self.wait_weights("echo", "QA", {"1.0.0": 100})
        d = self.assertEnded(self.deploy_ok("echo", "2.0.0", "QA"), "Succeeded")
        self.assertEqual(self.stages(d)["Deploy to QA"]["strategy"], "Rolling")
        self.assertTrue(all(s["status"] == "Succeeded" for s in d["stages"]), d["stages"])
        self.wait_weights("echo", "QA", {"2.0.0": 100})
        self.assertAnswers("QA", "2.0.0")
        self.assertEqual(self.weights("echo", "Development"), {}, "another environment changed")

    def test_blue_green_in_staging(self):
        self.start_node(environments={"Staging": {"bluegreen_keep_seconds": 2}})
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")
        self.upload("echo", "3.0.0")
        d = self.assertEnded(self.deploy_ok("echo", "1.0.0", "Staging"), "Succeeded")
        self.assertEqual(d["strategy"], "BlueGreen")
        # on_request without requireApproval: no Approval stage
        self.assertEqual([s["name"] for s in d["stages"]],
                         ["Security Scan", "Deploy to Staging", "Validation"])
        self.assertIn("signed", self.stages(d)["Security Scan"]["message"], d)
        self.wait_weights("echo", "Staging", {"1.0.0": 100})

        green = self.deploy_ok("echo", "2.0.0", "Staging")
        # stage, smoke, switch, verify, hold (blue stays loaded), retire blue
        held = self.wait_deployment(green, lambda d: d["status"] in TERMINAL
                                    or (d["stepsTotal"] == 6 and d["stepsCompleted"] == 4),
                                    "to hold blue after the switch")
        self.assertEqual(held["status"], "Running", f"the hold of 2 s was missed: {held}")
        self.assertEqual(self.weights("echo", "Staging"), {"1.0.0": 0, "2.0.0": 100},
                         "during the hold blue stays loaded without traffic")
        self.assertAnswers("Staging", "2.0.0")
        d = self.assertEnded(green, "Succeeded")
        self.assertTrue(all(s["status"] == "Succeeded" for s in d["stages"]), d["stages"])
        self.wait_weights("echo", "Staging", {"2.0.0": 100})

        # A green that fails its smoke probe (echo 3.0.0 fails its first 50 of every 100
        # calls) never takes traffic: the deployment rolls back and ends Failed.
        bad = self.deploy_ok("echo", "3.0.0", "Staging")
        d = self.assertEnded(bad, "Failed")
        self.assertIn("rolled back", d["message"] or "", d)
        self.assertIn("failing on purpose", d["message"] or "", d)
        self.assertEqual(self.stages(d)["Deploy to Staging"]["status"], "Failed", d["stages"])
        self.wait_weights("echo", "Staging", {"2.0.0": 100})
        self.assertAnswers("Staging", "2.0.0")

        # A green that fails its self-check (echo 4.0.0) is never loaded, so it never
        # switches: the deployment fails at its stage step and blue keeps 100 %.
        self.upload("echo", "4.0.0")
        broken = self.deploy_ok("echo", "4.0.0", "Staging")
        d = self.assertEnded(broken, "Failed")
        self.assertIn("self-check", d["message"] or "", d)
        self.wait_weights("echo", "Staging", {"2.0.0": 100})
        self.assertAnswers("Staging", "2.0.0")

    def test_staging_approval_on_request_and_cancel(self):
        self.start_node()
        self.upload("echo", "1.0.0")
        eid = self.deploy_pending("echo", "1.0.0", "Staging", requireApproval=True)
        self.assertIn(eid, self.pending())
        # a deployment that waits is not finished: rollback is refused, cancel works
        self.assertProblem(self.rollback(eid), 400)
        self.assertProblem(self.cancel(eid, user="viewer"), 403)
        resp = self.cancel(eid)
        self.assertStatus(resp, 202)
        d = self.assertEnded(eid, "Cancelled")
        self.assertIn("deployer", d["message"] or "", d)
        self.assertEqual(self.weights("echo", "Staging"), {})
        self.assertProblem(self.cancel(eid), 409)
        self.assertProblem(self.rollback(eid), 409)
        # The approval of a cancelled deployment is no longer pending and cannot be granted.
        self.assertNotIn(eid, self.pending(), "a cancelled deployment's approval stays pending")
        self.assertProblem(self.decide(eid, "approve"), 409)
        self.assertEqual(self.get_deployment(eid)["status"], "Cancelled")


class QuotaTest(DeploymentCase):

    def test_tenant_quota_holds_concurrent_deployments_and_is_released(self):
        self.start_node()
        self.upload("echo", "1.0.0")
        resp = self.n.post("/api/v1/tenants", {
            "name": "Quota Tenant", "subdomain": harness.unique("quota-"), "tier": "Free",
            "contactEmail": "ops@example.com"}, user="admin")
        self.assertStatus(resp, 201)
        tid = resp.body["tenantId"]
        self.assertEqual(resp.body["resourceQuota"]["maxConcurrentDeployments"], 1)
        name = harness.unique("qdep")
        resp = self.n.post("/api/v1/users", {
            "username": name, "password": "Tenant-pass-123", "email": f"{name}@example.com",
            "fullName": "Quota Deployer", "roles": ["Deployer"], "tenantId": tid}, user="admin")
        self.assertStatus(resp, 201)
        self.n.login(name, "Tenant-pass-123")
        # The first deployment waits for its approval and holds the tenant's only slot.
        first = self.deploy_pending("echo", "1.0.0", "Staging", user=name, requireApproval=True)
        tenant = self.n.get(f"/api/v1/tenants/{tid}", user="admin").body
        self.assertEqual(tenant["usage"]["runningDeployments"], [first], tenant)
        second = self.deploy("echo", "1.0.0", "Staging", user=name, requireApproval=True)
        body = self.assertProblem(second, 409)
        self.assertIn("maxConcurrentDeployments", body["detail"], body)
        # A platform user is not bound by the tenant's quota.
        self.deploy_ok("echo", "1.0.0", "Development", user="deployer")
        # Ending the first deployment releases the slot.
        self.assertStatus(self.decide(first, "reject", reason="not now"), 200)
        self.assertEnded(first, "Failed")

        def released():
            t = self.n.get(f"/api/v1/tenants/{tid}", user="admin").body
            return t["usage"]["runningDeployments"] == []
        harness.wait_until(released, STATE_DEADLINE, "the tenant's reservation is released")
        third = self.deploy_pending("echo", "1.0.0", "Staging", user=name, requireApproval=True)
        self.assertNotEqual(third, first)


class LoadTest(DeploymentCase):

    def test_200_concurrent_deployments_all_end_and_the_queue_bound_holds(self):
        import concurrent.futures
        self.start_node(deployments={"max_running_per_node": 4, "queue_limit": 60})
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")

        def post(i):
            return self.deploy("echo", "1.0.0" if i % 2 == 0 else "2.0.0", "Development",
                               user="deployer")
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(post, range(200)))
        accepted = [r.body["executionId"] for r in answers if r.status == 202]
        refused = [r for r in answers if r.status == 429]
        self.assertEqual(len(accepted) + len(refused), 200,
                         [r for r in answers if r.status not in (202, 429)][:3])
        for r in refused:
            self.assertProblem(r, 429)
            self.assertIn("retry-after", r.headers, r)
        # At most 4 running + 60 queued can be outstanding at any time, so a burst of 200
        # from 8 clients is refused in part; everything accepted runs.
        self.assertGreater(len(accepted), 0)
        self.assertGreater(len(refused), 0, "the queue bound was never reached")
        for eid in accepted:
            d = self.wait_terminal(eid, timeout=120)
            self.assertIn(d["status"], ("Succeeded", "Failed"), d)
        listed = set()
        cursor = "0"
        while cursor is not None:
            resp = self.n.get(f"{DEPLOYMENTS}?limit=500&cursor={cursor}", user="viewer")
            self.assertStatus(resp, 200)
            listed.update(item["executionId"] for item in resp.body)
            cursor = resp.headers.get("x-next-cursor")
        self.assertEqual(listed, set(accepted), "every accepted deployment is listed, none else")


# --------------------------------------------------------------------------------------------
# Canary in Production


class CanaryTest(DeploymentCase):

    def test_canary_with_approval_and_traffic_succeeds(self):
        self.start_node()
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")

        # The first version: no baseline, so stage -> smoke -> switch -> verify.
        first = self.deploy_pending("echo", "1.0.0", "Production")
        self.approve_ok(first)
        d = self.assertEnded(first, "Succeeded")
        self.assertEqual(d["strategy"], "Canary")
        self.wait_weights("echo", "Production", {"1.0.0": 100})

        traffic = self.traffic("echo", "Production")
        harness.wait_until(lambda: traffic.good("1.0.0") >= 20, STATE_DEADLINE,
                           "traffic answered by 1.0.0")

        resp = self.deploy("echo", "2.0.0", "Production",
                           canary={"steps": [50, 100], "stepDurationSeconds": 1, "minSamples": 10})
        self.assertStatus(resp, 202)
        self.assertEqual(resp.body["status"], "PendingApproval", resp.body)
        eid = resp.body["executionId"]
        d = self.wait_status(eid, "PendingApproval", timeout=STATE_DEADLINE)
        self.assertEqual([s["name"] for s in d["stages"]],
                         ["Approval", "Security Scan", "Deploy to Production", "Validation"])
        self.assertEqual(d["stages"][0]["status"], "WaitingForApproval")
        self.assertTrue(all(s["status"] == "Pending" for s in d["stages"][1:]), d["stages"])

        pending = self.pending()
        self.assertIn(eid, pending)
        item = pending[eid]
        for key in ("approvalId", "moduleName", "version", "targetEnvironment", "requesterEmail",
                    "requestedAt", "timeoutAt", "timeRemaining"):
            self.assertIn(key, item, item)
        self.assertEqual((item["moduleName"], item["version"], item["targetEnvironment"],
                          item["requesterEmail"]), ("echo", "2.0.0", "Production", EMAIL), item)
        self.assertRegex(item["timeRemaining"], r"^(\d+d \d+h|\d+h \d+m|\d+m)$", item)
        self.assertIn(item["timeRemaining"], ("23h 59m", "1d 0h"), "default timeout is 24 h")
        requested = harness.parse_time(item["requestedAt"])
        self.assertAlmostEqual((harness.parse_time(item["timeoutAt"]) - requested).total_seconds(),
                               86400, delta=2)
        a = self.approval(eid)
        self.assertEqual(a["status"], "Pending", a)
        self.assertIsNone(a["respondedBy"], a)

        self.assertProblem(self.rollback(eid), 400)   # not finished: cancel it instead
        self.assertProblem(self.decide(eid, "approve", user="deployer"), 403)
        self.assertProblem(self.decide(eid, "approve", user="viewer"), 403)
        self.assertProblem(self.decide(eid, "reject", user="viewer"), 403)
        self.assertEqual(self.approval(eid)["status"], "Pending")

        decided = self.approve_ok(eid, approverEmail="someone-else@example.com", reason="ship it")
        self.assertEqual(decided["responseReason"], "ship it", decided)
        harness.parse_time(decided["respondedAt"])
        self.assertProblem(self.decide(eid, "approve"), 409)
        self.assertNotIn(eid, self.pending())

        # While it runs, the canary takes half of the traffic.
        seen = []

        def half():
            d = self.get_deployment(eid)
            if d["status"] in TERMINAL:
                return d
            w = self.weights("echo", "Production")
            seen.append(w)
            return w == {"1.0.0": 50, "2.0.0": 50}
        harness.wait_until(half, DEPLOY_DEADLINE, "the 50 % canary step")
        self.assertIn({"1.0.0": 50, "2.0.0": 50}, seen, "the 50 % step was never observed")

        d = self.assertEnded(eid, "Succeeded")
        stages = self.stages(d)
        self.assertEqual(stages["Approval"]["status"], "Succeeded", stages)
        self.assertIn("admin", stages["Approval"]["message"], stages)
        self.assertTrue(all(s["status"] == "Succeeded" for s in d["stages"]), d["stages"])
        self.wait_weights("echo", "Production", {"2.0.0": 100})
        harness.wait_until(lambda: traffic.good("2.0.0") >= 20, STATE_DEADLINE,
                           "traffic answered by 2.0.0")
        traffic.stop()
        self.assertEqual(traffic.bad_answers(), [], "a client saw a failed invocation")
        self.assertEqual(traffic.exceptions, [])

        events = [e["eventType"] for e in self.audit("approvals", eid)]
        self.assertIn("ApprovalRequested", events)
        self.assertIn("ApprovalGranted", events)

    def test_failing_canary_rolls_back(self):
        """echo 3.0.0 fails half of its calls: the analysis at 50 % fails on errors, the
        deployment restores 1.0.0 at 100 % and ends Failed with the reason."""
        self.start_node()
        self.upload("echo", "1.0.0")
        self.upload("echo", "3.0.0")
        self.stage_baseline("Production", "echo", "1.0.0")
        traffic = self.traffic("echo", "Production")
        eid = self.deploy_pending("echo", "3.0.0", "Production",
                                  canary={"steps": [50, 100], "stepDurationSeconds": 2,
                                          "minSamples": 10})
        self.approve_ok(eid)
        d = self.assertEnded(eid, "Failed")
        message = d["message"] or ""
        self.assertIn("canary analysis", message, d)
        self.assertIn("error rate", message, d)
        self.assertIn("rolled back", message, d)
        stages = self.stages(d)
        self.assertEqual(stages["Deploy to Production"]["status"], "Failed", stages)
        self.assertIn("error rate", stages["Deploy to Production"]["message"], stages)
        self.assertNotEqual(stages["Validation"]["status"], "Succeeded", stages)
        self.wait_weights("echo", "Production", {"1.0.0": 100})
        n = traffic.good("1.0.0")
        harness.wait_until(lambda: traffic.good("1.0.0") >= n + 20, STATE_DEADLINE,
                           "1.0.0 answering after the rollback")
        traffic.stop()
        self.assertGreater(traffic.total(), 0)
        bad_versions = {v for _, v, _ in traffic.bad_answers()}
        self.assertEqual(bad_versions - {"3.0.0"}, set(), "only the canary may fail")
        self.assertProblem(self.rollback(eid), 409)

    def test_slow_canary_rolls_back_on_latency(self):
        """slow 2.0.0 answers 200 ms later than 1.0.0: p95 beyond 100 % more rolls it back."""
        self.start_node(extra_toml="[modules.slow]\nsettings = { latency_ms = 20 }\n")
        self.upload("slow", "1.0.0")
        self.upload("slow", "2.0.0")
        self.stage_baseline("Production", "slow", "1.0.0")
        traffic = self.traffic("slow", "Production", clients=6)
        eid = self.deploy_pending("slow", "2.0.0", "Production",
                                  canary={"steps": [50, 100], "stepDurationSeconds": 2,
                                          "minSamples": 10, "maxLatencyIncreasePercent": 100})
        self.approve_ok(eid)
        d = self.assertEnded(eid, "Failed")
        self.assertIn("p95 latency", d["message"] or "", d)
        self.assertIn("rolled back", d["message"] or "", d)
        self.wait_weights("slow", "Production", {"1.0.0": 100})
        traffic.stop()
        self.assertEqual(traffic.bad_answers(), [], "slow never fails, it is only late")

    def test_cancel_running_canary_restores_baseline(self):
        self.start_node()
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")
        self.stage_baseline("Production", "echo", "1.0.0")
        eid = self.deploy_pending("echo", "2.0.0", "Production",
                                  canary={"steps": [50, 100], "stepDurationSeconds": 60})
        self.approve_ok(eid)
        self.wait_weights("echo", "Production", {"1.0.0": 50, "2.0.0": 50})
        self.assertEqual(self.get_deployment(eid)["status"], "Running")
        self.assertProblem(self.rollback(eid), 400)   # running: cancel, not rollback
        resp = self.cancel(eid)
        self.assertStatus(resp, 202)
        d = self.assertEnded(eid, "Cancelled")
        self.assertIn("deployer", d["message"] or "", d)
        self.wait_weights("echo", "Production", {"1.0.0": 100})
        self.assertAnswers("Production", "1.0.0")
        self.assertProblem(self.cancel(eid), 409)


# --------------------------------------------------------------------------------------------
# Approvals: separation of duties, reject, expiry; Security Scan


class ApprovalTest(DeploymentCase):

    def test_reject_and_separation_of_duties(self):
        self.start_node()
        self.upload("echo", "1.0.0")
        # reject
        eid = self.deploy_pending("echo", "1.0.0", "Production")
        resp = self.decide(eid, "reject", reason="not during the freeze")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["status"], "Rejected", resp.body)
        self.assertEqual(resp.body["respondedBy"], "admin", resp.body)
        self.assertEqual(resp.body["responseReason"], "not during the freeze", resp.body)
        d = self.assertEnded(eid, "Failed")
        stages = self.stages(d)
        self.assertEqual(stages["Approval"]["status"], "Failed", stages)
        self.assertIn("rejected by admin", stages["Approval"]["message"], stages)
        self.assertIn("not during the freeze", stages["Approval"]["message"], stages)
        self.assertIn("admin", d["message"], d)
        for name in ("Security Scan", "Deploy to Production", "Validation"):
            self.assertEqual(stages[name]["status"], "Skipped", stages)
        self.assertEqual(self.approval(eid)["status"], "Rejected")
        self.assertNotIn(eid, self.pending())
        self.assertProblem(self.decide(eid, "approve"), 409)
        self.assertEqual(self.weights("echo", "Production"), {})

        # separation of duties: the Admin who created it may not decide it; another Admin may
        resp = self.n.post("/api/v1/users", {
            "username": "admin2", "password": "Second-admin-123", "email": "admin2@example.com",
            "fullName": "Second Admin", "roles": ["Admin"]}, user="admin")
        self.assertStatus(resp, 201)
        self.n.login("admin2", "Second-admin-123")
        own = self.deploy_pending("echo", "1.0.0", "Production", user="admin")
        body = self.assertProblem(self.decide(own, "approve", user="admin"), 403)
        self.assertIn("eparation of duties", body["detail"], body)
        self.assertProblem(self.decide(own, "reject", user="admin"), 403)
        self.assertEqual(self.approval(own)["status"], "Pending")
        self.approve_ok(own, user="admin2")
        self.assertEnded(own, "Succeeded")
        self.wait_weights("echo", "Production", {"1.0.0": 100})

    def test_approval_expires(self):
        self.start_node(environments={"Production": {"approval_timeout_seconds": 2}})
        self.upload("echo", "1.0.0")
        eid = self.deploy_pending("echo", "1.0.0", "Production")
        item = self.pending().get(eid)
        if item is not None:  # may already be gone on a slow machine
            self.assertIn(item["timeRemaining"], ("0m", "Expired"), item)
            self.assertAlmostEqual((harness.parse_time(item["timeoutAt"])
                                    - harness.parse_time(item["requestedAt"])).total_seconds(),
                                   2, delta=1)
        d = self.assertEnded(eid, "Failed", timeout=STATE_DEADLINE)
        stages = self.stages(d)
        self.assertEqual(stages["Approval"]["status"], "Failed", stages)
        self.assertIn("expired", stages["Approval"]["message"].lower(), stages)
        self.assertIn("expired", (d["message"] or "").lower(), d)
        self.assertEqual(self.approval(eid)["status"], "Expired")
        self.assertNotIn(eid, self.pending())
        self.assertProblem(self.decide(eid, "approve"), 409)
        events = [e["eventType"] for e in self.audit("approvals", eid)]
        self.assertIn("ApprovalExpired", events)

    def test_unsigned_version_fails_security_scan_in_production(self):
        self.start_node()
        self.upload("echo", "1.0.0", signed=False)  # no ?environment: stored unsigned
        eid = self.deploy_pending("echo", "1.0.0", "Production")
        self.approve_ok(eid)
        d = self.assertEnded(eid, "Failed")
        stages = self.stages(d)
        self.assertEqual(stages["Approval"]["status"], "Succeeded", stages)
        self.assertEqual(stages["Security Scan"]["status"], "Failed", stages)
        self.assertIn("unsigned", stages["Security Scan"]["message"], stages)
        self.assertIn("unsigned", d["message"], d)
        self.assertEqual(stages["Deploy to Production"]["status"], "Skipped", stages)
        self.assertEqual(stages["Validation"]["status"], "Skipped", stages)
        self.assertEqual(self.weights("echo", "Production"), {})


# --------------------------------------------------------------------------------------------
# Validation, Idempotency-Key, list


class RequestTest(DeploymentCase):

    def test_validation(self):
        self.start_node()
        self.upload("echo", "1.0.0", signed=False)
        everything_bad = {
            "moduleName": "Bad_Name!", "version": "1.0", "targetEnvironment": "7",
            "requesterEmail": "not-an-email", "description": "x" * 1001,
            "metadata": {f"k{i}": "v" for i in range(51)}, "requireApproval": "yes",
            "strategy": "Sideways",
            "canary": {"steps": "ten", "stepDurationSeconds": "2", "minSamples": -1},
        }
        self.assertValidation(self.n.post(DEPLOYMENTS, everything_bad, user="deployer"),
                              "moduleName", "version", "targetEnvironment", "requesterEmail",
                              "description", "metadata", "requireApproval", "strategy",
                              "canary.steps", "canary.stepDurationSeconds", "canary.minSamples")
        self.assertValidation(self.n.post(DEPLOYMENTS, {}, user="deployer"),
                              "moduleName", "version", "targetEnvironment", "requesterEmail")
        self.assertProblem(self.n.post(DEPLOYMENTS, raw="{not json", user="deployer"), 400)
        self.assertProblem(self.n.post(DEPLOYMENTS, [], user="deployer"), 400)
        for env in ("7", "3", "Moon", 7, -1, 1.5, True, ""):
            with self.subTest(targetEnvironment=env):
                self.assertValidation(self.deploy("echo", "1.0.0", env), "targetEnvironment")
        for version in ("1.0", "v1.0.0", "1.0.0-", "01.0.0"):
            with self.subTest(version=version):
                self.assertValidation(self.deploy("echo", version, "Development"), "version")
        # canary bounds alone, then together with another bad field: all reported at once
        bad_canary = {"steps": [30, 10], "stepDurationSeconds": 0,
                      "maxErrorRateIncreasePercent": 0, "minSamples": 0}
        canary_fields = ("canary.steps", "canary.stepDurationSeconds",
                         "canary.maxErrorRateIncreasePercent", "canary.minSamples")
        self.assertValidation(self.deploy("echo", "1.0.0", "Production", canary=bad_canary),
                              *canary_fields)
        self.assertValidation(self.deploy("echo", "1.0.0", "Production", canary=bad_canary,
                                          requesterEmail="nope"),
                              "requesterEmail", *canary_fields)
        listed = self.n.get(DEPLOYMENTS, user="viewer")
        self.assertEqual(listed.body, [], "an invalid request created a deployment")

        # unknown module versions: 404, pre-release included (accepted, not stored)
        for module, version in (("echo", "9.9.9"), ("nothing", "1.0.0"), ("echo", "2.0.0-rc.1"),
                                ("echo", "1.0.0-alpha.1")):
            with self.subTest(module=module, version=version):
                self.assertProblem(self.deploy(module, version, "Development"), 404)
        self.assertProblem(self.deploy("echo", "1.0.0", "Development", user="viewer"), 403)
        self.assertProblem(self.n.post(DEPLOYMENTS, {"moduleName": "echo"}), 401)
        self.assertEqual(self.n.get(DEPLOYMENTS, user="viewer").body, [])

        # environments by name (any case) or JSON number; strategies likewise
        eid = self.deploy_ok("echo", "1.0.0", 3)
        self.assertEqual(self.get_deployment(eid)["targetEnvironment"], "Production")
        self.assertEqual(self.get_deployment(eid)["strategy"], "Canary")
        eid = self.deploy_ok("echo", "1.0.0", "production", strategy="blue-green")
        d = self.get_deployment(eid)
        self.assertEqual((d["targetEnvironment"], d["strategy"]), ("Production", "BlueGreen"))
        eid = self.deploy_ok("echo", "1.0.0", 0, strategy=1,
                             metadata={"ticket": "CHG-1"}, description="from the tests")
        d = self.assertEnded(eid, "Succeeded")
        self.assertEqual((d["targetEnvironment"], d["strategy"]), ("Development", "Rolling"))
        self.assertEqual(d["metadata"], {"ticket": "CHG-1"})
        self.assertEqual(d["description"], "from the tests")
        self.assertProblem(self.n.get(f"{DEPLOYMENTS}/no-such-id", user="viewer"), 404)

    def test_idempotency_key(self):
        self.start_node()
        self.upload("echo", "1.0.0", signed=False)
        key = {"Idempotency-Key": harness.unique("idem-")}
        first = self.deploy("echo", "1.0.0", "Development", headers=key)
        self.assertStatus(first, 202)
        again = self.deploy("echo", "1.0.0", "Development", headers=key)
        self.assertStatus(again, 202)
        eid = first.body["executionId"]
        self.assertEqual(again.body["executionId"], eid)
        self.assertEqual(again.headers.get("location"), first.headers.get("location"))
        self.assertEnded(eid, "Succeeded")
        late = self.deploy("echo", "1.0.0", "Development", headers=key)
        self.assertStatus(late, 202)
        self.assertEqual(late.body["executionId"], eid, "a retry after the end")
        listed = self.n.get(f"{DEPLOYMENTS}?module=echo", user="viewer")
        self.assertStatus(listed, 200)
        self.assertEqual([x["executionId"] for x in listed.body], [eid], listed.body)
        # another key, or the same key of another user, is another deployment
        other = self.deploy_ok("echo", "1.0.0", "Development",
                               headers={"Idempotency-Key": harness.unique("idem-")})
        admins = self.deploy_ok("echo", "1.0.0", "Development", user="admin", headers=key)
        self.assertEqual(len({eid, other, admins}), 3)
        self.assertProblem(self.deploy("echo", "1.0.0", "Development",
                                       headers={"Idempotency-Key": "k" * 201}), 400)
        for x in (other, admins):
            self.assertEnded(x, "Succeeded")
        listed = self.n.get(f"{DEPLOYMENTS}?module=echo", user="viewer")
        self.assertEqual(len(listed.body), 3, listed.body)

    def test_list_filters_and_pagination(self):
        self.start_node()
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")
        self.upload("slow", "1.0.0")
        ids = {}
        ids["a"] = self.deploy_ok("echo", "1.0.0", "Development")
        self.assertEnded(ids["a"], "Succeeded")
        ids["b"] = self.deploy_ok("slow", "1.0.0", "Development")
        self.assertEnded(ids["b"], "Succeeded")
        ids["c"] = self.deploy_ok("echo", "1.0.0", "QA")
        self.assertEnded(ids["c"], "Succeeded")
        ids["d"] = self.deploy_pending("echo", "1.0.0", "Production")
        ids["e"] = self.deploy_ok("echo", "2.0.0", "Development")
        self.assertEnded(ids["e"], "Succeeded")
        newest_first = [ids[k] for k in "edcba"]

        def listing(query, user="viewer"):
            resp = self.n.get(f"{DEPLOYMENTS}?{query}", user=user)
            self.assertStatus(resp, 200, query)
            return resp

        resp = listing("")
        self.assertEqual([x["executionId"] for x in resp.body], newest_first)
        self.assertNotIn("x-next-cursor", resp.headers)
        for item in resp.body:
            self.assertEqual(set(item), {"executionId", "moduleName", "version",
                                         "targetEnvironment", "status", "startTime", "duration"},
                             item)
        by_id = {x["executionId"]: x for x in resp.body}
        self.assertEqual(by_id[ids["d"]]["status"], "PendingApproval")
        self.assertEqual(by_id[ids["b"]]["moduleName"], "slow")

        def listed(query):
            return [x["executionId"] for x in listing(query).body]

        self.assertEqual(listed("status=Succeeded"), [ids[k] for k in "ecba"])
        self.assertEqual(listed("status=pendingapproval"), [ids["d"]])
        self.assertEqual(listed("status=Failed"), [])
        self.assertEqual(listed("environment=Development"), [ids[k] for k in "eba"])
        self.assertEqual(listed("environment=1"), [ids["c"]])
        self.assertEqual(listed("environment=production"), [ids["d"]])
        self.assertEqual(listed("module=slow"), [ids["b"]])
        self.assertEqual(listed("module=echo&environment=Development&status=Succeeded"),
                         [ids["e"], ids["a"]])

        # pagination: limit + X-Next-Cursor until no cursor comes back
        pages, cursor = [], None
        for _ in range(10):
            resp = listing("limit=2" + (f"&cursor={cursor}" if cursor else ""))
            pages.append([x["executionId"] for x in resp.body])
            cursor = resp.headers.get("x-next-cursor")
            if cursor:
                self.assertIn('rel="next"', resp.headers.get("link", ""), resp.headers)
            else:
                break
        self.assertEqual(pages, [newest_first[0:2], newest_first[2:4], newest_first[4:5]])
        pages, cursor = [], None
        for _ in range(10):
            resp = listing("module=echo&limit=2" + (f"&cursor={cursor}" if cursor else ""))
            pages.append([x["executionId"] for x in resp.body])
            cursor = resp.headers.get("x-next-cursor")
            if not cursor:
                break
        self.assertEqual(pages, [[ids["e"], ids["d"]], [ids["c"], ids["a"]]])

        for bad in ("status=Bogus", "environment=Moon", "limit=0", "limit=abc", "limit=501",
                    "cursor=-1", "cursor=x"):
            with self.subTest(query=bad):
                self.assertProblem(self.n.get(f"{DEPLOYMENTS}?{bad}", user="viewer"), 400)


# --------------------------------------------------------------------------------------------
# Crash and resume; audit


class ResumeTest(DeploymentCase):

    def test_canary_resumes_after_kill(self):
        self.start_node(environments={"Production": {"inconclusive": "extend"}})
        self.upload("echo", "1.0.0")
        self.upload("echo", "2.0.0")
        self.stage_baseline("Production", "echo", "1.0.0")
        traffic = self.traffic("echo", "Production")
        eid = self.deploy_pending("echo", "2.0.0", "Production",
                                  canary={"steps": [10, 30, 50, 100], "stepDurationSeconds": 2,
                                          "minSamples": 10})
        self.approve_ok(eid)
        # plan: stage, 10 %, analyze, 30 %, analyze, 50 %, analyze, switch, verify, retire
        before = self.wait_deployment(eid, lambda d: d["status"] in TERMINAL
                                      or d["stepsCompleted"] >= 4,
                                      "to reach its second analysis step")
        self.assertEqual(before["status"], "Running", before)
        self.assertEqual(before["stepsTotal"], 10, before)
        self.assertLess(before["stepsCompleted"], 7, "too late for a crash in the middle")

        self.n.kill()
        self.n.start()
        after = self.get_deployment(eid)
        self.assertNotIn(after["status"], ("Failed", "RolledBack", "Cancelled"), after)
        self.assertGreaterEqual(after["stepsCompleted"], before["stepsCompleted"], after)
        d = self.assertEnded(eid, "Succeeded")
        self.assertTrue(all(s["status"] == "Succeeded" for s in d["stages"]), d["stages"])
        self.wait_weights("echo", "Production", {"2.0.0": 100})
        n = traffic.good("2.0.0")
        harness.wait_until(lambda: traffic.good("2.0.0") >= n + 20, STATE_DEADLINE,
                           "2.0.0 answering after the resumed deployment")
        traffic.stop()
        self.assertEqual(traffic.bad_answers(), [], "a client saw a failed invocation")

    def test_pending_approval_survives_restart(self):
        self.start_node()
        self.upload("echo", "1.0.0")
        eid = self.deploy_pending("echo", "1.0.0", "Production")
        before = self.approval(eid)
        self.n.kill()
        self.n.start()
        after = self.approval(eid)
        self.assertEqual(after["status"], "Pending", after)
        self.assertEqual(after["timeoutAt"], before["timeoutAt"])
        self.assertEqual(after["approvalId"], before["approvalId"])
        self.assertIn(eid, self.pending())
        d = self.get_deployment(eid)
        self.assertEqual(d["status"], "PendingApproval", d)
        self.assertEqual(d["stages"][0]["status"], "WaitingForApproval", d)
        self.approve_ok(eid)
        self.assertEnded(eid, "Succeeded")
        self.wait_weights("echo", "Production", {"1.0.0": 100})
        self.assertAnswers("Production", "1.0.0")


class AuditTest(DeploymentCase):

    def test_deployment_audit_trail(self):
        self.start_node()
        self.upload("echo", "1.0.0", signed=False)
        resp = self.deploy("echo", "1.0.0", "Development")
        self.assertStatus(resp, 202)
        eid = resp.body["executionId"]
        d = self.assertEnded(eid, "Succeeded")
        self.assertProblem(self.n.get(f"/api/v1/auditlogs/deployments/{eid}", user="deployer"), 403)
        events = self.audit("deployments", eid)
        types = [e["eventType"] for e in events]
        # newest first
        self.assertEqual(types[0], "DeploymentSucceeded", types)
        self.assertEqual(types[-1], "DeploymentCreated", types)
        for expected in ("DeploymentStarted", "SecurityScanPassed", "DeploymentPlanned",
                         "DeploymentStepStarted", "DeploymentStepDone", "DeploymentDeployed"):
            self.assertIn(expected, types)
        stamps = [harness.parse_time(e["timestamp"]) for e in events]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        created = events[-1]
        self.assertEqual(created["username"], "deployer", created)
        self.assertEqual(created["eventCategory"], "Deployment", created)
        self.assertEqual(created["entityId"], eid, created)
        self.assertEqual(created["traceId"], d["traceId"], created)
        self.assertTrue(all(e["entityId"] == eid for e in events), events)
        self.assertEqual(events[0]["result"], "Success", events[0])
        metrics = self.n.get("/metrics")
        self.assertStatus(metrics, 200)
        self.assertRegex(metrics.body, r"(?m)^hotswap_deployments_started_total(\{[^}]*\})? [1-9]")
        self.assertRegex(metrics.body, r"(?m)^hotswap_deployments_completed_total(\{[^}]*\})? [1-9]")


if __name__ == "__main__":
    unittest.main()
