// Splits a byte stream into protocol lines with a length limit, for the SMTP and POP3 sessions and the
// SMTP client.
// A line ends with CRLF; a bare LF is accepted too (students type into `openssl s_client`, which sends
// LF), and a trailing CR is removed. A line over the limit is discarded and reported once.
#pragma once
#include <cstddef>
#include <deque>
#include <string>
#include <string_view>

namespace maillab {

class LineReader {
public:
    // maxLineLength counts the line's octets including its CRLF (RFC 5321 4.5.3.1.4).
    explicit LineReader(size_t maxLineLength) : maxLength_(maxLineLength) {}

    struct Event {
        bool tooLong = false;  // the line was over the limit and has been dropped
        std::string line;      // without the line ending
        bool bareLf = false;   // it ended with LF alone, not CRLF (DATA needs to know: RFC 5321 2.3.8)
    };

    void feed(const char* data, size_t size);
    // Takes the next complete line (or too-long report); false when none is complete yet.
    bool next(Event& event);
    bool hasBufferedBytes() const { return !partial_.empty(); }
    // The next line when it lies whole in [data, end) and nothing is buffered before it: a view of it
    // (without its line end) and where the bytes after it start, nothing copied or consumed. False
    // for a line begun in an earlier read, one without its end yet, or one over the limit: those
    // go through feed()/nextFrom().
    bool peekWholeLine(const char* data, const char* end, std::string_view& line, bool& bareLf, const char*& next) const;
    // Feeds `data` up to and including its first LF only (advancing `data`), then takes that line if it
    // is complete: a session that must not read past a line (what follows STARTTLS, BDAT's octets, a
    // close) frames this way. False: no line end yet, the bytes wait in the reader.
    bool nextFrom(const char*& data, const char* end, Event& event);

private:
    // The limit includes CRLF; `content` is the line without its line end.
    bool fits(size_t content) const { return content + 2 <= maxLength_; }

    size_t maxLength_;
    std::string partial_;
    bool discarding_ = false;
    std::deque<Event> ready_;
};

}  // namespace maillab
