#include "hotswap/actors/shared_limiter.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

#include "caf/spawn_options.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

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

struct reply_deleter {
  void operator()(redisReply* r) const {
    if (r != nullptr)
      freeReplyObject(r);
  }
};

using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

struct context_deleter {
  void operator()(redisContext* c) const {
    if (c != nullptr)
      redisFree(c);
  }
};

using context_ptr = std::unique_ptr<redisContext, context_deleter>;

using argv_t = std::vector<std::string>;

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

std::string reply_string(const redisReply* r) {
  return r->str != nullptr ? std::string(r->str, r->len) : std::string{};
}

bool is_string(const redisReply* r) {
  return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

struct shared_limiter_state {
  shared_limiter_options opts;
  std::string host;
  uint16_t port = 0;
  int db = 0;
  context_ptr ctx;
  /// SHA1 of take_script on the current connection (a restarted Redis
  /// forgets it: NOSCRIPT reloads).
  std::string sha;
  /// Logs the transitions between reachable and unreachable, not every
  /// failed request (the bridges count each fallback in a metric).
  bool down = false;
  /// No attempt to reach Redis before this point (see unavailable).
  std::chrono::steady_clock::time_point retry_at{};
  std::string last_error;
  static inline const char* name = "shared_limiter";

  std::string bucket_key(const std::string& category, const std::string& key) const {
    return opts.prefix + "rl:" + category + ":" + key;
  }

  caf::error failure(const std::string& why) const {
    return caf::make_error(errc::unavailable,
                           "shared rate limits (" + opts.url + ") are unavailable: " + why);
  }

  /// Drops the connection and fails every request for retry_interval: while
  /// Redis is unreachable or hanging, queued takes fail at once instead of
  /// each waiting out its own timeout.
  caf::error unavailable(const std::string& why) {
    ctx.reset();
    sha.clear();
    retry_at = std::chrono::steady_clock::now() + opts.retry_interval;
    last_error = why;
    if (!down) {
      down = true;
      logger("http")->warn("[R:{}] shared rate limits unavailable: {}; every node falls back to "
                           "its local limits until Redis answers again",
                           opts.url, why);
    }
    return failure(why);
  }

  /// `sys_errno`: errno right after the failed hiredis call.
  caf::error io_error(const std::string& what, int sys_errno) {
    std::string why = what;
    if (ctx && ctx->err != 0) {
      why += std::string{": "} + ctx->errstr;
      // hiredis reports the expiry of its socket timeout as EAGAIN.
      if (ctx->err == REDIS_ERR_IO && (sys_errno == EAGAIN || sys_errno == EWOULDBLOCK))
        why += " (no answer within " + std::to_string(opts.command_timeout.count()) + " ms)";
    }
    return unavailable(why);
  }

  caf::error connect() {
    if (std::chrono::steady_clock::now() < retry_at)
      return failure(last_error);
    context_ptr c{redisConnectWithTimeout(host.c_str(), port, to_timeval(opts.connect_timeout))};
    if (!c)
      return unavailable("cannot allocate a hiredis context");
    if (c->err != 0)
      return unavailable(std::string{"cannot connect: "} + c->errstr);
    if (redisSetTimeout(c.get(), to_timeval(opts.command_timeout)) != REDIS_OK)
      return unavailable(std::string{"cannot set the command timeout: "} + c->errstr);
    if (db != 0) {
      auto dbs = std::to_string(db);
      const char* argv[] = {"SELECT", dbs.c_str()};
      size_t lens[] = {6, dbs.size()};
      reply_ptr r{static_cast<redisReply*>(redisCommandArgv(c.get(), 2, argv, lens))};
      if (!r || c->err != 0)
        return unavailable(std::string{"SELECT failed: "} + c->errstr);
      if (r->type == REDIS_REPLY_ERROR)
        return unavailable("SELECT " + dbs + " refused: " + reply_string(r.get()));
    }
    ctx = std::move(c);
    if (down) {
      down = false;
      logger("http")->info("[R:{}] shared rate limits reachable again", opts.url);
    }
    return caf::none;
  }

  /// One command; error replies are returned as replies, only I/O failures
  /// are errors.
  caf::expected<reply_ptr> command(const argv_t& cmd) {
    if (!ctx)
      if (auto err = connect())
        return err;
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    void* raw = redisCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(),
                                 lens.data());
    if (raw == nullptr)
      return io_error(cmd.front() + " failed", errno);
    return reply_ptr{static_cast<redisReply*>(raw)};
  }

  /// Runs take_script by SHA1, loading it on first use and again after
  /// Redis forgot it (restart, SCRIPT FLUSH).
  caf::expected<reply_ptr> eval(const argv_t& keys, const argv_t& args) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (sha.empty()) {
        auto loaded = command({"SCRIPT", "LOAD", take_script});
        if (!loaded)
          return std::move(loaded.error());
        if (loaded->get()->type == REDIS_REPLY_ERROR)
          return unavailable("SCRIPT LOAD failed: " + reply_string(loaded->get()));
        if (!is_string(loaded->get()))
          return unavailable("SCRIPT LOAD returned no SHA1");
        sha = reply_string(loaded->get());
      }
      argv_t cmd{"EVALSHA", sha, std::to_string(keys.size())};
      cmd.insert(cmd.end(), keys.begin(), keys.end());
      cmd.insert(cmd.end(), args.begin(), args.end());
      auto r = command(cmd);
      if (!r)
        return std::move(r.error());
      if (r->get()->type != REDIS_REPLY_ERROR)
        return r;
      auto msg = reply_string(r->get());
      if (msg.rfind("NOSCRIPT", 0) != 0)
        return unavailable("the rate limit script failed: " + msg);
      sha.clear();
    }
    return unavailable("the rate limit script vanished twice while loading");
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
    auto r = eval(keys, args);
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
               shared_limiter_options opts, std::string host, uint16_t port, int db) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.host = std::move(host);
  st.port = port;
  st.db = db;
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
  auto parsed = parse_redis_url(opts.url);
  if (!parsed)
    return std::move(parsed.error());
  if (opts.prefix.empty())
    return caf::make_error(errc::config_invalid, "the Redis key prefix must not be empty");
  if (opts.connect_timeout.count() <= 0 || opts.command_timeout.count() <= 0
      || opts.retry_interval.count() < 0)
    return caf::make_error(errc::config_invalid, "Redis timeouts must be positive");
  auto [host, port, db] = std::move(*parsed);
  return sys.spawn<caf::detached>(shared_limiter, std::move(opts), std::move(host), port, db);
}

} // namespace hotswap
