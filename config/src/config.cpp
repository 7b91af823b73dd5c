// Loading and validating the node configuration.
//
// One reader walks the TOML tree section by section. Every `read_*` call
// names one key: it marks the key as known, checks its type and range, and
// stores the value. Keys left unmarked when a section is finished are
// reported as unknown. The same readers run once over an empty tree in
// "schema" mode to learn every key name and its kind; that list is what maps
// HOTSWAP_<SECTION>_<KEY> environment variables onto keys, so the file and the
// environment can never disagree about which keys exist.
//
// Environment overrides are merged into the parsed tree before validation, so
// a value from the environment is checked exactly like one from the file; a
// map from key path to variable name lets every error say where the value
// came from. All errors are collected; a config is returned only when there
// are none.
//
// Relative paths (node.data_dir, the sqlite path in store.url, http.tls_*,
// auth.trusted_module_keys) are kept as written: they are relative to the
// working directory of the process, and the file checks below resolve them
// the same way.
//
// [modules.<name>] tables are free-form for the module: their `settings`
// table is not validated key by key but stored as JSON text. They have no
// environment overrides (HOTSWAP_MODULES_* is not a config variable).

#include "hotswap/config/config.hpp"

#include <toml++/toml.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

extern char** environ;

namespace hotswap::config {

std::string config_error::to_string() const {
  std::string out = file;
  if (!key.empty()) {
    out += ": ";
    out += key;
  }
  out += ": ";
  out += reason;
  return out;
}

const std::vector<std::string>& environment_names() {
  static const std::vector<std::string> names{"Development", "QA", "Staging", "Production"};
  return names;
}

environment_section default_environment(const std::string& name) {
  environment_section env;
  if (name == "Development") {
    env.strategy = "Direct";
    env.approval = "never";
    env.separation_of_duties = false;
    env.require_signed_modules = false;
  } else if (name == "QA") {
    env.strategy = "Rolling";
    env.approval = "never";
    env.separation_of_duties = false;
    env.require_signed_modules = false;
  } else if (name == "Staging") {
    env.strategy = "BlueGreen";
    env.approval = "on_request";
    env.separation_of_duties = false;
    env.require_signed_modules = true;
  } else if (name == "Production") {
    env.strategy = "Canary";
    env.approval = "always";
    env.separation_of_duties = true;
    env.require_signed_modules = true;
  }
  // Any other name: the struct defaults (empty strategy and approval), so a
  // caller that passes an unknown name sees it rather than a guessed policy.
  return env;
}

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0')
    return "localhost";
  return buf;
}

} // namespace

node_config default_config() {
  node_config cfg;
  cfg.node.id = host_name();
  for (const auto& name : environment_names())
    cfg.environments.emplace(name, default_environment(name));
  return cfg;
}

std::vector<std::string> process_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    out.emplace_back(*e);
  return out;
}

