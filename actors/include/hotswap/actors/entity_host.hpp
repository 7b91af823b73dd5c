#pragma once

// The machinery every entity host shares (tenants now; deployments and
// approvals later): activation through the registry and the store (which
// issues the fencing epoch), a queue of commands while an entity activates or
// restarts, restart from the last snapshot with backoff and an intensity
// limit, and release of ownership on passivation.
//
// A host is a typed actor whose state derives from entity_host_state<Child>;
// its handlers call with_child(). Children are spawned monitored by the host.

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "caf/actor_addr.hpp"
#include "caf/system_messages.hpp"
#include "caf/exit_reason.hpp"
#include "caf/local_actor.hpp"
#include "caf/sec.hpp"
#include "caf/send.hpp"

#include "hotswap/actors/supervision.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/metrics.hpp"
#include "hotswap/runtime/store_actor.hpp"

namespace hotswap {

/// What every host needs from its node.
struct host_env {
  std::string node_id;
  store_actor store;
  registry_actor registry;
  node_metrics* metrics = nullptr;   ///< may be null in tests
  restart_policy_config restart;
  std::chrono::milliseconds idle_timeout{300000};
  std::chrono::milliseconds call_timeout{10000}; ///< store/registry calls
};

/// Counts what a host did, for tests and /ready.
struct host_stats {
  int64_t active = 0;
  int64_t activations = 0;
  int64_t restarts = 0;
  int64_t fenced = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, host_stats& x) {
  return f(caf::meta::type_name("host_stats"), x.active, x.activations, x.restarts, x.fenced);
}

/// True when an exit reason means "stopped on purpose" (passivation).
inline bool is_orderly_exit(const caf::error& reason) {
  return !reason || reason == caf::exit_reason::normal
         || reason == caf::exit_reason::user_shutdown;
}

template <class Child>
struct entity_host_state {
  struct waiter {
    std::function<void(const Child&)> run;
    std::function<void(const caf::error&)> fail;
  };
  struct child_entry {
    Child handle;
    int64_t epoch = 0;
  };

  /// Spawns the child for a claimed entity; given the host, the id and the
  /// claim (epoch + snapshot).
  using spawner = std::function<Child(caf::local_actor*, const std::string&, const claim_result&)>;

  std::string kind;
  host_env env;
  spawner spawn_child;
  restart_policy policy;
  std::map<std::string, child_entry> children;
  std::map<std::string, std::vector<waiter>> waiting; ///< activating or restarting
  std::set<std::string> restarting;                   ///< waiting out a backoff
  std::set<std::string> activating;                   ///< claim in progress
  host_stats stats;
  bool passivating = false;
  std::function<void()> on_all_passivated;

  void init(std::string k, host_env e, spawner s) {
    kind = std::move(k);
    env = std::move(e);
    spawn_child = std::move(s);
    policy = restart_policy{env.restart};
  }

  void set_active_gauge() {
    stats.active = static_cast<int64_t>(children.size());
    if (env.metrics)
      env.metrics->entities_active(kind).Set(static_cast<double>(children.size()));
  }

  /// Runs `w.run` with the child for `id`, activating it first when needed.
  /// With `must_exist`, a never-written entity fails with errc::not_found
  /// (no row is created); without, the claim creates the entity's row.
  template <class Self>
  void with_child(Self* self, const std::string& id, bool must_exist, waiter w) {
    if (passivating) {
      w.fail(caf::make_error(errc::unavailable, "the node is shutting down"));
      return;
    }
    if (auto i = children.find(id); i != children.end()) {
      w.run(i->second.handle);
      return;
    }
    auto& q = waiting[id];
    q.push_back(std::move(w));
    // One activation at a time per id; while a restart waits out its
    // backoff, commands queue for it.
    if (restarting.count(id) == 0 && activating.insert(id).second)
      activate(self, id, must_exist);
  }

  template <class Self>
  void fail_waiting(const std::string& id, const caf::error& err) {
    activating.erase(id);
    auto i = waiting.find(id);
    if (i == waiting.end())
      return;
    auto ws = std::move(i->second);
    waiting.erase(i);
    for (auto& w : ws)
      w.fail(err);
  }

  // Callbacks capture `this` (the state inside the host actor, which outlives
  // every request the host makes) explicitly.
  template <class Self>
  void activate(Self* self, const std::string& id, bool must_exist) {
    if (must_exist) {
      self->request(env.store, env.call_timeout, get_atom::value, kind, id)
        .then([this, self, id](const snapshot_record&) { claim(self, id); },
              [this, self, id](const caf::error& err) { fail_waiting<Self>(id, err); });
      return;
    }
    claim(self, id);
  }

