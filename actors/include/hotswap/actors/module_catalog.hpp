#pragma once

// The module catalog: uploads and listings of module versions (the
// artifacts), on the api role. Verification of an upload (ELF/ABI check,
// SHA-256, signature) is CPU work on up to http.max_module_bytes, so the
// catalog is a detached actor: it never runs on a scheduler thread.

#include <map>
#include <string>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/module_signing.hpp"
#include "hotswap/runtime/records.hpp"
#include "hotswap/runtime/store_actor.hpp"

namespace hotswap {

class node_metrics;

/// One upload as the HTTP bridge received it.
struct module_upload {
  std::string name;
  std::string version;
  std::string description;
  std::string signature_b64;  ///< X-Module-Signature; empty = unsigned
  std::string environment;    ///< optional target environment (policy check)
  std::string bytes;
  std::string username;
  std::string tenant_id;
  std::string trace_id;
  std::string source_ip;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, module_upload& x) {
  return f(caf::meta::type_name("module_upload"), x.name, x.version, x.description,
           x.signature_b64, x.environment, x.bytes, x.username, x.tenant_id, x.trace_id,
           x.source_ip);
}

using module_catalog_actor = caf::typed_actor<
  /// Verifies and stores an upload. Errors: invalid_argument (not a module
  /// of this ABI, name/version mismatch, bad signature, unsigned where the
  /// target environment requires signatures; the detail says which),
  /// conflict (same version with other bytes), store errors.
  caf::replies_to<module_atom, put_atom, module_upload>::with<module_put_result>>;

struct catalog_env {
  store_actor store;
  modsig::trusted_keys keys;
  /// environment -> require_signed_modules
  std::map<std::string, bool> require_signed;
  node_metrics* metrics = nullptr;
};

module_catalog_actor spawn_module_catalog(caf::actor_system& sys, catalog_env env);

/// Module names: ^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$.
bool valid_module_name(const std::string& name);

/// SemVer MAJOR.MINOR.PATCH[-pre][+build] (numbers without leading zeros).
bool valid_semver(const std::string& version);

/// SemVer precedence: negative, zero or positive (build metadata ignored).
int compare_semver(const std::string& a, const std::string& b);

/// The JSON of a version record as the API shows it.
std::string module_record_json(const module_record& r);

} // namespace hotswap
