#pragma once

// JWT HS256 with a `kid` header, over signing keys kept in the store.

#include <cstdint>
#include <string>
#include <vector>

#include "caf/expected.hpp"

#include "hotswap/runtime/records.hpp"

namespace hotswap::jwt {

struct claims {
  std::string sub;                  ///< user id
  std::string unique_name;          ///< user name
  std::string email;
  std::vector<std::string> roles;   ///< emitted as the "role" claim (array)
  std::string tenant_id;            ///< omitted when empty
  std::string jti;
  std::string iss;
  std::string aud;
  int64_t iat = 0;                  ///< seconds since epoch
  int64_t nbf = 0;
  int64_t exp = 0;
};

/// Signs `c` with `key` (HS256, header {"alg":"HS256","typ":"JWT","kid":key.kid}).
std::string sign(const claims& c, const signing_key& key);

/// Verifies signature (against the key named by `kid` among `keys`), `alg`
/// == HS256, issuer, audience, and nbf/exp at `now_seconds` with `skew_seconds`
/// tolerance. Errors: errc::unauthorized with a reason.
caf::expected<claims> verify(const std::string& token, const std::vector<signing_key>& keys,
                             const std::string& issuer, const std::string& audience,
                             int64_t now_seconds, int64_t skew_seconds = 30);

} // namespace hotswap::jwt
