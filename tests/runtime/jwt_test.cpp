#define CAF_SUITE jwt
#include "caf/test/dsl.hpp"

#include <string>
#include <vector>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/jwt.hpp"

using namespace hotswap;

namespace {

constexpr int64_t now = 1700000000;
const std::string issuer = "https://hotswap.example/issuer";
const std::string audience = "hotswap-api";

struct fixture {
  signing_key current{"k2", std::string(32, 'b'), 2000, 0};
  signing_key retired{"k1", std::string(32, 'a'), 1000, 2000};
  std::vector<signing_key> keys{current, retired};

  jwt::claims sample() const {
    jwt::claims c;
    c.sub = "7d1f2b0c-0000-4000-8000-000000000001";
    c.unique_name = "admin";
    c.email = "admin@example.com";
    c.roles = {"Admin", "Deployer"};
    c.tenant_id = "tenant-1";
    c.jti = "jti-1";
    c.iss = issuer;
    c.aud = audience;
    c.iat = now;
    c.nbf = now;
    c.exp = now + 3600;
    return c;
  }

  caf::expected<jwt::claims> check(const std::string& token, int64_t at = now) const {
    return jwt::verify(token, keys, issuer, audience, at, 30);
  }

  /// Signs arbitrary header and payload JSON texts with `secret`.
  static std::string forge(const std::string& header, const std::string& payload,
                           const std::string& secret) {
    auto input = crypto::base64url_encode(header) + "." + crypto::base64url_encode(payload);
    return input + "." + crypto::base64url_encode(crypto::hmac_sha256(secret, input));
  }

  std::string payload_json(const std::string& extra = {}) const {
    return R"({"sub":"u1","iss":")" + issuer + R"(","aud":")" + audience
           + R"(","iat":1700000000,"nbf":1700000000,"exp":1700003600)" + extra + "}";
  }
};

/// The reason of an unauthorized result, or a marker when the result is
/// something else.
std::string reason(const caf::expected<jwt::claims>& x) {
  if (x)
    return "<accepted>";
  if (errc_of(x.error()) != errc::unauthorized)
    return "<not unauthorized>";
  return error_detail(x.error());
}

std::vector<std::string> split(const std::string& token) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    auto dot = token.find('.', start);
    parts.push_back(token.substr(start, dot - start));
    if (dot == std::string::npos)
      return parts;
    start = dot + 1;
  }
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(jwt_tests, fixture)

CAF_TEST(a signed token verifies with all its claims) {
  auto c = sample();
  auto token = jwt::sign(c, current);
  auto x = check(token);
  CAF_REQUIRE(x);
  CAF_CHECK_EQUAL(x->sub, c.sub);
  CAF_CHECK_EQUAL(x->unique_name, c.unique_name);
  CAF_CHECK_EQUAL(x->email, c.email);
  CAF_CHECK_EQUAL(x->roles, c.roles);
  CAF_CHECK_EQUAL(x->tenant_id, c.tenant_id);
  CAF_CHECK_EQUAL(x->jti, c.jti);
  CAF_CHECK_EQUAL(x->iss, c.iss);
  CAF_CHECK_EQUAL(x->aud, c.aud);
  CAF_CHECK_EQUAL(x->iat, c.iat);
  CAF_CHECK_EQUAL(x->nbf, c.nbf);
  CAF_CHECK_EQUAL(x->exp, c.exp);
}

CAF_TEST(the header names HS256 the JWT type and the key id) {
  auto parts = split(jwt::sign(sample(), current));
  CAF_REQUIRE_EQUAL(parts.size(), 3u);
  auto header = crypto::base64url_decode(parts[0]);
  CAF_REQUIRE(header);
  CAF_CHECK_EQUAL(*header, R"({"alg":"HS256","typ":"JWT","kid":"k2"})");
  auto payload = crypto::base64url_decode(parts[1]);
  CAF_REQUIRE(payload);
  CAF_CHECK_NOT_EQUAL(payload->find(R"("role":["Admin","Deployer"])"), std::string::npos);
  CAF_CHECK_NOT_EQUAL(payload->find(R"("exp":1700003600)"), std::string::npos);
}

