#pragma once

// Module signatures: exactly what `openssl dgst -sha256 -sign KEY module.so`
// writes (RSA PKCS#1 v1.5 or ECDSA P-256 DER, over SHA-256 of the bytes),
// verified with OpenSSL's EVP API against the public keys trusted by config
// (auth.trusted_module_keys). Pure functions over bytes; loading key files is
// file I/O: do it at start-up or from a detached actor.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "caf/expected.hpp"

namespace hotswap::modsig {

/// One trusted public key.
struct key_info {
  std::string key_id;    ///< first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo
  std::string algorithm; ///< "RSA-2048" (any RSA >= 2048 bits: "RSA-<bits>") or "ECDSA-P256"
  std::string source;    ///< file path (or "pem#<index>" for in-memory keys)
};

/// The set of public keys modules may be signed with. Copyable, immutable,
/// thread-safe to share.
class trusted_keys {
public:
  trusted_keys();

  /// Reads PEM public keys (SubjectPublicKeyInfo, "-----BEGIN PUBLIC KEY-----")
  /// from files. Only RSA keys of at least 2048 bits and EC keys on P-256 are
  /// accepted. Errors (errc::config_invalid) name the file and the reason.
  static caf::expected<trusted_keys> load_files(const std::vector<std::string>& paths);

  /// The same from PEM text (source "pem#<index>"); errc::invalid_argument.
  static caf::expected<trusted_keys> from_pem(const std::vector<std::string>& pems);

  /// Verifies `signature` (raw bytes as openssl dgst writes them) over
  /// `data` against every trusted key; returns the key id of the key that
  /// verified. errc::invalid_argument when no trusted key verifies it (or
  /// when there is no trusted key at all).
  caf::expected<std::string> verify(std::string_view data, std::string_view signature) const;

  const std::vector<key_info>& keys() const;

  bool empty() const;

private:
  struct impl;
  std::shared_ptr<const impl> impl_;
};

/// Signs SHA-256(`data`) with a PEM private key (RSA -> PKCS#1 v1.5, EC
/// P-256 -> ECDSA DER), byte-for-byte what `openssl dgst -sha256 -sign`
/// produces for RSA (ECDSA signatures are randomized but verify the same).
/// errc::invalid_argument for an unreadable or unsupported key.
caf::expected<std::string> sign(std::string_view private_key_pem, std::string_view data);

/// The key id of a PEM public or private key (see key_info::key_id).
caf::expected<std::string> key_id_of_pem(std::string_view pem);

/// "sha256:<64 lower-case hex digits>" of `data`.
std::string digest(std::string_view data);

} // namespace hotswap::modsig
