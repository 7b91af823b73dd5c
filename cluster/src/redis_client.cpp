#include "hotswap/cluster/redis_client.hpp"

#include <cerrno>
#include <tuple>
#include <utility>

#include "hotswap/cluster/redis_registry.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"

namespace hotswap::redis {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

} // namespace

std::string reply_string(const redisReply* r) {
  return r->str != nullptr ? std::string(r->str, r->len) : std::string{};
}

bool is_string(const redisReply* r) {
  return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

caf::expected<client_options> options_for(const std::string& url, std::string what,
                                          std::string log_name,
                                          std::chrono::milliseconds connect_timeout,
                                          std::chrono::milliseconds command_timeout) {
  auto parsed = parse_redis_url(url);
  if (!parsed)
    return std::move(parsed.error());
  if (connect_timeout.count() <= 0 || command_timeout.count() <= 0)
    return caf::make_error(errc::config_invalid, "Redis timeouts must be positive");
  client_options co;
  co.url = url;
  std::tie(co.host, co.port, co.db) = std::move(*parsed);
  co.what = std::move(what);
  co.log_name = std::move(log_name);
  co.connect_timeout = connect_timeout;
  co.command_timeout = command_timeout;
  return co;
}

client::client(client_options opts) : opts_(std::move(opts)) {
}

caf::error client::failure(const std::string& why) const {
  return caf::make_error(errc::unavailable,
                         opts_.what + " " + opts_.url + " is unavailable: " + why);
}

caf::error client::unavailable(const std::string& why, std::chrono::milliseconds backoff) {
  ctx_.reset();
  shas_.clear();
  retry_at_ = std::chrono::steady_clock::now() + backoff;
  last_error_ = why;
  if (!down_) {
    down_ = true;
    logger(opts_.log_name)->warn("[R:{}] {} unavailable: {}{}", opts_.url, opts_.what, why,
                                 opts_.down_hint);
  }
  return failure(why);
}

caf::error client::io_error(const std::string& what, int sys_errno) {
  std::string why = what;
  if (ctx_ && ctx_->err != 0) {
    why += std::string{": "} + ctx_->errstr;
    // hiredis reports the expiry of its socket timeout as EAGAIN.
    if (ctx_->err == REDIS_ERR_IO && (sys_errno == EAGAIN || sys_errno == EWOULDBLOCK))
      why += " (no answer within " + std::to_string(opts_.command_timeout.count()) + " ms)";
  }
  return unavailable(why, opts_.io_backoff);
}

caf::error client::connect() {
  if (std::chrono::steady_clock::now() < retry_at_)
    return failure(last_error_);
  auto fail = [this](std::string why) { return unavailable(why, opts_.connect_backoff); };
  context_ptr c{redisConnectWithTimeout(opts_.host.c_str(), opts_.port,
                                        to_timeval(opts_.connect_timeout))};
  if (!c)
    return fail("cannot allocate a hiredis context");
  if (c->err != 0)
    return fail(std::string{"cannot connect: "} + c->errstr);
  if (redisSetTimeout(c.get(), to_timeval(opts_.command_timeout)) != REDIS_OK)
    return fail(std::string{"cannot set the command timeout: "} + c->errstr);
  if (opts_.db != 0) {
    auto dbs = std::to_string(opts_.db);
    const char* argv[] = {"SELECT", dbs.c_str()};
    size_t lens[] = {6, dbs.size()};
    reply_ptr r{static_cast<redisReply*>(redisCommandArgv(c.get(), 2, argv, lens))};
    if (!r || c->err != 0)
      return fail(std::string{"SELECT failed: "} + c->errstr);
    if (r->type == REDIS_REPLY_ERROR)
      return fail("SELECT " + dbs + " refused: " + reply_string(r.get()));
  }
  ctx_ = std::move(c);
  if (down_ || !ever_connected_)
    logger(opts_.log_name)->info("[R:{}] {} {}", opts_.url, opts_.what,
                                 down_ ? "reachable again" : "connected");
  down_ = false;
  ever_connected_ = true;
  return caf::none;
}

caf::expected<std::vector<reply_ptr>> client::pipeline(const std::vector<argv_t>& cmds) {
  if (!ctx_)
    if (auto err = connect())
      return err;
  for (const auto& cmd : cmds) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(argv.size()), argv.data(),
                               lens.data())
        != REDIS_OK)
      return io_error("cannot send a command", errno);
  }
  std::vector<reply_ptr> out;
  for (size_t i = 0; i < cmds.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) {
      int sys_errno = errno;
      if (raw != nullptr)
        freeReplyObject(raw);
      return io_error(cmds[i].front() + " failed", sys_errno);
    }
    out.emplace_back(static_cast<redisReply*>(raw));
  }
  return out;
}

caf::expected<reply_ptr> client::run(const argv_t& cmd) {
  auto rs = pipeline({cmd});
  if (!rs)
    return std::move(rs.error());
  auto r = std::move(rs->front());
  if (r->type == REDIS_REPLY_ERROR)
    return caf::make_error(errc::unavailable, opts_.what + " " + opts_.url + ": " + cmd.front()
                                                + " failed: " + reply_string(r.get()));
  return r;
}

caf::expected<reply_ptr> client::eval(const char* script, const argv_t& keys,
                                      const argv_t& args) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto& sha = shas_[script];
    if (sha.empty()) {
      auto loaded = run({"SCRIPT", "LOAD", script});
      if (!loaded)
        return std::move(loaded.error());
      if (!is_string(loaded->get()))
        return unavailable("SCRIPT LOAD returned no SHA1", opts_.io_backoff);
      shas_[script] = reply_string(loaded->get());
    }
    argv_t cmd{"EVALSHA", shas_[script], std::to_string(keys.size())};
    cmd.insert(cmd.end(), keys.begin(), keys.end());
    cmd.insert(cmd.end(), args.begin(), args.end());
    auto rs = pipeline({cmd});
    if (!rs)
      return std::move(rs.error());
    auto r = std::move(rs->front());
    if (r->type != REDIS_REPLY_ERROR)
      return r;
    auto msg = reply_string(r.get());
    if (msg.rfind("NOSCRIPT", 0) != 0)
      return caf::make_error(errc::unavailable,
                             opts_.what + " " + opts_.url + ": script failed: " + msg);
    shas_.erase(script);
  }
  return caf::make_error(errc::unavailable, opts_.what + " " + opts_.url
                                              + ": the script vanished twice while loading");
}

} // namespace hotswap::redis
