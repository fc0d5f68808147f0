// MIME decoding for the retriever's views, with Poco Net doing the MIME: MessageHeader reads each
// part's header (and decodes its RFC 2047 words), MultipartReader splits multiparts at their
// boundaries, Base64Decoder and QuotedPrintableDecoder undo the transfer encodings, MediaType and
// splitParameters read the parameters, TextEncoding/TextConverter turn charsets into UTF-8.
//
// Why not MailMessage::read: it reads the top header with Poco's 100-field limit and throws away the
// whole message on any surprise, and after a part whose base64 is cut short it leaves that part's
// rest unread, so MultipartReader takes base64 for the next part's header. Here every part's raw
// stream is read to its boundary whatever its decoder did, and each failure becomes a note in
// View::problems with what was decoded before it kept.
#include "mime_view.h"

#include "../common/net/rfc5322.h"
#include "../common/net/text.h"

#include <Poco/Base64Decoder.h>
#include <Poco/Encodings.h>
#include <Poco/Exception.h>
#include <Poco/MemoryStream.h>
#include <Poco/Net/MediaType.h>
#include <Poco/Net/MessageHeader.h>
#include <Poco/Net/MultipartReader.h>
#include <Poco/Net/NameValueCollection.h>
#include <Poco/Net/QuotedPrintableDecoder.h>
#include <Poco/TextConverter.h>
#include <Poco/TextEncoding.h>
#include <Poco/URI.h>
#include <Poco/UTF8Encoding.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>

namespace maillab::mime {

namespace {

// RFC 2046 5.1.1: a boundary is 1 to 70 characters. Poco's reader asserts on longer ones.
constexpr size_t kMaxBoundaryLength = 70;
// Header values are decoded up to this many octets (Poco's decoder copies the rest of the value
// for each encoded word: time grows with the square of the length, and a listing decodes three
// fields of up to 500 messages); the rest is shown as "…". Real subjects are far shorter.
constexpr size_t kMaxDecodedHeaderOctets = 4096;
// A part's header may have this many fields (Poco's own default is 100; real mail stays far below).
constexpr int kMaxPartHeaderFields = 200;
// Nothing sensible is longer: a longer file name is cut (in UTF-8, at a character).
constexpr size_t kMaxFileNameOctets = 200;

void registerCharsets() {
    static std::once_flag once;
    std::call_once(once, [] { Poco::registerExtraEncodings(); });  // ISO-8859-x, Windows-125x, KOI8, ...
}

std::string lowerTrimmed(const std::string& text) { return text::lowerCase(text::trim(text)); }

// Unfolded header text for one line: tabs, CR and LF (a decoded word may hold them) as spaces.
std::string oneLine(std::string text) {
    for (char& c : text)
        if (c == '\r' || c == '\n' || c == '\t') c = ' ';
    return text;
}

// Lines ended by "\n" only: the text is for reading, the raw resource keeps CRLF.
std::string unixLines(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\r') {
            out += '\n';
            if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
        } else {
            out += text[i];
        }
    }
    return out;
}

// Bytes in `charset` as valid UTF-8. An unknown charset is said in `problems`, and the bytes shown
// as UTF-8 where they are (U+FFFD elsewhere).
std::string toUtf8(const std::string& bytes, const std::string& charset, std::vector<std::string>& problems) {
    std::string name = lowerTrimmed(charset);
    if (name.empty() || name == "utf-8" || name == "utf8" || name == "us-ascii" || name == "ascii")
        return text::validUtf8(bytes);
    registerCharsets();
    Poco::TextEncoding::Ptr from = Poco::TextEncoding::find(name);
    if (!from) {
        problems.push_back("unknown charset \"" + text::validUtf8(name.substr(0, 40)) +
                           "\": the text is shown as UTF-8, U+FFFD where it is not");
        return text::validUtf8(bytes);
    }
    Poco::UTF8Encoding utf8;
    Poco::TextConverter converter(*from, utf8, 0xFFFD);
    std::string out;
    converter.convert(bytes, out);
    return text::validUtf8(out);
}