namespace {

// -- small helpers ------------------------------------------------------------

const std::vector<std::string> section_names{
  "node",   "http",     "store",    "cluster", "auth",    "environments", "deployments",
  "rate_limits", "events", "messages", "entities", "worker", "modules", "logging"};

/// Sections whose keys have no HOTSWAP_<SECTION>_<KEY> variables.
const std::set<std::string> sections_without_env{"modules"};

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

/// A key as it appears in a dotted path: bare when it can be, else quoted.
std::string path_key(std::string_view key) {
  bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (bare)
    return std::string(key);
  std::string out = "\"";
  for (char c : key) {
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

std::string join_path(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? path_key(key) : prefix + "." + path_key(key);
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  out += s;
  out += '"';
  return out;
}

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    default:
      return "nothing";
  }
}

std::string one_of(const std::vector<std::string>& allowed) {
  std::string out;
  for (size_t i = 0; i < allowed.size(); ++i) {
    if (i > 0)
      out += i + 1 == allowed.size() ? " or " : ", ";
    out += quoted(allowed[i]);
  }
  return out;
}

bool is_ipv4(const std::string& s) {
  in_addr a{};
  return ::inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool is_ipv6(const std::string& s) {
  in6_addr a{};
  return ::inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

bool is_hostname(const std::string& s) {
  if (s.empty() || s.size() > 253)
    return false;
  size_t start = 0;
  while (start <= s.size()) {
    auto dot = s.find('.', start);
    auto label = s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    for (char c : label)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-')
        return false;
    if (dot == std::string::npos)
      break;
    start = dot + 1;
  }
  return true;
}

/// Checks "host:port" (IPv4 literal, host name or [IPv6]); port 0-65535.
std::optional<std::string> check_listen(const std::string& s) {
  std::string host;
  std::string port;
  if (starts_with(s, "[")) {
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return "expected \"[ipv6]:port\", got " + quoted(s);
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
    if (!is_ipv6(host))
      return quoted(host) + " is not a valid IPv6 address";
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos)
      return "expected \"host:port\", got " + quoted(s);
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.empty())
      return "the host is missing in " + quoted(s) + " (use 0.0.0.0 for every interface)";
    if (host.find(':') != std::string::npos)
      return "an IPv6 address needs brackets, e.g. \"[::1]:8080\", got " + quoted(s);
    bool numeric = std::all_of(host.begin(), host.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
    });
    if (numeric) {
      if (!is_ipv4(host))
        return quoted(host) + " is not a valid IPv4 address";
    } else if (!is_hostname(host)) {
      return quoted(host) + " is not a valid host name";
    }
  }
  if (port.empty() || port.size() > 5
      || !std::all_of(port.begin(), port.end(),
                      [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return "the port must be a number from 0 to 65535, got " + quoted(port);
  if (std::stoul(port) > 65535)
    return "the port must be a number from 0 to 65535, got " + quoted(port);
  return std::nullopt;
}

/// Empty when `path` names a readable regular file, else the reason.
std::optional<std::string> check_readable_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return quoted(path) + ": cannot open: " + std::strerror(errno);
  struct stat st {};
  std::optional<std::string> result;
  if (::fstat(fd, &st) != 0)
    result = quoted(path) + ": cannot stat: " + std::strerror(errno);
  else if (!S_ISREG(st.st_mode))
    result = quoted(path) + ": not a regular file";
  ::close(fd);
  return result;
}

/// Reads a whole file; on failure returns the reason in `err`.
bool read_file(const std::string& path, std::string& out, std::string& err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = std::string("cannot open: ") + std::strerror(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    err = std::string("cannot open: ") + std::strerror(EISDIR);
    return false;
  }
  char buf[8192];
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      err = std::string("cannot read: ") + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return true;
}

// -- cluster TLS ---------------------------------------------------------------

/// The reasons of OpenSSL's error queue (emptied), "; "-separated.
std::string openssl_errors() {
  std::string out;
  while (auto code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(code);
    out += (out.empty() ? "" : "; ") + std::string(reason != nullptr ? reason : buf);
  }
  return out;
}

std::string with_openssl_reason(std::string msg) {
  auto why = openssl_errors();
  if (!why.empty())
    msg += " (" + why + ")";
  return msg;
}

/// Never asks for a passphrase (the default callback would prompt on the
/// terminal): an encrypted key fails to load.
int no_passphrase(char*, int, int, void*) {
  return 0;
}

/// Loads the three PEM files the way caf::openssl does at run time and
/// verifies the certificate against the CA. Returns (key, reason) pairs.
std::vector<std::pair<std::string, std::string>>
check_cluster_tls(const std::string& cert, const std::string& key, const std::string& ca) {
  std::vector<std::pair<std::string, std::string>> errors;
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{SSL_CTX_new(TLS_method()),
                                                        &SSL_CTX_free};
  if (!ctx) {
    errors.emplace_back("cluster.tls_cert",
                        with_openssl_reason("cannot create an OpenSSL context"));
    return errors;
  }
  SSL_CTX_set_default_passwd_cb(ctx.get(), no_passphrase);
  // caf::openssl loads the certificate as a chain file (leaf first, then
  // any intermediates).
  bool cert_ok = SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) == 1;
  if (!cert_ok)
    errors.emplace_back("cluster.tls_cert",
                        with_openssl_reason("cannot read a PEM certificate from " + quoted(cert)));
  ERR_clear_error();
  // Taken now: loading a key of another type switches the context's
  // current certificate slot.
  X509* leaf = cert_ok ? SSL_CTX_get0_certificate(ctx.get()) : nullptr;
  STACK_OF(X509)* chain = nullptr;
  if (cert_ok)
    SSL_CTX_get0_chain_certs(ctx.get(), &chain);
  bool key_ok = SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) == 1;
  if (!key_ok) {
    // A key that loads but belongs to another certificate also fails here
    // (OpenSSL compares it with the certificate already in the context).
    auto why = openssl_errors();
    if (cert_ok && why.find("values mismatch") != std::string::npos)
      errors.emplace_back("cluster.tls_key", "does not match cluster.tls_cert (" + why + ")");
    else
      errors.emplace_back("cluster.tls_key",
                          "cannot read an unencrypted PEM private key from " + quoted(key)
                            + (why.empty() ? "" : " (" + why + ")"));
  } else if (cert_ok && SSL_CTX_check_private_key(ctx.get()) != 1) {
    errors.emplace_back("cluster.tls_key",
                        with_openssl_reason("does not match cluster.tls_cert"));
  }
  ERR_clear_error();
  bool ca_ok = SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) == 1;
  if (!ca_ok)
    errors.emplace_back("cluster.tls_ca", with_openssl_reason("cannot read PEM CA certificates from "
                                                              + quoted(ca)));
  ERR_clear_error();
  if (leaf == nullptr || !ca_ok)
    return errors;
  // The peers verify each other as TLS client and as TLS server.
  for (const char* role : {"ssl_server", "ssl_client"}) {
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> vctx{X509_STORE_CTX_new(),
                                                                         &X509_STORE_CTX_free};
    if (!vctx
        || X509_STORE_CTX_init(vctx.get(), SSL_CTX_get_cert_store(ctx.get()), leaf, chain) != 1
        || X509_STORE_CTX_set_default(vctx.get(), role) != 1) {
      errors.emplace_back("cluster.tls_cert",
                          with_openssl_reason("cannot verify against cluster.tls_ca"));
      break;
    }
    if (X509_verify_cert(vctx.get()) == 1)
      continue;
    int code = X509_STORE_CTX_get_error(vctx.get());
    std::string why = X509_verify_cert_error_string(code);
    switch (code) {
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        errors.emplace_back("cluster.tls_cert", "not signed by cluster.tls_ca (" + why + ")");
        break;
      case X509_V_ERR_INVALID_PURPOSE:
        errors.emplace_back("cluster.tls_cert",
                            "not usable for TLS " + std::string(role + 4)
                              + " authentication, which every cluster node does (" + why + ")");
        break;
      default:
        errors.emplace_back("cluster.tls_cert",
                            "does not verify against cluster.tls_ca (" + why + ")");
    }
    break;
  }
  ERR_clear_error();
  return errors;
}

struct parse_outcome {
  std::optional<toml::table> table;
  std::string description;
  toml::source_position where{};
};

parse_outcome parse_toml(std::string_view doc, std::string_view source) {
  parse_outcome out;
#if TOML_EXCEPTIONS
  try {
    out.table = toml::parse(doc, source);
  } catch (const toml::parse_error& e) {
    out.description = std::string(e.description());
    out.where = e.source().begin;
  }
#else
  auto r = toml::parse(doc, source);
  if (r) {
    out.table = std::move(r).table();
  } else {
    out.description = std::string(r.error().description());
    out.where = r.error().source().begin;
  }
#endif
  return out;
}

// -- the reader ---------------------------------------------------------------

/// What a key holds; drives environment-variable parsing.
enum class kind { string, boolean, integer, string_array, integer_array, table };

using string_check = std::function<std::optional<std::string>(const std::string&)>;

class loader;

/// Reads the keys of one table. Constructed with `t == nullptr` when the
/// table is absent (every read is then a no-op besides schema recording).
class section_reader {
public:
  section_reader(loader& l, const toml::table* t, std::string path)
    : l_(l), t_(t), path_(std::move(path)) {
  }

  void read_string(std::string_view key, std::string& out, const string_check& check = {});
  void read_bool(std::string_view key, bool& out);
  template <class T>
  void read_int(std::string_view key, T& out, uint64_t min = 0,
                uint64_t max = std::numeric_limits<T>::max());
  void read_strings(std::string_view key, std::vector<std::string>& out,
                    const string_check& each = {},
                    const std::function<std::optional<std::string>(
                      const std::vector<std::string>&)>& all = {});
  template <class T>
  void read_ints(std::string_view key, std::vector<T>& out, uint64_t min, uint64_t max,
                 const std::function<std::optional<std::string>(const std::vector<T>&)>& all
                 = {});
  /// Marks `key` as a sub-table; returns it when present and a table.
  const toml::table* sub_table(std::string_view key);

  /// Reports every key that no read_* call named.
  void finish();

