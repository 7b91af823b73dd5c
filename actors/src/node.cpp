#include "hotswap/actors/node.hpp"

#include "hotswap/actors/events.hpp"
#include "hotswap/cluster/redis_events.hpp"
#include "hotswap/cluster/redis_messages.hpp"
#include "hotswap/runtime/events.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <pthread.h>
#include <unistd.h>
#include <thread>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/event_based_actor.hpp"
#include "caf/scoped_actor.hpp"
#include "caf/io/middleman.hpp"
#include "caf/openssl/manager.hpp"
#include "caf/openssl/publish.hpp"
#include "caf/send.hpp"

#include "hotswap/actors/api.hpp"
#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/caf_openssl_fix.hpp"
#include "hotswap/actors/http_server.hpp"
#include "hotswap/actors/identity.hpp"
#include "hotswap/actors/invoker.hpp"
#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/deployment.hpp"
#include "hotswap/actors/directory.hpp"
#include "hotswap/actors/fleet.hpp"
#include "hotswap/actors/module_catalog.hpp"
#include "hotswap/actors/module_host.hpp"
#include "hotswap/actors/module_loader.hpp"
#include "hotswap/actors/rebalancer.hpp"
#include "hotswap/actors/tenant.hpp"
#include "hotswap/cluster/redis_registry.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/metrics.hpp"
#include "hotswap/runtime/store_actor.hpp"
#include "hotswap/runtime/types.hpp"

