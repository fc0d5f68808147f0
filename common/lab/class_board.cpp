// The live class board: activity counted by the servers, lab tokens, the roster, and the board's
// four renderings (terminal, JSON, HTML page, Prometheus metrics). See class_board.h.
#include "class_board.h"

#include "../net/text.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace maillab {

// ---- activity ----------------------------------------------------------------------------------

ActivityRecorder::ActivityRecorder(Store& store, int flushMilliseconds, std::function<void(const std::string&)> onError)
    : store_(store), flushMilliseconds_(std::max(10, flushMilliseconds)), onError_(std::move(onError)) {
    thread_ = std::thread([this] { run(); });
}

ActivityRecorder::~ActivityRecorder() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
    flush();
}

void ActivityRecorder::note(const std::string& account, const char* kind, int64_t now) {
    if (account.empty()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    ActivityCount& c = pending_[{account, kind}];
    if (c.count == 0) {
        c.account = account;
        c.kind = kind;
        c.firstAt = now;
    }
    ++c.count;
    c.lastAt = std::max(c.lastAt, now);
}

void ActivityRecorder::flush() {
    std::vector<ActivityCount> batch;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [key, count] : pending_) batch.push_back(std::move(count));
        pending_.clear();
    }
    if (batch.empty()) return;
    try {
        store_.recordActivity(batch);
    } catch (const std::exception& e) {
        // The board misses these counts; mail is unaffected. Said once per failed batch.
        if (onError_) onError_(e.what());
    }
}

void ActivityRecorder::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
        wake_.wait_for(lock, std::chrono::milliseconds(flushMilliseconds_));
        if (stopping_) break;
        lock.unlock();
        flush();
        lock.lock();
    }
}

// ---- tokens and the roster ---------------------------------------------------------------------

std::string labToken(const std::string& secret, const std::string& student) {
    std::string message = "maillab-lab-token/v1/" + text::lowerCase(text::trim(student));
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length);
    uint64_t value = 0;
    for (int i = 0; i < 5; ++i) value = (value << 8) | digest[i];  // the first 40 bits
    static const char* const kAlphabet = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford base32
    std::string chars;
    for (int shift = 35; shift >= 0; shift -= 5) chars += kAlphabet[(value >> shift) & 31];
    return "lab-" + chars.substr(0, 4) + "-" + chars.substr(4);
}

namespace {
std::vector<std::string> csvFields(const std::string& line) {
    std::vector<std::string> fields(1);
    bool quoted = false;
    for (size_t i = 0; i < line.size(); ++i) {
        char c = line[i];
        if (quoted) {
            if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') fields.back() += '"', ++i;
            else if (c == '"') quoted = false;
            else fields.back() += c;
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            fields.emplace_back();
        } else if (c != '\r') {
            fields.back() += c;
        }
    }
    for (auto& f : fields) f = text::trim(f);
    return fields;
}
}  // namespace

Roster loadRoster(const std::string& path) {
    Roster roster;
    if (path.empty()) return roster;
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read the roster " + path);
    std::string line;
    std::getline(in, line);
    auto header = csvFields(line);
    auto column = [&](const char* name) {
        for (size_t i = 0; i < header.size(); ++i)
            if (text::lowerCase(header[i]) == name) return static_cast<long>(i);
        return -1L;
    };
    long student = column("student"), account = column("account");
    if (student < 0 || account < 0)
        throw std::runtime_error("the roster " + path + " needs the columns student,account on its first line");
    while (std::getline(in, line)) {
        auto fields = csvFields(line);
        if (fields.size() <= static_cast<size_t>(std::max(student, account)) || fields[student].empty()) continue;
        roster[text::lowerCase(fields[account])] = text::lowerCase(fields[student]);
    }
    return roster;
}

std::string studentOf(const Roster& roster, const std::string& account) {
    auto it = roster.find(account);
    return it != roster.end() ? it->second : account.substr(0, account.find('@'));
}

