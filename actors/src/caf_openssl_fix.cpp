// See caf_openssl_fix.hpp: SSL_get_error interposed for libcaf_openssl.

#include "hotswap/actors/caf_openssl_fix.hpp"

#include <dlfcn.h>
#include <link.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <cstring>

namespace {

using get_error_fn = int (*)(const SSL*, int);

struct resolved {
  get_error_fn real = nullptr;
  /// Executable segments of libcaf_openssl: [lo, hi) pairs.
  std::uintptr_t lo[4] = {};
  std::uintptr_t hi[4] = {};
  int ranges = 0;
};

int collect(dl_phdr_info* info, size_t, void* data) {
  auto* r = static_cast<resolved*>(data);
  if (info->dlpi_name == nullptr || std::strstr(info->dlpi_name, "libcaf_openssl") == nullptr)
    return 0;
  for (int i = 0; i < info->dlpi_phnum && r->ranges < 4; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) != 0) {
      r->lo[r->ranges] = info->dlpi_addr + ph.p_vaddr;
      r->hi[r->ranges] = r->lo[r->ranges] + ph.p_memsz;
      ++r->ranges;
    }
  }
  return 1;
}

const resolved& state() {
  // Thread-safe one-time initialisation (first call from any thread).
  static const resolved r = [] {
    resolved x;
    auto* sym = ::dlsym(RTLD_NEXT, "SSL_get_error");
    static_assert(sizeof(sym) == sizeof(x.real));
    std::memcpy(&x.real, &sym, sizeof(sym));
    ::dl_iterate_phdr(collect, &x);
    return x;
  }();
  return r;
}

bool from_caf_openssl(std::uintptr_t caller, const resolved& r) {
  for (int i = 0; i < r.ranges; ++i)
    if (caller >= r.lo[i] && caller < r.hi[i])
      return true;
  return false;
}

} // namespace

extern "C" int SSL_get_error(const SSL* ssl, int ret) {
  const auto& r = state();
  if (r.real == nullptr)
    return SSL_ERROR_SSL; // unreachable: libssl is linked into this executable
  auto result = r.real(ssl, ret);
  if ((result == SSL_ERROR_SSL || result == SSL_ERROR_SYSCALL)
      && from_caf_openssl(reinterpret_cast<std::uintptr_t>(__builtin_return_address(0)), r))
    ERR_clear_error();
  return result;
}

namespace hotswap {

bool caf_openssl_fix_active() {
  const auto& r = state();
  auto* global = ::dlsym(RTLD_DEFAULT, "SSL_get_error");
  auto* mine = reinterpret_cast<void*>(&::SSL_get_error);
  return r.real != nullptr && r.ranges > 0 && global == mine
         && global != reinterpret_cast<void*>(r.real);
}

} // namespace hotswap
