// hotswapctl: the command-line client for hotswap modules. Signs, verifies and
// inspects module files locally; uploads, lists and invokes them, and stages,
// weighs and retires versions on a node's workers, through the REST API (plain
// HTTP, Boost.Beast). A thin tool: blocking I/O, one request at a time.
// Operator documentation: docs/hotswapctl.md.
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/module_file.hpp"
#include "hotswap/runtime/module_signing.hpp"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace json = boost::json;
using tcp = net::ip::tcp;

constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_usage = 2;

constexpr const char* user_agent = "hotswapctl/0.1.0";

/// Answers larger than this are cut off (a module's reply or a JSON document).
constexpr uint64_t max_response_bytes = 64u << 20;

constexpr const char* usage_text
  = "usage:\n"
    "  hotswapctl module sign --key PRIVATE.pem [--out FILE] MODULE.so\n"
    "      Signs MODULE.so (SHA-256, RSA >= 2048 bits or ECDSA P-256); writes the raw\n"
    "      signature, exactly what `openssl dgst -sha256 -sign` writes, to FILE\n"
    "      (default MODULE.so.sig).\n"
    "  hotswapctl module verify --pubkey PUBLIC.pem [--signature FILE] MODULE.so\n"
    "      Exits 0 when the signature (default MODULE.so.sig) verifies.\n"
    "  hotswapctl module inspect MODULE.so\n"
    "      Prints the module's name, version, ABI token, digest and size.\n"
    "  hotswapctl module push --url http://HOST:PORT AUTH [--signature FILE | --key PRIVATE.pem]\n"
    "                         [--name N] [--version V] [--description D]\n"
    "                         [--environment ENV] MODULE.so\n"
    "      Uploads MODULE.so (POST /api/v1/modules). Name and version default to the\n"
    "      ones recorded in the file. --environment refuses an unsigned upload when\n"
    "      ENV requires signed modules.\n"
    "  hotswapctl module invoke --url http://HOST:PORT AUTH --environment ENV\n"
    "                           [--content-type TYPE] NAME [PAYLOAD | -]\n"
    "      Calls the module (POST /api/v1/modules/NAME/invoke); `-` reads the payload\n"
    "      from standard input. Prints the answering version and the answer.\n"
    "  hotswapctl module list --url http://HOST:PORT AUTH [NAME]\n"
    "      Lists the uploaded modules, or every uploaded version of NAME (JSON).\n"
    "  hotswapctl worker stage --url http://HOST:PORT AUTH --environment ENV\n"
    "                          [--weight N] [--owner O] [--epoch E] NAME VERSION\n"
    "      Loads an uploaded version into the node's ENV worker (Admin). Without\n"
    "      --weight it gets 100 when no other version carries traffic, else 0.\n"
    "  hotswapctl worker weights --url http://HOST:PORT AUTH --environment ENV\n"
    "                            --weights V=W[,V=W...] [--owner O] [--epoch E] NAME\n"
    "      Sets the traffic split between NAME's loaded versions (unlisted: 0).\n"
    "  hotswapctl worker retire --url http://HOST:PORT AUTH --environment ENV\n"
    "                           [--owner O] [--epoch E] NAME VERSION\n"
    "      Drains the version's in-flight calls and unloads it.\n"
    "  hotswapctl login --url http://HOST:PORT --user NAME [--password PW]\n"
    "      Prints a bearer token for --token or HOTSWAP_TOKEN.\n"
    "\n"
    "AUTH is --token TOKEN, or --user NAME with --password PW (default: the\n"
    "HOTSWAP_PASSWORD environment variable); without either, the HOTSWAP_TOKEN\n"
    "environment variable. --user logs in on every call and logins are rate-limited\n"
    "(5 a minute by default): scripts log in once with `hotswapctl login`.\n"
    "Network commands take --timeout SECONDS (default 60) per network step.\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

// -- command line ------------------------------------------------------------------

/// Thrown for usage errors only; caught in main (exit status 2).
struct usage_error {
  std::string what;
};

struct arguments {
  std::map<std::string, std::string> options;
  std::vector<std::string> positional;

  bool has(const std::string& key) const {
    return options.count(key) > 0;
  }

  std::string get(const std::string& key, const std::string& fallback = {}) const {
    auto i = options.find(key);
    return i != options.end() ? i->second : fallback;
  }

