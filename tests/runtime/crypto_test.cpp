#define CAF_SUITE crypto
#include "caf/test/dsl.hpp"

#include <set>
#include <string>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"

using namespace hotswap;

namespace {

std::string hex(std::string_view raw) {
  return crypto::hex_encode(raw);
}

bool is_lower_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

} // namespace

CAF_TEST(base64 encodes the RFC 4648 test vectors) {
  CAF_CHECK_EQUAL(crypto::base64_encode(""), "");
  CAF_CHECK_EQUAL(crypto::base64_encode("f"), "Zg==");
  CAF_CHECK_EQUAL(crypto::base64_encode("fo"), "Zm8=");
  CAF_CHECK_EQUAL(crypto::base64_encode("foo"), "Zm9v");
  CAF_CHECK_EQUAL(crypto::base64_encode("foob"), "Zm9vYg==");
  CAF_CHECK_EQUAL(crypto::base64_encode("fooba"), "Zm9vYmE=");
  CAF_CHECK_EQUAL(crypto::base64_encode("foobar"), "Zm9vYmFy");
}

CAF_TEST(base64 decodes the RFC 4648 test vectors) {
  const char* plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char* coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (size_t i = 0; i < 7; ++i) {
    auto x = crypto::base64_decode(coded[i]);
    CAF_REQUIRE(x);
    CAF_CHECK_EQUAL(*x, plain[i]);
  }
}

CAF_TEST(base64url uses the URL alphabet without padding) {
  std::string bytes{"\xfb\xff\xbf", 3};
  CAF_CHECK_EQUAL(crypto::base64_encode(bytes), "+/+/");
  CAF_CHECK_EQUAL(crypto::base64url_encode(bytes), "-_-_");
  CAF_CHECK_EQUAL(crypto::base64url_encode("f"), "Zg");
  CAF_CHECK_EQUAL(crypto::base64url_encode("fo"), "Zm8");
  auto x = crypto::base64url_decode("-_-_");
  CAF_REQUIRE(x);
  CAF_CHECK_EQUAL(*x, bytes);
  auto y = crypto::base64url_decode("Zm8");
  CAF_REQUIRE(y);
  CAF_CHECK_EQUAL(*y, "fo");
}

CAF_TEST(base64 and base64url round trip every byte value and length) {
  std::string all;
  for (int i = 0; i < 256; ++i)
    all += static_cast<char>(i);
  for (size_t len = 0; len <= all.size(); len += 7) {
    auto bytes = all.substr(0, len);
    auto a = crypto::base64_decode(crypto::base64_encode(bytes));
    CAF_REQUIRE(a);
    CAF_CHECK(*a == bytes);
    auto b = crypto::base64url_decode(crypto::base64url_encode(bytes));
    CAF_REQUIRE(b);
    CAF_CHECK(*b == bytes);
  }
  auto r = crypto::random_bytes(1000);
  auto c = crypto::base64url_decode(crypto::base64url_encode(r));
  CAF_REQUIRE(c);
  CAF_CHECK(*c == r);
}

CAF_TEST(base64 rejects malformed input) {
  CAF_CHECK(!crypto::base64_decode("Zg="));      // length not a multiple of 4
  CAF_CHECK(!crypto::base64_decode("Z==="));     // too much padding
  CAF_CHECK(!crypto::base64_decode("Zg=a"));     // padding in the middle
  CAF_CHECK(!crypto::base64_decode("Zm9v\n"));   // whitespace
  CAF_CHECK(!crypto::base64_decode("-_-_"));     // URL alphabet
  CAF_CHECK(!crypto::base64_decode("Zh=="));     // non-canonical trailing bits
  CAF_CHECK(!crypto::base64url_decode("+/+/"));  // standard alphabet
  CAF_CHECK(!crypto::base64url_decode("Zg=="));  // padding
  CAF_CHECK(!crypto::base64url_decode("Z"));     // impossible length
  CAF_CHECK(!crypto::base64url_decode("Zh"));    // non-canonical trailing bits
  CAF_CHECK(!crypto::base64url_decode("Zm9v.")); // foreign character
  auto e = crypto::base64_decode("***=");
  CAF_REQUIRE(!e);
  CAF_CHECK(errc_of(e.error()) == errc::invalid_argument);
}

