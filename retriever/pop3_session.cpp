// The POP3 session state machine: RFC 1939 (USER/PASS, STAT, LIST, RETR, DELE, RSET, NOOP, QUIT and
// the UPDATE state, TOP, UIDL), RFC 2449 (CAPA, response codes), RFC 5034 (AUTH PLAIN), RFC 2595
// (STLS), RFC 3206 (AUTH and SYS response codes). No sockets here: see pop3_server.cpp.
#include "pop3_session.h"

#include "../common/net/log_text.h"
#include "../common/lab/password.h"
#include "../common/net/text.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>

namespace maillab::pop3 {

namespace {
enum Need : unsigned {
    kAnyState = 0,
    kAuthorization = 1 << 0,  // before login (RFC 1939 4)
    kTransaction = 1 << 1,    // after login (RFC 1939 5)
    kTls = 1 << 2,            // carries credentials: never before TLS (RFC 2595 2.4, RFC 8314)
};

// RFC 2449 8 / RFC 3206 extended response codes, in brackets after -ERR.
const char* const kInUse = "[IN-USE] ";
const char* const kAuthCode = "[AUTH] ";
const char* const kSysTemp = "[SYS/TEMP] ";

// A client's word shown back to it: printable ASCII only, and short.
std::string shown(const std::string& word) {
    std::string out;
    for (char c : word.substr(0, 40)) out += (c > 32 && c < 127) ? c : '?';
    return out;
}

// A message number (RFC 1939 3: a decimal number, no sign), or 0 when it is not one.
int64_t messageNumber(const std::string& text) {
    if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) return 0;
    return std::stoll(text);
}

std::string plural(int64_t n, const char* word) {
    return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}
}  // namespace

struct Session::CommandSpec {
    const char* verb;
    unsigned needs;
    int minArgs, maxArgs;  // maxArgs -1: the rest of the line is one argument (PASS: spaces allowed)
    Handler handler;
    const char* syntax;
};

// The command table: what each command needs before its handler runs (checked in this order:
// the state, TLS, the arguments), so the refusal names the first thing missing.
const Session::CommandSpec Session::kCommands[] = {
    {"CAPA", kAnyState, 0, 0, &Session::cmdCapa, "CAPA"},
    {"USER", kAuthorization | kTls, 1, 1, &Session::cmdUser, "USER <you@447.edu>"},
    // An empty PASS is taken, to be told that an empty password registers only at the sender.
    {"PASS", kAuthorization | kTls, 0, -1, &Session::cmdPass, "PASS <password>"},
    {"AUTH", kAuthorization | kTls, 0, 2, &Session::cmdAuth, "AUTH PLAIN [initial-response]"},
    {"STLS", kAuthorization, 0, 0, &Session::cmdStls, "STLS"},
    {"APOP", kAuthorization, 0, -1, &Session::cmdApop, "APOP"},
    {"QUIT", kAnyState, 0, 0, &Session::cmdQuit, "QUIT"},
    {"STAT", kTransaction, 0, 0, &Session::cmdStat, "STAT"},
    {"LIST", kTransaction, 0, 1, &Session::cmdList, "LIST [msg]"},
    {"RETR", kTransaction, 1, 1, &Session::cmdRetr, "RETR <msg>"},
    {"TOP", kTransaction, 2, 2, &Session::cmdTop, "TOP <msg> <lines>"},
    {"UIDL", kTransaction, 0, 1, &Session::cmdUidl, "UIDL [msg]"},
    {"DELE", kTransaction, 1, 1, &Session::cmdDele, "DELE <msg>"},
    {"RSET", kTransaction, 0, 0, &Session::cmdRset, "RSET"},
    {"NOOP", kTransaction, 0, 0, &Session::cmdNoop, "NOOP"},
};

std::shared_ptr<void> MaildropLocks::acquire(const std::string& mailbox) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!held_.insert(mailbox).second) return nullptr;
    // The pointer is only there to be non-null (a null shared_ptr reads as "in use").
    return std::shared_ptr<void>(static_cast<void*>(this), [this, mailbox](void*) {
        std::lock_guard<std::mutex> release(mutex_);
        held_.erase(mailbox);
    });
}

bool MaildropLocks::held(const std::string& mailbox) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_.count(mailbox) != 0;
}

std::string Reply::forLog() const {
    if (block.empty()) return status;
    return status + " <" + std::to_string(block.size()) + " octets of multi-line response>";
}

