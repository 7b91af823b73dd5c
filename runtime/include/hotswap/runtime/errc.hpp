#pragma once

#include <cstdint>
#include <string>

#include "caf/error.hpp"
#include "caf/make_message.hpp"
#include "caf/message.hpp"

namespace hotswap {

/// Every failure hotswap reports across a mailbox or an API edge. Values are
/// explicitly numbered and never reused.
enum class errc : uint8_t {
  /// Not an error.
  none = 0,
  /// The request or a value in it is malformed or violates a rule.
  invalid_argument = 1,
  /// The addressed entity does not exist.
  not_found = 2,
  /// The request conflicts with the current state (duplicate, lifecycle guard).
  conflict = 3,
  /// A write carried an epoch lower than the stored one: ownership was lost.
  fenced = 4,
  /// Missing or invalid credentials.
  unauthorized = 5,
  /// Authenticated but not allowed.
  forbidden = 6,
  /// A rate limit or quota was exceeded.
  rate_limited = 7,
  /// A dependency (store, registry) is down or the node is draining.
  unavailable = 8,
  /// The store failed in an unexpected way.
  store_failure = 9,
  /// A configuration key is missing or invalid.
  config_invalid = 10,
  /// A request body exceeds its size limit.
  payload_too_large = 11,
  /// An operation did not finish before its deadline.
  timeout = 12,
  /// A broken invariant inside hotswap.
  internal = 13,
  /// The entity is owned by another node.
  not_owner = 14,
  /// A module failed to answer an invocation (its actor died or it replied
  /// with an error).
  module_failure = 15,
};

std::string to_string(errc x);

/// The HTTP status each errc maps to (one table, see errc.cpp).
int http_status(errc x);

/// Extracts the errc of a caf::error in the hotswap category, or errc::internal
/// for errors of other categories.
errc errc_of(const caf::error& e);

/// Returns the first string in the error's context, or an empty string.
std::string error_detail(const caf::error& e);

} // namespace hotswap

CAF_ERROR_CODE_ENUM(hotswap::errc, "hotswap")