  const std::string& path() const {
    return path_;
  }

private:
  /// Marks the key known, records it in schema mode, returns the node if set.
  const toml::node* take(std::string_view key, kind k);
  template <class T>
  std::optional<T> to_int(const std::string& key, const toml::node& n, uint64_t min,
                          uint64_t max);

  loader& l_;
  const toml::table* t_;
  std::string path_;
  std::set<std::string, std::less<>> known_;
};

class loader {
public:
  explicit loader(std::string file) : file_(std::move(file)) {
  }

  // -- schema -----------------------------------------------------------------

  /// key path -> kind, filled by a pass over an empty tree.
  std::map<std::string, std::map<std::string, kind>> schema; // section path -> key -> kind
  bool schema_mode = false;

  /// Names of the environment variables that are set to a non-empty value
  /// (the topic keys named by messages.topics.*.hmac_key_env must be).
  std::set<std::string> env_set;

  // -- errors -----------------------------------------------------------------

  /// Dotted key path -> the environment variable that set it.
  std::map<std::string, std::string> origin;

  void fail(const std::string& key, std::string reason) {
    bad_.insert(key);
    for (const auto& [path, var] : origin) {
      if (key == path || starts_with(key, path + ".") || starts_with(key, path + "[")) {
        if (starts_with(reason, "expected an array"))
          reason += " (write the value as a TOML array, e.g. [\"a\", \"b\"] or [1, 2])";
        errors_.push_back({"environment", key + " (" + var + ")", std::move(reason)});
        return;
      }
    }
    errors_.push_back({file_, key, std::move(reason)});
  }

  /// An error about several keys: attributed to the first one that came from
  /// the environment, else to the first one.
  void fail_any(const std::vector<std::string>& keys, std::string reason) {
    for (const auto& k : keys)
      if (from_env(k)) {
        fail(k, std::move(reason));
        return;
      }
    fail(keys.front(), std::move(reason));
  }

  bool from_env(const std::string& key) const {
    return origin.count(key) > 0;
  }

  /// True when any of `keys` already has an error (skip cross-key checks).
  bool any_bad(const std::vector<std::string>& keys) const {
    return std::any_of(keys.begin(), keys.end(), [this](const std::string& k) {
      return bad_.count(k) > 0;
    });
  }

  void file_error(std::string file, std::string key, std::string reason) {
    errors_.push_back({std::move(file), std::move(key), std::move(reason)});
  }

  std::vector<config_error>& errors() {
    return errors_;
  }

  // -- passes -----------------------------------------------------------------

  void read_all(const toml::table& root, node_config& cfg);
  void apply_env(toml::table& root, const std::vector<std::string>& env);

private:
  void read_node(section_reader& r, node_section& s);
  void read_http(section_reader& r, http_section& s);
  void read_store(section_reader& r, store_section& s);
  void read_cluster(section_reader& r, cluster_section& s);
  void read_auth(section_reader& r, auth_section& s);
  void read_environment(section_reader& r, environment_section& s);
  void read_deployments(section_reader& r, deployments_section& s);
  void read_rate_limits(section_reader& r, rate_limits_section& s);
  void read_events(section_reader& r, events_section& s);
  void read_messages(section_reader& r, messages_section& s);
  void read_entities(section_reader& r, entities_section& s);
  void read_worker(section_reader& r, worker_section& s);
  void read_modules(const toml::table* t, std::map<std::string, module_section>& out);
  void read_logging(section_reader& r, logging_section& s);
  void cross_checks(const node_config& cfg);

  std::string file_;
  std::vector<config_error> errors_;
  std::set<std::string> bad_;
};

const toml::node* section_reader::take(std::string_view key, kind k) {
  known_.emplace(key);
  if (l_.schema_mode)
    l_.schema[path_][std::string(key)] = k;
  return t_ != nullptr ? t_->get(key) : nullptr;
}

void section_reader::read_string(std::string_view key, std::string& out,
                                 const string_check& check) {
  auto* n = take(key, kind::string);
  if (n == nullptr)
    return;
  auto full = join_path(path_, key);
  auto* v = n->as_string();
  if (v == nullptr) {
    l_.fail(full, "expected a string, got " + type_name(*n));
    return;
  }
  if (check) {
    if (auto why = check(v->get())) {
      l_.fail(full, std::move(*why));
      return;
    }
  }
  out = v->get();
}

void section_reader::read_bool(std::string_view key, bool& out) {
  auto* n = take(key, kind::boolean);
  if (n == nullptr)
    return;
  auto* v = n->as_boolean();
  if (v == nullptr) {
    l_.fail(join_path(path_, key), "expected a boolean (true or false), got " + type_name(*n));
    return;
  }
  out = v->get();
}

std::string range_reason(uint64_t min, uint64_t max, uint64_t type_max) {
  if (max == type_max)
    return "must be at least " + std::to_string(min);
  if (min == 0)
    return "must be at most " + std::to_string(max);
  return "must be between " + std::to_string(min) + " and " + std::to_string(max);
}

template <class T>
std::optional<T> section_reader::to_int(const std::string& key, const toml::node& n,
                                        uint64_t min, uint64_t max) {
  auto* v = n.as_integer();
  if (v == nullptr) {
    l_.fail(key, "expected an integer, got " + type_name(n));
    return std::nullopt;
  }
  int64_t x = v->get();
  if (x < 0) {
    l_.fail(key, "must not be negative, got " + std::to_string(x));
    return std::nullopt;
  }
  auto u = static_cast<uint64_t>(x);
  constexpr uint64_t type_max = std::numeric_limits<T>::max();
  if (u > type_max) {
    l_.fail(key, "out of range: " + std::to_string(u) + " does not fit a "
                   + std::to_string(sizeof(T) * 8) + "-bit unsigned integer (maximum "
                   + std::to_string(type_max) + ")");
    return std::nullopt;
  }
  if (u < min || u > max) {
    l_.fail(key, range_reason(min, max, type_max) + ", got " + std::to_string(u));
    return std::nullopt;
  }
  return static_cast<T>(u);
}

template <class T>
void section_reader::read_int(std::string_view key, T& out, uint64_t min, uint64_t max) {
  auto* n = take(key, kind::integer);
  if (n == nullptr)
    return;
  if (auto x = to_int<T>(join_path(path_, key), *n, min, max))
    out = *x;
}

