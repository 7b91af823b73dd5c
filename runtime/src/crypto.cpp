#include <random>
#include "hotswap/runtime/crypto.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "hotswap/runtime/errc.hpp"

namespace hotswap::crypto {

namespace {

/// The minimum PBKDF2 work factor for stored passwords (OWASP 2023 for
/// PBKDF2-HMAC-SHA256). hash_password raises smaller requests to it.
constexpr uint32_t min_password_iterations = 600000;

/// verify_password refuses stored work factors above this: a corrupted or
/// hostile hash must not pin a thread for minutes.
constexpr uint32_t max_password_iterations = 100000000;

constexpr size_t password_salt_len = 16;
constexpr size_t password_key_len = 32;

constexpr std::string_view password_scheme = "pbkdf2-sha256";

constexpr char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const unsigned char* bytes_of(std::string_view x) {
  return reinterpret_cast<const unsigned char*>(x.data());
}

/// A broken CSPRNG or digest is a broken invariant of the process: abort
/// rather than hand out predictable ids or wrong digests.
[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "hotswap: fatal OpenSSL failure in %s\n", what);
  std::abort();
}

std::string encode(std::string_view in, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  auto p = bytes_of(in);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | uint32_t{p[i + 2]};
    out += alphabet[(v >> 18) & 0x3f];
    out += alphabet[(v >> 12) & 0x3f];
    out += alphabet[(v >> 6) & 0x3f];
    out += alphabet[v & 0x3f];
  }
  auto rest = in.size() - i;
  if (rest == 1) {
    uint32_t v = uint32_t{p[i]} << 16;
    out += alphabet[(v >> 18) & 0x3f];
    out += alphabet[(v >> 12) & 0x3f];
    if (pad)
      out += "==";
  } else if (rest == 2) {
    uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8);
    out += alphabet[(v >> 18) & 0x3f];
    out += alphabet[(v >> 12) & 0x3f];
    out += alphabet[(v >> 6) & 0x3f];
    if (pad)
      out += '=';
  }
  return out;
}

int sextet(char c, bool url) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == (url ? '-' : '+'))
    return 62;
  if (c == (url ? '_' : '/'))
    return 63;
  return -1;
}

/// Strict decoder: only the alphabet's characters, no whitespace, and the
/// unused low bits of the last character must be zero (one canonical encoding
/// per byte string). `text` carries no padding here.
caf::expected<std::string> decode(std::string_view text, bool url) {
  auto bad = [] { return caf::make_error(errc::invalid_argument, "invalid base64"); };
  if (text.size() % 4 == 1)
    return bad();
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    auto v = sextet(c, url);
    if (v < 0)
      return bad();
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return bad();
  return out;
}

bool parse_u32(std::string_view text, uint32_t& out) {
  if (text.empty() || text.size() > 10)
    return false;
  for (char c : text)
    if (c < '0' || c > '9')
      return false;
  auto res = std::from_chars(text.data(), text.data() + text.size(), out);
  return res.ec == std::errc{} && res.ptr == text.data() + text.size();
}

/// Splits "a$b$c$d" into exactly four fields.
bool split4(std::string_view text, std::array<std::string_view, 4>& out) {
  for (size_t i = 0; i < 3; ++i) {
    auto pos = text.find('$');
    if (pos == std::string_view::npos)
      return false;
    out[i] = text.substr(0, pos);
    text.remove_prefix(pos + 1);
  }
  if (text.find('$') != std::string_view::npos)
    return false;
  out[3] = text;
  return true;
}

} // namespace

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  // RAND_bytes takes an int: fill in chunks so huge requests stay correct.
  size_t done = 0;
  while (done < n) {
    auto chunk = std::min<size_t>(n - done, 1u << 20);
    if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data() + done), static_cast<int>(chunk))
        != 1)
      fatal("RAND_bytes");
    done += chunk;
  }
  return out;
}

std::string uuid4() {
  auto b = random_bytes(16);
  b[6] = static_cast<char>((static_cast<unsigned char>(b[6]) & 0x0f) | 0x40); // version 4
  b[8] = static_cast<char>((static_cast<unsigned char>(b[8]) & 0x3f) | 0x80); // RFC 4122 variant
  auto h = hex_encode(b);
  std::string out;
  out.reserve(36);
  out.append(h, 0, 8).append(1, '-');
  out.append(h, 8, 4).append(1, '-');
  out.append(h, 12, 4).append(1, '-');
  out.append(h, 16, 4).append(1, '-');
  out.append(h, 20, 12);
  return out;
}

std::string random_hex(size_t bytes) {
  return hex_encode(random_bytes(bytes));
}

std::string base64_encode(std::string_view bytes) {
  return encode(bytes, b64_std, true);
}

