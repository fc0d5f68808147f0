// composeMessage: the sender client's message text. Poco writes the MIME machinery (boundaries,
// base64, encoded words); this file decides what goes in it.
#include "compose.h"

#include <Poco/Base64Encoder.h>
#include <Poco/Net/MailMessage.h>
#include <Poco/Net/MessageHeader.h>
#include <Poco/Net/MultipartWriter.h>
#include <Poco/Path.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>

namespace maillab::smtp {
namespace {

bool isAscii(const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// A quoted-string-safe ASCII stand-in for a file name (for readers that know no RFC 2231).
std::string asciiFallback(const std::string& name) {
    std::string out;
    for (unsigned char c : name) out += (c < 0x20 || c >= 0x7F || c == '"' || c == '\\') ? '_' : static_cast<char>(c);
    return out;
}

// RFC 2231 4: charset''percent-encoded value, every byte outside attribute-char encoded.
std::string rfc2231(const std::string& value) {
    static const char* hex = "0123456789ABCDEF";
    std::string out = "UTF-8''";
    for (unsigned char c : value) {
        if (std::isalnum(c) || std::string("!#$&+-.^_`|~").find(static_cast<char>(c)) != std::string::npos) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// The text as one CRLF-ended line each (the body's own line endings may be LF only).
std::string crlfLines(const std::string& text) {
    std::string out;
    out.reserve(text.size() + text.size() / 40);
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
        if (text[i] == '\n') out += "\r\n";
        else out += text[i];
    }
    if (!out.empty() && (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0)) out += "\r\n";
    return out;
}

std::string textContentHeaders(const std::string& body) {
    // RFC 6152: 8-bit text is declared as such (the server advertises 8BITMIME).
    return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: " +
           std::string(isAscii(body) ? "7bit" : "8bit") + "\r\n";
}

}  // namespace

std::string encodedSubject(const std::string& subject) {
    // RFC 2047 2: a header field is ASCII; other text travels as =?charset?encoding?text?= words.
    return isAscii(subject) ? subject : Poco::Net::MailMessage::encodeWord(subject, "UTF-8");
}

std::string contentTypeFor(const std::string& fileName) {
    static const std::pair<const char*, const char*> kTypes[] = {
        {"txt", "text/plain"},       {"csv", "text/csv"},         {"png", "image/png"},
        {"jpg", "image/jpeg"},       {"jpeg", "image/jpeg"},      {"gif", "image/gif"},
        {"webp", "image/webp"},      {"pdf", "application/pdf"},  {"zip", "application/zip"},
        {"gz", "application/gzip"},  {"json", "application/json"}, {"pcapng", "application/octet-stream"},
        {"html", "text/html"},       {"htm", "text/html"},        {"md", "text/markdown"},
        {"eml", "message/rfc822"},
    };
    auto dot = fileName.rfind('.');
    if (dot == std::string::npos) return "application/octet-stream";
    std::string extension = fileName.substr(dot + 1);
    std::transform(extension.begin(), extension.end(), extension.begin(), ::tolower);
    for (const auto& [ext, type] : kTypes)
        if (extension == ext) return type;
    return "application/octet-stream";
}

Attachment readAttachment(const std::string& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) throw std::runtime_error("cannot attach " + path + ": no such file");
    if (!S_ISREG(info.st_mode)) throw std::runtime_error("cannot attach " + path + ": not a regular file");
    if (info.st_size > kMaxAttachmentBytes)
        throw std::runtime_error("cannot attach " + path + ": " + std::to_string(info.st_size) +
                                 " bytes, more than the client's limit of " + std::to_string(kMaxAttachmentBytes) +
                                 " (and the server's EHLO SIZE is lower still)");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot attach " + path + ": cannot read it (permissions?)");
    std::ostringstream bytes;
    bytes << in.rdbuf();
    Attachment attachment;
    attachment.fileName = Poco::Path(path).getFileName();
    attachment.contentType = contentTypeFor(attachment.fileName);
    attachment.bytes = bytes.str();
    return attachment;
}

std::string composeMessage(const Draft& draft) {
    std::string to;
    for (const auto& rcpt : draft.to) to += (to.empty() ? "<" : ", <") + rcpt + ">";
    std::string head = "From: <" + draft.from + ">\r\nTo: " + to + "\r\nSubject: " + encodedSubject(draft.subject) +
                       "\r\nMIME-Version: 1.0\r\n";
    std::string body = crlfLines(draft.body);
    if (draft.attachments.empty()) return head + textContentHeaders(body) + "\r\n" + body;

    // RFC 2046 5.1.3: the text first, then each file as a part of its own.
    std::ostringstream out;
    const std::string boundary = Poco::Net::MultipartWriter::createBoundary();
    out << head << "Content-Type: multipart/mixed; boundary=\"" << boundary << "\"\r\n\r\n"
        << "This is a MIME message with attachments (RFC 2046); a mail reader shows them as files.\r\n";
    Poco::Net::MultipartWriter parts(out, boundary);
    Poco::Net::MessageHeader textHeader;
    textHeader.set("Content-Type", "text/plain; charset=utf-8");
    textHeader.set("Content-Transfer-Encoding", isAscii(body) ? "7bit" : "8bit");
    parts.nextPart(textHeader);
    out << body;
    for (const Attachment& file : draft.attachments) {
        // An ASCII name as a quoted string; any other as RFC 2231 4 (filename*=UTF-8''...), and in
        // Content-Type's older name= parameter as an RFC 2047 word, as Thunderbird writes them.
        const bool ascii = isAscii(file.fileName);
        const std::string quoted = "\"" + asciiFallback(file.fileName) + "\"";
        Poco::Net::MessageHeader header;
        header.set("Content-Type", file.contentType + "; name=" +
                                       (ascii ? quoted : "\"" + Poco::Net::MailMessage::encodeWord(file.fileName) + "\""));
        header.set("Content-Transfer-Encoding", "base64");
        header.set("Content-Disposition",
                   "attachment; " + (ascii ? "filename=" + quoted : "filename*=" + rfc2231(file.fileName)));
        parts.nextPart(header);
        {
            Poco::Base64Encoder encoder(out);  // 72-character lines, CRLF (RFC 2045 6.8: at most 76)
            encoder << file.bytes;
            encoder.close();
        }
        out << "\r\n";
    }
    parts.close();
    return out.str();
}

}  // namespace maillab::smtp