std::string stuffedBlock(const std::string& text, int64_t bodyLines) {
    std::string out;
    out.reserve(text.size() + text.size() / 64 + 8);
    bool inBody = false;
    int64_t bodyLeft = bodyLines;
    size_t start = 0;
    while (start < text.size()) {
        if (inBody && bodyLines >= 0 && bodyLeft-- <= 0) break;
        size_t newline = text.find('\n', start);
        size_t end = newline == std::string::npos ? text.size() : newline;
        size_t contentEnd = end > start && text[end - 1] == '\r' ? end - 1 : end;
        if (text[start] == '.') out += '.';  // RFC 1939 3: byte-stuffing
        out.append(text, start, contentEnd - start);
        out += "\r\n";
        if (!inBody && contentEnd == start) inBody = true;  // the empty line after the header section
        if (newline == std::string::npos) break;
        start = newline + 1;
    }
    out += ".\r\n";
    return out;
}

const char* Session::stateName(State s) {
    switch (s) {
        case State::Authorization: return "authorization";
        case State::AuthPlain: return "auth-plain";
        case State::Transaction: return "transaction";
        case State::Closed: return "closed";
    }
    return "?";
}

Session::Session(Authenticator& auth, Store& store, Limits limits, Env env)
    : reader_(limits.maxLineLength), auth_(auth), store_(store), limits_(limits), env_(std::move(env)) {
    if (!env_.log) env_.log = [](const std::string&) {};
}

Session::~Session() = default;

void Session::enterState(State next) {
    if (next == state_) return;
    env_.log(std::string("event=state from=") + stateName(state_) + " to=" + stateName(next));
    state_ = next;
}

Output Session::ok(const std::string& text, std::string block) {
    Output out;
    out.replies.push_back(Reply{"+OK " + text, std::move(block)});
    return out;
}

Output Session::refuse(const std::string& text) {
    Output out;
    out.replies.push_back(Reply{"-ERR " + text, ""});
    return out;
}

Output Session::bad(const std::string& text) {
    Output out = refuse(text);
    if (++badCommands_ >= limits_.maxBadCommands) {
        out.replies.push_back(Reply{"-ERR Too many bad commands (" + std::to_string(limits_.maxBadCommands) +
                                        "); closing connection, no messages deleted", ""});
        out.close = true;
        env_.log("event=too-many-bad-commands");
        enterState(State::Closed);
    }
    return out;
}

Output Session::start() {
    return ok(env_.hostname + " maillab POP3 server ready" +
              (env_.tlsActive ? "" : std::string(" (plaintext port: send STLS before logging in)")));
}

std::string Session::redactForLog(const std::string& line) const {
    if (state_ == State::AuthPlain) return "<redacted: AUTH response>";
    std::string verb = text::lowerCase(line.substr(0, line.find(' ')));
    if (verb == "pass") return "PASS <redacted>";
    if (verb == "auth" && line.find(' ', 5) != std::string::npos) return line.substr(0, line.find(' ', 5)) + " <redacted>";
    return line;
}

namespace {
void append(Output& into, Output&& from) {
    for (Reply& r : from.replies) into.replies.push_back(std::move(r));
    for (auto& hold : from.holds) into.holds.push_back(std::move(hold));
    into.close = into.close || from.close;
    into.startTls = into.startTls || from.startTls;
}
}  // namespace

Output Session::onBytes(const char* data, size_t size) {
    // A call that stopped at kBatchBytes left the rest of its bytes: they come first.
    std::string held;
    if (!unread_.empty()) {
        held.swap(unread_);
        if (size > 0) held.append(data, size);
        data = held.data();
        size = held.size();
    }
    Output all;
    size_t replyBytes = 0;
    const char* end = data + size;
    while (data < end && state_ != State::Closed && !all.close) {
        if (awaitingTls_) {
            // RFC 2595 / CVE-2011-0411: bytes pipelined after STLS arrived in clear; none may run
            // inside the TLS session that follows.
            all.discardedOctets += static_cast<size_t>(end - data);
            break;
        }
        if (replyBytes >= kBatchBytes) {
            unread_.assign(data, static_cast<size_t>(end - data));
            all.more = true;
            break;
        }
        // One line at a time, so that what follows STLS or a close is never given to the reader.
        LineReader::Event event;
        if (!reader_.nextFrom(data, end, event)) break;  // no line end yet: the rest waits in the reader
        ++all.inputs;
        if (env_.trace)
            env_.trace(event.tooLong ? std::string("C: <line over the length limit, discarded>")
                                     : "C: " + escapeControl(redactForLog(event.line)));
        bool loggingIn = state_ == State::Authorization || state_ == State::AuthPlain;
        Output out = event.tooLong ? onLineTooLong() : onLine(event.line);
        for (const Reply& reply : out.replies) replyBytes += reply.status.size() + 2 + reply.block.size();
        append(all, std::move(out));
        if (all.startTls) {
            awaitingTls_ = true;
            reader_ = LineReader(limits_.maxLineLength);
        }
        // A login ends the batch: what was pipelined behind PASS (RETR, DELE, QUIT) is the maildrop's
        // work, which an event core runs on its retrieval lane, not on the login's.
        if (loggingIn && state_ == State::Transaction && data < end) {
            unread_.assign(data, static_cast<size_t>(end - data));
            all.more = true;
            break;
        }
    }
    return all;
}

