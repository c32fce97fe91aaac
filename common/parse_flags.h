// Command-line parsing for the project's binaries, which take flags only.
#ifndef INT4KV_COMMON_PARSE_FLAGS_H_
#define INT4KV_COMMON_PARSE_FLAGS_H_

namespace int4kv {

// Sets `usage` as the program's --help text (what it does, and an example command line), runs
// absl::ParseCommandLine, then exits with status 2 naming the first word it left over, if any.
// Abseil returns words that are not flags as positional arguments, and a binary that dropped
// them would run with settings its user did not mean: `--ignore_eos false` sets the bool flag
// (Abseil reads `--ignore_eos` alone as true) and leaves "false". An unknown flag or a value
// that does not parse still exits 1, from Abseil's parser.
void ParseFlagsOnly(int argc, char** argv, const char* usage);

}  // namespace int4kv

#endif  // INT4KV_COMMON_PARSE_FLAGS_H_