CAF_TEST(tenant_id is omitted for platform users) {
  auto c = sample();
  c.tenant_id.clear();
  auto token = jwt::sign(c, current);
  auto payload = crypto::base64url_decode(split(token)[1]);
  CAF_REQUIRE(payload);
  CAF_CHECK_EQUAL(payload->find("tenant_id"), std::string::npos);
  auto x = check(token);
  CAF_REQUIRE(x);
  CAF_CHECK_EQUAL(x->tenant_id, "");
}

CAF_TEST(a tampered payload is rejected) {
  auto token = jwt::sign(sample(), current);
  auto parts = split(token);
  auto c = sample();
  c.roles = {"Admin"};
  c.unique_name = "mallory";
  auto other = split(jwt::sign(c, retired));
  // Someone else's valid payload under our header and signature.
  auto forged = parts[0] + "." + other[1] + "." + parts[2];
  CAF_CHECK_EQUAL(reason(check(forged)), "bad signature");
  // A flipped signature byte.
  auto sig = crypto::base64url_decode(parts[2]);
  CAF_REQUIRE(sig);
  (*sig)[0] = static_cast<char>((*sig)[0] ^ 1);
  CAF_CHECK_EQUAL(reason(check(parts[0] + "." + parts[1] + "." + crypto::base64url_encode(*sig))),
                  "bad signature");
  // A truncated signature.
  CAF_CHECK_EQUAL(reason(check(parts[0] + "." + parts[1] + "." + parts[2].substr(0, 40))),
                  "bad signature");
}

CAF_TEST(a token signed by an unknown key id is rejected) {
  signing_key stranger{"k9", std::string(32, 'z'), 0, 0};
  CAF_CHECK_EQUAL(reason(check(jwt::sign(sample(), stranger))), "unknown key id");
}

CAF_TEST(a token whose kid names another key fails the signature check) {
  // kid says k1 but the bytes were signed with another secret.
  signing_key impostor{"k1", std::string(32, 'z'), 0, 0};
  CAF_CHECK_EQUAL(reason(check(jwt::sign(sample(), impostor))), "bad signature");
}

CAF_TEST(a token without a kid is rejected) {
  auto token = forge(R"({"alg":"HS256","typ":"JWT"})", payload_json(), current.secret);
  CAF_CHECK_EQUAL(reason(check(token)), "missing key id");
}

CAF_TEST(a key without a secret never verifies) {
  signing_key empty{"k0", "", 0, 0};
  std::vector<signing_key> ks{empty};
  auto token = forge(R"({"alg":"HS256","typ":"JWT","kid":"k0"})", payload_json(), "");
  auto x = jwt::verify(token, ks, issuer, audience, now, 30);
  CAF_CHECK_EQUAL(reason(x), "unknown key id");
}

