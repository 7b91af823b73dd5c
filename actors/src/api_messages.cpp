// The Messages API (api-v1.md, "Messages"): /api/messages and /api/v1/messages.

#include "api_internal.hpp"

namespace hotswap::api_detail {

void add_message_routes(const route_adder&) {
}

} // namespace hotswap::api_detail
