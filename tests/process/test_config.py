"""Configuration: --check-config, error format `FILE: KEY.PATH: reason`, unknown keys,
environment overrides, and a node that refuses to start on a bad config."""

import os
import subprocess
import tempfile
import unittest

import harness
from harness import NodeTestCase

CHECK_DEADLINE = 30


class CheckConfigTest(NodeTestCase):
    def setUp(self):
        self.binary = harness.hotswapd_binary()
        self.tmp = tempfile.TemporaryDirectory(prefix="hstest-config-")
        self.addCleanup(self.tmp.cleanup)

    def write(self, text, name="node.toml"):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def base_toml(self, **extra_tables):
        """A valid minimal config of the harness's kind, merged with `extra_tables`."""
        data = os.path.join(self.tmp.name, "data")
        cfg = {"node": {"id": "cfg-test", "data_dir": data, "dev_mode": True},
               "http": {"listen": f"127.0.0.1:{harness.free_port()}"},
               "store": {"url": f"sqlite://{data}/hotswap.db"},
               "cluster": {"listen": f"127.0.0.1:{harness.free_port()}"}}
        harness.deep_merge(cfg, extra_tables)
        return harness.render_toml(cfg)

    def check(self, path, env=None):
        proc = subprocess.run([self.binary, "--check-config", "--config", path],
                              capture_output=True, text=True, timeout=CHECK_DEADLINE,
                              env=harness.child_environment(env), cwd=self.tmp.name)
        return proc.returncode, proc.stdout, proc.stderr

    def assertRejected(self, path, key, env=None, also=()):
        """Exit 2 and a stderr line `PATH: KEY: reason` (KEY or one of `also`)."""
        rc, out, err = self.check(path, env)
        self.assertEqual(rc, 2, f"stdout: {out}\nstderr: {err}")
        prefixes = [f"{path}: {k}: " for k in (key,) + tuple(also)]
        lines = [(line, p) for line in err.splitlines() for p in prefixes if line.startswith(p)]
        self.assertTrue(lines, f"no stderr line starting with {prefixes[0]!r}:\n{err}")
        line, prefix = lines[0]
        self.assertTrue(line[len(prefix):].strip(), f"no reason given: {line!r}")
        self.assertNotIn("config ok", out)
        return err

    # -- accepted -----------------------------------------------------------------------------

    def test_example_config_is_valid(self):
        example = os.path.join(harness.source_dir(), "config", "hotswap.example.toml")
        self.assertTrue(os.path.isfile(example), f"{example} is missing")
        # The example declares a signed topic; its key comes from the environment.
        rc, out, err = self.check(example, {"HOTSWAP_PAYMENTS_HMAC_KEY": "example-key"})
        self.assertEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn("config ok", out)
        # Without that variable the check names the key.
        self.assertRejected(example, 'messages.topics."payments.events".hmac_key_env')

    def test_harness_config_is_valid(self):
        path = self.write(self.base_toml(rate_limits={"login": 1000, "global": 100000,
                                                      "trusted_proxies": ["127.0.0.1"]}))
        rc, out, err = self.check(path)
        self.assertEqual(rc, 0, f"stdout: {out}\nstderr: {err}")
        self.assertIn("config ok", out)

    def test_check_config_does_not_start_a_node(self):
        port = harness.free_port()
        path = self.write(self.base_toml(http={"listen": f"127.0.0.1:{port}"}))
        rc, out, _ = self.check(path)
        self.assertEqual(rc, 0)
        self.assertNotIn("listening on", out)
        self.assertFalse(harness.port_accepts(port))

    # -- rejected -----------------------------------------------------------------------------

    def test_unknown_key_is_an_error(self):
        path = self.write(self.base_toml(http={"bogus": 1}))
        self.assertRejected(path, "http.bogus")

    def test_unknown_table_and_nested_key_are_errors(self):
        path = self.write(self.base_toml(bogus={"x": 1}))
        self.assertRejected(path, "bogus", also=("bogus.x",))
        path = self.write(self.base_toml(environments={"Production": {"bogus": True}}), "nested.toml")
        self.assertRejected(path, "environments.Production.bogus")

    def test_bad_values_name_their_key(self):
        cases = [
            ("http.max_body_bytes", {"http": {"max_body_bytes": "big"}}),
            ("http.listen", {"http": {"listen": "not-an-address"}}),
            ("node.dev_mode", {"node": {"dev_mode": "yes"}}),
            ("auth.pbkdf2_iterations", {"auth": {"pbkdf2_iterations": 1000}}),
            ("rate_limits.global", {"rate_limits": {"global": -1}}),
            ("store.url", {"store": {"url": "mysql://x"}}),
            ("environments.Production.strategy", {"environments": {"Production": {"strategy": "Yolo"}}}),
            ("environments.QA.approval", {"environments": {"QA": {"approval": "sometimes"}}}),
            ("logging.level", {"logging": {"level": "loud"}}),
        ]
        for i, (key, tables) in enumerate(cases):
            with self.subTest(key=key):
                path = self.write(self.base_toml(**tables), f"bad{i}.toml")
                self.assertRejected(path, key)

    def test_every_error_is_reported(self):
        path = self.write(self.base_toml(http={"bogus": 1, "max_body_bytes": "big"},
                                         logging={"level": "loud"}))
        err = self.assertRejected(path, "http.bogus")
        for key in ("http.max_body_bytes", "logging.level"):
            self.assertIn(f"{path}: {key}: ", err)

    def test_syntax_error_and_missing_file_exit_2(self):
        path = self.write("[http\nlisten = ", "broken.toml")
        rc, out, err = self.check(path)
        self.assertEqual(rc, 2, err)
        self.assertIn(path, err)
        missing = os.path.join(self.tmp.name, "nope.toml")
        rc, out, err = self.check(missing)
        self.assertEqual(rc, 2, err)
        self.assertIn(missing, err)

    def test_environment_override_is_validated_and_named(self):
        path = self.write(self.base_toml())
        rc, out, err = self.check(path, env={"HOTSWAP_HTTP_LISTEN": "bad"})
        self.assertEqual(rc, 2, f"stdout: {out}\nstderr: {err}")
        self.assertIn("HOTSWAP_HTTP_LISTEN", err)
        rc, out, err = self.check(path, env={"HOTSWAP_HTTP_LISTEN": "127.0.0.1:1234"})
        self.assertEqual(rc, 0, err)


