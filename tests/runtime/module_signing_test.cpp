#define CAF_SUITE module_signing
#include "caf/test/dsl.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/module_signing.hpp"

using namespace hotswap;
namespace fs = std::filesystem;

namespace {

struct pkey_deleter {
  void operator()(EVP_PKEY* x) const {
    EVP_PKEY_free(x);
  }
};

struct bio_deleter {
  void operator()(BIO* x) const {
    BIO_free(x);
  }
};

using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  auto len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string public_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, bio_deleter> bio{BIO_new(BIO_s_mem())};
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1)
    return {};
  return bio_text(bio.get());
}

/// PKCS#8 ("BEGIN PRIVATE KEY"), unencrypted.
std::string private_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, bio_deleter> bio{BIO_new(BIO_s_mem())};
  if (!bio
      || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return {};
  return bio_text(bio.get());
}

std::string read_file(const fs::path& path) {
  std::ifstream in{path, std::ios::binary};
  return std::string{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Runs a shell command; true on exit status 0.
bool run(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

std::string sh_quote(const fs::path& path) {
  std::string out = "'";
  for (char c : path.string()) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

/// One generated key pair, written to <dir>/<name>.pem and <name>.pub.pem.
struct key_pair {
  std::string priv;
  std::string pub;
  fs::path priv_path;
  fs::path pub_path;
};

/// The keys of this suite, generated once (RSA generation is slow) in a
/// temporary directory that is removed at exit.
struct key_store {
  fs::path dir;
  key_pair rsa2048;
  key_pair rsa2048_other;
  key_pair rsa1024;
  key_pair p256;
  key_pair p384;

  key_store() {
    dir = fs::temp_directory_path() / ("hotswap-modsig-" + crypto::random_hex(8));
    fs::create_directories(dir);
    rsa2048 = make("rsa2048", pkey_ptr{EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})});
    rsa2048_other
      = make("rsa2048-other", pkey_ptr{EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})});
    rsa1024 = make("rsa1024", pkey_ptr{EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024})});
    p256 = make("p256", pkey_ptr{EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")});
    p384 = make("p384", pkey_ptr{EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384")});
  }

  ~key_store() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  key_pair make(const std::string& name, pkey_ptr key) {
    key_pair out;
    if (!key)
      return out; // the tests' CAF_REQUIREs on the PEMs fail
    out.priv = private_pem(key.get());
    out.pub = public_pem(key.get());
    out.priv_path = dir / (name + ".pem");
    out.pub_path = dir / (name + ".pub.pem");
    write_file(out.priv_path, out.priv);
    write_file(out.pub_path, out.pub);
    return out;
  }
};

const key_store& keys() {
  static key_store store;
  return store;
}

/// A stand-in for module bytes: every byte value, a few times over.
std::string sample_data() {
  std::string out;
  for (int round = 0; round < 40; ++round)
    for (int i = 0; i < 256; ++i)
      out += static_cast<char>((i * 7 + round) & 0xff);
  return out;
}

/// The key id computed independently: openssl CLI DER export + SHA-256.
std::string cli_key_id(const fs::path& pub_path) {
  auto der = keys().dir / (pub_path.filename().string() + ".der");
  if (!run("openssl pkey -pubin -in " + sh_quote(pub_path) + " -outform DER -out "
           + sh_quote(der)))
    return "openssl pkey failed";
  return crypto::hex_encode(crypto::sha256(read_file(der))).substr(0, 16);
}

} // namespace

CAF_TEST(an RSA-2048 signature verifies and names the signing key) {
  auto& k = keys();
  CAF_REQUIRE(!k.rsa2048.pub.empty());
  auto trusted = modsig::trusted_keys::load_files({k.rsa2048.pub_path.string()});
  CAF_REQUIRE(trusted);
  CAF_REQUIRE_EQUAL(trusted->keys().size(), 1u);
  CAF_CHECK_EQUAL(trusted->keys()[0].algorithm, "RSA-2048");
  CAF_CHECK_EQUAL(trusted->keys()[0].source, k.rsa2048.pub_path.string());
  auto data = sample_data();
  auto sig = modsig::sign(k.rsa2048.priv, data);
  CAF_REQUIRE(sig);
  CAF_CHECK_EQUAL(sig->size(), 256u);
  auto id = trusted->verify(data, *sig);
  CAF_REQUIRE(id);
  CAF_CHECK_EQUAL(*id, trusted->keys()[0].key_id);
  CAF_CHECK_EQUAL(*id, cli_key_id(k.rsa2048.pub_path));
}

CAF_TEST(an ECDSA P-256 signature verifies and names the signing key) {
  auto& k = keys();
  CAF_REQUIRE(!k.p256.pub.empty());
  auto trusted = modsig::trusted_keys::load_files(
    {k.rsa2048.pub_path.string(), k.p256.pub_path.string()});
  CAF_REQUIRE(trusted);
  CAF_REQUIRE_EQUAL(trusted->keys().size(), 2u);
  CAF_CHECK_EQUAL(trusted->keys()[1].algorithm, "ECDSA-P256");
  auto data = sample_data();
  auto sig = modsig::sign(k.p256.priv, data);
  CAF_REQUIRE(sig);
  auto id = trusted->verify(data, *sig);
  CAF_REQUIRE(id);
  CAF_CHECK_EQUAL(*id, trusted->keys()[1].key_id);
  CAF_CHECK_EQUAL(*id, cli_key_id(k.p256.pub_path));
  CAF_CHECK_NOT_EQUAL(*id, trusted->keys()[0].key_id);
}

CAF_TEST(key ids are 16 lower-case hex digits and equal for the public and private PEM) {
  auto& k = keys();
  for (auto* pair : {&k.rsa2048, &k.p256, &k.rsa1024}) {
    auto from_pub = modsig::key_id_of_pem(pair->pub);
    auto from_priv = modsig::key_id_of_pem(pair->priv);
    CAF_REQUIRE(from_pub);
    CAF_REQUIRE(from_priv);
    CAF_CHECK_EQUAL(*from_pub, *from_priv);
    CAF_CHECK_EQUAL(from_pub->size(), 16u);
    CAF_CHECK_EQUAL(from_pub->find_first_not_of("0123456789abcdef"), std::string::npos);
    CAF_CHECK_EQUAL(*from_pub, cli_key_id(pair->pub_path));
  }
  CAF_CHECK(!modsig::key_id_of_pem("not a key"));
}

CAF_TEST(a tampered byte makes the signature fail) {
  auto& k = keys();
  auto trusted = modsig::trusted_keys::from_pem({k.rsa2048.pub, k.p256.pub});
  CAF_REQUIRE(trusted);
  CAF_CHECK_EQUAL(trusted->keys()[0].source, "pem#0");
  CAF_CHECK_EQUAL(trusted->keys()[1].source, "pem#1");
  auto data = sample_data();
  for (auto* pair : {&k.rsa2048, &k.p256}) {
    auto sig = modsig::sign(pair->priv, data);
    CAF_REQUIRE(sig);
    CAF_REQUIRE(trusted->verify(data, *sig));
    for (size_t pos : {size_t{0}, data.size() / 2, data.size() - 1}) {
      auto tampered = data;
      tampered[pos] = static_cast<char>(tampered[pos] ^ 0x01);
      auto res = trusted->verify(tampered, *sig);
      CAF_CHECK(!res);
      if (!res)
        CAF_CHECK_EQUAL(errc_of(res.error()), errc::invalid_argument);
    }
    auto bad_sig = *sig;
    bad_sig[bad_sig.size() / 2] = static_cast<char>(bad_sig[bad_sig.size() / 2] ^ 0x40);
    CAF_CHECK(!trusted->verify(data, bad_sig));
    CAF_CHECK(!trusted->verify(data, sig->substr(0, sig->size() - 1)));
    CAF_CHECK(!trusted->verify(data + "x", *sig));
  }
  CAF_CHECK(!trusted->verify(data, ""));
}

CAF_TEST(a signature by an untrusted key fails) {
  auto& k = keys();
  auto trusted = modsig::trusted_keys::from_pem({k.rsa2048.pub, k.p256.pub});
  CAF_REQUIRE(trusted);
  auto data = sample_data();
  auto sig = modsig::sign(k.rsa2048_other.priv, data);
  CAF_REQUIRE(sig);
  auto res = trusted->verify(data, *sig);
  CAF_REQUIRE(!res);
  CAF_CHECK_EQUAL(errc_of(res.error()), errc::invalid_argument);
  CAF_CHECK_NOT_EQUAL(error_detail(res.error()).find("does not verify"), std::string::npos);
}

CAF_TEST(an empty key set verifies nothing) {
  modsig::trusted_keys none;
  CAF_CHECK(none.empty());
  CAF_CHECK(none.keys().empty());
  auto sig = modsig::sign(keys().rsa2048.priv, "data");
  CAF_REQUIRE(sig);
  auto res = none.verify("data", *sig);
  CAF_REQUIRE(!res);
  CAF_CHECK_EQUAL(errc_of(res.error()), errc::invalid_argument);
  auto loaded = modsig::trusted_keys::load_files({});
  CAF_REQUIRE(loaded);
  CAF_CHECK(loaded->empty());
}

CAF_TEST(load_files refuses RSA-1024 and P-384 keys naming the file) {
  auto& k = keys();
  auto weak = modsig::trusted_keys::load_files(
    {k.rsa2048.pub_path.string(), k.rsa1024.pub_path.string()});
  CAF_REQUIRE(!weak);
  CAF_CHECK_EQUAL(errc_of(weak.error()), errc::config_invalid);
  auto msg = error_detail(weak.error());
  CAF_MESSAGE("RSA-1024: " << msg);
  CAF_CHECK_NOT_EQUAL(msg.find("auth.trusted_module_keys"), std::string::npos);
  CAF_CHECK_NOT_EQUAL(msg.find(k.rsa1024.pub_path.string()), std::string::npos);
  CAF_CHECK_NOT_EQUAL(msg.find("1024"), std::string::npos);
  auto p384 = modsig::trusted_keys::load_files({k.p384.pub_path.string()});
  CAF_REQUIRE(!p384);
  CAF_CHECK_EQUAL(errc_of(p384.error()), errc::config_invalid);
  msg = error_detail(p384.error());
  CAF_MESSAGE("P-384: " << msg);
  CAF_CHECK_NOT_EQUAL(msg.find("auth.trusted_module_keys"), std::string::npos);
  CAF_CHECK_NOT_EQUAL(msg.find(k.p384.pub_path.string()), std::string::npos);
  CAF_CHECK_NOT_EQUAL(msg.find("secp384r1"), std::string::npos);
  // The same policy for in-memory keys and for signing.
  auto mem = modsig::trusted_keys::from_pem({k.p384.pub});
  CAF_REQUIRE(!mem);
  CAF_CHECK_EQUAL(errc_of(mem.error()), errc::invalid_argument);
  CAF_CHECK(!modsig::sign(k.rsa1024.priv, "data"));
  CAF_CHECK(!modsig::sign(k.p384.priv, "data"));
}

CAF_TEST(load_files refuses a missing file and a non-key naming the file) {
  auto& k = keys();
  auto missing = (k.dir / "does-not-exist.pem").string();
  auto res = modsig::trusted_keys::load_files({k.rsa2048.pub_path.string(), missing});
  CAF_REQUIRE(!res);
  CAF_CHECK_EQUAL(errc_of(res.error()), errc::config_invalid);
  auto msg = error_detail(res.error());
  CAF_MESSAGE("missing: " << msg);
  CAF_CHECK_NOT_EQUAL(msg.find("auth.trusted_module_keys"), std::string::npos);
  CAF_CHECK_NOT_EQUAL(msg.find(missing), std::string::npos);
  auto garbage = k.dir / "garbage.pem";
  write_file(garbage, "hello, not a key\n");
  res = modsig::trusted_keys::load_files({garbage.string()});
  CAF_REQUIRE(!res);
  msg = error_detail(res.error());
  CAF_CHECK_EQUAL(msg, "auth.trusted_module_keys: " + garbage.string() + ": not a PEM public key");
  // A private key where a public key belongs is refused with a hint.
  res = modsig::trusted_keys::load_files({k.rsa2048.priv_path.string()});
  CAF_REQUIRE(!res);
  msg = error_detail(res.error());
  CAF_CHECK_NOT_EQUAL(msg.find(k.rsa2048.priv_path.string()), std::string::npos);
  CAF_CHECK_NOT_EQUAL(msg.find("private key"), std::string::npos);
}

CAF_TEST(signatures made by the openssl CLI verify) {
  auto& k = keys();
  auto trusted = modsig::trusted_keys::load_files(
    {k.rsa2048.pub_path.string(), k.p256.pub_path.string()});
  CAF_REQUIRE(trusted);
  auto data = sample_data();
  auto data_path = k.dir / "module.so";
  write_file(data_path, data);
  size_t index = 0;
  for (auto* pair : {&k.rsa2048, &k.p256}) {
    auto sig_path = k.dir / ("cli-" + std::to_string(index) + ".sig");
    CAF_REQUIRE(run("openssl dgst -sha256 -sign " + sh_quote(pair->priv_path) + " -out "
                    + sh_quote(sig_path) + " " + sh_quote(data_path)));
    auto sig = read_file(sig_path);
    CAF_REQUIRE(!sig.empty());
    auto id = trusted->verify(data, sig);
    CAF_REQUIRE(id);
    CAF_CHECK_EQUAL(*id, trusted->keys()[index].key_id);
    ++index;
  }
}

CAF_TEST(the openssl CLI verifies signatures made by sign) {
  auto& k = keys();
  auto data = sample_data();
  auto data_path = k.dir / "module-for-cli.so";
  write_file(data_path, data);
  for (auto* pair : {&k.rsa2048, &k.p256}) {
    auto sig = modsig::sign(pair->priv, data);
    CAF_REQUIRE(sig);
    auto sig_path = k.dir / "ours.sig";
    write_file(sig_path, *sig);
    CAF_CHECK(run("openssl dgst -sha256 -verify " + sh_quote(pair->pub_path) + " -signature "
                  + sh_quote(sig_path) + " " + sh_quote(data_path)));
  }
}

CAF_TEST(RSA signatures from sign are byte-identical to the openssl CLI) {
  auto& k = keys();
  auto data = sample_data();
  auto data_path = k.dir / "module-rsa.so";
  auto sig_path = k.dir / "module-rsa.so.sig";
  write_file(data_path, data);
  CAF_REQUIRE(run("openssl dgst -sha256 -sign " + sh_quote(k.rsa2048.priv_path) + " -out "
                  + sh_quote(sig_path) + " " + sh_quote(data_path)));
  auto cli = read_file(sig_path);
  auto ours = modsig::sign(k.rsa2048.priv, data);
  CAF_REQUIRE(ours);
  CAF_CHECK_EQUAL(ours->size(), cli.size());
  CAF_CHECK(*ours == cli);
}

CAF_TEST(sign accepts traditional PEM private keys and refuses non-keys) {
  auto& k = keys();
  auto trad = k.dir / "rsa-traditional.pem";
  CAF_REQUIRE(run("openssl pkey -in " + sh_quote(k.rsa2048.priv_path)
                  + " -traditional -out " + sh_quote(trad)));
  auto pem = read_file(trad);
  CAF_REQUIRE_NOT_EQUAL(pem.find("BEGIN RSA PRIVATE KEY"), std::string::npos);
  auto a = modsig::sign(pem, "payload");
  auto b = modsig::sign(k.rsa2048.priv, "payload");
  CAF_REQUIRE(a);
  CAF_REQUIRE(b);
  CAF_CHECK(*a == *b);
  auto ec_trad = k.dir / "ec-traditional.pem";
  CAF_REQUIRE(run("openssl pkey -in " + sh_quote(k.p256.priv_path) + " -traditional -out "
                  + sh_quote(ec_trad)));
  auto ec_sig = modsig::sign(read_file(ec_trad), "payload");
  CAF_REQUIRE(ec_sig);
  auto trusted = modsig::trusted_keys::from_pem({k.p256.pub});
  CAF_REQUIRE(trusted);
  CAF_CHECK(trusted->verify("payload", *ec_sig));
  auto bad = modsig::sign("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "x");
  CAF_REQUIRE(!bad);
  CAF_CHECK_EQUAL(errc_of(bad.error()), errc::invalid_argument);
  CAF_CHECK(!modsig::sign(k.rsa2048.pub, "x"));
}

CAF_TEST(digest is sha256 followed by the lower-case hex digest) {
  CAF_CHECK_EQUAL(modsig::digest(""),
                  "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CAF_CHECK_EQUAL(modsig::digest("abc"),
                  "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
