// libFuzzer target: the MIME view on arbitrary stored messages. Whatever the input, the view must
// come back (no exception, no crash, no hang), stay within its limits, and give valid UTF-8 text
// and file names that are safe to write; every listed part must be downloadable by its index.
#include "../../common/net/text.h"
#include "../../retriever/mime_view.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace maillab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string raw(reinterpret_cast<const char*>(data), size);
    mime::Limits limits;
    limits.maxParts = 50;
    limits.maxDepth = 5;
    mime::View view = mime::viewMessage(raw, limits, 1);
    if (view.parts.size() > limits.maxParts) std::abort();
    for (const std::string* text : {&view.subject, &view.from, &view.to, &view.text})
        if (text::validUtf8(*text) != *text) std::abort();
    for (const auto& part : view.parts) {
        std::string name = mime::safeFileName(part.fileName, part.index);
        if (name.empty() || name.find_first_of(std::string("/\\\r\n\"\0", 6)) != std::string::npos || name[0] == '.')
            std::abort();
        if (mime::attachmentDisposition(name).find_first_of("\r\n") != std::string::npos) std::abort();
        if (part.size > raw.size()) std::abort();  // decoding never makes more octets than it read
    }
    if (!view.parts.empty() && view.partFound != true) std::abort();
    if (!view.parts.empty() && view.partBytes.size() != view.parts[0].size) std::abort();
    mime::htmlToText(raw);
    mime::displayAddresses(raw);
    return 0;
}
