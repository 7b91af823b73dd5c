#pragma once

// The machinery every entity host shares (tenants now; deployments and
// approvals later): activation through the registry and the store (which
// issues the fencing epoch), a queue of commands while an entity activates or
// restarts, restart from the last snapshot with backoff and an intensity
// limit, and release of ownership on passivation. In a cluster a command
// for an entity another live node owns is forwarded to that node's host
// (route(); the directory knows where it is), retried once after a transport
// failure; a takeover from a dead node waits out host_env::takeover_wait
// before the entity's first side effect; fence_atom stops every entity actor
// at once (self-fencing, see directory.hpp).
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

#include "hotswap/actors/directory.hpp"
#include "hotswap/actors/supervision.hpp"
#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
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
  /// Where other nodes' hosts are; null on a single node (nothing to forward).
  node_directory_actor directory;
  /// How long a new owner waits after taking an entity over from a node that
  /// died (not released), before the entity's first side effect: one node
  /// TTL plus a margin, so a paused old owner has stopped by its own clock.
  std::chrono::milliseconds takeover_wait{0};
};

/// True for errors that say a forwarded command did not reach, or was not
/// answered by, the node that owns the entity (retry elsewhere).
inline bool is_transport_failure(const caf::error& err) {
  return err == caf::sec::request_receiver_down || err == caf::sec::request_timeout
         || err == caf::sec::no_route_to_receiving_node || err == caf::sec::cannot_connect_to_node
         || err == caf::sec::remote_linking_failed || err == errc::not_owner;
}

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
    /// Runs the command on the owner node's host instead (given its id);
    /// null: fail with errc::not_owner.
    std::function<void(const std::string&)> forward = nullptr;
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
  /// Taken over from a dead node: claimed, waiting out takeover_wait.
  std::map<std::string, claim_result> takeovers;
  host_stats stats;
  bool passivating = false;
  bool fenced = false; ///< self-fenced: no entity work until unfenced
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
    if (fenced) {
      w.fail(caf::make_error(errc::unavailable, "node " + env.node_id
                                                  + " cannot renew its cluster lease; retry"));
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

  /// Ends the activation of `id`: its queued commands, for the caller to run
  /// or fail.
  std::vector<waiter> take_waiting(const std::string& id) {
    activating.erase(id);
    auto i = waiting.find(id);
    if (i == waiting.end())
      return {};
    auto ws = std::move(i->second);
    waiting.erase(i);
    return ws;
  }

  template <class Self>
  void fail_waiting(const std::string& id, const caf::error& err) {
    for (auto& w : take_waiting(id))
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
            auto err = caf::make_error(errc::not_owner, kind + " " + id + " is owned by node "
                                                          + out.owner);
            for (auto& w : take_waiting(id)) {
              if (w.forward && !out.owner.empty() && out.owner != env.node_id && env.directory)
                w.forward(out.owner);
              else
                w.fail(err);
            }
            return;
          }
          auto previous = out.previous;
          self->request(env.store, env.call_timeout, claim_atom::value, kind, id, env.node_id)
            .then(
              [this, self, id, previous](const claim_result& cr) {
                if (env.metrics)
                  env.metrics->ownership_claims().Increment();
                if (!previous.empty() && previous != env.node_id
                    && env.takeover_wait.count() > 0) {
                  // The epoch is ours already (the old owner's writes are
                  // fenced); its side effects may still be in flight.
                  takeovers[id] = cr;
                  self->delayed_send(self, env.takeover_wait, restart_atom::value, id);
                  return;
                }
                start_child(self, id, cr);
              },
              [this, self, id](const caf::error& err) {
                caf::anon_send(env.registry, release_atom::value, kind, id, env.node_id);
                fail_waiting<Self>(id, err);
              });
        },
        [this, self, id](const caf::error& err) { fail_waiting<Self>(id, err); });
  }

  /// Spawns the child of a claimed entity and runs its waiting commands.
  template <class Self>
  void start_child(Self* self, const std::string& id, const claim_result& cr) {
    auto child = spawn_child(self, id, cr);
    children[id] = child_entry{child, cr.epoch};
    ++stats.activations;
    set_active_gauge();
    for (auto& w : take_waiting(id))
      w.run(child);
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
    if (auto t = takeovers.find(id); t != takeovers.end()) {
      auto cr = std::move(t->second);
      takeovers.erase(t);
      if (passivating || fenced) {
        // Never started here: give it back so another node adopts it at once.
        caf::anon_send(env.store, release_atom::value, kind, id, env.node_id, cr.epoch);
        caf::anon_send(env.registry, release_atom::value, kind, id, env.node_id);
        fail_waiting<Self>(id, caf::make_error(errc::unavailable, passivating
                                                                    ? "the node is shutting down"
                                                                    : "the node is fenced"));
        return;
      }
      start_child(self, id, cr);
      return;
    }
    if (passivating) {
      fail_waiting<Self>(id, caf::make_error(errc::unavailable, "the node is shutting down"));
      return;
    }
    restarting.erase(id);
    if (children.count(id) || !activating.insert(id).second)
      return;
    claim(self, id);
  }

  /// Activates `id` when it is not active here (the rebalancer adopting an
  /// orphan, or this node's own after a restart): `run` gets the child.
  /// Never forwards.
  /// `from_other`: it was owned by another node (counted as a failover
  /// once it runs here).
  template <class Self>
  void adopt(Self* self, const std::string& id, bool from_other,
             std::function<void(const Child&)> run) {
    if (passivating || fenced || children.count(id) || activating.count(id)
        || restarting.count(id) || takeovers.count(id))
      return;
    auto k = kind;
    auto metrics = env.metrics;
    with_child(self, id, true,
               {[=](const Child& child) {
                  if (from_other && metrics)
                    metrics->failovers(k).Increment();
                  run(child);
                },
                [k, id](const caf::error& err) {
                  if (err != errc::not_owner)
                    logger("cluster")->warn("{} {} not adopted: {}", k, id, error_detail(err));
                }});
  }

  /// Self-fencing: this node could not renew its lease in time. Every child
  /// stops at once (its state is persisted; another node adopts it) and no
  /// entity work starts until unfence().
  template <class Self>
  void fence(Self* self) {
    if (fenced)
      return;
    fenced = true;
    for (auto& [id, ws] : waiting) {
      auto err = caf::make_error(errc::unavailable, "node " + env.node_id + " is fenced");
      for (auto& w : ws)
        w.fail(err);
    }
    waiting.clear();
    activating.clear();
    restarting.clear();
    for (auto& [id, c] : children)
      self->send_exit(c.handle, caf::make_error(errc::fenced, "node " + env.node_id
                                                                + " lost its cluster lease"));
  }

  void unfence() {
    fenced = false;
  }

  /// Ids of the entities active on this node.
  std::vector<std::string> active_ids() const {
    std::vector<std::string> out;
    for (auto& [id, c] : children)
      out.push_back(id);
    return out;
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

/// Sends the host-level command (xs...) to the `member` host of node
/// `owner`; its answer goes to `rp`. After a transport failure the owner's
/// cached hosts are forgotten and `again` runs instead (once: when `again`
/// is null the failure is answered as errc::unavailable).
template <class Handle, class Result, class Self, class... Ts>
void forward_to_owner(Self* self, const host_env& env, const std::string& owner,
                      caf::strong_actor_ptr node_hosts::*member,
                      caf::typed_response_promise<Result> rp, std::function<void()> again,
                      Ts... xs) {
  auto dir = env.directory;
  auto timeout = env.call_timeout;
  auto metrics = env.metrics;
  auto give_up = [=](const caf::error& err) mutable {
    caf::anon_send(dir, forget_atom::value, owner);
    if (again) {
      again();
      return;
    }
    rp.deliver(caf::make_error(errc::unavailable, "node " + owner
                                                    + " owns this entity but does not answer: "
                                                    + error_detail(err)));
  };
  self->request(dir, timeout, hosts_atom::value, owner)
    .then(
      [=](node_hosts& nh) mutable {
        auto target = caf::actor_cast<Handle>(nh.*member);
        if (!target) {
          give_up(caf::make_error(errc::unavailable, "it runs no such host"));
          return;
        }
        if (metrics)
          metrics->forwarded_requests().Increment();
        self->request(target, timeout, xs...)
          .then([=](Result& r) mutable { rp.deliver(std::move(r)); },
                [=](caf::error& err) mutable {
                  if (is_transport_failure(err))
                    give_up(err);
                  else
                    rp.deliver(err);
                });
      },
      [=](caf::error& err) mutable { give_up(err); });
}

/// Runs a command for entity `id` of a host whose state is `st`: on the
/// local child as (a, rest...), or, when another live node owns `id`, on
/// that node's host (`member` of node_hosts, typed `Handle`) as
/// (a, id, rest...), retried once through a fresh claim after a transport
/// failure. `translate` (optional) maps errors before they are answered.
template <class Handle, class Result, class State, class Self, class Atom, class... Rest>
void route(Self* self, State& st, caf::strong_actor_ptr node_hosts::*member,
           const std::string& id, bool must_exist, caf::typed_response_promise<Result> rp,
           std::function<caf::error(const caf::error&)> translate, bool may_forward, Atom a,
           Rest... rest) {
  typename State::waiter w;
  w.run = [rp, a, rest...](const auto& child) mutable { rp.delegate(child, a, rest...); };
  w.fail = [rp, translate](const caf::error& err) mutable {
    rp.deliver(translate ? translate(err) : err);
  };
  if (may_forward) {
    auto* stp = &st;
    w.forward = [=](const std::string& owner) mutable {
      std::function<void()> again = [=] {
        route<Handle, Result>(self, *stp, member, id, must_exist, rp, translate, false, a,
                              rest...);
      };
      forward_to_owner<Handle>(self, stp->env, owner, member, rp, std::move(again), a, id,
                               rest...);
    };
  }
  st.with_child(self, id, must_exist, std::move(w));
}

} // namespace hotswap
