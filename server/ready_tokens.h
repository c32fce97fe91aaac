// Gathering a request's tokens for one Generate response: the token just read and those the
// engine has already produced behind it, so that a reader that fell behind catches up in few
// messages, never waiting for tokens still to come.
#ifndef INT4KV_SERVER_READY_TOKENS_H_
#define INT4KV_SERVER_READY_TOKENS_H_

#include <cstdint>

#include "proto/generation.pb.h"
#include "server/request_stream.h"

namespace int4kv {

// `event` is the event just read from `stream`. Appends its token, then the tokens `stream`
// holds already, to `response`, until `response` has `max_tokens` (>= 1) token ids or the
// stream has nothing more to read now. Returns true when it reached the finish event, which
// is then in `event` (and so the response must carry it); false when it stopped at a token.
bool AppendReadyTokens(RequestStream& stream, int32_t max_tokens, StreamEvent& event,
                       v1::GenerateResponse* response);

}  // namespace int4kv

#endif  // INT4KV_SERVER_READY_TOKENS_H_