void section_reader::read_strings(
  std::string_view key, std::vector<std::string>& out, const string_check& each,
  const std::function<std::optional<std::string>(const std::vector<std::string>&)>& all) {
  auto* n = take(key, kind::string_array);
  if (n == nullptr)
    return;
  auto full = join_path(path_, key);
  auto* arr = n->as_array();
  if (arr == nullptr) {
    l_.fail(full, "expected an array of strings, got " + type_name(*n));
    return;
  }
  std::vector<std::string> result;
  bool ok = true;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto elem = full + "[" + std::to_string(i) + "]";
    auto* s = (*arr)[i].as_string();
    if (s == nullptr) {
      l_.fail(elem, "expected a string, got " + type_name((*arr)[i]));
      ok = false;
      continue;
    }
    if (each) {
      if (auto why = each(s->get())) {
        l_.fail(elem, std::move(*why));
        ok = false;
        continue;
      }
    }
    result.push_back(s->get());
  }
  if (!ok)
    return;
  if (all) {
    if (auto why = all(result)) {
      l_.fail(full, std::move(*why));
      return;
    }
  }
  out = std::move(result);
}

template <class T>
void section_reader::read_ints(
  std::string_view key, std::vector<T>& out, uint64_t min, uint64_t max,
  const std::function<std::optional<std::string>(const std::vector<T>&)>& all) {
  auto* n = take(key, kind::integer_array);
  if (n == nullptr)
    return;
  auto full = join_path(path_, key);
  auto* arr = n->as_array();
  if (arr == nullptr) {
    l_.fail(full, "expected an array of integers, got " + type_name(*n));
    return;
  }
  std::vector<T> result;
  bool ok = true;
  for (size_t i = 0; i < arr->size(); ++i) {
    if (auto x = to_int<T>(full + "[" + std::to_string(i) + "]", (*arr)[i], min, max))
      result.push_back(*x);
    else
      ok = false;
  }
  if (!ok)
    return;
  if (all) {
    if (auto why = all(result)) {
      l_.fail(full, std::move(*why));
      return;
    }
  }
  out = std::move(result);
}

const toml::table* section_reader::sub_table(std::string_view key) {
  auto* n = take(key, kind::table);
  if (n == nullptr)
    return nullptr;
  auto* t = n->as_table();
  if (t == nullptr)
    l_.fail(join_path(path_, key), "expected a table, got " + type_name(*n));
  return t;
}

void section_reader::finish() {
  if (t_ == nullptr)
    return;
  for (const auto& [k, v] : *t_)
    if (known_.count(k.str()) == 0)
      l_.fail(join_path(path_, k.str()), "unknown key");
}

// -- value checks -------------------------------------------------------------

string_check not_empty() {
  return [](const std::string& s) -> std::optional<std::string> {
    if (s.empty())
      return "must not be empty";
    return std::nullopt;
  };
}

string_check one_of_check(std::vector<std::string> allowed) {
  return [allowed = std::move(allowed)](const std::string& s) -> std::optional<std::string> {
    if (std::find(allowed.begin(), allowed.end(), s) != allowed.end())
      return std::nullopt;
    return "must be one of " + one_of(allowed) + ", got " + quoted(s);
  };
}

std::function<std::optional<std::string>(const std::vector<std::string>&)>
no_duplicates(bool allow_empty) {
  return [allow_empty](const std::vector<std::string>& xs) -> std::optional<std::string> {
    if (!allow_empty && xs.empty())
      return "must not be empty";
    std::set<std::string> seen;
    for (const auto& x : xs)
      if (!seen.insert(x).second)
        return "lists " + quoted(x) + " more than once";
    return std::nullopt;
  };
}

// -- sections -----------------------------------------------------------------

void loader::read_node(section_reader& r, node_section& s) {
  r.read_string("id", s.id, [](const std::string& id) -> std::optional<std::string> {
    if (id.empty())
      return "must not be empty (leave the key out to use the host name)";
    if (id.size() > 253)
      return "must be at most 253 characters";
    for (char c : id)
      if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
        return "must not contain white space or control characters";
    return std::nullopt;
  });
  r.read_strings("roles", s.roles, one_of_check({"api", "control", "worker"}),
                 no_duplicates(false));
  r.read_strings("environments", s.environments, one_of_check(environment_names()),
                 no_duplicates(true));
  r.read_string("data_dir", s.data_dir, not_empty());
  r.read_bool("dev_mode", s.dev_mode);
}

void loader::read_http(section_reader& r, http_section& s) {
  r.read_string("listen", s.listen, check_listen);
  r.read_int("max_body_bytes", s.max_body_bytes, 1024);
  r.read_int("max_module_bytes", s.max_module_bytes, 1024);
  r.read_string("tls_cert", s.tls_cert);
  r.read_string("tls_key", s.tls_key);
  r.read_int("io_threads", s.io_threads, 1, 64);
  r.read_int("drain_timeout_ms", s.drain_timeout_ms, 0, 300000);
  r.read_int("request_timeout_ms", s.request_timeout_ms, 1);
}

void loader::read_store(section_reader& r, store_section& s) {
  r.read_string("url", s.url, [](const std::string& url) -> std::optional<std::string> {
    if (starts_with(url, "sqlite://")) {
      if (url.size() == std::string_view("sqlite://").size())
        return "the sqlite path is missing, e.g. \"sqlite://./data/hotswap.db\"";
      return std::nullopt;
    }
    if (starts_with(url, "postgresql://") || starts_with(url, "postgres://"))
      return std::nullopt;
    return "must start with \"sqlite://\", \"postgresql://\" or \"postgres://\", got "
           + quoted(url);
  });
  r.read_int("pool_size", s.pool_size, 1, 64);
}

