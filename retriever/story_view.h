// A message's own story (issue 19) as the retriever shows it: the SMTP session that delivered the
// message (when, from where, TLS version, cipher and group, the account, the C:/S: transcript with
// AUTH redacted), read from the JSON the sender stored with it (sender/session.cpp, storyJson).
#pragma once
#include <cstdint>
#include <string>

namespace maillab::http {

// The story page (HTML, no script, nothing loaded); `storyJson` may be "" (a message stored before
// stories were kept) or not JSON at all: the page then says so.
std::string storyHtml(const std::string& storyJson, const std::string& mailbox, int64_t id);

}  // namespace maillab::http