CAF_TEST(alg none and other algorithms are rejected) {
  auto payload = crypto::base64url_encode(payload_json());
  auto none = crypto::base64url_encode(R"({"alg":"none","typ":"JWT","kid":"k2"})");
  CAF_CHECK_EQUAL(reason(check(none + "." + payload + ".")), "unsupported algorithm");
  auto none_signed = forge(R"({"alg":"none","typ":"JWT","kid":"k2"})", payload_json(),
                           current.secret);
  CAF_CHECK_EQUAL(reason(check(none_signed)), "unsupported algorithm");
  for (auto alg : {"HS384", "HS512", "RS256", "hs256", "HS256 ", ""}) {
    auto header = std::string{R"({"alg":")"} + alg + R"(","typ":"JWT","kid":"k2"})";
    CAF_CHECK_EQUAL(reason(check(forge(header, payload_json(), current.secret))),
                    "unsupported algorithm");
  }
  auto missing = forge(R"({"typ":"JWT","kid":"k2"})", payload_json(), current.secret);
  CAF_CHECK_EQUAL(reason(check(missing)), "unsupported algorithm");
  auto numeric = forge(R"({"alg":256,"typ":"JWT","kid":"k2"})", payload_json(), current.secret);
  CAF_CHECK_EQUAL(reason(check(numeric)), "unsupported algorithm");
}

CAF_TEST(a token expired beyond the skew is rejected) {
  auto token = jwt::sign(sample(), current); // exp = now + 3600
  CAF_CHECK_EQUAL(reason(check(token, now + 3600 + 30)), "expired token");
  CAF_CHECK_EQUAL(reason(check(token, now + 3600 + 31)), "expired token");
  CAF_CHECK_EQUAL(reason(check(token, now + 7200)), "expired token");
}

CAF_TEST(a token expired within the skew is accepted) {
  auto token = jwt::sign(sample(), current);
  CAF_CHECK(check(token, now + 3599));
  CAF_CHECK(check(token, now + 3600));
  CAF_CHECK(check(token, now + 3600 + 29));
  // Without skew, exp itself is already too late.
  CAF_CHECK_EQUAL(reason(jwt::verify(token, keys, issuer, audience, now + 3600, 0)),
                  "expired token");
}

CAF_TEST(a token that is not yet valid is rejected) {
  auto c = sample();
  c.nbf = now + 600;
  c.exp = now + 4200;
  auto token = jwt::sign(c, current);
  CAF_CHECK_EQUAL(reason(check(token)), "token not yet valid");
  CAF_CHECK_EQUAL(reason(check(token, now + 569)), "token not yet valid");
  // Within the skew of its nbf it is accepted.
  CAF_CHECK(check(token, now + 570));
  CAF_CHECK(check(token, now + 600));
}

CAF_TEST(a token from another issuer is rejected) {
  auto c = sample();
  c.iss = "https://evil.example/";
  CAF_CHECK_EQUAL(reason(check(jwt::sign(c, current))), "wrong issuer");
  auto no_iss = forge(R"({"alg":"HS256","kid":"k2"})",
                      R"({"sub":"u1","aud":")" + audience + R"(","exp":1700003600})",
                      current.secret);
  CAF_CHECK_EQUAL(reason(check(no_iss)), "wrong issuer");
}

CAF_TEST(a token for another audience is rejected) {
  auto c = sample();
  c.aud = "other-api";
  CAF_CHECK_EQUAL(reason(check(jwt::sign(c, current))), "wrong audience");
}

CAF_TEST(the audience is checked against the audience and not the issuer) {
  // The old API compared aud with the issuer: a token whose aud is the issuer
  // must fail, one whose aud is the audience must pass, even when they differ.
  auto c = sample();
  c.aud = issuer;
  CAF_CHECK_EQUAL(reason(check(jwt::sign(c, current))), "wrong audience");
  CAF_CHECK(check(jwt::sign(sample(), current)));
  // Verifying with issuer == audience configured differently is also strict.
  auto x = jwt::verify(jwt::sign(sample(), current), keys, issuer, issuer, now, 30);
  CAF_CHECK_EQUAL(reason(x), "wrong audience");
}

CAF_TEST(an audience array containing the audience is accepted) {
  auto header = R"({"alg":"HS256","typ":"JWT","kid":"k2"})";
  auto with = forge(header,
                    R"({"sub":"u1","iss":")" + issuer + R"(","aud":["other",")" + audience
                      + R"("],"exp":1700003600})",
                    current.secret);
  auto x = check(with);
  CAF_REQUIRE(x);
  CAF_CHECK_EQUAL(x->aud, audience);
  auto without = forge(header,
                       R"({"sub":"u1","iss":")" + issuer
                         + R"(","aud":["other","more"],"exp":1700003600})",
                       current.secret);
  CAF_CHECK_EQUAL(reason(check(without)), "wrong audience");
}