void loader::read_cluster(section_reader& r, cluster_section& s) {
  r.read_string("listen", s.listen, check_listen);
  r.read_string("registry", s.registry, [](const std::string& reg) -> std::optional<std::string> {
    if (reg == "local")
      return std::nullopt;
    if (starts_with(reg, "rediss://"))
      return "TLS to Redis is not supported (hiredis 0.14 has no TLS); use redis:// on a "
             "trusted network";
    auto expected = "must be \"local\" or \"redis://host:port[/db]\", got " + quoted(reg);
    if (!starts_with(reg, "redis://"))
      return expected;
    // The same rules as hotswap::parse_redis_url (cluster), which this lower
    // layer cannot call.
    auto digits = [](const std::string& x, size_t max_len) {
      return !x.empty() && x.size() <= max_len && std::all_of(x.begin(), x.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      });
    };
    auto rest = reg.substr(std::string_view{"redis://"}.size());
    auto slash = rest.find('/');
    auto authority = rest.substr(0, slash);
    if (slash != std::string::npos) {
      auto db = rest.substr(slash + 1);
      if (!digits(db, 2) || std::stoul(db) > 15)
        return expected + " (the database must be a number from 0 to 15)";
    }
    std::string host;
    std::string port;
    if (starts_with(authority, "[")) {
      auto close = authority.find(']');
      if (close == std::string::npos || close + 1 >= authority.size()
          || authority[close + 1] != ':')
        return expected;
      host = authority.substr(1, close - 1);
      port = authority.substr(close + 2);
      if (!is_ipv6(host))
        return expected + " (" + quoted(host) + " is not a valid IPv6 address)";
    } else {
      auto colon = authority.rfind(':');
      if (colon == std::string::npos)
        return expected + " (the port is missing)";
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (host.empty())
        return expected + " (the host is missing)";
      if (!is_ipv4(host) && !is_hostname(host))
        return expected + " (" + quoted(host) + " is not a valid host name or address)";
    }
    if (!digits(port, 5) || std::stoul(port) < 1 || std::stoul(port) > 65535)
      return expected + " (the port must be a number from 1 to 65535)";
    return std::nullopt;
  });
  r.read_string("key_prefix", s.key_prefix,
                [](const std::string& prefix) -> std::optional<std::string> {
                  if (prefix.empty())
                    return "must not be empty (it separates this cluster's Redis keys)";
                  if (prefix.size() > 64)
                    return "must be at most 64 characters, got "
                           + std::to_string(prefix.size());
                  bool spaced = std::any_of(prefix.begin(), prefix.end(), [](char c) {
                    return std::isspace(static_cast<unsigned char>(c))
                           || std::iscntrl(static_cast<unsigned char>(c));
                  });
                  if (spaced)
                    return "must not contain spaces or control characters, got "
                           + quoted(prefix);
                  return std::nullopt;
                });
  r.read_int("heartbeat_ms", s.heartbeat_ms, 1);
  r.read_int("node_ttl_ms", s.node_ttl_ms, 1);
  r.read_int("takeover_margin_ms", s.takeover_margin_ms, 0, 60000);
  r.read_int("rebalance_ms", s.rebalance_ms, 50, 60000);
  // Cluster TLS: each file, when set, must be readable; "all three or none"
  // and the certificate checks are cross-key rules (cross_checks).
  auto readable_if_set = [](const std::string& path) -> std::optional<std::string> {
    if (path.empty())
      return std::nullopt;
    return check_readable_file(path);
  };
  r.read_string("tls_cert", s.tls_cert, readable_if_set);
  r.read_string("tls_key", s.tls_key, readable_if_set);
  r.read_string("tls_ca", s.tls_ca, readable_if_set);
}

void loader::read_auth(section_reader& r, auth_section& s) {
  r.read_string("issuer", s.issuer, not_empty());
  r.read_string("audience", s.audience, not_empty());
  r.read_int("token_minutes", s.token_minutes, 1, 1440);
  r.read_strings("trusted_module_keys", s.trusted_module_keys,
                 [](const std::string& path) -> std::optional<std::string> {
                   if (path.empty())
                     return "must not be empty";
                   return check_readable_file(path);
                 });
  r.read_int("lockout_attempts", s.lockout_attempts, 1);
  r.read_int("lockout_minutes", s.lockout_minutes, 1);
  r.read_int("pbkdf2_iterations", s.pbkdf2_iterations, 600000);
  r.read_string("initial_admin_username", s.initial_admin_username, not_empty());
  r.read_string("initial_admin_password", s.initial_admin_password);
  r.read_string("initial_admin_email", s.initial_admin_email,
                [](const std::string& mail) -> std::optional<std::string> {
                  auto at = mail.find('@');
                  if (at == std::string::npos || at == 0 || at + 1 == mail.size())
                    return "must be an e-mail address, got " + quoted(mail);
                  return std::nullopt;
                });
}

void loader::read_environment(section_reader& r, environment_section& s) {
  r.read_string("strategy", s.strategy, one_of_check({"Direct", "Rolling", "BlueGreen", "Canary"}));
  r.read_string("approval", s.approval, one_of_check({"never", "on_request", "always"}));
  r.read_int("approval_timeout_seconds", s.approval_timeout_seconds, 1);
  r.read_bool("separation_of_duties", s.separation_of_duties);
  r.read_bool("require_signed_modules", s.require_signed_modules);
  r.read_int("rolling_batch_size", s.rolling_batch_size, 1);
  r.read_int("bluegreen_keep_seconds", s.bluegreen_keep_seconds);
  r.read_ints<uint32_t>("canary_steps", s.canary_steps, 1, 100,
                        [](const std::vector<uint32_t>& steps) -> std::optional<std::string> {
                          if (steps.empty())
                            return "must not be empty (the last step must be 100)";
                          for (size_t i = 1; i < steps.size(); ++i)
                            if (steps[i] <= steps[i - 1])
                              return "must be strictly increasing, but "
                                     + std::to_string(steps[i]) + " follows "
                                     + std::to_string(steps[i - 1]);
                          if (steps.back() != 100)
                            return "the last step must be 100, got "
                                   + std::to_string(steps.back());
                          return std::nullopt;
                        });
  r.read_int("step_seconds", s.step_seconds, 1);
  r.read_int("max_error_rate_increase_percent", s.max_error_rate_increase_percent);
  r.read_int("max_latency_increase_percent", s.max_latency_increase_percent);
  r.read_int("min_samples", s.min_samples, 1);
  r.read_string("inconclusive", s.inconclusive, one_of_check({"fail", "extend"}));
}

void loader::read_deployments(section_reader& r, deployments_section& s) {
  r.read_int("max_running_per_node", s.max_running_per_node, 1);
  r.read_int("queue_limit", s.queue_limit, 1);
  r.read_int("step_timeout_seconds", s.step_timeout_seconds, 1);
}

void loader::read_rate_limits(section_reader& r, rate_limits_section& s) {
  r.read_bool("enabled", s.enabled);
  // ">= 1 while enabled" is a cross-key rule, checked in cross_checks.
  r.read_int("global", s.global);
  r.read_int("deployments", s.deployments);
  r.read_int("clusters", s.clusters);
  r.read_int("approvals", s.approvals);
  r.read_int("login", s.login);
  r.read_strings("trusted_proxies", s.trusted_proxies,
                 [](const std::string& ip) -> std::optional<std::string> {
                   if (is_ipv4(ip) || is_ipv6(ip))
                     return std::nullopt;
                   return "must be an IP address, got " + quoted(ip);
                 });
}

