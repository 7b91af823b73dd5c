#include "hotswap/actors/api.hpp"

#include "api_internal.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <unordered_map>

#include <boost/json.hpp>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/deployment_state.hpp"
#include "hotswap/actors/json_util.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/jwt.hpp"
#include "hotswap/runtime/log.hpp"

namespace hotswap {

namespace api_detail {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/')
      ++i;
    auto j = path.find('/', i);
    if (j == std::string::npos)
      j = path.size();
    if (j > i)
      out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

// -- responses ------------------------------------------------------------------

void reply(const call_ptr& c, http_response res) {
  for (auto& h : c->extra_headers)
    res.headers.push_back(h);
  c->ex->respond(std::move(res));
}

void reply_json(const call_ptr& c, int status, std::string body) {
  reply(c, json_response(status, std::move(body)));
}

void reply_problem(const call_ptr& c, int status, const std::string& detail,
                   const field_errors& errors) {
  auto title = errors.empty() ? std::string{status_title(status)}
                              : std::string{"One or more validation errors occurred."};
  auto res = problem(status, title, detail, c->req().trace_id, errors);
  if (status == 401)
    res.headers.emplace_back("WWW-Authenticate", "Bearer");
  reply(c, std::move(res));
}

/// What a client may read about a server-side failure: internal detail (hosts,
/// driver messages) stays in the log, keyed by the request id.
std::string public_detail(errc code, const std::string& detail) {
  switch (code) {
    case errc::unavailable:
    case errc::store_failure:
      return "A dependency of this node is temporarily unavailable. Retry later.";
    case errc::fenced:
    case errc::not_owner:
      return "The entity moved to another owner while the request ran. Retry.";
    case errc::timeout:
      return "The request did not complete in time.";
    case errc::internal:
    case errc::config_invalid:
      return "An internal error occurred.";
    default:
      return detail;
  }
}

void reply_error(const call_ptr& c, const caf::error& err) {
  auto code = errc_of(err);
  auto status = http_status(code);
  auto detail = error_detail(err);
  if (status >= 500)
    logger("http")->warn("[R:{}] {} {} -> {}: {} {}", c->req().request_id, c->req().method,
                         c->ex->route(), status, to_string(code), detail);
  detail = public_detail(code, detail);
  if (detail.empty())
    detail = status_title(status);
  auto res = problem(status, status_title(status), detail, c->req().trace_id);
  if (status == 503 || status == 429)
    res.headers.emplace_back("Retry-After", "1");
  reply(c, std::move(res));
}

std::string join_json(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i)
      out += ',';
    out += items[i];
  }
  out += ']';
  return out;
}

// -- request bodies -----------------------------------------------------------------

std::optional<json::object> parse_object(const call_ptr& c) {
  boost::system::error_code ec;
  auto v = json::parse(c->req().body, ec);
  if (ec || !v.is_object()) {
    reply_problem(c, 400, "The request body must be a JSON object.");
    return std::nullopt;
  }
  return std::move(v.as_object());
}

/// Reads an optional string field; a present non-string is a field error.
bool read_string(const json::object& o, const char* key, std::string& out, field_errors& errs,
                 bool required) {
  auto v = o.if_contains(key);
  if (!v || v->is_null()) {
    if (required)
      errs[key].push_back(std::string{"The "} + key + " field is required.");
    return false;
  }
  if (!v->is_string()) {
    errs[key].push_back(std::string{"The "} + key + " field must be a string.");
    return false;
  }
  out = std::string(v->as_string());
  if (required && out.find_first_not_of(" \t\r\n") == std::string::npos)
    errs[key].push_back(std::string{"The "} + key + " field is required.");
  return true;
}

bool read_metadata(const json::object& o, std::map<std::string, std::string>& out,
                   field_errors& errs) {
  auto v = o.if_contains("metadata");
  if (!v || v->is_null())
    return false;
  if (!v->is_object()) {
    errs["metadata"].push_back("The metadata must be an object of strings.");
    return false;
  }
  for (auto& kv : v->as_object()) {
    if (!kv.value().is_string()) {
      errs["metadata"].push_back("Metadata values must be strings.");
      return false;
    }
    out[std::string(kv.key())] = std::string(kv.value().as_string());
  }
  return true;
}

/// Tier as a name (case-insensitive) or an integer 0-4; -1 when invalid.
int32_t read_tier(const json::object& o, field_errors& errs) {
  auto v = o.if_contains("tier");
  if (!v || v->is_null()) {
    errs["tier"].push_back("The tier field is required.");
    return -1;
  }
  if (v->is_string())
    return parse_tier(std::string(v->as_string()));
  if (v->is_int64() && v->as_int64() >= 0 && v->as_int64() <= 4)
    return static_cast<int32_t>(v->as_int64());
  return -1;
}

bool read_quota(const json::object& o, resource_quota& q, field_errors& errs) {
  auto v = o.if_contains("resourceQuota");
  if (!v || v->is_null())
    return false;
  if (!v->is_object()) {
    errs["resourceQuota"].push_back("The resourceQuota must be an object.");
    return false;
  }
  auto& qo = v->as_object();
  auto num = [&](const char* key, int32_t& out) {
    auto x = qo.if_contains(key);
    if (!x || !x->is_int64() || x->as_int64() < 1 || x->as_int64() > 10000000) {
      errs["resourceQuota"].push_back(std::string{key} + " must be a positive integer.");
      return;
    }
    out = static_cast<int32_t>(x->as_int64());
  };
  num("maxConcurrentDeployments", q.max_concurrent_deployments);
  num("maxDeploymentsPerDay", q.max_deployments_per_day);
  num("maxModules", q.max_modules);
  num("maxStorageMB", q.max_storage_mb);
  return true;
}

void merge(field_errors& into, const field_errors& from) {
  for (auto& [k, v] : from)
    for (auto& m : v)
      if (std::find(into[k].begin(), into[k].end(), m) == into[k].end())
        into[k].push_back(m);
}

// -- ops --------------------------------------------------------------------------

void get_health(bridge_ptr, const call_ptr& c) {
  http_response res;
  res.content_type = "text/plain; charset=utf-8";
  res.body = "Healthy";
  reply(c, std::move(res));
}

void get_metrics(bridge_ptr self, const call_ptr& c) {
  http_response res;
  res.content_type = "text/plain; version=0.0.4; charset=utf-8";
  res.body = self->state.env.metrics ? self->state.env.metrics->render() : std::string{};
  reply(c, std::move(res));
}

void get_ready(bridge_ptr self, const call_ptr& c) {
  struct probe {
    bool store_up = false;
    bool registry_up = false;
    std::string store_error;
    std::string registry_error;
    int pending = 2;
  };
  auto p = std::make_shared<probe>();
  auto finish = [c, p] {
    if (--p->pending > 0)
      return;
    auto component = [](bool up, const std::string& err) {
      json::object o;
      o["status"] = up ? "Up" : "Down";
      if (!up)
        o["error"] = err;
      return o;
    };
    json::object o;
    bool ready = p->store_up && p->registry_up;
    o["status"] = ready ? "Ready" : "NotReady";
    o["store"] = component(p->store_up, p->store_error);
    o["registry"] = component(p->registry_up, p->registry_error);
    auto res = json_response(ready ? 200 : 503, json::serialize(o));
    if (!ready)
      res.headers.emplace_back("Retry-After", "1");
    reply(c, std::move(res));
  };
  auto deadline = std::chrono::seconds(2);
  self->request(self->state.env.store, deadline, ping_atom::value)
    .then(
      [=](ok_atom) {
        p->store_up = true;
        finish();
      },
      [=](caf::error& err) {
        p->store_error = error_detail(err).empty() ? to_string(errc_of(err)) : error_detail(err);
        finish();
      });
  self->request(self->state.env.registry, deadline, ping_atom::value)
    .then(
      [=](ok_atom) {
        p->registry_up = true;
        finish();
      },
      [=](caf::error& err) {
        p->registry_error = to_string(errc_of(err));
        finish();
      });
}

// -- authentication --------------------------------------------------------------------

/// Requests from the bridge carry no per-request CAF timeout (each one would
/// wake CAF's clock thread twice); the bridge's deadline sweep answers 504
/// for calls that outlive http.request_timeout_ms instead (see on_sweep).
caf::infinite_t timeout_of(bridge_ptr) {
  return caf::infinite;
}

/// How long a request waits for the cluster-wide limiter before this node's
/// buckets decide instead.
constexpr auto shared_limiter_timeout = std::chrono::milliseconds(500);

