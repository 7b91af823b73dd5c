"""Modules: signed and unsigned uploads, upload refusals, worker commands (stage, weights, retire,
epoch fencing), weighted invocation, module errors, the clusters API and the module audit trail.

Needs the example modules (env HOTSWAP_MODULES_DIR, the build's examples/modules directory with
echo-1.0.0.so, echo-2.0.0.so, flaky-1.0.0.so, slow-1.0.0.so) and the openssl CLI (keys and
signatures are made with it in setUpModule, as a module author would).
"""

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.parse

import harness
from harness import NodeTestCase

MODULES = "/api/v1/modules"
CLUSTERS = "/api/v1/clusters"
ENVIRONMENTS = ("Development", "QA", "Staging", "Production")
RECORD_KEYS = {"name", "version", "digest", "size", "signed", "signerKeyId", "uploadedBy",
               "uploadedAt"}
CAF_CORE = "/usr/lib/x86_64-linux-gnu/libcaf_core.so.0.17.6"

KEYS = {}  # filled by setUpModule: rsa / ec / untrusted -> {"private", "public", "id"}
_key_dir = None


# --------------------------------------------------------------------------------------------
# Local helpers (modules dir, openssl, uploads)


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


def module_path(name, version):
    path = os.path.join(modules_dir(), f"{name}-{version}.so")
    if not os.path.isfile(path):
        raise AssertionError(f"example module {path} is missing: build the example_modules target")
    return path


def module_bytes(name, version):
    with open(module_path(name, version), "rb") as f:
        return f.read()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def openssl(*args, data=None):
    try:
        proc = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60,
                              env=harness.child_environment())
    except FileNotFoundError:
        raise AssertionError("the openssl CLI is needed by this test (apt-get install openssl)")
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def make_key(directory, name, algorithm):
    private = os.path.join(directory, f"{name}.pem")
    public = os.path.join(directory, f"{name}.pub.pem")
    if algorithm == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", private)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", private)
    openssl("pkey", "-in", private, "-pubout", "-out", public)
    der = openssl("pkey", "-pubin", "-in", public, "-outform", "DER")
    # The key id the node reports: first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo.
    return {"private": private, "public": public, "id": hashlib.sha256(der).hexdigest()[:16]}


def sign(data, key):
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
    _key_dir = tempfile.mkdtemp(prefix="hstest-keys-")
    KEYS["rsa"] = make_key(_key_dir, "rsa", "rsa")
    KEYS["ec"] = make_key(_key_dir, "ec", "ec")
    KEYS["untrusted"] = make_key(_key_dir, "untrusted", "rsa")


def tearDownModule():
    if _key_dir:
        shutil.rmtree(_key_dir, ignore_errors=True)


def node_config(**over):
    cfg = {
        "auth": {"trusted_module_keys": [KEYS["rsa"]["public"], KEYS["ec"]["public"]]},
        # several handler actors per version: flaky counts its calls across them, so the error
        # share is exact over every 100 calls of the version
        "worker": {"sample_interval_ms": 200, "instances_per_version": 3},
        "rate_limits": {"enabled": False},
    }
    return harness.deep_merge(cfg, over)


FLAKY_TOML = "[modules.flaky]\nsettings = { error_percent = 30 }\n"


