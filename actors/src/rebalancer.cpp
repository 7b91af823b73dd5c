#include "hotswap/actors/rebalancer.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "caf/send.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/runtime/log.hpp"

namespace hotswap {

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  // Final avalanche (FNV alone mixes the last bytes poorly).
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

struct rebalancer_state {
  rebalancer_env env;
  bool busy = false;
  /// When each node that is not live was first seen missing.
  std::map<std::string, std::chrono::steady_clock::time_point> missing_since;
  static inline const char* name = "rebalancer";
};

using reb_ptr = rebalancer_actor::stateful_pointer<rebalancer_state>;

/// What the rebalancer looks at: non-terminal deployments (the statuses a
/// deployment can be resumed from) and pending approvals.
const std::vector<std::pair<std::string, std::string>>& queries() {
  static const std::vector<std::pair<std::string, std::string>> qs{
    {"deployment", "Running"},
    {"deployment", "RollingBack"},
    {"deployment", "PendingApproval"},
    {"deployment", "Pending"},
    {"approval", "Pending"},
  };
  return qs;
}

struct scan {
  std::vector<node_info> live;
  std::set<std::string> left;
  std::vector<snapshot_record> rows;
};

void decide(reb_ptr self, const scan& sc) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  std::set<std::string> live;
  std::vector<std::string> candidates; // live nodes that host entities
  for (auto& n : sc.live) {
    live.insert(n.id);
    if (std::find(n.roles.begin(), n.roles.end(), "control") != n.roles.end())
      candidates.push_back(n.id);
  }
  for (auto i = st.missing_since.begin(); i != st.missing_since.end();)
    i = live.count(i->first) ? st.missing_since.erase(i) : std::next(i);
  size_t adopted = 0;
  for (auto& row : sc.rows) {
    auto& owner = row.owner_node;
    bool orphan = false;
    if (owner == st.env.node_id) {
      orphan = true; // ours in the store: make sure it runs here
    } else if (owner.empty() || sc.left.count(owner)) {
      orphan = true;
    } else if (!live.count(owner)) {
      auto [it, fresh] = st.missing_since.emplace(owner, now);
      orphan = !fresh && now - it->second >= st.env.grace;
    }
    if (!orphan)
      continue;
    if (owner != st.env.node_id
        && rendezvous_owner(candidates, row.kind, row.id) != st.env.node_id)
      continue;
    if (owner != st.env.node_id) {
      ++adopted;
      logger("cluster")->info("adopting {} {} from {}", row.kind, row.id,
                              owner.empty() ? std::string{"no owner"} : "node " + owner);
    }
    auto from_other = owner != st.env.node_id;
    if (row.kind == "deployment")
      caf::anon_send(st.env.deployments, adopt_atom::value, row.id, from_other);
    else
      caf::anon_send(st.env.approvals, adopt_atom::value, row.id, from_other);
  }
  if (adopted > 0)
    logger("cluster")->debug("rebalancer: {} adoption(s) requested", adopted);
}

void list_next(reb_ptr self, std::shared_ptr<scan> sc, size_t i) {
  auto& st = self->state;
  if (i == queries().size()) {
    decide(self, *sc);
    st.busy = false;
    return;
  }
  snapshot_query q;
  q.kind = queries()[i].first;
  q.status = queries()[i].second;
  q.limit = 100000;
  self->request(st.env.store, st.env.call_timeout, list_atom::value, q)
    .then(
      [=](std::vector<snapshot_record>& rows) {
        // Oldest first, so queued deployments keep their order.
        for (auto r = rows.rbegin(); r != rows.rend(); ++r)
          sc->rows.push_back(std::move(*r));
        list_next(self, sc, i + 1);
      },
      [=](caf::error& err) {
        logger("cluster")->warn("rebalancer: cannot list {} {}: {}", queries()[i].second,
                                queries()[i].first, error_detail(err));
        self->state.busy = false;
      });
}

void tick(reb_ptr self) {
  auto& st = self->state;
  self->delayed_send(self, st.env.interval, tick_atom::value);
  if (st.busy)
    return;
  st.busy = true;
  auto sc = std::make_shared<scan>();
  self->request(st.env.registry, st.env.call_timeout, nodes_atom::value)
    .then(
      [=](std::vector<node_info>& nodes) {
        sc->live = std::move(nodes);
        self->request(self->state.env.registry, self->state.env.call_timeout, left_atom::value)
          .then(
            [=](std::vector<std::string>& left) {
              sc->left.insert(left.begin(), left.end());
              list_next(self, sc, 0);
            },
            [=](caf::error&) { self->state.busy = false; });
      },
      [=](caf::error&) { self->state.busy = false; });
}

rebalancer_actor::behavior_type rebalancer(reb_ptr self, rebalancer_env env) {
  self->state.env = std::move(env);
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) { tick(self); },
  };
}

} // namespace

std::string rendezvous_owner(const std::vector<std::string>& nodes, const std::string& kind,
                             const std::string& id) {
  std::string best;
  uint64_t best_score = 0;
  for (auto& n : nodes) {
    auto score = fnv1a(n + "\n" + kind + "\n" + id);
    if (best.empty() || score > best_score || (score == best_score && n < best)) {
      best = n;
      best_score = score;
    }
  }
  return best;
}

rebalancer_actor spawn_rebalancer(caf::actor_system& sys, rebalancer_env env) {
  return sys.spawn(rebalancer, std::move(env));
}

} // namespace hotswap
