#include "hotswap/runtime/jwt.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <string_view>

#include <boost/json.hpp>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"

namespace hotswap::jwt {

namespace {

namespace json = boost::json;

/// Tokens longer than this are refused before any decoding (a header carries
/// a few roles; 16 KiB is far beyond any token we issue).
constexpr size_t max_token_size = 16 * 1024;

/// Tolerated clock skew is clamped to [0, 1 day].
constexpr int64_t max_skew = 86400;

constexpr std::string_view hs256 = "HS256";

caf::error unauthorized(const char* reason) {
  return caf::make_error(errc::unauthorized, std::string{reason});
}

/// Decodes one base64url segment and parses it as a JSON object.
bool decode_object(std::string_view segment, json::object& out) {
  auto raw = crypto::base64url_decode(segment);
  if (!raw)
    return false;
  json::error_code ec;
  auto v = json::parse(*raw, ec);
  if (ec || !v.is_object())
    return false;
  out = std::move(v.as_object());
  return true;
}

enum class field { absent, ok, bad };

/// Reads an optional string member.
field get_string(const json::object& obj, std::string_view name, std::string& out) {
  auto* v = obj.if_contains(name);
  if (v == nullptr)
    return field::absent;
  if (!v->is_string())
    return field::bad;
  out = std::string{v->as_string()};
  return field::ok;
}

/// Reads an optional NumericDate (seconds; integral or floating-point).
field get_seconds(const json::object& obj, std::string_view name, int64_t& out) {
  auto* v = obj.if_contains(name);
  if (v == nullptr)
    return field::absent;
  if (v->is_int64()) {
    out = v->get_int64();
    return field::ok;
  }
  if (v->is_uint64()) {
    auto u = v->get_uint64();
    if (u > static_cast<uint64_t>(INT64_MAX))
      return field::bad;
    out = static_cast<int64_t>(u);
    return field::ok;
  }
  if (v->is_double()) {
    auto d = v->get_double();
    // 2^62 is beyond any meaningful date and safely convertible.
    if (!std::isfinite(d) || d < -4.6e18 || d > 4.6e18)
      return field::bad;
    out = static_cast<int64_t>(std::floor(d));
    return field::ok;
  }
  return field::bad;
}

/// "role" as a single string or an array of strings.
field get_roles(const json::object& obj, std::vector<std::string>& out) {
  auto* v = obj.if_contains("role");
  if (v == nullptr)
    return field::absent;
  if (v->is_string()) {
    out.emplace_back(v->as_string());
    return field::ok;
  }
  if (!v->is_array())
    return field::bad;
  for (auto& r : v->as_array()) {
    if (!r.is_string())
      return field::bad;
    out.emplace_back(r.as_string());
  }
  return field::ok;
}

/// "aud" as a single string or an array of strings; true if it names `audience`.
field has_audience(const json::object& obj, const std::string& audience, bool& found) {
  found = false;
  auto* v = obj.if_contains("aud");
  if (v == nullptr)
    return field::absent;
  if (v->is_string()) {
    found = v->as_string() == audience;
    return field::ok;
  }
  if (!v->is_array())
    return field::bad;
  for (auto& a : v->as_array()) {
    if (!a.is_string())
      return field::bad;
    if (a.as_string() == audience)
      found = true;
  }
  return field::ok;
}

caf::expected<claims> verify_impl(const std::string& token, const std::vector<signing_key>& keys,
                                  const std::string& issuer, const std::string& audience,
                                  int64_t now, int64_t skew) {
  if (token.empty() || token.size() > max_token_size)
    return unauthorized("malformed token");
  // Exactly three segments: header.payload.signature.
  auto d1 = token.find('.');
  if (d1 == std::string::npos)
    return unauthorized("malformed token");
  auto d2 = token.find('.', d1 + 1);
  if (d2 == std::string::npos || token.find('.', d2 + 1) != std::string::npos)
    return unauthorized("malformed token");
  std::string_view all{token};
  auto header_part = all.substr(0, d1);
  auto payload_part = all.substr(d1 + 1, d2 - d1 - 1);
  auto signature_part = all.substr(d2 + 1);
  auto signing_input = all.substr(0, d2);
  // Header: algorithm and key id.
  json::object header;
  if (!decode_object(header_part, header))
    return unauthorized("malformed token header");
  std::string alg;
  if (get_string(header, "alg", alg) != field::ok || alg != hs256)
    return unauthorized("unsupported algorithm");
  std::string kid;
  if (get_string(header, "kid", kid) != field::ok || kid.empty())
    return unauthorized("missing key id");
  const signing_key* key = nullptr;
  for (auto& k : keys) {
    // A key without a secret would accept tokens anyone can forge.
    if (k.kid == kid && !k.secret.empty()) {
      key = &k;
      break;
    }
  }
  if (key == nullptr)
    return unauthorized("unknown key id");
  // Signature before looking at any claim.
  auto signature = crypto::base64url_decode(signature_part);
  if (!signature)
    return unauthorized("bad signature");
  auto expected = crypto::hmac_sha256(key->secret, signing_input);
  if (!crypto::equal_ct(*signature, expected))
    return unauthorized("bad signature");
  // Claims.
  json::object payload;
  if (!decode_object(payload_part, payload))
    return unauthorized("malformed token payload");
  claims c;
  if (get_string(payload, "iss", c.iss) != field::ok || c.iss != issuer)
    return unauthorized("wrong issuer");
  bool aud_ok = false;
  if (has_audience(payload, audience, aud_ok) != field::ok || !aud_ok)
    return unauthorized("wrong audience");
  c.aud = audience;
  if (get_seconds(payload, "exp", c.exp) != field::ok)
    return unauthorized("missing expiry");
  auto nbf = get_seconds(payload, "nbf", c.nbf);
  if (nbf == field::bad)
    return unauthorized("malformed claims");
  if (get_seconds(payload, "iat", c.iat) == field::bad)
    return unauthorized("malformed claims");
  // exp > now - skew and nbf <= now + skew, saturating instead of overflowing.
  skew = std::clamp<int64_t>(skew, 0, max_skew);
  auto earliest = now < INT64_MIN + skew ? INT64_MIN : now - skew;
  auto latest = now > INT64_MAX - skew ? INT64_MAX : now + skew;
  if (c.exp <= earliest)
    return unauthorized("expired token");
  if (nbf == field::ok && c.nbf > latest)
    return unauthorized("token not yet valid");
  if (get_string(payload, "sub", c.sub) != field::ok || c.sub.empty())
    return unauthorized("missing subject");
  if (get_string(payload, "unique_name", c.unique_name) == field::bad
      || get_string(payload, "email", c.email) == field::bad
      || get_string(payload, "tenant_id", c.tenant_id) == field::bad
      || get_string(payload, "jti", c.jti) == field::bad
      || get_roles(payload, c.roles) == field::bad)
    return unauthorized("malformed claims");
  return c;
}

} // namespace

std::string sign(const claims& c, const signing_key& key) {
  json::object header;
  header["alg"] = hs256;
  header["typ"] = "JWT";
  header["kid"] = key.kid;
  json::object payload;
  payload["sub"] = c.sub;
  payload["unique_name"] = c.unique_name;
  payload["email"] = c.email;
  json::array roles;
  for (auto& r : c.roles)
    roles.emplace_back(r);
  payload["role"] = std::move(roles);
  if (!c.tenant_id.empty())
    payload["tenant_id"] = c.tenant_id;
  payload["jti"] = c.jti;
  payload["iss"] = c.iss;
  payload["aud"] = c.aud;
  payload["iat"] = c.iat;
  payload["nbf"] = c.nbf;
  payload["exp"] = c.exp;
  auto input = crypto::base64url_encode(json::serialize(header));
  input += '.';
  input += crypto::base64url_encode(json::serialize(payload));
  auto mac = crypto::hmac_sha256(key.secret, input);
  input += '.';
  input += crypto::base64url_encode(mac);
  return input;
}

caf::expected<claims> verify(const std::string& token, const std::vector<signing_key>& keys,
                             const std::string& issuer, const std::string& audience,
                             int64_t now_seconds, int64_t skew_seconds) {
  // Library edge: nothing thrown below (allocation failure included) escapes.
  try {
    return verify_impl(token, keys, issuer, audience, now_seconds, skew_seconds);
  } catch (const std::exception&) {
    return unauthorized("malformed token");
  }
}

} // namespace hotswap::jwt