// RFC 2231 3-4: a parameter split into sections (name*0, name*1, ...) and/or written
// charset'language'percent-encoded (name*=utf-8''f%C3%BCr.png). Poco's splitParameters gives the
// sections as separate parameters; they are put back together here. "" when there is none.
std::string rfc2231Parameter(const Poco::Net::NameValueCollection& parameters, const std::string& name,
                             std::vector<std::string>& problems) {
    std::map<int, std::pair<bool, std::string>> sections;  // number -> (percent-encoded, value)
    for (const auto& [key, value] : parameters) {
        std::string k = text::lowerCase(key);
        if (k.size() <= name.size() || k.compare(0, name.size(), name) != 0 || k[name.size()] != '*') continue;
        std::string rest = k.substr(name.size() + 1);  // "", "*"? no: "" means name*=..., else "0", "0*", ...
        bool encoded = rest.empty() || rest.back() == '*';
        if (!rest.empty() && rest.back() == '*') rest.pop_back();
        int number = 0;
        if (!rest.empty()) {
            if (rest.size() > 3 || rest.find_first_not_of("0123456789") != std::string::npos) continue;
            number = std::stoi(rest);
        }
        sections[number] = {encoded, value};
    }
    if (sections.empty()) return "";
    std::string charset, joined;
    int expected = 0;
    for (const auto& [number, section] : sections) {
        if (number != expected++) break;  // RFC 2231 3: sections are numbered 0, 1, ... without gaps
        std::string value = section.second;
        if (section.first) {
            if (number == 0) {  // charset'language'text
                size_t first = value.find('\''), second = first == std::string::npos ? first : value.find('\'', first + 1);
                if (second != std::string::npos) {
                    charset = value.substr(0, first);
                    value = value.substr(second + 1);
                }
            }
            std::string decoded;
            try {
                Poco::URI::decode(value, decoded);
            } catch (const Poco::Exception&) {
                decoded = value;
            }
            value = decoded;
        }
        joined += value;
    }
    return toUtf8(joined, charset, problems);
}

// The file name a part carries: Content-Disposition's filename (RFC 2183 2.3), else Content-Type's
// older name parameter; RFC 2231 forms first, then RFC 2047 words that many mailers put in quotes.
std::string fileNameOf(const Poco::Net::NameValueCollection& disposition, const Poco::Net::MediaType& type,
                       std::vector<std::string>& problems) {
    std::string name = rfc2231Parameter(disposition, "filename", problems);
    if (name.empty() && disposition.has("filename")) name = disposition.get("filename");
    if (name.empty()) name = rfc2231Parameter(type.parameters(), "name", problems);
    if (name.empty() && type.hasParameter("name")) name = type.getParameter("name");
    return decodeHeader(name);
}

// A part's stream that stays at its end once there. Poco's multipart stream reads on past its
// boundary when asked again after its end (the decoders and a nested MultipartReader read the
// stream buffer directly, so the istream never learns it ended): each part is read through this,
// and reading it to its end (drain) never takes the next part's text.
class PartStreamBuf : public std::streambuf {
public:
    explicit PartStreamBuf(std::streambuf* source) : source_(source) {}

protected:
    int_type underflow() override {
        if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
        if (ended_) return traits_type::eof();
        std::streamsize n = source_->sgetn(buffer_, sizeof buffer_);
        if (n < static_cast<std::streamsize>(sizeof buffer_)) ended_ = true;  // sgetn stops short only at the end
        if (n <= 0) return traits_type::eof();
        setg(buffer_, buffer_, buffer_ + n);
        return traits_type::to_int_type(*gptr());
    }

private:
    std::streambuf* source_;
    bool ended_ = false;
    char buffer_[8192];
};

// Reads a part to its end: its raw text must be consumed up to its boundary whatever its decoder
// did, or the multipart reader would take the rest for the next part's header.
void drain(std::istream& in) {
    char buffer[8192];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    }
}

// RFC 2047 6.2: white space between two adjacent encoded words is not shown. Poco 1.11 keeps it,
// later versions drop it: removed here first, so that every version shows the same subject.
std::string joinAdjacentWords(const std::string& value) {
    std::string out;
    out.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) {
        out += value[i];
        if (value[i] == '=' && i > 0 && value[i - 1] == '?') {
            size_t next = value.find_first_not_of(" \t\r\n", i + 1);
            if (next != std::string::npos && next > i + 1 && value.compare(next, 2, "=?") == 0) i = next - 1;
        }
    }
    return out;
}

