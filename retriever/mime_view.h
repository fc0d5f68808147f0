// A stored message as people read it: its MIME structure (RFC 2045-2049) decoded with Poco Net
// (MessageHeader, MultipartReader, the quoted-printable and base64 decoders, RFC 2047 words) and
// Poco's text encodings, into UTF-8 header fields, one text body and a list of parts. No sockets:
// the retriever's JSON, HTML pages and part downloads, the unit tests and a fuzz target all call it.
// Bad MIME gives a best-effort view with what went wrong in `problems`, never an exception.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace maillab::mime {

struct Limits {
    size_t maxParts = 1000;  // parts listed; the rest of a message past them is not read
    size_t maxDepth = 10;    // multiparts nested deeper are listed as one undecoded part
};

struct Part {
    size_t index = 0;         // 1, 2, ... in the order of the message (leaf parts only)
    std::string contentType;  // lower case, no parameters: "image/png"
    std::string charset;      // its charset parameter as written, "" when none
    std::string fileName;     // decoded (RFC 2231, RFC 2047) UTF-8 as the sender wrote it; "" when none
    std::string disposition;  // "attachment", "inline" or ""
    size_t size = 0;          // decoded octets
    bool isTextBody = false;  // the part shown as the message's text
    bool isAttachment = false;  // named, marked attachment, or not text: what a mail program lists
};

struct View {
    std::string subject, from, to, cc, date;  // decoded UTF-8; addresses as displayAddresses() shows them
    std::string text;      // the text body as UTF-8, lines ended by "\n"
    std::string textType;  // "text/plain", "text/html" (converted to text), or "" when there is none
    std::vector<Part> parts;
    std::vector<std::string> problems;  // what could not be decoded, for the reader (best effort)
    std::string partBytes;  // the decoded content of the part asked for, when there is one
    bool partFound = false;
};

// Decodes `raw` (headers, empty line, body, as stored). When wantPart is a part's index, its decoded
// content is kept in partBytes.
View viewMessage(const std::string& raw, const Limits& limits = {}, size_t wantPart = 0);

// A header field's value with its RFC 2047 encoded words decoded to UTF-8 (invalid text repaired).
std::string decodeHeader(const std::string& value);

// An RFC 5322 address list shown one way everywhere: "Name <local@domain>" when there is a display
// name (unquoted, RFC 2047 decoded), else "local@domain"; several separated by ", ".
std::string displayAddresses(const std::string& value);

// HTML as plain text: no script or style content, tags dropped, block ends as line breaks, character
// references decoded. The result is text, to be escaped like any other.
std::string htmlToText(const std::string& html);

// A file name safe to write in any directory and in a Content-Disposition: its last path component
// only, no control characters, no quotes or characters Windows refuses, no leading dots, at most
// 200 octets of UTF-8. "" or nothing left gives "part-<index>".
std::string safeFileName(const std::string& name, size_t index);

// The Content-Disposition for downloading a part (RFC 6266 4.1, RFC 8187 3.2): an ASCII fallback
// name and the UTF-8 name percent-encoded.
std::string attachmentDisposition(const std::string& safeName);

// The Content-Type a part is served with: passive types as they are (text/plain with its charset
// checked), anything a browser could run or render as a document as application/octet-stream.
std::string servedContentType(const std::string& contentType, const std::string& charset);

}  // namespace maillab::mime
