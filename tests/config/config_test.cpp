#define CAF_SUITE config
#include "caf/test/dsl.hpp"

#include "hotswap/config/config.hpp"

// Boost.JSON compiled into this test (header-only mode): module settings are
// checked to be valid JSON with the parser the node itself uses.
#include <boost/json/src.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace hotswap::config;

namespace {

using env_list = std::vector<std::string>;

struct fixture {
  std::string dir;

  fixture() {
    char tmpl[] = "/tmp/hotswap-config-test-XXXXXX";
    char* d = ::mkdtemp(tmpl);
    CAF_REQUIRE(d != nullptr);
    dir = d;
  }

  ~fixture() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  /// Writes `content` to `name` in the temp dir and returns the path.
  std::string write(const std::string& name, const std::string& content) {
    auto path = dir + "/" + name;
    std::ofstream out(path);
    out << content;
    return path;
  }

  load_result load_text(const std::string& content, const env_list& env = {}) {
    return load(write("node.toml", content), env);
  }

  static std::string dump(const load_result& r) {
    std::string out;
    for (const auto& e : r.errors)
      out += "\n  " + e.to_string();
    return out;
  }

  /// True when some error has this key and a reason containing `reason`.
  static bool has(const load_result& r, const std::string& key, const std::string& reason = "") {
    return std::any_of(r.errors.begin(), r.errors.end(), [&](const config_error& e) {
      return e.key == key && e.reason.find(reason) != std::string::npos;
    });
  }

  /// Loads `content` and checks that it fails with exactly one error on `key`.
  void expect_error(const std::string& content, const std::string& key,
                    const std::string& reason = "") {
    auto r = load_text(content);
    CAF_CHECK(!r.config);
    if (!has(r, key, reason) || r.errors.size() != 1)
      CAF_FAIL("expected one error on " << key << " containing '" << reason << "', got:"
                                         << dump(r));
  }

  /// Loads `content` and checks that it has no error.
  node_config expect_ok(const std::string& content, const env_list& env = {}) {
    auto r = load_text(content, env);
    if (!r.config || !r.errors.empty())
      CAF_FAIL("expected no errors, got:" << dump(r));
    return *r.config;
  }
};

/// Parses `text` as strict JSON; fails the test when it is not valid JSON.
boost::json::value json_of(const std::string& text) {
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec)
    CAF_FAIL("not valid JSON (" << ec.message() << "): " << text);
  return v;
}

/// `text` without line breaks (the JSON formatter breaks lines between members;
/// a line break inside a JSON string is always escaped as \n).
std::string unbroken(std::string text) {
  text.erase(std::remove(text.begin(), text.end(), '\n'), text.end());
  return text;
}

void check_env_defaults(const environment_section& e, const std::string& strategy,
                        const std::string& approval, bool sod, bool signed_) {
  CAF_CHECK_EQUAL(e.strategy, strategy);
  CAF_CHECK_EQUAL(e.approval, approval);
  CAF_CHECK_EQUAL(e.separation_of_duties, sod);
  CAF_CHECK_EQUAL(e.require_signed_modules, signed_);
  CAF_CHECK_EQUAL(e.approval_timeout_seconds, 86400u);
  CAF_CHECK_EQUAL(e.rolling_batch_size, 2u);
  CAF_CHECK(e.canary_steps == (std::vector<uint32_t>{10, 30, 50, 100}));
  CAF_CHECK_EQUAL(e.min_samples, 50u);
  CAF_CHECK_EQUAL(e.inconclusive, "fail");
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(config_tests, fixture)

// -- defaults -----------------------------------------------------------------

CAF_TEST(the environment names are the four canonical names in legacy order) {
  CAF_CHECK(environment_names()
            == (std::vector<std::string>{"Development", "QA", "Staging", "Production"}));
}

CAF_TEST(the defaults describe a development node) {
  auto cfg = default_config();
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  CAF_CHECK_EQUAL(cfg.node.id, std::string(host));
  CAF_CHECK(cfg.node.roles == (std::vector<std::string>{"api", "control", "worker"}));
  CAF_CHECK(cfg.node.environments == environment_names());
  CAF_CHECK_EQUAL(cfg.node.dev_mode, true);
  CAF_CHECK_EQUAL(cfg.store.url, "sqlite://./data/hotswap.db");
  CAF_CHECK_EQUAL(cfg.http.listen, "127.0.0.1:8080");
  CAF_CHECK_EQUAL(cfg.cluster.registry, "local");
  CAF_CHECK_EQUAL(cfg.environments.size(), 4u);
  CAF_CHECK_EQUAL(cfg.source, "");
}

CAF_TEST(the environment defaults follow the api contract) {
  check_env_defaults(default_environment("Development"), "Direct", "never", false, false);
  check_env_defaults(default_environment("QA"), "Rolling", "never", false, false);
  check_env_defaults(default_environment("Staging"), "BlueGreen", "on_request", false, true);
  check_env_defaults(default_environment("Production"), "Canary", "always", true, true);
  auto cfg = default_config();
  check_env_defaults(cfg.environments.at("Production"), "Canary", "always", true, true);
  check_env_defaults(cfg.environments.at("Development"), "Direct", "never", false, false);
}

CAF_TEST(no file and no overrides gives the defaults) {
  auto r = load("", {});
  CAF_REQUIRE(r.config);
  CAF_CHECK(r.errors.empty());
  auto def = default_config();
  CAF_CHECK_EQUAL(r.config->node.id, def.node.id);
  CAF_CHECK_EQUAL(r.config->http.listen, def.http.listen);
  CAF_CHECK_EQUAL(r.config->environments.at("Staging").strategy, "BlueGreen");
}

CAF_TEST(an empty file gives the defaults) {
  auto cfg = expect_ok("");
  CAF_CHECK_EQUAL(cfg.http.max_body_bytes, 1048576u);
  CAF_CHECK_EQUAL(cfg.environments.at("QA").strategy, "Rolling");
}

// -- shipped files ------------------------------------------------------------

CAF_TEST(the example file loads with zero errors and documents the defaults) {
  // The example declares a signed topic: its key variable must be set.
  auto r = load(HOTSWAP_SOURCE_DIR "/config/hotswap.example.toml",
                {"HOTSWAP_PAYMENTS_HMAC_KEY=example-key"});
  if (!r.config)
    CAF_FAIL("example file has errors:" << dump(r));
  CAF_CHECK(r.errors.empty());
  const auto& cfg = *r.config;
  auto def = default_config();
  CAF_CHECK_EQUAL(cfg.node.id, "node-1");
  CAF_CHECK(cfg.node.roles == def.node.roles);
  CAF_CHECK(cfg.node.environments == def.node.environments);
  CAF_CHECK_EQUAL(cfg.node.data_dir, def.node.data_dir);
  CAF_CHECK_EQUAL(cfg.http.listen, def.http.listen);
  CAF_CHECK_EQUAL(cfg.http.max_body_bytes, def.http.max_body_bytes);
  CAF_CHECK_EQUAL(cfg.http.max_module_bytes, def.http.max_module_bytes);
  CAF_CHECK_EQUAL(cfg.http.io_threads, def.http.io_threads);
  CAF_CHECK_EQUAL(cfg.http.drain_timeout_ms, def.http.drain_timeout_ms);
  CAF_CHECK_EQUAL(cfg.http.request_timeout_ms, def.http.request_timeout_ms);
  CAF_CHECK_EQUAL(cfg.store.url, def.store.url);
  CAF_CHECK_EQUAL(cfg.store.pool_size, def.store.pool_size);
  CAF_CHECK_EQUAL(cfg.cluster.listen, def.cluster.listen);
  CAF_CHECK_EQUAL(cfg.cluster.heartbeat_ms, def.cluster.heartbeat_ms);
  CAF_CHECK_EQUAL(cfg.cluster.node_ttl_ms, def.cluster.node_ttl_ms);
  CAF_CHECK_EQUAL(cfg.cluster.key_prefix, def.cluster.key_prefix);
  CAF_CHECK_EQUAL(cfg.auth.issuer, def.auth.issuer);
  CAF_CHECK_EQUAL(cfg.auth.audience, def.auth.audience);
  CAF_CHECK_EQUAL(cfg.auth.token_minutes, def.auth.token_minutes);
  CAF_CHECK_EQUAL(cfg.auth.pbkdf2_iterations, def.auth.pbkdf2_iterations);
  CAF_CHECK_EQUAL(cfg.auth.lockout_attempts, def.auth.lockout_attempts);
  CAF_CHECK_EQUAL(cfg.auth.initial_admin_email, def.auth.initial_admin_email);
  for (const auto& name : environment_names()) {
    const auto& a = cfg.environments.at(name);
    const auto& b = def.environments.at(name);
    CAF_CHECK_EQUAL(a.strategy, b.strategy);
    CAF_CHECK_EQUAL(a.approval, b.approval);
    CAF_CHECK_EQUAL(a.separation_of_duties, b.separation_of_duties);
    CAF_CHECK_EQUAL(a.require_signed_modules, b.require_signed_modules);
    CAF_CHECK(a.canary_steps == b.canary_steps);
    CAF_CHECK_EQUAL(a.step_seconds, b.step_seconds);
    CAF_CHECK_EQUAL(a.max_latency_increase_percent, b.max_latency_increase_percent);
  }
  CAF_CHECK_EQUAL(cfg.deployments.queue_limit, def.deployments.queue_limit);
  CAF_CHECK_EQUAL(cfg.rate_limits.global, def.rate_limits.global);
  CAF_CHECK_EQUAL(cfg.rate_limits.login, def.rate_limits.login);
  CAF_CHECK_EQUAL(cfg.events.retention_seconds, def.events.retention_seconds);
  CAF_CHECK_EQUAL(cfg.messages.max_attempts, def.messages.max_attempts);
  CAF_REQUIRE_EQUAL(cfg.messages.topics.count("payments.events"), 1u);
  CAF_CHECK_EQUAL(cfg.messages.topics.at("payments.events").hmac_key_env,
                  "HOTSWAP_PAYMENTS_HMAC_KEY");
  CAF_CHECK_EQUAL(cfg.entities.restart_intensity, def.entities.restart_intensity);
  CAF_CHECK_EQUAL(cfg.worker.instances_per_version, def.worker.instances_per_version);
  CAF_CHECK_EQUAL(cfg.worker.drain_timeout_ms, def.worker.drain_timeout_ms);
  CAF_CHECK_EQUAL(cfg.worker.metrics_window_seconds, def.worker.metrics_window_seconds);
  CAF_CHECK_EQUAL(cfg.worker.sample_interval_ms, def.worker.sample_interval_ms);
  CAF_CHECK_EQUAL(cfg.worker.sample_retention, def.worker.sample_retention);
  CAF_REQUIRE_EQUAL(cfg.modules.size(), 2u);
  CAF_CHECK_EQUAL(unbroken(cfg.modules.at("flaky").settings_json), R"({"error_percent":30})");
  CAF_CHECK_EQUAL(json_of(cfg.modules.at("slow").settings_json),
                  json_of(R"({"latency_ms": 50})"));
  CAF_CHECK_EQUAL(cfg.logging.level, def.logging.level);
  CAF_CHECK_EQUAL(cfg.source, HOTSWAP_SOURCE_DIR "/config/hotswap.example.toml");
}

CAF_TEST(the dev file loads with zero errors and equals the defaults) {
  auto r = load(HOTSWAP_SOURCE_DIR "/config/dev.toml", {});
  if (!r.config)
    CAF_FAIL("dev.toml has errors:" << dump(r));
  auto def = default_config();
  CAF_CHECK_EQUAL(r.config->node.id, def.node.id);
  CAF_CHECK(r.config->node.roles == def.node.roles);
  CAF_CHECK_EQUAL(r.config->node.dev_mode, true);
  CAF_CHECK_EQUAL(r.config->store.url, def.store.url);
  CAF_CHECK_EQUAL(r.config->http.listen, def.http.listen);
}

// -- file errors --------------------------------------------------------------

CAF_TEST(a missing file is an error naming the file) {
  auto path = dir + "/nope.toml";
  auto r = load(path, {});
  CAF_CHECK(!r.config);
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].file, path);
  CAF_CHECK_EQUAL(r.errors[0].reason, "cannot open: No such file or directory");
  CAF_CHECK_EQUAL(r.errors[0].to_string(), path + ": cannot open: No such file or directory");
}

