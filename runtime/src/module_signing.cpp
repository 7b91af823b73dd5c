#include "hotswap/runtime/module_signing.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hotswap/runtime/crypto.hpp"
#include "hotswap/runtime/errc.hpp"

namespace hotswap::modsig {

namespace {

/// The configuration key whose files load_files reads (named in its errors).
constexpr std::string_view config_key = "auth.trusted_module_keys";

/// A key file larger than this is not a PEM key (guards against pointing the
/// key at a module or a log by mistake).
constexpr std::streamoff max_key_file_size = 1 << 20;

constexpr int min_rsa_bits = 2048;

// -- OpenSSL ownership ------------------------------------------------------------

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

struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* x) const {
    EVP_MD_CTX_free(x);
  }
};

struct openssl_deleter {
  void operator()(unsigned char* x) const {
    OPENSSL_free(x);
  }
};

using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;
using bio_ptr = std::unique_ptr<BIO, bio_deleter>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, md_ctx_deleter>;
using openssl_bytes = std::unique_ptr<unsigned char, openssl_deleter>;

const unsigned char* bytes_of(std::string_view x) {
  return reinterpret_cast<const unsigned char*>(x.data());
}

/// A read-only memory BIO over `text` (nullptr when too large or out of memory).
bio_ptr memory_bio(std::string_view text) {
  if (text.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    return nullptr;
  return bio_ptr{BIO_new_mem_buf(text.data(), static_cast<int>(text.size()))};
}

/// Never prompts: an encrypted private key is refused instead of blocking on
/// the terminal (OpenSSL's default callback reads a passphrase from the tty).
int no_passphrase(char*, int, int, void*) {
  return -1;
}

pkey_ptr read_public(std::string_view pem) {
  auto bio = memory_bio(pem);
  if (!bio)
    return nullptr;
  pkey_ptr key{PEM_read_bio_PUBKEY(bio.get(), nullptr, no_passphrase, nullptr)};
  ERR_clear_error();
  return key;
}

pkey_ptr read_private(std::string_view pem) {
  auto bio = memory_bio(pem);
  if (!bio)
    return nullptr;
  pkey_ptr key{PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr)};
  ERR_clear_error();
  return key;
}

bool looks_like_private_key(std::string_view pem) {
  return pem.find("PRIVATE KEY-----") != std::string_view::npos;
}

/// The curve of an EC key as a NID, or NID_undef.
int ec_curve_nid(const EVP_PKEY* key, std::string& name) {
  char buf[80] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, buf, sizeof(buf), &len)
      != 1) {
    ERR_clear_error();
    name = "unknown";
    return NID_undef;
  }
  name.assign(buf, len);
  auto nid = OBJ_sn2nid(name.c_str());
  if (nid == NID_undef)
    nid = EC_curve_nist2nid(name.c_str());
  return nid;
}

/// The algorithm label of an acceptable key ("RSA-<bits>" or "ECDSA-P256"),
/// else the reason it is refused (`ok` false).
std::string classify(const EVP_PKEY* key, bool& ok) {
  ok = false;
  auto id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_RSA) {
    auto bits = EVP_PKEY_get_bits(key);
    if (bits < min_rsa_bits)
      return "RSA key of " + std::to_string(bits) + " bits is too weak (at least "
             + std::to_string(min_rsa_bits) + " bits required)";
    ok = true;
    return "RSA-" + std::to_string(bits);
  }
  if (id == EVP_PKEY_EC) {
    std::string curve;
    if (ec_curve_nid(key, curve) != NID_X9_62_prime256v1)
      return "EC key on curve " + curve
             + " is not supported (only P-256 / prime256v1 is accepted)";
    ok = true;
    return "ECDSA-P256";
  }
  if (id == EVP_PKEY_RSA_PSS)
    return "RSA-PSS keys are not supported (use a plain RSA key of at least 2048 bits)";
  const char* type = OBJ_nid2sn(id);
  return std::string{"unsupported key type "} + (type != nullptr ? type : "unknown")
         + " (RSA of at least 2048 bits or ECDSA P-256 required)";
}

/// First 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo; empty
/// when OpenSSL cannot encode the key.
std::string key_id_of(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  auto len = i2d_PUBKEY(key, &der);
  openssl_bytes owner{der};
  if (len <= 0 || der == nullptr) {
    ERR_clear_error();
    return {};
  }
  std::string_view view{reinterpret_cast<const char*>(der), static_cast<size_t>(len)};
  return crypto::hex_encode(crypto::sha256(view)).substr(0, 16);
}

/// A parsed public key or the reason it is refused.
struct parsed_key {
  pkey_ptr key;
  key_info info;
  std::string error;
};

parsed_key parse_public(std::string_view pem, std::string source) {
  parsed_key out;
  out.key = read_public(pem);
  if (!out.key) {
    if (looks_like_private_key(pem))
      out.error = "is a private key; configure the public key "
                  "(openssl pkey -in KEY.pem -pubout)";
    else
      out.error = "not a PEM public key";
    return out;
  }
  bool ok = false;
  auto algorithm = classify(out.key.get(), ok);
  if (!ok) {
    out.error = std::move(algorithm);
    out.key.reset();
    return out;
  }
  auto id = key_id_of(out.key.get());
  if (id.empty()) {
    out.error = "cannot encode the public key";
    out.key.reset();
    return out;
  }
  out.info = key_info{std::move(id), std::move(algorithm), std::move(source)};
  return out;
}