class ModuleCase(NodeTestCase):
    """Helpers shared by the module tests; `self.n` is the node of the current test."""

    def start_node(self, config=None, extra_toml=FLAKY_TOML):
        self.n = self.node(config=node_config(**(config or {})), extra_toml=extra_toml)
        return self.n

    def upload(self, name, version, data=None, signature=None, key=None, user="admin",
               environment=None, headers=None):
        if data is None:
            data = module_bytes(name, version)
        hdrs = {"Content-Type": "application/octet-stream", "X-Module-Name": name,
                "X-Module-Version": version}
        if key is not None:
            signature = sign(data, key)
        if signature is not None:
            hdrs["X-Module-Signature"] = signature
        hdrs.update(headers or {})
        path = MODULES
        if environment is not None:
            path += "?environment=" + urllib.parse.quote(environment)
        return self.n.request("POST", path, raw=data, user=user, headers=hdrs)

    def versions(self, name, user="admin"):
        return self.n.get(f"{MODULES}/{name}/versions", user=user)

    def stage(self, env, name, version, body=None, user="admin"):
        return self.n.post(f"{CLUSTERS}/{env}/modules/{name}/versions/{version}/stage", body,
                           user=user)

    def set_weights(self, env, name, weights, user="admin", **extra):
        body = {"weights": weights}
        body.update(extra)
        return self.n.put(f"{CLUSTERS}/{env}/modules/{name}/weights", body, user=user)

    def retire(self, env, name, version, body=None, user="admin"):
        return self.n.post(f"{CLUSTERS}/{env}/modules/{name}/versions/{version}/retire", body,
                           user=user)

    def invoke(self, name, payload, env="Development", user="viewer"):
        return self.n.request("POST", f"{MODULES}/{name}/invoke?environment={env}", raw=payload,
                              user=user, headers={"Content-Type": "text/plain"})

    def cluster(self, env="Development"):
        resp = self.n.get(f"{CLUSTERS}/{env}", user="viewer")
        self.assertStatus(resp, 200)
        return resp.body

    def node_view(self, env="Development"):
        nodes = [n for n in self.cluster(env)["nodes"] if n["nodeId"] == self.n.node_id]
        self.assertEqual(len(nodes), 1, f"this node in the {env} cluster view")
        return nodes[0]

    def loaded_weights(self, name, env="Development"):
        """{version: weight} of module `name` in this node's worker for `env` ({} when none)."""
        for m in self.node_view(env)["modules"]:
            if m["name"] == name:
                return {v["version"]: v["weight"] for v in m["versions"]}
        return {}

    def upload_ok(self, name, version, status=201, **kw):
        resp = self.upload(name, version, **kw)
        self.assertStatus(resp, status, f"upload of {name} {version}")
        return resp.body

    def stage_ok(self, env, name, version, body=None):
        resp = self.stage(env, name, version, body)
        self.assertStatus(resp, 200, f"stage of {name} {version} in {env}")
        return resp.body

    def assertRecord(self, rec, name, version, data, signed, key_id, user):
        self.assertTrue(RECORD_KEYS <= set(rec), f"record lacks {RECORD_KEYS - set(rec)}: {rec}")
        self.assertEqual(rec["name"], name)
        self.assertEqual(rec["version"], version)
        self.assertEqual(rec["digest"], sha256_digest(data))
        self.assertEqual(rec["size"], len(data))
        self.assertIs(rec["signed"], signed)
        self.assertEqual(rec["signerKeyId"], key_id)
        self.assertEqual(rec["uploadedBy"], user)
        self.assertTimeClose(rec["uploadedAt"], harness.utcnow(), 120)

    def assertNothingStored(self, name):
        self.assertProblem(self.versions(name), 404)
        listed = self.n.get(MODULES, user="admin")
        self.assertStatus(listed, 200)
        self.assertNotIn(name, [m["name"] for m in listed.body], listed.body)


# --------------------------------------------------------------------------------------------
# Uploads