  std::string require(const std::string& key) const {
    if (!has(key))
      throw usage_error{"missing " + key};
    return get(key);
  }
};

/// Parses `--opt VALUE`, `--opt=VALUE` and positional arguments; every option
/// in `known` takes a value. `expected` names the positional arguments.
arguments parse_arguments(const std::vector<std::string>& args, const std::set<std::string>& known,
                          size_t min_positional, size_t max_positional,
                          const std::string& expected) {
  arguments out;
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& arg = args[i];
    if (options_done || arg.size() < 2 || arg.compare(0, 2, "--") != 0) {
      out.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    auto eq = arg.find('=');
    auto key = arg.substr(0, eq);
    if (known.count(key) == 0)
      throw usage_error{"unknown option " + key};
    std::string value;
    if (eq != std::string::npos)
      value = arg.substr(eq + 1);
    else if (i + 1 < args.size())
      value = args[++i];
    else
      throw usage_error{key + " needs a value"};
    if (!out.options.emplace(key, value).second)
      throw usage_error{key + " given twice"};
  }
  if (out.positional.size() < min_positional)
    throw usage_error{"missing arguments (expected: " + expected + ")"};
  if (out.positional.size() > max_positional)
    throw usage_error{"unexpected argument '" + out.positional[max_positional] + "'"};
  return out;
}

// -- files -------------------------------------------------------------------------

/// Prints `hotswapctl: <text>` to stderr and returns exit_failed.
int fail(const std::string& text) {
  std::cerr << "hotswapctl: " << text << std::endl;
  return exit_failed;
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    fail(path + ": " + std::strerror(errno));
    return false;
  }
  out.assign(std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{});
  if (in.bad()) {
    fail(path + ": read error");
    return false;
  }
  return true;
}

bool write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  if (out)
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    fail(path + ": cannot write the file");
    return false;
  }
  return true;
}

std::string detail(const caf::error& err) {
  auto text = hotswap::error_detail(err);
  return text.empty() ? hotswap::to_string(hotswap::errc_of(err)) : text;
}

// -- HTTP --------------------------------------------------------------------------

struct endpoint {
  std::string host;
  std::string port;
  std::string base; ///< path prefix without trailing slash, e.g. "" or "/hotswap"
};

endpoint parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, 8, "https://") == 0)
    throw usage_error{"https:// URLs are not supported: hotswapctl speaks plain HTTP only "
                      "(use http://, e.g. to a local TLS-terminating proxy)"};
  if (url.compare(0, scheme.size(), scheme) != 0)
    throw usage_error{"--url must start with http:// (got '" + url + "')"};
  auto rest = url.substr(scheme.size());
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  endpoint out;
  out.base = slash == std::string::npos ? "" : rest.substr(slash);
  while (!out.base.empty() && out.base.back() == '/')
    out.base.pop_back();
  if (out.base.find_first_of("?#") != std::string::npos)
    throw usage_error{"--url must not contain a query or fragment"};
  if (authority.find('@') != std::string::npos)
    throw usage_error{"--url must not contain credentials (use --token or --user)"};
  std::string port = "80";
  if (!authority.empty() && authority.front() == '[') { // [IPv6]:port
    auto close = authority.find(']');
    if (close == std::string::npos)
      throw usage_error{"--url has an unterminated IPv6 address"};
    out.host = authority.substr(1, close - 1);
    auto tail = authority.substr(close + 1);
    if (!tail.empty()) {
      if (tail.front() != ':')
        throw usage_error{"--url: bad host '" + authority + "'"};
      port = tail.substr(1);
    }
  } else {
    auto colon = authority.find(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos)
      port = authority.substr(colon + 1);
  }
  if (out.host.empty())
    throw usage_error{"--url has no host"};
  char* end = nullptr;
  auto number = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || number < 1 || number > 65535)
    throw usage_error{"--url has an invalid port '" + port + "'"};
  out.port = port;
  return out;
}

std::string host_header(const endpoint& ep) {
  auto host = ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host;
  return ep.port == "80" ? host : host + ":" + ep.port;
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
std::string pct_encode(const std::string& text) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 0x0f];
    }
  }
  return out;
}

/// True when `value` can go into an HTTP header field unchanged.
bool header_safe(const std::string& value) {
  for (unsigned char c : value)
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return false;
  return true;
}

