#pragma once

// Plain records that cross mailboxes and the store boundary. Each has an
// inspect() overload and is registered in hotswap::register_types().

#include <cstdint>
#include <string>
#include <vector>

#include "caf/meta/type_name.hpp"

namespace hotswap {

/// Milliseconds since the Unix epoch (UTC).
using millis = int64_t;

/// The durable state of one entity (tenant, deployment, approval). One row
/// per entity; `epoch` is the fencing epoch of its current owner.
struct snapshot_record {
  std::string kind;       ///< "tenant", "deployment", "approval"
  std::string id;
  std::string tenant_id;  ///< empty for platform-level entities
  std::string status;     ///< indexed for listing (e.g. "Active")
  std::string unique_key; ///< optional unique secondary key per kind (e.g. lower-case subdomain)
  std::string owner_node;
  int64_t epoch = 0;
  int64_t seq = 0;        ///< bumped on every successful put
  std::string body;       ///< JSON text of the entity state; empty = never written
  millis created_at = 0;
  millis updated_at = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, snapshot_record& x) {
  return f(caf::meta::type_name("snapshot_record"), x.kind, x.id, x.tenant_id, x.status,
           x.unique_key, x.owner_node, x.epoch, x.seq, x.body, x.created_at, x.updated_at);
}

inline bool operator==(const snapshot_record& a, const snapshot_record& b) {
  return a.kind == b.kind && a.id == b.id && a.tenant_id == b.tenant_id && a.status == b.status
         && a.unique_key == b.unique_key && a.owner_node == b.owner_node && a.epoch == b.epoch
         && a.seq == b.seq && a.body == b.body;
}

/// One audit log entry. Written in the same transaction as the state change it
/// records.
struct audit_event {
  int64_t id = 0;         ///< assigned by the store
  millis at = 0;          ///< assigned by the caller (0 = store's clock)
  std::string category;   ///< Authentication, Tenant, User, Deployment, Approval, Module, Key
  std::string action;     ///< e.g. "TenantCreated", "LoginFailed"
  std::string result;     ///< "Success" | "Failure"
  std::string entity_kind;
  std::string entity_id;
  std::string tenant_id;
  std::string actor_user; ///< user name of who did it ("system" for the node itself)
  std::string source_ip;
  std::string trace_id;
  std::string message;    ///< human-readable summary
  std::string detail;     ///< JSON text with structured detail ("{}" when none)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, audit_event& x) {
  return f(caf::meta::type_name("audit_event"), x.id, x.at, x.category, x.action, x.result,
           x.entity_kind, x.entity_id, x.tenant_id, x.actor_user, x.source_ip, x.trace_id,
           x.message, x.detail);
}

/// A filter over audit events; empty strings and zero times mean "any".
struct audit_query {
  std::string category;
  std::string trace_id;
  std::string entity_kind;
  std::string entity_id;
  std::string actor_user;
  millis from = 0;
  millis to = 0;
  int32_t page_number = 1; ///< 1-based
  int32_t page_size = 50;  ///< 1..100
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, audit_query& x) {
  return f(caf::meta::type_name("audit_query"), x.category, x.trace_id, x.entity_kind,
           x.entity_id, x.actor_user, x.from, x.to, x.page_number, x.page_size);
}

/// A filter over snapshots of one kind, newest first.
struct snapshot_query {
  std::string kind;
  std::string status;     ///< empty = any
  std::string tenant_id;  ///< empty = any
  int32_t limit = 100;
  int32_t offset = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, snapshot_query& x) {
  return f(caf::meta::type_name("snapshot_query"), x.kind, x.status, x.tenant_id, x.limit,
           x.offset);
}

/// A user account. `password_hash` is a self-describing KDF string.
struct user_record {
  std::string id;
  std::string username;   ///< unique, case-insensitive
  std::string email;
  std::string full_name;
  std::string password_hash;
  std::vector<std::string> roles; ///< "Viewer", "Deployer", "Admin"
  std::string tenant_id;  ///< empty = platform user
  bool active = true;
  int32_t failed_attempts = 0;
  millis locked_until = 0;
  millis created_at = 0;
  millis updated_at = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_record& x) {
  return f(caf::meta::type_name("user_record"), x.id, x.username, x.email, x.full_name,
           x.password_hash, x.roles, x.tenant_id, x.active, x.failed_attempts, x.locked_until,
           x.created_at, x.updated_at);
}

/// An HS256 signing key for JWTs, shared by all nodes through the store.
struct signing_key {
  std::string kid;
  std::string secret;     ///< raw key bytes
  millis created_at = 0;
  millis retired_at = 0;  ///< 0 = current; retired keys still verify for the overlap window
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, signing_key& x) {
  return f(caf::meta::type_name("signing_key"), x.kid, x.secret, x.created_at, x.retired_at);
}

/// What a claim returns: the new fencing epoch and the entity's row after the
/// claim (new epoch and owner; body and status as stored, body empty for an
/// entity that was never written).
struct claim_result {
  int64_t epoch = 0;
  snapshot_record snapshot;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, claim_result& x) {
  return f(caf::meta::type_name("claim_result"), x.epoch, x.snapshot);
}

/// One uploaded module version (the artifact's metadata; its bytes are
/// stored beside it and read separately). Versions are immutable.
struct module_record {
  std::string name;
  std::string version;
  std::string digest;        ///< "sha256:<hex>" of the bytes
  int64_t size = 0;          ///< bytes
  std::string signature;     ///< base64 of the raw signature; empty when unsigned
  bool is_signed = false;
  std::string signer_key_id; ///< key id of the trusted key that verified it
  std::string description;
  std::string abi_token;     ///< from the file's .hotswap_abi section
  std::string tenant_id;     ///< uploader's tenant; empty = platform
  std::string uploaded_by;   ///< user name
  millis uploaded_at = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, module_record& x) {
  return f(caf::meta::type_name("module_record"), x.name, x.version, x.digest, x.size,
           x.signature, x.is_signed, x.signer_key_id, x.description, x.abi_token, x.tenant_id,
           x.uploaded_by, x.uploaded_at);
}

/// What storing a module version did: `created` is false when the same
/// name, version and digest were already stored (an idempotent retry).
struct module_put_result {
  module_record record;
  bool created = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, module_put_result& x) {
  return f(caf::meta::type_name("module_put_result"), x.record, x.created);
}

} // namespace hotswap