/// Takes one token for `key` from each of `buckets` (category, limit per
/// minute) in turn, stopping at the first that denies, and calls `then` with
/// the decision of the last bucket taken from. On a single node (no shared
/// limiter) this node's limiter decides and `then` runs before take_rate
/// returns. In a cluster the shared limiter (Redis) decides, asynchronously;
/// when it fails or does not answer within shared_limiter_timeout this node's
/// limiter decides instead, counted in hotswap_rate_limit_fallbacks_total (the
/// shared limiter logs one warning per outage). `then` is skipped when the
/// call was answered in the meantime (deadline sweep). Never blocks.
template <class F>
void take_rate(bridge_ptr self, const call_ptr& c, std::string key,
               std::vector<std::pair<std::string, uint32_t>> buckets, F then) {
  auto local = [](bridge_ptr self, const std::string& key,
                  const std::vector<std::pair<std::string, uint32_t>>& buckets) {
    rate_decision d;
    for (const auto& [category, limit] : buckets) {
      d = self->state.env.limiter->take(category, key, limit);
      if (!d.allowed)
        break;
    }
    return d;
  };
  auto& shared = self->state.env.shared_limiter;
  if (!shared || buckets.empty() || buckets.size() > 2) {
    then(local(self, key, buckets));
    return;
  }
  auto on_decision = [c, then](rate_decision& d) {
    if (!c->ex->responded())
      then(d);
  };
  auto on_error = [self, c, key, buckets, local, then](caf::error&) {
    if (auto m = self->state.env.metrics)
      m->rate_limit_fallbacks().Increment();
    if (!c->ex->responded())
      then(local(self, key, buckets));
  };
  if (buckets.size() == 1)
    self
      ->request(shared, shared_limiter_timeout, take_atom::value, buckets[0].first, key,
                buckets[0].second)
      .then(on_decision, on_error);
  else
    self
      ->request(shared, shared_limiter_timeout, take_atom::value, key, buckets[0].first,
                buckets[0].second, buckets[1].first, buckets[1].second)
      .then(on_decision, on_error);
}

void post_login(bridge_ptr self, const call_ptr& c) {
  auto o = parse_object(c);
  if (!o)
    return;
  field_errors errs;
  login_request req;
  read_string(*o, "username", req.username, errs, true);
  read_string(*o, "password", req.password, errs, true);
  if (!errs.empty()) {
    reply_problem(c, 400, "The user name and the password are required.", errs);
    return;
  }
  req.source_ip = c->client_ip;
  req.trace_id = c->req().trace_id;
  auto proceed = [self, c, req] {
    // The KDF is slow by design: give the login more than the default deadline.
    self->request(self->state.env.identity, timeout_of(self), login_atom::value, req)
      .then(
        [=](login_result& r) {
          boost::system::error_code ec;
          json::object o;
          o["token"] = r.token;
          o["expiresAt"] = rfc3339(r.expires_at);
          o["user"] = json::parse(to_json(r.user), ec);
          reply_json(c, 200, json::serialize(o));
        },
        [=](caf::error& err) { reply_error(c, err); });
  };
  auto& rl = self->state.env.cfg->rate_limits;
  if (!rl.enabled || !self->state.env.limiter) {
    proceed();
    return;
  }
  take_rate(self, c, lower(req.username) + "|" + c->client_ip, {{"login", rl.login}},
            [c, proceed](const rate_decision& d) {
              if (!d.allowed) {
                c->extra_headers = {{"X-RateLimit-Limit", std::to_string(d.limit)},
                                    {"X-RateLimit-Remaining", "0"},
                                    {"X-RateLimit-Reset", std::to_string(d.reset_seconds)},
                                    {"Retry-After", std::to_string(d.retry_after)}};
                reply_problem(c, 429, "Too many login attempts. Try again later.");
                return;
              }
              proceed();
            });
}

void get_me(bridge_ptr self, const call_ptr& c) {
  self->request(self->state.env.identity, timeout_of(self), user_atom::value, get_atom::value,
                c->who.user_id)
    .then([=](user_record& u) { reply_json(c, 200, to_json(u)); },
          [=](caf::error& err) {
            if (err == errc::not_found)
              reply_problem(c, 401, "The user of this token no longer exists.");
            else
              reply_error(c, err);
          });
}

void get_demo_credentials(bridge_ptr self, const call_ptr& c) {
  if (!self->state.env.cfg->node.dev_mode) {
    reply_problem(c, 404, "Demo credentials exist only in development mode.");
    return;
  }
  json::array users;
  auto add = [&](const char* u, const char* p, const char* role, const char* d) {
    json::object o;
    o["username"] = u;
    o["password"] = p;
    o["roles"] = json::array{role};
    o["description"] = d;
    users.push_back(std::move(o));
  };
  add("admin", "Admin123!", "Admin", "Full access: tenants, users, audit, approvals");
  add("deployer", "Deploy123!", "Deployer", "Creates and rolls back deployments");
  add("viewer", "Viewer123!", "Viewer", "Read-only access");
  json::object o;
  o["message"] = "Development mode: these demo users exist on this node. Never enable dev_mode "
                 "in production.";
  o["users"] = std::move(users);
  reply_json(c, 200, json::serialize(o));
}

// -- users ------------------------------------------------------------------------------

bool read_user_input(const call_ptr& c, const json::object& o, user_input& in, field_errors& errs) {
  read_string(o, "username", in.username, errs, true);
  in.has_password = read_string(o, "password", in.password, errs);
  read_string(o, "email", in.email, errs, true);
  read_string(o, "fullName", in.full_name, errs);
  read_string(o, "tenantId", in.tenant_id, errs);
  if (auto v = o.if_contains("roles"); v && !v->is_null()) {
    if (!v->is_array()) {
      errs["roles"].push_back("The roles field must be an array of role names.");
    } else {
      for (auto& r : v->as_array()) {
        if (r.is_string())
          in.roles.emplace_back(r.as_string());
        else
          errs["roles"].push_back("Role names must be strings.");
      }
    }
  }
  if (auto v = o.if_contains("active"); v && !v->is_null()) {
    if (!v->is_bool())
      errs["active"].push_back("The active field must be a boolean.");
    else {
      in.has_active = true;
      in.active = v->as_bool();
    }
  }
  return errs.empty();
}

void reply_user_error(const call_ptr& c, const caf::error& err, const std::string& id) {
  if (err == errc::not_found) {
    reply_problem(c, 404, "User " + id + " was not found.");
  } else if (err == errc::invalid_argument) {
    // "field: message" from the identity actor.
    auto detail = error_detail(err);
    auto colon = detail.find(": ");
    field_errors errs;
    if (colon != std::string::npos)
      errs[detail.substr(0, colon)].push_back(detail.substr(colon + 2));
    reply_problem(c, 400, detail, errs);
  } else {
    reply_error(c, err);
  }
}

/// Parses and validates a user body; replies 400 and returns false when invalid.
bool parse_user_body(bridge_ptr self, const call_ptr& c, bool creating, user_input& in) {
  auto o = parse_object(c);
  if (!o)
    return false;
  field_errors errs;
  read_user_input(c, *o, in, errs);
  merge(errs, validate(in, creating, self->state.env.cfg->node.dev_mode));
  if (!errs.empty()) {
    reply_problem(c, 400, "The user is invalid.", errs);
    return false;
  }
  return true;
}

void post_user(bridge_ptr self, const call_ptr& c) {
  user_input in;
  if (!parse_user_body(self, c, true, in))
    return;
  self->request(self->state.env.identity, timeout_of(self), user_atom::value,
                create_atom::value, in, c->ctx())
    .then(
      [=](user_record& u) {
        c->extra_headers.emplace_back("Location", "/api/v1/users/" + u.id);
        reply_json(c, 201, to_json(u));
      },
      [=](caf::error& err) { reply_user_error(c, err, ""); });
}