struct response {
  unsigned status = 0;
  std::string reason;
  std::string body;
  std::string module_version;
  std::string retry_after;
};

class http_client {
public:
  http_client(endpoint ep, std::chrono::seconds timeout) : ep_(std::move(ep)), timeout_(timeout) {
    // nop
  }

  /// Sends one request on a fresh connection; false (with a message printed)
  /// when no HTTP response arrived.
  bool send(http::verb method, const std::string& path, const std::string& content_type,
            std::string body, const std::map<std::string, std::string>& headers,
            response& out) {
    http::request<http::string_body> req{method, ep_.base + path, 11};
    req.set(http::field::host, host_header(ep_));
    req.set(http::field::user_agent, user_agent);
    req.set(http::field::content_type, content_type);
    for (auto& [name, value] : headers)
      req.set(name, value);
    req.body() = std::move(body);
    req.prepare_payload();
    net::io_context ioc;
    tcp::resolver resolver{ioc};
    beast::tcp_stream stream{ioc};
    beast::error_code ec;
    auto where = ep_.host + ":" + ep_.port;
    auto results = resolver.resolve(ep_.host, ep_.port, ec);
    if (ec) {
      fail("cannot resolve " + ep_.host + ": " + ec.message());
      return false;
    }
    stream.expires_after(timeout_);
    stream.async_connect(results, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    run(ioc);
    if (ec) {
      fail("cannot connect to " + where + ": " + ec.message());
      return false;
    }
    stream.expires_after(timeout_);
    http::async_write(stream, req, [&](beast::error_code e, size_t) { ec = e; });
    run(ioc);
    // A server may answer (413, 401) and close before it read the whole body:
    // read its answer even when the write failed.
    auto write_error = ec;
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_response_bytes);
    stream.expires_after(timeout_);
    http::async_read(stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    run(ioc);
    if (ec) {
      auto why = write_error ? write_error.message() : ec.message();
      fail("no answer from " + where + ": " + why);
      return false;
    }
    auto& res = parser.get();
    out.status = res.result_int();
    out.reason = std::string{res.reason()};
    out.body = std::move(res.body());
    out.module_version = std::string{res["X-Module-Version"]};
    out.retry_after = std::string{res[http::field::retry_after]};
    stream.socket().shutdown(tcp::socket::shutdown_both, ec); // errors do not matter here
    return true;
  }

private:
  static void run(net::io_context& ioc) {
    ioc.restart();
    ioc.run();
  }

  endpoint ep_;
  std::chrono::seconds timeout_;
};

bool success(const response& res) {
  return res.status >= 200 && res.status < 300;
}

/// The problem's `detail` (or legacy `message`), its validation errors, or
/// the start of a non-JSON body.
std::string problem_detail(const std::string& body) {
  boost::system::error_code ec;
  auto doc = json::parse(body, ec);
  std::string out;
  if (!ec && doc.is_object()) {
    auto& obj = doc.as_object();
    for (auto key : {"detail", "message", "title", "error"}) {
      if (auto* v = obj.if_contains(key); v != nullptr && v->is_string()) {
        out = std::string{v->as_string()};
        break;
      }
    }
    if (auto* errors = obj.if_contains("errors"); errors != nullptr && errors->is_object())
      for (auto& entry : errors->as_object())
        out += "\n  " + std::string{entry.key()} + ": " + json::serialize(entry.value());
    if (!out.empty())
      return out;
  }
  return body.size() > 500 ? body.substr(0, 500) + "..." : body;
}

int report_failure(const std::string& what, const response& res) {
  auto text = what + ": HTTP " + std::to_string(res.status);
  if (!res.reason.empty())
    text += " " + res.reason;
  auto why = problem_detail(res.body);
  if (!why.empty())
    text += ": " + why;
  if (res.status == 429 && !res.retry_after.empty() && header_safe(res.retry_after))
    text += " (retry after " + res.retry_after + " s)";
  return fail(text);
}

/// Reads an integer option in [lo, hi]; `fallback` when absent.
int64_t int_option(const arguments& args, const std::string& key, int64_t lo, int64_t hi,
                   int64_t fallback) {
  if (!args.has(key))
    return fallback;
  auto text = args.get(key);
  char* end = nullptr;
  errno = 0;
  auto value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || value < lo || value > hi)
    throw usage_error{key + " must be an integer from " + std::to_string(lo) + " to "
                      + std::to_string(hi) + " (got '" + text + "')"};
  return value;
}