class UploadTest(ModuleCase):

    def test_signed_uploads_rsa_and_ecdsa_are_listed(self):
        self.start_node()
        one, two = module_bytes("echo", "1.0.0"), module_bytes("echo", "2.0.0")
        resp = self.upload("echo", "1.0.0", key="rsa")
        self.assertStatus(resp, 201)
        self.assertSecurityHeaders(resp)
        self.assertRecord(resp.body, "echo", "1.0.0", one, True, KEYS["rsa"]["id"], "admin")
        location = urllib.parse.urlsplit(resp.headers.get("location", "")).path
        self.assertEqual(location, f"{MODULES}/echo/versions", resp.headers)
        rec2 = self.upload_ok("echo", "2.0.0", key="ec")
        self.assertRecord(rec2, "echo", "2.0.0", two, True, KEYS["ec"]["id"], "admin")

        listed = self.n.get(MODULES, user="viewer")
        self.assertStatus(listed, 200)
        echo = [m for m in listed.body if m["name"] == "echo"]
        self.assertEqual(len(echo), 1, listed.body)
        self.assertEqual(echo[0]["latestVersion"], "2.0.0")
        self.assertEqual(sorted(echo[0]["versions"]), ["1.0.0", "2.0.0"])

        versions = self.versions("echo", user="viewer")
        self.assertStatus(versions, 200)
        by_version = {r["version"]: r for r in versions.body}
        self.assertEqual(set(by_version), {"1.0.0", "2.0.0"}, versions.body)
        self.assertRecord(by_version["1.0.0"], "echo", "1.0.0", one, True, KEYS["rsa"]["id"], "admin")
        self.assertRecord(by_version["2.0.0"], "echo", "2.0.0", two, True, KEYS["ec"]["id"], "admin")

        # identical re-upload: 200, same record
        again = self.upload("echo", "1.0.0", key="rsa")
        self.assertStatus(again, 200)
        self.assertEqual(again.body["digest"], sha256_digest(one))
        self.assertEqual(again.body["uploadedAt"], resp.body["uploadedAt"])

        # same version, other bytes (a valid echo 1.0.0 file with trailing bytes): 409
        other = one + b"\0" * 64
        for kw in ({}, {"key": "rsa"}):
            with self.subTest(signed=bool(kw)):
                self.assertProblem(self.upload("echo", "1.0.0", data=other, **kw), 409)
        after = self.versions("echo")
        self.assertStatus(after, 200)
        self.assertEqual(after.body, versions.body, "a refused upload changed the versions")

    def test_refused_uploads_store_nothing(self):
        self.start_node()
        one, two = module_bytes("echo", "1.0.0"), module_bytes("echo", "2.0.0")
        with open(CAF_CORE, "rb") as f:
            caf_core = f.read()
        cases = [
            ("signature of other bytes", "echo", "1.0.0", one, {"signature": sign(two, "rsa")}),
            ("signature of other bytes (EC)", "echo", "1.0.0", one, {"signature": sign(two, "ec")}),
            ("untrusted key", "echo", "1.0.0", one, {"key": "untrusted"}),
            ("signature not base64", "echo", "1.0.0", one, {"signature": "!!not*base64!!"}),
            ("truncated signature", "echo", "1.0.0", one, {"signature": sign(one, "rsa")[:40]}),
            ("version differs from the file", "echo", "2.0.0", one, {}),
            ("name differs from the file", "echo-copy", "1.0.0", one, {}),
            ("random bytes", "junk", "1.0.0", os.urandom(4096), {}),
            ("ELF header only", "junk", "1.0.0", one[:64], {}),
            ("a shared library that is no module", "caf-core", "0.17.6", caf_core, {}),
            ("unsigned for Production", "echo", "1.0.0", one, {"environment": "Production"}),
            ("unsigned for Staging", "echo", "1.0.0", one, {"environment": "Staging"}),
            ("unknown environment", "echo", "1.0.0", one, {"environment": "Moon"}),
            ("bad module name", "Echo", "1.0.0", one, {}),
            ("bad version", "echo", "1.0", one, {}),
        ]
        for what, name, version, data, kw in cases:
            with self.subTest(what):
                resp = self.upload(name, version, data=data, **kw)
                body = self.assertProblem(resp, 400)
                self.assertTrue(body["detail"], body)
        for name in ("echo", "echo-copy", "junk", "caf-core"):
            with self.subTest(stored=name):
                self.assertNothingStored(name)
        listed = self.n.get(MODULES, user="admin")
        self.assertEqual(listed.body, [], "a refused upload left a module behind")
        # a correctly signed upload for Production is accepted afterwards
        rec = self.upload_ok("echo", "1.0.0", key="ec", environment="Production")
        self.assertTrue(rec["signed"])

    def test_unsigned_upload_is_refused_where_signatures_are_required(self):
        self.start_node()
        slow = module_bytes("slow", "1.0.0")
        self.assertProblem(self.upload("slow", "1.0.0", environment="Production"), 400)
        self.assertNothingStored("slow")
        rec = self.upload_ok("slow", "1.0.0")
        self.assertRecord(rec, "slow", "1.0.0", slow, False, None, "admin")
        rec = self.upload_ok("flaky", "1.0.0", environment="Development")
        self.assertFalse(rec["signed"])
        self.assertIsNone(rec["signerKeyId"])

        # the worker refuses an unsigned module where signatures are required
        for env in ("Production", "Staging"):
            with self.subTest(env=env):
                body = self.assertProblem(self.stage(env, "slow", "1.0.0"), 403)
                self.assertIn("unsigned", body["detail"].lower(), body)
                self.assertEqual(self.loaded_weights("slow", env), {})
                self.assertProblem(self.invoke("slow", "x", env=env), 404)
        view = self.stage_ok("Development", "slow", "1.0.0")
        self.assertEqual(view["version"], "1.0.0")
        self.assertIs(view["signed"], False)
        self.assertEqual(view["weight"], 100, view)
        resp = self.invoke("slow", "hello")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.headers.get("x-module-version"), "1.0.0")
        self.assertEqual(resp.body, "slow: hello")

    def test_too_large_upload_is_413_and_stores_nothing(self):
        self.start_node(config={"http": {"max_module_bytes": 100000}})
        data = module_bytes("echo", "1.0.0")
        self.assertGreater(len(data), 100000)
        token = self.n.token("admin")
        head = (f"POST {MODULES} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
                f"X-Module-Name: echo\r\nX-Module-Version: 1.0.0\r\n"
                f"Content-Length: {len(data)}")
        resp = harness.raw_exchange(self.n.port, head, data)
        self.assertProblem(resp, 413)
        # chunked, without a Content-Length
        head = (f"POST {MODULES} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
                f"X-Module-Name: echo\r\nX-Module-Version: 1.0.0\r\nTransfer-Encoding: chunked")
        body = b"".join(b"%x\r\n" % len(data[i:i + 65536]) + data[i:i + 65536] + b"\r\n"
                        for i in range(0, len(data), 65536)) + b"0\r\n\r\n"
        self.assertProblem(harness.raw_exchange(self.n.port, head, body), 413)
        self.assertNothingStored("echo")

    def test_viewer_cannot_upload_deployer_can(self):
        self.start_node()
        self.assertProblem(self.upload("echo", "1.0.0", user="viewer"), 403)
        self.assertNothingStored("echo")
        rec = self.upload_ok("echo", "1.0.0", key="rsa", user="deployer")
        self.assertEqual(rec["uploadedBy"], "deployer")
        # listing is for any role; worker commands are the Admin's
        self.assertStatus(self.n.get(MODULES, user="viewer"), 200)
        self.assertProblem(self.stage("Development", "echo", "1.0.0", user="deployer"), 403)
        self.assertProblem(self.stage("Development", "echo", "1.0.0", user="viewer"), 403)
        self.assertEqual(self.loaded_weights("echo"), {})