namespace hotswap {

void register_types(caf::actor_system_config& cfg) {
  register_runtime_types(cfg);
  register_worker_types(cfg);
  cfg.add_message_type<node_info>("node_info");
  cfg.add_message_type<claim_outcome>("claim_outcome");
  cfg.add_message_type<request_ctx>("request_ctx");
  cfg.add_message_type<resource_quota>("resource_quota");
  cfg.add_message_type<tenant>("tenant");
  cfg.add_message_type<tenant_spec>("tenant_spec");
  cfg.add_message_type<tenant_patch>("tenant_patch");
  cfg.add_message_type<tier_change>("tier_change");
  cfg.add_message_type<host_stats>("host_stats");
  cfg.add_message_type<login_request>("login_request");
  cfg.add_message_type<login_result>("login_result");
  cfg.add_message_type<user_input>("user_input");
  cfg.add_message_type<approval>("approval");
  cfg.add_message_type<approval_decision>("approval_decision");
  cfg.add_message_type<node_hosts>("node_hosts");
  cfg.add_message_type<rate_decision>("rate_decision");
  cfg.add_message_type<tenant_actor>("tenant_actor");
  cfg.add_message_type<caf::strong_actor_ptr>("caf::strong_actor_ptr");
  cfg.add_message_type<std::map<std::string, caf::strong_actor_ptr>>(
    "std::map<std::string,caf::strong_actor_ptr>");
}

namespace {

struct node_actor_config : caf::actor_system_config {
  explicit node_actor_config(const config::cluster_section& cluster) {
    register_types(*this);
    // See docs/adr/0002-scheduler.md: a sharing scheduler sized to the
    // machine beats work stealing's poll/sleep cycle on small boxes.
    auto cores = std::max(2u, std::thread::hardware_concurrency());
    set("scheduler.policy", caf::atom("sharing"));
    set("scheduler.max-threads", static_cast<size_t>(cores));
    // CAF's own heartbeat between connected nodes (off by default in 0.17):
    // it closes dead connections, so a forward to a vanished node fails
    // instead of waiting. Liveness itself comes from the registry.
    set("middleman.heartbeat-interval", caf::timespan{std::chrono::milliseconds(500)});
    set("middleman.connection-timeout", caf::timespan{std::chrono::seconds(3)});
    load<caf::io::middleman>();
    // Cluster TLS (docs/cluster-tls.md): all three files or none, checked
    // at config load (CAF would std::terminate on a file it cannot load).
    // Both sides present a certificate signed by the cluster CA.
    if (cluster.tls_enabled()) {
      // Without it one failed TLS connection breaks the healthy ones.
      if (!caf_openssl_fix_active())
        logger("node")->warn("cluster TLS: the libcaf_openssl error-queue fix is not in "
                             "effect; a failed TLS connection can close healthy ones");
      load<caf::openssl::manager>();
      openssl_certificate = cluster.tls_cert;
      openssl_key = cluster.tls_key;
      openssl_cafile = cluster.tls_ca;
    }
  }
};

/// Everything the root supervisor watches and stops.
struct root_env {
  http_server* http = nullptr;
  tenant_host_actor tenants;
  deployment_host_actor deployments;
  approval_host_actor approvals;
  identity_actor identity;
  membership_actor membership;
  rebalancer_actor rebalancer;
  /// Further children whose failure stops the node (workers, loader,
  /// catalog, fleet monitor): without them the node would serve half its API.
  std::vector<caf::actor> others;
  std::chrono::milliseconds drain_timeout{10000};
};

struct root_state {
  root_env env;
  bool stopping = false;
  caf::error failure; ///< set when a supervised child failed
  std::chrono::steady_clock::time_point drain_deadline;
  static inline const char* name = "node_root";
};

using drain_atom = caf::atom_constant<caf::atom("drain")>;

caf::behavior node_root(caf::stateful_actor<root_state>* self, root_env env) {
  self->state.env = env;
  self->monitor(env.tenants);
  self->monitor(env.identity);
  self->monitor(env.deployments);
  self->monitor(env.approvals);
  for (auto& a : env.others)
    self->monitor(a);
  auto log = logger("node");
  auto passivate = [=] {
    log->info("passivating entities");
    // Deployments first (they talk to approvals), then approvals, then tenants.
    auto fail = [=](caf::error& err) {
      log->error("passivation failed: {}", to_string(errc_of(err)));
      self->quit(self->state.failure ? self->state.failure : err);
    };
    self->request(self->state.env.deployments, std::chrono::seconds(30), passivate_atom::value)
      .then(
        [=](ok_atom) {
          self->request(self->state.env.approvals, std::chrono::seconds(30),
                        passivate_atom::value)
            .then(
              [=](ok_atom) {
                self->request(self->state.env.tenants, std::chrono::seconds(30),
                              passivate_atom::value)
                  .then(
                    [=](ok_atom) {
                      log->info("entities passivated; leaving the cluster membership");
                      // Released leases + leaving: other nodes adopt at once.
                      self->request(self->state.env.membership, std::chrono::seconds(5),
                                    leave_atom::value)
                        .then([=](ok_atom) { self->quit(self->state.failure); },
                              [=](caf::error&) { self->quit(self->state.failure); });
                    },
                    fail);
              },
              fail);
        },
        fail);
  };
  auto begin_stop = [=] {
    if (self->state.stopping)
      return;
    self->state.stopping = true;
    // No more adoptions here: this node's entities go to the others.
    self->send_exit(self->state.env.rebalancer, caf::exit_reason::user_shutdown);
    log->info("shutting down: draining HTTP (deadline {} ms)",
              self->state.env.drain_timeout.count());
    self->state.env.http->begin_drain();
    self->state.drain_deadline = std::chrono::steady_clock::now() + self->state.env.drain_timeout;
    self->send(self, drain_atom::value);
  };
  self->monitor(env.rebalancer);
  self->set_down_handler([=](caf::down_msg& dm) {
    if (self->state.stopping && dm.source == self->state.env.rebalancer.address())
      return;
    if (self->state.stopping
        && (dm.source == self->state.env.tenants.address()
            || dm.source == self->state.env.deployments.address()
            || dm.source == self->state.env.approvals.address())) {
      // Host already gone while stopping: nothing left to passivate.
      self->quit(self->state.failure);
      return;
    }
    log->error("supervised actor failed: {}", to_string(errc_of(dm.reason)) + " "
                                                + error_detail(dm.reason));
    self->state.failure = dm.reason ? dm.reason : caf::make_error(errc::internal, "actor stopped");
    begin_stop();
  });
  return {
    [=](shutdown_atom) { begin_stop(); },
    [=](drain_atom) {
      auto in_flight = self->state.env.http->in_flight();
      if (in_flight > 0 && std::chrono::steady_clock::now() < self->state.drain_deadline) {
        self->delayed_send(self, std::chrono::milliseconds(10), drain_atom::value);
        return;
      }
      if (in_flight > 0)
        log->warn("drain deadline reached with {} requests in flight", in_flight);
      passivate();
    },
  };
}

std::string env_or(const char* name, const std::string& fallback) {
  auto v = std::getenv(name);
  return v && *v ? std::string{v} : fallback;
}

/// Seeds users in an empty store: demo users in dev mode, else the first
/// admin from HOTSWAP_ADMIN_PASSWORD or auth.initial_admin_password.
/// Runs on the main thread (blocking is fine here).
caf::error seed_users(caf::scoped_actor& self, const store_actor& store,
                      const config::node_config& cfg) {
  caf::error result;
  int64_t count = -1;
  self->request(store, std::chrono::seconds(30), user_atom::value, count_atom::value)
    .receive([&](int64_t n) { count = n; }, [&](caf::error& e) { result = e; });
  if (result || count > 0)
    return result;
  struct seed {
    std::string name, password, role, email, full_name;
  };
  std::vector<seed> seeds;
  if (cfg.node.dev_mode) {
    seeds = {{"admin", "Admin123!", "Admin", "admin@hotswap.local", "Demo Admin"},
             {"deployer", "Deploy123!", "Deployer", "deployer@hotswap.local", "Demo Deployer"},
             {"viewer", "Viewer123!", "Viewer", "viewer@hotswap.local", "Demo Viewer"}};
  } else {
    auto pw = env_or("HOTSWAP_ADMIN_PASSWORD", cfg.auth.initial_admin_password);
    if (pw.empty())
      return caf::make_error(errc::config_invalid,
                             "auth.initial_admin_password: the store has no user and dev_mode is "
                             "off; set HOTSWAP_ADMIN_PASSWORD (preferred) or "
                             "auth.initial_admin_password for the first admin");
    if (pw.size() < 12)
      return caf::make_error(errc::config_invalid,
                             "auth.initial_admin_password: the first admin's password (from "
                             "HOTSWAP_ADMIN_PASSWORD or the config) must be at least 12 "
                             "characters");
    seeds = {{cfg.auth.initial_admin_username, pw, "Admin", cfg.auth.initial_admin_email,
              "Administrator"}};
  }
  for (auto& s : seeds) {
    user_record u;
    u.id = crypto::uuid4();
    u.username = s.name;
    u.email = s.email;
    u.full_name = s.full_name;
    u.password_hash = crypto::hash_password(s.password, cfg.auth.pbkdf2_iterations);
    u.roles = {s.role};
    u.active = true;
    u.created_at = u.updated_at = now_millis();
    audit_event ev;
    ev.at = u.created_at;
    ev.category = "User";
    ev.action = "UserSeeded";
    ev.result = "Success";
    ev.entity_kind = "user";
    ev.entity_id = u.id;
    ev.actor_user = "system";
    ev.message = std::string{cfg.node.dev_mode ? "demo user " : "first admin "} + s.name;
    ev.detail = "{}";
    self->request(store, std::chrono::seconds(30), user_atom::value, create_atom::value, u, ev)
      .receive([](ok_atom) {},
               [&](caf::error& e) {
                 // Another node seeding the same store at once is fine.
                 if (e != errc::conflict)
                   result = e;
               });
    if (result)
      return result;
  }
  return result;
}

caf::expected<std::vector<signing_key>> ensure_keys(caf::scoped_actor& self,
                                                    const store_actor& store) {
  signing_key k;
  k.kid = crypto::random_hex(8);
  k.secret = crypto::random_bytes(32);
  k.created_at = now_millis();
  caf::expected<std::vector<signing_key>> result{caf::make_error(errc::internal)};
  self->request(store, std::chrono::seconds(30), key_atom::value, put_atom::value, k)
    .receive([&](std::vector<signing_key>& ks) { result = std::move(ks); },
             [&](caf::error& e) { result = e; });
  return result;
}

std::pair<std::string, uint16_t> split_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  auto host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return {host, static_cast<uint16_t>(std::stoi(listen.substr(colon + 1)))};
}

} // namespace

