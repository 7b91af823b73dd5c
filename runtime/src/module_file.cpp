#include "hotswap/runtime/module_file.hpp"

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "hotswap/module.hpp"
#include "hotswap/runtime/errc.hpp"

// The ELF reader below copies little-endian structures straight into host
// structs: it supports exactly the (little-endian) machines modules are built for.
#if defined(__x86_64__)
#  define HOTSWAP_ELF_MACHINE EM_X86_64
#elif defined(__aarch64__)
#  define HOTSWAP_ELF_MACHINE EM_AARCH64
#else
#  error "hotswap modules are supported on x86-64 and aarch64 only"
#endif

namespace hotswap {

namespace {

/// Error messages quote at most this many characters of file content.
constexpr size_t max_quoted = 200;

/// Longest accepted line of the ABI section (token, name or version).
constexpr size_t max_abi_line = 512;

caf::error refuse(std::string reason) {
  return caf::make_error(errc::invalid_argument, std::move(reason));
}

/// `text` made safe to embed in a message: printable ASCII only, truncated.
std::string quoted(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, max_quoted))
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (text.size() > max_quoted)
    out += "...";
  return out;
}

const char* machine_name(uint16_t machine) {
  switch (machine) {
    case EM_X86_64:
      return "x86-64";
    case EM_AARCH64:
      return "aarch64";
    case EM_386:
      return "i386";
    case EM_ARM:
      return "arm";
    case EM_RISCV:
      return "riscv";
    case EM_PPC64:
      return "ppc64";
    case EM_S390:
      return "s390";
    default:
      return nullptr;
  }
}

std::string describe_machine(uint16_t machine) {
  auto name = machine_name(machine);
  return name != nullptr ? std::string{name} : "ELF machine " + std::to_string(machine);
}

/// A bounds-checked view of the untrusted file.
class elf_view {
public:
  explicit elf_view(std::string_view bytes) : bytes_(bytes) {
    // nop
  }

  size_t size() const {
    return bytes_.size();
  }

  /// True when [offset, offset + length) lies inside the file (overflow-safe).
  bool contains(uint64_t offset, uint64_t length) const {
    return offset <= bytes_.size() && length <= bytes_.size() - offset;
  }

  /// Copies a T from `offset`; false when it does not fit.
  template <class T>
  bool read(uint64_t offset, T& out) const {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!contains(offset, sizeof(T)))
      return false;
    std::memcpy(&out, bytes_.data() + offset, sizeof(T));
    return true;
  }

  /// The bytes [offset, offset + length); call only after contains().
  std::string_view slice(uint64_t offset, uint64_t length) const {
    return bytes_.substr(static_cast<size_t>(offset), static_cast<size_t>(length));
  }

private:
  std::string_view bytes_;
};

/// A string table (SHT_STRTAB section).
class string_table {
public:
  string_table() = default;

  explicit string_table(std::string_view bytes) : bytes_(bytes) {
    // nop
  }

  /// The NUL-terminated string at `offset`; false when the offset or the
  /// terminator lies outside the table.
  bool get(uint64_t offset, std::string_view& out) const {
    if (offset >= bytes_.size())
      return false;
    auto rest = bytes_.substr(static_cast<size_t>(offset));
    auto end = rest.find('\0');
    if (end == std::string_view::npos)
      return false;
    out = rest.substr(0, end);
    return true;
  }

private:
  std::string_view bytes_;
};

/// The parsed section header table.
struct sections {
  elf_view file;
  uint64_t offset = 0; ///< e_shoff
  uint64_t count = 0;  ///< number of section headers
  uint64_t names_index = 0; ///< index of the section name table

  bool header(uint64_t index, Elf64_Shdr& out) const {
    // count * sizeof(Elf64_Shdr) was bounds-checked when the table was read.
    return index < count && file.read(offset + index * sizeof(Elf64_Shdr), out);
  }

  /// The content of a section that occupies file bytes; false when it has none
  /// or when it does not lie inside the file.
  bool content(const Elf64_Shdr& sh, std::string_view& out) const {
    if (sh.sh_type == SHT_NOBITS || !file.contains(sh.sh_offset, sh.sh_size))
      return false;
    out = file.slice(sh.sh_offset, sh.sh_size);
    return true;
  }

