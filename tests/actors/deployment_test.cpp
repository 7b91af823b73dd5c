// The deployment actor's plan engine on CAF's deterministic coordinator, over
// a real SQLite store (in memory), the local registry and a real approval
// host. The workers are test doubles: typed module_host actors that record
// every command, keep a model of the loaded versions and weights per module,
// answer like the real host (idempotent, fenced per owner), report totals the
// test sets (canary analysis), and can be told to fail, hold (answer when the
// test releases) or never answer a given command kind.
#define CAF_SUITE deployment
#include "caf/test/dsl.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "hotswap/actors/approval.hpp"
#include "hotswap/actors/deployment.hpp"
#include "hotswap/actors/deployment_state.hpp"
#include "hotswap/actors/module_host.hpp"
#include "hotswap/actors/node.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/config/config.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/store.hpp"
#include "hotswap/runtime/store_actor.hpp"

using namespace hotswap;
using namespace std::chrono_literals;

/// CAF_CHECK with an explanation printed when it fails.
#define CHECK_MSG(cond, msg)                                                           \
  do {                                                                                 \
    bool ok_ = static_cast<bool>(cond);                                                \
    if (!ok_)                                                                          \
      CAF_TEST_PRINT_ERROR(msg);                                                       \
    static_cast<void>(::caf::test::detail::check(::caf::test::engine::current_test(),  \
                                                 __FILE__, __LINE__, #cond, false, ok_)); \
  } while (false)

#define REQUIRE_MSG(cond, msg)                                                         \
  do {                                                                                 \
    if (!(cond))                                                                       \
      CAF_FAIL(#cond << ": " << msg);                                                  \
  } while (false)

namespace {

// -- the worker test double -------------------------------------------------------------

/// One command a double received (logged on receipt, before it is checked).
struct received_command {
  std::string node;
  std::string kind;                          ///< stage | weights | retire | probe
  std::string module;
  std::string version;
  int32_t stage_weight = 0;
  std::map<std::string, uint32_t> weights;
  std::string owner;
  int64_t epoch = 0;
  bool refused = false;                      ///< fenced

  /// What the command asks for (without who asked and at which epoch).
  std::string signature() const {
    std::string s = node + " " + kind + " " + module + " " + version;
    if (kind == "stage")
      s += " w" + std::to_string(stage_weight);
    for (auto& [v, w] : weights)
      s += " " + v + "=" + std::to_string(w);
    return s;
  }
};

enum class reaction {
  answer, ///< apply and answer at once
  fail,   ///< answer an error, change nothing
  hold,   ///< keep it until the test releases it (then apply and answer)
  drop,   ///< never answer, change nothing
};

/// A command kept by the double: `apply` changes the model (once), `answer`
/// delivers the reply (inside the double only).
struct held_command {
  std::string kind;
  std::function<void()> apply;
  std::function<void()> answer;
};

struct sample {
  uint64_t invocations = 0;
  uint64_t errors = 0;
  double p95_ms = 0;
};

/// module -> version -> weight
using module_model = std::map<std::string, std::map<std::string, uint32_t>>;

/// The state of one double, shared with the test body.
struct worker_sim {
  std::string node;
  std::string environment;
  std::shared_ptr<std::vector<received_command>> log;      ///< shared by all doubles
  std::shared_ptr<std::map<std::string, caf::actor_addr>> senders; ///< owner -> last sender
  module_model loaded;
  std::map<std::string, int64_t> epochs;                    ///< highest epoch per owner
  std::map<std::string, std::map<std::string, sample>> totals; ///< module -> version -> totals
  std::map<std::string, sample> per_get;                    ///< version -> added per (get_atom)
  std::map<std::string, reaction> reactions;                ///< by command kind
  reaction otherwise = reaction::answer;
  std::vector<held_command> held;
  std::vector<held_command> dropped;
  size_t gets = 0;

  reaction reaction_for(const std::string& kind) const {
    auto i = reactions.find(kind);
    return i == reactions.end() ? otherwise : i->second;
  }

  version_view view(const std::string& module, const std::string& version) const {
    version_view v;
    v.version = version;
    v.state = "Active";
    if (auto m = loaded.find(module); m != loaded.end())
      if (auto x = m->second.find(version); x != m->second.end())
        v.weight = x->second;
    if (auto m = totals.find(module); m != totals.end())
      if (auto x = m->second.find(version); x != m->second.end()) {
        v.total_invocations = x->second.invocations;
        v.total_errors = x->second.errors;
        v.p95_ms = x->second.p95_ms;
      }
    return v;
  }

  module_view mview(const std::string& module) const {
    module_view out;
    out.name = module;
    if (auto m = loaded.find(module); m != loaded.end())
      for (auto& [v, w] : m->second)
        out.versions.push_back(view(module, v));
    return out;
  }
};

using sim_ptr = std::shared_ptr<worker_sim>;

/// The double's interface: a module_host plus (tick_atom) = "answer what you hold".
using fake_worker_actor = module_host_actor::extend<caf::reacts_to<tick_atom>>;

template <class T>
caf::result<T> react(fake_worker_actor::pointer self, sim_ptr w, const std::string& kind,
                     std::function<caf::expected<T>()> effect) {
  auto r = w->reaction_for(kind);
  if (r == reaction::fail)
    return caf::make_error(errc::internal, "injected failure of " + kind + " on " + w->node);
  if (r == reaction::answer) {
    auto x = effect();
    if (!x)
      return x.error();
    return std::move(*x);
  }
  auto rp = self->make_response_promise<T>();
  auto out = std::make_shared<caf::expected<T>>(caf::make_error(errc::internal, "not applied"));
  auto applied = std::make_shared<bool>(false);
  held_command h;
  h.kind = kind;
  h.apply = [=] {
    if (*applied)
      return;
    *applied = true;
    *out = effect();
  };
  h.answer = [=]() mutable {
    if (*out)
      rp.deliver(**out);
    else
      rp.deliver(out->error());
  };
  (r == reaction::hold ? w->held : w->dropped).push_back(std::move(h));
  return rp;
}

caf::error check_epoch(sim_ptr w, received_command& rc, const command_origin& o) {
  auto& seen = w->epochs[o.owner];
  if (o.epoch < seen) {
    rc.refused = true;
    return caf::make_error(errc::fenced, "epoch " + std::to_string(o.epoch) + " of " + o.owner
                                           + " is older than " + std::to_string(seen));
  }
  seen = o.epoch;
  return {};
}

fake_worker_actor::behavior_type fake_worker(fake_worker_actor::pointer self, sim_ptr w) {
  auto note = [=](const received_command& rc) {
    w->log->push_back(rc);
    if (!rc.owner.empty())
      (*w->senders)[rc.owner] = caf::actor_cast<caf::actor_addr>(self->current_sender());
  };
  auto logged = [=](std::string kind, std::string module, std::string version,
                    const command_origin& o) {
    received_command rc;
    rc.node = w->node;
    rc.kind = std::move(kind);
    rc.module = std::move(module);
    rc.version = std::move(version);
    rc.owner = o.owner;
    rc.epoch = o.epoch;
    return rc;
  };
  return {
    [=](sdk::invoke_atom, std::string& module, sdk::request& req) -> caf::result<invoke_result> {
      auto m = w->loaded.find(module);
      if (m == w->loaded.end() || m->second.empty())
        return caf::make_error(errc::not_found, "module " + module + " is not loaded");
      std::string best;
      uint32_t best_w = 0;
      for (auto& [v, wt] : m->second)
        if (wt > best_w) {
          best = v;
          best_w = wt;
        }
      if (best.empty())
        return caf::make_error(errc::unavailable, "no version of " + module + " takes traffic");
      invoke_result r;
      r.module = module;
      r.version = best;
      r.reply.payload = best + ":" + req.payload;
      return r;
    },
    [=](stage_atom, stage_command& cmd) -> caf::result<version_view> {
      auto rc = logged("stage", cmd.module, cmd.version, cmd.origin);
      rc.stage_weight = cmd.weight;
      auto err = check_epoch(w, rc, cmd.origin);
      note(rc);
      if (err)
        return err;
      return react<version_view>(self, w, "stage", [w, cmd]() -> caf::expected<version_view> {
        auto& m = w->loaded[cmd.module];
        if (m.count(cmd.version) == 0) {
          uint32_t total = 0;
          for (auto& [v, wt] : m)
            total += wt;
          m[cmd.version] = cmd.weight >= 0 ? static_cast<uint32_t>(cmd.weight)
                                           : (total == 0 ? 100u : 0u);
        }
        return w->view(cmd.module, cmd.version);
      });
    },
    [=](weights_atom, weights_command& cmd) -> caf::result<module_view> {
      auto rc = logged("weights", cmd.module, "", cmd.origin);
      rc.weights = cmd.weights;
      auto err = check_epoch(w, rc, cmd.origin);
      note(rc);
      if (err)
        return err;
      return react<module_view>(self, w, "weights", [w, cmd]() -> caf::expected<module_view> {
        // Like the real host (version_router::set_weights): a listed version
        // with a weight must be loaded (0 for an unloaded one is already
        // true), unlisted ones go to 0.
        auto m = w->loaded.find(cmd.module);
        if (m == w->loaded.end() || m->second.empty())
          return caf::make_error(errc::not_found, "module " + cmd.module + " is not loaded in "
                                                    + w->environment);
        for (auto& [v, wt] : cmd.weights)
          if (wt > 0 && m->second.count(v) == 0)
            return caf::make_error(errc::conflict, "version " + v + " is not loaded");
        for (auto& [v, wt] : m->second) {
          auto i = cmd.weights.find(v);
          wt = i == cmd.weights.end() ? 0 : i->second;
        }
        return w->mview(cmd.module);
      });
    },
    [=](retire_atom, retire_command& cmd) -> caf::result<ok_atom> {
      auto rc = logged("retire", cmd.module, cmd.version, cmd.origin);
      auto err = check_epoch(w, rc, cmd.origin);
      note(rc);
      if (err)
        return err;
      return react<ok_atom>(self, w, "retire", [w, cmd]() -> caf::expected<ok_atom> {
        auto m = w->loaded.find(cmd.module);
        if (m != w->loaded.end()) {
          m->second.erase(cmd.version);
          if (m->second.empty())
            w->loaded.erase(m);
        }
        return ok_atom::value;
      });
    },
    [=](get_atom) {
      ++w->gets;
      for (auto& [module, versions] : w->loaded)
        for (auto& [v, wt] : versions)
          if (auto i = w->per_get.find(v); i != w->per_get.end()) {
            auto& t = w->totals[module][v];
            t.invocations += i->second.invocations;
            t.errors += i->second.errors;
            t.p95_ms = i->second.p95_ms;
          }
      host_view hv;
      hv.node = w->node;
      hv.environment = w->environment;
      for (auto& [module, versions] : w->loaded)
        hv.modules.push_back(w->mview(module));
      return hv;
    },
    [=](probe_atom, std::string& module, std::string& version,
        sdk::request& req) -> caf::result<invoke_result> {
      command_origin o;
      if (req.caller.rfind("deployment:", 0) == 0)
        o.owner = req.caller.substr(11);
      auto rc = logged("probe", module, version, o);
      note(rc);
      auto failing = w->reaction_for("probe") == reaction::fail;
      if (failing) {
        // The real host answers a module's failure as a normal result.
        invoke_result r;
        r.module = module;
        r.version = version;
        r.reply.error = "injected probe failure on " + w->node;
        return r;
      }
      return react<invoke_result>(self, w, "probe",
                                  [w, module, version]() -> caf::expected<invoke_result> {
                                    auto m = w->loaded.find(module);
                                    if (m == w->loaded.end() || m->second.count(version) == 0)
                                      return caf::make_error(errc::not_found,
                                                             "module " + module + " " + version
                                                               + " is not loaded on " + w->node);
                                    invoke_result r;
                                    r.module = module;
                                    r.version = version;
                                    r.reply.payload = "ok";
                                    return r;
                                  });
    },
    [=](sdk::publish_atom, std::string&, std::string&, sdk::event&) {},
    [=](sdk::metric_atom, std::string&, std::string&, sdk::metric&) {},
    [=](retire_atom, std::string&, std::string&, uint64_t) {},
    [=](restore_atom) {},
    [=](tick_atom) {
      auto hs = std::move(w->held);
      w->held.clear();
      for (auto& h : hs) {
        h.apply();
        h.answer();
      }
    },
  };
}

// -- the fixture ------------------------------------------------------------------------------

struct test_config : caf::actor_system_config {
  test_config() {
    register_types(*this);
  }
};

using fleet = std::map<std::string, module_model>; ///< node -> model

struct fixture : test_coordinator_fixture<test_config> {
  std::shared_ptr<config::node_config> cfg;
  host_env henv;
  store_actor store;
  registry_actor registry;
  approval_host_actor approvals;
  deployment_host_actor host;
  std::string environment;
  std::vector<std::string> nodes;
  std::shared_ptr<std::vector<received_command>> log;
  std::shared_ptr<std::map<std::string, caf::actor_addr>> senders;
  std::map<std::string, sim_ptr> sims;
  std::vector<fake_worker_actor> workers;
  bool running = false;

  fixture() : cfg(std::make_shared<config::node_config>(config::default_config())) {
    for (auto& [name, e] : cfg->environments) {
      e.step_seconds = 5;
      e.min_samples = 20;
      e.bluegreen_keep_seconds = 5;
      e.rolling_batch_size = 2;
    }
    cfg->deployments.step_timeout_seconds = 5;
  }

  ~fixture() {
    stop();
  }

  /// A fresh world: store, registry, approval host, doubles and the deployment host.
  void start(std::string env_name = "Development",
             std::vector<std::string> node_ids = {"node-1", "node-2"}) {
    stop();
    environment = std::move(env_name);
    nodes = std::move(node_ids);
    auto db = open_store("sqlite://:memory:");
    CAF_REQUIRE(db);
    CAF_REQUIRE((*db)->migrate());
    store = spawn_store_worker(sys, std::move(*db), nullptr, false);
    node_info self_node;
    self_node.id = "node-a";
    registry = spawn_local_registry(sys, self_node);
    henv = host_env{};
    henv.node_id = "node-a";
    henv.store = store;
    henv.registry = registry;
    henv.restart.backoff_initial = 100ms;
    henv.restart.backoff_max = 1s;
    henv.restart.intensity = 5;
    henv.restart.period = 60s;
    henv.idle_timeout = 36000s;
    approvals = spawn_approval_host(sys, henv);
    log = std::make_shared<std::vector<received_command>>();
    senders = std::make_shared<std::map<std::string, caf::actor_addr>>();
    sims.clear();
    workers.clear();
    for (auto& n : nodes) {
      auto w = std::make_shared<worker_sim>();
      w->node = n;
      w->environment = environment;
      w->log = log;
      w->senders = senders;
      sims[n] = w;
      workers.push_back(sys.spawn(fake_worker, w));
    }
    spawn_host();
    running = true;
    put_module("echo", "1.0.0");
    put_module("echo", "2.0.0");
    put_module("billing", "1.0.0");
  }

  void spawn_host() {
    deployment_env denv;
    denv.host = henv;
    denv.cfg = cfg;
    std::map<std::string, worker_registry::list> dir;
    for (size_t i = 0; i < nodes.size(); ++i)
      dir[environment].emplace_back(nodes[i], module_host_actor{workers[i]});
    denv.workers = std::make_shared<worker_registry>();
    denv.workers->set(std::move(dir));
    denv.approvals = approvals;
    host = spawn_deployment_host(sys, denv);
    caf::anon_send(approvals, listen_atom::value, caf::actor_cast<approval_listener>(host));
    sched.run();
  }

  void stop() {
    if (!running)
      return;
    running = false;
    for (auto& [owner, addr] : *senders)
      caf::anon_send_exit(addr, caf::exit_reason::kill);
    std::vector<caf::actor> all{caf::actor_cast<caf::actor>(host),
                                caf::actor_cast<caf::actor>(approvals),
                                caf::actor_cast<caf::actor>(registry),
                                caf::actor_cast<caf::actor>(store)};
    for (auto& w : workers)
      all.push_back(caf::actor_cast<caf::actor>(w));
    for (auto& a : all)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    sched.run();
    // Pending timers (request timeouts, ticks) go to dead actors.
    sched.trigger_timeouts();
    sched.run();
  }

  // -- store ----------------------------------------------------------------------------------

  void put_module(const std::string& name, const std::string& version) {
    module_record rec;
    rec.name = name;
    rec.version = version;
    rec.digest = "sha256:" + name + "-" + version;
    rec.size = 4;
    rec.is_signed = true;
    rec.signature = "c2ln";
    rec.signer_key_id = "test-key";
    rec.abi_token = "test";
    rec.uploaded_by = "admin";
    rec.uploaded_at = now_millis();
    audit_event ev;
    ev.category = "Module";
    ev.action = "ModuleUploaded";
    ev.result = "Success";
    ev.entity_kind = "module";
    ev.entity_id = name + "@" + version;
    ev.actor_user = "admin";
    auto rh = self->request(store, caf::infinite, module_atom::value, put_atom::value, rec,
                            std::string{"code"}, ev);
    sched.run();
    rh.receive([](module_put_result&) {},
               [&](caf::error& e) { CAF_FAIL("module not stored: " << sys.render(e)); });
  }

  snapshot_record row(const std::string& id) {
    snapshot_record out;
    auto rh = self->request(store, caf::infinite, get_atom::value, std::string{"deployment"}, id);
    sched.run();
    rh.receive([&](snapshot_record& r) { out = r; }, [&](caf::error&) {});
    return out;
  }

  deploy::deployment record(const std::string& id) {
    deploy::deployment d;
    auto r = row(id);
    if (!r.body.empty())
      CAF_REQUIRE(deploy::from_json(r.body, d));
    return d;
  }

  std::vector<std::string> audit_actions(const std::string& id) {
    audit_query q;
    q.entity_kind = "deployment";
    q.entity_id = id;
    q.page_size = 100;
    std::vector<audit_event> evs;
    auto rh = self->request(store, caf::infinite, audit_atom::value, q);
    sched.run();
    rh.receive([&](std::vector<audit_event>& xs) { evs = std::move(xs); }, [&](caf::error&) {});
    std::sort(evs.begin(), evs.end(),
              [](const audit_event& a, const audit_event& b) { return a.id < b.id; });
    std::vector<std::string> out;
    for (auto& e : evs)
      out.push_back(e.action);
    return out;
  }

  // -- deployments ----------------------------------------------------------------------------

  request_ctx ctx(const std::string& user = "alice") {
    return {"u-" + user, user, "", "trace-" + user, "127.0.0.1"};
  }

  std::string make_record(const std::string& id, const std::string& module,
                          const std::string& version, deploy::strategy_kind s) {
    auto& e = cfg->environments.at(environment);
    deploy::deployment d;
    d.execution_id = id;
    d.module_name = module;
    d.version = version;
    d.environment = environment;
    d.strategy = s;
    d.status = "Pending";
    d.start = now_millis();
    d.requester_email = "alice@acme.io";
    d.requested_by = "alice";
    d.requested_by_id = "u-alice";
    d.trace_id = "trace-" + id;
    d.needs_approval = e.approval == "always";
    d.canary.steps = e.canary_steps;
    d.canary.step_seconds = e.step_seconds;
    d.canary.max_error_rate_increase_percent = e.max_error_rate_increase_percent;
    d.canary.max_latency_increase_percent = e.max_latency_increase_percent;
    d.canary.min_samples = e.min_samples;
    d.canary.inconclusive = e.inconclusive;
    d.stages = deploy::initial_stages(environment, d.needs_approval, s);
    return deploy::to_json(d);
  }

  /// Creates a deployment and runs the coordinator (not the clock).
  caf::expected<std::string> create(const std::string& id, const std::string& module,
                                    const std::string& version,
                                    deploy::strategy_kind s = deploy::strategy_kind::direct) {
    caf::expected<std::string> result{caf::make_error(errc::internal, "no answer")};
    auto rh = self->request(host, caf::infinite, create_atom::value, id,
                            make_record(id, module, version, s), ctx());
    sched.run();
    rh.receive([&](std::string& x) { result = std::move(x); },
               [&](caf::error& e) { result = e; });
    return result;
  }

  host_stats stats() {
    host_stats out;
    auto rh = self->request(host, caf::infinite, stats_atom::value);
    sched.run();
    rh.receive([&](host_stats& s) { out = s; }, [&](caf::error&) {});
    return out;
  }

  // -- the doubles ----------------------------------------------------------------------------

  /// Loads `version` of `module` at 100 % on every node (the live version).
  void seed(const std::string& module, const std::string& version) {
    for (auto& [n, w] : sims)
      w->loaded[module][version] = 100;
  }

  void react_all(reaction r) {
    for (auto& [n, w] : sims)
      w->otherwise = r;
  }

  size_t held() const {
    size_t n = 0;
    for (auto& [id, w] : sims)
      n += w->held.size();
    return n;
  }

  void release() {
    for (size_t i = 0; i < nodes.size(); ++i)
      if (!sims[nodes[i]]->held.empty())
        caf::anon_send(workers[i], tick_atom::value);
    sched.run();
  }

  fleet models() const {
    fleet out;
    for (auto& [n, w] : sims)
      out[n] = w->loaded;
    return out;
  }

  std::vector<std::string> signatures(size_t from = 0, size_t to = SIZE_MAX) const {
    std::vector<std::string> out;
    for (size_t i = from; i < std::min(to, log->size()); ++i)
      out.push_back((*log)[i].signature());
    return out;
  }

  size_t commands_of(const std::string& owner) const {
    return static_cast<size_t>(std::count_if(log->begin(), log->end(), [&](auto& c) {
      return c.owner == owner;
    }));
  }

  /// Drives a deployment: at every quiet point (nothing left to run) checks
  /// `stop`, answers held commands, else advances the clock by a second.
  /// Returns the last record seen.
  deploy::deployment drive(const std::string& id,
                           std::function<bool(const deploy::deployment&)> stop = nullptr,
                           int max_rounds = 1000) {
    deploy::deployment d;
    for (int i = 0; i < max_rounds; ++i) {
      sched.run();
      d = record(id);
      if (stop && stop(d))
        return d;
      if (deploy::is_terminal(d.status) && held() == 0)
        return d;
      if (held() > 0)
        release();
      else
        sched.advance_time(1s);
    }
    CAF_FAIL("deployment " << id << " did not settle; status " << d.status << ", cursor "
                           << d.cursor);
    return d;
  }

  /// Kills the deployment actor of `id` and the host (a node crash), then
  /// starts a new host on the same store and activates the deployment.
  void crash_and_resume(const std::string& id) {
    caf::anon_send_exit(host, caf::exit_reason::kill);
    sched.run();
    auto child = (*senders)[id];
    CAF_REQUIRE(child);
    caf::anon_send_exit(child, caf::exit_reason::kill);
    sched.run();
    spawn_host();
    caf::anon_send(host, resume_atom::value, id);
    sched.run();
  }
};

std::string describe(const fleet& f) {
  std::ostringstream os;
  for (auto& [n, mods] : f) {
    os << n << "{";
    for (auto& [m, vs] : mods) {
      os << m << ":";
      for (auto& [v, w] : vs)
        os << v << "=" << w << ",";
    }
    os << "} ";
  }
  return os.str();
}

std::string join(const std::vector<std::string>& xs) {
  std::string out;
  for (auto& x : xs)
    out += "\n    " + x;
  return out;
}

const deploy::stage_view* stage_of(const deploy::deployment& d, const std::string& prefix) {
  for (auto& s : d.stages)
    if (s.name.rfind(prefix, 0) == 0)
      return &s;
  return nullptr;
}

std::string command_kind_of(deploy::step_kind k) {
  switch (k) {
    case deploy::step_kind::stage:
      return "stage";
    case deploy::step_kind::weights:
      return "weights";
    case deploy::step_kind::retire:
      return "retire";
    case deploy::step_kind::smoke:
    case deploy::step_kind::verify:
      return "probe";
    default:
      return "none";
  }
}

bool started_at(const deploy::deployment& d, int32_t k) {
  return d.status == "Running" && d.cursor == k && d.step_started;
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(deployment_tests, fixture)

// -- 1. persist before act --------------------------------------------------------------------

CAF_TEST(a direct deployment persists each step started and done before the next command) {
  start();
  seed("echo", "1.0.0");
  react_all(reaction::hold);
  CAF_REQUIRE(create("d-1", "echo", "2.0.0"));
  size_t checked = 0;
  std::vector<int32_t> cursors; // the persisted cursor at each command
  for (int round = 0; round < 100 && held() > 0; ++round) {
    auto d = record("d-1");
    CAF_REQUIRE_EQUAL(d.plan.size(), 4u);
    for (; checked < log->size(); ++checked) {
      auto& c = (*log)[checked];
      CAF_CHECK_EQUAL(c.owner, "d-1");
      CAF_CHECK_EQUAL(d.status, "Running");
      cursors.push_back(d.cursor);
      if (static_cast<size_t>(d.cursor) < d.plan.size()) {
        auto& s = d.plan[static_cast<size_t>(d.cursor)];
        CHECK_MSG(d.step_started, "step " << d.cursor << " (" << s.label
                                                  << ") not persisted as started before "
                                                  << c.signature());
        CAF_CHECK_EQUAL(c.kind, command_kind_of(s.kind));
        CAF_CHECK_EQUAL(c.version, c.kind == "weights" ? std::string{} : s.version);
      } else {
        // The validation probes come after "deployed" and "Validation Running".
        CAF_CHECK_EQUAL(c.kind, "probe");
        CAF_REQUIRE(stage_of(d, "Validation") != nullptr);
        CAF_CHECK_EQUAL(stage_of(d, "Validation")->status, "Running");
        CAF_CHECK_EQUAL(stage_of(d, "Deploy to")->status, "Succeeded");
      }
    }
    release();
  }
  CAF_CHECK_EQUAL(held(), 0u);
  // Two nodes: every step's commands went out at the cursor of that step.
  CAF_CHECK_EQUAL(cursors, (std::vector<int32_t>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4}));
  auto d = record("d-1");
  CAF_CHECK_EQUAL(d.status, "Succeeded");
  CAF_CHECK_EQUAL(d.cursor, 4);
  CAF_CHECK(!d.step_started);
  for (auto& s : d.stages)
    CHECK_MSG(s.status == "Succeeded", s.name << " is " << s.status);
  auto expected = fleet{{"node-1", {{"echo", {{"2.0.0", 100}}}}},
                        {"node-2", {{"echo", {{"2.0.0", 100}}}}}};
  CHECK_MSG(models() == expected, describe(models()));
  auto actions = audit_actions("d-1");
  std::vector<std::string> want{"DeploymentCreated", "DeploymentStarted", "SecurityScanPassed",
                                "DeploymentPlanned"};
  for (int i = 0; i < 4; ++i) {
    want.push_back("DeploymentStepStarted");
    want.push_back("DeploymentStepDone");
  }
  want.push_back("DeploymentDeployed");
  want.push_back("DeploymentSucceeded");
  CHECK_MSG(actions == want, "audit trail:" << join(actions));
  // The slot is free again and the actor stopped (terminal).
  CAF_CHECK_EQUAL(stats().active, 0);
}

// -- 2. resume from every persisted step -------------------------------------------------------

namespace {

struct reference_run {
  std::vector<std::string> log;
  std::vector<size_t> step_begin; ///< index in `log` where step k's commands begin
  fleet final_model;
  size_t plan_size = 0;
};

} // namespace

CAF_TEST(a deployment resumes from each persisted step of every strategy) {
  using deploy::strategy_kind;
  const std::vector<std::string> three{"node-1", "node-2", "node-3"};
  auto setup = [&] {
    start("Development", three);
    seed("echo", "1.0.0");
    for (auto& [n, w] : sims) {
      w->per_get["2.0.0"] = sample{20, 0, 5};
      w->per_get["1.0.0"] = sample{20, 0, 5};
    }
    react_all(reaction::hold);
  };
  for (auto s : {strategy_kind::direct, strategy_kind::rolling, strategy_kind::blue_green,
                 strategy_kind::canary}) {
    auto sname = deploy::to_string(s);
    // The run without a crash.
    reference_run ref;
    setup();
    CAF_REQUIRE(create("d-1", "echo", "2.0.0", s));
    std::map<int32_t, size_t> begins;
    auto d = drive("d-1", [&](const deploy::deployment& x) {
      if (x.status == "Running" && x.step_started && begins.count(x.cursor) == 0)
        begins[x.cursor] = log->size() - held();
      return false;
    });
    CAF_REQUIRE_EQUAL(d.status, "Succeeded");
    ref.log = signatures();
    ref.final_model = models();
    ref.plan_size = d.plan.size();
    for (size_t k = 0; k < ref.plan_size; ++k) {
      REQUIRE_MSG(begins.count(static_cast<int32_t>(k)) == 1,
                          sname << ": step " << k << " never seen started");
      ref.step_begin.push_back(begins[static_cast<int32_t>(k)]);
    }
    CAF_MESSAGE(sname << ": plan of " << ref.plan_size << " steps, " << ref.log.size()
                      << " commands, final " << describe(ref.final_model));
    auto want_final = fleet{};
    for (auto& n : three)
      want_final[n]["echo"]["2.0.0"] = 100;
    CHECK_MSG(ref.final_model == want_final, sname << ": " << describe(ref.final_model));
    // A crash at each step: before the workers applied the step's commands,
    // and after they applied them but before the answers arrived.
    for (bool applied : {false, true}) {
      for (size_t k = 0; k < ref.plan_size; ++k) {
        auto where = sname + " step " + std::to_string(k) + (applied ? " (applied)" : "");
        setup();
        CAF_REQUIRE(create("d-1", "echo", "2.0.0", s));
        auto at = drive("d-1", [&](const deploy::deployment& x) {
          return started_at(x, static_cast<int32_t>(k));
        });
        REQUIRE_MSG(started_at(at, static_cast<int32_t>(k)), where << ": not reached");
        auto pre = log->size();
        CAF_CHECK_EQUAL(pre - held(), ref.step_begin[k]);
        CHECK_MSG(signatures(0, pre)
                    == std::vector<std::string>(ref.log.begin(),
                                                ref.log.begin()
                                                  + static_cast<std::ptrdiff_t>(
                                                    std::min(pre, ref.log.size()))),
                  where << ": the run before the crash differs");
        int64_t old_epoch = 0;
        for (auto& c : *log)
          old_epoch = std::max(old_epoch, c.epoch);
        for (auto& [n, w] : sims) {
          if (applied)
            for (auto& h : w->held)
              h.apply();
          w->held.clear(); // the answers are lost with the crash
        }
        crash_and_resume("d-1");
        auto end = drive("d-1");
        CHECK_MSG(end.status == "Succeeded", where << ": ended " << end.status << ": "
                                                           << end.message);
        auto post = signatures(pre);
        auto want = std::vector<std::string>(ref.log.begin()
                                               + static_cast<std::ptrdiff_t>(ref.step_begin[k]),
                                             ref.log.end());
        CHECK_MSG(post == want, where << ": commands after the resume:" << join(post)
                                              << "\n  expected:" << join(want));
        for (size_t i = pre; i < log->size(); ++i)
          if ((*log)[i].kind != "probe")
            CHECK_MSG((*log)[i].epoch > old_epoch,
                              where << ": " << (*log)[i].signature() << " at old epoch");
        CHECK_MSG(models() == ref.final_model, where << ": " << describe(models()));
      }
    }
  }
}

CAF_TEST(a rollback resumes from each persisted rollback step) {
  // Direct with a previous version; the verify probe fails on node-2, so the
  // rollback restores 1.0.0 at 100 % and retires 2.0.0 (two steps).
  auto setup = [&] {
    start();
    seed("echo", "1.0.0");
    react_all(reaction::hold);
    sims["node-2"]->reactions["probe"] = reaction::fail;
  };
  auto rolling_back_at = [](const deploy::deployment& x, int32_t k) {
    return x.status == "RollingBack" && x.rollback_cursor == k && x.rollback_started;
  };
  setup();
  CAF_REQUIRE(create("d-1", "echo", "2.0.0"));
  std::map<int32_t, size_t> begins;
  auto d = drive("d-1", [&](const deploy::deployment& x) {
    if (x.status == "RollingBack" && x.rollback_started && begins.count(x.rollback_cursor) == 0)
      begins[x.rollback_cursor] = log->size() - held();
    return false;
  });
  CAF_REQUIRE_EQUAL(d.status, "Failed");
  CAF_REQUIRE_EQUAL(d.rollback.size(), 2u);
  CAF_REQUIRE_EQUAL(begins.size(), 2u);
  auto ref = signatures();
  auto ref_model = models();
  auto want_model = fleet{{"node-1", {{"echo", {{"1.0.0", 100}}}}},
                          {"node-2", {{"echo", {{"1.0.0", 100}}}}}};
  CHECK_MSG(ref_model == want_model, describe(ref_model));
  for (bool applied : {false, true}) {
    for (int32_t k = 0; k < 2; ++k) {
      auto where = "rollback step " + std::to_string(k) + (applied ? " (applied)" : "");
      setup();
      CAF_REQUIRE(create("d-1", "echo", "2.0.0"));
      auto at = drive("d-1", [&](const deploy::deployment& x) { return rolling_back_at(x, k); });
      REQUIRE_MSG(rolling_back_at(at, k), where << ": not reached");
      auto pre = log->size();
      CAF_CHECK_EQUAL(pre - held(), begins[k]);
      for (auto& [n, w] : sims) {
        if (applied)
          for (auto& h : w->held)
            h.apply();
        w->held.clear();
      }
      crash_and_resume("d-1");
      auto end = drive("d-1");
      CHECK_MSG(end.status == "Failed" && end.message.find("rolled back") != std::string::npos,
                where << ": ended " << end.status << ": " << end.message);
      auto post = signatures(pre);
      auto want = std::vector<std::string>(ref.begin() + static_cast<std::ptrdiff_t>(begins[k]),
                                           ref.end());
      CHECK_MSG(post == want, where << ": commands after the resume:" << join(post)
                                    << "\n  expected:" << join(want));
      CHECK_MSG(models() == ref_model, where << ": " << describe(models()));
    }
  }
}

// -- 3. canary analysis -------------------------------------------------------------------------

CAF_TEST(canary errors above the threshold roll back and fail with the previous version live) {
  start();
  seed("echo", "1.0.0");
  for (auto& [n, w] : sims) {
    w->per_get["2.0.0"] = sample{20, 10, 5}; // 50 % errors
    w->per_get["1.0.0"] = sample{20, 0, 5};
  }
  CAF_REQUIRE(create("d-1", "echo", "2.0.0", deploy::strategy_kind::canary));
  auto d = drive("d-1", [](const deploy::deployment& x) { return started_at(x, 2); });
  CAF_REQUIRE(d.plan[2].kind == deploy::step_kind::analyze);
  react_all(reaction::hold); // to see the record while the rollback runs
  d = drive("d-1", [](const deploy::deployment& x) { return x.status != "Running"; });
  CAF_CHECK_EQUAL(d.status, "RollingBack");
  CAF_CHECK_EQUAL(d.rollback_outcome, "Failed");
  CAF_CHECK(d.rollback_reason.find("canary analysis at 10 %") != std::string::npos);
  CAF_CHECK(d.rollback_reason.find("error rate") != std::string::npos);
  CAF_REQUIRE_EQUAL(d.rollback.size(), 2u);
  CAF_CHECK(d.rollback[0].kind == deploy::step_kind::weights);
  CAF_CHECK(d.rollback[1].kind == deploy::step_kind::retire);
  CAF_CHECK_EQUAL(stage_of(d, "Deploy to")->status, "Failed");
  d = drive("d-1");
  CAF_CHECK_EQUAL(d.status, "Failed");
  CAF_CHECK(d.message.find("rolled back") != std::string::npos);
  auto expected = fleet{{"node-1", {{"echo", {{"1.0.0", 100}}}}},
                        {"node-2", {{"echo", {{"1.0.0", 100}}}}}};
  CHECK_MSG(models() == expected, describe(models()));
  auto actions = audit_actions("d-1");
  CAF_CHECK(std::find(actions.begin(), actions.end(), "DeploymentRollingBack") != actions.end());
  CAF_CHECK_EQUAL(actions.back(), "DeploymentFailed");
}

CAF_TEST(a canary below min samples waits another window then passes with enough traffic) {
  cfg->environments["Development"].inconclusive = "extend";
  start();
  seed("echo", "1.0.0");
  CAF_REQUIRE(create("d-1", "echo", "2.0.0", deploy::strategy_kind::canary));
  auto d = drive("d-1", [](const deploy::deployment& x) { return started_at(x, 2); });
  CAF_REQUIRE(d.plan[2].kind == deploy::step_kind::analyze);
  sched.run(); // the window is open
  auto set_totals = [&](uint64_t canary, uint64_t baseline) {
    for (auto& [n, w] : sims) {
      w->totals["echo"]["2.0.0"] = sample{canary, 0, 5};
      w->totals["echo"]["1.0.0"] = sample{baseline, 0, 5};
    }
  };
  set_totals(5, 50); // 10 canary invocations of 20
  sched.advance_time(5s);
  sched.run();
  d = record("d-1");
  CAF_CHECK(started_at(d, 2)); // still analyzing
  set_totals(15, 150); // 30 of 20
  sched.advance_time(5s);
  sched.run();
  d = record("d-1");
  CAF_CHECK_EQUAL(d.status, "Running");
  CAF_CHECK_GREATER(d.cursor, 2);
  // The next windows get traffic too.
  for (auto& [n, w] : sims) {
    w->per_get["2.0.0"] = sample{20, 0, 5};
    w->per_get["1.0.0"] = sample{20, 0, 5};
  }
  d = drive("d-1");
  CAF_CHECK_EQUAL(d.status, "Succeeded");
}

CAF_TEST(a canary without traffic on either version waits the window then fails as inconclusive) {
  start();
  seed("echo", "1.0.0");
  CAF_REQUIRE_EQUAL(cfg->environments["Development"].inconclusive, "fail");
  CAF_REQUIRE(create("d-1", "echo", "2.0.0", deploy::strategy_kind::canary));
  auto d = drive("d-1", [](const deploy::deployment& x) { return started_at(x, 2); });
  sched.run();
  sched.advance_time(4s);
  sched.run();
  CAF_CHECK(started_at(record("d-1"), 2)); // waits for the window
  sched.advance_time(1s);
  sched.run();
  d = drive("d-1");
  CAF_CHECK_EQUAL(d.status, "Failed");
  CHECK_MSG(d.message.find("inconclusive") != std::string::npos, d.message);
  auto expected = fleet{{"node-1", {{"echo", {{"1.0.0", 100}}}}},
                        {"node-2", {{"echo", {{"1.0.0", 100}}}}}};
  CHECK_MSG(models() == expected, describe(models()));
}

// -- 4. step timeouts -----------------------------------------------------------------------------

CAF_TEST(a first version whose stage is never answered fails after the step timeout) {
  start();
  sims["node-2"]->reactions["stage"] = reaction::drop;
  CAF_REQUIRE(create("d-1", "echo", "2.0.0"));
  CAF_CHECK(started_at(record("d-1"), 0));
  sched.advance_time(4s);
  sched.run();
  CAF_CHECK(started_at(record("d-1"), 0));
  sched.advance_time(1s);
  auto d = drive("d-1");
  CAF_CHECK_EQUAL(d.status, "Failed");
  CHECK_MSG(d.message.find("stage echo 2.0.0") != std::string::npos, d.message);
  CHECK_MSG(d.message.find("rolled back") != std::string::npos, d.message);
  CAF_CHECK_EQUAL(d.rollback_cursor, static_cast<int32_t>(d.rollback.size()));
  CAF_CHECK(models() == fleet({{"node-1", {}}, {"node-2", {}}}));
}

CAF_TEST(a stage never answered on one node rolls back to the previous version everywhere) {
  start();
  seed("echo", "1.0.0");
  sims["node-2"]->reactions["stage"] = reaction::drop;
  CAF_REQUIRE(create("d-1", "echo", "2.0.0"));
  sched.advance_time(5s);
  auto d = drive("d-1");
  CAF_CHECK_EQUAL(d.status, "Failed");
  CHECK_MSG(d.message.find("rolled back") != std::string::npos, d.message);
  CAF_CHECK_EQUAL(d.rollback_cursor, static_cast<int32_t>(d.rollback.size()));
  auto expected = fleet{{"node-1", {{"echo", {{"1.0.0", 100}}}}},
                        {"node-2", {{"echo", {{"1.0.0", 100}}}}}};
  CHECK_MSG(models() == expected, describe(models()));
  // The restore (1.0.0=100, 2.0.0=0) succeeded at once on node-2, where
  // 2.0.0 never loaded: no rollback retries.
  size_t restores = 0;
  for (auto& c : *log)
    if (c.kind == "weights" && c.node == "node-2")
      ++restores;
  CHECK_MSG(restores == 1, restores << " weights commands to node-2");
}

// -- 5. fencing -----------------------------------------------------------------------------------

CAF_TEST(a deployment whose entity was claimed by another owner is fenced and stops) {
  start();
  seed("echo", "1.0.0");
  react_all(reaction::hold);
  CAF_REQUIRE(create("d-1", "echo", "2.0.0"));
  CAF_REQUIRE(started_at(record("d-1"), 0));
  CAF_REQUIRE_EQUAL(held(), 2u);
  auto child = caf::actor_cast<caf::actor>((*senders)["d-1"]);
  CAF_REQUIRE(child);
  self->monitor(child);
  auto before = row("d-1");
  auto rh = self->request(store, caf::infinite, claim_atom::value, std::string{"deployment"},
                          std::string{"d-1"}, std::string{"node-b"});
  sched.run();
  rh.receive([&](claim_result& cr) { CAF_CHECK_EQUAL(cr.epoch, before.epoch + 1); },
             [](caf::error&) { CAF_FAIL("claim failed"); });
  auto commands = log->size();
  release(); // the stage answers; "step 0 done" is fenced
  sched.advance_time(30s);
  sched.run();
  sched.advance_time(30s);
  sched.run();
  bool stopped = false;
  self->receive(
    [&](caf::down_msg& dm) {
      stopped = true;
      CAF_CHECK_EQUAL(errc_of(dm.reason), errc::fenced);
    },
    caf::after(std::chrono::seconds(0)) >> [] {});
  CAF_CHECK(stopped);
  CAF_CHECK_EQUAL(log->size(), commands); // nothing more from the fenced owner
  auto after = row("d-1");
  CAF_CHECK_EQUAL(after.epoch, before.epoch + 1);
  CAF_CHECK_EQUAL(after.seq, before.seq);
  CAF_CHECK_EQUAL(after.body, before.body);
  CAF_CHECK_EQUAL(stats().fenced, 1);
  CAF_CHECK_EQUAL(stats().restarts, 0);
}

// -- 6. run slots ---------------------------------------------------------------------------------

CAF_TEST(with one run slot a second deployment stays pending until the first finishes) {
  cfg->deployments.max_running_per_node = 1;
  start();
  react_all(reaction::hold);
  CAF_REQUIRE(create("d-a", "echo", "2.0.0"));
  CAF_REQUIRE(started_at(record("d-a"), 0));
  auto view = create("d-b", "billing", "1.0.0");
  CAF_REQUIRE(view);
  CAF_CHECK(view->find("\"Pending\"") != std::string::npos);
  // Time passes; the first one is held at its first step.
  sched.advance_time(2s);
  sched.run();
  auto b = record("d-b");
  CAF_CHECK_EQUAL(b.status, "Pending");
  CAF_CHECK(b.plan.empty());
  CAF_CHECK_EQUAL(commands_of("d-b"), 0u);
  auto a = drive("d-a", [](const deploy::deployment& x) { return deploy::is_terminal(x.status); });
  CAF_CHECK_EQUAL(a.status, "Succeeded");
  size_t last_a = 0;
  for (size_t i = 0; i < log->size(); ++i)
    if ((*log)[i].owner == "d-a")
      last_a = i;
  b = drive("d-b");
  CAF_CHECK_EQUAL(b.status, "Succeeded");
  size_t first_b = log->size();
  for (size_t i = 0; i < log->size(); ++i)
    if ((*log)[i].owner == "d-b") {
      first_b = i;
      break;
    }
  CAF_CHECK_GREATER(commands_of("d-b"), 0u);
  CAF_CHECK_GREATER(first_b, last_a);
  auto fleet_now = models();
  CAF_CHECK_EQUAL(fleet_now["node-1"]["billing"]["1.0.0"], 100u);
  CAF_CHECK_EQUAL(fleet_now["node-2"]["echo"]["2.0.0"], 100u);
}

CAF_TEST(a fenced deployment gives its run slot back) {
  cfg->deployments.max_running_per_node = 1;
  start();
  react_all(reaction::hold);
  CAF_REQUIRE(create("d-a", "echo", "2.0.0"));
  CAF_REQUIRE(started_at(record("d-a"), 0));
  auto rh = self->request(store, caf::infinite, claim_atom::value, std::string{"deployment"},
                          std::string{"d-a"}, std::string{"node-b"});
  sched.run();
  rh.receive([](claim_result&) {}, [](caf::error&) { CAF_FAIL("claim failed"); });
  release(); // d-a's next persist is fenced: it stops; node-b owns it now
  CAF_CHECK_EQUAL(stats().fenced, 1);
  CAF_CHECK_EQUAL(stats().active, 0);
  react_all(reaction::answer);
  CAF_REQUIRE(create("d-b", "billing", "1.0.0"));
  sched.advance_time(5s);
  sched.run();
  auto b = record("d-b");
  CHECK_MSG(b.status == "Succeeded",
            "d-b is " << b.status << ": the fenced d-a still holds the only run slot");
}

// -- 7. approval ----------------------------------------------------------------------------------

CAF_TEST(a production deployment waits for its approval and runs once approved) {
  start("Production");
  CAF_REQUIRE_EQUAL(cfg->environments["Production"].approval, "always");
  CAF_REQUIRE(create("d-1", "echo", "2.0.0", deploy::strategy_kind::canary));
  sched.advance_time(10s);
  sched.run();
  auto d = record("d-1");
  CAF_CHECK_EQUAL(d.status, "PendingApproval");
  CAF_REQUIRE(stage_of(d, "Approval") != nullptr);
  CAF_CHECK_EQUAL(stage_of(d, "Approval")->status, "WaitingForApproval");
  CAF_CHECK_EQUAL(log->size(), 0u);
  approval_decision yes;
  yes.approve = true;
  yes.user_id = "u-bob";
  yes.username = "bob";
  yes.reason = "ship it";
  auto rh = self->request(approvals, caf::infinite, decide_atom::value, std::string{"d-1"}, yes,
                          ctx("bob"));
  sched.run();
  rh.receive([](approval& a) { CAF_CHECK_EQUAL(a.status, "Approved"); },
             [&](caf::error& e) { CAF_FAIL("approve failed: " << sys.render(e)); });
  d = drive("d-1");
  CAF_CHECK_EQUAL(d.status, "Succeeded");
  CAF_CHECK_EQUAL(stage_of(d, "Approval")->status, "Succeeded");
  CAF_CHECK(stage_of(d, "Approval")->message.find("bob") != std::string::npos);
  auto fleet_now = models();
  CAF_CHECK_EQUAL(fleet_now["node-1"]["echo"]["2.0.0"], 100u);
  CAF_CHECK_EQUAL(fleet_now["node-2"]["echo"]["2.0.0"], 100u);
}

CAF_TEST(a rejected production deployment fails at the approval stage without touching workers) {
  start("Production");
  CAF_REQUIRE(create("d-1", "echo", "2.0.0", deploy::strategy_kind::canary));
  CAF_REQUIRE_EQUAL(record("d-1").status, "PendingApproval");
  approval_decision no;
  no.approve = false;
  no.user_id = "u-bob";
  no.username = "bob";
  no.reason = "not now";
  auto rh = self->request(approvals, caf::infinite, decide_atom::value, std::string{"d-1"}, no,
                          ctx("bob"));
  sched.run();
  rh.receive([](approval& a) { CAF_CHECK_EQUAL(a.status, "Rejected"); },
             [&](caf::error& e) { CAF_FAIL("reject failed: " << sys.render(e)); });
  auto d = drive("d-1");
  CAF_CHECK_EQUAL(d.status, "Failed");
  CAF_CHECK_EQUAL(stage_of(d, "Approval")->status, "Failed");
  CAF_CHECK(stage_of(d, "Approval")->message.find("rejected by bob") != std::string::npos);
  for (auto name : {"Security Scan", "Deploy to", "Validation"})
    CAF_CHECK_EQUAL(stage_of(d, name)->status, "Skipped");
  CAF_CHECK_EQUAL(log->size(), 0u);
  auto actions = audit_actions("d-1");
  CAF_REQUIRE(!actions.empty());
  CAF_CHECK_EQUAL(actions.back(), "DeploymentRejected");
}

CAF_TEST_FIXTURE_SCOPE_END()
