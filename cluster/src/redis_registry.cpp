#include "hotswap/cluster/redis_registry.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "caf/spawn_options.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/cluster/redis_client.hpp"

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/store.hpp"

namespace hotswap {

namespace {

// Ownership moves only to a live node, and only away from a dead one; the
// liveness test and the write are one script so two claimers cannot both
// see the entity free. Replies {granted, owner, previous-or-reason}.
constexpr const char* claim_script = R"lua(
if redis.call('EXISTS', ARGV[2] .. ARGV[1]) == 0 then return {0, '', 'self-not-live'} end
local cur = redis.call('GET', KEYS[1])
if not cur then redis.call('SET', KEYS[1], ARGV[1]) return {1, ARGV[1], ''} end
if cur == ARGV[1] then return {1, cur, ''} end
if redis.call('EXISTS', ARGV[2] .. cur) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  return {1, ARGV[1], cur}
end
return {0, cur, ''}
)lua";

// Compare-and-delete: a late release must not free an entity another node
// has taken over since.
constexpr const char* release_script = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua";

using redis::argv_t;
using redis::is_string;
using redis::reply_ptr;
using redis::reply_string;

/// `s` with the glob characters of SCAN's MATCH escaped.
std::string glob_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\')
      out += '\\';
    out += c;
  }
  return out;
}

std::string to_json(const node_info& n) {
  boost::json::object o;
  o["id"] = n.id;
  o["http"] = n.http_endpoint;
  o["caf"] = n.caf_endpoint;
  boost::json::array roles;
  for (const auto& r : n.roles)
    roles.emplace_back(r);
  o["roles"] = std::move(roles);
  boost::json::array envs;
  for (const auto& e : n.environments)
    envs.emplace_back(e);
  o["environments"] = std::move(envs);
  o["heartbeat"] = n.last_heartbeat;
  return boost::json::serialize(o);
}

bool string_field(const boost::json::object& o, const char* key, std::string& out) {
  auto v = o.if_contains(key);
  if (v == nullptr || !v->is_string())
    return false;
  out = std::string(v->get_string());
  return true;
}

bool strings_field(const boost::json::object& o, const char* key, std::vector<std::string>& out) {
  auto v = o.if_contains(key);
  if (v == nullptr || !v->is_array())
    return false;
  for (const auto& x : v->get_array()) {
    if (!x.is_string())
      return false;
    out.emplace_back(x.get_string());
  }
  return true;
}

/// Parses a node key's value; false when it is not what to_json wrote.
bool from_json(const std::string& text, node_info& n) {
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_object())
    return false;
  const auto& o = v.get_object();
  auto hb = o.if_contains("heartbeat");
  if (hb == nullptr || !hb->is_int64())
    return false;
  n.last_heartbeat = hb->get_int64();
  return string_field(o, "id", n.id) && string_field(o, "http", n.http_endpoint)
         && string_field(o, "caf", n.caf_endpoint) && strings_field(o, "roles", n.roles)
         && strings_field(o, "environments", n.environments);
}

struct redis_registry_state {
  redis_registry_options opts;
  std::unique_ptr<redis::client> redis;
  /// (kind, id) granted to opts.self_node and not released: re-asserted when
  /// a renewal finds that Redis lost the node key.
  std::set<std::pair<std::string, std::string>> owned;
  /// A renewal found the node key gone and the re-assertion has not
  /// completed yet (it is retried by the next renewal).
  bool reassert_pending = false;
  static inline const char* name = "redis_registry";

  std::string node_key(const std::string& id) const {
    return opts.prefix + "node:" + id;
  }

  std::string own_key(const std::string& kind, const std::string& id) const {
    return opts.prefix + "own:" + kind + ":" + id;
  }

  std::string left_key(const std::string& id) const {
    return opts.prefix + "left:" + id;
  }

  caf::expected<std::vector<reply_ptr>> pipeline(const std::vector<argv_t>& cmds) {
    return redis->pipeline(cmds);
  }

  caf::expected<reply_ptr> run(const argv_t& cmd) {
    return redis->run(cmd);
  }

  caf::error unavailable(const std::string& why) {
    return redis->unavailable(why, opts.connect_timeout);
  }

