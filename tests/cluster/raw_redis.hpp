#pragma once

// Helpers of the Redis suites: a raw connection and a free port for private
// servers; for the cluster tests (tests/cluster/*redis*_test.cpp).

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

#include <string>
#include <vector>

#include "caf/test/dsl.hpp"

#include "hotswap/cluster/redis_registry.hpp"

namespace hotswap::test {

/// A free loopback port (nothing listens on it once this returns).
inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0
      || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    CAF_FAIL("cannot bind a loopback port");
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// A plain hiredis connection for what the registry and message store APIs
/// cannot do: inspect, corrupt and destroy keys behind their back, shut a
/// server down.
class raw_redis {
public:
  explicit raw_redis(const std::string& url) {
    auto parsed = parse_redis_url(url);
    if (!parsed)
      CAF_FAIL("bad Redis URL " << url << ": " << caf::to_string(parsed.error()));
    const auto& [host, port, db] = *parsed;
    c_ = redisConnectWithTimeout(host.c_str(), port, timeval{2, 0});
    if (c_ == nullptr || c_->err != 0)
      CAF_FAIL("cannot connect to " << url << ": " << (c_ ? c_->errstr : "out of memory"));
    redisSetTimeout(c_, timeval{2, 0});
    if (db != 0)
      command({"SELECT", std::to_string(db)});
  }

  raw_redis(const raw_redis&) = delete;
  raw_redis& operator=(const raw_redis&) = delete;

  ~raw_redis() {
    if (c_ != nullptr)
      redisFree(c_);
  }

  /// Runs one command; fails the test on an error. Returns a string reply,
  /// or "" for nil and other types.
  std::string command(const std::vector<std::string>& args) {
    std::string err;
    auto out = try_command(args, err);
    if (!err.empty())
      CAF_FAIL(args.front() << ": " << err);
    return out;
  }

  /// Runs one command; a Redis or I/O error goes to `err` (and "" is returned).
  std::string try_command(const std::vector<std::string>& args, std::string& err) {
    auto r = call(args, err);
    if (r == nullptr)
      return {};
    std::string out;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
      out.assign(r->str, r->len);
    freeReplyObject(r);
    return out;
  }
  /// Every key starting with `prefix`.
  std::vector<std::string> keys(const std::string& prefix, std::string& err) {
    std::vector<std::string> out;
    std::string cursor = "0";
    do {
      auto r = call({"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"}, err);
      if (r == nullptr)
        return out;
      cursor.assign(r->element[0]->str, r->element[0]->len);
      for (size_t i = 0; i < r->element[1]->elements; ++i)
        out.emplace_back(r->element[1]->element[i]->str, r->element[1]->element[i]->len);
      freeReplyObject(r);
    } while (cursor != "0");
    return out;
  }

  /// Deletes every key starting with `prefix` (Redis "losing its data" for
  /// one test only); returns how many keys went.
  size_t forget(const std::string& prefix, std::string& err) {
    auto ks = keys(prefix, err);
    for (const auto& k : ks)
      try_command({"DEL", k}, err);
    return ks.size();
  }

private:
  redisReply* call(const std::vector<std::string>& args, std::string& err) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto r = static_cast<redisReply*>(
      redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r == nullptr) {
      err = c_->errstr;
      return nullptr;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      err.assign(r->str, r->len);
      freeReplyObject(r);
      return nullptr;
    }
    return r;
  }



  redisContext* c_ = nullptr;
};

} // namespace hotswap::test
