#include "common/help_flags.h"

#include <string>

#include "absl/flags/usage_config.h"
#include "absl/strings/string_view.h"

namespace int4kv {

void HelpListsFlagsOf(const char* main_file) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [file = std::string(main_file)](absl::string_view flag_file) {
    return flag_file == file;
  };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace int4kv
