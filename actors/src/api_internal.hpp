#pragma once

// Internals of the HTTP bridge (api.cpp) shared by the files that add routes
// to it (api_messages.cpp, api_events.cpp). Not part of any public interface.

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/json.hpp>

#include "caf/stateful_actor.hpp"

#include "hotswap/actors/api.hpp"
#include "hotswap/actors/deployment_state.hpp"
#include "hotswap/runtime/jwt.hpp"

namespace hotswap::api_detail {

using deploy::field_errors;

namespace json = boost::json;

// -- per-request context --------------------------------------------------------

struct principal {
  bool authenticated = false;
  std::string user_id;
  std::string username;
  std::string email;
  std::string tenant_id;
  std::vector<std::string> roles;
  int rank = 0;
};

struct call {
  http_exchange_ptr ex;
  std::chrono::steady_clock::time_point deadline;
  principal who;
  std::string client_ip;
  std::vector<std::string> params;
  std::vector<std::pair<std::string, std::string>> extra_headers;

  const http_request& req() const {
    return ex->request();
  }

  request_ctx ctx() const {
    return {who.user_id, who.username, who.tenant_id, req().trace_id, client_ip};
  }
};

using call_ptr = std::shared_ptr<call>;

struct bridge_state;
using bridge_ptr = bridge_actor::stateful_pointer<bridge_state>;
using handler = void (*)(bridge_ptr, const call_ptr&);

struct route {
  std::string method;
  std::vector<std::string> segments; ///< "{}" matches one segment
  std::string name;                  ///< template, the metrics label
  bool auth = true;
  int min_rank = 1;                  ///< 1 Viewer, 2 Deployer, 3 Admin
  bool platform_only = false;        ///< tenant-bound users get 403
  bool ops = false;                  ///< no rate limit
  std::string rate_category;         ///< besides "global"
  bool query_token = false;          ///< the token may come as ?access_token= (WebSocket)
  handler fn = nullptr;
};

struct bridge_state {
  api_env env;
  size_t next_worker = 0; ///< round robin over other nodes' workers
  std::vector<route> routes;
  /// Verified tokens (bounded): skips HMAC and JSON parsing on repeat use.
  std::unordered_map<std::string, jwt::claims> token_cache;
  /// Tenant actors for reads, like the cluster router's owner cache: a send
  /// to an actor that has stopped fails and the entry is dropped.
  std::unordered_map<std::string, tenant_actor> tenant_cache;
  /// The current state of token holders (exists, active, roles, tenant),
  /// re-read from the store at most every user_check_interval: a deleted,
  /// deactivated or demoted user loses access within that interval, on every
  /// node, instead of when the token expires.
  struct user_state {
    bool exists = false;
    bool active = false;
    std::vector<std::string> roles;
    std::string tenant_id;
    std::chrono::steady_clock::time_point fetched;
  };
  std::unordered_map<std::string, user_state> users;
  /// Calls in arrival order (so deadlines are ordered) for the deadline sweep.
  std::deque<std::weak_ptr<call>> in_flight;
  std::chrono::milliseconds request_timeout{15000};
  static inline const char* name = "http_bridge";
};

std::vector<std::string> split_path(const std::string& path);

// -- responses (each answers the call once) ---------------------------------------

void reply(const call_ptr& c, http_response res);
void reply_json(const call_ptr& c, int status, std::string body);
void reply_problem(const call_ptr& c, int status, const std::string& detail,
                   const field_errors& errors = {});
/// A caf::error as its problem (status from the errc; server-side detail is
/// logged, not shown).
void reply_error(const call_ptr& c, const caf::error& err);
std::string join_json(const std::vector<std::string>& items);

// -- request bodies -------------------------------------------------------------------

/// The body as a JSON object, or nullopt after answering 400.
std::optional<boost::json::object> parse_object(const call_ptr& c);

/// Reads an optional string field; a present non-string is a field error.
bool read_string(const boost::json::object& o, const char* key, std::string& out,
                 field_errors& errs, bool required = false);

/// Per-request CAF timeout of the bridge's requests (see api.cpp).
caf::infinite_t timeout_of(bridge_ptr);

/// Registers a route: method, path template ("{}" = one segment), handler,
/// authentication, minimum rank (1 Viewer, 2 Deployer, 3 Admin), platform
/// users only, rate category besides "global".
using route_adder = std::function<void(const char* method, const std::string& path, handler fn,
                                       bool auth, int rank, bool platform_only,
                                       std::string category)>;

/// The event stream over WebSocket (api_events.cpp).
void add_event_routes(std::vector<route>& rs);

/// The Messages API (api_messages.cpp).
void add_message_routes(const route_adder& add);

} // namespace hotswap::api_detail