caf::expected<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return caf::make_error(errc::invalid_argument, "invalid base64");
  // Up to two '=' at the end, nowhere else.
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=')
    ++pad;
  return decode(text.substr(0, text.size() - pad), false);
}

std::string base64url_encode(std::string_view bytes) {
  return encode(bytes, b64_url, false);
}

caf::expected<std::string> base64url_decode(std::string_view text) {
  return decode(text, true);
}

std::string hex_encode(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 0x0f];
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

caf::expected<std::string> hex_decode(std::string_view text) {
  if (text.size() % 2 != 0)
    return caf::make_error(errc::invalid_argument, "hex: odd length");
  std::string out;
  out.reserve(text.size() / 2);
  for (size_t i = 0; i < text.size(); i += 2) {
    auto hi = hex_digit(text[i]);
    auto lo = hex_digit(text[i + 1]);
    if (hi < 0 || lo < 0)
      return caf::make_error(errc::invalid_argument, "hex: not a hex digit");
    out.push_back(static_cast<char>((hi << 4) | lo));
  }
  return out;
}

std::string sha256(std::string_view bytes) {
  std::string out(EVP_MAX_MD_SIZE, '\0');
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 EVP_sha256(), nullptr)
      != 1)
    fatal("EVP_Digest");
  out.resize(len);
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  // HMAC pads the key with zeros to the block size, so an empty key is the same
  // key as a single zero byte; the EVP_MAC provider refuses empty keys.
  static constexpr char zero_key[1] = {'\0'};
  if (key.empty())
    key = std::string_view{zero_key, 1};
  std::string out(EVP_MAX_MD_SIZE, '\0');
  size_t len = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                bytes_of(data), data.size(), reinterpret_cast<unsigned char*>(out.data()),
                out.size(), &len)
      == nullptr)
    fatal("EVP_Q_mac");
  out.resize(len);
  return out;
}

bool equal_ct(std::string_view a, std::string_view b) {
  // The length is not secret (digests and keys have fixed sizes).
  if (a.size() != b.size())
    return false;
  if (a.empty())
    return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string pbkdf2_sha256(std::string_view password, std::string_view salt, uint32_t iterations,
                          size_t len) {
  constexpr auto int_max = static_cast<size_t>(std::numeric_limits<int>::max());
  if (iterations == 0 || len == 0 || len > int_max || password.size() > int_max
      || salt.size() > int_max
      || iterations > static_cast<uint32_t>(std::numeric_limits<int>::max()))
    return {};
  std::string out(len, '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), bytes_of(salt),
                        static_cast<int>(salt.size()), static_cast<int>(iterations),
                        EVP_sha256(), static_cast<int>(len),
                        reinterpret_cast<unsigned char*>(out.data()))
      != 1)
    return {};
  return out;
}

std::string hash_password(std::string_view password, uint32_t iterations) {
  // Policy: never store a weaker hash than the minimum, whatever the caller
  // (or its configuration) asks for.
  if (iterations < min_password_iterations)
    iterations = min_password_iterations;
  auto salt = random_bytes(password_salt_len);
  auto key = pbkdf2_sha256(password, salt, iterations, password_key_len);
  if (key.size() != password_key_len)
    fatal("PKCS5_PBKDF2_HMAC");
  std::string out{password_scheme};
  out += '$';
  out += std::to_string(iterations);
  out += '$';
  out += base64_encode(salt);
  out += '$';
  out += base64_encode(key);
  return out;
}

bool verify_password(std::string_view password, std::string_view encoded) {
  std::array<std::string_view, 4> parts;
  if (!split4(encoded, parts) || parts[0] != password_scheme)
    return false;
  uint32_t iterations = 0;
  if (!parse_u32(parts[1], iterations) || iterations == 0
      || iterations > max_password_iterations)
    return false;
  auto salt = base64_decode(parts[2]);
  auto expected = base64_decode(parts[3]);
  if (!salt || !expected || salt->empty() || expected->size() != password_key_len)
    return false;
  auto actual = pbkdf2_sha256(password, *salt, iterations, expected->size());
  if (actual.size() != expected->size())
    return false;
  return equal_ct(actual, *expected);
}

} // namespace hotswap::crypto

namespace hotswap::crypto {

std::string id_hex(size_t bytes) {
  thread_local std::mt19937_64 gen = [] {
    auto seed = random_bytes(sizeof(uint64_t) * 4);
    std::seed_seq seq(seed.begin(), seed.end());
    return std::mt19937_64{seq};
  }();
  std::string raw;
  raw.reserve(bytes);
  uint64_t word = 0;
  for (size_t i = 0; i < bytes; ++i) {
    if (i % 8 == 0)
      word = gen();
    raw.push_back(static_cast<char>(word & 0xff));
    word >>= 8;
  }
  return hex_encode(raw);
}

} // namespace hotswap::crypto