# --------------------------------------------------------------------------------------------
# Worker commands and invocation


class WorkerTest(ModuleCase):

    def setUp(self):
        self.start_node()
        self.upload_ok("echo", "1.0.0", key="rsa")
        self.upload_ok("echo", "2.0.0", key="ec")

    def test_weighted_split_is_exact(self):
        v1 = self.stage_ok("Development", "echo", "1.0.0")
        self.assertEqual(v1["weight"], 100, "the first version takes all traffic")
        v2 = self.stage_ok("Development", "echo", "2.0.0")
        self.assertEqual(v2["weight"], 0, "a later version starts without traffic")
        resp = self.set_weights("Development", "echo", {"1.0.0": 30, "2.0.0": 70})
        self.assertStatus(resp, 200)
        self.assertEqual({v["version"]: v["weight"] for v in resp.body["versions"]},
                         {"1.0.0": 30, "2.0.0": 70})
        self.assertEqual(self.loaded_weights("echo"), {"1.0.0": 30, "2.0.0": 70})

        counts = {"1.0.0": 0, "2.0.0": 0}
        for i in range(100):
            payload = f"call-{i}"
            resp = self.invoke("echo", payload)
            self.assertStatus(resp, 200, f"invocation {i}")
            version = resp.headers.get("x-module-version")
            self.assertIn(version, counts, resp.headers)
            self.assertEqual(resp.body, f"echo {version}: {payload}")
            counts[version] += 1
        self.assertEqual(counts, {"1.0.0": 30, "2.0.0": 70})

        view = {v["version"]: v for m in self.node_view()["modules"] if m["name"] == "echo"
                for v in m["versions"]}
        self.assertEqual(view["1.0.0"]["invocations"], 30, view)
        self.assertEqual(view["2.0.0"]["invocations"], 70, view)
        self.assertEqual(view["1.0.0"]["errors"], 0)
        self.assertEqual(view["2.0.0"]["digest"], sha256_digest(module_bytes("echo", "2.0.0")))

        # weights for a version that is not loaded change nothing
        self.assertProblem(self.set_weights("Development", "echo", {"3.0.0": 100}), 409)
        self.assertEqual(self.loaded_weights("echo"), {"1.0.0": 30, "2.0.0": 70})
        # another environment's worker has nothing loaded
        self.assertProblem(self.invoke("echo", "x", env="QA"), 404)

    def test_stale_epoch_is_refused_and_changes_nothing(self):
        self.stage_ok("Development", "echo", "1.0.0", {"owner": "d-42", "epoch": 5, "weight": 100})
        self.stage_ok("Development", "echo", "2.0.0", {"owner": "d-42", "epoch": 5, "weight": 0})
        before = self.loaded_weights("echo")
        self.assertEqual(before, {"1.0.0": 100, "2.0.0": 0})

        resp = self.set_weights("Development", "echo", {"1.0.0": 0, "2.0.0": 100},
                                owner="d-42", epoch=3)
        self.assertProblem(resp, 409)
        self.assertEqual(self.loaded_weights("echo"), before, "a stale epoch changed the weights")

        self.assertProblem(self.retire("Development", "echo", "1.0.0", {"owner": "d-42", "epoch": 4}),
                           409)
        self.assertEqual(self.loaded_weights("echo"), before, "a stale retire retired a version")
        self.assertEqual(self.node_view()["loadedLibraries"], 2)
        resp = self.invoke("echo", "still")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body, "echo 1.0.0: still")

        self.assertProblem(self.stage("Development", "echo", "2.0.0", {"owner": "d-42", "epoch": 1}),
                           409)
        # the current epoch (and a newer one) is accepted; another owner has its own epochs
        resp = self.set_weights("Development", "echo", {"1.0.0": 50, "2.0.0": 50},
                                owner="d-42", epoch=5)
        self.assertStatus(resp, 200)
        self.assertEqual(self.loaded_weights("echo"), {"1.0.0": 50, "2.0.0": 50})
        resp = self.set_weights("Development", "echo", {"1.0.0": 40, "2.0.0": 60},
                                owner="d-7", epoch=1)
        self.assertStatus(resp, 200)
        self.assertEqual(self.loaded_weights("echo"), {"1.0.0": 40, "2.0.0": 60})
        resp = self.retire("Development", "echo", "1.0.0", {"owner": "d-42", "epoch": 6})
        self.assertStatus(resp, 200)
        self.assertEqual(resp.body["state"], "Retired")
        self.assertEqual(self.loaded_weights("echo"), {"2.0.0": 60})
        self.assertEqual(self.node_view()["loadedLibraries"], 1)
        self.assertProblem(self.set_weights("Development", "echo", {"2.0.0": 100},
                                            owner="d-42", epoch=5), 409)
        self.assertEqual(self.loaded_weights("echo"), {"2.0.0": 60})

    def test_module_errors_are_502_and_counted(self):
        self.upload_ok("flaky", "1.0.0")
        self.stage_ok("Development", "flaky", "1.0.0")
        ok = failed = 0
        for i in range(100):
            resp = self.invoke("flaky", f"p{i}")
            self.assertEqual(resp.headers.get("x-module-version"), "1.0.0", resp)
            if resp.status == 502:
                body = self.assertProblem(resp, 502)
                self.assertIn("simulated failure", body["detail"], body)
                failed += 1
            else:
                self.assertStatus(resp, 200)
                self.assertEqual(resp.body, f"flaky ok: p{i}")
                ok += 1
        self.assertEqual((failed, ok), (30, 70), "error_percent = 30 over 100 calls")
        flaky = [m for m in self.node_view()["modules"] if m["name"] == "flaky"]
        self.assertEqual(len(flaky), 1)
        version = flaky[0]["versions"][0]
        self.assertEqual(version["invocations"], 100, version)
        self.assertEqual(version["errors"], 30, version)
        self.assertGreater(self.cluster()["metrics"]["errorRate"], 0)