int run_node(const config::node_config& cfg) {
  setup_logging(cfg.logging.level, cfg.logging.json);
  auto log = logger("node");
  // Signals go to the signal thread only: block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::error_code ec;
  std::filesystem::create_directories(cfg.node.data_dir, ec);
  if (ec) {
    log->error("node.data_dir: cannot create {}: {}", cfg.node.data_dir, ec.message());
    return exit_code::config_error;
  }
  auto shared_cfg = std::make_shared<const config::node_config>(cfg);
  node_actor_config sys_cfg{cfg.cluster};
  caf::actor_system sys{sys_cfg};
  node_metrics metrics;
  auto store = spawn_store_pool(sys, cfg.store.url, cfg.store.pool_size, &metrics);
  if (!store) {
    log->error("store.url: cannot open {}: {}", cfg.store.url, error_detail(store.error()));
    return exit_code::failure;
  }
  caf::scoped_actor self{sys};
  auto stop_store = [&] { self->send_exit(*store, caf::exit_reason::user_shutdown); };
  auto trusted = modsig::trusted_keys::load_files(cfg.auth.trusted_module_keys);
  if (!trusted) {
    log->error("{}", error_detail(trusted.error()));
    std::cerr << "hotswapd: " << error_detail(trusted.error()) << std::endl;
    stop_store();
    return exit_code::config_error;
  }
  auto keys = ensure_keys(self, *store);
  if (!keys) {
    log->error("store: cannot load signing keys: {}", error_detail(keys.error()));
    stop_store();
    return exit_code::failure;
  }
  if (auto err = seed_users(self, *store, cfg)) {
    auto code = errc_of(err) == errc::config_invalid ? exit_code::config_error : exit_code::failure;
    log->error("{}", error_detail(err));
    std::cerr << "hotswapd: " << error_detail(err) << std::endl;
    stop_store();
    return code;
  }
  node_info self_node;
  self_node.id = cfg.node.id;
  self_node.http_endpoint = cfg.http.listen;
  self_node.caf_endpoint = cfg.cluster.listen;
  self_node.roles = cfg.node.roles;
  self_node.environments = cfg.node.environments;
  auto clustered = cfg.cluster.registry != "local";
  registry_actor registry;
  if (clustered) {
    redis_registry_options ropts;
    ropts.url = cfg.cluster.registry;
    ropts.self_node = cfg.node.id;
    ropts.node_ttl = std::chrono::milliseconds(cfg.cluster.node_ttl_ms);
    ropts.prefix = cfg.cluster.key_prefix.empty() ? "hs:" : cfg.cluster.key_prefix;
    auto r = spawn_redis_registry(sys, ropts);
    if (!r) {
      log->error("cluster.registry: {}", error_detail(r.error()));
      std::cerr << "hotswapd: cluster.registry: " << error_detail(r.error()) << std::endl;
      stop_store();
      return exit_code::config_error;
    }
    registry = *r;
  } else {
    registry = spawn_local_registry(sys, self_node);
  }
  // The event stream: the store's table on a single node, the cluster's
  // Redis Stream in a cluster (a second log object tails it).
  std::unique_ptr<event_log> elog;
  std::unique_ptr<event_log> etail;
  if (clustered) {
    auto prefix = cfg.cluster.key_prefix.empty() ? std::string{"hs:"} : cfg.cluster.key_prefix;
    auto a = open_redis_event_log(cfg.cluster.registry, prefix, std::chrono::milliseconds(300),
                                  std::chrono::milliseconds(1000));
    auto b = open_redis_event_log(cfg.cluster.registry, prefix, std::chrono::milliseconds(300),
                                  std::chrono::milliseconds(1000));
    if (!a || !b) {
      auto err = !a ? a.error() : b.error();
      log->error("cluster.registry: {}", error_detail(err));
      stop_store();
      return exit_code::config_error;
    }
    elog = std::move(*a);
    etail = std::move(*b);
  } else {
    auto a = open_sql_event_log(cfg.store.url);
    if (!a) {
      log->error("store.url: cannot open the event log: {}", error_detail(a.error()));
      stop_store();
      return exit_code::failure;
    }
    elog = std::move(*a);
  }
  events_options eopts;
  eopts.retention = static_cast<millis>(cfg.events.retention_seconds) * 1000;
  auto events = spawn_events_hub(sys, std::move(elog), std::move(etail), eopts, &metrics);
  // The message queue (docs/messages.md): one broker per node, owning its own
  // store connection — the store's tables on a single node, Redis Streams in
  // a cluster (every node shares one queue). The Messages API and the
  // modules' publishes and topic subscriptions use it.
  message_broker_actor messages;
  {
    message_policy mpolicy;
    mpolicy.ack_deadline = static_cast<millis>(cfg.messages.ack_deadline_seconds) * 1000;
    mpolicy.max_attempts = static_cast<int32_t>(cfg.messages.max_attempts);
    mpolicy.backoff_initial = static_cast<millis>(cfg.messages.backoff_initial_ms);
    auto mstore = clustered
                    ? open_redis_message_store(cfg.cluster.registry,
                                               cfg.cluster.key_prefix.empty()
                                                 ? std::string{"hs:"}
                                                 : cfg.cluster.key_prefix)
                    : open_sql_message_store(cfg.store.url);
    if (mstore)
      messages = spawn_message_broker(sys, std::move(*mstore), mpolicy, &metrics);
    else
      log->error("messages: cannot open the message store: {} (the Messages API answers 503)",
                 error_detail(mstore.error()));
  }
  // Stopped however run_node returns (a detached actor left running would
  // keep the actor system from shutting down).
  struct stop_on_return {
    caf::actor a;
    ~stop_on_return() {
      if (a)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    }
  } stop_messages{caf::actor_cast<caf::actor>(messages)},
    stop_events{caf::actor_cast<caf::actor>(events)};
  auto directory_workers = std::make_shared<worker_registry>();
  directory_env dirv;
  dirv.node_id = cfg.node.id;
  dirv.registry = registry;
  dirv.workers = directory_workers;
  dirv.refresh = std::chrono::milliseconds(std::max<uint32_t>(cfg.cluster.heartbeat_ms, 250));
  dirv.metrics = &metrics;
  dirv.mm = cfg.cluster.tls_enabled() ? sys.openssl_manager().actor_handle()
                                      : sys.middleman().actor_handle();
  auto directory = spawn_node_directory(sys, dirv);
  host_env henv;
  henv.node_id = cfg.node.id;
  henv.store = *store;
  henv.registry = registry;
  henv.directory = directory;
  henv.metrics = &metrics;
  henv.restart.backoff_initial = std::chrono::milliseconds(cfg.entities.restart_backoff_initial_ms);
  henv.restart.backoff_max = std::chrono::milliseconds(cfg.entities.restart_backoff_max_ms);
  henv.restart.intensity = cfg.entities.restart_intensity;
  henv.restart.period = std::chrono::seconds(cfg.entities.restart_period_seconds);
  henv.idle_timeout = std::chrono::seconds(cfg.entities.idle_passivate_seconds);
  // A takeover from a dead node waits one TTL plus a margin (see
  // docs/cluster.md); a single node never takes over from anyone.
  if (clustered)
    henv.takeover_wait = std::chrono::milliseconds(cfg.cluster.node_ttl_ms
                                                   + cfg.cluster.takeover_margin_ms);
  auto tenants = spawn_tenant_host(sys, henv);
  auto kdf = spawn_kdf_pool(sys, 2);
  identity_config icfg;
  icfg.node_id = cfg.node.id;
  icfg.issuer = cfg.auth.issuer;
  icfg.audience = cfg.auth.audience;
  icfg.token_minutes = cfg.auth.token_minutes;
  icfg.lockout_attempts = cfg.auth.lockout_attempts;
  icfg.lockout_minutes = cfg.auth.lockout_minutes;
  icfg.pbkdf2_iterations = cfg.auth.pbkdf2_iterations;
  icfg.dev_mode = cfg.node.dev_mode;
  icfg.keys = *keys;
  auto identity = spawn_identity(sys, icfg, *store, kdf);
  auto has_role = [&](const char* r) {
    return std::find(cfg.node.roles.begin(), cfg.node.roles.end(), r) != cfg.node.roles.end();
  };
  // Modules: the catalog (uploads) on every node, workers per environment.
  std::map<std::string, bool> require_signed;
  for (auto& [name, env] : cfg.environments)
    require_signed[name] = env.require_signed_modules;
  auto catalog = spawn_module_catalog(sys, catalog_env{*store, *trusted, require_signed, &metrics});
  module_loader_actor loader;
  std::map<std::string, module_host_actor> hosts;
  if (has_role("worker")) {
    auto dir = std::filesystem::path(cfg.node.data_dir) / "modules";
    // Files of a previous run are never reused: a stage fetches and verifies again.
    std::filesystem::remove_all(dir, ec);
    loader = spawn_module_loader(sys, loader_env{*store, *trusted, dir.string()});
    std::map<std::string, std::string> settings;
    for (auto& [name, m] : cfg.modules)
      settings[name] = m.settings_json;
    for (auto& env : cfg.node.environments) {
      module_host_env me;
      me.messages = messages;
      me.node_id = cfg.node.id;
      me.environment = env;
      me.require_signed = cfg.environments.at(env).require_signed_modules;
      me.loader = loader;
      me.store = *store;
      me.metrics = &metrics;
      me.instances = cfg.worker.instances_per_version;
      me.drain_timeout = std::chrono::milliseconds(cfg.worker.drain_timeout_ms);
      me.window_seconds = cfg.worker.metrics_window_seconds;
      me.settings = settings;
      hosts.emplace(env, spawn_module_host(sys, me));
    }
  }
  fleet_env fenv;
  fenv.self_node = self_node;
  {
    char buf[256] = {0};
    fenv.hostname = gethostname(buf, sizeof(buf) - 1) == 0 ? buf : cfg.node.id;
  }
  fenv.registry = registry;
  fenv.hosts = hosts;
  fenv.workers = directory_workers;
  fenv.node_ttl = std::chrono::milliseconds(cfg.cluster.node_ttl_ms);
  fenv.heartbeat = std::chrono::milliseconds(cfg.cluster.heartbeat_ms);
  fenv.sample_interval = std::chrono::milliseconds(cfg.worker.sample_interval_ms);
  fenv.retention = cfg.worker.sample_retention;
  auto fleet = spawn_fleet(sys, fenv);
  // Deployments and approvals: entity hosts like tenants.
  auto approvals = spawn_approval_host(sys, henv);
  deployment_env denv;
  denv.host = henv;
  denv.cfg = shared_cfg;
  {
    // This node's workers at once; the directory adds the other nodes'.
    std::map<std::string, worker_registry::list> local_workers;
    for (auto& [env, h] : hosts)
      local_workers[env].emplace_back(cfg.node.id, h);
    directory_workers->set(std::move(local_workers));
  }
  denv.workers = directory_workers;
  denv.approvals = approvals;
  denv.tenants = tenants;
  auto deployments = spawn_deployment_host(sys, denv);
  self->send(approvals, listen_atom::value, caf::actor_cast<approval_listener>(deployments));
  node_hosts local_hosts;
  local_hosts.node = cfg.node.id;
  local_hosts.tenants = caf::actor_cast<caf::strong_actor_ptr>(tenants);
  local_hosts.deployments = caf::actor_cast<caf::strong_actor_ptr>(deployments);
  local_hosts.approvals = caf::actor_cast<caf::strong_actor_ptr>(approvals);
  for (auto& [env, h] : hosts)
    local_hosts.workers[env] = caf::actor_cast<caf::strong_actor_ptr>(h);
  self->send(directory, put_atom::value, local_hosts);
  // The node's CAF endpoint on cluster.listen: typed module invocations
  // (any actor in the cluster, external CAF clients) and, for the other
  // nodes' directories, this node's hosts.
  auto invoker = spawn_node_invoker(sys, local_hosts);
  uint16_t caf_port = 0;
  {
    auto [chost, cport] = split_listen(cfg.cluster.listen);
    auto published = cfg.cluster.tls_enabled()
                       ? caf::openssl::publish(invoker, cport, chost.c_str(), true)
                       : sys.middleman().publish(invoker, cport, chost.c_str(), true);
    if (!published) {
      auto why = "cluster.listen: cannot listen on " + cfg.cluster.listen + ": "
                 + sys.render(published.error());
      log->error("{}", why);
      std::cerr << "hotswapd: " << why << std::endl;
      for (auto a : {caf::actor_cast<caf::actor>(invoker), caf::actor_cast<caf::actor>(fleet),
                     caf::actor_cast<caf::actor>(catalog), caf::actor_cast<caf::actor>(loader),
                     caf::actor_cast<caf::actor>(identity), caf::actor_cast<caf::actor>(kdf),
                     caf::actor_cast<caf::actor>(tenants), caf::actor_cast<caf::actor>(deployments),
                     caf::actor_cast<caf::actor>(approvals), caf::actor_cast<caf::actor>(directory),
                     caf::actor_cast<caf::actor>(registry)})
        if (a)
          self->send_exit(a, caf::exit_reason::user_shutdown);
      for (auto& [env, h] : hosts)
        self->send_exit(h, caf::exit_reason::user_shutdown);
      stop_store();
      return exit_code::failure;
    }
    caf_port = *published;
    log->info("CAF endpoint (module invocations, cluster directory) on {}:{}", chost, caf_port);
  }
  api_env aenv;
  aenv.cfg = shared_cfg;
  aenv.store = *store;
  aenv.registry = registry;
  aenv.tenants = tenants;
  aenv.identity = identity;
  aenv.metrics = &metrics;
  aenv.limiter = std::make_shared<rate_limiter>();
  if (clustered) {
    // Rate limits across the cluster (docs/cluster.md, "Rate limits"); the
    // bridges fall back to aenv.limiter while Redis fails.
    shared_limiter_options lopts;
    lopts.url = cfg.cluster.registry;
    lopts.prefix = cfg.cluster.key_prefix.empty() ? "hs:" : cfg.cluster.key_prefix;
    if (auto lim = spawn_shared_limiter(sys, lopts))
      aenv.shared_limiter = *lim;
    else
      log->error("cluster.registry: no cluster-wide rate limits ({}); each node limits alone",
                 error_detail(lim.error()));
  }
  aenv.keys = *keys;
  aenv.hosts = hosts;
  aenv.workers = directory_workers;
  aenv.catalog = catalog;
  aenv.fleet = fleet;
  aenv.deployments = deployments;
  aenv.approvals = approvals;
  aenv.messages = messages;
  std::vector<bridge_actor> bridges;
  for (uint32_t i = 0; i < std::max(1u, cfg.http.io_threads); ++i)
    bridges.push_back(spawn_bridge(sys, aenv));
  auto next_bridge = std::make_shared<std::atomic<size_t>>(0);
  auto [host, port] = split_listen(cfg.http.listen);
  http_server_options hopts;
  hopts.host = host;
  hopts.port = port;
  hopts.io_threads = cfg.http.io_threads;
  hopts.max_body_bytes = cfg.http.max_body_bytes;
  hopts.max_module_bytes = cfg.http.max_module_bytes;
  http_server http{hopts,
                   [bridges, next_bridge](http_exchange_ptr ex) {
                     auto i = next_bridge->fetch_add(1, std::memory_order_relaxed);
                     caf::anon_send(bridges[i % bridges.size()], std::move(ex));
                   },
                   &metrics};
  // Membership (heartbeat, self-fencing) and the rebalancer (adoption of
  // orphaned entities, and this node's own after a restart).
  self_node.caf_endpoint = split_listen(cfg.cluster.listen).first + ":" + std::to_string(caf_port);
  membership_env menv;
  menv.self_node = self_node;
  menv.registry = registry;
  menv.heartbeat = std::chrono::milliseconds(cfg.cluster.heartbeat_ms);
  menv.node_ttl = std::chrono::milliseconds(cfg.cluster.node_ttl_ms);
  menv.margin = std::chrono::milliseconds(
    std::min<uint32_t>(cfg.cluster.takeover_margin_ms, cfg.cluster.node_ttl_ms / 2));
  menv.listeners = {caf::actor_cast<caf::actor>(tenants), caf::actor_cast<caf::actor>(deployments),
                    caf::actor_cast<caf::actor>(approvals)};
  menv.metrics = &metrics;
  auto membership = spawn_membership(sys, menv);
  rebalancer_env rbenv;
  rbenv.node_id = cfg.node.id;
  rbenv.registry = registry;
  rbenv.store = *store;
  rbenv.deployments = deployments;
  rbenv.approvals = approvals;
  rbenv.interval = std::chrono::milliseconds(cfg.cluster.rebalance_ms);
  rbenv.grace = std::chrono::milliseconds(2 * cfg.cluster.heartbeat_ms);
  auto rebalancer = spawn_rebalancer(sys, rbenv);
  auto stop_all = [&] {
    http.stop();
    for (auto& b : bridges)
      self->send_exit(b, caf::exit_reason::user_shutdown);
    if (aenv.shared_limiter)
      self->send_exit(aenv.shared_limiter, caf::exit_reason::user_shutdown);
    self->send_exit(identity, caf::exit_reason::user_shutdown);
    self->send_exit(fleet, caf::exit_reason::user_shutdown);
    self->send_exit(catalog, caf::exit_reason::user_shutdown);
    sys.middleman().unpublish(invoker, caf_port);
    self->send_exit(invoker, caf::exit_reason::user_shutdown);
    self->send_exit(directory, caf::exit_reason::user_shutdown);
    self->send_exit(membership, caf::exit_reason::user_shutdown);
    self->send_exit(rebalancer, caf::exit_reason::user_shutdown);
    for (auto& [env, h] : hosts)
      self->send_exit(h, caf::exit_reason::user_shutdown);
    if (loader)
      self->send_exit(loader, caf::exit_reason::user_shutdown);
    self->send_exit(kdf, caf::exit_reason::user_shutdown);
    self->send_exit(tenants, caf::exit_reason::user_shutdown);
    self->send_exit(deployments, caf::exit_reason::user_shutdown);
    self->send_exit(approvals, caf::exit_reason::user_shutdown);
    self->send_exit(registry, caf::exit_reason::user_shutdown);
    stop_store();
  };
  auto bound = http.start();
  if (!bound) {
    log->error("http.listen: {}", error_detail(bound.error()));
    std::cerr << "hotswapd: http.listen: " << error_detail(bound.error()) << std::endl;
    stop_all();
    return exit_code::failure;
  }
  root_env renv;
  renv.http = &http;
  renv.tenants = tenants;
  renv.identity = identity;
  renv.membership = membership;
  renv.rebalancer = rebalancer;
  renv.others.push_back(caf::actor_cast<caf::actor>(directory));
  renv.deployments = deployments;
  renv.approvals = approvals;
  renv.others.push_back(caf::actor_cast<caf::actor>(catalog));
  renv.others.push_back(caf::actor_cast<caf::actor>(fleet));
  for (auto& [env, h] : hosts)
    renv.others.push_back(caf::actor_cast<caf::actor>(h));
  if (loader)
    renv.others.push_back(caf::actor_cast<caf::actor>(loader));
  renv.others.push_back(caf::actor_cast<caf::actor>(invoker));
  renv.others.push_back(caf::actor_cast<caf::actor>(membership));
  renv.drain_timeout = std::chrono::milliseconds(cfg.http.drain_timeout_ms);
  auto root = sys.spawn(node_root, renv);
  // What a previous run left unfinished resumes through the rebalancer's
  // first scan: every non-terminal deployment this node owns (or nobody
  // live owns) continues at its persisted step, every pending approval
  // re-arms its deadline.
  // The signal thread turns SIGTERM/SIGINT into a shutdown message.
  std::atomic<bool> root_done{false};
  std::thread signals{[&sigs, &root_done, root, log] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (!root_done.load())
      log->info("received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    caf::anon_send(root, shutdown_atom::value);
  }};
  auto url = "http://" + host + ":" + std::to_string(*bound);
  // Publish the endpoints actually bound (port 0 picks a free one).
  self_node.http_endpoint = host + ":" + std::to_string(*bound);
  self->send(fleet, renew_atom::value, self_node);
  self->send(membership, renew_atom::value, self_node);
  std::cout << "hotswapd: node " << cfg.node.id << " listening on " << url << std::endl;
  std::cout << "hotswapd: module invocations over CAF (node_invoker_actor) on "
            << split_listen(cfg.cluster.listen).first << ":" << caf_port << std::endl;
  if (cfg.node.dev_mode)
    std::cout << "hotswapd: development mode - log in with POST " << url
              << "/api/v1/authentication/login {\"username\":\"admin\",\"password\":\"Admin123!\"}"
              << " (all demo users: GET " << url << "/api/v1/authentication/demo-credentials)"
              << std::endl;
  log->info("node {} listening on {} (store {})", cfg.node.id, url, cfg.store.url);
  caf::error reason;
  self->monitor(root);
  self->receive([&](caf::down_msg& dm) { reason = dm.reason; });
  root_done = true;
  pthread_kill(signals.native_handle(), SIGTERM); // wakes sigwait if still waiting
  signals.join();
  // The last transitions' events reach the log before the node goes.
  self->request(events, std::chrono::seconds(3), done_atom::value)
    .receive([](ok_atom) {},
             [&](caf::error& err) {
               log->warn("events not all written to the log at shutdown: {}", error_detail(err));
             });
  self->send_exit(events, caf::exit_reason::user_shutdown);
  stop_all();
  if (reason && !is_orderly_exit(reason)) {
    log->error("node stopped after a failure: {} {}", to_string(errc_of(reason)),
               error_detail(reason));
    return exit_code::failure;
  }
  log->info("node {} stopped", cfg.node.id);
  spdlog::shutdown();
  return exit_code::ok;
}

} // namespace hotswap
