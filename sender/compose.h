// Writes the message the sender client sends (RFC 5322 header section and MIME body) from what the
// student typed: plain text alone, or multipart/mixed with attachments (RFC 2045-2046, base64,
// RFC 2231 file names), a non-ASCII subject as RFC 2047 encoded words. Socket-free: unit-tested.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace maillab::smtp {

struct Attachment {
    std::string fileName;     // as the recipient sees it (no directory)
    std::string contentType;  // e.g. "image/png"
    std::string bytes;
};

struct Draft {
    std::string from;
    std::vector<std::string> to;
    std::string subject;  // UTF-8
    std::string body;     // UTF-8 text, any line endings
    std::vector<Attachment> attachments;
};

// The whole message text, CRLF line endings (the caller dot-stuffs it on the wire).
std::string composeMessage(const Draft& draft);

// The subject as it goes on the wire: itself when ASCII, else RFC 2047 encoded words.
std::string encodedSubject(const std::string& subject);

// A media type from a file name's extension (the common ones a student attaches), else
// application/octet-stream (RFC 2046 4.5.1: the safe default).
std::string contentTypeFor(const std::string& fileName);

// The largest file the client attaches (the server's own limit, its EHLO SIZE, is usually lower).
constexpr int64_t kMaxAttachmentBytes = 32 * 1024 * 1024;

// Reads a file to attach: its base name, type and bytes. Throws std::runtime_error with a line
// that says what to do (no such file, a directory, too large).
Attachment readAttachment(const std::string& path);

}  // namespace maillab::smtp
