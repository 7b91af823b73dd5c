#pragma once

// Checks that bytes are a loadable hotswap module of this runtime's ABI
// WITHOUT loading them (no code runs): an ELF64 shared object for this
// machine, with the ".hotswap_abi" section written by HOTSWAP_MODULE
// ("ABI-TOKEN\nNAME\nVERSION") and the entry point `hotswap_module_v1`
// defined in its dynamic symbol table. Every offset is bounds-checked: the
// input is untrusted upload data.

#include <string>
#include <string_view>

#include "caf/expected.hpp"

namespace hotswap {

struct module_file_info {
  std::string abi_token;
  std::string name;
  std::string version;
};

/// errc::invalid_argument with a reason a user can act on ("not an ELF
/// file", "built for another ABI: <token> (this runtime: <token>)", "no
/// hotswap_module_v1 entry point", ...) when the bytes are not a module of
/// this ABI.
caf::expected<module_file_info> inspect_module_file(std::string_view bytes);

/// The ABI token of this runtime build (HOTSWAP_ABI_TOKEN of hotswap/module.hpp).
const char* runtime_abi_token();

} // namespace hotswap