  bool strings(uint64_t index, string_table& out) const {
    Elf64_Shdr sh;
    std::string_view bytes;
    if (!header(index, sh) || sh.sh_type != SHT_STRTAB || !content(sh, bytes))
      return false;
    out = string_table{bytes};
    return true;
  }
};

/// Checks the ELF header and reads the section header table.
caf::expected<sections> read_sections(std::string_view bytes) {
  elf_view file{bytes};
  Elf64_Ehdr eh;
  if (bytes.size() < SELFMAG || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0)
    return refuse("not an ELF file (a module is a shared library built with HOTSWAP_MODULE)");
  if (!file.read(0, eh))
    return refuse("truncated ELF file (the ELF header is incomplete)");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64)
    return refuse("not a 64-bit ELF file (build the module for this runtime's machine, "
                  + describe_machine(HOTSWAP_ELF_MACHINE) + ")");
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB)
    return refuse("not a little-endian ELF file");
  if (eh.e_machine != HOTSWAP_ELF_MACHINE)
    return refuse("built for another machine: " + describe_machine(eh.e_machine)
                  + " (this runtime: " + describe_machine(HOTSWAP_ELF_MACHINE) + ")");
  if (eh.e_type != ET_DYN)
    return refuse(eh.e_type == ET_EXEC ? "an executable, not a shared library (link with -shared)"
                  : eh.e_type == ET_REL
                    ? "an object file, not a shared library (link with -shared)"
                    : "not a shared library (ELF type " + std::to_string(eh.e_type) + ")");
  if (eh.e_shoff == 0)
    return refuse("no ELF section headers (the file is truncated or was stripped of them)");
  if (eh.e_shentsize != sizeof(Elf64_Shdr))
    return refuse("malformed ELF file (section header size " + std::to_string(eh.e_shentsize)
                  + ")");
  sections result{file, eh.e_shoff, eh.e_shnum, eh.e_shstrndx};
  // Extended numbering: more than 0xff00 sections keep their count in
  // section 0's sh_size and the name table index in its sh_link.
  if (eh.e_shnum == 0 || eh.e_shstrndx == SHN_XINDEX) {
    Elf64_Shdr first;
    if (!file.read(eh.e_shoff, first))
      return refuse("truncated ELF file (section headers lie beyond the end of the file)");
    if (eh.e_shnum == 0)
      result.count = first.sh_size;
    if (eh.e_shstrndx == SHN_XINDEX)
      result.names_index = first.sh_link;
  }
  if (result.count == 0)
    return refuse("no ELF section headers (the file is truncated or was stripped of them)");
  if (result.count > file.size() / sizeof(Elf64_Shdr)
      || !file.contains(result.offset, result.count * sizeof(Elf64_Shdr)))
    return refuse("truncated ELF file (section headers lie beyond the end of the file)");
  string_table names;
  if (result.names_index == SHN_UNDEF || !result.strings(result.names_index, names))
    return refuse("malformed ELF file (no valid section name table)");
  return result;
}

/// The header of the first section named `wanted`; false when there is none.
bool find_section(const sections& secs, std::string_view wanted, Elf64_Shdr& out) {
  string_table names;
  if (!secs.strings(secs.names_index, names))
    return false;
  for (uint64_t i = 0; i < secs.count; ++i) {
    Elf64_Shdr sh;
    std::string_view name;
    if (secs.header(i, sh) && names.get(sh.sh_name, name) && name == wanted) {
      out = sh;
      return true;
    }
  }
  return false;
}

bool printable(std::string_view line) {
  for (char c : line)
    if (c < 0x20 || c >= 0x7f)
      return false;
  return true;
}