bool LabTokens::isLabMessage(const std::string& account, const std::string& subject) {
    if (secretFile_.empty()) return false;
    std::string secret;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (secret_.empty()) {
            std::ifstream in(secretFile_);
            std::string line;
            if (in && std::getline(in, line)) secret_ = text::trim(line);
        }
        secret = secret_;
    }
    if (secret.empty()) return false;  // no secret yet: no token can be valid
    return subject.find(labToken(secret, studentOf(roster_, account))) != std::string::npos;
}

// ---- the board ---------------------------------------------------------------------------------

namespace {
std::string minutesAgo(int64_t now, int64_t then) {
    int64_t minutes = std::max<int64_t>(0, now - then) / 60;
    return std::to_string(minutes) + " min ago";
}

std::string hintFor(const BoardRow& r, int64_t now, int64_t stuck) {
    auto waited = [&](int64_t since) { return since && now - since >= stuck; };
    if (!r.registered) return "not registered yet: AUTH with an empty password registers";
    // Her own failures (from where she logged in before) suggest a lost password; failures from
    // addresses she never logged in from may be a classmate guessing, and a reset would not stop
    // one (the guess budget does), so that hint says not to reset unless she asks.
    if (r.failedLogins >= 3 && r.lastFailedLoginAt >= r.lastSeenAt)
        return std::to_string(r.failedLogins) + " failed logins, none since: a lost password? make password USER=" + r.account;
    if (r.failedLoginsNewSource >= 10 && r.lastFailedNewSourceAt >= r.lastSeenAt)
        return std::to_string(r.failedLoginsNewSource) +
               " failed logins from addresses this account never logged in from: someone guessing, or the student "
               "on a new machine; her own logins still work; reset (make password USER=" + r.account +
               ") only if she asks";
    if (!r.labMessageAt) {
        if (r.sent) return "sent " + std::to_string(r.sent) + " message(s), none with the lab token in the Subject";
        if (waited(r.registeredAt)) return "registered " + minutesAgo(now, r.registeredAt) + ", no message yet";
        return "next: send the lab message with the token in the Subject";
    }
    if (!r.mailboxReadAt) {
        if (waited(r.labMessageAt)) return "lab message sent " + minutesAgo(now, r.labMessageAt) + ", mailbox not read yet";
        return "next: read the mailbox (retrieverclient or curl)";
    }
    if (!r.notModifiedAt) {
        if (waited(r.mailboxReadAt)) return "mailbox read " + minutesAgo(now, r.mailboxReadAt) + ", no conditional GET yet";
        return "next: a conditional GET (If-None-Match) answered 304";
    }
    return "done";
}

std::string when(int64_t t) {
    if (!t) return "-";
    std::time_t tt = static_cast<std::time_t>(t);
    char out[32];
    std::strftime(out, sizeof out, "%H:%M:%S", std::localtime(&tt));
    return out;
}

void setTime(Poco::JSON::Object& o, const std::string& name, int64_t t) {
    if (t) o.set(name, t);
    else o.set(name, Poco::Dynamic::Var());  // null
}

std::string metricLabel(const std::string& value) {
    std::string out;
    for (char c : value) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}
}  // namespace

