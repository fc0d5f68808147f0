// Line splitting with a limit; see linereader.h.
#include "linereader.h"

#include <cstring>

namespace maillab {

void LineReader::feed(const char* data, size_t size) {
    const char* end = data + size;
    while (data < end) {
        const char* nl = static_cast<const char*>(std::memchr(data, '\n', static_cast<size_t>(end - data)));
        size_t chunk = static_cast<size_t>((nl ? nl : end) - data);
        if (!discarding_) {
            partial_.append(data, chunk);
            // A trailing CR is (or may yet be) part of the ending.
            size_t content = partial_.size();
            if (content > 0 && partial_.back() == '\r') --content;
            if (!fits(content)) {
                discarding_ = true;
                partial_.clear();
            }
        }
        if (!nl) break;
        if (discarding_) {
            ready_.push_back(Event{true, "", false});
            discarding_ = false;
        } else {
            bool crlf = !partial_.empty() && partial_.back() == '\r';
            if (crlf) partial_.pop_back();
            ready_.push_back(Event{false, std::move(partial_), !crlf});
            partial_.clear();
        }
        data = nl + 1;
    }
}

bool LineReader::next(Event& event) {
    if (ready_.empty()) return false;
    event = std::move(ready_.front());
    ready_.pop_front();
    return true;
}

bool LineReader::peekWholeLine(const char* data, const char* end, std::string_view& line, bool& bareLf,
                               const char*& next) const {
    if (!partial_.empty() || discarding_ || !ready_.empty()) return false;
    const char* newline = static_cast<const char*>(std::memchr(data, '\n', static_cast<size_t>(end - data)));
    if (!newline) return false;
    size_t content = static_cast<size_t>(newline - data);
    bareLf = !(content > 0 && data[content - 1] == '\r');
    if (!bareLf) --content;
    if (!fits(content)) return false;
    line = std::string_view(data, content);
    next = newline + 1;
    return true;
}

bool LineReader::nextFrom(const char*& data, const char* end, Event& event) {
    const char* newline = static_cast<const char*>(std::memchr(data, '\n', static_cast<size_t>(end - data)));
    const char* next = newline ? newline + 1 : end;
    feed(data, static_cast<size_t>(next - data));
    data = next;
    return this->next(event);
}

}  // namespace maillab
