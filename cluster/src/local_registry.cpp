#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/store.hpp"

#include <map>
#include <utility>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

namespace hotswap {

namespace {

struct local_registry_state {
  node_info self_node;
  std::map<std::pair<std::string, std::string>, std::string> owners;
  static inline const char* name = "local_registry";
};

registry_actor::behavior_type
local_registry(registry_actor::stateful_pointer<local_registry_state> self, node_info n) {
  self->state.self_node = std::move(n);
  self->state.self_node.last_heartbeat = now_millis();
  return {
    [=](claim_atom, const std::string& kind, const std::string& id,
        const std::string& node) -> claim_outcome {
      auto& owners = self->state.owners;
      auto key = std::make_pair(kind, id);
      auto i = owners.find(key);
      // A local registry knows a single live node: any other owner is dead.
      if (i == owners.end() || i->second == node || i->second != self->state.self_node.id) {
        owners[key] = node;
        return {true, node, {}};
      }
      return {false, i->second, {}};
    },
    [=](renew_atom, node_info& info) {
      if (info.id == self->state.self_node.id) {
        self->state.self_node = std::move(info);
        self->state.self_node.last_heartbeat = now_millis();
      }
      return ok_atom::value;
    },
    [=](release_atom, const std::string& kind, const std::string& id, const std::string& node) {
      auto& owners = self->state.owners;
      auto i = owners.find(std::make_pair(kind, id));
      if (i != owners.end() && i->second == node)
        owners.erase(i);
      return ok_atom::value;
    },
    [=](owner_atom, const std::string& kind, const std::string& id) -> std::string {
      auto& owners = self->state.owners;
      auto i = owners.find(std::make_pair(kind, id));
      return i == owners.end() ? std::string{} : i->second;
    },
    [=](nodes_atom) { return std::vector<node_info>{self->state.self_node}; },
    [=](leave_atom, const std::string&) { return ok_atom::value; },
    [=](left_atom) { return std::vector<std::string>{}; },
    [=](ping_atom) { return ok_atom::value; },
  };
}

} // namespace

registry_actor spawn_local_registry(caf::actor_system& sys, node_info self_node) {
  return sys.spawn(local_registry, std::move(self_node));
}

} // namespace hotswap
