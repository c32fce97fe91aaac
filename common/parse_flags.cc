#include "common/parse_flags.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"

namespace int4kv {

void ParseFlagsOnly(int argc, char** argv, const char* usage) {
  absl::SetProgramUsageMessage(usage);
  const std::vector<char*> words = absl::ParseCommandLine(argc, argv);
  if (words.size() <= 1) return;  // words[0] is the program
  const std::string program = words[0];
  std::fprintf(stderr,
               "%s: unexpected argument '%s': this program takes flags only (--name=value; a "
               "bool flag is --name or --name=false)\n",
               program.substr(program.find_last_of('/') + 1).c_str(), words[1]);
  std::exit(2);
}

}  // namespace int4kv