CAF_TEST(hex encoding is lower case) {
  CAF_CHECK_EQUAL(crypto::hex_encode(std::string{"\x00\x9f\xff", 3}), "009fff");
  CAF_CHECK_EQUAL(crypto::hex_encode(""), "");
}

CAF_TEST(sha256 matches the FIPS 180-2 test vectors) {
  CAF_CHECK_EQUAL(hex(crypto::sha256("abc")),
                  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CAF_CHECK_EQUAL(hex(crypto::sha256("")),
                  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

CAF_TEST(hmac sha256 matches RFC 4231 test case 2) {
  CAF_CHECK_EQUAL(hex(crypto::hmac_sha256("Jefe", "what do ya want for nothing?")),
                  "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

CAF_TEST(hmac sha256 accepts an empty key) {
  CAF_CHECK_EQUAL(hex(crypto::hmac_sha256("", "abc")),
                  "fd7adb152c05ef80dccf50a1fa4c05d5a3ec6da95575fc312ae7c5d091836351");
}

CAF_TEST(pbkdf2 sha256 matches the known test vectors) {
  // RFC 7914 section 11.
  CAF_CHECK_EQUAL(hex(crypto::pbkdf2_sha256("passwd", "salt", 1, 64)),
                  "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
                  "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783");
  // The RFC 6070 inputs with SHA-256.
  CAF_CHECK_EQUAL(hex(crypto::pbkdf2_sha256("password", "salt", 1, 32)),
                  "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b");
  CAF_CHECK_EQUAL(hex(crypto::pbkdf2_sha256("password", "salt", 4096, 32)),
                  "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a");
  CAF_CHECK_EQUAL(crypto::pbkdf2_sha256("password", "salt", 0, 32), "");
  CAF_CHECK_EQUAL(crypto::pbkdf2_sha256("password", "salt", 1, 0), "");
}

CAF_TEST(equal_ct compares contents and lengths) {
  CAF_CHECK(crypto::equal_ct("", ""));
  CAF_CHECK(crypto::equal_ct("abc", "abc"));
  CAF_CHECK(!crypto::equal_ct("abc", "abd"));
  CAF_CHECK(!crypto::equal_ct("abc", "abcd"));
  CAF_CHECK(!crypto::equal_ct("", "a"));
}

CAF_TEST(a hashed password verifies and a wrong one does not) {
  auto h = crypto::hash_password("correct horse battery staple", 600000);
  CAF_MESSAGE("hash: " << h);
  CAF_CHECK_EQUAL(h.rfind("pbkdf2-sha256$600000$", 0), 0u);
  CAF_CHECK(crypto::verify_password("correct horse battery staple", h));
  CAF_CHECK(!crypto::verify_password("correct horse battery stapl", h));
  CAF_CHECK(!crypto::verify_password("", h));
  // Salted: the same password hashes differently every time.
  auto h2 = crypto::hash_password("correct horse battery staple", 600000);
  CAF_CHECK_NOT_EQUAL(h, h2);
}

CAF_TEST(the hash format holds a 16 byte salt and a 32 byte key) {
  auto h = crypto::hash_password("pw", 600000);
  auto salt_at = h.find('$', h.find('$') + 1) + 1;
  auto key_at = h.find('$', salt_at) + 1;
  auto salt = crypto::base64_decode(std::string_view{h}.substr(salt_at, key_at - 1 - salt_at));
  auto key = crypto::base64_decode(std::string_view{h}.substr(key_at));
  CAF_REQUIRE(salt);
  CAF_REQUIRE(key);
  CAF_CHECK_EQUAL(salt->size(), 16u);
  CAF_CHECK_EQUAL(key->size(), 32u);
  CAF_CHECK_EQUAL(*key, crypto::pbkdf2_sha256("pw", *salt, 600000, 32));
}

CAF_TEST(iterations below the minimum are raised to 600000) {
  auto h = crypto::hash_password("secret", 1000);
  CAF_CHECK_EQUAL(h.rfind("pbkdf2-sha256$600000$", 0), 0u);
  CAF_CHECK(crypto::verify_password("secret", h));
  auto z = crypto::hash_password("secret", 0);
  CAF_CHECK_EQUAL(z.rfind("pbkdf2-sha256$600000$", 0), 0u);
}

CAF_TEST(verify_password uses the iterations stored in the hash) {
  std::string salt = "0123456789abcdef";
  auto key = crypto::pbkdf2_sha256("legacy", salt, 1000, 32);
  auto h = "pbkdf2-sha256$1000$" + crypto::base64_encode(salt) + "$" + crypto::base64_encode(key);
  CAF_CHECK(crypto::verify_password("legacy", h));
  CAF_CHECK(!crypto::verify_password("Legacy", h));
  auto h2 = "pbkdf2-sha256$1001$" + crypto::base64_encode(salt) + "$" + crypto::base64_encode(key);
  CAF_CHECK(!crypto::verify_password("legacy", h2));
}

CAF_TEST(malformed hashes never verify) {
  std::string salt = crypto::base64_encode("0123456789abcdef");
  std::string key = crypto::base64_encode(crypto::pbkdf2_sha256("pw", "0123456789abcdef", 1, 32));
  // The well-formed variant verifies, so every rejection below is the format's.
  CAF_CHECK(crypto::verify_password("pw", "pbkdf2-sha256$1$" + salt + "$" + key));
  const std::string bad[] = {
    "",
    "pw",
    "$$$",
    "pbkdf2-sha256$1$" + salt,
    "pbkdf2-sha256$1$" + salt + "$" + key + "$",
    "pbkdf2-sha512$1$" + salt + "$" + key,
    "PBKDF2-SHA256$1$" + salt + "$" + key,
    "pbkdf2-sha256$0$" + salt + "$" + key,
    "pbkdf2-sha256$-1$" + salt + "$" + key,
    "pbkdf2-sha256$+1$" + salt + "$" + key,
    "pbkdf2-sha256$1x$" + salt + "$" + key,
    "pbkdf2-sha256$$" + salt + "$" + key,
    "pbkdf2-sha256$99999999999$" + salt + "$" + key,
    "pbkdf2-sha256$1$$" + key,
    "pbkdf2-sha256$1$" + salt + "$",
    "pbkdf2-sha256$1$" + salt + "$" + key.substr(0, 20),
    "pbkdf2-sha256$1$!!!!$" + key,
    "pbkdf2-sha256$1$" + salt + "$" + key + "AAAA",
  };
  for (auto& h : bad) {
    CAF_MESSAGE("malformed: " << h);
    CAF_CHECK(!crypto::verify_password("pw", h));
  }
}

CAF_TEST(uuid4 is a lower case RFC 4122 version 4 uuid) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    auto u = crypto::uuid4();
    CAF_REQUIRE_EQUAL(u.size(), 36u);
    CAF_CHECK_EQUAL(u[8], '-');
    CAF_CHECK_EQUAL(u[13], '-');
    CAF_CHECK_EQUAL(u[18], '-');
    CAF_CHECK_EQUAL(u[23], '-');
    CAF_CHECK_EQUAL(u[14], '4');
    CAF_CHECK(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    std::string digits;
    for (char c : u)
      if (c != '-')
        digits += c;
    CAF_CHECK_EQUAL(digits.size(), 32u);
    CAF_CHECK(is_lower_hex(digits));
    seen.insert(u);
  }
  CAF_CHECK_EQUAL(seen.size(), 100u);
}

CAF_TEST(random_hex yields two hex digits per byte) {
  auto trace = crypto::random_hex(16);
  auto span = crypto::random_hex(8);
  CAF_CHECK_EQUAL(trace.size(), 32u);
  CAF_CHECK_EQUAL(span.size(), 16u);
  CAF_CHECK(is_lower_hex(trace));
  CAF_CHECK(is_lower_hex(span));
  CAF_CHECK_NOT_EQUAL(trace, crypto::random_hex(16));
  CAF_CHECK_EQUAL(crypto::random_hex(0), "");
  CAF_CHECK_EQUAL(crypto::random_bytes(64).size(), 64u);
}
