#include "hotswap/actors/identity.hpp"

#include <regex>

#include <boost/json.hpp>

#include "caf/actor_pool.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/actors/json_util.hpp"
#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/jwt.hpp"
#include "hotswap/runtime/log.hpp"

namespace hotswap {

namespace json = boost::json;

const std::vector<std::string>& role_names() {
  static const std::vector<std::string> names{"Viewer", "Deployer", "Admin"};
  return names;
}

std::string canonical_role(const std::string& name) {
  auto l = lower(name);
  for (auto& r : role_names())
    if (lower(r) == l)
      return r;
  return {};
}

int role_rank(const std::vector<std::string>& roles) {
  int rank = 0;
  const auto& names = role_names();
  for (auto& r : roles)
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == r)
        rank = std::max(rank, static_cast<int>(i) + 1);
  return rank;
}

field_errors validate(const user_input& in, bool creating, bool dev_mode) {
  static const std::regex name_re{"^[A-Za-z0-9._-]{3,64}$"};
  field_errors errs;
  if (!std::regex_match(in.username, name_re))
    errs["username"].push_back(
      "The user name must be 3 to 64 letters, digits, dots, underscores or hyphens.");
  if (!valid_email(in.email))
    errs["email"].push_back("A valid e-mail address is required.");
  if (in.full_name.size() > 200)
    errs["fullName"].push_back("The full name must be at most 200 characters.");
  if (in.roles.empty())
    errs["roles"].push_back("At least one role is required (Viewer, Deployer, Admin).");
  for (auto& r : in.roles)
    if (canonical_role(r).empty())
      errs["roles"].push_back("Unknown role '" + r + "' (Viewer, Deployer, Admin).");
  size_t min_len = dev_mode ? 8 : 12;
  if (creating && !in.has_password)
    errs["password"].push_back("A password is required.");
  if (in.has_password && (in.password.size() < min_len || in.password.size() > 256))
    errs["password"].push_back("The password must be at least " + std::to_string(min_len)
                               + " characters.");
  return errs;
}

std::string to_json(const user_record& u) {
  json::array roles;
  for (auto& r : u.roles)
    roles.emplace_back(r);
  json::object o;
  o["id"] = u.id;
  o["username"] = u.username;
  o["email"] = u.email;
  o["fullName"] = u.full_name;
  o["roles"] = std::move(roles);
  o["tenantId"] = u.tenant_id.empty() ? json::value(nullptr) : json::value(u.tenant_id);
  o["active"] = u.active;
  o["createdAt"] = rfc3339_or_null(u.created_at);
  o["updatedAt"] = rfc3339_or_null(u.updated_at);
  return json::serialize(o);
}

// -- KDF pool ------------------------------------------------------------------

namespace {

kdf_actor::behavior_type kdf_worker() {
  return {
    [](hash_atom, const std::string& password, uint32_t iterations) {
      return crypto::hash_password(password, iterations);
    },
    [](verify_atom, const std::string& password, const std::string& encoded) {
      return crypto::verify_password(password, encoded);
    },
  };
}

} // namespace

kdf_actor spawn_kdf_pool(caf::actor_system& sys, size_t workers) {
  auto factory = [&sys] { return caf::actor_cast<caf::actor>(sys.spawn<caf::detached>(kdf_worker)); };
  auto pool = caf::actor_pool::make(sys.dummy_execution_unit(), workers, factory,
                                    caf::actor_pool::round_robin());
  return caf::actor_cast<kdf_actor>(pool);
}

// -- identity --------------------------------------------------------------------