class TenantModulesTest(ModuleCase):

    def test_tenant_users_reach_platform_modules_and_their_own_only(self):
        self.start_node()
        tenants = {}
        for key in ("a", "b"):
            resp = self.n.post("/api/v1/tenants", {
                "name": f"Tenant {key}", "subdomain": harness.unique(f"mod-{key}-"),
                "tier": "Starter", "contactEmail": "ops@example.com"}, user="admin")
            self.assertStatus(resp, 201)
            tid = resp.body["tenantId"]
            name = harness.unique(f"dep{key}")
            resp = self.n.post("/api/v1/users", {
                "username": name, "password": "Tenant-pass-123", "email": f"{name}@example.com",
                "fullName": f"Deployer {key}", "roles": ["Deployer"], "tenantId": tid},
                user="admin")
            self.assertStatus(resp, 201)
            self.n.login(name, "Tenant-pass-123")
            tenants[key] = name
        # Tenant a uploads echo 2.0.0; the platform uploads slow 1.0.0.
        self.upload_ok("echo", "2.0.0", key="ec", user=tenants["a"])
        self.upload_ok("slow", "1.0.0", key="rsa")
        self.stage_ok("Development", "echo", "2.0.0")
        self.stage_ok("Development", "slow", "1.0.0")
        self.assertStatus(self.invoke("echo", "x", user=tenants["a"]), 200)
        self.assertStatus(self.invoke("echo", "x", user="viewer"), 200)  # platform user
        other = self.invoke("echo", "x", user=tenants["b"])
        self.assertProblem(other, 404)
        self.assertNotIn("2.0.0", other.headers.get("x-module-version", ""))
        self.assertStatus(self.invoke("slow", "x", user=tenants["b"]), 200)  # platform module
        # Listings follow the same rule.
        names_b = {m["name"] for m in self.n.get(MODULES, user=tenants["b"]).body}
        self.assertNotIn("echo", names_b)
        self.assertIn("slow", names_b)
        self.assertProblem(self.versions("echo", user=tenants["b"]), 404)
        self.assertStatus(self.versions("echo", user=tenants["a"]), 200)


