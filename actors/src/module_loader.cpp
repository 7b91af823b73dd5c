#include "hotswap/actors/module_loader.hpp"

#include <dlfcn.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/log.hpp"
#include "hotswap/runtime/module_file.hpp"

namespace hotswap {

namespace {

struct pending_unload {
  library_ptr lib;
  caf::typed_response_promise<ok_atom> rp;
  std::chrono::steady_clock::time_point since;
  bool warned = false;
};

struct loader_state {
  loader_env env;
  std::vector<pending_unload> unloads;
  bool ticking = false;
  static inline const char* name = "module_loader";
};

using loader_ptr = module_loader_actor::stateful_pointer<loader_state>;

constexpr auto unload_poll = std::chrono::milliseconds(2);

/// Writes `bytes` to `path` atomically (temporary file + rename).
caf::error write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec)
    return caf::make_error(errc::internal, "cannot create " + path.parent_path().string() + ": "
                                             + ec.message());
  auto tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out)
      return caf::make_error(errc::internal, "cannot write " + tmp.string());
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return caf::make_error(errc::internal, "cannot rename " + tmp.string() + ": " + ec.message());
  return {};
}

/// The blocking part of a load: verify, write, dlopen, check, self-check.
caf::expected<library_ptr> load_blocking(loader_state& st, const load_request& req,
                                         const module_record& rec, const std::string& bytes) {
  auto what = rec.name + " " + rec.version;
  if (crypto::equal_ct(modsig::digest(bytes), rec.digest) == false)
    return caf::make_error(errc::invalid_argument,
                           what + ": the stored bytes do not match the digest " + rec.digest);
  if (!rec.is_signed) {
    if (req.require_signed)
      return caf::make_error(errc::forbidden, what + " is unsigned and " + req.environment
                                                + " requires signed modules");
  } else {
    auto sig = crypto::base64_decode(rec.signature);
    if (!sig)
      return caf::make_error(errc::invalid_argument, what + ": the stored signature is not base64");
    auto key = st.env.keys.verify(bytes, *sig);
    if (!key)
      return caf::make_error(errc::invalid_argument,
                             what + ": the signature does not verify against a trusted key");
  }
  auto info = inspect_module_file(bytes);
  if (!info)
    return info.error();
  if (info->name != rec.name || info->version != rec.version)
    return caf::make_error(errc::invalid_argument, what + ": the file declares " + info->name + " "
                                                     + info->version);
  auto short_digest = rec.digest.substr(rec.digest.find(':') + 1, 12);
  auto path = std::filesystem::path(st.env.dir) / req.environment
              / (rec.name + "-" + rec.version + "-" + short_digest + ".so");
  if (auto err = write_file(path, bytes))
    return err;
  dlerror();
  auto handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* e = dlerror();
    std::filesystem::remove(path);
    return caf::make_error(errc::invalid_argument,
                           what + ": dlopen failed: " + std::string{e ? e : "unknown error"});
  }
  auto fail = [&](std::string reason) {
    dlclose(handle);
    std::error_code ec;
    std::filesystem::remove(path, ec);
    return caf::make_error(errc::invalid_argument, what + ": " + reason);
  };
  auto entry = reinterpret_cast<sdk::entry_fn>(dlsym(handle, sdk::entry_symbol));
  if (entry == nullptr)
    return fail("no hotswap_module_v1 entry point");
  auto def = entry();
  if (def == nullptr || def->abi_token == nullptr
      || std::strcmp(def->abi_token, runtime_abi_token()) != 0)
    return fail(std::string{"built for another ABI: "}
                + (def && def->abi_token ? def->abi_token : "(none)"));
  if (def->name == nullptr || def->version == nullptr || rec.name != def->name
      || rec.version != def->version || def->make_behavior == nullptr)
    return fail("the entry point does not describe this module version");
  if (def->self_check != nullptr) {
    if (auto msg = def->self_check())
      return fail(std::string{"self-check failed: "} + msg);
  }
  auto lib = std::make_shared<loaded_library>();
  lib->handle = handle;
  lib->def = def;
  lib->path = path.string();
  lib->record = rec;
  lib->environment = req.environment;
  logger("worker")->info("[M:{} {}] loaded from {} ({} bytes, {})", rec.name, rec.version,
                         lib->path, rec.size, rec.is_signed ? "signed " + rec.signer_key_id
                                                             : std::string{"unsigned"});
  return lib;
}

/// Closes every library that nothing else references any more.
void check_unloads(loader_ptr self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  for (auto i = st.unloads.begin(); i != st.unloads.end();) {
    if (i->lib.use_count() > 1) {
      if (!i->warned && now - i->since > std::chrono::seconds(5)) {
        i->warned = true;
        logger("worker")->warn("[M:{} {}] still referenced {} s after retirement; waiting",
                               i->lib->record.name, i->lib->record.version, 5);
      }
      ++i;
      continue;
    }
    auto lib = std::move(i->lib);
    auto rp = i->rp;
    i = st.unloads.erase(i);
    if (lib->handle != nullptr) {
      if (dlclose(lib->handle) != 0) {
        const char* e = dlerror();
        logger("worker")->error("[M:{} {}] dlclose failed: {}", lib->record.name,
                                lib->record.version, e ? e : "unknown");
      }
      std::error_code ec;
      std::filesystem::remove(lib->path, ec);
      logger("worker")->info("[M:{} {}] unloaded", lib->record.name, lib->record.version);
    }
    rp.deliver(ok_atom::value);
  }
  if (!st.unloads.empty()) {
    st.ticking = true;
    self->delayed_send(self, unload_poll, tick_atom::value);
  } else {
    st.ticking = false;
  }
}

module_loader_actor::behavior_type loader(loader_ptr self, loader_env env) {
  self->state.env = std::move(env);
  return {
    [=](load_atom, load_request& req) -> caf::typed_response_promise<library_ptr> {
      auto rp = self->make_response_promise<library_ptr>();
      auto store = self->state.env.store;
      self->request(store, caf::infinite, module_atom::value, get_atom::value, req.module,
                    req.version)
        .then(
          [=](module_record& rec) mutable {
            self->request(store, caf::infinite, module_atom::value, blob_atom::value, req.module,
                          req.version)
              .then(
                [=](std::string& bytes) mutable {
                  auto lib = load_blocking(self->state, req, rec, bytes);
                  if (lib)
                    rp.deliver(std::move(*lib));
                  else
                    rp.deliver(lib.error());
                },
                [=](caf::error& err) mutable { rp.deliver(err); });
          },
          [=](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [=](unload_atom, library_ptr& lib) -> caf::typed_response_promise<ok_atom> {
      auto rp = self->make_response_promise<ok_atom>();
      self->state.unloads.push_back({std::move(lib), rp, std::chrono::steady_clock::now()});
      if (!self->state.ticking)
        check_unloads(self);
      return rp;
    },
    [=](tick_atom) { check_unloads(self); },
  };
}

} // namespace

module_loader_actor spawn_module_loader(caf::actor_system& sys, loader_env env) {
  return sys.spawn<caf::detached>(loader, std::move(env));
}

} // namespace hotswap
