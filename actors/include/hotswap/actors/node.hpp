#pragma once

// A whole node: the supervision tree under a root supervisor that owns
// shutdown. hotswapd's main() is a thin wrapper around run_node().

#include "caf/actor_system_config.hpp"

#include "hotswap/config/config.hpp"

namespace hotswap {

/// Registers every message type of the runtime and the actors (remote nodes
/// need them too) and hotswap's error category.
void register_types(caf::actor_system_config& cfg);

/// Exit codes of run_node().
namespace exit_code {
constexpr int ok = 0;
constexpr int failure = 1;       ///< a dependency failed at start or a supervisor escalated
constexpr int config_error = 2;  ///< a configuration key is missing or invalid
} // namespace exit_code

/// Starts the node described by `cfg`, serves until SIGTERM/SIGINT (graceful:
/// drain, passivate, exit 0) or until a supervisor escalates, and returns the
/// process exit code. Call from main() only: it blocks and handles signals.
int run_node(const config::node_config& cfg);

} // namespace hotswap
