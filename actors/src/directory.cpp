#include "hotswap/actors/directory.hpp"

#include <algorithm>

#include "caf/io/middleman.hpp"
#include "caf/io/middleman_actor.hpp"
#include "caf/send.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/invoker.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"

namespace hotswap {

namespace {

// -- directory -----------------------------------------------------------------------------

struct directory_state {
  directory_env env;
  caf::io::middleman_actor mm;
  std::map<std::string, node_hosts> cache;
  /// Lookups in progress per node, with who waits for them.
  std::map<std::string, std::vector<std::function<void(caf::expected<node_hosts>)>>> pending;
  bool refreshing = false;
  bool again = false; ///< refresh once more when the current one ends
  /// Waiting for the refresh in progress / for the next one to start.
  std::vector<caf::typed_response_promise<ok_atom>> waiters_current;
  std::vector<caf::typed_response_promise<ok_atom>> waiters_next;
  static inline const char* name = "node_directory";
};

using dir_ptr = node_directory_actor::stateful_pointer<directory_state>;

bool has_role(const node_info& n, const char* role) {
  return std::find(n.roles.begin(), n.roles.end(), role) != n.roles.end();
}

void finish_lookup(dir_ptr self, const std::string& node, caf::expected<node_hosts> x) {
  auto& st = self->state;
  if (x)
    st.cache[node] = *x;
  auto i = st.pending.find(node);
  if (i == st.pending.end())
    return;
  auto waiters = std::move(i->second);
  st.pending.erase(i);
  for (auto& w : waiters)
    w(x);
}

caf::error unreachable(const std::string& node, const std::string& why) {
  return caf::make_error(errc::unavailable, "node " + node + " cannot be reached: " + why);
}

/// Connects to `n`'s published node_invoker_actor and asks for its hosts.
void connect(dir_ptr self, const node_info& n) {
  auto& st = self->state;
  auto node = n.id;
  auto colon = n.caf_endpoint.rfind(':');
  if (colon == std::string::npos || colon + 1 >= n.caf_endpoint.size()) {
    finish_lookup(self, node, unreachable(node, "no CAF endpoint in its membership record"));
    return;
  }
  auto host = n.caf_endpoint.substr(0, colon);
  auto port = static_cast<uint16_t>(std::stoi(n.caf_endpoint.substr(colon + 1)));
  auto timeout = st.env.call_timeout;
  self->request(st.mm, timeout, caf::connect_atom::value, host, port)
    .then(
      [=](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
        auto gateway = caf::actor_cast<node_invoker_actor>(ptr);
        if (!gateway) {
          finish_lookup(self, node, unreachable(node, "nothing published on " + host + ":"
                                                        + std::to_string(port)));
          return;
        }
        self->request(gateway, timeout, hosts_atom::value)
          .then(
            [=](node_hosts& nh) {
              if (nh.node != node) {
                finish_lookup(self, node,
                              unreachable(node, "its CAF endpoint is served by node " + nh.node));
                return;
              }
              finish_lookup(self, node, std::move(nh));
            },
            [=](caf::error& err) {
              finish_lookup(self, node, unreachable(node, self->system().render(err)));
            });
      },
      [=](caf::error& err) {
        finish_lookup(self, node, unreachable(node, "connect to " + host + ":"
                                                      + std::to_string(port) + " failed: "
                                                      + self->system().render(err)));
      });
}

/// Runs `k` with the hosts of `node`: from memory for this node and cached
/// nodes, else after one lookup (concurrent callers share it).
void lookup(dir_ptr self, const std::string& node,
            std::function<void(caf::expected<node_hosts>)> k) {
  auto& st = self->state;
  if (node == st.env.node_id) {
    k(st.env.local);
    return;
  }
  if (auto i = st.cache.find(node); i != st.cache.end()) {
    k(i->second);
    return;
  }
  auto& waiters = st.pending[node];
  waiters.push_back(std::move(k));
  if (waiters.size() > 1)
    return;
  self->request(st.env.registry, st.env.call_timeout, nodes_atom::value)
    .then(
      [=](std::vector<node_info>& nodes) {
        for (auto& n : nodes)
          if (n.id == node) {
            connect(self, n);
            return;
          }
        finish_lookup(self, node,
                      caf::make_error(errc::unavailable, "node " + node + " is not live"));
      },
      [=](caf::error& err) {
        finish_lookup(self, node, caf::make_error(errc::unavailable,
                                                  "the registry does not answer: "
                                                    + error_detail(err)));
      });
}

void refreshed(dir_ptr self);

/// Rebuilds the worker registry from the live worker nodes.
void refresh(dir_ptr self) {
  auto& st = self->state;
  if (st.refreshing) {
    st.again = true;
    return;
  }
  st.refreshing = true;
  st.waiters_current = std::move(st.waiters_next);
  st.waiters_next.clear();
  self->request(st.env.registry, st.env.call_timeout, nodes_atom::value)
    .then(
      [=](std::vector<node_info>& nodes) {
        auto& st = self->state;
        // Forget nodes that are no longer live: their proxies are dead.
        for (auto i = st.cache.begin(); i != st.cache.end();) {
          auto live = std::any_of(nodes.begin(), nodes.end(),
                                  [&](const node_info& n) { return n.id == i->first; });
          i = live ? std::next(i) : st.cache.erase(i);
        }
        std::vector<std::string> workers;
        for (auto& n : nodes)
          if (has_role(n, "worker"))
            workers.push_back(n.id);
        if (std::find(workers.begin(), workers.end(), st.env.node_id) == workers.end()
            && !st.env.local.workers.empty())
          workers.push_back(st.env.node_id); // not yet (or no longer) in the membership
        auto result = std::make_shared<std::map<std::string, worker_registry::list>>();
        auto left = std::make_shared<size_t>(workers.size());
        auto done = [=] {
          for (auto& [env, list] : *result)
            std::sort(list.begin(), list.end(),
                      [](const auto& a, const auto& b) { return a.first < b.first; });
          self->state.env.workers->set(std::move(*result));
          refreshed(self);
        };
        if (workers.empty()) {
          done();
          return;
        }
        for (auto& id : workers)
          lookup(self, id, [=](caf::expected<node_hosts> x) {
            if (x)
              for (auto& [env, ptr] : x->workers)
                if (auto h = caf::actor_cast<module_host_actor>(ptr))
                  (*result)[env].emplace_back(x->node, h);
            if (--*left == 0)
              done();
          });
      },
      [=](caf::error&) { refreshed(self); }); // the last known view stays
}

void refreshed(dir_ptr self) {
  auto& st = self->state;
  st.refreshing = false;
  auto waiters = std::move(st.waiters_current);
  st.waiters_current.clear();
  for (auto& w : waiters)
    w.deliver(ok_atom::value);
  if (st.again || !st.waiters_next.empty()) {
    st.again = false;
    refresh(self);
  }
}

node_directory_actor::behavior_type directory(dir_ptr self, directory_env env) {
  self->state.env = std::move(env);
  self->state.mm = self->state.env.mm ? self->state.env.mm
                                      : self->system().middleman().actor_handle();
  self->send(self, tick_atom::value);
  return {
    [=](hosts_atom, const std::string& node) -> caf::result<node_hosts> {
      auto rp = self->make_response_promise<node_hosts>();
      lookup(self, node, [=](caf::expected<node_hosts> x) mutable {
        if (x)
          rp.deliver(std::move(*x));
        else
          rp.deliver(x.error());
      });
      return rp;
    },
    [=](forget_atom, const std::string& node) { self->state.cache.erase(node); },
    [=](put_atom, node_hosts& local) { self->state.env.local = std::move(local); },
    [=](nodes_atom) {
      auto rp = self->make_response_promise<ok_atom>();
      self->state.waiters_next.push_back(rp);
      refresh(self);
      return rp;
    },
    [=](tick_atom) {
      refresh(self);
      self->delayed_send(self, self->state.env.refresh, tick_atom::value);
    },
  };
}

// -- membership ------------------------------------------------------------------------------

struct membership_state {
  membership_env env;
  std::chrono::steady_clock::time_point last_renewed; ///< send time of the last renewal that succeeded
  bool renewed_once = false;
  bool fenced = false;
  bool leaving = false;
  static inline const char* name = "membership";
};

using mem_ptr = membership_actor::stateful_pointer<membership_state>;

void tell_listeners(mem_ptr self, bool fence) {
  for (auto& l : self->state.env.listeners) {
    if (fence)
      caf::anon_send(l, fence_atom::value);
    else
      caf::anon_send(l, unfence_atom::value);
  }
}

void heartbeat(mem_ptr self) {
  auto& st = self->state;
  if (st.leaving)
    return;
  auto now = std::chrono::steady_clock::now();
  // Check before renewing: after a pause (SIGSTOP, a stalled VM) the lease
  // may be gone already, and nothing may act on it until a renewal succeeds.
  if (st.renewed_once && !st.fenced && now - st.last_renewed > st.env.node_ttl - st.env.margin) {
    st.fenced = true;
    logger("cluster")->error(
      "no lease renewal for {} ms (TTL {} ms): stopping all entity work until the registry "
      "answers again",
      std::chrono::duration_cast<std::chrono::milliseconds>(now - st.last_renewed).count(),
      st.env.node_ttl.count());
    if (st.env.metrics)
      st.env.metrics->self_fences().Increment();
    tell_listeners(self, true);
  }
  st.env.self_node.last_heartbeat = now_millis();
  self->request(st.env.registry, st.env.node_ttl, renew_atom::value, st.env.self_node)
    .then(
      [=](ok_atom) {
        auto& st = self->state;
        if (st.leaving)
          return;
        st.last_renewed = std::max(st.last_renewed, now);
        st.renewed_once = true;
        if (st.fenced && std::chrono::steady_clock::now() - now < st.env.node_ttl - st.env.margin) {
          st.fenced = false;
          logger("cluster")->info("lease renewed again: taking entity work");
          tell_listeners(self, false);
        }
      },
      [=](caf::error& err) {
        logger("cluster")->warn("lease renewal failed: {}", error_detail(err));
      });
  self->delayed_send(self, st.env.heartbeat, tick_atom::value);
}

membership_actor::behavior_type membership(mem_ptr self, membership_env env) {
  self->state.env = std::move(env);
  self->state.last_renewed = std::chrono::steady_clock::now();
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) { heartbeat(self); },
    [=](renew_atom, node_info& info) { self->state.env.self_node = std::move(info); },
    [=](leave_atom) -> caf::result<ok_atom> {
      auto& st = self->state;
      st.leaving = true;
      auto rp = self->make_response_promise<ok_atom>();
      self->request(st.env.registry, st.env.node_ttl, leave_atom::value, st.env.self_node.id)
        .then([=](ok_atom) mutable { rp.deliver(ok_atom::value); },
              [=](caf::error& err) mutable {
                // Others adopt after the TTL instead; nothing is lost.
                logger("cluster")->warn("leaving the membership failed: {}", error_detail(err));
                rp.deliver(ok_atom::value);
              });
      return rp;
    },
    [=](status_atom) { return self->state.fenced; },
  };
}

} // namespace

node_directory_actor spawn_node_directory(caf::actor_system& sys, directory_env env) {
  return sys.spawn(directory, std::move(env));
}

membership_actor spawn_membership(caf::actor_system& sys, membership_env env) {
  return sys.spawn(membership, std::move(env));
}

} // namespace hotswap