CAF_TEST(a parse error names the line and column) {
  auto r = load_text("[node]\ndev_mode = true\nroles = [\"api\"\n");
  CAF_CHECK(!r.config);
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].file, dir + "/node.toml");
  CAF_CHECK(r.errors[0].reason.find("parse error at 3:") == 0);
  CAF_MESSAGE("parse error: " << r.errors[0].to_string());
}

CAF_TEST(an unknown key is an error naming its path) {
  auto r = load_text("[http]\nmax_bdy_bytes = 2048\n");
  CAF_CHECK(!r.config);
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].to_string(), dir + "/node.toml: http.max_bdy_bytes: unknown key");
}

CAF_TEST(an unknown section is an error) {
  expect_error("[htttp]\nlisten = \"127.0.0.1:1\"\n", "htttp", "unknown section");
  expect_error("[workers]\ninstances_per_version = 2\n", "workers",
               "unknown section (expected one of node, http, store, cluster, auth, environments, "
               "deployments, rate_limits, events, messages, entities, worker, modules, logging)");
}

CAF_TEST(a section that is not a table is an error) {
  expect_error("http = 5\n", "http", "expected a table, got integer");
}

CAF_TEST(a wrong type is an error naming the expected and the actual type) {
  expect_error("[http]\nmax_body_bytes = \"big\"\n", "http.max_body_bytes",
               "expected an integer, got string");
  expect_error("[node]\ndev_mode = \"yes\"\n", "node.dev_mode", "expected a boolean");
  expect_error("[http]\nlisten = 8080\n", "http.listen", "expected a string, got integer");
  expect_error("[node]\nroles = \"api\"\n", "node.roles",
               "expected an array of strings, got string");
  expect_error("[node]\nroles = [\"api\", 3]\n", "node.roles[1]", "expected a string, got integer");
  expect_error("[http]\nio_threads = 2.5\n", "http.io_threads", "expected an integer, got float");
}

CAF_TEST(every error is collected and not just the first) {
  auto r = load_text(R"(
[node]
roles = []
colour = "blue"
[http]
max_body_bytes = "x"
io_threads = 0
[logging]
level = "verbose"
)");
  CAF_CHECK(!r.config);
  CAF_CHECK_EQUAL(r.errors.size(), 5u);
  CAF_CHECK(has(r, "node.roles", "must not be empty"));
  CAF_CHECK(has(r, "node.colour", "unknown key"));
  CAF_CHECK(has(r, "http.max_body_bytes", "expected an integer"));
  CAF_CHECK(has(r, "http.io_threads", "between 1 and 64"));
  CAF_CHECK(has(r, "logging.level", "must be one of"));
  for (const auto& e : r.errors)
    CAF_CHECK_EQUAL(e.file, dir + "/node.toml");
}

CAF_TEST(integers reject negatives and values out of the field range) {
  expect_error("[http]\nmax_body_bytes = -1\n", "http.max_body_bytes", "must not be negative");
  expect_error("[deployments]\nqueue_limit = 4294967296\n", "deployments.queue_limit",
               "out of range");
  auto cfg = expect_ok("[deployments]\nqueue_limit = 4294967295\n");
  CAF_CHECK_EQUAL(cfg.deployments.queue_limit, 4294967295u);
  cfg = expect_ok("[http]\nmax_module_bytes = 4294967296\n");
  CAF_CHECK_EQUAL(cfg.http.max_module_bytes, 4294967296u);
}

// -- node ---------------------------------------------------------------------

