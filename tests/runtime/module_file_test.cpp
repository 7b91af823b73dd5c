#define CAF_SUITE module_file
#include "caf/test/dsl.hpp"

#include <elf.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "hotswap/module.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/module_file.hpp"

using namespace hotswap;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return std::string{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

std::string example_module(const std::string& file) {
  auto bytes = read_file(std::string{HOTSWAP_EXAMPLE_MODULES_DIR} + "/" + file);
  CAF_REQUIRE_GREATER(bytes.size(), sizeof(Elf64_Ehdr));
  return bytes;
}

/// The reason of a refusal, or "accepted" (so a wrong acceptance shows in
/// the failed check).
std::string reason(const caf::expected<module_file_info>& x) {
  if (x)
    return "accepted";
  CAF_CHECK_EQUAL(errc_of(x.error()), errc::invalid_argument);
  auto detail = error_detail(x.error());
  CAF_CHECK(!detail.empty());
  return detail;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// Replaces every occurrence of `from` with `to` (same length); returns the count.
size_t patch_all(std::string& bytes, const std::string& from, const std::string& to) {
  CAF_REQUIRE_EQUAL(from.size(), to.size());
  size_t count = 0;
  for (auto pos = bytes.find(from); pos != std::string::npos; pos = bytes.find(from, pos + 1)) {
    bytes.replace(pos, to.size(), to);
    ++count;
  }
  return count;
}

Elf64_Ehdr elf_header(const std::string& bytes) {
  Elf64_Ehdr eh;
  std::memcpy(&eh, bytes.data(), sizeof(eh));
  return eh;
}

template <class T>
void poke(std::string& bytes, size_t offset, T value) {
  CAF_REQUIRE_LESS_OR_EQUAL(offset + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

/// A shared library on this machine that is not a hotswap module.
std::string plain_shared_library() {
  for (auto path : {"/usr/lib/x86_64-linux-gnu/libcaf_core.so.0.17.6",
                    "/usr/lib/aarch64-linux-gnu/libcaf_core.so.0.17.6",
                    "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/aarch64-linux-gnu/libc.so.6",
                    "/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"}) {
    auto bytes = read_file(path);
    if (!bytes.empty()) {
      CAF_MESSAGE("plain shared library: " << path);
      return bytes;
    }
  }
  CAF_FAIL("found no plain shared library (libcaf_core or libc) to test with");
  return {};
}

} // namespace

CAF_TEST(the runtime ABI token is the SDK token) {
  CAF_CHECK_EQUAL(std::string{runtime_abi_token()}, std::string{HOTSWAP_ABI_TOKEN});
  CAF_CHECK(contains(runtime_abi_token(), "hotswap-sdk/2 "));
}

CAF_TEST(echo 1.0.0 inspects to its name version and ABI token) {
  auto info = inspect_module_file(example_module("echo-1.0.0.so"));
  CAF_REQUIRE_EQUAL(reason(info), "accepted");
  CAF_CHECK_EQUAL(info->name, "echo");
  CAF_CHECK_EQUAL(info->version, "1.0.0");
  CAF_CHECK_EQUAL(info->abi_token, runtime_abi_token());
}

CAF_TEST(every example module inspects to the version in its file name) {
  struct {
    const char* file;
    const char* name;
    const char* version;
  } cases[] = {{"echo-2.0.0.so", "echo", "2.0.0"},
               {"flaky-1.0.0.so", "flaky", "1.0.0"},
               {"slow-1.0.0.so", "slow", "1.0.0"}};
  for (auto& c : cases) {
    auto info = inspect_module_file(example_module(c.file));
    CAF_REQUIRE_EQUAL(reason(info), "accepted");
    CAF_CHECK_EQUAL(info->name, c.name);
    CAF_CHECK_EQUAL(info->version, c.version);
    CAF_CHECK_EQUAL(info->abi_token, runtime_abi_token());
  }
}

CAF_TEST(a shared library that is not a module is refused for lacking the ABI section) {
  auto msg = reason(inspect_module_file(plain_shared_library()));
  CAF_MESSAGE(msg);
  CAF_CHECK(contains(msg, "no .hotswap_abi section"));
}

CAF_TEST(empty and random bytes are not an ELF file) {
  CAF_CHECK(contains(reason(inspect_module_file("")), "not an ELF file"));
  CAF_CHECK(contains(reason(inspect_module_file("\x7f" "EL")), "not an ELF file"));
  CAF_CHECK(contains(reason(inspect_module_file("#!/bin/sh\necho hi\n")), "not an ELF file"));
  std::mt19937 gen{42};
  for (size_t len : {1u, 63u, 64u, 4096u, 100000u}) {
    std::string bytes(len, '\0');
    for (auto& c : bytes)
      c = static_cast<char>(gen() & 0xff);
    if (len >= 4 && std::memcmp(bytes.data(), ELFMAG, SELFMAG) == 0)
      bytes[0] = 'x';
    CAF_CHECK(contains(reason(inspect_module_file(bytes)), "not an ELF file"));
  }
}

CAF_TEST(a truncated module is refused at every length) {
  auto bytes = example_module("echo-1.0.0.so");
  std::vector<size_t> lengths{4, 16, 63, 64, 65, 1000, bytes.size() / 2};
  for (size_t len = 0; len < bytes.size(); len += 127)
    lengths.push_back(len);
  for (size_t cut = 1; cut <= 256 && cut < bytes.size(); ++cut)
    lengths.push_back(bytes.size() - cut);
  size_t accepted = 0;
  for (auto len : lengths) {
    auto res = inspect_module_file(std::string_view{bytes.data(), len});
    if (res || errc_of(res.error()) != errc::invalid_argument) {
      CAF_MESSAGE("a " << len << "-byte prefix of " << bytes.size() << " bytes was accepted");
      ++accepted;
    }
  }
  CAF_MESSAGE(lengths.size() << " prefixes tried");
  CAF_CHECK_EQUAL(accepted, 0u);
  CAF_CHECK(contains(reason(inspect_module_file(std::string_view{bytes.data(), 64})),
                     "truncated"));
  CAF_CHECK(contains(reason(inspect_module_file(std::string_view{bytes.data(), 63})),
                     "truncated"));
  CAF_CHECK(contains(reason(inspect_module_file(std::string_view{bytes.data(), 1000})),
                     "truncated"));
  CAF_CHECK(contains(
    reason(inspect_module_file(std::string_view{bytes.data(), bytes.size() / 2})), "truncated"));
}

CAF_TEST(a module built for another ABI is refused naming both tokens) {
  auto bytes = example_module("echo-1.0.0.so");
  CAF_REQUIRE_GREATER(patch_all(bytes, "hotswap-sdk/2", "hotswap-sdk/9"), 0u);
  auto msg = reason(inspect_module_file(bytes));
  CAF_MESSAGE(msg);
  CAF_CHECK(contains(msg, "built for another ABI: hotswap-sdk/9"));
  CAF_CHECK(contains(msg, std::string{"(this runtime: "} + runtime_abi_token() + ")"));
}

CAF_TEST(a malformed ABI section is refused) {
  auto bytes = example_module("echo-1.0.0.so");
  auto content = std::string{runtime_abi_token()} + "\necho\n1.0.0";
  auto pos = bytes.find(content + '\0');
  CAF_REQUIRE_NOT_EQUAL(pos, std::string::npos);
  auto two_lines = bytes;
  two_lines[pos + content.size() - 6] = ' '; // "\n1.0.0" -> " 1.0.0"
  CAF_CHECK(contains(reason(inspect_module_file(two_lines)), "malformed .hotswap_abi"));
  auto empty_name = bytes;
  // "TOKEN\necho\n1.0.0" -> "TOKEN\n\n1.0.0": three lines, the name empty.
  empty_name.replace(pos + content.size() - 11, 12, std::string{"\n\n1.0.0\0\0\0\0\0", 12});
  CAF_CHECK(contains(reason(inspect_module_file(empty_name)), "malformed .hotswap_abi"));
  auto control = bytes;
  control[pos + content.size() - 10] = '\x01';
  CAF_CHECK(contains(reason(inspect_module_file(control)), "malformed .hotswap_abi"));
}

CAF_TEST(a module without the entry point is refused) {
  auto bytes = example_module("echo-1.0.0.so");
  std::string entry{hotswap::sdk::entry_symbol};
  CAF_REQUIRE_GREATER(patch_all(bytes, entry + '\0', "hotswap_module_v2" + std::string(1, '\0')),
                      0u);
  auto msg = reason(inspect_module_file(bytes));
  CAF_MESSAGE(msg);
  CAF_CHECK(contains(msg, "no hotswap_module_v1 entry point"));
}

CAF_TEST(a module for another machine or of another ELF type is refused) {
  auto good = example_module("echo-1.0.0.so");
  auto machine = good;
  poke<uint16_t>(machine, offsetof(Elf64_Ehdr, e_machine), EM_RISCV);
  CAF_CHECK(contains(reason(inspect_module_file(machine)), "built for another machine: riscv"));
  auto exec = good;
  poke<uint16_t>(exec, offsetof(Elf64_Ehdr, e_type), ET_EXEC);
  CAF_CHECK(contains(reason(inspect_module_file(exec)), "not a shared library"));
  auto elf32 = good;
  elf32[EI_CLASS] = ELFCLASS32;
  CAF_CHECK(contains(reason(inspect_module_file(elf32)), "not a 64-bit ELF file"));
  auto big_endian = good;
  big_endian[EI_DATA] = ELFDATA2MSB;
  CAF_CHECK(contains(reason(inspect_module_file(big_endian)), "not a little-endian"));
}

CAF_TEST(huge offsets sizes and indexes in the headers are refused without a crash) {
  auto good = example_module("echo-1.0.0.so");
  auto eh = elf_header(good);
  CAF_REQUIRE_EQUAL(eh.e_shentsize, sizeof(Elf64_Shdr));
  for (uint64_t v : {~uint64_t{0}, uint64_t{1} << 63, uint64_t{good.size()},
                     uint64_t{good.size() - 1}}) {
    auto bytes = good;
    poke<uint64_t>(bytes, offsetof(Elf64_Ehdr, e_shoff), v);
    CAF_CHECK_NOT_EQUAL(reason(inspect_module_file(bytes)), "accepted");
  }
  for (uint16_t v : {uint16_t{0xffff}, uint16_t{0xff00}, uint16_t{0}}) {
    auto bytes = good;
    poke<uint16_t>(bytes, offsetof(Elf64_Ehdr, e_shnum), v);
    CAF_CHECK_NOT_EQUAL(reason(inspect_module_file(bytes)), "accepted");
    bytes = good;
    poke<uint16_t>(bytes, offsetof(Elf64_Ehdr, e_shstrndx), v);
    CAF_CHECK_NOT_EQUAL(reason(inspect_module_file(bytes)), "accepted");
  }
  // Every field of every section header set to hostile values.
  const uint64_t hostile[] = {~uint64_t{0}, ~uint64_t{0} - 7, uint64_t{1} << 63,
                              uint64_t{good.size()}, 0};
  size_t refused = 0;
  for (size_t i = 0; i < eh.e_shnum; ++i) {
    auto base = eh.e_shoff + i * sizeof(Elf64_Shdr);
    for (auto v : hostile) {
      for (auto field : {offsetof(Elf64_Shdr, sh_offset), offsetof(Elf64_Shdr, sh_size),
                         offsetof(Elf64_Shdr, sh_entsize)}) {
        auto bytes = good;
        poke<uint64_t>(bytes, base + field, v);
        if (!inspect_module_file(bytes))
          ++refused;
      }
      for (auto field : {offsetof(Elf64_Shdr, sh_name), offsetof(Elf64_Shdr, sh_link),
                         offsetof(Elf64_Shdr, sh_type)}) {
        auto bytes = good;
        poke<uint32_t>(bytes, base + field, static_cast<uint32_t>(v));
        if (!inspect_module_file(bytes))
          ++refused;
      }
    }
  }
  CAF_MESSAGE(refused << " hostile section headers refused");
  CAF_CHECK_GREATER(refused, 0u);
}

CAF_TEST(flipping bytes anywhere in a module never crashes the inspector) {
  auto good = example_module("echo-1.0.0.so");
  auto eh = elf_header(good);
  std::vector<size_t> positions;
  auto add_range = [&](uint64_t offset, uint64_t size) {
    for (uint64_t i = offset; i < offset + size && i < good.size(); ++i)
      positions.push_back(static_cast<size_t>(i));
  };
  // Every byte of the ELF header, the section header table and the sections
  // the inspector reads (names, dynamic symbols and strings, the ABI section)...
  add_range(0, sizeof(Elf64_Ehdr));
  add_range(eh.e_shoff, uint64_t{eh.e_shnum} * sizeof(Elf64_Shdr));
  for (size_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, good.data() + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof(sh));
    if (sh.sh_type == SHT_DYNSYM || i == eh.e_shstrndx
        || (sh.sh_type == SHT_STRTAB && (sh.sh_flags & SHF_ALLOC) != 0)
        || sh.sh_addralign == 32) // .hotswap_abi (and .rodata)
      add_range(sh.sh_offset, sh.sh_size);
  }
  auto targeted = positions.size();
  // ... and random bytes everywhere else.
  std::mt19937_64 gen{7};
  for (int i = 0; i < 5000; ++i)
    positions.push_back(static_cast<size_t>(gen() % good.size()));
  CAF_MESSAGE(targeted << " targeted and " << positions.size() - targeted
                       << " random positions");
  size_t accepted = 0;
  size_t refused = 0;
  size_t violations = 0;
  auto bytes = good;
  for (auto pos : positions) {
    auto original = bytes[pos];
    for (unsigned char mask : {0x01, 0x80, 0xff}) {
      bytes[pos] = static_cast<char>(static_cast<unsigned char>(original) ^ mask);
      auto res = inspect_module_file(bytes);
      if (res) {
        ++accepted;
        // Whatever passes must still be a well-formed answer of this ABI.
        if (res->name.empty() || res->version.empty() || res->abi_token != runtime_abi_token())
          ++violations;
      } else {
        ++refused;
        if (errc_of(res.error()) != errc::invalid_argument || error_detail(res.error()).empty())
          ++violations;
      }
    }
    bytes[pos] = original;
  }
  CAF_MESSAGE(accepted << " mutants accepted, " << refused << " refused");
  CAF_CHECK_EQUAL(violations, 0u);
  CAF_CHECK_GREATER(refused, 100u);
  CAF_CHECK_GREATER(accepted, 0u);
  CAF_REQUIRE(bytes == good);
  CAF_CHECK(inspect_module_file(bytes));
}
