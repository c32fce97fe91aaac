// --help for the project's binaries. Abseil's --help lists only the flags defined in a source
// file named after the program (int4kv_server.cc for int4kv_server), and the binaries' main
// files are named for their role (server/server_main.cc), so without this --help lists none.
#ifndef INT4KV_COMMON_HELP_FLAGS_H_
#define INT4KV_COMMON_HELP_FLAGS_H_

namespace int4kv {

// Makes --help list the flags defined in `main_file`: pass __FILE__ from the binary's main
// source, before absl::ParseCommandLine.
void HelpListsFlagsOf(const char* main_file);

}  // namespace int4kv

#endif  // INT4KV_COMMON_HELP_FLAGS_H_
