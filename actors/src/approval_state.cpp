// The pure half of approvals: transitions, timeRemaining and JSON (no CAF
// actors here; approval.cpp keeps its handlers thin by calling these).

#include "hotswap/actors/approval.hpp"

#include <boost/json.hpp>

#include "hotswap/actors/json_util.hpp"

namespace hotswap {

namespace json = boost::json;

namespace {

constexpr millis minute_ms = 60 * 1000;
constexpr millis hour_ms = 60 * minute_ms;
constexpr millis day_ms = 24 * hour_ms;

approval_transition refused(const approval& a, errc code, std::string reason) {
  approval_transition t;
  t.kind = approval_transition::refused;
  t.code = code;
  t.reason = std::move(reason);
  t.next = a;
  return t;
}

approval_transition unchanged(const approval& a) {
  approval_transition t;
  t.kind = approval_transition::unchanged;
  t.next = a;
  return t;
}

approval_transition changed(approval next, std::string action) {
  approval_transition t;
  t.kind = approval_transition::changed;
  t.next = std::move(next);
  t.action = std::move(action);
  return t;
}

bool past_deadline(const approval& a, millis now) {
  return now >= a.timeout_at;
}

json::value string_or_null(const std::string& s) {
  if (s.empty())
    return nullptr;
  return json::value(s);
}

} // namespace

approval_transition decide(const approval& a, const approval_decision& d, millis now) {
  if (a.status != "Pending")
    return refused(a, errc::conflict, "The approval for deployment " + a.execution_id
                                        + " is not pending (status " + a.status + ").");
  if (past_deadline(a, now))
    return refused(a, errc::conflict, "The approval for deployment " + a.execution_id
                                        + " has expired.");
  if (a.separation_of_duties && !a.requested_by_id.empty() && d.user_id == a.requested_by_id)
    return refused(a, errc::forbidden,
                   "Separation of duties: the user who created deployment " + a.execution_id
                     + " cannot decide its approval.");
  auto next = a;
  next.status = d.approve ? "Approved" : "Rejected";
  next.responded_at = now;
  next.responded_by = d.username;
  next.approver_email = d.approver_email;
  next.response_reason = d.reason;
  return changed(std::move(next), d.approve ? "ApprovalGranted" : "ApprovalRejected");
}

approval_transition expire(const approval& a, millis now) {
  if (a.status != "Pending" || !past_deadline(a, now))
    return unchanged(a);
  auto next = a;
  next.status = "Expired";
  next.responded_at = now;
  next.response_reason = "The approval timed out.";
  return changed(std::move(next), "ApprovalExpired");
}

std::string time_remaining(millis now, millis timeout_at) {
  auto left = timeout_at - now;
  if (left <= 0)
    return "Expired";
  auto days = left / day_ms;
  auto hours = (left % day_ms) / hour_ms;
  auto minutes = (left % hour_ms) / minute_ms;
  if (days >= 1)
    return std::to_string(days) + "d " + std::to_string(hours) + "h";
  if (hours >= 1)
    return std::to_string(hours) + "h " + std::to_string(minutes) + "m";
  return std::to_string(minutes) + "m";
}

std::string to_view_json(const approval& a) {
  json::object o;
  o["approvalId"] = a.approval_id;
  o["deploymentExecutionId"] = a.execution_id;
  o["moduleName"] = a.module_name;
  o["version"] = a.version;
  o["targetEnvironment"] = a.environment;
  o["requesterEmail"] = a.requester_email;
  o["status"] = a.status;
  o["requestedAt"] = rfc3339_or_null(a.requested_at);
  o["respondedAt"] = rfc3339_or_null(a.responded_at);
  o["respondedBy"] = string_or_null(a.responded_by);
  o["responseReason"] = string_or_null(a.response_reason);
  o["timeoutAt"] = rfc3339_or_null(a.timeout_at);
  return json::serialize(o);
}

std::string to_pending_json(const approval& a, millis now) {
  json::object o;
  o["approvalId"] = a.approval_id;
  o["deploymentExecutionId"] = a.execution_id;
  o["moduleName"] = a.module_name;
  o["version"] = a.version;
  o["targetEnvironment"] = a.environment;
  o["requesterEmail"] = a.requester_email;
  o["requestedAt"] = rfc3339_or_null(a.requested_at);
  o["timeoutAt"] = rfc3339_or_null(a.timeout_at);
  o["timeRemaining"] = time_remaining(now, a.timeout_at);
  return json::serialize(o);
}

std::string to_json(const approval& a) {
  // The API's names where the API has the field; times as integer millis so
  // the round trip is exact whatever the value.
  json::object o;
  o["approvalId"] = a.approval_id;
  o["deploymentExecutionId"] = a.execution_id;
  o["moduleName"] = a.module_name;
  o["version"] = a.version;
  o["targetEnvironment"] = a.environment;
  o["requesterEmail"] = a.requester_email;
  o["requestedBy"] = a.requested_by;
  o["requestedById"] = a.requested_by_id;
  o["tenantId"] = a.tenant_id;
  o["status"] = a.status;
  o["requestedAtMs"] = a.requested_at;
  o["timeoutAtMs"] = a.timeout_at;
  o["respondedAtMs"] = a.responded_at;
  o["respondedBy"] = a.responded_by;
  o["approverEmail"] = a.approver_email;
  o["responseReason"] = a.response_reason;
  o["separationOfDuties"] = a.separation_of_duties;
  return json::serialize(o);
}

bool from_json(const std::string& text, approval& a) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object())
    return false;
  auto& o = v.as_object();
  a.approval_id = get_string(o, "approvalId");
  a.execution_id = get_string(o, "deploymentExecutionId");
  a.module_name = get_string(o, "moduleName");
  a.version = get_string(o, "version");
  a.environment = get_string(o, "targetEnvironment");
  a.requester_email = get_string(o, "requesterEmail");
  a.requested_by = get_string(o, "requestedBy");
  a.requested_by_id = get_string(o, "requestedById");
  a.tenant_id = get_string(o, "tenantId");
  a.status = get_string(o, "status");
  a.requested_at = get_int(o, "requestedAtMs");
  a.timeout_at = get_int(o, "timeoutAtMs");
  a.responded_at = get_int(o, "respondedAtMs");
  a.responded_by = get_string(o, "respondedBy");
  a.approver_email = get_string(o, "approverEmail");
  a.response_reason = get_string(o, "responseReason");
  a.separation_of_duties = false;
  if (auto sod = o.if_contains("separationOfDuties"); sod && sod->is_bool())
    a.separation_of_duties = sod->as_bool();
  return !a.execution_id.empty()
         && (a.status == "Pending" || a.status == "Approved" || a.status == "Rejected"
             || a.status == "Expired");
}

} // namespace hotswap