std::chrono::seconds timeout_of(const arguments& args) {
  auto text = args.get("--timeout", "60");
  char* end = nullptr;
  auto value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < 1 || value > 86400)
    throw usage_error{"--timeout must be a number of seconds between 1 and 86400"};
  return std::chrono::seconds{value};
}

/// The options of every command that talks to a node, plus `extra`.
std::set<std::string> network_options(std::initializer_list<std::string> extra) {
  std::set<std::string> out{"--url", "--token", "--user", "--password", "--timeout"};
  out.insert(extra.begin(), extra.end());
  return out;
}

/// Checks the AUTH options up front, so that a usage error comes before any
/// file is read or request sent.
void check_auth(const arguments& args) {
  if (args.has("--token") && args.has("--user"))
    throw usage_error{"give either --token TOKEN or --user NAME, not both"};
  if (args.has("--password") && !args.has("--user"))
    throw usage_error{"--password needs --user"};
  if (args.has("--token")) {
    auto token = args.get("--token");
    if (token.empty() || !header_safe(token))
      throw usage_error{"--token is empty or contains control characters"};
  } else if (args.has("--user")) {
    if (!args.has("--password") && std::getenv("HOTSWAP_PASSWORD") == nullptr)
      throw usage_error{"--user needs --password or the HOTSWAP_PASSWORD environment variable"};
  } else {
    auto env = std::getenv("HOTSWAP_TOKEN");
    if (env == nullptr || *env == '\0')
      throw usage_error{"give --token TOKEN or --user NAME (or set HOTSWAP_TOKEN)"};
    if (!header_safe(env))
      throw usage_error{"HOTSWAP_TOKEN contains control characters"};
  }
}

/// Logs in as --user; false (message printed) when the login fails.
bool login_token(const arguments& args, http_client& client, std::string& token) {
  std::string password = args.get("--password");
  if (!args.has("--password")) {
    auto env = std::getenv("HOTSWAP_PASSWORD");
    if (env == nullptr)
      throw usage_error{"--user needs --password or the HOTSWAP_PASSWORD environment variable"};
    password = env;
  }
  json::object credentials;
  credentials["username"] = args.get("--user");
  credentials["password"] = password;
  response res;
  if (!client.send(http::verb::post, "/api/v1/authentication/login", "application/json",
                   json::serialize(credentials), {{"Accept", "application/json"}}, res))
    return false;
  if (!success(res)) {
    report_failure("login as " + args.get("--user") + " failed", res);
    if (res.status == 429)
      std::cerr << "hotswapctl: logins are rate-limited per user and address; log in once "
                   "(token=$(hotswapctl login ...)) and pass --token or HOTSWAP_TOKEN"
                << std::endl;
    return false;
  }
  boost::system::error_code ec;
  auto doc = json::parse(res.body, ec);
  const json::value* field = nullptr;
  if (!ec && doc.is_object())
    field = doc.as_object().if_contains("token");
  if (field == nullptr || !field->is_string() || field->as_string().empty()) {
    fail("login answer carries no token");
    return false;
  }
  token = std::string{field->as_string()};
  if (!header_safe(token)) {
    fail("login answer carries an invalid token");
    return false;
  }
  return true;
}

/// The bearer token: --token, a login with --user and its password, or the
/// HOTSWAP_TOKEN environment variable. False (message printed) when the
/// login fails.
bool bearer_token(const arguments& args, http_client& client, std::string& token) {
  check_auth(args);
  if (args.has("--token")) {
    token = args.get("--token");
    return true;
  }
  if (args.has("--user"))
    return login_token(args, client, token);
  token = std::getenv("HOTSWAP_TOKEN");
  return true;
}

/// Sends one authenticated request and prints the JSON answer; the exit status.
int call_json(const arguments& args, http::verb method, const std::string& path,
              std::string body, const std::string& what) {
  auto ep = parse_url(args.require("--url"));
  auto timeout = timeout_of(args);
  check_auth(args);
  http_client client{ep, timeout};
  std::string token;
  if (!bearer_token(args, client, token))
    return exit_failed;
  response res;
  if (!client.send(method, path, "application/json", std::move(body),
                   {{"Accept", "application/json"}, {"Authorization", "Bearer " + token}}, res))
    return exit_failed;
  if (!success(res))
    return report_failure(what + " failed", res);
  std::cout << res.body << std::endl;
  return exit_ok;
}