namespace {

struct identity_state {
  identity_config cfg;
  store_actor store;
  kdf_actor kdf;
  std::string dummy_hash; ///< verified for unknown users so timing does not tell
  static inline const char* name = "identity";
};

using identity_ptr = identity_actor::stateful_pointer<identity_state>;

const char* bad_credentials = "Invalid user name or password.";

audit_event auth_event(const std::string& action, const std::string& result,
                       const login_request& req, const std::string& user_id,
                       const std::string& tenant_id, const std::string& message) {
  audit_event ev;
  ev.at = now_millis();
  ev.category = "Authentication";
  ev.action = action;
  ev.result = result;
  ev.entity_kind = "user";
  ev.entity_id = user_id;
  ev.tenant_id = tenant_id;
  ev.actor_user = req.username;
  ev.source_ip = req.source_ip;
  ev.trace_id = req.trace_id;
  ev.message = message;
  ev.detail = "{}";
  return ev;
}

audit_event user_event(const std::string& action, const user_record& u, const request_ctx& ctx) {
  audit_event ev;
  ev.at = now_millis();
  ev.category = "User";
  ev.action = action;
  ev.result = "Success";
  ev.entity_kind = "user";
  ev.entity_id = u.id;
  ev.tenant_id = u.tenant_id;
  ev.actor_user = ctx.username;
  ev.source_ip = ctx.source_ip;
  ev.trace_id = ctx.trace_id;
  ev.message = action + " " + u.username;
  ev.detail = to_json(u);
  return ev;
}

const signing_key* current_key(const std::vector<signing_key>& keys) {
  const signing_key* best = nullptr;
  for (auto& k : keys)
    if (k.retired_at == 0 && (!best || k.created_at > best->created_at))
      best = &k;
  return best;
}

caf::error unauthorized() {
  return caf::make_error(errc::unauthorized, bad_credentials);
}

void finish_login(identity_ptr self, caf::typed_response_promise<login_result> rp,
                  login_request req, user_record u, bool ok) {
  auto& cfg = self->state.cfg;
  auto now = now_millis();
  if (!ok) {
    // The store counts atomically, so concurrent wrong passwords all count.
    auto lock_until = now + static_cast<millis>(cfg.lockout_minutes) * 60000;
    auto ev = auth_event("LoginFailed", "Failure", req, u.id, u.tenant_id, "wrong password");
    self->request(self->state.store, cfg.call_timeout, user_atom::value, failed_atom::value, u.id,
                  static_cast<int32_t>(cfg.lockout_attempts), lock_until, ev)
      .then(
        [=](millis locked_until) mutable {
          if (locked_until != lock_until) {
            rp.deliver(unauthorized());
            return;
          }
          // This failure locked the account: say so in the audit log.
          auto locked = auth_event("AccountLocked", "Failure", req, u.id, u.tenant_id,
                                   "account locked for " + std::to_string(cfg.lockout_minutes)
                                     + " minutes after " + std::to_string(cfg.lockout_attempts)
                                     + " wrong passwords");
          self->request(self->state.store, cfg.call_timeout, audit_atom::value, locked)
            .then([=](int64_t) mutable { rp.deliver(unauthorized()); },
                  [=](caf::error& err) mutable { rp.deliver(err); });
        },
        [=](caf::error& err) mutable { rp.deliver(err); });
    return;
  }
  auto key = current_key(cfg.keys);
  if (!key) {
    rp.deliver(caf::make_error(errc::internal, "no signing key"));
    return;
  }
  jwt::claims c;
  c.sub = u.id;
  c.unique_name = u.username;
  c.email = u.email;
  c.roles = u.roles;
  c.tenant_id = u.tenant_id;
  c.jti = crypto::uuid4();
  c.iss = cfg.issuer;
  c.aud = cfg.audience;
  c.iat = now / 1000;
  c.nbf = c.iat;
  c.exp = c.iat + static_cast<int64_t>(cfg.token_minutes) * 60;
  login_result res;
  res.token = jwt::sign(c, *key);
  res.expires_at = c.exp * 1000;
  u.failed_attempts = 0;
  u.locked_until = 0;
  res.user = u;
  auto ev = auth_event("LoginSucceeded", "Success", req, u.id, u.tenant_id, "login");
  self->request(self->state.store, cfg.call_timeout, user_atom::value, login_atom::value, u.id,
                int32_t{0}, millis{0}, ev)
    .then([=](ok_atom) mutable { rp.deliver(res); },
          [=](caf::error& err) mutable { rp.deliver(err); });
}

/// Checks that `tenant_id` names a tenant that is not deleted, then runs `next`.
template <class F>
void with_valid_tenant(identity_ptr self, const std::string& tenant_id,
                       caf::typed_response_promise<user_record> rp, F next) {
  if (tenant_id.empty()) {
    next();
    return;
  }
  self->request(self->state.store, self->state.cfg.call_timeout, get_atom::value,
                std::string{"tenant"}, tenant_id)
    .then(
      [=](const snapshot_record& snap) mutable {
        if (snap.status == "Deleted")
          rp.deliver(caf::make_error(errc::invalid_argument, "tenantId: the tenant is deleted"));
        else
          next();
      },
      [=](caf::error& err) mutable {
        if (err == errc::not_found)
          rp.deliver(caf::make_error(errc::invalid_argument,
                                     "tenantId: no tenant " + tenant_id));
        else
          rp.deliver(err);
      });
}

/// A duplicate user name gets a message that names it.
caf::error user_write_error(const caf::error& err, const user_record& u) {
  if (err == errc::conflict)
    return caf::make_error(errc::conflict, "The user name '" + u.username + "' is taken.");
  return err;
}

/// The first validation error as "field: message" (errc::invalid_argument),
/// or none.
caf::error first_invalid(const field_errors& errs) {
  if (errs.empty())
    return {};
  return caf::make_error(errc::invalid_argument,
                         errs.begin()->first + ": " + errs.begin()->second.front());
}

std::vector<std::string> canonical_roles(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (auto& r : role_names())
    for (auto& x : in)
      if (canonical_role(x) == r) {
        out.push_back(r);
        break;
      }
  return out;
}

identity_actor::behavior_type identity(identity_ptr self, identity_config cfg, store_actor store,
                                       kdf_actor kdf, std::string dummy_hash) {
  self->state.cfg = std::move(cfg);
  self->state.store = std::move(store);
  self->state.kdf = std::move(kdf);
  self->state.dummy_hash = std::move(dummy_hash);
  auto timeout = self->state.cfg.call_timeout;
  // A KDF call takes a few hundred milliseconds of CPU; allow for a queue.
  auto kdf_timeout = timeout * 3;
  return {
    [=](login_atom, login_request& req) {
      auto rp = self->make_response_promise<login_result>();
      self->request(self->state.store, timeout, user_atom::value, name_atom::value, req.username)
        .then(
          [=](user_record& u) mutable {
            auto now = now_millis();
            bool blocked = !u.active || u.locked_until > now;
            // Verify even when blocked, so the answer takes the same time.
            self->request(self->state.kdf, kdf_timeout, verify_atom::value, req.password,
                          u.password_hash)
              .then(
                [=](bool ok) mutable {
                  if (blocked) {
                    auto ev = auth_event("LoginFailed", "Failure", req, u.id, u.tenant_id,
                                         u.active ? "account locked" : "account inactive");
                    self->request(self->state.store, timeout, audit_atom::value, ev)
                      .then([=](int64_t) mutable { rp.deliver(unauthorized()); },
                            [=](caf::error& err) mutable { rp.deliver(err); });
                    return;
                  }
                  finish_login(self, rp, req, u, ok);
                },
                [=](caf::error& err) mutable { rp.deliver(err); });
          },
          [=](caf::error& err) mutable {
            if (err != errc::not_found) {
              rp.deliver(err);
              return;
            }
            self->request(self->state.kdf, kdf_timeout, verify_atom::value, req.password,
                          self->state.dummy_hash)
              .then(
                [=](bool) mutable {
                  auto ev = auth_event("LoginFailed", "Failure", req, "", "", "unknown user");
                  self->request(self->state.store, timeout, audit_atom::value, ev)
                    .then([=](int64_t) mutable { rp.deliver(unauthorized()); },
                          [=](caf::error& e) mutable { rp.deliver(e); });
                },
                [=](caf::error& e) mutable { rp.deliver(e); });
          });
      return rp;
    },
    [=](user_atom, create_atom, user_input& in, request_ctx& ctx) {
      auto rp = self->make_response_promise<user_record>();
      if (auto err = first_invalid(validate(in, true, self->state.cfg.dev_mode))) {
        rp.deliver(err);
        return rp;
      }
      with_valid_tenant(self, in.tenant_id, rp, [=]() mutable {
        self->request(self->state.kdf, kdf_timeout, hash_atom::value, in.password,
                      self->state.cfg.pbkdf2_iterations)
          .then(
            [=](std::string& hash) mutable {
              user_record u;
              u.id = crypto::uuid4();
              u.username = in.username;
              u.email = in.email;
              u.full_name = in.full_name;
              u.password_hash = std::move(hash);
              u.roles = canonical_roles(in.roles);
              u.tenant_id = in.tenant_id;
              u.active = in.has_active ? in.active : true;
              u.created_at = u.updated_at = now_millis();
              auto ev = user_event("UserCreated", u, ctx);
              self->request(self->state.store, timeout, user_atom::value, create_atom::value, u, ev)
                .then([=](ok_atom) mutable { rp.deliver(u); },
                      [=](caf::error& err) mutable { rp.deliver(user_write_error(err, u)); });
            },
            [=](caf::error& err) mutable { rp.deliver(err); });
      });
      return rp;
    },
    [=](user_atom, update_atom, const std::string& id, user_input& in, request_ctx& ctx) {
      auto rp = self->make_response_promise<user_record>();
      if (auto err = first_invalid(validate(in, false, self->state.cfg.dev_mode))) {
        rp.deliver(err);
        return rp;
      }
      self->request(self->state.store, timeout, user_atom::value, get_atom::value, id)
        .then(
          [=](user_record& old) mutable {
            with_valid_tenant(self, in.tenant_id, rp, [=]() mutable {
              auto write = [=](std::string hash) mutable {
                auto u = old;
                u.username = in.username;
                u.email = in.email;
                u.full_name = in.full_name;
                u.roles = canonical_roles(in.roles);
                u.tenant_id = in.tenant_id;
                if (in.has_active)
                  u.active = in.active;
                if (!hash.empty()) {
                  u.password_hash = std::move(hash);
                  u.failed_attempts = 0;
                  u.locked_until = 0;
                }
                u.updated_at = now_millis();
                auto ev = user_event("UserUpdated", u, ctx);
                self->request(self->state.store, timeout, user_atom::value, update_atom::value, u,
                              ev)
                  .then([=](ok_atom) mutable { rp.deliver(u); },
                        [=](caf::error& err) mutable { rp.deliver(user_write_error(err, u)); });
              };
              if (!in.has_password) {
                write({});
                return;
              }
              self->request(self->state.kdf, kdf_timeout, hash_atom::value, in.password,
                            self->state.cfg.pbkdf2_iterations)
                .then([=](std::string& hash) mutable { write(std::move(hash)); },
                      [=](caf::error& err) mutable { rp.deliver(err); });
            });
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](user_atom, delete_atom, const std::string& id, request_ctx& ctx) {
      auto rp = self->make_response_promise<ok_atom>();
      if (id == ctx.user_id) {
        rp.deliver(caf::make_error(errc::conflict, "You cannot delete your own account."));
        return rp;
      }
      self->request(self->state.store, timeout, user_atom::value, get_atom::value, id)
        .then(
          [=](user_record& u) mutable {
            auto ev = user_event("UserDeleted", u, ctx);
            self->request(self->state.store, timeout, user_atom::value, delete_atom::value, id, ev)
              .then([=](ok_atom) mutable { rp.deliver(ok_atom::value); },
                    [=](caf::error& err) mutable { rp.deliver(err); });
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](user_atom, get_atom, const std::string& id) {
      return self->delegate(self->state.store, user_atom::value, get_atom::value, id);
    },
    [=](user_atom, list_atom) {
      return self->delegate(self->state.store, user_atom::value, list_atom::value);
    },
  };
}

} // namespace

identity_actor spawn_identity(caf::actor_system& sys, identity_config cfg, store_actor store,
                              kdf_actor kdf) {
  // Computed once at start (not on a scheduler thread): the hash verified for
  // unknown user names.
  auto dummy = crypto::hash_password(crypto::random_hex(16), cfg.pbkdf2_iterations);
  return sys.spawn(identity, std::move(cfg), std::move(store), std::move(kdf), std::move(dummy));
}

} // namespace hotswap