void loader::read_events(section_reader& r, events_section& s) {
  r.read_int("retention_seconds", s.retention_seconds);
}

void loader::read_messages(section_reader& r, messages_section& s) {
  r.read_int("ack_deadline_seconds", s.ack_deadline_seconds, 1);
  r.read_int("max_attempts", s.max_attempts, 1);
  r.read_int("backoff_initial_ms", s.backoff_initial_ms);
  auto* topics = r.sub_table("topics");
  if (topics == nullptr)
    return;
  auto topics_path = join_path(r.path(), "topics");
  std::map<std::string, topic_section> result;
  for (const auto& [name, node] : *topics) {
    auto topic_path = join_path(topics_path, name.str());
    if (name.str().empty()) {
      fail(topic_path, "a topic name must not be empty");
      continue;
    }
    auto* t = node.as_table();
    if (t == nullptr) {
      fail(topic_path, "expected a table, got " + type_name(node));
      continue;
    }
    topic_section topic;
    section_reader tr(*this, t, topic_path);
    tr.read_string("hmac_key_env", topic.hmac_key_env,
                   [](const std::string& var) -> std::optional<std::string> {
                     if (var.empty())
                       return "must name the environment variable that holds the key";
                     bool ok = !std::isdigit(static_cast<unsigned char>(var[0]))
                               && std::all_of(var.begin(), var.end(), [](char c) {
                                    return std::isalnum(static_cast<unsigned char>(c))
                                           || c == '_';
                                  });
                     if (!ok)
                       return "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got "
                              + quoted(var);
                     return std::nullopt;
                   });
    if (t->get("hmac_key_env") == nullptr)
      fail(join_path(topic_path, "hmac_key_env"), "missing: a topic table must name the "
                                                  "environment variable that holds its key");
    else if (!schema_mode && !topic.hmac_key_env.empty()
             && !any_bad({join_path(topic_path, "hmac_key_env")})
             && env_set.count(topic.hmac_key_env) == 0)
      fail(join_path(topic_path, "hmac_key_env"),
           "the environment variable " + topic.hmac_key_env
             + " is not set (or empty): it must hold the topic's HMAC key");
    tr.finish();
    result[std::string(name.str())] = topic;
  }
  s.topics = std::move(result);
}

void loader::read_entities(section_reader& r, entities_section& s) {
  r.read_int("idle_passivate_seconds", s.idle_passivate_seconds, 1);
  r.read_int("restart_backoff_initial_ms", s.restart_backoff_initial_ms, 1);
  r.read_int("restart_backoff_max_ms", s.restart_backoff_max_ms, 1);
  r.read_int("restart_intensity", s.restart_intensity, 1);
  r.read_int("restart_period_seconds", s.restart_period_seconds, 1);
}

void loader::read_worker(section_reader& r, worker_section& s) {
  r.read_int("instances_per_version", s.instances_per_version, 1, 64);
  r.read_int("drain_timeout_ms", s.drain_timeout_ms, 100, 600000);
  r.read_int("metrics_window_seconds", s.metrics_window_seconds, 1, 3600);
  r.read_int("sample_interval_ms", s.sample_interval_ms, 100, 3600000);
  r.read_int("sample_retention", s.sample_retention, 1, 1000000);
}

/// Empty when `name` is a valid module name (^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$).
std::optional<std::string> check_module_name(std::string_view name) {
  const std::string rule = " (module names match ^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$)";
  if (name.size() < 3 || name.size() > 64)
    return "invalid module name: must be 3 to 64 characters long, got "
           + std::to_string(name.size()) + rule;
  for (size_t i = 0; i < name.size(); ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')
      continue;
    std::string why = "invalid module name: character " + std::to_string(i + 1) + " (";
    if (c >= 0x20 && c < 0x7f)
      why += quoted(std::string(1, static_cast<char>(c)));
    else
      why += "byte " + std::to_string(c);
    why += ") is not allowed, only a-z, 0-9 and \"-\"";
    if (c >= 'A' && c <= 'Z')
      why += " (names are lower case)";
    return why + rule;
  }
  if (name.front() == '-' || name.back() == '-')
    return "invalid module name: must start and end with a letter or digit, not \"-\"" + rule;
  return std::nullopt;
}

/// A table as JSON text, as compact as toml++'s json_formatter allows (no
/// indentation, no spaces around ':'; it always breaks lines). Dates and
/// times become strings, inf and nan the strings "Infinity", "-Infinity" and
/// "NaN"; integers are decimal whatever base the file used.
std::string to_json(const toml::table& t) {
  std::ostringstream out;
  out << toml::json_formatter(t, toml::format_flags::quote_dates_and_times
                                   | toml::format_flags::quote_infinities_and_nans
                                   | toml::format_flags::allow_unicode_strings
                                   | toml::format_flags::terse_key_value_pairs);
  return out.str();
}

void loader::read_modules(const toml::table* t, std::map<std::string, module_section>& out) {
  if (t == nullptr)
    return;
  std::map<std::string, module_section> result;
  for (const auto& [name, node] : *t) {
    auto module_path = join_path("modules", name.str());
    if (auto why = check_module_name(name.str())) {
      fail(module_path, std::move(*why));
      continue;
    }
    auto* mt = node.as_table();
    if (mt == nullptr) {
      fail(module_path, "expected a table, got " + type_name(node));
      continue;
    }
    module_section module;
    section_reader mr(*this, mt, module_path);
    if (auto* settings = mr.sub_table("settings"))
      module.settings_json = to_json(*settings);
    else if (mt->get("settings") == nullptr)
      fail(join_path(module_path, "settings"),
           "missing: a module table must have a settings table (write settings = {} for none)");
    mr.finish();
    result[std::string(name.str())] = std::move(module);
  }
  out = std::move(result);
}

void loader::read_logging(section_reader& r, logging_section& s) {
  r.read_string("level", s.level, one_of_check({"trace", "debug", "info", "warn", "error"}));
  r.read_bool("json", s.json);
}