// -- commands ----------------------------------------------------------------------

int module_sign(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, {"--key", "--out"}, 1, 1, "MODULE.so");
  auto key_path = args.require("--key");
  const auto& module_path = args.positional[0];
  auto out_path = args.get("--out", module_path + ".sig");
  std::string key;
  std::string bytes;
  if (!read_file(key_path, key) || !read_file(module_path, bytes))
    return exit_failed;
  auto sig = hotswap::modsig::sign(key, bytes);
  if (!sig)
    return fail(key_path + ": " + detail(sig.error()));
  auto id = hotswap::modsig::key_id_of_pem(key);
  if (!id)
    return fail(key_path + ": " + detail(id.error()));
  if (!write_file(out_path, *sig))
    return exit_failed;
  std::cout << "signature: " << hotswap::crypto::base64_encode(*sig) << "\n"
            << "key id: " << *id << std::endl;
  return exit_ok;
}

int module_verify(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, {"--pubkey", "--signature"}, 1, 1, "MODULE.so");
  auto key_path = args.require("--pubkey");
  const auto& module_path = args.positional[0];
  auto sig_path = args.get("--signature", module_path + ".sig");
  auto trusted = hotswap::modsig::trusted_keys::load_files({key_path});
  if (!trusted)
    return fail(detail(trusted.error()));
  std::string sig;
  std::string bytes;
  if (!read_file(sig_path, sig) || !read_file(module_path, bytes))
    return exit_failed;
  auto id = trusted->verify(bytes, sig);
  if (!id)
    return fail(module_path + ": the signature in " + sig_path + " does not verify with "
                + key_path);
  std::cout << "verified: key id " << *id << " (" << trusted->keys()[0].algorithm << ")"
            << std::endl;
  return exit_ok;
}

int module_inspect(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, {}, 1, 1, "MODULE.so");
  const auto& module_path = args.positional[0];
  std::string bytes;
  if (!read_file(module_path, bytes))
    return exit_failed;
  auto info = hotswap::inspect_module_file(bytes);
  if (!info)
    return fail(module_path + ": " + detail(info.error()));
  std::cout << "name: " << info->name << "\n"
            << "version: " << info->version << "\n"
            << "abi token: " << info->abi_token << "\n"
            << "digest: " << hotswap::modsig::digest(bytes) << "\n"
            << "size: " << bytes.size() << std::endl;
  return exit_ok;
}

int module_push(const std::vector<std::string>& argv) {
  auto args = parse_arguments(
    argv,
    network_options({"--signature", "--key", "--name", "--version", "--description",
                     "--environment"}),
    1, 1, "MODULE.so");
  auto ep = parse_url(args.require("--url"));
  auto timeout = timeout_of(args);
  if (args.has("--signature") && args.has("--key"))
    throw usage_error{"give either --signature FILE or --key PRIVATE.pem, not both"};
  check_auth(args);
  std::string path = "/api/v1/modules";
  if (args.has("--environment")) {
    if (args.get("--environment").empty())
      throw usage_error{"--environment is empty"};
    path += "?environment=" + pct_encode(args.get("--environment"));
  }
  for (auto key : {"--name", "--version", "--description"})
    if (!header_safe(args.get(key)))
      throw usage_error{std::string{key} + " must not contain control characters"};
  const auto& module_path = args.positional[0];
  std::string bytes;
  if (!read_file(module_path, bytes))
    return exit_failed;
  auto name = args.get("--name");
  auto version = args.get("--version");
  auto info = hotswap::inspect_module_file(bytes);
  if (!info && (name.empty() || version.empty()))
    return fail(module_path + ": " + detail(info.error()));
  if (info) {
    if (name.empty())
      name = info->name;
    if (version.empty())
      version = info->version;
    if (name != info->name || version != info->version)
      std::cerr << "hotswapctl: warning: uploading as " << name << " " << version
                << " but the file says " << info->name << " " << info->version
                << " (a node refuses a file that declares another name or version)"
                << std::endl;
  }
  std::map<std::string, std::string> headers{{"Accept", "application/json"},
                                             {"X-Module-Name", name},
                                             {"X-Module-Version", version}};
  if (args.has("--description"))
    headers.emplace("X-Module-Description", args.get("--description"));
  std::string sig;
  if (args.has("--signature")) {
    if (!read_file(args.get("--signature"), sig))
      return exit_failed;
    if (sig.empty())
      return fail(args.get("--signature") + ": empty signature file");
  } else if (args.has("--key")) {
    std::string key;
    if (!read_file(args.get("--key"), key))
      return exit_failed;
    auto signed_bytes = hotswap::modsig::sign(key, bytes);
    if (!signed_bytes)
      return fail(args.get("--key") + ": " + detail(signed_bytes.error()));
    sig = std::move(*signed_bytes);
  }
  if (!sig.empty())
    headers.emplace("X-Module-Signature", hotswap::crypto::base64_encode(sig));
  http_client client{ep, timeout};
  std::string token;
  if (!bearer_token(args, client, token))
    return exit_failed;
  headers.emplace("Authorization", "Bearer " + token);
  response res;
  if (!client.send(http::verb::post, path, "application/octet-stream",
                   std::move(bytes), headers, res))
    return exit_failed;
  if (!success(res))
    return report_failure("upload of " + name + " " + version + " failed", res);
  std::cout << res.body << std::endl;
  return exit_ok;
}