Board classBoard(Store& store, const Roster& roster, int64_t now, int64_t stuckSeconds) {
    Board board;
    board.generatedAt = now;
    std::map<std::string, BoardRow> rows;
    std::set<std::string> instructors;
    for (const Account& a : store.listAccounts()) {
        if (a.role == "instructor") {
            instructors.insert(a.email);
            continue;
        }
        if (a.email.rfind("postmaster@", 0) == 0) continue;
        BoardRow& r = rows[a.email];
        r.account = a.email;
        r.registered = true;
        r.registeredAt = a.createdAt;
    }
    for (const ActivityCount& c : store.listActivity()) {
        auto it = rows.find(c.account);
        if (it == rows.end()) continue;
        BoardRow& r = it->second;
        bool failed = c.kind == activity::kLoginFailed || c.kind == activity::kLoginFailedNewSource;
        r.lastSeenAt = std::max(r.lastSeenAt, failed ? 0 : c.lastAt);
        if (c.kind == activity::kLoginFailed) r.failedLogins = c.count, r.lastFailedLoginAt = c.lastAt;
        else if (c.kind == activity::kLoginFailedNewSource) r.failedLoginsNewSource = c.count, r.lastFailedNewSourceAt = c.lastAt;
        else if (c.kind == activity::kSent) r.sent = c.count, r.sentAt = c.lastAt;
        else if (c.kind == activity::kLabMessage) r.labMessageAt = c.firstAt;
        else if (c.kind == activity::kMailboxRead) r.mailboxReadAt = c.firstAt;
        else if (c.kind == activity::kNotModified) r.notModifiedAt = c.firstAt;
    }
    for (auto& [account, r] : rows) r.lastSeenAt = std::max(r.lastSeenAt, r.registeredAt);
    // Roster order first (with the absent ones), then accounts the roster does not name.
    std::vector<std::pair<std::string, std::string>> byStudent(roster.begin(), roster.end());
    std::sort(byStudent.begin(), byStudent.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    for (const auto& [account, student] : byStudent) {
        if (instructors.count(account)) continue;
        BoardRow r;
        auto it = rows.find(account);
        if (it != rows.end()) {
            r = it->second;
            rows.erase(it);
        }
        r.account = account;
        r.student = student;
        r.onRoster = true;
        board.rows.push_back(r);
    }
    for (auto& [account, r] : rows) {
        r.student = studentOf(roster, account);
        board.rows.push_back(r);
    }
    for (BoardRow& r : board.rows) r.hint = hintFor(r, now, stuckSeconds);
    return board;
}

std::string boardText(const Board& board) {
    std::ostringstream out;
    int done = 0;
    for (const BoardRow& r : board.rows) done += r.hint == "done";
    out << "class board at " << when(board.generatedAt) << ": " << board.rows.size() << " students, " << done
        << " done\n";
    char line[512];
    std::snprintf(line, sizeof line, "%-14s %-26s %-9s %-9s %-9s %-9s %6s %-9s  %s\n", "student", "account", "registered",
                  "lab msg", "read", "304", "failed", "last seen", "hint");
    out << line;
    for (const BoardRow& r : board.rows) {
        std::snprintf(line, sizeof line, "%-14.14s %-26.26s %-10s %-9s %-9s %-9s %6lld %-9s  ", r.student.c_str(),
                      r.account.c_str(), r.registered ? when(r.registeredAt).c_str() : "-", when(r.labMessageAt).c_str(),
                      when(r.mailboxReadAt).c_str(), when(r.notModifiedAt).c_str(),
                      static_cast<long long>(r.allFailedLogins()), when(r.lastSeenAt).c_str());
        out << line << r.hint << "\n";
    }
    return out.str();
}

std::string boardJson(const Board& board) {
    Poco::JSON::Object root;
    root.set("generated_at", board.generatedAt);
    Poco::JSON::Array students;
    for (const BoardRow& r : board.rows) {
        Poco::JSON::Object o;
        o.set("account", r.account);
        o.set("student", r.student);
        o.set("on_roster", r.onRoster);
        setTime(o, "registered_at", r.registered ? r.registeredAt : 0);
        setTime(o, "lab_message_at", r.labMessageAt);
        o.set("messages_sent", r.sent);
        setTime(o, "mailbox_read_at", r.mailboxReadAt);
        setTime(o, "not_modified_at", r.notModifiedAt);
        o.set("failed_logins", r.failedLogins);
        setTime(o, "last_failed_login_at", r.lastFailedLoginAt);
        o.set("failed_logins_new_source", r.failedLoginsNewSource);
        setTime(o, "last_failed_login_new_source_at", r.lastFailedNewSourceAt);
        setTime(o, "last_seen_at", r.lastSeenAt);
        o.set("hint", r.hint);
        students.add(o);
    }
    root.set("students", students);
    std::ostringstream out;
    root.stringify(out);
    return out.str() + "\n";
}

std::string boardHtml(const Board& board, int refreshSeconds) {
    using text::htmlEscape;
    std::string out =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"" +
        std::to_string(refreshSeconds) +
        "\"><title>maillab class board</title><style>body{font-family:sans-serif;margin:16px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;white-space:nowrap;text-align:left}"
        "td.hint{white-space:normal;max-width:420px}td.ok{background:#e6f4ea}td.no{background:#fce8e6}</style></head><body>\n"
        "<h1>Class board</h1>\n<p>At " +
        when(board.generatedAt) + ", from the servers' record; this page reloads every " + std::to_string(refreshSeconds) +
        " s. Also: <code>make class-status</code>, <a href=\"/metrics\">/metrics</a>.</p>\n"
        "<table id=\"board\"><thead><tr><th>student</th><th>account</th><th>registered</th><th>lab message</th>"
        "<th>mailbox read</th><th>304</th><th>failed logins</th><th>last seen</th><th>hint</th></tr></thead><tbody>\n";
    auto cell = [](int64_t t) {
        return std::string("<td class=\"") + (t ? "ok" : "no") + "\">" + when(t) + "</td>";
    };
    for (const BoardRow& r : board.rows) {
        out += "<tr><td>" + htmlEscape(r.student) + "</td><td>" + htmlEscape(r.account) + "</td>" +
               cell(r.registered ? r.registeredAt : 0) + cell(r.labMessageAt) + cell(r.mailboxReadAt) +
               cell(r.notModifiedAt) + "<td>" + std::to_string(r.failedLogins) +
               (r.failedLoginsNewSource ? " (+" + std::to_string(r.failedLoginsNewSource) + " from new addresses)" : "") +
               "</td><td>" + when(r.lastSeenAt) +
               "</td><td class=\"hint\">" + htmlEscape(r.hint) + "</td></tr>\n";
    }
    return out + "</tbody></table>\n</body></html>\n";
}

std::string boardMetrics(const Board& board) {
    int64_t registered = 0, lab = 0, read = 0, conditional = 0, stuck = 0, done = 0;
    for (const BoardRow& r : board.rows) {
        registered += r.registered;
        lab += r.labMessageAt != 0;
        read += r.mailboxReadAt != 0;
        conditional += r.notModifiedAt != 0;
        done += r.hint == "done";
        stuck += r.hint.find(" min ago") != std::string::npos || r.hint.find("failed logins") != std::string::npos;
    }
    std::string out;
    auto gauge = [&](const char* name, const char* help, int64_t value) {
        out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " +
               std::to_string(value) + "\n";
    };
    gauge("maillab_class_students", "Students on the board (roster and registered accounts).",
          static_cast<int64_t>(board.rows.size()));
    gauge("maillab_class_registered", "Students who registered an account.", registered);
    gauge("maillab_class_lab_message_sent", "Students who sent the lab message with a valid token.", lab);
    gauge("maillab_class_mailbox_read", "Students who read their own mailbox.", read);
    gauge("maillab_class_conditional_get", "Students whose conditional GET was answered 304.", conditional);
    gauge("maillab_class_done", "Students who did every step.", done);
    gauge("maillab_class_stuck", "Students waiting too long on a step, or failing to log in.", stuck);
    out += "# HELP maillab_failed_logins_total Failed logins per account.\n# TYPE maillab_failed_logins_total counter\n";
    for (const BoardRow& r : board.rows)
        if (r.registered)
            out += "maillab_failed_logins_total{account=\"" + metricLabel(r.account) + "\"} " +
                   std::to_string(r.allFailedLogins()) + "\n";
    out += "# HELP maillab_last_seen_timestamp_seconds When the account was last active.\n"
           "# TYPE maillab_last_seen_timestamp_seconds gauge\n";
    for (const BoardRow& r : board.rows)
        if (r.registered)
            out += "maillab_last_seen_timestamp_seconds{account=\"" + metricLabel(r.account) + "\"} " +
                   std::to_string(r.lastSeenAt) + "\n";
    return out;
}

}  // namespace maillab