  /// Every key matching `prefix`*, in no particular order, without duplicates.
  caf::expected<std::set<std::string>> scan(const std::string& prefix) {
    std::set<std::string> keys;
    std::string cursor = "0";
    auto pattern = glob_escape(prefix) + "*";
    do {
      auto r = run({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
      if (!r)
        return std::move(r.error());
      auto rep = r->get();
      if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2
          || !is_string(rep->element[0]) || rep->element[1]->type != REDIS_REPLY_ARRAY)
        return unavailable("unexpected SCAN reply");
      cursor = reply_string(rep->element[0]);
      auto batch = rep->element[1];
      for (size_t i = 0; i < batch->elements; ++i)
        if (is_string(batch->element[i]))
          keys.insert(reply_string(batch->element[i]));
    } while (cursor != "0");
    return keys;
  }

  /// After our node key vanished (Redis lost its data, or we missed our
  /// TTL): writes back the ownership of every entity this node still hosts,
  /// unless another node claimed it in the meantime.
  caf::error reassert() {
    if (owned.empty())
      return caf::none;
    auto& log = *logger("cluster");
    std::vector<std::pair<std::string, std::string>> items(owned.begin(), owned.end());
    std::vector<argv_t> sets;
    for (const auto& [kind, id] : items)
      sets.push_back({"SET", own_key(kind, id), opts.self_node, "NX"});
    auto rs = pipeline(sets);
    if (!rs)
      return std::move(rs.error());
    std::vector<size_t> taken;
    std::vector<argv_t> gets;
    for (size_t i = 0; i < items.size(); ++i) {
      auto r = (*rs)[i].get();
      if (r->type == REDIS_REPLY_ERROR)
        return caf::make_error(errc::unavailable, "registry " + opts.url
                                                    + ": SET NX failed: " + reply_string(r));
      if (r->type == REDIS_REPLY_NIL) {
        taken.push_back(i);
        gets.push_back({"GET", own_key(items[i].first, items[i].second)});
      }
    }
    size_t lost = 0;
    if (!gets.empty()) {
      auto owners = pipeline(gets);
      if (!owners)
        return std::move(owners.error());
      for (size_t j = 0; j < taken.size(); ++j) {
        auto r = (*owners)[j].get();
        auto cur = is_string(r) ? reply_string(r) : std::string{};
        if (cur == opts.self_node)
          continue;
        const auto& [kind, id] = items[taken[j]];
        log.warn("[N:{}] {}/{} was claimed by {} while the registry had lost our claims; "
                 "dropping it",
                 opts.self_node, kind, id, cur.empty() ? std::string{"(nobody)"} : cur);
        owned.erase(items[taken[j]]);
        ++lost;
      }
    }
    log.warn("[N:{}] this node's liveness key had vanished (expired, or Redis lost its data); "
             "re-asserted {} owned entities, {} lost to other nodes",
             opts.self_node, items.size() - lost, lost);
    return caf::none;
  }
};

registry_actor::behavior_type
redis_registry(registry_actor::stateful_pointer<redis_registry_state> self,
               redis_registry_options opts, redis::client_options co) {
  auto& st = self->state;
  st.opts = std::move(opts);
  // Requests queued behind an unreachable Redis fail at once; after a lost
  // connection the next request reconnects at once.
  co.connect_backoff = st.opts.connect_timeout;
  co.io_backoff = std::chrono::milliseconds{0};
  st.redis = std::make_unique<redis::client>(std::move(co));
  return {
    [=](claim_atom, const std::string& kind, const std::string& id,
        const std::string& node) -> caf::result<claim_outcome> {
      auto& st = self->state;
      auto r = st.redis->eval(claim_script, {st.own_key(kind, id)},
                              {node, st.opts.prefix + "node:"});
      if (!r)
        return std::move(r.error());
      auto rep = r->get();
      if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3
          || rep->element[0]->type != REDIS_REPLY_INTEGER || !is_string(rep->element[1])
          || !is_string(rep->element[2]))
        return caf::make_error(errc::unavailable,
                               "registry " + st.opts.url + ": unexpected claim reply");
      claim_outcome out;
      out.granted = rep->element[0]->integer == 1;
      out.owner = reply_string(rep->element[1]);
      auto third = reply_string(rep->element[2]);
      if (!out.granted && third == "self-not-live")
        return caf::make_error(errc::unavailable, "node " + node
                                                    + " is not a live member of the cluster "
                                                      "(its liveness key is missing)");
      if (out.granted)
        out.previous = std::move(third);
      if (node == st.opts.self_node) {
        if (out.granted)
          st.owned.emplace(kind, id);
        else
          st.owned.erase(std::make_pair(kind, id));
      }
      if (!out.previous.empty())
        logger("cluster")->info("[N:{}] took {}/{} over from {} (no longer live)", node, kind,
                                id, out.previous);
      return out;
    },
    [=](renew_atom, node_info& info) -> caf::result<ok_atom> {
      auto& st = self->state;
      info.last_heartbeat = now_millis();
      auto rs = st.pipeline({{"SET", st.node_key(info.id), to_json(info), "PX",
                              std::to_string(st.opts.node_ttl.count()), "GET"},
                             {"DEL", st.left_key(info.id)}});
      if (!rs)
        return std::move(rs.error());
      for (const auto& r : *rs)
        if (r->type == REDIS_REPLY_ERROR)
          return caf::make_error(errc::unavailable,
                                 "registry " + st.opts.url + ": renew failed: "
                                   + reply_string(r.get())
                                   + " (SET ... GET needs Redis 6.2 or later)");
      if (info.id != st.opts.self_node)
        return ok_atom::value;
      if ((*rs)[0]->type == REDIS_REPLY_NIL && !st.owned.empty())
        st.reassert_pending = true;
      if (st.reassert_pending) {
        if (auto err = st.reassert())
          return err;
        st.reassert_pending = false;
      }
      return ok_atom::value;
    },
    [=](release_atom, const std::string& kind, const std::string& id,
        const std::string& node) -> caf::result<ok_atom> {
      auto& st = self->state;
      // Forgotten even when Redis is down: the node no longer hosts the
      // entity, so it must never be re-asserted.
      if (node == st.opts.self_node)
        st.owned.erase(std::make_pair(kind, id));
      auto r = st.redis->eval(release_script, {st.own_key(kind, id)}, {node});
      if (!r)
        return std::move(r.error());
      return ok_atom::value;
    },
    [=](owner_atom, const std::string& kind,
        const std::string& id) -> caf::result<std::string> {
      auto& st = self->state;
      auto r = st.run({"GET", st.own_key(kind, id)});
      if (!r)
        return std::move(r.error());
      return is_string(r->get()) ? reply_string(r->get()) : std::string{};
    },
    [=](nodes_atom) -> caf::result<std::vector<node_info>> {
      auto& st = self->state;
      auto keys = st.scan(st.opts.prefix + "node:");
      if (!keys)
        return std::move(keys.error());
      std::vector<node_info> out;
      // MGET in batches: one huge reply would hold the connection past the
      // command timeout.
      std::vector<std::string> all(keys->begin(), keys->end());
      for (size_t first = 0; first < all.size(); first += 500) {
        argv_t cmd{"MGET"};
        auto last = std::min(all.size(), first + 500);
        cmd.insert(cmd.end(), all.begin() + static_cast<std::ptrdiff_t>(first),
                   all.begin() + static_cast<std::ptrdiff_t>(last));
        auto r = st.run(cmd);
        if (!r)
          return std::move(r.error());
        auto rep = r->get();
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != last - first)
          return caf::make_error(errc::unavailable,
                                 "registry " + st.opts.url + ": unexpected MGET reply");
        for (size_t i = 0; i < rep->elements; ++i) {
          // Nil: the node expired between SCAN and MGET.
          if (!is_string(rep->element[i]))
            continue;
          node_info n;
          if (!from_json(reply_string(rep->element[i]), n)) {
            logger("cluster")->warn("[R:{}] {} does not hold a node record; ignored",
                                    st.opts.url, all[first + i]);
            continue;
          }
          out.push_back(std::move(n));
        }
      }
      std::sort(out.begin(), out.end(),
                [](const node_info& a, const node_info& b) { return a.id < b.id; });
      return out;
    },
    [=](leave_atom, const std::string& node) -> caf::result<ok_atom> {
      auto& st = self->state;
      // Leaving hands every entity over: nothing is re-asserted should the
      // node renew again.
      if (node == st.opts.self_node) {
        st.owned.clear();
        st.reassert_pending = false;
      }
      auto rs = st.pipeline({{"DEL", st.node_key(node)},
                             {"SET", st.left_key(node), "1", "PX",
                              std::to_string(st.opts.left_marker_ttl.count())}});
      if (!rs)
        return std::move(rs.error());
      for (const auto& r : *rs)
        if (r->type == REDIS_REPLY_ERROR)
          return caf::make_error(errc::unavailable, "registry " + st.opts.url
                                                      + ": leave failed: "
                                                      + reply_string(r.get()));
      logger("cluster")->info("[N:{}] left the cluster", node);
      return ok_atom::value;
    },
    [=](left_atom) -> caf::result<std::vector<std::string>> {
      auto& st = self->state;
      auto prefix = st.opts.prefix + "left:";
      auto keys = st.scan(prefix);
      if (!keys)
        return std::move(keys.error());
      std::vector<std::string> out;
      for (const auto& k : *keys)
        out.push_back(k.substr(prefix.size()));
      return out;
    },
    [=](ping_atom) -> caf::result<ok_atom> {
      auto r = self->state.run({"PING"});
      if (!r)
        return std::move(r.error());
      return ok_atom::value;
    },
  };
}