Output Session::onLine(const std::string& input) {
    if (state_ == State::Closed) return {};
    // A CR left before the line end (a terminal that sends CR CR LF) is not part of the command.
    std::string line = input;
    while (!line.empty() && line.back() == '\r') line.pop_back();
    if (state_ == State::AuthPlain) return onAuthResponse(line);
    return dispatch(line);
}

Output Session::onLineTooLong() {
    if (state_ == State::Closed) return {};
    if (state_ == State::AuthPlain) enterState(State::Authorization);  // the exchange is abandoned
    return bad("Line too long (the limit is " + std::to_string(limits_.maxLineLength) +
               " octets including CRLF, RFC 2449 4)");
}

Output Session::onTimeout() {
    // RFC 1939 3: an autologout timer closes the session without entering the UPDATE state.
    Output out = refuse("Autologout: idle too long; closing connection, no messages deleted");
    out.close = true;
    env_.log("event=autologout state=" + std::string(stateName(state_)));
    enterState(State::Closed);
    return out;
}

Output Session::onShutdown() {
    Output out = refuse(std::string(kSysTemp) + "The server is shutting down; no messages deleted, try again later");
    out.close = true;
    enterState(State::Closed);
    return out;
}

void Session::onTlsStarted() {
    env_.tlsActive = true;
    awaitingTls_ = false;
    reader_ = LineReader(limits_.maxLineLength);  // nothing read in clear is part of a line in TLS
    pendingUser_.clear();  // RFC 2595 4: nothing learnt before TLS carries over
}

Output Session::dispatch(const std::string& line) {
    // RFC 1939 3: a keyword (case-insensitive), then arguments separated by single spaces. Runs of
    // spaces are taken as one (people type); PASS keeps the rest of its line as it is.
    size_t space = line.find(' ');
    std::string verb = line.substr(0, space);
    std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
    std::transform(verb.begin(), verb.end(), verb.begin(), [](unsigned char c) { return std::toupper(c); });
    std::vector<std::string> args;
    for (size_t i = 0; i < rest.size();) {
        size_t b = rest.find_first_not_of(' ', i);
        if (b == std::string::npos) break;
        size_t e = rest.find(' ', b);
        args.push_back(rest.substr(b, e == std::string::npos ? std::string::npos : e - b));
        i = e == std::string::npos ? rest.size() : e;
    }
    if (verb.empty()) return bad("Empty command; try CAPA");
    for (const CommandSpec& spec : kCommands) {
        if (verb != spec.verb) continue;
        if ((spec.needs & kAuthorization) && state_ != State::Authorization)
            return bad(std::string(spec.verb) + " is not allowed after login (RFC 1939 4)");
        if ((spec.needs & kTransaction) && state_ != State::Transaction)
            return bad(std::string(spec.verb) + " needs a login first: USER and PASS, or AUTH PLAIN");
        if ((spec.needs & kTls) && !env_.tlsActive)
            return bad("No credentials before TLS on this port: send STLS first (RFC 2595)" +
                       (env_.implicitTlsPort.empty() ? std::string()
                                                     : ", or use POP3 over TLS on port " + env_.implicitTlsPort));
        bool restIsOne = spec.maxArgs < 0;
        int count = restIsOne ? (rest.empty() ? 0 : 1) : static_cast<int>(args.size());
        if (count < spec.minArgs || (!restIsOne && count > spec.maxArgs))
            return bad(std::string("Syntax: ") + spec.syntax);
        return (this->*spec.handler)(args, rest);
    }
    return bad("Unknown command " + shown(verb) + "; CAPA lists what this server does");
}