void get_users(bridge_ptr self, const call_ptr& c) {
  self->request(self->state.env.identity, timeout_of(self), user_atom::value, list_atom::value)
    .then(
      [=](std::vector<user_record>& us) {
        std::vector<std::string> items;
        for (auto& u : us)
          items.push_back(to_json(u));
        reply_json(c, 200, join_json(items));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void get_user(bridge_ptr self, const call_ptr& c) {
  auto id = c->params[0];
  self->request(self->state.env.identity, timeout_of(self), user_atom::value, get_atom::value, id)
    .then([=](user_record& u) { reply_json(c, 200, to_json(u)); },
          [=](caf::error& err) { reply_user_error(c, err, id); });
}

void put_user(bridge_ptr self, const call_ptr& c) {
  auto id = c->params[0];
  user_input in;
  if (!parse_user_body(self, c, false, in))
    return;
  self->request(self->state.env.identity, timeout_of(self), user_atom::value,
                update_atom::value, id, in, c->ctx())
    .then([=](user_record& u) { reply_json(c, 200, to_json(u)); },
          [=](caf::error& err) { reply_user_error(c, err, id); });
}

void delete_user(bridge_ptr self, const call_ptr& c) {
  auto id = c->params[0];
  self->request(self->state.env.identity, timeout_of(self), user_atom::value, delete_atom::value,
                id, c->ctx())
    .then(
      [=](ok_atom) {
        http_response res;
        res.status = 204;
        res.content_type.clear();
        reply(c, std::move(res));
      },
      [=](caf::error& err) { reply_user_error(c, err, id); });
}

// -- tenants ----------------------------------------------------------------------------

std::string tenant_prefix(const call_ptr& c) {
  return c->req().path.rfind("/api/v1/", 0) == 0 ? "/api/v1/tenants/" : "/api/tenants/";
}

void reply_tenant(const call_ptr& c, int status, const tenant& t) {
  reply_json(c, status, to_json(t));
}

template <class... Ts>
void tenant_call(bridge_ptr self, const call_ptr& c, int status, Ts&&... xs) {
  self->request(self->state.env.tenants, timeout_of(self), std::forward<Ts>(xs)...)
    .then(
      [=](tenant& t) {
        if (status == 204) {
          http_response res;
          res.status = 204;
          res.content_type.clear();
          reply(c, std::move(res));
          return;
        }
        reply_tenant(c, status, t);
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void post_tenant(bridge_ptr self, const call_ptr& c) {
  auto o = parse_object(c);
  if (!o)
    return;
  field_errors errs;
  tenant_spec spec;
  read_string(*o, "name", spec.name, errs, true);
  read_string(*o, "subdomain", spec.subdomain, errs, true);
  read_string(*o, "contactEmail", spec.contact_email, errs, true);
  read_string(*o, "customDomain", spec.custom_domain, errs);
  read_metadata(*o, spec.metadata, errs);
  spec.tier = read_tier(*o, errs);
  spec.has_quota = read_quota(*o, spec.quota, errs);
  merge(errs, validate(spec));
  if (!errs.empty()) {
    reply_problem(c, 400, "The tenant is invalid.", errs);
    return;
  }
  auto id = crypto::uuid4();
  auto location = tenant_prefix(c) + id;
  self->request(self->state.env.tenants, timeout_of(self), create_atom::value, id, spec, c->ctx())
    .then(
      [=](tenant& t) {
        c->extra_headers.emplace_back("Location", location);
        reply_tenant(c, 201, t);
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void get_tenants(bridge_ptr self, const call_ptr& c) {
  snapshot_query q;
  q.kind = "tenant";
  q.limit = 1000;
  auto& query = c->req().query;
  if (auto i = query.find("status"); i != query.end() && !i->second.empty()) {
    auto s = lower(i->second);
    if (s == "active")
      q.status = "Active";
    else if (s == "suspended")
      q.status = "Suspended";
    else if (s == "deleted")
      q.status = "Deleted";
    else {
      field_errors errs;
      errs["status"].push_back("The status must be Active, Suspended or Deleted.");
      reply_problem(c, 400, "Unknown tenant status.", errs);
      return;
    }
  }
  self->request(self->state.env.store, timeout_of(self), list_atom::value, q)
    .then(
      [=](std::vector<snapshot_record>& rows) {
        std::vector<std::string> items;
        items.reserve(rows.size());
        for (auto& r : rows)
          items.push_back(std::move(r.body));
        reply_json(c, 200, join_json(items));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

constexpr size_t cache_limit = 10000;

/// Reads the tenant's JSON from its actor, through the cached handle when
/// there is one; a stale handle (actor passivated or stopped) is dropped and
/// the read retried once through the host.
void read_tenant(bridge_ptr self, const call_ptr& c, const std::string& id, bool retry) {
  auto& cache = self->state.tenant_cache;
  auto i = cache.find(id);
  if (i == cache.end()) {
    self->request(self->state.env.tenants, timeout_of(self), child_atom::value, id)
      .then(
        [=](tenant_actor& child) {
          auto& cache = self->state.tenant_cache;
          if (cache.size() >= cache_limit)
            cache.clear();
          cache.emplace(id, child);
          read_tenant(self, c, id, false);
        },
        [=](caf::error& err) { reply_error(c, err); });
    return;
  }
  auto child = i->second;
  self->request(child, timeout_of(self), get_atom::value, json_atom::value)
    .then([=](std::string& body) { reply_json(c, 200, std::move(body)); },
          [=](caf::error& err) {
            auto& cache = self->state.tenant_cache;
            if (auto j = cache.find(id); j != cache.end() && j->second == child)
              cache.erase(j);
            if (retry && err == caf::sec::request_receiver_down)
              read_tenant(self, c, id, false);
            else
              reply_error(c, err);
          });
}

void get_tenant(bridge_ptr self, const call_ptr& c) {
  read_tenant(self, c, c->params[0], true);
}

void put_tenant(bridge_ptr self, const call_ptr& c) {
  auto o = parse_object(c);
  if (!o)
    return;
  field_errors errs;
  tenant_patch p;
  p.has_name = read_string(*o, "name", p.name, errs);
  p.has_contact_email = read_string(*o, "contactEmail", p.contact_email, errs);
  p.has_custom_domain = read_string(*o, "customDomain", p.custom_domain, errs);
  p.has_metadata = read_metadata(*o, p.metadata, errs);
  merge(errs, validate(p));
  if (!errs.empty()) {
    reply_problem(c, 400, "The tenant update is invalid.", errs);
    return;
  }
  tenant_call(self, c, 200, update_atom::value, c->params[0], p, c->ctx());
}

void post_tenant_suspend(bridge_ptr self, const call_ptr& c) {
  tenant_call(self, c, 200, status_atom::value, c->params[0], tenant_op::suspend, c->ctx());
}

void post_tenant_activate(bridge_ptr self, const call_ptr& c) {
  tenant_call(self, c, 200, status_atom::value, c->params[0], tenant_op::activate, c->ctx());
}

void delete_tenant(bridge_ptr self, const call_ptr& c) {
  tenant_call(self, c, 204, status_atom::value, c->params[0], tenant_op::remove, c->ctx());
}

void put_tenant_subscription(bridge_ptr self, const call_ptr& c) {
  auto o = parse_object(c);
  if (!o)
    return;
  field_errors errs;
  tier_change change;
  change.tier = read_tier(*o, errs);
  change.has_quota = read_quota(*o, change.quota, errs);
  merge(errs, validate(change));
  if (!errs.empty()) {
    reply_problem(c, 400, "The subscription change is invalid.", errs);
    return;
  }
  tenant_call(self, c, 200, tier_atom::value, c->params[0], change, c->ctx());
}

// -- audit ------------------------------------------------------------------------------

std::string to_json(const audit_event& ev) {
  boost::system::error_code ec;
  auto details = json::parse(ev.detail.empty() ? "{}" : ev.detail, ec);
  json::object o;
  o["id"] = ev.id;
  o["timestamp"] = rfc3339(ev.at);
  o["eventCategory"] = ev.category;
  o["eventType"] = ev.action;
  o["result"] = ev.result;
  o["entityType"] = ev.entity_kind;
  o["entityId"] = ev.entity_id;
  o["tenantId"] = ev.tenant_id.empty() ? json::value(nullptr) : json::value(ev.tenant_id);
  o["username"] = ev.actor_user;
  o["sourceIp"] = ev.source_ip;
  o["traceId"] = ev.trace_id;
  o["message"] = ev.message;
  o["details"] = ec ? json::value(ev.detail) : std::move(details);
  return json::serialize(o);
}

/// Reads pageNumber/pageSize (and startDate/endDate); replies 400 on bad values.
bool read_paging(const call_ptr& c, audit_query& q) {
  field_errors errs;
  auto& query = c->req().query;
  auto read_int = [&](const char* key, int32_t lo, int32_t hi, int32_t& out) {
    auto i = query.find(key);
    if (i == query.end() || i->second.empty())
      return;
    try {
      size_t pos = 0;
      auto v = std::stol(i->second, &pos);
      if (pos != i->second.size() || v < lo || v > hi)
        throw std::out_of_range(key);
      out = static_cast<int32_t>(v);
    } catch (const std::exception&) {
      errs[key].push_back(std::string{key} + " must be an integer from " + std::to_string(lo)
                          + " to " + std::to_string(hi) + ".");
    }
  };
  read_int("pageNumber", 1, 1000000, q.page_number);
  read_int("pageSize", 1, 100, q.page_size);
  auto read_date = [&](const char* key, millis& out) {
    auto i = query.find(key);
    if (i == query.end() || i->second.empty())
      return;
    bool ok = false;
    out = parse_rfc3339(i->second, &ok);
    if (!ok)
      errs[key].push_back(std::string{key} + " must be an RFC 3339 time.");
  };
  read_date("startDate", q.from);
  read_date("endDate", q.to);
  if (!errs.empty()) {
    reply_problem(c, 400, "Invalid paging or date parameters.", errs);
    return false;
  }
  return true;
}

void run_audit_query(bridge_ptr self, const call_ptr& c, audit_query q) {
  if (!read_paging(c, q))
    return;
  self->request(self->state.env.store, timeout_of(self), audit_atom::value, q)
    .then(
      [=](std::vector<audit_event>& evs) {
        std::vector<std::string> items;
        items.reserve(evs.size());
        for (auto& ev : evs)
          items.push_back(to_json(ev));
        reply_json(c, 200, join_json(items));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void get_audit_category(bridge_ptr self, const call_ptr& c) {
  audit_query q;
  q.category = c->params[0];
  run_audit_query(self, c, q);
}

void get_audit_trace(bridge_ptr self, const call_ptr& c) {
  audit_query q;
  q.trace_id = c->params[0];
  run_audit_query(self, c, q);
}

void get_audit_deployment(bridge_ptr self, const call_ptr& c) {
  audit_query q;
  q.entity_kind = "deployment";
  q.entity_id = c->params[0];
  run_audit_query(self, c, q);
}

void get_audit_approval(bridge_ptr self, const call_ptr& c) {
  audit_query q;
  q.entity_kind = "approval";
  q.entity_id = c->params[0];
  run_audit_query(self, c, q);
}

void get_audit_authentication(bridge_ptr self, const call_ptr& c) {
  audit_query q;
  q.category = "Authentication";
  q.actor_user = c->params[0];
  run_audit_query(self, c, q);
}

// -- modules ------------------------------------------------------------------------------

/// An environment by name (case-insensitive) or legacy number 0-3; empty
/// when invalid.
std::string canonical_environment(const std::string& text) {
  auto& names = config::environment_names();
  if (text.size() == 1 && text[0] >= '0' && text[0] <= '3')
    return names[static_cast<size_t>(text[0] - '0')];
  for (auto& n : names)
    if (lower(n) == lower(text))
      return n;
  return {};
}

/// The environment named by the first path segment; answers 404 and
/// returns empty when it is unknown.
std::string path_environment(const call_ptr& c) {
  auto env = canonical_environment(c->params[0]);
  if (env.empty())
    reply_problem(c, 404, "Unknown environment " + c->params[0] + ".");
  return env;
}

/// Reads ?environment= (required); replies 400 and returns empty when bad.
std::string read_environment(const call_ptr& c, bool required) {
  auto& q = c->req().query;
  auto i = q.find("environment");
  if (i == q.end() || i->second.empty()) {
    if (required) {
      field_errors errs;
      errs["environment"].push_back("The environment query parameter is required "
                                    "(Development, QA, Staging, Production or 0-3).");
      reply_problem(c, 400, "An environment is required.", errs);
    }
    return {};
  }
  auto env = canonical_environment(i->second);
  if (env.empty()) {
    field_errors errs;
    errs["environment"].push_back("The environment must be Development, QA, Staging, "
                                  "Production or 0-3.");
    reply_problem(c, 400, "Unknown environment " + i->second + ".", errs);
  }
  return env;
}

/// Tenant users see platform modules and their tenant's.
bool visible(const call_ptr& c, const module_record& r) {
  return c->who.tenant_id.empty() || r.tenant_id.empty() || r.tenant_id == c->who.tenant_id;
}

void post_module(bridge_ptr self, const call_ptr& c) {
  auto& req = c->req();
  module_upload up;
  up.name = req.header("x-module-name");
  up.version = req.header("x-module-version");
  up.signature_b64 = req.header("x-module-signature");
  up.description = req.header("x-module-description");
  field_errors errs;
  if (up.name.empty())
    errs["X-Module-Name"].push_back("The X-Module-Name header is required.");
  else if (!valid_module_name(up.name))
    errs["X-Module-Name"].push_back("The module name must match ^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$.");
  if (up.version.empty())
    errs["X-Module-Version"].push_back("The X-Module-Version header is required.");
  else if (!valid_semver(up.version))
    errs["X-Module-Version"].push_back("The version must be SemVer MAJOR.MINOR.PATCH[-pre].");
  if (up.description.size() > 1000)
    errs["X-Module-Description"].push_back("The description is limited to 1000 characters.");
  auto ctype = lower(req.header("content-type"));
  if (!ctype.empty() && ctype.rfind("application/octet-stream", 0) != 0)
    errs["Content-Type"].push_back("The body must be application/octet-stream (the raw "
                                   "shared library).");
  if (req.body.empty())
    errs["body"].push_back("The body must hold the module's shared library bytes.");
  if (req.query.count("environment")) {
    up.environment = read_environment(c, false);
    if (up.environment.empty())
      return; // answered
  }
  if (!errs.empty()) {
    reply_problem(c, 400, "The module upload is invalid.", errs);
    return;
  }
  up.bytes = req.body;
  up.username = c->who.username;
  up.tenant_id = c->who.tenant_id;
  up.trace_id = req.trace_id;
  up.source_ip = c->client_ip;
  auto location = "/api/v1/modules/" + up.name + "/versions";
  self->request(self->state.env.catalog, caf::infinite, module_atom::value, put_atom::value, up)
    .then(
      [=](module_put_result& r) {
        if (r.created)
          c->extra_headers.emplace_back("Location", location);
        reply_json(c, r.created ? 201 : 200, module_record_json(r.record));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void get_modules(bridge_ptr self, const call_ptr& c) {
  self->request(self->state.env.store, timeout_of(self), module_atom::value, list_atom::value,
                std::string{})
    .then(
      [=](std::vector<module_record>& rows) {
        // Rows come ordered by name, then upload time.
        json::array out;
        size_t i = 0;
        while (i < rows.size()) {
          auto j = i;
          json::array versions;
          std::string latest;
          for (; j < rows.size() && rows[j].name == rows[i].name; ++j) {
            if (!visible(c, rows[j]))
              continue;
            versions.emplace_back(rows[j].version);
            if (latest.empty() || compare_semver(rows[j].version, latest) > 0)
              latest = rows[j].version;
          }
          if (!versions.empty()) {
            json::object o;
            o["name"] = rows[i].name;
            o["latestVersion"] = latest;
            o["versions"] = std::move(versions);
            out.push_back(std::move(o));
          }
          i = j;
        }
        reply_json(c, 200, json::serialize(out));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void get_module_versions(bridge_ptr self, const call_ptr& c) {
  auto name = c->params[0];
  self->request(self->state.env.store, timeout_of(self), module_atom::value, list_atom::value,
                name)
    .then(
      [=](std::vector<module_record>& rows) {
        std::vector<std::string> items;
        for (auto& r : rows)
          if (visible(c, r))
            items.push_back(module_record_json(r));
        if (items.empty()) {
          reply_problem(c, 404, "No module named " + name + ".");
          return;
        }
        reply_json(c, 200, join_json(items));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

/// The worker of `env` on this node, or a 503 answer.
const module_host_actor* worker_of(bridge_ptr self, const call_ptr& c, const std::string& env) {
  auto& hosts = self->state.env.hosts;
  auto i = hosts.find(env);
  if (i == hosts.end()) {
    reply_problem(c, 503, "This node has no worker for " + env
                            + " (node.roles needs \"worker\" and node.environments " + env + ").");
    return nullptr;
  }
  return &i->second;
}

/// Where an invocation for `env` goes: this node's worker when it has
/// one, else the environment's workers on other nodes in turn.
std::optional<module_host_actor> invoke_target(bridge_ptr self, const call_ptr& c,
                                               const std::string& env) {
  auto& st = self->state;
  if (auto i = st.env.hosts.find(env); i != st.env.hosts.end())
    return i->second;
  if (st.env.workers) {
    auto list = st.env.workers->of(env);
    if (!list.empty())
      return list[st.next_worker++ % list.size()].second;
  }
  reply_problem(c, 503, "No node of the cluster serves " + env
                          + " (a node needs role \"worker\" and " + env
                          + " in node.environments).");
  return std::nullopt;
}

void post_module_invoke(bridge_ptr self, const call_ptr& c) {
  auto env = read_environment(c, true);
  if (env.empty())
    return;
  auto host = invoke_target(self, c, env);
  if (!host)
    return;
  sdk::request req;
  req.payload = c->req().body;
  req.content_type = c->req().header("content-type");
  req.trace_id = c->req().trace_id;
  req.caller = "http:" + c->who.username;
  req.tenant = c->who.tenant_id;
  self->request(*host, caf::infinite, sdk::invoke_atom::value, c->params[0], std::move(req))
    .then(
      [=](invoke_result& r) {
        c->extra_headers.emplace_back("X-Module-Version", r.version);
        if (!r.reply.ok()) {
          reply_problem(c, 502, "Module " + r.module + " " + r.version + " answered with an error: "
                                  + r.reply.error);
          return;
        }
        http_response res;
        res.status = 200;
        res.content_type = r.reply.content_type.empty() ? "application/octet-stream"
                                                         : r.reply.content_type;
        res.body = std::move(r.reply.payload);
        reply(c, std::move(res));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

// -- worker commands (operator API) -------------------------------------------------------

/// Reads {owner?, epoch?, weight?} from an optional JSON body.
bool read_origin(const call_ptr& c, command_origin& o, json::object* body_out) {
  o.owner = "operator";
  o.epoch = 0;
  o.actor_user = c->who.username;
  o.trace_id = c->req().trace_id;
  if (c->req().body.empty())
    return true;
  auto body = parse_object(c);
  if (!body)
    return false;
  field_errors errs;
  if (auto v = body->if_contains("owner"); v && !v->is_null()) {
    if (!v->is_string() || v->as_string().empty() || v->as_string().size() > 200)
      errs["owner"].push_back("The owner must be a non-empty string of at most 200 characters.");
    else
      o.owner = std::string(v->as_string());
  }
  if (auto v = body->if_contains("epoch"); v && !v->is_null()) {
    if (!v->is_int64() || v->as_int64() < 0)
      errs["epoch"].push_back("The epoch must be a non-negative integer.");
    else
      o.epoch = v->as_int64();
  }
  if (!errs.empty()) {
    reply_problem(c, 400, "The worker command is invalid.", errs);
    return false;
  }
  if (body_out)
    *body_out = std::move(*body);
  return true;
}

/// Worker command errors: a stale epoch is a conflict for the caller.
void reply_command_error(const call_ptr& c, const caf::error& err) {
  if (errc_of(err) == errc::fenced) {
    reply_problem(c, 409, error_detail(err));
    return;
  }
  reply_error(c, err);
}

json::object version_view_json(const version_view& v) {
  json::object o;
  o["version"] = v.version;
  o["weight"] = v.weight;
  o["state"] = v.state;
  o["inFlight"] = v.in_flight;
  o["invocations"] = v.invocations;
  o["errors"] = v.errors;
  o["p50Ms"] = v.p50_ms;
  o["p95Ms"] = v.p95_ms;
  o["p99Ms"] = v.p99_ms;
  o["digest"] = v.digest;
  o["signed"] = v.is_signed;
  return o;
}

std::string module_view_json(const module_view& m) {
  json::array versions;
  for (auto& v : m.versions)
    versions.push_back(version_view_json(v));
  json::object o;
  o["name"] = m.name;
  o["versions"] = std::move(versions);
  return json::serialize(o);
}

void post_worker_stage(bridge_ptr self, const call_ptr& c) {
  auto env = path_environment(c);
  if (env.empty())
    return;
  stage_command cmd;
  cmd.module = c->params[1];
  cmd.version = c->params[2];
  json::object body;
  if (!read_origin(c, cmd.origin, &body))
    return;
  if (auto v = body.if_contains("weight"); v && !v->is_null()) {
    if (!v->is_int64() || v->as_int64() < 0 || v->as_int64() > 1000000) {
      field_errors errs;
      errs["weight"].push_back("The weight must be an integer from 0 to 1000000.");
      reply_problem(c, 400, "The stage command is invalid.", errs);
      return;
    }
    cmd.weight = static_cast<int32_t>(v->as_int64());
  }
  auto host = worker_of(self, c, env);
  if (host == nullptr)
    return;
  self->request(*host, caf::infinite, stage_atom::value, cmd)
    .then([=](version_view& v) { reply_json(c, 200, json::serialize(version_view_json(v))); },
          [=](caf::error& err) { reply_command_error(c, err); });
}

void put_worker_weights(bridge_ptr self, const call_ptr& c) {
  auto env = path_environment(c);
  if (env.empty())
    return;
  weights_command cmd;
  cmd.module = c->params[1];
  json::object body;
  if (c->req().body.empty()) {
    reply_problem(c, 400, "The body must be {\"weights\": {\"<version>\": <weight>, ...}}.");
    return;
  }
  if (!read_origin(c, cmd.origin, &body))
    return;
  field_errors errs;
  auto w = body.if_contains("weights");
  if (!w || !w->is_object() || w->as_object().empty()) {
    errs["weights"].push_back("The weights must be a non-empty object of version: weight.");
  } else {
    for (auto& kv : w->as_object()) {
      if (!kv.value().is_int64() || kv.value().as_int64() < 0
          || kv.value().as_int64() > 1000000)
        errs["weights"].push_back("The weight of " + std::string(kv.key())
                                  + " must be an integer from 0 to 1000000.");
      else
        cmd.weights[std::string(kv.key())] = static_cast<uint32_t>(kv.value().as_int64());
    }
  }
  if (!errs.empty()) {
    reply_problem(c, 400, "The weights are invalid.", errs);
    return;
  }
  auto host = worker_of(self, c, env);
  if (host == nullptr)
    return;
  self->request(*host, caf::infinite, weights_atom::value, cmd)
    .then([=](module_view& m) { reply_json(c, 200, module_view_json(m)); },
          [=](caf::error& err) { reply_command_error(c, err); });
}

void post_worker_retire(bridge_ptr self, const call_ptr& c) {
  auto env = path_environment(c);
  if (env.empty())
    return;
  retire_command cmd;
  cmd.module = c->params[1];
  cmd.version = c->params[2];
  if (!read_origin(c, cmd.origin, nullptr))
    return;
  auto host = worker_of(self, c, env);
  if (host == nullptr)
    return;
  auto module = cmd.module;
  auto version = cmd.version;
  self->request(*host, caf::infinite, retire_atom::value, cmd)
    .then(
      [=](ok_atom) {
        json::object o;
        o["name"] = module;
        o["version"] = version;
        o["environment"] = env;
        o["state"] = "Retired";
        reply_json(c, 200, json::serialize(o));
      },
      [=](caf::error& err) { reply_command_error(c, err); });
}

// -- clusters -------------------------------------------------------------------------------

void get_clusters(bridge_ptr self, const call_ptr& c) {
  self->request(self->state.env.fleet, timeout_of(self), list_atom::value)
    .then([=](std::string& body) { reply_json(c, 200, std::move(body)); },
          [=](caf::error& err) { reply_error(c, err); });
}

/// GET /api/v1/node/entities (an extension for operators and the cluster
/// tests): the entities active on this node, so "one owner per entity" can
/// be checked by asking every node.
void get_node_entities(bridge_ptr self, const call_ptr& c) {
  auto out = std::make_shared<json::object>();
  (*out)["nodeId"] = self->state.env.cfg->node.id;
  auto to_array = [](const std::vector<std::string>& ids) {
    json::array a;
    for (auto& id : ids)
      a.emplace_back(id);
    return a;
  };
  auto fail = [=](caf::error& err) { reply_error(c, err); };
  auto& env = self->state.env;
  self->request(env.tenants, timeout_of(self), list_atom::value)
    .then(
      [=](std::vector<std::string>& tenants) {
        (*out)["tenants"] = to_array(tenants);
        self->request(self->state.env.deployments, timeout_of(self), list_atom::value)
          .then(
            [=](std::vector<std::string>& deployments) {
              (*out)["deployments"] = to_array(deployments);
              self->request(self->state.env.approvals, timeout_of(self), list_atom::value)
                .then(
                  [=](std::vector<std::string>& approvals) {
                    (*out)["approvals"] = to_array(approvals);
                    reply_json(c, 200, json::serialize(*out));
                  },
                  fail);
            },
            fail);
      },
      fail);
}

void get_cluster(bridge_ptr self, const call_ptr& c) {
  auto env = path_environment(c);
  if (env.empty())
    return;
  self->request(self->state.env.fleet, timeout_of(self), get_atom::value, env)
    .then([=](std::string& body) { reply_json(c, 200, std::move(body)); },
          [=](caf::error& err) { reply_error(c, err); });
}

/// "30s", "5m", "1h" (or a bare number of seconds) -> milliseconds; -1 when bad.
int64_t parse_interval(const std::string& text) {
  if (text.empty())
    return -1;
  size_t pos = 0;
  int64_t n = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    n = n * 10 + (text[pos] - '0');
    if (n > 100000000)
      return -1;
    ++pos;
  }
  if (pos == 0)
    return -1;
  auto unit = text.substr(pos);
  int64_t scale = 0;
  if (unit.empty() || unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60000;
  else if (unit == "h")
    scale = 3600000;
  else if (unit == "d")
    scale = 86400000;
  if (scale == 0 || n == 0)
    return -1;
  return n * scale;
}

void get_cluster_metrics(bridge_ptr self, const call_ptr& c) {
  auto env = path_environment(c);
  if (env.empty())
    return;
  auto& q = c->req().query;
  field_errors errs;
  auto to = now_millis();
  auto from = to - 3600000;
  int64_t interval = 60000;
  if (auto i = q.find("interval"); i != q.end() && !i->second.empty()) {
    interval = parse_interval(i->second);
    if (interval < 0)
      errs["interval"].push_back("The interval must look like 30s, 5m or 1h.");
  }
  auto read_time = [&](const char* key, millis& out) {
    auto i = q.find(key);
    if (i == q.end() || i->second.empty())
      return;
    bool ok = false;
    out = parse_rfc3339(i->second, &ok);
    if (!ok)
      errs[key].push_back(std::string{key} + " must be an RFC 3339 time.");
  };
  read_time("to", to);
  if (q.count("from") == 0 || q.at("from").empty())
    from = to - 3600000;
  read_time("from", from);
  if (errs.empty() && from > to)
    errs["from"].push_back("from must not be after to.");
  if (!errs.empty()) {
    reply_problem(c, 400, "Invalid metrics query.", errs);
    return;
  }
  self->request(self->state.env.fleet, timeout_of(self), metrics_atom::value, env, from, to,
                interval)
    .then([=](std::string& body) { reply_json(c, 200, std::move(body)); },
          [=](caf::error& err) { reply_error(c, err); });
}

// -- deployments ----------------------------------------------------------------------------

/// A tenant user sees only its tenant's entities (404 for others').
bool tenant_may_see(const call_ptr& c, const std::string& tenant_id) {
  return c->who.tenant_id.empty() || c->who.tenant_id == tenant_id;
}

/// A deterministic execution id for an Idempotency-Key (per user): a
/// retried POST maps to the same deployment.
std::string idempotent_id(const std::string& user_id, const std::string& key) {
  auto h = crypto::hex_encode(crypto::sha256("hotswap-idempotency:" + user_id + ":" + key));
  // Shaped like a UUID (version nibble 5-like) so ids look uniform.
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-5" + h.substr(13, 3) + "-a" + h.substr(17, 3)
         + "-" + h.substr(20, 12);
}

std::string estimated_duration(const deploy::deployment& d) {
  uint64_t seconds = 5;
  for (auto& s : d.plan)
    seconds += s.hold_seconds;
  if (d.plan.empty() && d.strategy == deploy::strategy_kind::canary) {
    auto steps = d.canary.steps.size();
    seconds += (steps > 0 ? steps - 1 : 0) * d.canary.step_seconds;
  }
  return deploy::iso_duration(static_cast<millis>(seconds) * 1000);
}

void post_deployment(bridge_ptr self, const call_ptr& c) {
  deploy::field_errors errs;
  auto req = deploy::parse_request(c->req().body, errs);
  auto& cfg = *self->state.env.cfg;
  deploy::canary_settings canary;
  {
    // Canary bounds are checked with every other rule (all violations at
    // once), against the environment's defaults when it is valid.
    deploy::canary_settings defaults;
    auto e = cfg.environments.find(req.environment);
    if (e != cfg.environments.end()) {
      defaults.steps = e->second.canary_steps;
      defaults.step_seconds = e->second.step_seconds;
      defaults.max_error_rate_increase_percent = e->second.max_error_rate_increase_percent;
      defaults.max_latency_increase_percent = e->second.max_latency_increase_percent;
      defaults.min_samples = e->second.min_samples;
      defaults.inconclusive = e->second.inconclusive;
    }
    canary = deploy::effective_canary(defaults, req, errs);
  }
  if (!errs.empty()) {
    reply_problem(c, 400, "The deployment request is invalid.", errs);
    return;
  }
  auto& env = cfg.environments.at(req.environment);
  deploy::deployment d;
  d.module_name = req.module_name;
  d.version = req.version;
  d.environment = req.environment;
  if (req.has_strategy) {
    d.strategy = req.strategy;
  } else if (!deploy::parse_strategy(env.strategy, d.strategy)) {
    d.strategy = deploy::strategy_kind::direct;
  }
  d.status = "Pending";
  d.start = now_millis();
  d.requester_email = req.requester_email;
  d.requested_by = c->who.username;
  d.requested_by_id = c->who.user_id;
  d.tenant_id = c->who.tenant_id;
  d.description = req.description;
  d.metadata = req.metadata;
  d.trace_id = c->req().trace_id;
  d.idempotency_key = c->req().header("idempotency-key");
  d.needs_approval = env.approval == "always" || (env.approval == "on_request" && req.require_approval);
  d.canary = canary;
  d.stages = deploy::initial_stages(d.environment, d.needs_approval, d.strategy);
  std::string id;
  if (!d.idempotency_key.empty()) {
    if (d.idempotency_key.size() > 200) {
      field_errors e;
      e["Idempotency-Key"].push_back("The Idempotency-Key header is limited to 200 characters.");
      reply_problem(c, 400, "The Idempotency-Key is invalid.", e);
      return;
    }
    id = idempotent_id(c->who.user_id, d.idempotency_key);
  } else {
    id = crypto::uuid4();
  }
  d.execution_id = id;
  d.quota_reserved = !c->who.tenant_id.empty();
  auto record = deploy::to_json(d);
  auto ctx = c->ctx();
  auto module = d.module_name;
  auto version = d.version;
  auto tenant_id = c->who.tenant_id;
  // Gives the tenant's quota reservation back when the deployment was not created.
  auto release_quota = [=] {
    if (!tenant_id.empty())
      self->request(self->state.env.tenants, timeout_of(self), release_atom::value, tenant_id, id,
                    ctx)
        .then([](tenant&) {}, [](caf::error&) {});
  };
  // Then creates the deployment (durable before the 202).
  auto create = [=] {
    self->request(self->state.env.deployments, timeout_of(self), create_atom::value, id, record,
                  ctx)
      .then(
            [=](std::string& view) {
              boost::system::error_code ec;
              auto v = json::parse(view, ec);
              json::object o;
              o["executionId"] = id;
              // The contract answers "Running" for an accepted deployment; one
              // waiting for its approval says so. (A deployment queued behind
              // deployments.max_running_per_node shows Pending in GET.)
              std::string status = "Running";
              if (!ec && v.is_object() && v.as_object().contains("status")
                  && v.as_object().at("status").is_string()) {
                std::string s{v.as_object().at("status").as_string()};
                if (s != "Pending")
                  status = s;
              }
              deploy::deployment dd;
              deploy::from_json(record, dd);
              if (status == "Running" && dd.needs_approval)
                status = "PendingApproval";
              o["status"] = status;
              o["startTime"] = (!ec && v.is_object() && v.as_object().contains("startTime"))
                                 ? v.as_object().at("startTime")
                                 : json::value(rfc3339(now_millis()));
              o["estimatedDuration"] = estimated_duration(dd);
              o["traceId"] = c->req().trace_id;
              json::object links;
              links["self"] = "/api/v1/deployments/" + id;
              o["links"] = std::move(links);
              c->extra_headers.emplace_back("Location", "/api/v1/deployments/" + id);
              reply_json(c, 202, json::serialize(o));
            },
            [=](caf::error& err) {
              release_quota();
              reply_error(c, err);
            });
  };
  // The module version must exist (and be visible to a tenant's user), and
  // a tenant's deployment needs its quota reserved (idempotent per id).
  self->request(self->state.env.store, timeout_of(self), module_atom::value, get_atom::value,
                module, version)
    .then(
      [=](module_record& rec) {
        if (!visible(c, rec)) {
          reply_problem(c, 404, "Module " + module + " version " + version + " was not found.");
          return;
        }
        if (tenant_id.empty()) {
          create();
          return;
        }
        self->request(self->state.env.tenants, timeout_of(self), reserve_atom::value, tenant_id, id,
                      ctx)
          .then([=](tenant&) { create(); },
                [=](caf::error& err) {
                  if (err == errc::conflict) {
                    reply_problem(c, 409, error_detail(err));
                    return;
                  }
                  reply_error(c, err);
                });
      },
      [=](caf::error& err) {
        if (err == errc::not_found)
          reply_problem(c, 404, "Module " + module + " version " + version + " was not found.");
        else
          reply_error(c, err);
      });
}

/// Reads one deployment's record from the store (terminal or not: every
/// transition is there), checking the caller's tenant.
void with_deployment(bridge_ptr self, const call_ptr& c, const std::string& id,
                     std::function<void(deploy::deployment&)> fn) {
  self->request(self->state.env.store, timeout_of(self), get_atom::value,
                std::string{"deployment"}, id)
    .then(
      [=](snapshot_record& r) {
        deploy::deployment d;
        if (!deploy::from_json(r.body, d) || !tenant_may_see(c, d.tenant_id)) {
          reply_problem(c, 404, "Deployment " + id + " was not found.");
          return;
        }
        fn(d);
      },
      [=](caf::error& err) {
        if (err == errc::not_found)
          reply_problem(c, 404, "Deployment " + id + " was not found.");
        else
          reply_error(c, err);
      });
}

void get_deployment(bridge_ptr self, const call_ptr& c) {
  with_deployment(self, c, c->params[0],
                  [=](deploy::deployment& d) { reply_json(c, 200, deploy::to_view_json(d)); });
}

void get_deployments(bridge_ptr self, const call_ptr& c) {
  auto& q = c->req().query;
  field_errors errs;
  snapshot_query sq;
  sq.kind = "deployment";
  sq.limit = 10000;
  sq.tenant_id = c->who.tenant_id;
  static const std::vector<std::string> statuses{"Pending",   "PendingApproval", "Running",
                                                 "Succeeded", "Failed",          "RollingBack",
                                                 "RolledBack", "Cancelled"};
  if (auto i = q.find("status"); i != q.end() && !i->second.empty()) {
    for (auto& s : statuses)
      if (lower(s) == lower(i->second))
        sq.status = s;
    if (sq.status.empty())
      errs["status"].push_back("Unknown status " + i->second + ".");
  }
  std::string env;
  if (auto i = q.find("environment"); i != q.end() && !i->second.empty()) {
    env = canonical_environment(i->second);
    if (env.empty())
      errs["environment"].push_back("The environment must be Development, QA, Staging, "
                                    "Production or 0-3.");
  }
  std::string module;
  if (auto i = q.find("module"); i != q.end())
    module = i->second;
  int64_t limit = 50;
  int64_t offset = 0;
  auto read_num = [&](const char* key, int64_t lo, int64_t hi, int64_t& out) {
    auto i = q.find(key);
    if (i == q.end() || i->second.empty())
      return;
    try {
      size_t pos = 0;
      auto v = std::stoll(i->second, &pos);
      if (pos != i->second.size() || v < lo || v > hi)
        throw std::out_of_range(key);
      out = v;
    } catch (const std::exception&) {
      errs[key].push_back(std::string{key} + " must be an integer from " + std::to_string(lo)
                          + " to " + std::to_string(hi) + ".");
    }
  };
  read_num("limit", 1, 500, limit);
  read_num("cursor", 0, 100000000, offset);
  if (!errs.empty()) {
    reply_problem(c, 400, "Invalid deployment query.", errs);
    return;
  }
  self->request(self->state.env.store, timeout_of(self), list_atom::value, sq)
    .then(
      [=](std::vector<snapshot_record>& rows) {
        std::vector<std::string> items;
        int64_t seen = 0;
        bool more = false;
        for (auto& r : rows) {
          deploy::deployment d;
          if (!deploy::from_json(r.body, d))
            continue;
          if ((!env.empty() && d.environment != env) || (!module.empty() && d.module_name != module))
            continue;
          if (seen++ < offset)
            continue;
          if (static_cast<int64_t>(items.size()) == limit) {
            more = true;
            break;
          }
          items.push_back(deploy::to_list_json(d));
        }
        if (more) {
          auto next = std::to_string(offset + limit);
          c->extra_headers.emplace_back("X-Next-Cursor", next);
          auto link = std::string{"/api/v1/deployments?limit="} + std::to_string(limit)
                      + "&cursor=" + next;
          if (!sq.status.empty())
            link += "&status=" + sq.status;
          if (!env.empty())
            link += "&environment=" + env;
          if (!module.empty())
            link += "&module=" + module;
          c->extra_headers.emplace_back("Link", "<" + link + ">; rel=\"next\"");
        }
        reply_json(c, 200, join_json(items));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void post_deployment_rollback(bridge_ptr self, const call_ptr& c) {
  auto id = c->params[0];
  with_deployment(self, c, id, [=](deploy::deployment&) {
    self->request(self->state.env.deployments, timeout_of(self), rollback_atom::value, id,
                  c->ctx())
      .then([=](std::string& body) { reply_json(c, 202, std::move(body)); },
            [=](caf::error& err) { reply_error(c, err); });
  });
}

void post_deployment_cancel(bridge_ptr self, const call_ptr& c) {
  auto id = c->params[0];
  with_deployment(self, c, id, [=](deploy::deployment&) {
    self->request(self->state.env.deployments, timeout_of(self), cancel_atom::value, id, c->ctx())
      .then([=](std::string& body) { reply_json(c, 202, std::move(body)); },
            [=](caf::error& err) { reply_error(c, err); });
  });
}

// -- approvals ------------------------------------------------------------------------------

void get_pending_approvals(bridge_ptr self, const call_ptr& c) {
  snapshot_query sq;
  sq.kind = "approval";
  sq.status = "Pending";
  sq.limit = 10000;
  sq.tenant_id = c->who.tenant_id;
  self->request(self->state.env.store, timeout_of(self), list_atom::value, sq)
    .then(
      [=](std::vector<snapshot_record>& rows) {
        std::vector<std::string> items;
        auto now = now_millis();
        for (auto& r : rows) {
          approval a;
          if (from_json(r.body, a) && a.status == "Pending")
            items.push_back(to_pending_json(a, now));
        }
        reply_json(c, 200, join_json(items));
      },
      [=](caf::error& err) { reply_error(c, err); });
}

void get_deployment_approval(bridge_ptr self, const call_ptr& c) {
  auto id = c->params[0];
  self->request(self->state.env.store, timeout_of(self), get_atom::value,
                std::string{"approval"}, id)
    .then(
      [=](snapshot_record& r) {
        approval a;
        if (!from_json(r.body, a) || !tenant_may_see(c, a.tenant_id)) {
          reply_problem(c, 404, "No approval for deployment " + id + ".");
          return;
        }
        reply_json(c, 200, to_view_json(a));
      },
      [=](caf::error& err) {
        if (err == errc::not_found)
          reply_problem(c, 404, "No approval for deployment " + id + ".");
        else
          reply_error(c, err);
      });
}

void decide_approval(bridge_ptr self, const call_ptr& c, bool approve) {
  approval_decision d;
  d.approve = approve;
  d.user_id = c->who.user_id;
  d.username = c->who.username;
  if (!c->req().body.empty()) {
    auto o = parse_object(c);
    if (!o)
      return;
    field_errors errs;
    read_string(*o, "approverEmail", d.approver_email, errs);
    read_string(*o, "reason", d.reason, errs);
    if (d.reason.size() > 1000)
      errs["reason"].push_back("The reason is limited to 1000 characters.");
    if (!errs.empty()) {
      reply_problem(c, 400, "The approval decision is invalid.", errs);
      return;
    }
  }
  auto id = c->params[0];
  self->request(self->state.env.store, timeout_of(self), get_atom::value,
                std::string{"approval"}, id)
    .then(
      [=](snapshot_record& r) {
        approval a;
        if (!from_json(r.body, a) || !tenant_may_see(c, a.tenant_id)) {
          reply_problem(c, 404, "No approval for deployment " + id + ".");
          return;
        }
        self->request(self->state.env.approvals, timeout_of(self), decide_atom::value, id, d,
                      c->ctx())
          .then([=](approval& done) { reply_json(c, 200, to_view_json(done)); },
                [=](caf::error& err) { reply_error(c, err); });
      },
      [=](caf::error& err) {
        if (err == errc::not_found)
          reply_problem(c, 404, "No approval for deployment " + id + ".");
        else
          reply_error(c, err);
      });
}

void post_approve(bridge_ptr self, const call_ptr& c) {
  decide_approval(self, c, true);
}

void post_reject(bridge_ptr self, const call_ptr& c) {
  decide_approval(self, c, false);
}

// -- routing ------------------------------------------------------------------------------

std::vector<route> make_routes() {
  std::vector<route> rs;
  auto add = [&](const char* method, const std::string& path, handler fn, bool auth, int rank,
                 bool platform_only = false, std::string category = {}) {
    route r;
    r.method = method;
    r.segments = split_path(path);
    r.name = path;
    r.auth = auth;
    r.min_rank = rank;
    r.platform_only = platform_only;
    r.rate_category = std::move(category);
    r.fn = fn;
    rs.push_back(std::move(r));
  };
  auto ops = [&](const char* path, handler fn) {
    add("GET", path, fn, false, 0);
    rs.back().ops = true;
  };
  ops("/health", get_health);
  ops("/ready", get_ready);
  ops("/metrics", get_metrics);
  add("POST", "/api/v1/authentication/login", post_login, false, 0);
  add("GET", "/api/v1/authentication/me", get_me, true, 0);
  add("GET", "/api/v1/authentication/demo-credentials", get_demo_credentials, false, 0);
  add("POST", "/api/v1/users", post_user, true, 3, true);
  add("GET", "/api/v1/users", get_users, true, 3, true);
  add("GET", "/api/v1/users/{}", get_user, true, 3, true);
  add("PUT", "/api/v1/users/{}", put_user, true, 3, true);
  add("DELETE", "/api/v1/users/{}", delete_user, true, 3, true);
  for (std::string p : {"/api/tenants", "/api/v1/tenants"}) {
    add("POST", p, post_tenant, true, 3, true);
    add("GET", p, get_tenants, true, 3, true);
    add("GET", p + "/{}", get_tenant, true, 3, true);
    add("PUT", p + "/{}", put_tenant, true, 3, true);
    add("DELETE", p + "/{}", delete_tenant, true, 3, true);
    add("POST", p + "/{}/suspend", post_tenant_suspend, true, 3, true);
    add("POST", p + "/{}/activate", post_tenant_activate, true, 3, true);
    add("PUT", p + "/{}/subscription", put_tenant_subscription, true, 3, true);
  }
  add("POST", "/api/v1/modules", post_module, true, 2);
  add("GET", "/api/v1/modules", get_modules, true, 1);
  add("GET", "/api/v1/modules/{}/versions", get_module_versions, true, 1);
  add("POST", "/api/v1/modules/{}/invoke", post_module_invoke, true, 1);
  add("GET", "/api/v1/clusters", get_clusters, true, 1, false, "clusters");
  add("GET", "/api/v1/node/entities", get_node_entities, true, 3, true);
  add("GET", "/api/v1/clusters/{}", get_cluster, true, 1, false, "clusters");
  add("GET", "/api/v1/clusters/{}/metrics", get_cluster_metrics, true, 1, false, "clusters");
  add("POST", "/api/v1/clusters/{}/modules/{}/versions/{}/stage", post_worker_stage, true, 3,
      true);
  add("PUT", "/api/v1/clusters/{}/modules/{}/weights", put_worker_weights, true, 3, true);
  add("POST", "/api/v1/clusters/{}/modules/{}/versions/{}/retire", post_worker_retire, true, 3,
      true);
  add("POST", "/api/v1/deployments", post_deployment, true, 2, false, "deployments");
  add("GET", "/api/v1/deployments", get_deployments, true, 1);
  add("GET", "/api/v1/deployments/{}", get_deployment, true, 1);
  add("POST", "/api/v1/deployments/{}/rollback", post_deployment_rollback, true, 2, false,
      "deployments");
  add("POST", "/api/v1/deployments/{}/cancel", post_deployment_cancel, true, 2, false,
      "deployments");
  add("GET", "/api/v1/approvals/pending", get_pending_approvals, true, 1, false, "approvals");
  add("GET", "/api/v1/approvals/deployments/{}", get_deployment_approval, true, 1, false,
      "approvals");
  add("POST", "/api/v1/approvals/deployments/{}/approve", post_approve, true, 3, false,
      "approvals");
  add("POST", "/api/v1/approvals/deployments/{}/reject", post_reject, true, 3, false,
      "approvals");
  add("GET", "/api/v1/auditlogs/category/{}", get_audit_category, true, 3, true);
  add("GET", "/api/v1/auditlogs/trace/{}", get_audit_trace, true, 3, true);
  add("GET", "/api/v1/auditlogs/deployments/{}", get_audit_deployment, true, 3, true);
  add("GET", "/api/v1/auditlogs/approvals/{}", get_audit_approval, true, 3, true);
  add("GET", "/api/v1/auditlogs/authentication/{}", get_audit_authentication, true, 3, true);
  add_event_routes(rs);
  add_message_routes([&](const char* m, const std::string& p, handler fn, bool auth, int rank,
                         bool platform_only, std::string category) {
    add(m, p, fn, auth, rank, platform_only, std::move(category));
  });
  return rs;
}

bool match(const route& r, const std::vector<std::string>& segs, std::vector<std::string>& params) {
  if (r.segments.size() != segs.size())
    return false;
  params.clear();
  for (size_t i = 0; i < segs.size(); ++i) {
    if (r.segments[i] == "{}")
      params.push_back(segs[i]);
    else if (r.segments[i] != segs[i])
      return false;
  }
  return true;
}

/// The client address: the TCP peer, or, when the peer is a trusted proxy,
/// the right-most X-Forwarded-For entry that is not a trusted proxy.
std::string client_ip(const http_request& req, const std::vector<std::string>& trusted) {
  auto is_trusted = [&](const std::string& ip) {
    return std::find(trusted.begin(), trusted.end(), ip) != trusted.end();
  };
  if (!is_trusted(req.peer_address))
    return req.peer_address;
  auto xff = req.header("x-forwarded-for");
  std::vector<std::string> hops;
  size_t i = 0;
  while (i <= xff.size()) {
    auto j = xff.find(',', i);
    if (j == std::string::npos)
      j = xff.size();
    auto hop = xff.substr(i, j - i);
    hop.erase(0, hop.find_first_not_of(' '));
    hop.erase(hop.find_last_not_of(' ') + 1);
    if (!hop.empty())
      hops.push_back(hop);
    i = j + 1;
  }
  for (auto it = hops.rbegin(); it != hops.rend(); ++it)
    if (!is_trusted(*it))
      return *it;
  return req.peer_address;
}

uint32_t category_limit(const config::rate_limits_section& rl, const std::string& cat) {
  if (cat == "deployments")
    return rl.deployments;
  if (cat == "clusters")
    return rl.clusters;
  if (cat == "approvals")
    return rl.approvals;
  return rl.global;
}

void rate_headers(const call_ptr& c, const rate_decision& d) {
  c->extra_headers.emplace_back("X-RateLimit-Limit", std::to_string(d.limit));
  c->extra_headers.emplace_back("X-RateLimit-Remaining", std::to_string(d.remaining));
  c->extra_headers.emplace_back("X-RateLimit-Reset", std::to_string(d.reset_seconds));
}

/// Verifies a bearer token, remembering tokens that verified until they expire.
caf::expected<jwt::claims> verify_token(bridge_ptr self, const std::string& token) {
  auto& st = self->state;
  auto now = now_millis() / 1000;
  if (auto i = st.token_cache.find(token); i != st.token_cache.end()) {
    if (i->second.exp > now && i->second.nbf <= now + 30)
      return i->second;
    st.token_cache.erase(i);
  }
  auto& cfg = *st.env.cfg;
  auto claims = jwt::verify(token, st.env.keys, cfg.auth.issuer, cfg.auth.audience, now);
  if (claims) {
    if (st.token_cache.size() >= cache_limit)
      st.token_cache.clear();
    st.token_cache.emplace(token, *claims);
  }
  return claims;
}

constexpr auto user_check_interval = std::chrono::seconds(5);

void remember_user(bridge_ptr self, const std::string& id, bridge_state::user_state us) {
  auto& users = self->state.users;
  if (users.size() >= cache_limit)
    users.clear();
  users[id] = std::move(us);
}

/// Takes roles and tenant from the user's current record (not the token);
/// returns a 401 reason when the user is gone or inactive.
std::string apply_user_state(const call_ptr& c, const bridge_state::user_state& us) {
  if (!us.exists || !us.active)
    return "The user of this token no longer exists or is inactive.";
  c->who.roles = us.roles;
  c->who.rank = role_rank(us.roles);
  c->who.tenant_id = us.tenant_id;
  return {};
}

/// Rate limits, authentication outcome, RBAC, then the route's handler.
void dispatch(bridge_ptr self, const call_ptr& c, const route* found,
              const std::string& auth_failure) {
  // After the rate limits: at once on a single node, when the cluster-wide
  // limiter answered in a cluster (`found` points into the bridge's routes,
  // which live as long as the bridge).
  auto proceed = [self, c, found, auth_failure] {
    if (!auth_failure.empty()) {
      reply_problem(c, 401, auth_failure);
      return;
    }
    if (found->auth && c->who.rank < found->min_rank) {
      reply_problem(c, 403, "Your role does not allow this operation.");
      return;
    }
    if (found->platform_only && !c->who.tenant_id.empty()) {
      reply_problem(c, 403, "Only platform users (without a tenant) may do this.");
      return;
    }
    found->fn(self, c);
    if (!c->ex->responded())
      self->state.in_flight.push_back(c);
  };
  auto& st = self->state;
  auto& rl = st.env.cfg->rate_limits;
  if (found->ops || !rl.enabled || !st.env.limiter) {
    proceed();
    return;
  }
  auto key = c->who.authenticated ? "user:" + c->who.user_id : "addr:" + c->client_ip;
  std::vector<std::pair<std::string, uint32_t>> buckets{{"global", rl.global}};
  if (!found->rate_category.empty())
    buckets.emplace_back(found->rate_category, category_limit(rl, found->rate_category));
  take_rate(self, c, std::move(key), std::move(buckets),
            [c, proceed](const rate_decision& d) {
              rate_headers(c, d);
              if (!d.allowed) {
                c->extra_headers.emplace_back("Retry-After", std::to_string(d.retry_after));
                reply_problem(c, 429, "Rate limit exceeded. Try again in "
                                        + std::to_string(d.retry_after) + " s.");
                return;
              }
              proceed();
            });
}

void handle(bridge_ptr self, http_exchange_ptr ex) {
  auto& st = self->state;
  auto c = std::make_shared<call>();
  c->ex = ex;
  c->deadline = ex->started() + st.request_timeout;
  auto& req = ex->request();
  c->client_ip = client_ip(req, st.env.cfg->rate_limits.trusted_proxies);
  auto segs = split_path(req.path);
  const route* found = nullptr;
  std::vector<std::string> allowed;
  for (auto& r : st.routes) {
    std::vector<std::string> params;
    if (!match(r, segs, params))
      continue;
    if (r.method == req.method || (r.method == "GET" && req.method == "HEAD")) {
      found = &r;
      c->params = std::move(params);
      break;
    }
    allowed.push_back(r.method);
  }
  if (!found) {
    if (!allowed.empty()) {
      std::string allow;
      for (auto& m : allowed)
        allow += (allow.empty() ? "" : ", ") + m;
      c->extra_headers.emplace_back("Allow", allow);
      reply_problem(c, 405, "The method " + req.method + " is not allowed on " + req.path + ".");
    } else {
      reply_problem(c, 404, "No resource at " + req.path + ".");
    }
    return;
  }
  ex->set_route(found->name);
  // Authenticate first: limits apply per user once we know who it is.
  std::string auth_failure;
  if (found->auth) {
    auto h = req.header("authorization");
    if (h.empty() && found->query_token) {
      auto q = req.query.find("access_token");
      if (q != req.query.end())
        h = "Bearer " + q->second;
    }
    if (h.size() > 7 && lower(h.substr(0, 7)) == "bearer ") {
      auto claims = verify_token(self, h.substr(7));
      if (claims) {
        c->who.authenticated = true;
        c->who.user_id = claims->sub;
        c->who.username = claims->unique_name;
        c->who.email = claims->email;
        c->who.tenant_id = claims->tenant_id;
        c->who.roles = claims->roles;
        c->who.rank = role_rank(claims->roles);
      } else {
        auth_failure = "The token is invalid: " + error_detail(claims.error()) + ".";
      }
    } else {
      auth_failure = "Authentication is required (Authorization: Bearer <token>).";
    }
  }
  if (!c->who.authenticated) {
    dispatch(self, c, found, auth_failure);
    return;
  }
  auto now = std::chrono::steady_clock::now();
  if (auto i = st.users.find(c->who.user_id);
      i != st.users.end() && now - i->second.fetched < user_check_interval) {
    dispatch(self, c, found, apply_user_state(c, i->second));
    return;
  }
  auto user_id = c->who.user_id;
  self->request(st.env.store, caf::infinite, user_atom::value, get_atom::value, user_id)
    .then(
      [=](user_record& u) {
        bridge_state::user_state us{true, u.active, u.roles, u.tenant_id,
                                    std::chrono::steady_clock::now()};
        remember_user(self, user_id, us);
        dispatch(self, c, found, apply_user_state(c, us));
      },
      [=](caf::error& err) {
        if (err != errc::not_found) {
          reply_error(c, err);
          return;
        }
        bridge_state::user_state gone;
        gone.fetched = std::chrono::steady_clock::now();
        remember_user(self, user_id, gone);
        dispatch(self, c, found, apply_user_state(c, gone));
      });
  st.in_flight.push_back(c);
}

/// Answers 504 to every call past its deadline; forgets answered calls.
void on_sweep(bridge_ptr self) {
  auto& q = self->state.in_flight;
  auto now = std::chrono::steady_clock::now();
  while (!q.empty()) {
    auto c = q.front().lock();
    if (c && !c->ex->responded()) {
      if (c->deadline > now)
        break;
      reply_problem(c, 504, "The request did not complete within "
                              + std::to_string(self->state.request_timeout.count()) + " ms.");
    }
    q.pop_front();
  }
}

constexpr auto sweep_interval = std::chrono::milliseconds(100);

bridge_actor::behavior_type bridge(bridge_ptr self, api_env env) {
  self->state.env = std::move(env);
  self->state.routes = make_routes();
  self->state.request_timeout
    = std::chrono::milliseconds(self->state.env.cfg->http.request_timeout_ms);
  self->delayed_send(self, sweep_interval, tick_atom::value);
  return {
    [=](http_exchange_ptr& ex) { handle(self, std::move(ex)); },
    [=](tick_atom) {
      on_sweep(self);
      self->delayed_send(self, sweep_interval, tick_atom::value);
    },
  };
}

} // namespace api_detail

using namespace api_detail;

bridge_actor spawn_bridge(caf::actor_system& sys, api_env env) {
  return sys.spawn(bridge, std::move(env));
}

} // namespace hotswap
