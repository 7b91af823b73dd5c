#pragma once

// The cluster registry kept in Redis (`cluster.registry = "redis://..."`).
//
// Keys (p = the key prefix, `cluster.key_prefix`):
//   {p}node:{id}         JSON of node_info, expires after node_ttl unless renewed
//   {p}own:{kind}:{id}   the owning node id (no expiry: an owner is live while
//                        its node key is; a claim takes over a dead owner)
//   {p}left:{id}         present for left_marker_ttl after node `id` left
//
// Redis is a shared, lossy cache of membership: it may restart empty. Each
// registry actor therefore remembers what it granted to its own node and
// re-asserts it when a renewal finds the node key gone.

#include <chrono>
#include <cstdint>
#include <string>
#include <tuple>

#include "caf/actor_system.hpp"
#include "caf/expected.hpp"

#include "hotswap/cluster/registry.hpp"

namespace hotswap {

struct redis_registry_options {
  /// "redis://host:port[/db]".
  std::string url;
  /// This node's id: the claims granted to it are re-asserted after Redis
  /// lost its data.
  std::string self_node;
  /// Lifetime of a node key; a node that does not renew within it is dead.
  std::chrono::milliseconds node_ttl{3000};
  /// Prepended to every key, so several clusters (or tests) share one Redis.
  std::string prefix = "hs:";
  std::chrono::milliseconds connect_timeout{300};
  std::chrono::milliseconds command_timeout{500};
  /// How long a node that left gracefully is listed by left_atom.
  std::chrono::milliseconds left_marker_ttl{60000};
};

/// Parses "redis://host:port[/db]" into (host, port, db); port 1-65535, db
/// 0-15, host a name, an IPv4 address or a bracketed IPv6 address. The error
/// (errc::config_invalid) names what is wrong.
caf::expected<std::tuple<std::string, uint16_t, int>> parse_redis_url(const std::string& url);

/// Spawns the registry as a detached actor: hiredis blocks, and a blocking
/// call must never occupy a scheduler thread. Redis need not be up: each
/// request (re)connects when there is no connection, and answers
/// errc::unavailable (naming the URL and the hiredis error) while Redis is
/// unreachable. Fails only for invalid options.
caf::expected<registry_actor> spawn_redis_registry(caf::actor_system& sys,
                                                   redis_registry_options opts);

} // namespace hotswap