  template <class Self>
  void claim(Self* self, const std::string& id) {
    self->request(env.registry, env.call_timeout, claim_atom::value, kind, id, env.node_id)
      .then(
        [this, self, id](const claim_outcome& out) {
          if (!out.granted) {
            fail_waiting<Self>(id, caf::make_error(errc::not_owner, kind + " " + id
                                                                     + " is owned by node "
                                                                     + out.owner));
            return;
          }
          self->request(env.store, env.call_timeout, claim_atom::value, kind, id, env.node_id)
            .then(
              [this, self, id](const claim_result& cr) {
                if (env.metrics)
                  env.metrics->ownership_claims().Increment();
                auto child = spawn_child(self, id, cr);
                children[id] = child_entry{child, cr.epoch};
                activating.erase(id);
                ++stats.activations;
                set_active_gauge();
                auto i = waiting.find(id);
                if (i == waiting.end())
                  return;
                auto ws = std::move(i->second);
                waiting.erase(i);
                for (auto& w : ws)
                  w.run(child);
              },
              [this, self, id](const caf::error& err) {
                caf::anon_send(env.registry, release_atom::value, kind, id, env.node_id);
                fail_waiting<Self>(id, err);
              });
        },
        [this, self, id](const caf::error& err) { fail_waiting<Self>(id, err); });
  }

  /// Call from the host's down handler. Returns false when the down message
  /// is not from a child.
  template <class Self>
  bool on_down(Self* self, const caf::down_msg& dm) {
    auto i = children.begin();
    for (; i != children.end(); ++i)
      if (i->second.handle.address() == dm.source)
        break;
    if (i == children.end())
      return false;
    auto id = i->first;
    auto epoch = i->second.epoch;
    children.erase(i);
    set_active_gauge();
    if (is_orderly_exit(dm.reason) || passivating) {
      // Passivated: give up ownership in the store and the registry.
      ++pending_releases;
      self->request(env.store, env.call_timeout, release_atom::value, kind, id, env.node_id, epoch)
        .then([this](ok_atom) { release_done(); }, [this](const caf::error&) { release_done(); });
      caf::anon_send(env.registry, release_atom::value, kind, id, env.node_id);
    } else if (dm.reason == errc::fenced) {
      // Another node owns it now; the store already has its state.
      ++stats.fenced;
      caf::anon_send(env.registry, release_atom::value, kind, id, env.node_id);
    } else {
      auto d = policy.on_failure(std::chrono::steady_clock::now());
      if (d.escalate) {
        self->quit(caf::make_error(errc::internal, "restart intensity exceeded in " + kind
                                                     + " host (last failure: " + id + ")"));
        return true;
      }
      ++stats.restarts;
      if (env.metrics)
        env.metrics->entity_restarts(kind).Increment();
      restarting.insert(id); // commands for id queue up until the restart
      self->delayed_send(self, d.delay, restart_atom::value, id);
    }
    check_passivated();
    return true;
  }

  int64_t pending_releases = 0;

  void release_done() {
    --pending_releases;
    check_passivated();
  }

  void check_passivated() {
    if (passivating && children.empty() && pending_releases == 0 && on_all_passivated) {
      auto f = std::move(on_all_passivated);
      on_all_passivated = nullptr;
      f();
    }
  }

  /// Call from the host's restart_atom handler.
  template <class Self>
  void on_restart(Self* self, const std::string& id) {
    if (passivating) {
      fail_waiting<Self>(id, caf::make_error(errc::unavailable, "the node is shutting down"));
      return;
    }
    restarting.erase(id);
    if (children.count(id) || !activating.insert(id).second)
      return;
    claim(self, id);
  }

  /// Stops every child (final state is already persisted: every transition
  /// is written before it is acknowledged) and calls `done` when all are down
  /// and released.
  template <class Self>
  void passivate_all(Self* self, std::function<void()> done) {
    passivating = true;
    for (auto& [id, ws] : waiting) {
      auto err = caf::make_error(errc::unavailable, "the node is shutting down");
      for (auto& w : ws)
        w.fail(err);
    }
    waiting.clear();
    restarting.clear();
    activating.clear();
    on_all_passivated = std::move(done);
    for (auto& [id, c] : children)
      self->send_exit(c.handle, caf::exit_reason::user_shutdown);
    check_passivated();
  }
};

} // namespace hotswap