caf::error url_error(const std::string& url, const std::string& why) {
  return caf::make_error(errc::config_invalid,
                         "invalid Redis URL \"" + url + "\": " + why
                           + " (expected \"redis://host:port[/db]\")");
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
}

} // namespace

caf::expected<std::tuple<std::string, uint16_t, int>> parse_redis_url(const std::string& url) {
  const std::string scheme = "redis://";
  if (url.rfind("rediss://", 0) == 0)
    return url_error(url, "TLS (rediss://) is not supported by hiredis 0.14");
  if (url.rfind(scheme, 0) != 0)
    return url_error(url, "the scheme must be redis://");
  auto rest = url.substr(scheme.size());
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  int db = 0;
  if (slash != std::string::npos) {
    auto dbs = rest.substr(slash + 1);
    if (!all_digits(dbs) || dbs.size() > 2 || std::stoi(dbs) > 15)
      return url_error(url, "the database must be a number from 0 to 15, got \"" + dbs + "\"");
    db = std::stoi(dbs);
  }
  if (authority.empty())
    return url_error(url, "the host and port are missing");
  if (authority.find('@') != std::string::npos)
    return url_error(url, "credentials are not supported");
  std::string host;
  std::string port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos || close + 1 >= authority.size()
        || authority[close + 1] != ':')
      return url_error(url, "an IPv6 host must be written \"[addr]:port\"");
    host = authority.substr(1, close - 1);
    port = authority.substr(close + 2);
  } else {
    auto colon = authority.rfind(':');
    if (colon == std::string::npos)
      return url_error(url, "the port is missing");
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (host.find(':') != std::string::npos)
      return url_error(url, "an IPv6 host needs brackets, e.g. \"redis://[::1]:6379\"");
  }
  if (host.empty())
    return url_error(url, "the host is missing");
  auto bad_char = std::any_of(host.begin(), host.end(), [](char c) {
    return std::isspace(static_cast<unsigned char>(c)) != 0 || c == '/' || c == '?' || c == '#';
  });
  if (bad_char)
    return url_error(url, "the host \"" + host + "\" is not a host name or address");
  if (!all_digits(port) || port.size() > 5 || std::stoul(port) < 1 || std::stoul(port) > 65535)
    return url_error(url, "the port must be a number from 1 to 65535, got \"" + port + "\"");
  return std::make_tuple(std::move(host), static_cast<uint16_t>(std::stoul(port)), db);
}

caf::expected<registry_actor> spawn_redis_registry(caf::actor_system& sys,
                                                   redis_registry_options opts) {
  auto co = redis::options_for(opts.url, "registry", "cluster", opts.connect_timeout,
                               opts.command_timeout);
  if (!co)
    return std::move(co.error());
  if (opts.prefix.empty())
    return caf::make_error(errc::config_invalid, "the Redis key prefix must not be empty");
  if (opts.node_ttl.count() <= 0 || opts.left_marker_ttl.count() <= 0)
    return caf::make_error(errc::config_invalid, "Redis key lifetimes must be positive");
  return sys.spawn<caf::detached>(redis_registry, std::move(opts), std::move(*co));
}

} // namespace hotswap
