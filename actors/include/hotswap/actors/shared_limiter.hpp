#pragma once

// Cluster-wide rate limits: the token buckets of rate_limiter.hpp kept in
// Redis, so N nodes together admit what one node would (not N times the
// limit). Used by the HTTP bridges when `cluster.registry` is a Redis URL.
//
// Keys (p = the key prefix, `cluster.key_prefix`):
//   {p}rl:{category}:{key}   hash {tokens, ts_ms}, expires 120 s after its last use
//
// One Lua script per take reads the bucket, refills it at capacity/60000
// tokens per millisecond from Redis' own clock (TIME: one clock for every
// node), takes a token and writes it back, atomically. The decisions (and so
// the X-RateLimit-* headers) are those of rate_limiter::take.

#include <chrono>
#include <cstdint>
#include <string>

#include "caf/actor_system.hpp"
#include "caf/expected.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/rate_limiter.hpp"
#include "hotswap/runtime/atoms.hpp"

namespace hotswap {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rate_decision& x) {
  return f(caf::meta::type_name("rate_decision"), x.allowed, x.limit, x.remaining,
           x.reset_seconds, x.retry_after);
}

using shared_limiter_actor = caf::typed_actor<
  /// Takes one token from bucket (category, key) of capacity per_minute.
  caf::replies_to<take_atom, std::string /*category*/, std::string /*key*/,
                  uint32_t /*per_minute*/>::with<rate_decision>,
  /// Two buckets of one key in one round trip: takes from (category_a,
  /// limit_a), then, only if that allowed, from (category_b, limit_b). The
  /// answer is the decision of the last bucket taken from (as two calls of
  /// rate_limiter::take in sequence).
  caf::replies_to<take_atom, std::string /*key*/, std::string /*category_a*/,
                  uint32_t /*limit_a*/, std::string /*category_b*/,
                  uint32_t /*limit_b*/>::with<rate_decision>>;

struct shared_limiter_options {
  /// "redis://host:port[/db]".
  std::string url;
  /// Prepended to every key (`cluster.key_prefix`).
  std::string prefix = "hs:";
  std::chrono::milliseconds connect_timeout{300};
  std::chrono::milliseconds command_timeout{300};
  /// After a failure (no connection, no answer within command_timeout), no
  /// request tries Redis again for this long: they fail at once, so the
  /// callers fall back to their local limits without waiting.
  std::chrono::milliseconds retry_interval{1000};
};

/// Spawns the limiter as a detached actor (hiredis blocks). Redis need not
/// be up: each request (re)connects when there is no connection and answers
/// errc::unavailable while Redis is unreachable; the limiter logs one warning
/// when Redis becomes unavailable and a notice when it answers again. Fails
/// only for invalid options.
caf::expected<shared_limiter_actor> spawn_shared_limiter(caf::actor_system& sys,
                                                         shared_limiter_options opts);

} // namespace hotswap