struct Walker {
    Walker(const Limits& limits, size_t wantPart, View& view) : limits(limits), wantPart(wantPart), view(view) {}
    const Limits& limits;
    size_t wantPart;
    View& view;
    size_t leaves = 0;
    bool full = false;  // maxParts reached: the rest is not read
    struct Candidate {
        size_t index = 0;
        std::string bytes, charset;
    };
    Candidate plain, html;

    void problem(const std::string& what) { view.problems.push_back(what); }

    // One entity (RFC 2045 2.4): a multipart opened into its parts, anything else a leaf.
    void walk(const Poco::Net::MessageHeader& header, std::istream& content, size_t depth,
              const std::string& defaultType) {
        Poco::Net::MediaType type(defaultType);
        std::string written = header.get("Content-Type", "");
        if (!written.empty()) {
            try {
                Poco::Net::MediaType parsed(written);
                // RFC 2045 5.2: a Content-Type that cannot be read means text/plain; charset=us-ascii.
                if (!parsed.getType().empty() && !parsed.getSubType().empty()) type = parsed;
            } catch (const Poco::Exception&) {
            }
        }
        std::string major = text::lowerCase(type.getType());
        if (major == "multipart") {
            if (depth >= limits.maxDepth) {
                problem("multiparts nested deeper than " + std::to_string(limits.maxDepth) +
                        " are not opened: listed as one part");
            } else if (type.hasParameter("boundary") && type.getParameter("boundary").size() > kMaxBoundaryLength) {
                problem("a multipart boundary longer than 70 characters (RFC 2046 5.1.1): listed as one part");
            } else {
                multipart(type, content, depth);
                drain(content);  // the epilogue
                return;
            }
        }
        leaf(header, type, content);
    }

    void multipart(const Poco::Net::MediaType& type, std::istream& content, size_t depth) {
        std::string boundary = type.hasParameter("boundary") ? type.getParameter("boundary") : "";
        if (boundary.empty()) problem("a multipart without a boundary parameter: its first \"--\" line is taken as one");
        // RFC 2046 5.1.5: the parts of a multipart/digest are messages unless they say otherwise.
        std::string childType = text::lowerCase(type.getSubType()) == "digest" ? "message/rfc822" : "text/plain";
        size_t before = leaves;
        try {
            auto reader = boundary.empty() ? std::make_unique<Poco::Net::MultipartReader>(content)
                                           : std::make_unique<Poco::Net::MultipartReader>(content, boundary);
            while (reader->hasNextPart()) {
                if (leaves >= limits.maxParts) {
                    if (!full) problem("more than " + std::to_string(limits.maxParts) + " parts: the rest are not listed");
                    full = true;
                    return;
                }
                Poco::Net::MessageHeader partHeader;
                partHeader.setFieldLimit(kMaxPartHeaderFields);
                reader->nextPart(partHeader);
                PartStreamBuf partBuffer(reader->stream().rdbuf());
                std::istream part(&partBuffer);
                walk(partHeader, part, depth + 1, childType);
                if (full) return;
                // Poco's reader asks the stream's state, which reading through its buffer does not
                // set: without this, a multipart cut before its closing boundary gets an empty part.
                if (!reader->hasNextPart() || content.peek() != std::char_traits<char>::eof()) continue;
                problem("a multipart ends without its closing boundary (RFC 2046 5.1.1): the message may be cut short");
                break;
            }
        } catch (const Poco::Exception& e) {
            problem("a multipart could not be read to its end (" + text::validUtf8(e.displayText().substr(0, 100)) +
                    "): " + (leaves > before ? "the parts before are shown" : "none of its parts are shown"));
        }
    }

