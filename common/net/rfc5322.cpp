// See rfc5322.h.
#include "rfc5322.h"

#include "text.h"

#include <cstdio>
#include <ctime>

namespace maillab::rfc5322 {

const Field* HeaderSection::find(const std::string& name) const {
    for (const Field& f : fields)
        if (text::equalsIgnoringCase(f.name, name)) return &f;
    return nullptr;
}

HeaderSection parseHeaderSection(const std::string& message) {
    HeaderSection section;
    section.bodyStart = message.size();
    size_t pos = 0;
    while (pos < message.size()) {
        size_t eol = message.find("\r\n", pos);
        if (eol == std::string::npos) eol = message.size();
        std::string line = message.substr(pos, eol - pos);
        size_t next = std::min(message.size(), eol + 2);
        if (line.empty()) {  // the empty line that ends the header section
            section.bodyStart = next;
            return section;
        }
        if ((line[0] == ' ' || line[0] == '\t') && !section.fields.empty()) {
            section.fields.back().value += " " + text::trim(line);  // RFC 5322 2.2.3 unfolding
        } else {
            size_t colon = line.find(':');
            if (colon == std::string::npos) {  // not a field: the body began without an empty line
                section.bodyStart = pos;
                return section;
            }
            section.fields.push_back({text::trim(line.substr(0, colon)), text::trim(line.substr(colon + 1))});
        }
        pos = next;
    }
    return section;
}

std::string dateTime(long long unixSeconds) {
    std::time_t t = static_cast<std::time_t>(unixSeconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    static const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
                  months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

}  // namespace maillab::rfc5322