CAF_TEST(roles must be known and non-empty and distinct) {
  expect_error("[node]\nroles = [\"api\", \"admin\"]\n", "node.roles[1]", "\"admin\"");
  expect_error("[node]\nroles = []\n", "node.roles", "must not be empty");
  expect_error("[node]\nroles = [\"api\", \"api\"]\n", "node.roles", "more than once");
  auto cfg = expect_ok("[node]\nroles = [\"api\"]\n");
  CAF_CHECK(cfg.node.roles == std::vector<std::string>{"api"});
}

CAF_TEST(node environments must be canonical names) {
  expect_error("[node]\nenvironments = [\"production\"]\n", "node.environments[0]",
               "must be one of");
  expect_error("[node]\nenvironments = [\"QA\", \"QA\"]\n", "node.environments",
               "more than once");
  expect_error("[node]\nenvironments = []\n", "node.environments", "\"worker\" role");
  auto cfg = expect_ok("[node]\nroles = [\"api\"]\nenvironments = []\n");
  CAF_CHECK(cfg.node.environments.empty());
}

CAF_TEST(an explicit node id replaces the host name and must not be empty) {
  CAF_CHECK_EQUAL(expect_ok("[node]\nid = \"n-7\"\n").node.id, "n-7");
  expect_error("[node]\nid = \"\"\n", "node.id", "must not be empty");
  expect_error("[node]\nid = \"a b\"\n", "node.id", "white space");
}

// -- http and cluster ---------------------------------------------------------

CAF_TEST(listen addresses need a host and a port from 0 to 65535) {
  for (auto ok : {"0.0.0.0:0", "127.0.0.1:65535", "[::1]:80", "localhost:8080",
                  "node-1.example.com:443"}) {
    auto cfg = expect_ok(std::string("[http]\nlisten = \"") + ok + "\"\n");
    CAF_CHECK_EQUAL(cfg.http.listen, ok);
  }
  for (auto bad : {"8080", "127.0.0.1:65536", "127.0.0.1:", "127.0.0.1:http", ":8080",
                   "256.1.1.1:80", "::1:80", "[::1]80", "[::zz]:80", "bad_host:80"})
    expect_error(std::string("[http]\nlisten = \"") + bad + "\"\n", "http.listen");
  expect_error("[cluster]\nlisten = \"127.0.0.1:70000\"\n", "cluster.listen", "0 to 65535");
}

CAF_TEST(max_body_bytes must be at least 1024) {
  expect_error("[http]\nmax_body_bytes = 1023\n", "http.max_body_bytes", "at least 1024");
  CAF_CHECK_EQUAL(expect_ok("[http]\nmax_body_bytes = 1024\n").http.max_body_bytes, 1024u);
}

CAF_TEST(io threads and the drain timeout are bounded) {
  expect_error("[http]\nio_threads = 0\n", "http.io_threads", "between 1 and 64");
  expect_error("[http]\nio_threads = 65\n", "http.io_threads", "between 1 and 64");
  expect_error("[http]\ndrain_timeout_ms = 300001\n", "http.drain_timeout_ms",
               "at most 300000");
  CAF_CHECK_EQUAL(expect_ok("[http]\ndrain_timeout_ms = 0\n").http.drain_timeout_ms, 0u);
}

CAF_TEST(tls cert and key come together and configured tls is refused until https exists) {
  auto cert = write("cert.pem", "-----BEGIN CERTIFICATE-----\n");
  auto key = write("key.pem", "-----BEGIN PRIVATE KEY-----\n");
  expect_error("[http]\ntls_cert = \"" + cert + "\"\n", "http.tls_key", "both or neither");
  expect_error("[http]\ntls_key = \"" + key + "\"\n", "http.tls_cert", "both or neither");
  auto r = load_text("[http]\ntls_cert = \"" + dir + "/no-cert.pem\"\ntls_key = \"" + dir
                     + "/no-key.pem\"\n");
  CAF_CHECK(!r.config);
  CAF_CHECK(has(r, "http.tls_cert", "No such file or directory"));
  CAF_CHECK(has(r, "http.tls_key", "No such file or directory"));
  expect_error("[http]\ntls_cert = \"" + dir + "\"\ntls_key = \"" + key + "\"\n",
               "http.tls_cert", "not a regular file");
  // Valid files still fail: HTTPS is not served by this build, and a node
  // must not fall back to plain HTTP when TLS was configured.
  expect_error("[http]\ntls_cert = \"" + cert + "\"\ntls_key = \"" + key + "\"\n",
               "http.tls_cert", "not available in this build");
}

CAF_TEST(the registry is local or a redis url) {
  CAF_CHECK_EQUAL(expect_ok("[cluster]\nregistry = \"local\"\n").cluster.registry, "local");
  for (auto url : {"redis://127.0.0.1:6379", "redis://127.0.0.1:6379/0",
                   "redis://redis.internal:6380/15", "redis://[::1]:6379/3"})
    CAF_CHECK_EQUAL(
      expect_ok(std::string{"[cluster]\nregistry = \""} + url + "\"\n").cluster.registry, url);
  expect_error("[cluster]\nregistry = \"rediss://127.0.0.1:6379/0\"\n", "cluster.registry",
               "TLS to Redis is not supported (hiredis 0.14 has no TLS); use redis:// on a "
               "trusted network");
  expect_error("[cluster]\nregistry = \"etcd\"\n", "cluster.registry",
               "must be \"local\" or \"redis://host:port[/db]\", got \"etcd\"");
  for (auto bad : {"redis://", "redis://:6379", "redis://h", "redis://h:0", "redis://h:65536",
                   "redis://h:6379/16", "redis://h:6379/x", "redis://h:6379/", "redis://a b:1"})
    expect_error(std::string{"[cluster]\nregistry = \""} + bad + "\"\n", "cluster.registry",
                 std::string{"must be \"local\" or \"redis://host:port[/db]\", got \""} + bad
                   + "\"");
}

CAF_TEST(the redis key prefix is short and without spaces) {
  CAF_CHECK_EQUAL(default_config().cluster.key_prefix, "hs:");
  CAF_CHECK_EQUAL(expect_ok("[cluster]\nkey_prefix = \"prod:eu:\"\n").cluster.key_prefix,
                  "prod:eu:");
  expect_error("[cluster]\nkey_prefix = \"\"\n", "cluster.key_prefix", "must not be empty");
  expect_error("[cluster]\nkey_prefix = \"a b\"\n", "cluster.key_prefix", "spaces");
  expect_error("[cluster]\nkey_prefix = \"" + std::string(65, 'k') + "\"\n",
               "cluster.key_prefix", "at most 64 characters");
  CAF_CHECK_EQUAL(
    expect_ok("[cluster]\nkey_prefix = \"" + std::string(64, 'k') + "\"\n").cluster.key_prefix,
    std::string(64, 'k'));
}

CAF_TEST(the heartbeat must be shorter than the node ttl) {
  expect_error("[cluster]\nheartbeat_ms = 3000\nnode_ttl_ms = 3000\n", "cluster.heartbeat_ms",
               "less than cluster.node_ttl_ms");
  auto cfg = expect_ok("[cluster]\nheartbeat_ms = 100\nnode_ttl_ms = 300\n");
  CAF_CHECK_EQUAL(cfg.cluster.node_ttl_ms, 300u);
}

// -- cluster TLS ---------------------------------------------------------------

