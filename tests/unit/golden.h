// Golden conversation files: "C: line" is sent to the session with CRLF, "S: line" is what must
// come back, in order. "C~: bytes" sends bytes as written, nothing added, with \r \n \t \\ and
// \xHH escapes (a BDAT chunk, a bare LF, several commands in one write). Every input goes through
// Session::onBytes, as the server's does. "C!: toolong" and "C!: timeout" stand for a line over
// the limit and an idle timeout, "S!: close" for the session closing the connection, "#" starts a
// comment. Replayed against the
// socket-free Session with a fresh store holding ana@447.edu (11111447) and bob@447.edu (22222447).
#pragma once
#include <string>
#include <vector>

namespace maillab::testing {

struct GoldenResult {
    bool ok = true;
    std::string message;  // the first difference
};

GoldenResult replayGolden(const std::string& path);
std::vector<std::string> goldenFiles(const std::string& directory);

}  // namespace maillab::testing
