#pragma once

// The module loader: the only place that touches module files and dlopen /
// dlclose. A detached actor (its own thread), so blocking file I/O, OpenSSL
// verification and dlopen never run on a scheduler thread.

#include <string>

#include "caf/actor_system.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "hotswap/actors/worker_types.hpp"
#include "hotswap/runtime/atoms.hpp"
#include "hotswap/runtime/module_signing.hpp"
#include "hotswap/runtime/store_actor.hpp"

namespace hotswap {

using module_loader_actor = caf::typed_actor<
  /// Fetches the version from the store, verifies its digest, the ABI of the
  /// file and (when signed, or when required) its signature, writes it under
  /// the loader's directory, dlopens it, checks the entry point and runs the
  /// module's self-check. Errors: not_found (no such version),
  /// invalid_argument (verification), forbidden (unsigned where signatures
  /// are required), internal (dlopen/self-check failure with the reason).
  caf::replies_to<load_atom, load_request>::with<library_ptr>,
  /// Closes the library once nothing but this message references it (every
  /// handler actor object is gone), then removes its file.
  caf::replies_to<unload_atom, library_ptr>::with<ok_atom>,
  caf::reacts_to<tick_atom>>;

struct loader_env {
  store_actor store;
  modsig::trusted_keys keys;
  std::string dir;             ///< where module files are written (<data_dir>/modules)
};

module_loader_actor spawn_module_loader(caf::actor_system& sys, loader_env env);

} // namespace hotswap
