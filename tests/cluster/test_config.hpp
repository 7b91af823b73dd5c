#pragma once

// The actor system config of the cluster tests: the runtime's message types
// and the registry's.

#include "caf/actor_system_config.hpp"

#include "hotswap/cluster/registry.hpp"
#include "hotswap/runtime/types.hpp"

namespace hotswap::test {

struct cluster_test_config : caf::actor_system_config {
  cluster_test_config() {
    register_runtime_types(*this);
    add_message_type<node_info>("node_info");
    add_message_type<claim_outcome>("claim_outcome");
  }
};

} // namespace hotswap::test