    void leaf(const Poco::Net::MessageHeader& header, const Poco::Net::MediaType& type, std::istream& content) {
        Part part;
        part.index = ++leaves;
        part.contentType = text::lowerCase(type.getType() + "/" + type.getSubType());
        std::string charset = type.hasParameter("charset") ? type.getParameter("charset") : "";
        Poco::Net::NameValueCollection dispositionParameters;
        try {
            std::string disposition;
            Poco::Net::MessageHeader::splitParameters(header.get("Content-Disposition", ""), disposition,
                                                      dispositionParameters);
            part.disposition = lowerTrimmed(disposition);
        } catch (const Poco::Exception&) {
        }
        part.fileName = fileNameOf(dispositionParameters, type, view.problems);
        bool inlineText = part.disposition != "attachment" && part.fileName.empty();
        Candidate* text = nullptr;
        if (inlineText && part.contentType == "text/plain" && plain.index == 0) text = &plain;
        if (inlineText && part.contentType == "text/html" && html.index == 0) text = &html;
        bool keep = part.index == wantPart;
        std::string bytes;

        // RFC 2045 6: base64 and quoted-printable are decoded; 7bit, 8bit, binary are as they are.
        std::string encoding = lowerTrimmed(header.get("Content-Transfer-Encoding", ""));
        encoding = encoding.substr(0, encoding.find(';'));
        // Octet by octet from the decoder's buffer: its exception (a bad or missing base64 or
        // quoted-printable character) then loses nothing decoded before it.
        auto consume = [&](std::istream& in) {
            std::streambuf* source = in.rdbuf();
            try {
                for (int c; (c = source->sbumpc()) != std::char_traits<char>::eof();) {
                    ++part.size;
                    if (keep || text) bytes += static_cast<char>(c);
                }
            } catch (const Poco::Exception&) {
                return false;
            }
            return true;
        };
        bool complete = true;
        if (encoding == "base64") {
            Poco::Base64Decoder decoder(content);
            complete = consume(decoder);
        } else if (encoding == "quoted-printable") {
            Poco::Net::QuotedPrintableDecoder decoder(content);
            complete = consume(decoder);
        } else {
            complete = consume(content);
        }
        drain(content);
        if (!complete)
            problem("part " + std::to_string(part.index) + ": its " + encoding + " is broken or cut short; the " +
                    std::to_string(part.size) + " octets before are kept");
        if (text) {
            text->index = part.index;
            text->charset = charset;
            text->bytes = keep ? bytes : std::move(bytes);
        }
        if (keep) {
            view.partBytes = std::move(bytes);
            view.partFound = true;
        }
        part.contentType = text::validUtf8(part.contentType.substr(0, 100));
        part.charset = text::validUtf8(charset.substr(0, 40));
        view.parts.push_back(std::move(part));
    }
};

}  // namespace

std::string decodeHeader(const std::string& value) {
    registerCharsets();
    bool cut = value.size() > kMaxDecodedHeaderOctets;
    std::string input = cut ? value.substr(0, kMaxDecodedHeaderOctets) : value;
    std::string decoded;
    try {
        decoded = Poco::Net::MessageHeader::decodeWord(joinAdjacentWords(input), "UTF-8");  // RFC 2047 6
    } catch (const std::exception&) {
        decoded = input;  // a malformed word: the text as written
    }
    return oneLine(text::validUtf8(decoded)) + (cut ? "…" : "");
}