/// Reads a whole small file; false with a reason on failure.
bool read_key_file(const std::string& path, std::string& out, std::string& error) {
  errno = 0;
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    error = "cannot open the file";
    if (errno != 0)
      error += std::string{" ("} + std::strerror(errno) + ")";
    return false;
  }
  in.seekg(0, std::ios::end);
  auto size = static_cast<std::streamoff>(in.tellg());
  if (size < 0) {
    error = "cannot read the file";
    return false;
  }
  if (size > max_key_file_size) {
    error = "file too large for a PEM key (" + std::to_string(size) + " bytes)";
    return false;
  }
  in.seekg(0, std::ios::beg);
  out.assign(static_cast<size_t>(size), '\0');
  if (size > 0 && !in.read(out.data(), size)) {
    error = "cannot read the file";
    return false;
  }
  return true;
}

} // namespace

struct trusted_keys::impl {
  std::vector<key_info> infos;
  std::vector<pkey_ptr> keys; ///< parallel to infos; never modified after construction
};

trusted_keys::trusted_keys() : impl_(std::make_shared<const impl>()) {
  // nop
}

caf::expected<trusted_keys> trusted_keys::load_files(const std::vector<std::string>& paths) {
  try {
    auto state = std::make_shared<impl>();
    for (auto& path : paths) {
      auto fail = [&](const std::string& reason) {
        std::string msg{config_key};
        msg += ": ";
        msg += path;
        msg += ": ";
        msg += reason;
        return caf::make_error(errc::config_invalid, std::move(msg));
      };
      std::string pem;
      std::string error;
      if (!read_key_file(path, pem, error))
        return fail(error);
      auto parsed = parse_public(pem, path);
      if (!parsed.key)
        return fail(parsed.error);
      state->infos.emplace_back(std::move(parsed.info));
      state->keys.emplace_back(std::move(parsed.key));
    }
    trusted_keys result;
    result.impl_ = std::move(state);
    return result;
  } catch (const std::exception& e) {
    return caf::make_error(errc::config_invalid, std::string{config_key} + ": " + e.what());
  }
}

caf::expected<trusted_keys> trusted_keys::from_pem(const std::vector<std::string>& pems) {
  try {
    auto state = std::make_shared<impl>();
    for (size_t i = 0; i < pems.size(); ++i) {
      auto source = "pem#" + std::to_string(i);
      auto parsed = parse_public(pems[i], source);
      if (!parsed.key)
        return caf::make_error(errc::invalid_argument, source + ": " + parsed.error);
      state->infos.emplace_back(std::move(parsed.info));
      state->keys.emplace_back(std::move(parsed.key));
    }
    trusted_keys result;
    result.impl_ = std::move(state);
    return result;
  } catch (const std::exception& e) {
    return caf::make_error(errc::invalid_argument, e.what());
  }
}

caf::expected<std::string> trusted_keys::verify(std::string_view data,
                                                std::string_view signature) const {
  if (impl_->keys.empty())
    return caf::make_error(errc::invalid_argument,
                           "no trusted module keys configured (auth.trusted_module_keys)");
  if (signature.empty())
    return caf::make_error(errc::invalid_argument, "empty module signature");
  for (size_t i = 0; i < impl_->keys.size(); ++i) {
    md_ctx_ptr ctx{EVP_MD_CTX_new()};
    if (!ctx)
      return caf::make_error(errc::internal, "EVP_MD_CTX_new failed");
    auto ok = EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                                   impl_->keys[i].get())
                == 1
              && EVP_DigestVerify(ctx.get(), bytes_of(signature), signature.size(),
                                  bytes_of(data), data.size())
                   == 1;
    ERR_clear_error();
    if (ok)
      return impl_->infos[i].key_id;
  }
  return caf::make_error(errc::invalid_argument,
                         "module signature does not verify against any trusted key");
}

const std::vector<key_info>& trusted_keys::keys() const {
  return impl_->infos;
}

bool trusted_keys::empty() const {
  return impl_->infos.empty();
}

caf::expected<std::string> sign(std::string_view private_key_pem, std::string_view data) {
  try {
    auto key = read_private(private_key_pem);
    if (!key)
      return caf::make_error(errc::invalid_argument,
                             "not a PEM private key (or an encrypted one: decrypt it first)");
    bool ok = false;
    auto algorithm = classify(key.get(), ok);
    if (!ok)
      return caf::make_error(errc::invalid_argument, std::move(algorithm));
    md_ctx_ptr ctx{EVP_MD_CTX_new()};
    size_t len = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1
        || EVP_DigestSign(ctx.get(), nullptr, &len, bytes_of(data), data.size()) != 1) {
      ERR_clear_error();
      return caf::make_error(errc::invalid_argument, "cannot sign with this key");
    }
    std::string out(len, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len,
                       bytes_of(data), data.size())
        != 1) {
      ERR_clear_error();
      return caf::make_error(errc::invalid_argument, "cannot sign with this key");
    }
    out.resize(len); // ECDSA DER signatures may be shorter than the maximum
    return out;
  } catch (const std::exception& e) {
    return caf::make_error(errc::invalid_argument, e.what());
  }
}

caf::expected<std::string> key_id_of_pem(std::string_view pem) {
  try {
    auto key = read_public(pem);
    if (!key)
      key = read_private(pem);
    if (!key)
      return caf::make_error(errc::invalid_argument, "not a PEM public or private key");
    auto id = key_id_of(key.get());
    if (id.empty())
      return caf::make_error(errc::invalid_argument, "cannot encode the public key");
    return id;
  } catch (const std::exception& e) {
    return caf::make_error(errc::invalid_argument, e.what());
  }
}

std::string digest(std::string_view data) {
  return "sha256:" + crypto::hex_encode(crypto::sha256(data));
}

} // namespace hotswap::modsig
