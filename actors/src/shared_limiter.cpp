#include "hotswap/actors/shared_limiter.hpp"

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

#include "caf/spawn_options.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/cluster/redis_client.hpp"
#include "hotswap/cluster/redis_registry.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"

namespace hotswap {

namespace {

// KEYS: the buckets, in order. ARGV[i]: the capacity of KEYS[i] (tokens per
// minute). Takes one token from each bucket in turn and stops at the first
// that has none; replies {allowed, remaining, reset_seconds, retry_after, i}
// of the last bucket taken from (KEYS[i]), as rate_limiter::take computes
// them (same epsilon). TIME is a non-deterministic command: scripts that write after it
// need effects replication, the default since Redis 5 (the call below is for
// older servers and a no-op since).
constexpr const char* take_script = R"lua(
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local eps = 1e-9
local function ceil_s(x) return math.ceil(x - eps) end
local out = {1, 0, 0, 0, 0}
for i = 1, #KEYS do
  local cap = tonumber(ARGV[i])
  if cap == nil or cap <= 0 then
    return {0, 0, 60, 60, i}
  end
  local rate = cap / 60.0
  local h = redis.call('HMGET', KEYS[i], 'tokens', 'ts_ms')
  local tokens = tonumber(h[1])
  local last = tonumber(h[2])
  if tokens == nil or last == nil then
    tokens = cap
    last = now
  else
    if now > last then
      tokens = tokens + (now - last) / 1000.0 * rate
      last = now
    end
    if tokens > cap then tokens = cap end
  end
  local allowed = 0
  local retry = 0
  if tokens + eps >= 1.0 then
    tokens = math.max(0, tokens - 1.0)
    allowed = 1
  else
    retry = math.max(1, ceil_s((1.0 - tokens) / rate))
  end
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tokens),
             'ts_ms', string.format('%.17g', last))
  redis.call('PEXPIRE', KEYS[i], 120000)
  local remaining = math.floor(tokens + eps)
  local reset = math.max(0, ceil_s((cap - tokens) / rate))
  out = {allowed, remaining, reset, retry, i}
  if allowed == 0 then return out end
end
return out
)lua";

using redis::argv_t;

struct shared_limiter_state {
  shared_limiter_options opts;
  std::unique_ptr<redis::client> redis;
  static inline const char* name = "shared_limiter";

  std::string bucket_key(const std::string& category, const std::string& key) const {
    return opts.prefix + "rl:" + category + ":" + key;
  }

  caf::error unavailable(const std::string& why) {
    return redis->unavailable(why, opts.retry_interval);
  }

  /// Takes from buckets (categories[i], key) of capacity limits[i] in turn.
  caf::result<rate_decision> take(const std::string& key, const argv_t& categories,
                                  const std::vector<uint32_t>& limits) {
    argv_t keys;
    argv_t args;
    for (size_t i = 0; i < categories.size(); ++i) {
      keys.push_back(bucket_key(categories[i], key));
      args.push_back(std::to_string(limits[i]));
    }
    auto r = redis->eval(take_script, keys, args);
    if (!r)
      return std::move(r.error());
    auto rep = r->get();
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 5)
      return unavailable("unexpected reply of the rate limit script");
    int64_t v[5];
    for (size_t i = 0; i < 5; ++i) {
      if (rep->element[i]->type != REDIS_REPLY_INTEGER)
        return unavailable("unexpected reply of the rate limit script");
      v[i] = rep->element[i]->integer;
    }
    // The bucket the decision is about (1-based in Lua).
    if (v[4] < 1 || static_cast<size_t>(v[4]) > limits.size())
      return unavailable("unexpected reply of the rate limit script");
    auto which = static_cast<size_t>(v[4] - 1);
    rate_decision d;
    d.allowed = v[0] == 1;
    d.limit = limits[which];
    d.remaining = static_cast<uint32_t>(std::max<int64_t>(0, v[1]));
    d.reset_seconds = std::max<int64_t>(0, v[2]);
    d.retry_after = d.allowed ? 0 : std::max<int64_t>(1, v[3]);
    return d;
  }
};

shared_limiter_actor::behavior_type
shared_limiter(shared_limiter_actor::stateful_pointer<shared_limiter_state> self,
               shared_limiter_options opts, redis::client_options co) {
  auto& st = self->state;
  st.opts = std::move(opts);
  co.down_hint = "; every node falls back to its local limits until Redis answers again";
  // While Redis is unreachable or hanging, takes fail at once (the bridges
  // fall back to their local limits without waiting).
  co.connect_backoff = st.opts.retry_interval;
  co.io_backoff = st.opts.retry_interval;
  st.redis = std::make_unique<redis::client>(std::move(co));
  return {
    [=](take_atom, const std::string& category, const std::string& key,
        uint32_t per_minute) -> caf::result<rate_decision> {
      return self->state.take(key, {category}, {per_minute});
    },
    [=](take_atom, const std::string& key, const std::string& category_a, uint32_t limit_a,
        const std::string& category_b, uint32_t limit_b) -> caf::result<rate_decision> {
      return self->state.take(key, {category_a, category_b}, {limit_a, limit_b});
    },
  };
}

} // namespace

caf::expected<shared_limiter_actor> spawn_shared_limiter(caf::actor_system& sys,
                                                         shared_limiter_options opts) {
  auto co = redis::options_for(opts.url, "shared rate limits", "http", opts.connect_timeout,
                               opts.command_timeout);
  if (!co)
    return std::move(co.error());
  if (opts.prefix.empty())
    return caf::make_error(errc::config_invalid, "the Redis key prefix must not be empty");
  if (opts.retry_interval.count() < 0)
    return caf::make_error(errc::config_invalid, "Redis timeouts must be positive");
  return sys.spawn<caf::detached>(shared_limiter, std::move(opts), std::move(*co));
}

} // namespace hotswap