int module_invoke(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, network_options({"--environment", "--content-type"}), 1, 2,
                              "NAME [PAYLOAD | -]");
  auto ep = parse_url(args.require("--url"));
  auto timeout = timeout_of(args);
  check_auth(args);
  auto environment = args.require("--environment");
  auto content_type = args.get("--content-type", "application/octet-stream");
  if (!header_safe(content_type))
    throw usage_error{"--content-type must not contain control characters"};
  const auto& name = args.positional[0];
  std::string payload;
  if (args.positional.size() > 1) {
    payload = args.positional[1];
    if (payload == "-")
      payload.assign(std::istreambuf_iterator<char>{std::cin}, std::istreambuf_iterator<char>{});
  }
  http_client client{ep, timeout};
  std::string token;
  if (!bearer_token(args, client, token))
    return exit_failed;
  response res;
  auto path = "/api/v1/modules/" + pct_encode(name)
              + "/invoke?environment=" + pct_encode(environment);
  if (!client.send(http::verb::post, path, content_type, std::move(payload),
                   {{"Authorization", "Bearer " + token}}, res))
    return exit_failed;
  if (!success(res))
    return report_failure("invoking " + name + " in " + environment + " failed", res);
  std::cout << "X-Module-Version: " << res.module_version << "\n" << res.body;
  if (!res.body.empty() && res.body.back() != '\n')
    std::cout << "\n";
  std::cout.flush();
  return exit_ok;
}

int module_list(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, network_options({}), 0, 1, "[NAME]");
  if (args.positional.empty())
    return call_json(args, http::verb::get, "/api/v1/modules", {}, "listing the modules");
  const auto& name = args.positional[0];
  return call_json(args, http::verb::get, "/api/v1/modules/" + pct_encode(name) + "/versions",
                   {}, "listing the versions of " + name);
}

/// The worker command's JSON body: {owner?, epoch?} and what `body` holds.
std::string origin_body(const arguments& args, json::object body) {
  if (args.has("--owner")) {
    auto owner = args.get("--owner");
    if (owner.empty() || owner.size() > 200)
      throw usage_error{"--owner must be 1 to 200 characters"};
    body["owner"] = owner;
  }
  if (args.has("--epoch"))
    body["epoch"] = int_option(args, "--epoch", 0, INT64_MAX, 0);
  return body.empty() ? std::string{} : json::serialize(body);
}

/// /api/v1/clusters/ENV/modules/NAME
std::string worker_path(const arguments& args, const std::string& name) {
  auto env = args.require("--environment");
  if (env.empty())
    throw usage_error{"--environment is empty"};
  return "/api/v1/clusters/" + pct_encode(env) + "/modules/" + pct_encode(name);
}