std::string displayAddresses(const std::string& value) {
    // RFC 5322 3.4: mailboxes separated by commas outside quoted strings, comments and <...>.
    std::vector<std::string> mailboxes;
    std::string current;
    bool quoted = false, angle = false;
    int comment = 0;
    for (size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (quoted && c == '\\' && i + 1 < value.size()) {
            current += c;
            current += value[++i];
            continue;
        }
        if (c == '"' && comment == 0) quoted = !quoted;
        else if (!quoted && c == '(') ++comment;
        else if (!quoted && c == ')' && comment > 0) --comment;
        else if (!quoted && comment == 0 && c == '<') angle = true;
        else if (!quoted && comment == 0 && c == '>') angle = false;
        else if (!quoted && comment == 0 && !angle && (c == ',' || c == ';')) {
            mailboxes.push_back(current);
            current.clear();
            continue;
        }
        current += c;
    }
    mailboxes.push_back(current);
    std::string shown;
    for (std::string mailbox : mailboxes) {
        // A group's name ("Team: a@x, b@y;") is dropped with its colon; its members are shown.
        size_t colon = mailbox.find(':');
        if (colon != std::string::npos && mailbox.find('"') > colon && mailbox.find('<') > colon)
            mailbox = mailbox.substr(colon + 1);
        std::string name, address;
        size_t open = std::string::npos;
        bool inQuotes = false;
        for (size_t i = 0; i < mailbox.size(); ++i) {
            if (mailbox[i] == '"') inQuotes = !inQuotes;
            if (mailbox[i] == '\\' && inQuotes) ++i;
            else if (mailbox[i] == '<' && !inQuotes) open = i;
        }
        if (open != std::string::npos) {
            size_t close = mailbox.find('>', open);
            address = text::trim(mailbox.substr(open + 1, close == std::string::npos ? std::string::npos : close - open - 1));
            std::string written = text::trim(mailbox.substr(0, open));
            // The display name without its quotes and quoting backslashes (RFC 5322 3.2.4).
            for (size_t i = 0; i < written.size(); ++i) {
                if (written[i] == '"') continue;
                if (written[i] == '\\' && i + 1 < written.size()) ++i;
                name += written[i];
            }
            name = text::trim(decodeHeader(name));
        } else {
            std::string bare;  // an address alone; a comment after it ("ana@x (Ana)") is left out
            int depth = 0;
            for (char c : mailbox) {
                if (c == '(') ++depth;
                else if (c == ')' && depth > 0) --depth;
                else if (depth == 0) bare += c;
            }
            address = text::trim(bare);
        }
        address = oneLine(text::validUtf8(address));
        if (address.empty() && name.empty()) continue;
        if (!shown.empty()) shown += ", ";
        shown += name.empty() ? address : name + " <" + address + ">";
    }
    return shown;
}