namespace {

/// Runs `cmd` (the openssl CLI) quietly; fails the test when it fails.
void run_quietly(const std::string& cmd) {
  auto rc = std::system((cmd + " >/dev/null 2>&1 </dev/null").c_str());
  if (rc != 0)
    CAF_FAIL("command failed (" << rc << "): " << cmd);
}

struct tls_files {
  std::string ca;
  std::string cert;
  std::string key;
};

/// A CA named `ca` in `dir` (made once) and a node certificate `name` it signed.
tls_files make_node_cert(const std::string& dir, const std::string& ca, const std::string& name) {
  tls_files f{dir + "/" + ca + ".pem", dir + "/" + name + ".pem", dir + "/" + name + ".key"};
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  if (!std::filesystem::exists(f.ca))
    run_quietly("openssl req -x509 " + ec + " -keyout " + dir + "/" + ca + ".key -out " + f.ca
                + " -days 2 -subj /CN=" + ca);
  run_quietly("openssl req " + ec + " -keyout " + f.key + " -out " + dir + "/" + name
              + ".csr -subj /CN=" + name);
  run_quietly("openssl x509 -req -in " + dir + "/" + name + ".csr -CA " + f.ca + " -CAkey " + dir
              + "/" + ca + ".key -CAcreateserial -out " + f.cert + " -days 2");
  return f;
}

std::string cluster_tls(const std::string& cert, const std::string& key, const std::string& ca) {
  std::string out = "[cluster]\n";
  if (!cert.empty())
    out += "tls_cert = \"" + cert + "\"\n";
  if (!key.empty())
    out += "tls_key = \"" + key + "\"\n";
  if (!ca.empty())
    out += "tls_ca = \"" + ca + "\"\n";
  return out;
}

} // namespace

CAF_TEST(cluster tls is off by default) {
  auto def = default_config();
  CAF_CHECK(def.cluster.tls_cert.empty() && def.cluster.tls_key.empty()
            && def.cluster.tls_ca.empty());
  CAF_CHECK(!def.cluster.tls_enabled());
  CAF_CHECK(!expect_ok("[cluster]\ntls_cert = \"\"\ntls_key = \"\"\ntls_ca = \"\"\n")
               .cluster.tls_enabled());
}

CAF_TEST(cluster tls loads a certificate signed by the ca with its key) {
  auto f = make_node_cert(dir, "ca", "node-a");
  auto cfg = expect_ok(cluster_tls(f.cert, f.key, f.ca));
  CAF_CHECK(cfg.cluster.tls_enabled());
  CAF_CHECK_EQUAL(cfg.cluster.tls_cert, f.cert);
  CAF_CHECK_EQUAL(cfg.cluster.tls_key, f.key);
  CAF_CHECK_EQUAL(cfg.cluster.tls_ca, f.ca);
}

CAF_TEST(cluster tls needs all three files or none) {
  auto f = make_node_cert(dir, "ca", "node-a");
  expect_error(cluster_tls(f.cert, f.key, ""), "cluster.tls_ca",
               "must be set when cluster.tls_cert and cluster.tls_key are set");
  expect_error(cluster_tls(f.cert, "", f.ca), "cluster.tls_key", "all three");
  expect_error(cluster_tls("", f.key, f.ca), "cluster.tls_cert", "all three");
  auto r = load_text(cluster_tls("", "", f.ca));
  CAF_CHECK(!r.config);
  CAF_CHECK_EQUAL(r.errors.size(), 2u);
  CAF_CHECK(has(r, "cluster.tls_cert", "must be set when cluster.tls_ca is set"));
  CAF_CHECK(has(r, "cluster.tls_key", "must be set when cluster.tls_ca is set"));
}

CAF_TEST(cluster tls files must be readable) {
  auto f = make_node_cert(dir, "ca", "node-a");
  expect_error(cluster_tls(dir + "/gone.pem", f.key, f.ca), "cluster.tls_cert",
               "\"" + dir + "/gone.pem\": cannot open: No such file or directory");
  expect_error(cluster_tls(f.cert, dir + "/gone.key", f.ca), "cluster.tls_key",
               "No such file or directory");
  expect_error(cluster_tls(f.cert, f.key, dir), "cluster.tls_ca", "not a regular file");
}

CAF_TEST(a cluster tls key of another certificate is a config error) {
  auto a = make_node_cert(dir, "ca", "node-a");
  auto b = make_node_cert(dir, "ca", "node-b");
  expect_error(cluster_tls(a.cert, b.key, a.ca), "cluster.tls_key",
               "does not match cluster.tls_cert");
}

CAF_TEST(a cluster tls certificate of a foreign ca is a config error) {
  auto mine = make_node_cert(dir, "ca", "node-a");
  auto foreign = make_node_cert(dir, "other-ca", "node-x");
  expect_error(cluster_tls(foreign.cert, foreign.key, mine.ca), "cluster.tls_cert",
               "not signed by cluster.tls_ca (unable to get local issuer certificate)");
  // A self-signed certificate is not signed by the cluster CA either.
  expect_error(cluster_tls(mine.ca, dir + "/ca.key", foreign.ca), "cluster.tls_cert",
               "not signed by cluster.tls_ca");
}

CAF_TEST(cluster tls files that are not pem are config errors) {
  auto f = make_node_cert(dir, "ca", "node-a");
  auto junk = write("junk.pem", "not a certificate\n");
  auto r = load_text(cluster_tls(junk, f.key, f.ca));
  CAF_CHECK(!r.config);
  CAF_CHECK(has(r, "cluster.tls_cert", "cannot read a PEM certificate from \"" + junk + "\""));
  expect_error(cluster_tls(f.cert, junk, f.ca), "cluster.tls_key",
               "cannot read an unencrypted PEM private key from \"" + junk + "\"");
  expect_error(cluster_tls(f.cert, f.key, junk), "cluster.tls_ca",
               "cannot read PEM CA certificates from \"" + junk + "\"");
}

CAF_TEST(an encrypted cluster tls key is refused without a prompt) {
  auto f = make_node_cert(dir, "ca", "node-a");
  auto enc = dir + "/node-a.enc.key";
  run_quietly("openssl pkey -in " + f.key + " -aes256 -passout pass:secret -out " + enc);
  expect_error(cluster_tls(f.cert, enc, f.ca), "cluster.tls_key",
               "cannot read an unencrypted PEM private key");
}

CAF_TEST(a bad cluster tls file from the environment names the variable) {
  auto f = make_node_cert(dir, "ca", "node-a");
  auto r = load_text(cluster_tls("", f.key, f.ca),
                     {"HOTSWAP_CLUSTER_TLS_CERT=" + dir + "/gone.pem"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].file, "environment");
  CAF_CHECK_EQUAL(r.errors[0].key, "cluster.tls_cert (HOTSWAP_CLUSTER_TLS_CERT)");
  CAF_CHECK(r.errors[0].reason.find("No such file or directory") != std::string::npos);
  auto ok = load_text(cluster_tls("", f.key, f.ca), {"HOTSWAP_CLUSTER_TLS_CERT=" + f.cert});
  CAF_CHECK(ok.config && ok.config->cluster.tls_enabled());
}

// -- store ---------------------------------------------------------------------

CAF_TEST(the store url must name sqlite or postgresql) {
  CAF_CHECK_EQUAL(expect_ok("[store]\nurl = \"sqlite://x.db\"\n").store.url, "sqlite://x.db");
  expect_ok("[store]\nurl = \"postgresql://u@127.0.0.1:5432/hotswap\"\n");
  expect_ok("[store]\nurl = \"postgres://u@127.0.0.1/hotswap\"\n");
  expect_error("[store]\nurl = \"sqlite://\"\n", "store.url", "sqlite path is missing");
  expect_error("[store]\nurl = \"mysql://db\"\n", "store.url", "must start with");
}

CAF_TEST(the store pool size is between 1 and 64) {
  expect_error("[store]\npool_size = 0\n", "store.pool_size", "between 1 and 64");
  expect_error("[store]\npool_size = 65\n", "store.pool_size", "between 1 and 64");
}

CAF_TEST(relative paths are kept as written) {
  auto cfg = expect_ok("[node]\ndata_dir = \"var/x\"\n[store]\nurl = \"sqlite://var/x/h.db\"\n");
  CAF_CHECK_EQUAL(cfg.node.data_dir, "var/x");
  CAF_CHECK_EQUAL(cfg.store.url, "sqlite://var/x/h.db");
}

// -- auth ----------------------------------------------------------------------