CAF_TEST(a token signed by a retired key still verifies) {
  auto token = jwt::sign(sample(), retired);
  auto x = check(token);
  CAF_REQUIRE(x);
  CAF_CHECK_EQUAL(x->unique_name, "admin");
  // Once the key is gone from the set, it no longer does.
  std::vector<signing_key> only_current{current};
  CAF_CHECK_EQUAL(reason(jwt::verify(token, only_current, issuer, audience, now, 30)),
                  "unknown key id");
}

CAF_TEST(a role given as a single string is accepted) {
  auto token = forge(R"({"alg":"HS256","typ":"JWT","kid":"k2"})",
                     payload_json(R"(,"role":"Viewer")"), current.secret);
  auto x = check(token);
  CAF_REQUIRE(x);
  CAF_CHECK_EQUAL(x->roles, std::vector<std::string>{"Viewer"});
}

CAF_TEST(claims of the wrong type are rejected) {
  auto header = std::string{R"({"alg":"HS256","typ":"JWT","kid":"k2"})"};
  CAF_CHECK_EQUAL(reason(check(forge(header, payload_json(R"(,"role":[1])"), current.secret))),
                  "malformed claims");
  CAF_CHECK_EQUAL(reason(check(forge(header, payload_json(R"(,"email":false)"), current.secret))),
                  "malformed claims");
  auto no_exp = forge(header,
                      R"({"sub":"u1","iss":")" + issuer + R"(","aud":")" + audience + R"("})",
                      current.secret);
  CAF_CHECK_EQUAL(reason(check(no_exp)), "missing expiry");
  auto text_exp = forge(header,
                        R"({"sub":"u1","iss":")" + issuer + R"(","aud":")" + audience
                          + R"(","exp":"1700003600"})",
                        current.secret);
  CAF_CHECK_EQUAL(reason(check(text_exp)), "missing expiry");
  auto no_sub = forge(header,
                      R"({"iss":")" + issuer + R"(","aud":")" + audience
                        + R"(","exp":1700003600})",
                      current.secret);
  CAF_CHECK_EQUAL(reason(check(no_sub)), "missing subject");
}

CAF_TEST(garbage tokens are rejected without throwing) {
  auto token = jwt::sign(sample(), current);
  auto parts = split(token);
  const std::string garbage[] = {
    "",
    "abc",
    parts[0],
    parts[0] + "." + parts[1],
    token + ".",
    token + "." + parts[2],
    "..",
    "...",
    "!!!." + parts[1] + "." + parts[2],
    parts[0] + ".!!!." + parts[2],
    parts[0] + "." + parts[1] + ".!!!",
    crypto::base64url_encode("not json") + "." + parts[1] + "." + parts[2],
    crypto::base64url_encode("[1,2]") + "." + parts[1] + "." + parts[2],
    crypto::base64url_encode(R"({"alg":"HS256")") + "." + parts[1] + "." + parts[2],
    std::string(20000, 'a') + "." + parts[1] + "." + parts[2],
    std::string{"\0.\0.\0", 5},
  };
  for (auto& g : garbage) {
    caf::expected<jwt::claims> x{caf::make_error(errc::internal, "unset")};
    try {
      x = check(g);
    } catch (...) {
      CAF_FAIL("verify threw for " << g.substr(0, 80));
    }
    CAF_CHECK(!x);
    CAF_CHECK(errc_of(x.error()) == errc::unauthorized);
    CAF_CHECK(!error_detail(x.error()).empty());
  }
  // A validly signed payload that is not JSON.
  auto not_json = forge(R"({"alg":"HS256","kid":"k2"})", "{oops", current.secret);
  CAF_CHECK_EQUAL(reason(check(not_json)), "malformed token payload");
}

CAF_TEST_FIXTURE_SCOPE_END()