void loader::read_all(const toml::table& root, node_config& cfg) {
  std::set<std::string> known(section_names.begin(), section_names.end());
  std::string expected;
  for (const auto& name : section_names)
    expected += (expected.empty() ? "" : ", ") + name;
  for (const auto& [k, v] : root)
    if (known.count(std::string(k.str())) == 0)
      fail(path_key(k.str()), "unknown section (expected one of " + expected + ")");

  // Returns the section table, or nullptr when absent or not a table.
  auto section = [&](const std::string& name) -> const toml::table* {
    auto* n = root.get(name);
    if (n == nullptr)
      return nullptr;
    if (!n->is_table()) {
      fail(name, "expected a table, got " + type_name(*n));
      return nullptr;
    }
    return n->as_table();
  };
  auto run = [&](const std::string& name, auto&& fn, auto& out) {
    section_reader r(*this, section(name), name);
    (this->*fn)(r, out);
    r.finish();
  };
  run("node", &loader::read_node, cfg.node);
  run("http", &loader::read_http, cfg.http);
  run("store", &loader::read_store, cfg.store);
  run("cluster", &loader::read_cluster, cfg.cluster);
  run("auth", &loader::read_auth, cfg.auth);

  const toml::table* envs = section("environments");
  if (envs != nullptr) {
    for (const auto& [k, v] : *envs) {
      const auto& names = environment_names();
      if (std::find(names.begin(), names.end(), k.str()) == names.end()) {
        std::string hint;
        for (const auto& n : names)
          if (lower(n) == lower(k.str()))
            hint = " (names are case-sensitive: did you mean " + quoted(n) + "?)";
        fail(join_path("environments", k.str()),
             "unknown environment, expected one of " + one_of(names) + hint);
      }
    }
  }
  for (const auto& name : environment_names()) {
    auto path = join_path("environments", name);
    const toml::table* t = nullptr;
    if (envs != nullptr) {
      if (auto* n = envs->get(name)) {
        t = n->as_table();
        if (t == nullptr)
          fail(path, "expected a table, got " + type_name(*n));
      }
    }
    auto& env = cfg.environments[name];
    if (env.strategy.empty())
      env = default_environment(name);
    section_reader r(*this, t, path);
    read_environment(r, env);
    r.finish();
  }

  run("deployments", &loader::read_deployments, cfg.deployments);
  run("rate_limits", &loader::read_rate_limits, cfg.rate_limits);
  run("events", &loader::read_events, cfg.events);
  run("messages", &loader::read_messages, cfg.messages);
  run("entities", &loader::read_entities, cfg.entities);
  run("worker", &loader::read_worker, cfg.worker);
  read_modules(section("modules"), cfg.modules);
  run("logging", &loader::read_logging, cfg.logging);

  if (!schema_mode)
    cross_checks(cfg);
}

void loader::cross_checks(const node_config& cfg) {
  // node: a worker serves at least one environment.
  const auto& roles = cfg.node.roles;
  if (std::find(roles.begin(), roles.end(), "worker") != roles.end()
      && cfg.node.environments.empty() && !any_bad({"node.roles", "node.environments"}))
    fail_any({"node.environments", "node.roles"},
             "a node with the \"worker\" role must serve at least one environment");

  // http: TLS needs both files, and they must be readable.
  if (!any_bad({"http.tls_cert", "http.tls_key"})) {
    const auto& cert = cfg.http.tls_cert;
    const auto& key = cfg.http.tls_key;
    if (cert.empty() != key.empty()) {
      if (cert.empty())
        fail_any({"http.tls_cert", "http.tls_key"},
                 "must be set when http.tls_key is set (both or neither)");
      else
        fail_any({"http.tls_key", "http.tls_cert"},
                 "must be set when http.tls_cert is set (both or neither)");
    } else if (!cert.empty()) {
      if (auto why = check_readable_file(cert))
        fail("http.tls_cert", std::move(*why));
      if (auto why = check_readable_file(key))
        fail("http.tls_key", std::move(*why));
      // Refuse rather than serve plain HTTP while TLS was asked for.
      if (!any_bad({"http.tls_cert", "http.tls_key"}))
        fail("http.tls_cert",
             "HTTPS termination is not available in this build yet; terminate TLS in front of "
             "the node (e.g. nginx) and leave http.tls_cert and http.tls_key empty");
    }
  }

  // cluster: a node must heartbeat more often than its TTL.
  if (!any_bad({"cluster.heartbeat_ms", "cluster.node_ttl_ms"})
      && cfg.cluster.heartbeat_ms >= cfg.cluster.node_ttl_ms)
    fail_any({"cluster.heartbeat_ms", "cluster.node_ttl_ms"},
             "must be less than cluster.node_ttl_ms (heartbeat_ms = "
               + std::to_string(cfg.cluster.heartbeat_ms)
               + ", node_ttl_ms = " + std::to_string(cfg.cluster.node_ttl_ms) + ")");

  // cluster: TLS is all or nothing, and what is configured must work: a
  // certificate CAF cannot load ends the node in std::terminate, and a
  // partial setup would fall back to unauthenticated encryption.
  {
    const std::vector<std::pair<std::string, const std::string*>> tls = {
      {"cluster.tls_cert", &cfg.cluster.tls_cert},
      {"cluster.tls_key", &cfg.cluster.tls_key},
      {"cluster.tls_ca", &cfg.cluster.tls_ca},
    };
    // A key with an error was given (its bad value is not stored).
    auto given = [this](const std::string& key, const std::string& value) {
      return !value.empty() || any_bad({key});
    };
    std::vector<std::string> set_keys;
    for (const auto& [key, value] : tls)
      if (given(key, *value))
        set_keys.push_back(key);
    if (!set_keys.empty() && set_keys.size() < tls.size()) {
      std::string names;
      for (const auto& k : set_keys)
        names += (names.empty() ? "" : " and ") + k;
      for (const auto& [key, value] : tls)
        if (!given(key, *value))
          fail(key, "must be set when " + names + (set_keys.size() == 1 ? " is" : " are")
                      + " set (cluster TLS needs all three of cluster.tls_cert, "
                        "cluster.tls_key and cluster.tls_ca, or none)");
    } else if (!set_keys.empty()
               && !any_bad({"cluster.tls_cert", "cluster.tls_key", "cluster.tls_ca"})) {
      for (auto& [key, reason] :
           check_cluster_tls(cfg.cluster.tls_cert, cfg.cluster.tls_key, cfg.cluster.tls_ca))
        fail(key, std::move(reason));
    }
  }

  // rate_limits: every limit at least 1 while enabled.
  if (cfg.rate_limits.enabled && !any_bad({"rate_limits.enabled"})) {
    const std::pair<const char*, uint32_t> limits[] = {
      {"global", cfg.rate_limits.global},       {"deployments", cfg.rate_limits.deployments},
      {"clusters", cfg.rate_limits.clusters},   {"approvals", cfg.rate_limits.approvals},
      {"login", cfg.rate_limits.login},
    };
    for (const auto& [key, value] : limits) {
      auto path = std::string("rate_limits.") + key;
      if (value < 1 && !any_bad({path}))
        fail_any({path, "rate_limits.enabled"},
                 "must be at least 1 while rate_limits.enabled is true, got 0 (set enabled = "
                 "false to turn rate limiting off)");
    }
  }

  // entities: the backoff starts below its cap.
  if (!any_bad({"entities.restart_backoff_initial_ms", "entities.restart_backoff_max_ms"})
      && cfg.entities.restart_backoff_initial_ms > cfg.entities.restart_backoff_max_ms)
    fail_any({"entities.restart_backoff_initial_ms", "entities.restart_backoff_max_ms"},
             "must not exceed entities.restart_backoff_max_ms ("
               + std::to_string(cfg.entities.restart_backoff_max_ms) + ")");
}