# --------------------------------------------------------------------------------------------
# Clusters API and audit


class ClustersTest(ModuleCase):

    def test_clusters_overview_detail_and_metrics(self):
        self.start_node()
        resp = self.n.get(CLUSTERS, user="viewer")
        self.assertStatus(resp, 200)
        by_env = {c["environment"]: c for c in resp.body}
        self.assertEqual(set(by_env), set(ENVIRONMENTS), resp.body)
        for env in ENVIRONMENTS:
            self.assertEqual(by_env[env]["totalNodes"], 1, by_env[env])
            self.assertEqual(by_env[env]["healthyNodes"], 1, by_env[env])
            self.assertIs(by_env[env]["isHealthy"], True, by_env[env])

        self.upload_ok("echo", "1.0.0", key="rsa")
        self.upload_ok("echo", "2.0.0", key="ec")
        self.stage_ok("Development", "echo", "1.0.0")
        self.stage_ok("Development", "echo", "2.0.0")
        self.assertStatus(self.set_weights("Development", "echo", {"1.0.0": 25, "2.0.0": 75}), 200)

        detail = self.cluster()
        self.assertEqual(detail["environment"], "Development")
        self.assertEqual((detail["totalNodes"], detail["healthyNodes"], detail["unhealthyNodes"]),
                         (1, 1, 0), detail)
        for key in ("avgCpuUsage", "avgMemoryUsage", "avgLatency", "errorRate", "requestsPerSecond"):
            self.assertIn(key, detail["metrics"], detail)
        node = self.node_view()
        self.assertEqual(node["status"], "Healthy")
        self.assertTrue(node["hostname"])
        self.assertEqual(node["loadedLibraries"], 2)
        self.assertTimeClose(node["lastHeartbeat"], harness.utcnow(), 10)
        echo = [m for m in node["modules"] if m["name"] == "echo"]
        self.assertEqual(len(echo), 1, node)
        versions = {v["version"]: v for v in echo[0]["versions"]}
        self.assertEqual({k: v["weight"] for k, v in versions.items()}, {"1.0.0": 25, "2.0.0": 75})
        for v in versions.values():
            for key in ("invocations", "errors", "p50Ms", "p95Ms", "p99Ms", "digest", "signed"):
                self.assertIn(key, v, v)
            self.assertIs(v["signed"], True)

        first = node["lastHeartbeat"]
        harness.wait_until(lambda: self.node_view()["lastHeartbeat"] != first, 15,
                           "lastHeartbeat to advance")
        self.assertGreater(harness.parse_time(self.node_view()["lastHeartbeat"]),
                           harness.parse_time(first))

        for i in range(40):
            self.assertStatus(self.invoke("echo", f"m{i}"), 200)
        versions = {v["version"]: v for m in self.node_view()["modules"] if m["name"] == "echo"
                    for v in m["versions"]}
        self.assertEqual(versions["1.0.0"]["invocations"] + versions["2.0.0"]["invocations"], 40)
        self.assertEqual(versions["1.0.0"]["invocations"], 10)
        self.assertGreater(self.cluster()["metrics"]["requestsPerSecond"], 0)

        def metrics():
            resp = self.n.get(f"{CLUSTERS}/Development/metrics?interval=1s", user="viewer")
            self.assertStatus(resp, 200)
            points = resp.body["dataPoints"]
            busy = [p for p in points if p.get("requestsPerSecond", 0) > 0]
            return resp.body if len(points) >= 2 and busy else None

        body = harness.wait_until(metrics, 20, "two metrics data points with traffic")
        self.assertEqual(body["environment"], "Development")
        for p in body["dataPoints"]:
            harness.parse_time(p["timestamp"])
            for key in ("cpuUsage", "memoryUsage", "latency", "errorRate"):
                self.assertIn(key, p, p)
                self.assertGreaterEqual(p[key], 0, p)
        stamps = [harness.parse_time(p["timestamp"]) for p in body["dataPoints"]]
        self.assertEqual(stamps, sorted(stamps))

        self.assertProblem(self.n.get(f"{CLUSTERS}/Moon", user="viewer"), 404)
        self.assertProblem(self.n.get(f"{CLUSTERS}/Moon/metrics", user="viewer"), 404)
        for bad in ("abc", "0s", "-5s", "10x", "1.5m"):
            with self.subTest(interval=bad):
                self.assertProblem(
                    self.n.get(f"{CLUSTERS}/Development/metrics?interval={bad}", user="viewer"), 400)
        self.assertProblem(
            self.n.get(f"{CLUSTERS}/Development/metrics?from=yesterday", user="viewer"), 400)

    def test_module_events_are_audited(self):
        self.start_node()
        self.upload_ok("echo", "1.0.0", key="rsa")
        self.upload_ok("echo", "2.0.0")
        self.stage_ok("Development", "echo", "1.0.0")
        self.stage_ok("Development", "echo", "2.0.0")
        self.assertStatus(self.set_weights("Development", "echo", {"2.0.0": 100}), 200)
        self.assertStatus(self.retire("Development", "echo", "1.0.0"), 200)
        self.assertProblem(self.n.get("/api/v1/auditlogs/category/Module", user="deployer"), 403)

        def rows():
            out = []
            for page in range(1, 20):
                resp = self.n.get(f"/api/v1/auditlogs/category/Module?pageNumber={page}&pageSize=100",
                                  user="admin")
                self.assertStatus(resp, 200)
                if not resp.body:
                    break
                out.extend(resp.body)
            return out

        def complete():
            found = rows()
            types = [r["eventType"] for r in found]
            want = {"ModuleUploaded": 2, "ModuleStaged": 2, "ModuleWeightsSet": 1,
                    "ModuleRetired": 1}
            return found if all(types.count(k) >= n for k, n in want.items()) else None

        # worker events are written asynchronously after the answer
        found = harness.wait_until(complete, 10, "the module audit events")
        for row in found:
            self.assertEqual(row["eventCategory"], "Module")
            self.assertTrue(row["traceId"], row)
            self.assertEqual(row["username"], "admin", row)
        uploads = [r for r in found if r["eventType"] == "ModuleUploaded"]
        self.assertEqual(len(uploads), 2, uploads)
        retired = [r for r in found if r["eventType"] == "ModuleRetired"]
        self.assertEqual(len(retired), 1, retired)


if __name__ == "__main__":
    unittest.main()
