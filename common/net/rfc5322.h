// The header section of an RFC 5322 message, read once for both services (after OpenSMTPD's
// rfc5322.c): the sender indexes From/To/Subject/Date at delivery, the retriever shows every field.
// Also the RFC 5322 date-time both write.
#pragma once
#include <string>
#include <vector>

namespace maillab::rfc5322 {

struct Field {
    std::string name;   // as written ("Subject")
    std::string value;  // unfolded (RFC 5322 2.2.3) and trimmed
};

struct HeaderSection {
    std::vector<Field> fields;
    size_t bodyStart = 0;  // offset of the body: after the empty line, or at the first line that is not a field
    // The first field of that name (case-insensitive), or nullptr.
    const Field* find(const std::string& name) const;
};

// Reads the header section of a message in CRLF form, up to the first empty line.
HeaderSection parseHeaderSection(const std::string& message);

// RFC 5322 3.3 date-time for a Unix time, in UTC: "Mon, 23 Nov 2026 13:14:56 +0000".
std::string dateTime(long long unixSeconds);

}  // namespace maillab::rfc5322
