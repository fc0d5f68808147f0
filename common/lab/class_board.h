// The live class board (docs/instructors.md, "Watch the class"): what each student has done on the
// class server, read from the servers' own record (no captures needed): registered, the lab message
// with a valid token sent, her own mailbox read, a conditional GET answered 304, failed logins, last
// seen, and a hint for the stuck. The servers count events with an ActivityRecorder (batched: one
// transaction a second, never one per request); maillab-admin class-status shows the board in a
// terminal, the retriever serves it as a page and as Prometheus metrics to instructors only.
#pragma once
#include "store.h"

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace maillab {

// Kinds of activity the servers count (store.h ActivityCount::kind).
namespace activity {
inline constexpr const char* kLogin = "login";
inline constexpr const char* kLoginFailed = "login_failed";  // from an address the account logged in from
// From an address it never logged in from: a guesser, or the student on a new machine.
inline constexpr const char* kLoginFailedNewSource = "login_failed_new_source";
inline const char* loginFailedKind(bool knownSource) { return knownSource ? kLoginFailed : kLoginFailedNewSource; }
inline constexpr const char* kSent = "sent";
inline constexpr const char* kLabMessage = "lab_message";
inline constexpr const char* kMailboxRead = "mailbox_read";
inline constexpr const char* kNotModified = "not_modified";
}  // namespace activity

// Counts events in memory and adds them to the store every `flushMilliseconds` from one thread of
// its own (and at destruction): the board costs a class server one small transaction a second.
class ActivityRecorder {
public:
    ActivityRecorder(Store& store, int flushMilliseconds, std::function<void(const std::string&)> onError = nullptr);
    ~ActivityRecorder();
    ActivityRecorder(const ActivityRecorder&) = delete;
    ActivityRecorder& operator=(const ActivityRecorder&) = delete;

    void note(const std::string& account, const char* kind, int64_t now);
    void flush();

private:
    void run();
    Store& store_;
    int flushMilliseconds_;
    std::function<void(const std::string&)> onError_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::map<std::pair<std::string, std::string>, ActivityCount> pending_;
    std::thread thread_;
};

// The lab token of a student (captures/labtoken.py computes the same): HMAC-SHA256(secret,
// "maillab-lab-token/v1/" + id) in Crockford base32, "lab-xxxx-xxxx".
std::string labToken(const std::string& secret, const std::string& student);

// The instructor's roster (CSV with the columns student,account): account -> student id.
using Roster = std::map<std::string, std::string>;
// Throws std::runtime_error naming the file when it cannot be read or has no such columns.
Roster loadRoster(const std::string& path);
// The student id of an account: the roster's, else the address's local part.
std::string studentOf(const Roster& roster, const std::string& account);

// Whether a delivered message is the lab message: its Subject holds the sender's token. The secret
// file is read when first needed (the instructor may make it after the server started).
class LabTokens {
public:
    LabTokens(std::string secretFile, Roster roster) : secretFile_(std::move(secretFile)), roster_(std::move(roster)) {}
    bool enabled() const { return !secretFile_.empty(); }
    bool isLabMessage(const std::string& account, const std::string& subject);

private:
    std::string secretFile_;
    Roster roster_;
    std::mutex mutex_;
    std::string secret_;
};

struct BoardRow {
    std::string account, student;
    bool onRoster = false, registered = false;
    int64_t registeredAt = 0, labMessageAt = 0, sentAt = 0, mailboxReadAt = 0, notModifiedAt = 0;
    int64_t sent = 0, failedLogins = 0, lastFailedLoginAt = 0, lastSeenAt = 0;
    int64_t failedLoginsNewSource = 0, lastFailedNewSourceAt = 0;  // from addresses it never logged in from
    int64_t allFailedLogins() const { return failedLogins + failedLoginsNewSource; }
    std::string hint;  // what the student should do next, or "done"
};

struct Board {
    int64_t generatedAt = 0;
    std::vector<BoardRow> rows;  // roster order first, then other student accounts by address
};

// Every student account (instructors and postmaster left out) and every roster student; a student
// is "stuck" when a step has waited `stuckSeconds` for the next.
Board classBoard(Store& store, const Roster& roster, int64_t now, int64_t stuckSeconds = 20 * 60);
std::string boardText(const Board& board);
std::string boardJson(const Board& board);
std::string boardHtml(const Board& board, int refreshSeconds);
std::string boardMetrics(const Board& board);  // Prometheus text exposition format 0.0.4

}  // namespace maillab