Output Session::cmdCapa(const std::vector<std::string>&, const std::string&) {
    // RFC 2449 5 and 6. Credentials are offered only under TLS (RFC 2595 4): before STLS the list
    // says STLS and no login method.
    std::string block;
    if (env_.tlsActive) block += "USER\r\nSASL PLAIN\r\n";
    if (env_.stlsOffered && !env_.tlsActive) block += "STLS\r\n";
    block += "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
    block += "EXPIRE NEVER\r\n";  // RFC 2449 6.7: the server deletes nothing the client leaves
    block += "IMPLEMENTATION maillab\r\n.\r\n";
    return ok("Capability list follows", block);
}

Output Session::cmdUser(const std::vector<std::string>& args, const std::string&) {
    // Whether the account exists is said by nobody: PASS answers alike for both.
    pendingUser_ = args[0];
    return ok("Send PASS for " + shown(args[0]));
}

Output Session::cmdPass(const std::vector<std::string>&, const std::string& rest) {
    if (pendingUser_.empty()) return bad("Send USER <address> first (RFC 1939 7)");
    std::string user = pendingUser_;
    pendingUser_.clear();
    return finishLogin(user, rest);
}

Output Session::cmdAuth(const std::vector<std::string>& args, const std::string&) {
    if (args.empty()) {
        // The mechanism list without CAPA (RFC 1734's form, which older clients still send).
        return ok("Mechanisms follow", "PLAIN\r\n.\r\n");
    }
    std::string mechanism = text::lowerCase(args[0]);
    if (mechanism != "plain") return bad("Unrecognized authentication type " + shown(args[0]) + "; use PLAIN");
    enterState(State::AuthPlain);
    if (args.size() == 2) return onAuthResponse(args[1]);  // RFC 5034 4: the initial response
    Output out;
    out.replies.push_back(Reply{"+ ", ""});  // RFC 5034 4: an empty challenge
    return out;
}

Output Session::onAuthResponse(const std::string& line) {
    enterState(State::Authorization);
    if (line == "*") return bad("AUTH cancelled");  // RFC 5034 4: the client cancels
    std::string decoded;
    try {
        decoded = line == "=" ? "" : maillab::base64Decode(line);  // "=": an empty initial response
    } catch (const std::exception&) {
        return bad("Cannot decode the AUTH response: not base64");
    }
    // PLAIN (RFC 4616 2): [authzid] NUL authcid NUL passwd
    size_t first = decoded.find('\0');
    size_t second = first == std::string::npos ? std::string::npos : decoded.find('\0', first + 1);
    if (second == std::string::npos) return bad("The AUTH PLAIN response must be authzid NUL user NUL password");
    std::string authzid = decoded.substr(0, first);
    std::string user = decoded.substr(first + 1, second - first - 1);
    if (!authzid.empty() && text::lowerCase(authzid) != text::lowerCase(user))
        return bad(std::string(kAuthCode) + "Cannot act as another user");
    return finishLogin(user, decoded.substr(second + 1));
}