// -- environment overrides ----------------------------------------------------

/// Moves `value` into `table[key]`, replacing what was there.
void put(toml::table& table, const std::string& key, toml::node& value) {
  value.visit([&](auto& v) { table.insert_or_assign(key, std::move(v)); });
}

/// The table at `name` in `parent`, created when absent; nullptr when the
/// name holds something else (the file's own error reports that).
toml::table* ensure_table(toml::table& parent, const std::string& name) {
  if (parent.get(name) == nullptr)
    parent.insert(name, toml::table{});
  return parent.get_as<toml::table>(name);
}

void loader::apply_env(toml::table& root, const std::vector<std::string>& env) {
  // Variables named by messages.topics.*.hmac_key_env hold secrets, not
  // overrides, even when their names look like HOTSWAP_<SECTION>_...
  std::set<std::string> secret_vars;
  if (auto* topics = root.at_path("messages.topics").as_table())
    for (const auto& [name, node] : *topics)
      if (auto* t = node.as_table())
        if (auto* v = t->get_as<std::string>("hmac_key_env"))
          secret_vars.insert(v->get());

  // Sections by prefix, longest first (RATE_LIMITS holds an underscore).
  std::vector<std::string> sections;
  for (const auto& s : section_names)
    if (sections_without_env.count(s) == 0)
      sections.push_back(s);
  std::sort(sections.begin(), sections.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });

  for (const auto& entry : env) {
    auto eq = entry.find('=');
    if (eq == std::string::npos)
      continue;
    auto var = entry.substr(0, eq);
    auto value = entry.substr(eq + 1);
    if (!starts_with(var, "HOTSWAP_") || secret_vars.count(var) > 0)
      continue;
    auto rest = var.substr(8);
    std::string section;
    for (const auto& s : sections) {
      auto prefix = upper(s);
      if (rest == prefix || starts_with(rest, prefix + "_")) {
        section = s;
        rest = rest.size() > prefix.size() ? rest.substr(prefix.size() + 1) : std::string{};
        break;
      }
    }
    if (section.empty())
      continue; // not a config variable (HOTSWAP_ADMIN_PASSWORD, topic keys, ...)

    auto env_error = [&](const std::string& key, std::string reason) {
      file_error("environment", key + " (" + var + ")", std::move(reason));
    };

    std::string section_path = section;
    std::string env_name;
    if (section == "environments") {
      for (const auto& n : environment_names()) {
        auto prefix = upper(n) + "_";
        if (starts_with(rest, prefix)) {
          env_name = n;
          rest = rest.substr(prefix.size());
          break;
        }
      }
      if (env_name.empty()) {
        env_error("environments", "unknown environment: expected "
                                  "HOTSWAP_ENVIRONMENTS_<ENV>_<KEY> with ENV one of DEVELOPMENT, "
                                  "QA, STAGING or PRODUCTION");
        continue;
      }
      section_path = join_path("environments", env_name);
    }
    if (rest.empty()) {
      env_error(section_path, "the variable names no key");
      continue;
    }
    const auto& keys = schema[section_path];
    auto it = std::find_if(keys.begin(), keys.end(),
                           [&](const auto& kv) { return upper(kv.first) == rest; });
    if (it == keys.end()) {
      env_error(join_path(section_path, lower(rest)), "unknown key");
      continue;
    }
    const auto& key = it->first;
    auto key_kind = it->second;

    // The value is TOML ("x = <value>"); when it does not parse as exactly
    // one value it is a plain string. String keys take the text as written
    // unless it is a quoted TOML string (so HOTSWAP_NODE_ID=42 is "42").
    toml::table holder;
    auto parsed = parse_toml("x = " + value, "environment");
    bool is_toml = parsed.table && parsed.table->size() == 1 && parsed.table->get("x") != nullptr;
    if (is_toml && !(key_kind == kind::string && !parsed.table->get("x")->is_string()))
      holder = std::move(*parsed.table);
    else
      holder.insert("x", value);

    toml::table* target = ensure_table(root, section);
    if (target != nullptr && !env_name.empty())
      target = ensure_table(*target, env_name);
    if (target == nullptr)
      continue; // the file's section is not a table; that error is reported
    put(*target, key, *holder.get("x"));
    origin[join_path(section_path, key)] = var;
  }
}

} // namespace

load_result load(const std::string& path, const std::vector<std::string>& env) {
  load_result result;
  loader l(path);

  // Pass 1: learn the schema (every key and its kind) from the readers.
  {
    l.schema_mode = true;
    node_config scratch = default_config();
    l.read_all(toml::table{}, scratch);
    l.schema_mode = false;
  }

  // Pass 2: the file.
  toml::table root;
  if (!path.empty()) {
    std::string text;
    std::string err;
    if (!read_file(path, text, err)) {
      result.errors.push_back({path, "", err});
      return result;
    }
    auto parsed = parse_toml(text, path);
    if (!parsed.table) {
      result.errors.push_back({path, "",
                               "parse error at " + std::to_string(parsed.where.line) + ":"
                                 + std::to_string(parsed.where.column) + ": "
                                 + parsed.description});
      return result;
    }
    root = std::move(*parsed.table);
  }

  // Pass 3: environment overrides on top, then validate everything.
  for (const auto& entry : env) {
    auto eq = entry.find('=');
    if (eq != std::string::npos && eq > 0 && eq + 1 < entry.size())
      l.env_set.insert(entry.substr(0, eq));
  }
  l.apply_env(root, env);
  node_config cfg = default_config();
  cfg.source = path;
  l.read_all(root, cfg);

  if (l.errors().empty())
    result.config = std::move(cfg);
  else
    result.errors = std::move(l.errors());
  return result;
}

} // namespace hotswap::config
