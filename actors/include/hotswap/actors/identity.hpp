#pragma once

// Identity: users in the store, passwords hashed with PBKDF2-SHA256 on a
// detached pool (never on scheduler threads), login with lockout, JWTs signed
// with the store's current signing key.

#include <cstdint>
#include <string>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/tenant_state.hpp"
#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/records.hpp"
#include "hotswap/runtime/store_actor.hpp"

namespace hotswap {

using hash_atom = caf::atom_constant<caf::atom("hash")>;
using verify_atom = caf::atom_constant<caf::atom("verify")>;

struct login_request {
  std::string username;
  std::string password;
  std::string source_ip;
  std::string trace_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, login_request& x) {
  return f(caf::meta::type_name("login_request"), x.username, x.password, x.source_ip,
           x.trace_id);
}

struct login_result {
  std::string token;
  millis expires_at = 0;
  user_record user;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, login_result& x) {
  return f(caf::meta::type_name("login_result"), x.token, x.expires_at, x.user);
}

/// A user create/update body; `has_*` tell which fields were present.
struct user_input {
  std::string username;
  bool has_password = false;
  std::string password;
  std::string email;
  std::string full_name;
  std::vector<std::string> roles;
  std::string tenant_id;
  bool has_active = false;
  bool active = true;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_input& x) {
  return f(caf::meta::type_name("user_input"), x.username, x.has_password, x.password, x.email,
           x.full_name, x.roles, x.tenant_id, x.has_active, x.active);
}

/// Validates a user body: user name, e-mail, roles, password length (>= 12
/// characters outside dev mode, >= 8 in dev mode; required on create).
field_errors validate(const user_input& in, bool creating, bool dev_mode);

/// Canonical role names in rank order: Viewer(1) < Deployer(2) < Admin(3).
const std::vector<std::string>& role_names();

/// The canonical role name for `name` (case-insensitive), or "" if unknown.
std::string canonical_role(const std::string& name);

/// Highest rank among `roles` (0 when none).
int role_rank(const std::vector<std::string>& roles);

/// Password hashing and verification on detached workers.
using kdf_actor = caf::typed_actor<
  caf::replies_to<hash_atom, std::string, uint32_t>::with<std::string>,
  caf::replies_to<verify_atom, std::string, std::string>::with<bool>>;

kdf_actor spawn_kdf_pool(caf::actor_system& sys, size_t workers);

struct identity_config {
  std::string node_id;
  std::string issuer;
  std::string audience;
  uint32_t token_minutes = 60;
  uint32_t lockout_attempts = 5;
  uint32_t lockout_minutes = 15;
  uint32_t pbkdf2_iterations = 600000;
  bool dev_mode = false;
  std::vector<signing_key> keys; ///< the current key signs; all verify
  std::chrono::milliseconds call_timeout{10000};
};

using identity_actor = caf::typed_actor<
  /// errc::unauthorized (one message for every reason) or the token.
  caf::replies_to<login_atom, login_request>::with<login_result>,
  caf::replies_to<user_atom, create_atom, user_input, request_ctx>::with<user_record>,
  caf::replies_to<user_atom, update_atom, std::string, user_input, request_ctx>::with<user_record>,
  caf::replies_to<user_atom, delete_atom, std::string, request_ctx>::with<ok_atom>,
  caf::replies_to<user_atom, get_atom, std::string>::with<user_record>,
  caf::replies_to<user_atom, list_atom>::with<std::vector<user_record>>>;

identity_actor spawn_identity(caf::actor_system& sys, identity_config cfg, store_actor store,
                              kdf_actor kdf);

/// The user as the API shows it (never the hash).
std::string to_json(const user_record& u);

} // namespace hotswap