CAF_TEST(trusted module keys must be readable files) {
  auto pub = write("release.pub.pem", "-----BEGIN PUBLIC KEY-----\n");
  auto cfg = expect_ok("[auth]\ntrusted_module_keys = [\"" + pub + "\"]\n");
  CAF_CHECK(cfg.auth.trusted_module_keys == std::vector<std::string>{pub});
  expect_error("[auth]\ntrusted_module_keys = [\"" + pub + "\", \"" + dir + "/gone.pem\"]\n",
               "auth.trusted_module_keys[1]", "No such file or directory");
}

CAF_TEST(a missing trusted module key file names its index and path) {
  auto gone = dir + "/gone.pem";
  auto r = load_text("[auth]\ntrusted_module_keys = [\"" + gone + "\"]\n");
  CAF_CHECK(!r.config);
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].file, dir + "/node.toml");
  CAF_CHECK_EQUAL(r.errors[0].key, "auth.trusted_module_keys[0]");
  CAF_CHECK_EQUAL(r.errors[0].reason, "\"" + gone + "\": cannot open: No such file or directory");
}

CAF_TEST(a trusted module key must be a regular file and is not parsed at load) {
  // The content is not a key: whether it is one is checked at node start.
  auto pub = write("not-a-key.pem", "hello\n");
  auto cfg = expect_ok("[auth]\ntrusted_module_keys = [\"" + pub + "\"]\n");
  CAF_CHECK(cfg.auth.trusted_module_keys == std::vector<std::string>{pub});
  expect_error("[auth]\ntrusted_module_keys = [\"" + pub + "\", \"" + dir + "\"]\n",
               "auth.trusted_module_keys[1]", "\"" + dir + "\": not a regular file");
  expect_error("[auth]\ntrusted_module_keys = [\"\"]\n", "auth.trusted_module_keys[0]",
               "must not be empty");
  // A FIFO is refused without waiting for a writer.
  auto fifo = dir + "/keys.fifo";
  CAF_REQUIRE_EQUAL(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error("[auth]\ntrusted_module_keys = [\"" + fifo + "\"]\n",
               "auth.trusted_module_keys[0]", "not a regular file");
  if (::geteuid() != 0) {
    auto locked = write("locked.pem", "x\n");
    CAF_REQUIRE_EQUAL(::chmod(locked.c_str(), 0), 0);
    expect_error("[auth]\ntrusted_module_keys = [\"" + locked + "\"]\n",
                 "auth.trusted_module_keys[0]", "Permission denied");
  } else {
    CAF_MESSAGE("running as root: the unreadable-file case is not testable");
  }
}

CAF_TEST(relative trusted module key paths are relative to the working directory) {
  auto pub = write("release.pub.pem", "-----BEGIN PUBLIC KEY-----\n");
  auto rel = std::filesystem::relative(pub, std::filesystem::current_path()).string();
  CAF_REQUIRE(!rel.empty() && rel.front() != '/');
  auto cfg = expect_ok("[auth]\ntrusted_module_keys = [\"" + rel + "\"]\n");
  CAF_CHECK(cfg.auth.trusted_module_keys == std::vector<std::string>{rel});
  // Not relative to the config file: node.toml sits next to release.pub.pem.
  CAF_REQUIRE(std::filesystem::current_path() != std::filesystem::path(dir));
  expect_error("[auth]\ntrusted_module_keys = [\"release.pub.pem\"]\n",
               "auth.trusted_module_keys[0]", "No such file or directory");
}

CAF_TEST(a missing trusted module key file from the environment names the variable) {
  auto r = load_text("", {"HOTSWAP_AUTH_TRUSTED_MODULE_KEYS=[\"" + dir + "/gone.pem\"]"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].file, "environment");
  CAF_CHECK_EQUAL(r.errors[0].key,
                  "auth.trusted_module_keys[0] (HOTSWAP_AUTH_TRUSTED_MODULE_KEYS)");
  CAF_CHECK(r.errors[0].reason.find(dir + "/gone.pem") != std::string::npos);
}

CAF_TEST(auth limits are enforced) {
  expect_error("[auth]\ntoken_minutes = 0\n", "auth.token_minutes", "between 1 and 1440");
  expect_error("[auth]\ntoken_minutes = 1441\n", "auth.token_minutes", "between 1 and 1440");
  expect_error("[auth]\npbkdf2_iterations = 599999\n", "auth.pbkdf2_iterations",
               "at least 600000");
  expect_error("[auth]\nissuer = \"\"\n", "auth.issuer", "must not be empty");
  expect_error("[auth]\naudience = \"\"\n", "auth.audience", "must not be empty");
  expect_error("[auth]\ninitial_admin_email = \"root\"\n", "auth.initial_admin_email",
               "e-mail");
}

// -- environments --------------------------------------------------------------

CAF_TEST(an environment table overrides only the keys it names) {
  auto cfg = expect_ok("[environments.Production]\nmin_samples = 200\n"
                       "[environments.Development]\nstrategy = \"Canary\"\n");
  const auto& prod = cfg.environments.at("Production");
  CAF_CHECK_EQUAL(prod.min_samples, 200u);
  CAF_CHECK_EQUAL(prod.strategy, "Canary");
  CAF_CHECK_EQUAL(prod.approval, "always");
  CAF_CHECK_EQUAL(prod.separation_of_duties, true);
  const auto& dev = cfg.environments.at("Development");
  CAF_CHECK_EQUAL(dev.strategy, "Canary");
  CAF_CHECK_EQUAL(dev.require_signed_modules, false);
}

CAF_TEST(an unknown environment is an error and names are case sensitive) {
  expect_error("[environments.Prod]\nstrategy = \"Canary\"\n", "environments.Prod",
               "unknown environment");
  expect_error("[environments.production]\nstrategy = \"Canary\"\n",
               "environments.production", "did you mean \"Production\"");
  expect_error("[environments]\nQA = 1\n", "environments.QA", "expected a table");
  expect_error("[environments.QA]\nstrateggy = \"Direct\"\n", "environments.QA.strateggy",
               "unknown key");
}

CAF_TEST(strategy approval and inconclusive take only their listed values) {
  expect_error("[environments.QA]\nstrategy = \"rolling\"\n", "environments.QA.strategy",
               "must be one of");
  expect_error("[environments.QA]\napproval = \"sometimes\"\n", "environments.QA.approval",
               "must be one of");
  expect_error("[environments.QA]\ninconclusive = \"retry\"\n",
               "environments.QA.inconclusive", "must be one of");
  auto cfg = expect_ok("[environments.QA]\nstrategy = \"BlueGreen\"\napproval = "
                       "\"on_request\"\ninconclusive = \"extend\"\n");
  CAF_CHECK_EQUAL(cfg.environments.at("QA").inconclusive, "extend");
}

CAF_TEST(canary steps increase strictly from 1 to 100 and end at 100) {
  auto key = std::string("environments.Production.canary_steps");
  expect_error("[environments.Production]\ncanary_steps = [10, 10, 100]\n", key,
               "strictly increasing");
  expect_error("[environments.Production]\ncanary_steps = [50, 30, 100]\n", key,
               "strictly increasing");
  expect_error("[environments.Production]\ncanary_steps = [10, 50]\n", key,
               "last step must be 100");
  expect_error("[environments.Production]\ncanary_steps = []\n", key, "must not be empty");
  expect_error("[environments.Production]\ncanary_steps = [0, 100]\n", key + "[0]",
               "between 1 and 100");
  expect_error("[environments.Production]\ncanary_steps = [50, 101]\n", key + "[1]",
               "between 1 and 100");
  auto cfg = expect_ok("[environments.Production]\ncanary_steps = [5, 100]\n");
  CAF_CHECK(cfg.environments.at("Production").canary_steps == (std::vector<uint32_t>{5, 100}));
}

CAF_TEST(batch size samples and step seconds are at least 1) {
  expect_error("[environments.QA]\nrolling_batch_size = 0\n",
               "environments.QA.rolling_batch_size", "at least 1");
  expect_error("[environments.QA]\nmin_samples = 0\n", "environments.QA.min_samples",
               "at least 1");
  expect_error("[environments.QA]\nstep_seconds = 0\n", "environments.QA.step_seconds",
               "at least 1");
}

// -- the rest ------------------------------------------------------------------

CAF_TEST(rate limits are at least 1 while enabled) {
  expect_error("[rate_limits]\nlogin = 0\n", "rate_limits.login", "while rate_limits.enabled");
  auto cfg = expect_ok("[rate_limits]\nenabled = false\nlogin = 0\n");
  CAF_CHECK_EQUAL(cfg.rate_limits.enabled, false);
  CAF_CHECK_EQUAL(cfg.rate_limits.login, 0u);
}

CAF_TEST(trusted proxies must be ip addresses) {
  auto cfg = expect_ok("[rate_limits]\ntrusted_proxies = [\"10.0.0.1\", \"::1\"]\n");
  CAF_CHECK_EQUAL(cfg.rate_limits.trusted_proxies.size(), 2u);
  expect_error("[rate_limits]\ntrusted_proxies = [\"proxy.local\"]\n",
               "rate_limits.trusted_proxies[0]", "must be an IP address");
  expect_error("[rate_limits]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
               "rate_limits.trusted_proxies[0]", "must be an IP address");
}

CAF_TEST(the log level is one of the five levels) {
  CAF_CHECK_EQUAL(expect_ok("[logging]\nlevel = \"warn\"\n").logging.level, "warn");
  expect_error("[logging]\nlevel = \"WARN\"\n", "logging.level", "must be one of");
}

CAF_TEST(entity supervision settings are bounded) {
  expect_error("[entities]\nrestart_intensity = 0\n", "entities.restart_intensity",
               "at least 1");
  expect_error("[entities]\nrestart_backoff_initial_ms = 6000\n",
               "entities.restart_backoff_initial_ms", "restart_backoff_max_ms");
}

CAF_TEST(topic tables name the variable that holds their key) {
  auto cfg = expect_ok("[messages.topics.\"orders.v1\"]\nhmac_key_env = \"ORDERS_KEY\"\n",
                       {"ORDERS_KEY=k"});
  CAF_CHECK_EQUAL(cfg.messages.topics.at("orders.v1").hmac_key_env, "ORDERS_KEY");
  expect_error("[messages.topics.\"orders.v1\"]\n", "messages.topics.\"orders.v1\".hmac_key_env",
               "missing");
  auto r = load_text("[messages.topics.\"orders.v1\"]\nhmac_key_env = \"K\"\nsecret = \"x\"\n");
  CAF_CHECK(has(r, "messages.topics.\"orders.v1\".secret", "unknown key"));
  expect_error("[messages.topics.orders]\nhmac_key_env = \"bad name\"\n",
               "messages.topics.orders.hmac_key_env", "environment variable name");
  expect_error("[messages]\ntopics = 3\n", "messages.topics", "expected a table");
}

CAF_TEST(a topic whose key variable is unset or empty is an error naming the key) {
  expect_error("[messages.topics.\"orders.v1\"]\nhmac_key_env = \"ORDERS_KEY\"\n",
               "messages.topics.\"orders.v1\".hmac_key_env", "ORDERS_KEY is not set");
  auto r = load_text("[messages.topics.\"orders.v1\"]\nhmac_key_env = \"ORDERS_KEY\"\n",
                     {"ORDERS_KEY=", "OTHER_KEY=x"});
  CAF_CHECK(!r.config);
  CAF_CHECK(has(r, "messages.topics.\"orders.v1\".hmac_key_env", "ORDERS_KEY is not set"));
  CAF_CHECK_EQUAL(r.errors.size(), 1u);
}

// -- worker ----------------------------------------------------------------------

namespace {

struct worker_key {
  const char* name;
  uint64_t min;
  uint64_t max;
  uint32_t worker_section::*field;
};

const worker_key worker_keys[] = {
  {"instances_per_version", 1, 64, &worker_section::instances_per_version},
  {"drain_timeout_ms", 100, 600000, &worker_section::drain_timeout_ms},
  {"metrics_window_seconds", 1, 3600, &worker_section::metrics_window_seconds},
  {"sample_interval_ms", 100, 3600000, &worker_section::sample_interval_ms},
  {"sample_retention", 1, 1000000, &worker_section::sample_retention},
};

} // namespace

CAF_TEST(the worker defaults are those of the struct and no module is configured) {
  auto def = default_config();
  CAF_CHECK_EQUAL(def.worker.instances_per_version, 2u);
  CAF_CHECK_EQUAL(def.worker.drain_timeout_ms, 10000u);
  CAF_CHECK_EQUAL(def.worker.metrics_window_seconds, 60u);
  CAF_CHECK_EQUAL(def.worker.sample_interval_ms, 5000u);
  CAF_CHECK_EQUAL(def.worker.sample_retention, 17280u);
  CAF_CHECK(def.modules.empty());
  auto cfg = expect_ok("[worker]\n");
  for (const auto& k : worker_keys)
    CAF_CHECK_EQUAL(cfg.worker.*k.field, def.worker.*k.field);
  CAF_CHECK(cfg.modules.empty());
  CAF_CHECK(expect_ok("[modules]\n").modules.empty());
}

CAF_TEST(worker keys take values at both ends of their ranges) {
  for (const auto& k : worker_keys) {
    for (auto v : {k.min, k.max}) {
      auto cfg = expect_ok("[worker]\n" + std::string(k.name) + " = " + std::to_string(v) + "\n");
      CAF_CHECK_EQUAL(cfg.worker.*k.field, v);
    }
  }
  auto cfg = expect_ok("[worker]\ninstances_per_version = 8\ndrain_timeout_ms = 2500\n"
                       "metrics_window_seconds = 30\nsample_interval_ms = 1000\n"
                       "sample_retention = 86400\n");
  CAF_CHECK_EQUAL(cfg.worker.instances_per_version, 8u);
  CAF_CHECK_EQUAL(cfg.worker.drain_timeout_ms, 2500u);
  CAF_CHECK_EQUAL(cfg.worker.metrics_window_seconds, 30u);
  CAF_CHECK_EQUAL(cfg.worker.sample_interval_ms, 1000u);
  CAF_CHECK_EQUAL(cfg.worker.sample_retention, 86400u);
}

CAF_TEST(each worker key out of range is an error naming that key) {
  for (const auto& k : worker_keys) {
    auto key = std::string("worker.") + k.name;
    auto range = "must be between " + std::to_string(k.min) + " and " + std::to_string(k.max);
    expect_error("[worker]\n" + std::string(k.name) + " = " + std::to_string(k.min - 1) + "\n",
                 key, range + ", got " + std::to_string(k.min - 1));
    expect_error("[worker]\n" + std::string(k.name) + " = " + std::to_string(k.max + 1) + "\n",
                 key, range + ", got " + std::to_string(k.max + 1));
  }
  expect_error("[worker]\ninstances_per_version = -1\n", "worker.instances_per_version",
               "must not be negative");
  expect_error("[worker]\ndrain_timeout_ms = \"10s\"\n", "worker.drain_timeout_ms",
               "expected an integer, got string");
}

CAF_TEST(an unknown worker key is an error) {
  expect_error("[worker]\ninstances = 2\n", "worker.instances", "unknown key");
  expect_error("worker = 2\n", "worker", "expected a table, got integer");
}

CAF_TEST(an environment variable overrides a worker key) {
  auto cfg = expect_ok("[worker]\ninstances_per_version = 3\nsample_retention = 10\n",
                       {"HOTSWAP_WORKER_INSTANCES_PER_VERSION=8",
                        "HOTSWAP_WORKER_DRAIN_TIMEOUT_MS=250",
                        "HOTSWAP_WORKER_METRICS_WINDOW_SECONDS=120",
                        "HOTSWAP_WORKER_SAMPLE_INTERVAL_MS=1000"});
  CAF_CHECK_EQUAL(cfg.worker.instances_per_version, 8u);
  CAF_CHECK_EQUAL(cfg.worker.drain_timeout_ms, 250u);
  CAF_CHECK_EQUAL(cfg.worker.metrics_window_seconds, 120u);
  CAF_CHECK_EQUAL(cfg.worker.sample_interval_ms, 1000u);
  CAF_CHECK_EQUAL(cfg.worker.sample_retention, 10u);
  auto r = load("", {"HOTSWAP_WORKER_SAMPLE_RETENTION=500"});
  CAF_REQUIRE(r.config);
  CAF_CHECK_EQUAL(r.config->worker.sample_retention, 500u);
}

CAF_TEST(a bad worker value from the environment names the key and the variable) {
  auto r = load_text("", {"HOTSWAP_WORKER_DRAIN_TIMEOUT_MS=50"});
  CAF_CHECK(!r.config);
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].to_string(),
                  "environment: worker.drain_timeout_ms (HOTSWAP_WORKER_DRAIN_TIMEOUT_MS): "
                  "must be between 100 and 600000, got 50");
  r = load_text("", {"HOTSWAP_WORKER_INSTANCES=4"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].to_string(),
                  "environment: worker.instances (HOTSWAP_WORKER_INSTANCES): unknown key");
}