Output Session::finishLogin(const std::string& user, const std::string& password) {
    AuthResult result;
    try {
        // No registration over POP3: accounts are made by the sender (docs/protocol.md).
        result = auth_.authenticate(user, password, false, env_.peerAddress);
    } catch (const std::exception& e) {
        env_.log("event=auth result=error reason=" + logValue(e.what()));
        return refuse(std::string(kSysTemp) + "Authentication temporarily unavailable; try again shortly");
    }
    if (result.outcome == AuthOutcome::Throttled) {
        env_.log("event=auth user=" + logValue(result.user) + " result=throttled");
        if (result.knownAccount && env_.onLoginFailed) env_.onLoginFailed(result.user, result.knownSource);
        return refuse(std::string(kSysTemp) + "Too many failed logins for this account; no password checked. Try again in " +
                      std::to_string(result.retryAfterSeconds) + " seconds");
    }
    if (result.outcome != AuthOutcome::Ok) {
        env_.log("event=auth user=" + logValue(result.user.empty() ? user : result.user) + " result=fail");
        if (result.knownAccount && env_.onLoginFailed) env_.onLoginFailed(result.user, result.knownSource);
        std::string why = password.empty()
                              ? "An empty password registers an account only at the sender (SMTP AUTH); POP3 needs "
                                "the password the sender gave you"
                              : "Wrong address or password. No account yet? Register by logging in to the sender "
                                "once with an empty password; it gives you the password to use here";
        Output out = refuse(std::string(kAuthCode) + why);
        if (++authFailures_ >= limits_.maxAuthFailures) {
            out.replies.push_back(Reply{"-ERR " + std::string(kAuthCode) + "Too many failed logins on this connection; closing", ""});
            out.close = true;
            enterState(State::Closed);
        }
        return out;
    }
    // RFC 1939 8: one session per maildrop at a time.
    std::shared_ptr<void> lock;
    if (env_.locks && !(lock = env_.locks->acquire(result.user))) {
        env_.log("event=auth user=" + logValue(result.user) + " result=in-use");
        return refuse(std::string(kInUse) + "The maildrop of " + result.user +
                      " is in use by another POP3 session; close it (QUIT) and try again");
    }
    std::vector<MessageSummary> newestFirst;
    try {
        newestFirst = store_.listMessages(result.user, 0, static_cast<int64_t>(limits_.maxMessages));
    } catch (const std::exception& e) {
        env_.log("event=store result=error reason=" + logValue(e.what()));
        return refuse(std::string(kSysTemp) + "The mail store is busy; try again shortly");
    }
    // Numbered oldest first, fixed for the session (RFC 1939 5).
    messages_.clear();
    for (auto it = newestFirst.rbegin(); it != newestFirst.rend(); ++it) messages_.push_back(Entry{it->id, it->size, false});
    user_ = result.user;
    lock_ = std::move(lock);
    enterState(State::Transaction);
    env_.log("event=auth user=" + logValue(user_) + " result=ok messages=" + std::to_string(messages_.size()));
    if (env_.onLogin) env_.onLogin(user_);
    return ok(user_ + " has " + plural(liveCount(), "message") + " (" + std::to_string(liveBytes()) + " octets)");
}

Output Session::cmdStls(const std::vector<std::string>&, const std::string&) {
    if (env_.tlsActive) return bad("Command not permitted when TLS active");  // RFC 2595 4
    if (!env_.stlsOffered) return bad("STLS is not offered on this port");
    Output out = ok("Begin TLS negotiation");
    out.startTls = true;
    return out;
}

Output Session::cmdApop(const std::vector<std::string>&, const std::string&) {
    // APOP needs the password stored in clear (MD5 of a challenge and the secret); ours are scrypt hashes.
    return bad("APOP is not offered: use USER and PASS, or AUTH PLAIN, over TLS");
}

const Session::Entry* Session::message(const std::string& number, Output& refusal) {
    int64_t n = messageNumber(number);
    if (n < 1 || n > static_cast<int64_t>(messages_.size())) {
        refusal = bad("No such message " + shown(number) + (messages_.empty() ? "; this maildrop is empty"
                                                                              : "; this maildrop has messages 1 to " +
                                                                                    std::to_string(messages_.size())));
        return nullptr;
    }
    const Entry& entry = messages_[static_cast<size_t>(n - 1)];
    if (entry.deleted) {
        refusal = bad("Message " + std::to_string(n) + " already deleted");
        return nullptr;
    }
    return &entry;
}

int64_t Session::liveCount() const {
    return std::count_if(messages_.begin(), messages_.end(), [](const Entry& e) { return !e.deleted; });
}

int64_t Session::liveBytes() const {
    int64_t total = 0;
    for (const Entry& e : messages_)
        if (!e.deleted) total += e.size;
    return total;
}

Output Session::cmdStat(const std::vector<std::string>&, const std::string&) {
    return ok(std::to_string(liveCount()) + " " + std::to_string(liveBytes()));  // RFC 1939 5: "+OK nn mm"
}

Output Session::cmdList(const std::vector<std::string>& args, const std::string&) {
    return listing(args, &Entry::size, plural(liveCount(), "message") + " (" + std::to_string(liveBytes()) + " octets)");
}

Output Session::cmdUidl(const std::vector<std::string>& args, const std::string&) {
    // RFC 1939 7: the store's id names the message for good (never reused), so a client that leaves
    // mail on the server knows what it has already fetched.
    return listing(args, &Entry::id, "Unique-id listing follows");
}

