#include "hotswap/runtime/types.hpp"

#include <string>

#include "caf/deep_to_string.hpp"
#include "caf/message.hpp"

#include "hotswap/runtime/errc.hpp"
#include "hotswap/runtime/events.hpp"
#include "hotswap/runtime/messages.hpp"
#include "hotswap/runtime/records.hpp"

namespace hotswap {

void register_runtime_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<snapshot_record>("snapshot_record");
  cfg.add_message_type<audit_event>("audit_event");
  cfg.add_message_type<audit_query>("audit_query");
  cfg.add_message_type<snapshot_query>("snapshot_query");
  cfg.add_message_type<user_record>("user_record");
  cfg.add_message_type<signing_key>("signing_key");
  cfg.add_message_type<claim_result>("claim_result");
  cfg.add_message_type<module_record>("module_record");
  cfg.add_message_type<module_put_result>("module_put_result");
  cfg.add_message_type<event_record>("event_record");
  cfg.add_message_type<std::vector<event_record>>("std::vector<event_record>");
  cfg.add_message_type<message_record>("message_record");
  cfg.add_message_type<std::vector<message_record>>("std::vector<message_record>");
  cfg.add_message_type<message_policy>("message_policy");
  cfg.add_message_type<consume_result>("consume_result");
  cfg.add_error_category(caf::atom("hotswap"),
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string out = "hotswap: ";
                           out += to_string(static_cast<errc>(code));
                           if (!ctx.empty()) {
                             out += " (";
                             if (ctx.size() == 1 && ctx.match_element<std::string>(0))
                               out += ctx.get_as<std::string>(0);
                             else
                               out += caf::deep_to_string(ctx);
                             out += ")";
                           }
                           return out;
                         });
}

} // namespace hotswap
