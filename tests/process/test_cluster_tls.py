"""Cluster TLS (docs/cluster-tls.md): nodes whose CAF link runs over caf::openssl with mutual
authentication against a cluster CA.

Two nodes A (Development) and B (Production) with certificates of the cluster CA share one
PostgreSQL database and one Redis (a key prefix of their own): a tenant created on A is read and
changed through B, which forwards the commands to A over TLS. A third node C, whose certificate
comes from a foreign CA, joins the same store and Redis: its forward to A is refused at the TLS
handshake and answers 503 problem+json, and every node keeps running. A node with a missing
certificate file, a key of another certificate, or only two of the three keys refuses to start
with the config-error exit code and names the key.

Needs HOTSWAP_TEST_PG_URL and HOTSWAP_TEST_REDIS_URL (scripts/services.sh sets both) and the
openssl CLI (certificates are made per run in a temporary directory).
"""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest
import uuid

import harness
from harness import NodeTestCase

CONFIG_ERROR = 2
FAST = harness.FAST_CLUSTER
FORWARD_DEADLINE = 30.0
ROLES = ["api", "control", "worker"]


redis_url = harness.redis_url
metric = harness.metric


# --------------------------------------------------------------------------------------------
# Certificates (openssl CLI, as in docs/cluster-tls.md)


def openssl(*args, cwd):
    proc = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL,
                          env=harness.child_environment())
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_ca(directory, name):
    """A self-signed CA; returns the path of its certificate (the key is <name>.key)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=directory)
    return os.path.join(directory, f"{name}.pem")


def make_node_cert(directory, ca, name):
    """A node certificate signed by CA `ca` (SAN IP:127.0.0.1); returns (cert, key) paths."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    with open(os.path.join(directory, f"{name}.ext"), "w", encoding="utf-8") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=directory)
    return os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")