/// Parses "TOKEN\nNAME\nVERSION" (the section content up to its first NUL).
caf::expected<module_file_info> parse_abi_section(std::string_view content) {
  auto nul = content.find('\0');
  if (nul != std::string_view::npos)
    content = content.substr(0, nul);
  auto malformed = [] {
    return refuse(std::string{"malformed "} + sdk::abi_section
                  + " section (expected \"ABI-TOKEN\\nNAME\\nVERSION\" as written by "
                    "HOTSWAP_MODULE)");
  };
  auto first = content.find('\n');
  if (first == std::string_view::npos)
    return malformed();
  auto second = content.find('\n', first + 1);
  if (second == std::string_view::npos || content.find('\n', second + 1) != std::string_view::npos)
    return malformed();
  module_file_info info;
  auto token = content.substr(0, first);
  auto name = content.substr(first + 1, second - first - 1);
  auto version = content.substr(second + 1);
  for (auto line : {token, name, version})
    if (line.empty() || line.size() > max_abi_line || !printable(line))
      return malformed();
  info.abi_token = std::string{token};
  info.name = std::string{name};
  info.version = std::string{version};
  return info;
}

/// Looks for a defined, global or weak function `hotswap_module_v1` in the
/// dynamic symbol table (what dlsym would find).
caf::error find_entry_point(const sections& secs) {
  std::string_view wanted{sdk::entry_symbol};
  auto missing = [&](std::string why) {
    return refuse("no " + std::string{wanted} + " entry point (" + why
                  + "; declare the module with HOTSWAP_MODULE)");
  };
  bool found_dynsym = false;
  std::string problem = "the symbol is not exported";
  for (uint64_t i = 0; i < secs.count; ++i) {
    Elf64_Shdr sh;
    if (!secs.header(i, sh) || sh.sh_type != SHT_DYNSYM)
      continue;
    found_dynsym = true;
    std::string_view table;
    string_table names;
    if (sh.sh_entsize != sizeof(Elf64_Sym) || !secs.content(sh, table)
        || !secs.strings(sh.sh_link, names))
      return refuse("malformed ELF file (invalid dynamic symbol table)");
    auto n = table.size() / sizeof(Elf64_Sym);
    for (size_t k = 0; k < n; ++k) {
      Elf64_Sym sym;
      std::memcpy(&sym, table.data() + k * sizeof(Elf64_Sym), sizeof(Elf64_Sym));
      std::string_view name;
      if (!names.get(sym.st_name, name) || name != wanted)
        continue;
      auto bind = ELF64_ST_BIND(sym.st_info);
      auto type = ELF64_ST_TYPE(sym.st_info);
      if (sym.st_shndx == SHN_UNDEF)
        problem = "the symbol is only referenced, not defined";
      else if (type != STT_FUNC)
        problem = "the symbol is not a function";
      else if (bind != STB_GLOBAL && bind != STB_WEAK)
        problem = "the symbol is not global";
      else
        return caf::none;
    }
  }
  if (!found_dynsym)
    return missing("the file has no dynamic symbol table");
  return missing(problem);
}

} // namespace

const char* runtime_abi_token() {
  return HOTSWAP_ABI_TOKEN;
}

caf::expected<module_file_info> inspect_module_file(std::string_view bytes) {
  try {
    auto secs = read_sections(bytes);
    if (!secs)
      return std::move(secs.error());
    Elf64_Shdr abi;
    if (!find_section(*secs, sdk::abi_section, abi))
      return refuse(std::string{"not a hotswap module: no "} + sdk::abi_section
                    + " section (declare the module with HOTSWAP_MODULE)");
    std::string_view content;
    if (!secs->content(abi, content))
      return refuse(std::string{"malformed ELF file ("} + sdk::abi_section
                    + " section lies beyond the end of the file)");
    auto info = parse_abi_section(content);
    if (!info)
      return info;
    if (info->abi_token != runtime_abi_token())
      return refuse("built for another ABI: " + quoted(info->abi_token) + " (this runtime: "
                    + runtime_abi_token() + ")");
    if (auto err = find_entry_point(*secs))
      return err;
    return info;
  } catch (const std::exception& e) {
    // Only allocation can throw here.
    return caf::make_error(errc::internal, std::string{"inspecting a module file: "} + e.what());
  }
}

} // namespace hotswap
