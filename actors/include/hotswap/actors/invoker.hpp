#pragma once

// The node's invocation entry point over CAF: routes (environment, module,
// request) to the module_host of that environment on this node. Published
// on cluster.listen through CAF's middleman, so any actor in the cluster and
// any external CAF client can call modules with typed messages
// (examples/invoke_client.cpp). Other nodes fetch this node's hosts from it
// (directory.hpp).

#include <map>
#include <string>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/directory.hpp"
#include "hotswap/actors/module_host.hpp"

namespace hotswap {

using node_invoker_actor = caf::typed_actor<
  /// (environment, module, request) -> the module's answer. Errors:
  /// not_found (environment not served here, or module not loaded),
  /// unavailable, module_failure (see module_invoker_actor).
  caf::replies_to<sdk::invoke_atom, std::string, std::string, sdk::request>::with<invoke_result>,
  /// The node's entity hosts and workers (the cluster directory of other
  /// nodes asks this once per connection).
  caf::replies_to<hosts_atom>::with<node_hosts>>;

node_invoker_actor spawn_node_invoker(caf::actor_system& sys, node_hosts local);

} // namespace hotswap
