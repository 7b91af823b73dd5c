#pragma once

// Registration of every runtime record as a CAF message type, plus the
// "hotswap" error category renderer. Call once per actor_system_config.

#include "caf/actor_system_config.hpp"

namespace hotswap {

/// Registers snapshot_record, audit_event, audit_query, snapshot_query,
/// user_record, signing_key and claim_result as message types (CAF adds
/// std::vector<T> and stream<T> of each), and the "hotswap" error category,
/// rendered by actor_system::render as `hotswap: <errc name> (<context>)`.
void register_runtime_types(caf::actor_system_config& cfg);

} // namespace hotswap