// -- modules -------------------------------------------------------------------

CAF_TEST(a module settings table is stored as json) {
  auto cfg = expect_ok("[modules.flaky]\nsettings = { error_percent = 30 }\n"
                       "[modules.slow]\nsettings = { latency_ms = 50 }\n"
                       "[modules.plain]\nsettings = {}\n");
  CAF_REQUIRE_EQUAL(cfg.modules.size(), 3u);
  const auto& flaky = cfg.modules.at("flaky").settings_json;
  CAF_MESSAGE("flaky settings_json: " << flaky);
  CAF_CHECK_EQUAL(unbroken(flaky), R"({"error_percent":30})");
  CAF_CHECK_EQUAL(json_of(flaky), json_of(R"({"error_percent": 30})"));
  CAF_CHECK_EQUAL(json_of(cfg.modules.at("slow").settings_json),
                  json_of(R"({"latency_ms": 50})"));
  CAF_CHECK_EQUAL(cfg.modules.at("plain").settings_json, "{}");
}

CAF_TEST(nested module settings survive the conversion to json) {
  auto cfg = expect_ok(R"(
[modules.shop-api]
[modules.shop-api.settings]
name = "shop \"main\"\tline\nnext \\ é ✓"
ratio = 0.25
big = 1e300
whole = 3.0
hex = 0xFF
negative = -12
on = true
off = false
tags = ["a", "b"]
mixed = [1, "two", [3.5, false], { four = 4 }]
empty_list = []
empty_table = {}
day = 1979-05-27
at = 1979-05-27T07:32:00Z
local = 1979-05-27T07:32:00
clock = 07:32:00
forever = inf
unknown = nan
"key with spaces" = 1
[modules.shop-api.settings.db]
host = "127.0.0.1"
pool = { size = 4, retry = { attempts = 3 } }
[[modules.shop-api.settings.routes]]
path = "/a"
[[modules.shop-api.settings.routes]]
path = "/b"
)");
  const auto& text = cfg.modules.at("shop-api").settings_json;
  CAF_MESSAGE("shop-api settings_json: " << text);
  auto v = json_of(text);
  CAF_REQUIRE(v.is_object());
  const auto& o = v.as_object();
  CAF_CHECK_EQUAL(o.at("name"), boost::json::value("shop \"main\"\tline\nnext \\ é ✓"));
  CAF_CHECK_EQUAL(o.at("ratio").as_double(), 0.25);
  CAF_CHECK_EQUAL(o.at("big").as_double(), 1e300);
  CAF_CHECK_EQUAL(o.at("whole").as_double(), 3.0);
  CAF_CHECK_EQUAL(o.at("hex").as_int64(), 255);
  CAF_CHECK_EQUAL(o.at("negative").as_int64(), -12);
  CAF_CHECK_EQUAL(o.at("on").as_bool(), true);
  CAF_CHECK_EQUAL(o.at("off").as_bool(), false);
  CAF_CHECK_EQUAL(o.at("tags"), json_of(R"(["a", "b"])"));
  CAF_CHECK_EQUAL(o.at("mixed"), json_of(R"([1, "two", [3.5, false], {"four": 4}])"));
  CAF_CHECK_EQUAL(o.at("empty_list"), json_of("[]"));
  CAF_CHECK_EQUAL(o.at("empty_table"), json_of("{}"));
  CAF_CHECK_EQUAL(o.at("day"), boost::json::value("1979-05-27"));
  CAF_CHECK_EQUAL(o.at("at"), boost::json::value("1979-05-27T07:32:00Z"));
  CAF_CHECK_EQUAL(o.at("local"), boost::json::value("1979-05-27T07:32:00"));
  CAF_CHECK_EQUAL(o.at("clock"), boost::json::value("07:32:00"));
  CAF_CHECK_EQUAL(o.at("forever"), boost::json::value("Infinity"));
  CAF_CHECK_EQUAL(o.at("unknown"), boost::json::value("NaN"));
  CAF_CHECK_EQUAL(o.at("key with spaces").as_int64(), 1);
  CAF_CHECK_EQUAL(o.at("db"), json_of(R"({"host": "127.0.0.1",
                                            "pool": {"size": 4, "retry": {"attempts": 3}}})"));
  CAF_CHECK_EQUAL(o.at("routes"), json_of(R"([{"path": "/a"}, {"path": "/b"}])"));
  CAF_CHECK_EQUAL(o.size(), 21u);
}

