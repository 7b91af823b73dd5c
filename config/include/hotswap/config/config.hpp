#pragma once

// The node configuration: every key of the TOML file, with defaults that make
// a development node. Parsing and validation live in config.cpp; the key
// names are part of the product's interface (see config/hotswap.example.toml).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hotswap::config {

struct node_section {
  std::string id;                       ///< default: host name
  std::vector<std::string> roles{"api", "control", "worker"};
  std::vector<std::string> environments{"Development", "QA", "Staging", "Production"};
  std::string data_dir = "./data";
  bool dev_mode = true;
};

struct http_section {
  std::string listen = "127.0.0.1:8080"; ///< host:port; port 0 = pick a free port
  uint64_t max_body_bytes = 1048576;
  uint64_t max_module_bytes = 67108864;
  std::string tls_cert;
  std::string tls_key;
  uint32_t io_threads = 2;               ///< Beast io_context threads
  uint32_t drain_timeout_ms = 10000;     ///< how long in-flight requests may finish at shutdown
  uint32_t request_timeout_ms = 15000;   ///< deadline of one request inside the node
};

struct store_section {
  std::string url = "sqlite://./data/hotswap.db";
  uint32_t pool_size = 4;                ///< connections (detached workers)
};

struct cluster_section {
  std::string listen = "127.0.0.1:7100";
  std::string registry = "local";
  std::string key_prefix = "hs:";        ///< prepended to every Redis registry key
  uint32_t heartbeat_ms = 500;
  uint32_t node_ttl_ms = 3000;
  /// A new owner waits node_ttl_ms + takeover_margin_ms after taking an
  /// entity over from a dead node; a node self-fences this long before its
  /// lease could expire (at most half the TTL).
  uint32_t takeover_margin_ms = 500;
  /// How often the rebalancer looks for orphaned entities.
  uint32_t rebalance_ms = 500;
  /// Inter-node TLS with mutual authentication (caf::openssl): PEM paths of
  /// this node's certificate, its unencrypted private key and the cluster CA.
  /// All three empty = plain TCP (trusted network only); all three set = TLS.
  /// The loader checks that the key matches the certificate and that the CA
  /// signed it.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;

  bool tls_enabled() const {
    return !tls_cert.empty();
  }
};

struct auth_section {
  std::string issuer = "hotswap";
  std::string audience = "hotswap-api";
  uint32_t token_minutes = 60;
  std::vector<std::string> trusted_module_keys;
  uint32_t lockout_attempts = 5;
  uint32_t lockout_minutes = 15;
  uint32_t pbkdf2_iterations = 600000;   ///< minimum 600000
  std::string initial_admin_username = "admin";
  /// Outside dev mode, the first admin's password when the store has no user.
  /// Prefer the HOTSWAP_ADMIN_PASSWORD environment variable over the file.
  std::string initial_admin_password;
  std::string initial_admin_email = "admin@localhost";
};

struct environment_section {
  std::string strategy;                  ///< Direct | Rolling | BlueGreen | Canary
  std::string approval;                  ///< never | on_request | always
  uint32_t approval_timeout_seconds = 86400;
  bool separation_of_duties = false;
  bool require_signed_modules = true;
  uint32_t rolling_batch_size = 2;
  uint32_t bluegreen_keep_seconds = 300;
  std::vector<uint32_t> canary_steps{10, 30, 50, 100};
  uint32_t step_seconds = 30;
  uint32_t max_error_rate_increase_percent = 50;
  uint32_t max_latency_increase_percent = 100;
  uint32_t min_samples = 50;
  std::string inconclusive = "fail";     ///< fail | extend
};

struct deployments_section {
  uint32_t max_running_per_node = 20;
  uint32_t queue_limit = 1000;
  uint32_t step_timeout_seconds = 30;
};

struct rate_limits_section {
  bool enabled = true;
  uint32_t global = 1000;
  uint32_t deployments = 10;
  uint32_t clusters = 60;
  uint32_t approvals = 30;
  uint32_t login = 5;
  std::vector<std::string> trusted_proxies;
};

struct events_section {
  uint32_t retention_seconds = 86400;
};

struct topic_section {
  std::string hmac_key_env;
};

struct messages_section {
  uint32_t ack_deadline_seconds = 30;
  uint32_t max_attempts = 5;
  uint32_t backoff_initial_ms = 2000;
  std::map<std::string, topic_section> topics;
};

struct entities_section {
  uint32_t idle_passivate_seconds = 300; ///< idle entity actors stop and release ownership
  uint32_t restart_backoff_initial_ms = 100;
  uint32_t restart_backoff_max_ms = 5000;
  uint32_t restart_intensity = 5;        ///< more than this many restarts ...
  uint32_t restart_period_seconds = 60;  ///< ... within this period escalate
};

struct worker_section {
  uint32_t instances_per_version = 2;    ///< handler actors per loaded module version (1..64)
  uint32_t drain_timeout_ms = 10000;     ///< retire: how long in-flight invocations may finish
  uint32_t metrics_window_seconds = 60;  ///< window of per-version rates and p50/p95/p99
  uint32_t sample_interval_ms = 5000;    ///< how often the clusters API records a sample
  uint32_t sample_retention = 17280;     ///< samples kept per environment (24 h at 5 s)
};

/// [modules.<name>]: configuration handed to a module (read via its context).
struct module_section {
  std::string settings_json = "{}";      ///< the `settings` table as JSON text
};

struct logging_section {
  std::string level = "info";            ///< trace | debug | info | warn | error
  bool json = false;
};

struct node_config {
  std::string source;                    ///< file the config came from ("" = defaults)
  node_section node;
  http_section http;
  store_section store;
  cluster_section cluster;
  auth_section auth;
  /// Always holds the four environments, with defaults from api-v1.md.
  std::map<std::string, environment_section> environments;
  deployments_section deployments;
  rate_limits_section rate_limits;
  events_section events;
  messages_section messages;
  entities_section entities;
  worker_section worker;
  std::map<std::string, module_section> modules; ///< by module name
  logging_section logging;
};

/// One validation failure: where and why.
struct config_error {
  std::string file;                      ///< file path, or "environment" / "defaults"
  std::string key;                       ///< dotted key path, e.g. "http.max_body_bytes"
  std::string reason;

  /// "FILE: KEY: REASON"
  std::string to_string() const;
};

/// The defaults of a development node (no file), including the four
/// environments with their contract defaults.
node_config default_config();

/// Environment defaults per api-v1.md (Development Direct/never, QA
/// Rolling/never, Staging BlueGreen/on_request, Production Canary/always with
/// separation of duties).
environment_section default_environment(const std::string& name);

/// Loads `path` (empty = no file), applies HOTSWAP_* overrides from `env`
/// (name=value pairs, typically from environ) and validates every key.
/// Returns all errors found, or the config.
struct load_result {
  std::optional<node_config> config;
  std::vector<config_error> errors;
};
load_result load(const std::string& path, const std::vector<std::string>& env);

/// Convenience: reads the process environment.
std::vector<std::string> process_environment();

/// The canonical environment names, in legacy integer order 0..3.
const std::vector<std::string>& environment_names();

} // namespace hotswap::config