std::string htmlToText(const std::string& html) {
    auto startsWithAt = [&](size_t i, const char* word) {
        for (size_t k = 0; word[k]; ++k)
            if (i + k >= html.size() || std::tolower(static_cast<unsigned char>(html[i + k])) != word[k]) return false;
        return true;
    };
    auto appendCodePoint = [](std::string& out, unsigned long cp) {
        if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
        if (cp < 0x80) out += static_cast<char>(cp);
        else if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    };
    static const char* const kBlockTags[] = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                                             "table", "blockquote", "pre", "hr", "ul", "ol", "dt", "dd"};
    std::string out;
    bool space = false;  // a run of white space seen: written as one space before the next text
    // A block starts on a new line; each <br> is one (two in a row at most).
    auto newline = [&](bool always) {
        while (!out.empty() && out.back() == ' ') out.pop_back();
        bool atLineStart = out.empty() || out.back() == '\n';
        bool blankLine = out.size() >= 2 && out[out.size() - 1] == '\n' && out[out.size() - 2] == '\n';
        if ((always && !blankLine) || !atLineStart) out += '\n';
        space = false;
    };
    for (size_t i = 0; i < html.size();) {
        char c = html[i];
        if (c == '<') {
            if (startsWithAt(i, "<!--")) {
                size_t end = html.find("-->", i + 4);
                i = end == std::string::npos ? html.size() : end + 3;
                continue;
            }
            // Content that is never text: scripts, styles, the head's title and the like.
            bool skipped = false;
            for (const char* element : {"script", "style", "head", "title", "template", "noscript"}) {
                std::string open = std::string("<") + element;
                if (startsWithAt(i, open.c_str()) && i + open.size() < html.size() &&
                    !std::isalnum(static_cast<unsigned char>(html[i + open.size()]))) {
                    std::string close = std::string("</") + element;
                    size_t j = i + open.size();
                    while (j < html.size() && !startsWithAt(j, close.c_str())) ++j;
                    size_t end = html.find('>', j);
                    i = end == std::string::npos ? html.size() : end + 1;
                    skipped = true;
                    break;
                }
            }
            if (skipped) continue;
            size_t nameStart = i + 1 + (i + 1 < html.size() && html[i + 1] == '/');
            size_t nameEnd = nameStart;
            while (nameEnd < html.size() && std::isalnum(static_cast<unsigned char>(html[nameEnd]))) ++nameEnd;
            std::string name = text::lowerCase(html.substr(nameStart, nameEnd - nameStart));
            if (name.empty()) {  // a lone '<' is text
                out += '<';
                ++i;
                continue;
            }
            // The tag ends at the first '>' outside a quoted attribute value.
            char quote = 0;
            size_t j = nameEnd;
            for (; j < html.size(); ++j) {
                if (quote) { if (html[j] == quote) quote = 0; }
                else if (html[j] == '"' || html[j] == '\'') quote = html[j];
                else if (html[j] == '>') break;
            }
            i = j == html.size() ? j : j + 1;
            if (std::find(std::begin(kBlockTags), std::end(kBlockTags), name) != std::end(kBlockTags)) newline(name == "br");
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f') {
            space = !out.empty() && out.back() != '\n';
            ++i;
            continue;
        }
        if (space) out += ' ';
        space = false;
        if (c == '&') {  // character references: named (the common ones) and numeric
            size_t semi = html.find(';', i);
            if (semi != std::string::npos && semi - i <= 10) {
                std::string ref = html.substr(i + 1, semi - i - 1);
                static const std::pair<const char*, unsigned long> kNamed[] = {
                    {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}, {"nbsp", 0xA0}};
                bool done = false;
                for (const auto& [named, cp] : kNamed)
                    if (ref == named) {
                        appendCodePoint(out, cp);
                        done = true;
                    }
                if (!done && ref.size() >= 2 && ref[0] == '#') {
                    bool hex = ref[1] == 'x' || ref[1] == 'X';
                    std::string digits = ref.substr(hex ? 2 : 1);
                    if (!digits.empty() && digits.size() <= 7 &&
                        digits.find_first_not_of(hex ? "0123456789abcdefABCDEF" : "0123456789") == std::string::npos) {
                        appendCodePoint(out, std::stoul(digits, nullptr, hex ? 16 : 10));
                        done = true;
                    }
                }
                if (done) {
                    i = semi + 1;
                    continue;
                }
            }
        }
        out += c;
        ++i;
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    while (!out.empty() && out.front() == '\n') out.erase(0, 1);
    return text::validUtf8(out) + (out.empty() ? "" : "\n");
}

View viewMessage(const std::string& raw, const Limits& limits, size_t wantPart) {
    View view;
    rfc5322::HeaderSection section = rfc5322::parseHeaderSection(raw);
    auto field = [&](const char* name) {
        const rfc5322::Field* f = section.find(name);
        return f ? f->value : std::string();
    };
    view.subject = decodeHeader(field("Subject"));
    view.from = displayAddresses(field("From"));
    view.to = displayAddresses(field("To"));
    view.cc = displayAddresses(field("Cc"));
    view.date = oneLine(text::validUtf8(field("Date")));
    // The top header as read by the lab's own RFC 5322 reader (no field limit: the sender's size
    // limit bounds it), handed to Poco as a MessageHeader for the MIME fields.
    Poco::Net::MessageHeader top;
    for (const auto& f : section.fields) top.add(f.name, f.value);
    size_t bodyStart = std::min(section.bodyStart, raw.size());
    Poco::MemoryInputStream body(raw.data() + bodyStart, static_cast<std::streamsize>(raw.size() - bodyStart));
    Walker walker(limits, wantPart, view);
    try {
        walker.walk(top, body, 0, "text/plain");
    } catch (const std::exception& e) {  // nothing above throws on purpose; should anything, the view stays
        view.problems.push_back(std::string("the message could not be read to its end: ") + e.what());
    }
    if (walker.leaves == 0) {  // a multipart whose parts could not be found: its text as written
        view.text = unixLines(text::validUtf8(raw.substr(bodyStart)));
        view.textType = "text/plain";
        return view;
    }
    Walker::Candidate* chosen = walker.plain.index ? &walker.plain : walker.html.index ? &walker.html : nullptr;
    if (chosen) {
        std::string utf8 = toUtf8(chosen->bytes, chosen->charset, view.problems);
        view.textType = chosen == &walker.plain ? "text/plain" : "text/html";
        view.text = chosen == &walker.plain ? unixLines(utf8) : htmlToText(utf8);
    }
    for (Part& part : view.parts) {
        part.isTextBody = chosen && part.index == chosen->index;
        bool unnamedText = part.fileName.empty() && part.disposition != "attachment" &&
                           (part.contentType == "text/plain" || part.contentType == "text/html");
        part.isAttachment = !part.isTextBody && !unnamedText;
    }
    return view;
}