class ConfigNodeTest(NodeTestCase):
    def test_node_with_a_bad_config_exits_2_without_listening(self):
        n = self.node(start=False, config={"http": {"bogus": 1}})
        n.spawn()
        accepted = []

        def exited():
            if harness.port_accepts(n.port, timeout=0.2):
                accepted.append(True)
            return n.proc.poll() is not None

        harness.wait_until(exited, harness.STOP_DEADLINE, "hotswapd to exit on a bad config")
        self.assertEqual(n.proc.returncode, 2, n.logs())
        self.assertEqual(accepted, [], "the node listened despite a bad config")
        self.assertIn(f"{n.config_path}: http.bogus: ", n.read_stderr())
        self.assertNotIn("listening on", n.read_stdout())

    def test_environment_override_wins_over_the_file(self):
        port = harness.free_port()
        n = self.node(start=False, env={"HOTSWAP_HTTP_LISTEN": f"127.0.0.1:{port}"})
        file_port = n.port
        n.port = port
        n.start()
        self.assertStatus(n.get("/health"), 200)
        self.assertFalse(harness.port_accepts(file_port))
        harness.wait_until(lambda: f"listening on http://127.0.0.1:{port}" in n.read_stdout(), 10,
                           "the listening line with the overridden port")
        n.stop()

    def test_node_starts_with_a_config_that_check_config_accepts(self):
        n = self.node(start=False)
        proc = subprocess.run([n.binary, "--check-config", "--config", n.config_path],
                              capture_output=True, text=True, timeout=CHECK_DEADLINE,
                              env=harness.child_environment(), cwd=n.dir)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        n.start()
        self.assertStatus(n.get("/ready"), 200)
        n.stop()


if __name__ == "__main__":
    unittest.main()