int worker_stage(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, network_options({"--environment", "--weight", "--owner",
                                                     "--epoch"}),
                              2, 2, "NAME VERSION");
  const auto& name = args.positional[0];
  const auto& version = args.positional[1];
  auto path = worker_path(args, name) + "/versions/" + pct_encode(version) + "/stage";
  json::object body;
  if (args.has("--weight"))
    body["weight"] = int_option(args, "--weight", 0, 1000000, 0);
  return call_json(args, http::verb::post, path, origin_body(args, std::move(body)),
                   "staging " + name + " " + version + " in " + args.get("--environment"));
}

/// "1.0.0=50,2.0.0=50" -> {"1.0.0": 50, "2.0.0": 50}
json::object parse_weights(const std::string& text) {
  json::object out;
  size_t pos = 0;
  while (pos <= text.size()) {
    auto comma = text.find(',', pos);
    auto item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    auto eq = item.rfind('=');
    if (eq == std::string::npos || eq == 0)
      throw usage_error{"--weights must look like VERSION=WEIGHT[,VERSION=WEIGHT...] (got '"
                        + text + "')"};
    auto version = item.substr(0, eq);
    arguments one;
    one.options["--weights"] = item.substr(eq + 1);
    auto weight = int_option(one, "--weights", 0, 1000000, 0);
    if (out.contains(version))
      throw usage_error{"--weights names " + version + " twice"};
    out[version] = weight;
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  return out;
}

int worker_weights(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, network_options({"--environment", "--weights", "--owner",
                                                     "--epoch"}),
                              1, 1, "NAME");
  const auto& name = args.positional[0];
  auto path = worker_path(args, name) + "/weights";
  json::object body;
  body["weights"] = parse_weights(args.require("--weights"));
  return call_json(args, http::verb::put, path, origin_body(args, std::move(body)),
                   "setting the weights of " + name + " in " + args.get("--environment"));
}

int worker_retire(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, network_options({"--environment", "--owner", "--epoch"}), 2,
                              2, "NAME VERSION");
  const auto& name = args.positional[0];
  const auto& version = args.positional[1];
  auto path = worker_path(args, name) + "/versions/" + pct_encode(version) + "/retire";
  return call_json(args, http::verb::post, path, origin_body(args, {}),
                   "retiring " + name + " " + version + " in " + args.get("--environment"));
}

int login(const std::vector<std::string>& argv) {
  auto args = parse_arguments(argv, {"--url", "--user", "--password", "--timeout"}, 0, 0, "");
  auto ep = parse_url(args.require("--url"));
  auto timeout = timeout_of(args);
  args.require("--user");
  check_auth(args);
  http_client client{ep, timeout};
  std::string token;
  if (!login_token(args, client, token))
    return exit_failed;
  std::cout << token << std::endl;
  return exit_ok;
}

bool wants_help(const std::vector<std::string>& args) {
  for (auto& arg : args) {
    if (arg == "--")
      return false;
    if (arg == "--help" || arg == "-h")
      return true;
  }
  return false;
}

int dispatch(const std::vector<std::string>& args) {
  if (args.empty())
    throw usage_error{"missing command"};
  if (args[0] == "login")
    return login({args.begin() + 1, args.end()});
  if (args[0] != "module" && args[0] != "worker")
    throw usage_error{"unknown command '" + args[0] + "'"};
  if (args.size() < 2)
    throw usage_error{"missing " + args[0] + " subcommand"};
  std::vector<std::string> rest{args.begin() + 2, args.end()};
  const auto& sub = args[1];
  if (args[0] == "worker") {
    if (sub == "stage")
      return worker_stage(rest);
    if (sub == "weights")
      return worker_weights(rest);
    if (sub == "retire")
      return worker_retire(rest);
    throw usage_error{"unknown worker subcommand '" + sub + "'"};
  }
  if (sub == "sign")
    return module_sign(rest);
  if (sub == "verify")
    return module_verify(rest);
  if (sub == "inspect")
    return module_inspect(rest);
  if (sub == "push")
    return module_push(rest);
  if (sub == "invoke")
    return module_invoke(rest);
  if (sub == "list")
    return module_list(rest);
  throw usage_error{"unknown module subcommand '" + sub + "'"};
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args{argv + 1, argv + argc};
  if (wants_help(args)) {
    std::cout << usage_text;
    return exit_ok;
  }
  try {
    return dispatch(args);
  } catch (const usage_error& e) {
    std::cerr << "hotswapctl: " << e.what << "\n"
              << "Run `hotswapctl --help` for the usage of every command." << std::endl;
    return exit_usage;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}