Output Session::listing(const std::vector<std::string>& args, int64_t Entry::*field, const std::string& heading) {
    if (!args.empty()) {
        Output refusal;
        const Entry* entry = message(args[0], refusal);
        if (!entry) return refusal;
        return ok(args[0] + " " + std::to_string(entry->*field));
    }
    std::string block;
    for (size_t i = 0; i < messages_.size(); ++i)
        if (!messages_[i].deleted) block += std::to_string(i + 1) + " " + std::to_string(messages_[i].*field) + "\r\n";
    block += ".\r\n";
    return ok(heading, block);
}

Output Session::sendText(const Entry& entry, bool whole, int64_t bodyLines) {
    std::shared_ptr<void> hold;
    // The text and its stuffed copy are in memory at once, until the reply is sent.
    if (env_.reserve && !(hold = env_.reserve(static_cast<size_t>(entry.size) * 2 + 64)))
        return refuse(std::string(kSysTemp) + "Too much mail is being sent at once; try again shortly");
    std::optional<StoredMessage> stored;
    try {
        stored = store_.getMessage(user_, entry.id);
    } catch (const std::exception& e) {
        env_.log("event=store result=error reason=" + logValue(e.what()));
        return refuse(std::string(kSysTemp) + "The mail store is busy; try again shortly");
    }
    if (!stored) return refuse("That message was removed from the server during this session");
    std::string block = stuffedBlock(stored->raw, whole ? -1 : bodyLines);
    stored.reset();
    if (env_.onRetrieve) env_.onRetrieve(user_);
    Output out = ok(whole ? std::to_string(entry.size) + " octets" : "Top of message follows", std::move(block));
    if (hold) out.holds.push_back(std::move(hold));
    return out;
}

Output Session::cmdRetr(const std::vector<std::string>& args, const std::string&) {
    Output refusal;
    const Entry* entry = message(args[0], refusal);
    if (!entry) return refusal;
    return sendText(*entry, true, -1);
}

Output Session::cmdTop(const std::vector<std::string>& args, const std::string&) {
    Output refusal;
    const Entry* entry = message(args[0], refusal);
    if (!entry) return refusal;
    // RFC 1939 7: n is a non-negative number of body lines.
    if (args[1].empty() || args[1].find_first_not_of("0123456789") != std::string::npos)
        return bad("Syntax: TOP <msg> <lines>, lines a number 0 or more");
    // More lines than the body has is the whole body (RFC 1939 7), however many digits ask for it.
    const std::string significant = args[1].substr(std::min(args[1].find_first_not_of('0'), args[1].size()));
    return sendText(*entry, false, significant.size() > 9 ? 999999999 : std::stoll(args[1]));
}

Output Session::cmdDele(const std::vector<std::string>& args, const std::string&) {
    Output refusal;
    const Entry* entry = message(args[0], refusal);
    if (!entry) return refusal;
    // Only marked: the store forgets it at QUIT (RFC 1939 6, the UPDATE state); RSET unmarks.
    messages_[static_cast<size_t>(entry - messages_.data())].deleted = true;
    return ok("Message " + args[0] + " deleted (removed at QUIT; RSET undoes it)");
}

Output Session::cmdRset(const std::vector<std::string>&, const std::string&) {
    for (Entry& e : messages_) e.deleted = false;
    return ok("Maildrop has " + plural(liveCount(), "message") + " (" + std::to_string(liveBytes()) + " octets)");
}

Output Session::cmdNoop(const std::vector<std::string>&, const std::string&) { return ok("Still here"); }

Output Session::update() {
    // RFC 1939 6: the UPDATE state removes the messages marked deleted, all or none.
    std::vector<int64_t> ids;
    for (const Entry& e : messages_)
        if (e.deleted) ids.push_back(e.id);
    int64_t left = liveCount();
    Output out;
    if (!ids.empty()) {
        try {
            int64_t removed = store_.deleteMessages(user_, ids);
            env_.log("event=update user=" + logValue(user_) + " deleted=" + std::to_string(removed));
        } catch (const std::exception& e) {
            env_.log("event=update user=" + logValue(user_) + " result=error reason=" + logValue(e.what()));
            out = refuse(std::string(kSysTemp) + "Some deleted messages were not removed; try again later");
        }
    }
    if (out.replies.empty())
        out = ok(env_.hostname + " maillab POP3 server signing off (" + plural(left, "message") + " left)");
    lock_.reset();
    return out;
}

Output Session::cmdQuit(const std::vector<std::string>&, const std::string&) {
    Output out = state_ == State::Transaction ? update() : ok(env_.hostname + " maillab POP3 server signing off");
    out.close = true;
    enterState(State::Closed);
    return out;
}

}  // namespace maillab::pop3
