// hotswapd: one node of hotswap. A thin main; the node lives in run_node().
#include <cstring>
#include <iostream>
#include <string>

#include "hotswap/actors/node.hpp"
#include "hotswap/config/config.hpp"

namespace {

void usage(std::ostream& out) {
  out << "usage: hotswapd [--config FILE] [--check-config]\n"
         "  --config FILE    TOML configuration (default: none = development node)\n"
         "  --check-config   validate the configuration (file + HOTSWAP_* variables) and exit\n"
         "Environment: HOTSWAP_<SECTION>_<KEY> overrides any key (see docs/configuration.md).\n";
}

} // namespace

int main(int argc, char** argv) {
  std::string path;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      path = arg.substr(9);
    } else if (arg == "--check-config") {
      check = true;
    } else if (arg == "--help" || arg == "-h") {
      usage(std::cout);
      return 0;
    } else {
      std::cerr << "hotswapd: unknown argument '" << arg << "'\n";
      usage(std::cerr);
      return hotswap::exit_code::config_error;
    }
  }
  auto loaded = hotswap::config::load(path, hotswap::config::process_environment());
  if (!loaded.errors.empty() || !loaded.config) {
    for (auto& e : loaded.errors)
      std::cerr << e.to_string() << "\n";
    std::cerr << "hotswapd: configuration invalid (" << loaded.errors.size() << " error"
              << (loaded.errors.size() == 1 ? "" : "s") << ")" << std::endl;
    return hotswap::exit_code::config_error;
  }
  if (check) {
    std::cout << "config ok" << (path.empty() ? " (defaults)" : " (" + path + ")") << std::endl;
    return hotswap::exit_code::ok;
  }
  return hotswap::run_node(*loaded.config);
}
