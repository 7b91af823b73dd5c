#pragma once

// Small cryptographic helpers over OpenSSL 3 (EVP). Pure functions; the KDF
// is deliberately slow: call it only from a detached actor.

#include <cstdint>
#include <string>
#include <string_view>

#include "caf/expected.hpp"

namespace hotswap::crypto {

/// `n` bytes from the OpenSSL CSPRNG.
std::string random_bytes(size_t n);

/// A random RFC 4122 version-4 UUID in lower-case hex with dashes.
std::string uuid4();

/// `bytes` random bytes from the CSPRNG as lower-case hex.
std::string random_hex(size_t bytes);

/// `bytes` pseudo-random bytes as lower-case hex for identifiers that are
/// not secrets (request and trace ids): a per-thread PRNG seeded from the
/// CSPRNG, so the hot path makes no OpenSSL call.
std::string id_hex(size_t bytes);

std::string base64_encode(std::string_view bytes);
caf::expected<std::string> base64_decode(std::string_view text);
std::string base64url_encode(std::string_view bytes); ///< no padding
caf::expected<std::string> base64url_decode(std::string_view text);
std::string hex_encode(std::string_view bytes);

/// The value of one hex digit (either case), or -1.
int hex_digit(char c);

/// Decodes hex (either case); errc::invalid_argument for odd length or a
/// non-hex character.
caf::expected<std::string> hex_decode(std::string_view text);

std::string sha256(std::string_view bytes);                         ///< raw 32 bytes
std::string hmac_sha256(std::string_view key, std::string_view data); ///< raw 32 bytes

/// Constant-time comparison.
bool equal_ct(std::string_view a, std::string_view b);

/// PBKDF2-HMAC-SHA256 (RFC 8018): `len` raw key bytes derived from `password`
/// and `salt` with `iterations` rounds (no minimum enforced here; use
/// hash_password for stored credentials). Empty string if `iterations` or
/// `len` is zero or OpenSSL fails.
std::string pbkdf2_sha256(std::string_view password, std::string_view salt, uint32_t iterations,
                          size_t len);

/// Hashes a password with PBKDF2-HMAC-SHA256, `iterations` >= 600000 (smaller
/// values are raised to 600000, the OWASP 2023 minimum), a 16 byte random salt
/// and a 32 byte key. Format:
/// "pbkdf2-sha256$<iterations>$<base64 salt>$<base64 key>".
std::string hash_password(std::string_view password, uint32_t iterations);

/// Verifies `password` against a string made by hash_password (constant-time).
/// Returns false for malformed hashes.
bool verify_password(std::string_view password, std::string_view encoded);

} // namespace hotswap::crypto
