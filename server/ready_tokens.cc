#include "server/ready_tokens.h"

#include "absl/time/time.h"

namespace int4kv {

bool AppendReadyTokens(RequestStream& stream, int32_t max_tokens, StreamEvent& event,
                       v1::GenerateResponse* response) {
  while (event.type != StreamEvent::Type::kFinish) {
    response->add_token_ids(event.token);
    if (response->token_ids_size() >= max_tokens || !stream.NextFor(&event, absl::ZeroDuration())) {
      return false;
    }
  }
  return true;
}

}  // namespace int4kv