std::string safeFileName(const std::string& name, size_t index) {
    std::string valid = text::validUtf8(name);
    // Its last path component only (both separators): "../../etc/passwd" is "passwd".
    size_t slash = valid.find_last_of("/\\");
    if (slash != std::string::npos) valid = valid.substr(slash + 1);
    std::string out;
    for (size_t i = 0; i < valid.size();) {
        size_t length = text::utf8SequenceLength(valid, i);
        if (length == 0) length = 1;
        unsigned char c = static_cast<unsigned char>(valid[i]);
        if (text::isControlAt(valid, i) || valid.compare(i, length, "\xEF\xBF\xBD") == 0) {
            // a control character, CR, LF, NUL or what was not UTF-8: nothing
        } else if (c == ' ' && !out.empty() && out.back() == ' ') {
            // one space for a run (a CR LF that became spaces leaves no trace)
        } else if (length == 1 && std::string("\"<>:|?*%;").find(static_cast<char>(c)) != std::string::npos) {
            out += '_';  // quotes end a quoted-string; the others Windows refuses or shells expand
        } else {
            out.append(valid, i, length);
        }
        i += length;
    }
    // No hidden files, no "." or "..", nothing Windows trims.
    size_t first = out.find_first_not_of(". ");
    out = first == std::string::npos ? "" : out.substr(first);
    while (!out.empty() && (out.back() == '.' || out.back() == ' ')) out.pop_back();
    if (out.size() > kMaxFileNameOctets) {
        size_t cut = kMaxFileNameOctets;
        while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
        size_t dot = out.rfind('.');
        std::string extension = dot != std::string::npos && out.size() - dot <= 10 ? out.substr(dot) : "";
        out = out.substr(0, cut - std::min(cut, extension.size())) + extension;
    }
    if (out.empty()) out = "part-" + std::to_string(index);
    return out;
}

std::string attachmentDisposition(const std::string& safeName) {
    std::string ascii, encoded;
    for (unsigned char c : safeName) {
        // RFC 6266 4.3: the quoted filename for old clients, in ASCII without '"' or '\'.
        ascii += c >= 0x20 && c < 0x7F && c != '"' && c != '\\' ? static_cast<char>(c) : '_';
        // RFC 8187 3.2.1: attr-char as it is, every other octet %HH.
        if (std::isalnum(c) || std::string("!#$&+-.^_`|~").find(static_cast<char>(c)) != std::string::npos) {
            encoded += static_cast<char>(c);
        } else {
            static const char* const kHex = "0123456789ABCDEF";
            encoded += '%';
            encoded += kHex[c >> 4];
            encoded += kHex[c & 15];
        }
    }
    return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + encoded;
}

std::string servedContentType(const std::string& contentType, const std::string& charset) {
    // Passive media a browser shows but cannot run; the rest, HTML and SVG first (scripts), is bytes.
    static const char* const kPassive[] = {"image/png",  "image/jpeg", "image/gif",  "image/webp",
                                           "audio/mpeg", "audio/ogg",  "video/mp4",  "video/webm",
                                           "application/pdf", "application/zip", "text/calendar"};
    std::string type = text::lowerCase(contentType);
    if (type == "text/plain") {
        std::string name = lowerTrimmed(charset);
        bool token = !name.empty() && name.size() <= 40 &&
                     name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_.:") == std::string::npos;
        return "text/plain; charset=" + (token ? name : std::string("us-ascii"));
    }
    if (std::find(std::begin(kPassive), std::end(kPassive), type) != std::end(kPassive)) return type;
    return "application/octet-stream";
}

}  // namespace maillab::mime