CAF_TEST(module names must match the module name pattern) {
  auto ok = [this](const std::string& name) {
    auto cfg = expect_ok("[modules." + name + "]\nsettings = {}\n");
    CAF_CHECK_EQUAL(cfg.modules.count(name), 1u);
  };
  ok("abc");
  ok("a-b");
  ok("0ab");
  ok("a--9");
  ok(std::string(64, 'x'));
  auto bad = [this](const std::string& toml_name, const std::string& key,
                    const std::string& why) {
    expect_error("[modules." + toml_name + "]\nsettings = {}\n", key,
                 "invalid module name: " + why);
  };
  bad("ab", "modules.ab", "must be 3 to 64 characters long, got 2");
  bad(std::string(65, 'x'), "modules." + std::string(65, 'x'),
      "must be 3 to 64 characters long, got 65");
  bad("Flaky", "modules.Flaky", "character 1 (\"F\") is not allowed");
  bad("fla_ky", "modules.fla_ky", "character 4 (\"_\") is not allowed");
  bad("\"a.b.c\"", "modules.\"a.b.c\"", "character 2 (\".\") is not allowed");
  bad("-abc", "modules.-abc", "must start and end with a letter or digit");
  bad("abc-", "modules.abc-", "must start and end with a letter or digit");
  auto r = load_text("[modules.Flaky]\nsettings = {}\n");
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK(r.errors[0].reason.find("^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$") != std::string::npos);
  CAF_CHECK(r.errors[0].reason.find("lower case") != std::string::npos);
}

CAF_TEST(a module table needs a settings table) {
  expect_error("[modules.flaky]\n", "modules.flaky.settings", "missing");
  expect_error("[modules.flaky]\nsettings = 3\n", "modules.flaky.settings",
               "expected a table, got integer");
  expect_error("[modules.flaky]\nsettings = \"error_percent=30\"\n", "modules.flaky.settings",
               "expected a table, got string");
  expect_error("[modules.flaky]\nsettings = [{ error_percent = 30 }]\n",
               "modules.flaky.settings", "expected a table, got array");
  expect_error("[modules]\nflaky = 1\n", "modules.flaky", "expected a table, got integer");
  expect_error("modules = []\n", "modules", "expected a table, got array");
}