class TlsCase(NodeTestCase):
    """Makes the cluster CA with certificates for A and B, and a foreign CA with one for C."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.certs = tempfile.mkdtemp(prefix="hstest-clustertls-")
        cls.addClassCleanup(shutil.rmtree, cls.certs, True)
        cls.ca = make_ca(cls.certs, "cluster-ca")
        cls.foreign_ca = make_ca(cls.certs, "foreign-ca")
        cls.pki = {
            "A": make_node_cert(cls.certs, "cluster-ca", "node-a") + (cls.ca,),
            "B": make_node_cert(cls.certs, "cluster-ca", "node-b") + (cls.ca,),
            # C trusts its own CA, so its config is valid; A and B do not trust it.
            "C": make_node_cert(cls.certs, "foreign-ca", "node-c") + (cls.foreign_ca,),
        }

    @classmethod
    def tls(cls, name):
        cert, key, ca = cls.pki[name]
        return {"tls_cert": cert, "tls_key": key, "tls_ca": ca}


class ClusterTlsTest(TlsCase):

    def cluster_node(self, name, environments, prefix, first=None):
        cfg = {
            "node": {"environments": environments, "roles": ROLES},
            "cluster": dict(FAST, registry=redis_url(), key_prefix=prefix, **self.tls(name)),
        }
        if first is None:
            return self.node(start=False, config=cfg, pg=True)
        return self.node(start=False, config=cfg, store_url=first.store_url)

    def handshake(self, node, cert=None):
        """A TLS client to `node`'s cluster port (verifying it against the cluster CA), with
        `cert` = (cert, key) or none; returns the first bytes the node sends after the
        handshake (CAF's BASP server handshake), b"" when it closed, or raises ssl.SSLError."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        if cert:
            ctx.load_cert_chain(*cert)
        with socket.create_connection(("127.0.0.1", node.cluster_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                self.assertEqual(tls.version(), "TLSv1.3")
                self.assertEqual(dict(x[0] for x in tls.getpeercert()["subject"])["commonName"],
                                 "node-a")
                return tls.recv(1)

    def test_forwarding_over_tls_and_a_foreign_certificate_is_refused(self):
        prefix = f"t{uuid.uuid4().hex[:10]}:"
        a = self.cluster_node("A", ["Development"], prefix)
        b = self.cluster_node("B", ["Production"], prefix, first=a)
        for node in (a, b):
            node.spawn()
        for node in (a, b):
            node.wait_healthy()

        # A's cluster port speaks TLS 1.3 with the cluster CA's certificate and wants one back.
        self.assertTrue(self.handshake(a, cert=self.pki["B"][:2]),
                        "no CAF handshake after TLS with a cluster certificate")
        try:
            refused = self.handshake(a) == b""
        except (ssl.SSLError, ConnectionResetError):
            refused = True
        self.assertTrue(refused, "A accepted a TLS client without a certificate")

        # A tenant created on A is read and changed through B (its actor lives on A).
        resp = a.post("/api/v1/tenants",
                      {"name": "Acme", "subdomain": harness.unique("acme-"),
                       "tier": "Professional", "contactEmail": "ops@acme.example"},
                      user="admin")
        self.assertStatus(resp, 201)
        tid = resp.body["tenantId"]
        got = harness.wait_until(
            lambda: (lambda r: r if r.status == 200 else None)(
                b.get(f"/api/v1/tenants/{tid}", user="admin")),
            FORWARD_DEADLINE, "B to read A's tenant over the TLS link")
        self.assertEqual(got.body["name"], "Acme")
        resp = b.put(f"/api/v1/tenants/{tid}", {"name": "Acme TLS"}, user="admin")
        self.assertStatus(resp, 200, "update through B")
        self.assertEqual(resp.body["name"], "Acme TLS")
        for node in (a, b):
            got = node.get(f"/api/v1/tenants/{tid}", user="admin")
            self.assertStatus(got, 200)
            self.assertEqual(got.body["name"], "Acme TLS")
        self.assertGreater(metric(b, "hotswap_forwarded_requests_total"), 0,
                           "B answered without forwarding to A")

        # C (certificate of a foreign CA) joins the same store and Redis: its forwards to A are
        # refused at the TLS handshake and answer 503; nobody crashes.
        c = self.cluster_node("C", ["Production"], prefix, first=a)
        c.start()
        for attempt in (1, 2):
            resp = c.get(f"/api/v1/tenants/{tid}", user="admin")
            body = self.assertProblem(resp, 503)
            self.assertNotIn("Acme", str(body), f"attempt {attempt} leaked the tenant")
        self.assertTrue(c.running(), c.logs())
        self.assertStatus(c.get("/health"), 200)
        # The cluster itself is unaffected: A and B still serve and forward.
        for node in (a, b):
            self.assertTrue(node.running(), node.logs())
            self.assertStatus(node.get("/health"), 200)
        self.assertStatus(b.get(f"/api/v1/tenants/{tid}", user="admin"), 200)
        for node in (c, b, a):
            node.stop()


class ClusterTlsConfigTest(TlsCase):

    def assertConfigError(self, cluster, key, reason):
        """A node with `cluster` settings exits with the config-error code without listening,
        and its stderr has `CONFIG: KEY: ...reason...`."""
        n = self.node(start=False, config={"cluster": cluster})
        n.spawn()
        accepted = []

        def exited():
            if harness.port_accepts(n.cluster_port, timeout=0.2):
                accepted.append(True)
            return n.proc.poll() is not None

        harness.wait_until(exited, harness.STOP_DEADLINE, f"hotswapd to exit on a bad {key}")
        self.assertEqual(n.proc.returncode, CONFIG_ERROR, n.logs())
        self.assertEqual(accepted, [], "the node opened its cluster port despite a bad config")
        lines = [line for line in n.read_stderr().splitlines()
                 if line.startswith(f"{n.config_path}: {key}: ")]
        self.assertTrue(lines, f"stderr does not name {key}:\n{n.logs()}")
        self.assertIn(reason, lines[0])

    def test_missing_certificate_file(self):
        missing = os.path.join(self.certs, "gone.pem")
        self.assertConfigError(dict(self.tls("A"), tls_cert=missing), "cluster.tls_cert",
                               "No such file or directory")

    def test_key_of_another_certificate(self):
        self.assertConfigError(dict(self.tls("A"), tls_key=self.pki["B"][1]), "cluster.tls_key",
                               "does not match cluster.tls_cert")

    def test_only_two_of_the_three_keys(self):
        cluster = self.tls("A")
        del cluster["tls_ca"]
        self.assertConfigError(cluster, "cluster.tls_ca", "must be set when")

    def test_certificate_of_another_ca(self):
        self.assertConfigError(dict(self.tls("C"), tls_ca=self.ca), "cluster.tls_cert",
                               "not signed by cluster.tls_ca")


if __name__ == "__main__":
    unittest.main()