CAF_TEST(an unknown key in a module table is an error) {
  expect_error("[modules.flaky]\nsettings = {}\nenabled = true\n", "modules.flaky.enabled",
               "unknown key");
  // A common slip: the setting written next to settings instead of inside it.
  auto r = load_text("[modules.flaky]\nerror_percent = 30\n");
  CAF_CHECK(!r.config);
  CAF_CHECK_EQUAL(r.errors.size(), 2u);
  CAF_CHECK(has(r, "modules.flaky.error_percent", "unknown key"));
  CAF_CHECK(has(r, "modules.flaky.settings", "missing"));
}

CAF_TEST(module variables in the environment are not config overrides) {
  auto cfg = expect_ok("[modules.flaky]\nsettings = { error_percent = 30 }\n",
                       {"HOTSWAP_MODULES_FLAKY_SETTINGS={ error_percent = 90 }",
                        "HOTSWAP_MODULES=1"});
  CAF_REQUIRE_EQUAL(cfg.modules.size(), 1u);
  CAF_CHECK_EQUAL(unbroken(cfg.modules.at("flaky").settings_json), R"({"error_percent":30})");
}

// -- environment overrides -----------------------------------------------------

CAF_TEST(an environment variable overrides a scalar key) {
  auto cfg = expect_ok("[http]\nlisten = \"127.0.0.1:9000\"\n",
                       {"HOTSWAP_HTTP_LISTEN=0.0.0.0:8081", "HOTSWAP_NODE_DEV_MODE=false",
                        "HOTSWAP_RATE_LIMITS_LOGIN=50",
                        "HOTSWAP_STORE_URL=postgresql://hs@127.0.0.1:5432/hotswap",
                        "HOTSWAP_LOGGING_LEVEL=debug"});
  CAF_CHECK_EQUAL(cfg.http.listen, "0.0.0.0:8081");
  CAF_CHECK_EQUAL(cfg.node.dev_mode, false);
  CAF_CHECK_EQUAL(cfg.rate_limits.login, 50u);
  CAF_CHECK_EQUAL(cfg.store.url, "postgresql://hs@127.0.0.1:5432/hotswap");
  CAF_CHECK_EQUAL(cfg.logging.level, "debug");
}

CAF_TEST(an environment variable applies without a file) {
  auto r = load("", {"HOTSWAP_HTTP_IO_THREADS=4"});
  CAF_REQUIRE(r.config);
  CAF_CHECK_EQUAL(r.config->http.io_threads, 4u);
}

CAF_TEST(an environment variable overrides an array key) {
  auto cfg = expect_ok("", {"HOTSWAP_NODE_ROLES=[\"api\",\"worker\"]",
                            "HOTSWAP_RATE_LIMITS_TRUSTED_PROXIES=[\"10.1.2.3\"]"});
  CAF_CHECK(cfg.node.roles == (std::vector<std::string>{"api", "worker"}));
  CAF_CHECK(cfg.rate_limits.trusted_proxies == std::vector<std::string>{"10.1.2.3"});
}

CAF_TEST(an environment variable overrides a key of one environment) {
  auto cfg = expect_ok("[environments.Production]\nmin_samples = 80\nstep_seconds = 10\n",
                       {"HOTSWAP_ENVIRONMENTS_PRODUCTION_CANARY_STEPS=[25, 100]",
                        "HOTSWAP_ENVIRONMENTS_PRODUCTION_MIN_SAMPLES=120",
                        "HOTSWAP_ENVIRONMENTS_QA_STRATEGY=Direct"});
  const auto& prod = cfg.environments.at("Production");
  CAF_CHECK(prod.canary_steps == (std::vector<uint32_t>{25, 100}));
  CAF_CHECK_EQUAL(prod.min_samples, 120u);
  CAF_CHECK_EQUAL(prod.step_seconds, 10u);
  CAF_CHECK_EQUAL(prod.strategy, "Canary");
  CAF_CHECK_EQUAL(cfg.environments.at("QA").strategy, "Direct");
}

CAF_TEST(a string key takes the variable text as written) {
  auto cfg = expect_ok("", {"HOTSWAP_NODE_ID=42", "HOTSWAP_AUTH_ISSUER=\"quoted\"",
                            "HOTSWAP_HTTP_TLS_CERT=", "HOTSWAP_HTTP_TLS_KEY="});
  CAF_CHECK_EQUAL(cfg.node.id, "42");
  CAF_CHECK_EQUAL(cfg.auth.issuer, "quoted");
  CAF_CHECK_EQUAL(cfg.http.tls_cert, "");
}

CAF_TEST(a bad environment value names the key and the variable) {
  auto r = load_text("", {"HOTSWAP_HTTP_LISTEN=localhost"});
  CAF_CHECK(!r.config);
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].file, "environment");
  CAF_CHECK(r.errors[0].to_string().find("environment: http.listen (HOTSWAP_HTTP_LISTEN): ")
            == 0);
  r = load_text("", {"HOTSWAP_HTTP_IO_THREADS=many"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].to_string(), "environment: http.io_threads "
                                           "(HOTSWAP_HTTP_IO_THREADS): expected an integer, "
                                           "got string");
  r = load_text("", {"HOTSWAP_ENVIRONMENTS_STAGING_CANARY_STEPS=[10, 50]"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].key, "environments.Staging.canary_steps "
                                   "(HOTSWAP_ENVIRONMENTS_STAGING_CANARY_STEPS)");
}

CAF_TEST(a cross key error from the environment names the variable) {
  auto r = load_text("", {"HOTSWAP_CLUSTER_NODE_TTL_MS=100"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].file, "environment");
  CAF_CHECK_EQUAL(r.errors[0].key, "cluster.node_ttl_ms (HOTSWAP_CLUSTER_NODE_TTL_MS)");
}

CAF_TEST(the environment wins over the file) {
  auto cfg = expect_ok("[http]\nio_threads = 200\n", {"HOTSWAP_HTTP_IO_THREADS=3"});
  CAF_CHECK_EQUAL(cfg.http.io_threads, 3u);
}

CAF_TEST(an unknown key in a known section of the environment is an error) {
  auto r = load_text("", {"HOTSWAP_HTTP_LISTN=127.0.0.1:1"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK_EQUAL(r.errors[0].to_string(), "environment: http.listn (HOTSWAP_HTTP_LISTN): "
                                           "unknown key");
  r = load_text("", {"HOTSWAP_ENVIRONMENTS_PROD_STRATEGY=Canary"});
  CAF_REQUIRE_EQUAL(r.errors.size(), 1u);
  CAF_CHECK(r.errors[0].reason.find("unknown environment") != std::string::npos);
}

CAF_TEST(unrelated hotswap variables are ignored) {
  auto cfg = expect_ok("", {"HOTSWAP_ADMIN_PASSWORD=s3cret", "HOTSWAP_PAYMENTS_HMAC_KEY=k",
                            "PATH=/usr/bin", "HOTSWAP=1", "NOEQUALS"});
  CAF_CHECK_EQUAL(cfg.http.listen, "127.0.0.1:8080");
}

CAF_TEST(a variable that holds a topic key is never read as an override) {
  auto cfg = expect_ok("[messages.topics.audit]\nhmac_key_env = \"HOTSWAP_EVENTS_AUDIT_KEY\"\n",
                       {"HOTSWAP_EVENTS_AUDIT_KEY=not-a-config-value"});
  CAF_CHECK_EQUAL(cfg.messages.topics.at("audit").hmac_key_env, "HOTSWAP_EVENTS_AUDIT_KEY");
}

CAF_TEST(the process environment is read from environ) {
  ::setenv("HOTSWAP_CONFIG_TEST_MARKER", "yes", 1);
  auto env = process_environment();
  CAF_CHECK(std::find(env.begin(), env.end(), "HOTSWAP_CONFIG_TEST_MARKER=yes") != env.end());
  ::unsetenv("HOTSWAP_CONFIG_TEST_MARKER");
}

CAF_TEST_FIXTURE_SCOPE_END()
