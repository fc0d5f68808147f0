// The SMTP session state machine (RFC 5321, RFC 4954 AUTH, RFC 1870 SIZE, RFC 2920 PIPELINING,
// RFC 3463/2034 enhanced status codes). No sockets here: see server.cpp for the connection side.
#include "session.h"

#include "smtp_syntax.h"
#include "../common/net/rfc5322.h"
#include "../common/net/text.h"
#include "../common/net/log_text.h"
#include "../common/lab/password.h"

#include <Poco/JSON/Array.h>
#include <Poco/String.h>
#include <Poco/JSON/Object.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace maillab::smtp {

namespace {
enum Need : unsigned {
    kNone = 0,
    kGreeting = 1 << 0,       // HELO or EHLO first (RFC 5321 4.1.4)
    kAuth = 1 << 1,           // AUTH first (RFC 4954 6, submission policy of RFC 6409 4.3)
    kNoTransaction = 1 << 2,  // not inside a mail transaction (RFC 4954 4)
    kMail = 1 << 3,           // MAIL first (RFC 5321 4.1.1.3)
    kRcpt = 1 << 4,           // at least one RCPT first (RFC 5321 4.1.1.4)
    kNoArgument = 1 << 5,     // the command takes no argument
    kTakesOctets = 1 << 6,    // octets follow the command (BDAT): read even when it is refused
};

// 12 hex digits from OpenSSL's generator, taken 64 ids at a time per thread: one RAND_bytes call
// (its provider lookup and locks) was 2.5% of a kept-open message's CPU (issue 22).
std::string randomQueueId() {
    constexpr size_t kIdBytes = 6, kBatch = 64;
    thread_local unsigned char pool[kIdBytes * kBatch];
    thread_local size_t used = sizeof pool;
    if (used == sizeof pool) {
        if (RAND_bytes(pool, sizeof pool) != 1) throw std::runtime_error("no random bytes for a queue id");
        used = 0;
    }
    static const char kHex[] = "0123456789ABCDEF";
    std::string id(2 * kIdBytes, '0');
    for (size_t i = 0; i < kIdBytes; ++i) {
        id[2 * i] = kHex[pool[used + i] >> 4];
        id[2 * i + 1] = kHex[pool[used + i] & 15];
    }
    OPENSSL_cleanse(pool + used, kIdBytes);  // an id given out is not left in the pool
    used += kIdBytes;
    return id;
}

}  // namespace

struct Session::CommandSpec {
    const char* verb;
    unsigned needs;
    Handler handler;
    const char* help;
};

// The command table: what each command needs before its handler runs. Checked in the order of
// the Need bits, so the refusal names the first thing missing.
const Session::CommandSpec Session::kCommands[] = {
    {"HELO", kNone, &Session::cmdHelo, "HELO <your-name>: say hello (RFC 5321 4.1.1.1)"},
    {"EHLO", kNone, &Session::cmdEhlo, "EHLO <your-name>: say hello, list extensions"},
    {"AUTH", kGreeting | kNoTransaction, &Session::cmdAuth, "AUTH PLAIN|LOGIN [initial-response]: log in"},
    {"MAIL", kGreeting | kAuth | kNoTransaction, &Session::cmdMail, "MAIL FROM:<you@447.edu> [SIZE=n]"},
    {"RCPT", kGreeting | kAuth | kMail, &Session::cmdRcpt, "RCPT TO:<friend@447.edu>"},
    {"DATA", kGreeting | kAuth | kMail | kRcpt | kNoArgument, &Session::cmdData,
     "DATA: then the message, ended by a line with a single '.'"},
    {"BDAT", kGreeting | kAuth | kMail | kRcpt | kTakesOctets, &Session::cmdBdat,
     "BDAT <octets> [LAST]: then exactly that many octets of the message, raw (RFC 3030)"},
    {"RSET", kNoArgument, &Session::cmdRset, "RSET: abandon the current message"},
    {"NOOP", kNone, &Session::cmdNoop, "NOOP: do nothing, reply 250"},
    {"HELP", kNone, &Session::cmdHelp, "HELP [command]: this text"},
    {"VRFY", kNone, &Session::cmdVrfy, "VRFY <address>: not disclosed (252)"},
    {"QUIT", kNoArgument, &Session::cmdQuit, "QUIT: end the session"},
    {"EXPN", kNone, &Session::cmdNotImplemented, nullptr},
    {"TURN", kNone, &Session::cmdNotImplemented, nullptr},
    {"ETRN", kNone, &Session::cmdNotImplemented, nullptr},
    {"STARTTLS", kGreeting | kNoTransaction, &Session::cmdStartTls, "STARTTLS: start TLS (--tls starttls only)"},
};

std::string Reply::line(size_t i, bool forLog) const {
    static const std::string kRedacted = "<redacted: contains a password>";
    const std::string& text = secret && forLog ? kRedacted : lines[i];
    std::string out = std::to_string(code);
    out.reserve(out.size() + status.size() + text.size() + 4);
    out += i + 1 < lines.size() ? '-' : ' ';
    if (!status.empty()) {
        out += status;
        out += ' ';
    }
    out += text;
    return out;
}

std::string Reply::wire() const { return joined(false); }

std::string Reply::forLog() const { return joined(true); }

std::string Reply::joined(bool forLog) const {
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
        out += line(i, forLog);
        out += "\r\n";
    }
    return out;
}

const char* Session::stateName(State s) {
    switch (s) {
        case State::Fresh: return "fresh";
        case State::Ready: return "ready";
        case State::AuthPlain: return "auth-plain";
        case State::AuthLoginUser: return "auth-login-user";
        case State::AuthLoginPassword: return "auth-login-password";
        case State::Mail: return "mail";
        case State::Rcpt: return "rcpt";
        case State::Data: return "data";
        case State::Bdat: return "bdat";
        case State::Closed: return "closed";
    }
    return "?";
}

Session::Session(Authenticator& auth, Store& store, SessionLimits limits, SessionEnv env)
    : reader_(limits.maxLineLength), auth_(auth), store_(store), limits_(limits), env_(std::move(env)) {
    if (!env_.clock) env_.clock = [] { return static_cast<int64_t>(std::time(nullptr)); };
    if (!env_.newQueueId) env_.newQueueId = randomQueueId;
    if (!env_.log) env_.log = [](const std::string&) {};
    tlsActive_ = env_.tlsMode == TlsMode::Implicit;
    startedAt_ = env_.clock();
}

bool DataBudget::take(size_t bytes) {
    size_t used = inUse_.load();
    do {
        if (used + bytes > limit_) return false;
    } while (!inUse_.compare_exchange_weak(used, used + bytes));
    return true;
}

void DataBudget::give(size_t bytes) { inUse_ -= bytes; }

int64_t SubmissionRates::perHour(What what) const {
    return what == What::Messages ? limits_.messagesPerHour : what == What::Recipients ? limits_.recipientsPerHour
                                                                                        : limits_.bytesPerHour;
}

SubmissionRates::Bucket& SubmissionRates::bucket(const std::string& key, int64_t now) {
    if (buckets_.size() > 100000) buckets_.clear();  // bounded: at worst everyone starts afresh
    auto [it, fresh] = buckets_.try_emplace(key, Bucket{});
    Bucket& b = it->second;
    for (int i = 0; i < 3; ++i) {
        double full = static_cast<double>(perHour(static_cast<What>(i)));
        b.tokens[i] = fresh ? full : std::min(full, b.tokens[i] + full * static_cast<double>(now - b.updated) / 3600.0);
    }
    b.updated = now;
    return b;
}

int64_t SubmissionRates::wait(const std::string& account, const std::string& address, What what, int64_t amount,
                              int64_t now) {
    double limit = static_cast<double>(perHour(what));
    if (limit <= 0) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t longest = 0;
    for (const std::string& key : {"acct:" + account, "addr:" + address}) {
        double have = bucket(key, now).tokens[static_cast<int>(what)];
        double need = std::min(static_cast<double>(amount), limit);  // one larger than an hour's worth waits an hour
        if (have < need) longest = std::max(longest, static_cast<int64_t>((need - have) * 3600.0 / limit) + 1);
    }
    return longest;
}

void SubmissionRates::charge(const std::string& account, const std::string& address, int64_t recipients, int64_t bytes,
                             int64_t now) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const std::string& key : {"acct:" + account, "addr:" + address}) {
        Bucket& b = bucket(key, now);
        b.tokens[0] -= 1;
        b.tokens[1] -= static_cast<double>(recipients);
        b.tokens[2] -= static_cast<double>(bytes);
    }
}

Session::~Session() { releaseData(); }

void Session::releaseData() {
    data_.clear();
    data_.shrink_to_fit();
    if (env_.dataBudget && dataBudgetHeld_) env_.dataBudget->give(dataBudgetHeld_);
    dataBudgetHeld_ = 0;
}

void Session::onTlsStarted(const std::string& tlsDescription, const std::string& tlsGroup) {
    awaitingTls_ = false;
    reader_ = LineReader(limits_.maxLineLength);
    tlsActive_ = true;
    env_.tlsDescription = tlsDescription;
    env_.tlsGroup = tlsGroup;
    noteStory("* TLS handshake after STARTTLS (RFC 3207): " + tlsDescription);
    // RFC 3207 4.2: discard knowledge from the client (its EHLO name, any transaction); it must
    // send EHLO again. AUTH was never offered before TLS, so there is no login to forget.
    heloName_.clear();
    heloTrace_.clear();
    extended_ = false;
    user_.clear();
    resetTransaction();
    enterState(State::Fresh);
}

Output Session::cmdStartTls(const std::string& arg) {
    if (env_.tlsMode != TlsMode::StartTls) {
        if (tlsActive_) return error(BadSequence, "Bad sequence of commands: TLS already active");
        return error(NotImplemented, "Command not implemented: this server runs with --tls off");
    }
    if (tlsActive_) return error(BadSequence, "Bad sequence of commands: TLS already active");  // RFC 3207 4
    if (arg.find_first_not_of(' ') != std::string::npos) return error(SyntaxError, "Syntax: STARTTLS takes no argument");
    Output out;
    out.replies.push_back(reply(ReadyToStartTls, "Ready to start TLS"));  // RFC 3207 4
    out.startTls = true;
    return out;
}

// Why AUTH may not run now, or "" when it may: RFC 3207 (not before STARTTLS) and RFC 4954 4
// (538 when the mechanism would expose a password without encryption).
std::string authRefusal(TlsMode mode, bool tlsActive, bool allowPlaintext, ReplyCode& code) {
    if (tlsActive) return "";
    if (mode == TlsMode::StartTls) {
        code = AuthRequired;
        return "Must issue a STARTTLS command first";
    }
    if (!allowPlaintext) {
        code = EncryptionRequired;
        return "Encryption required for requested authentication mechanism (start the server with --allow-plaintext-auth to see why)";
    }
    return "";
}

void Session::enterState(State next) {
    if (next == state_) return;
    env_.log(std::string("event=state from=") + stateName(state_) + " to=" + stateName(next));
    state_ = next;
}

Reply Session::reply(ReplyCode code, std::string text) const {
    Reply r;
    r.code = code.code;
    // RFC 2034 3: enhanced codes only once the client could have seen ENHANCEDSTATUSCODES; we send
    // them throughout, as Postfix does, since clients ignore what they do not parse.
    r.status = code.status;
    r.lines.push_back(std::move(text));
    return r;
}

Output Session::error(ReplyCode code, std::string text) {
    Output out;
    out.replies.push_back(reply(code, std::move(text)));
    if (++errors_ > limits_.maxErrors && state_ != State::Closed) {
        out.replies.push_back(reply(TooManyErrors, "Too many errors in this session; closing connection"));
        out.close = true;
        enterState(State::Closed);
    }
    return out;
}

Output Session::start() {
    Output out;
    Reply banner = reply(ServiceReady, env_.hostname + " ESMTP maillab ready");
    out.replies.push_back(banner);
    if (tlsActive_ && !env_.tlsDescription.empty())
        noteStory("* TLS handshake first (implicit TLS, RFC 8314): " + env_.tlsDescription);
    noteReplies(out);
    return out;
}

Output Session::onTimeout() {
    Output out;
    out.replies.push_back(reply(Timeout, env_.hostname + " Error: timeout exceeded; closing connection"));
    out.close = true;
    env_.log(std::string("event=timeout state=") + stateName(state_));
    enterState(State::Closed);
    return out;
}

Output Session::onShutdown() {
    Output out;
    // RFC 5321 3.8: a server that must close says 421 first; a message in DATA is not stored.
    out.replies.push_back(reply(ShuttingDown, env_.hostname + " Service shutting down; closing connection" +
                                                  (inMessage() ? " (message not stored)" : "")));
    out.close = true;
    env_.log(std::string("event=shutdown state=") + stateName(state_));
    enterState(State::Closed);
    return out;
}

Output Session::onLineTooLong() {
    if (state_ == State::Data) {
        dataLineTooLong_ = true;  // reported once the terminating "." arrives
        return {};
    }
    if (state_ == State::AuthPlain || state_ == State::AuthLoginUser || state_ == State::AuthLoginPassword)
        enterState(State::Ready);
    noteStory("C: <a line over " + std::to_string(limits_.maxLineLength) + " octets, discarded>");
    Output out = error(LineTooLong,
                       "Line too long (limit " + std::to_string(limits_.maxLineLength) + " octets including CRLF)");
    noteReplies(out);
    return out;
}

std::string Session::redactForLog(const std::string& line) const {
    if (state_ == State::AuthPlain || state_ == State::AuthLoginUser || state_ == State::AuthLoginPassword)
        return "<redacted: AUTH response>";
    // Only AUTH (the verb: up to the first space, any case) carries a secret; the rest as they came.
    if (line.size() < 4 || (line.size() > 4 && line[4] != ' ') || Poco::icompare(line, 0, 4, "AUTH") != 0) return line;
    Command c = parseCommand(line);
    if (c.verb == "AUTH") {
        size_t space = c.argument.find(' ');
        if (space != std::string::npos) return "AUTH " + c.argument.substr(0, space) + " <redacted>";
    }
    return line;
}

Output Session::onLine(const std::string& line, bool bareLf) {
    const State before = state_;
    noteClientLine(line, before);
    Output out;
    switch (before) {
        case State::Closed: return {};
        case State::Data: out = onDataLine(line, bareLf); break;
        case State::AuthPlain:
        case State::AuthLoginUser:
        case State::AuthLoginPassword: out = onAuthResponse(line); break;
        default: out = dispatch(line);
    }
    noteReplies(out);
    return out;
}

// Edits between two verbs, where swapping two neighbours counts as one (RCTP -> RCPT); capped at 2.
static int typoDistance(const std::string& a, const std::string& b) {
    size_t n = a.size(), m = b.size();
    if (n > m + 1 || m > n + 1 || n > 16) return 2;
    std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1));
    for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int>(i);
    for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int>(j);
    for (size_t i = 1; i <= n; ++i)
        for (size_t j = 1; j <= m; ++j) {
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    return std::min(d[n][m], 2);
}

Output Session::dispatch(const std::string& line) {
    // RFC 5321 2.4: commands are US-ASCII. Nothing outside it is echoed back or looked at further.
    if (!isCommandText(line))
        return error(UnknownCommand, "Command contains control or non-ASCII characters; not recognized");
    if (line.empty()) return error(UnknownCommand, "Empty command; not recognized");
    Command command = parseCommand(line);
    for (const CommandSpec& spec : kCommands) {
        if (command.verb != spec.verb) continue;
        std::optional<Refusal> why;
        if ((spec.needs & kGreeting) && state_ == State::Fresh)
            why = Refusal{BadSequence, "Bad sequence of commands: need EHLO or HELO first"};
        else if ((spec.needs & kAuth) && !authenticated())
            why = Refusal{AuthRequired, "Authentication required: need AUTH first"};
        else if ((spec.needs & kNoTransaction) && (state_ == State::Mail || state_ == State::Rcpt))
            why = Refusal{BadSequence, std::string("Bad sequence of commands: ") + spec.verb +
                                           " not allowed during a mail transaction; need RSET first"};
        else if ((spec.needs & kMail) && state_ != State::Mail && state_ != State::Rcpt)
            why = Refusal{BadSequence, "Bad sequence of commands: need MAIL first"};
        else if ((spec.needs & kRcpt) && state_ != State::Rcpt)
            why = Refusal{BadSequence, "Bad sequence of commands: need RCPT first"};
        else if ((spec.needs & kNoArgument) && command.argument.find_first_not_of(' ') != std::string::npos)
            why = Refusal{SyntaxError, std::string("Syntax: ") + spec.verb + " takes no argument"};
        if (why && !(spec.needs & kTakesOctets)) return error(why->code, std::move(why->text));
        // RFC 3030 2: a refused BDAT still takes its octets, and is answered once they are read.
        chunkRefusal_ = std::move(why);
        return (this->*spec.handler)(command.argument);
    }
    std::string reply = "Command not recognized: " + command.verb.substr(0, 32);
    // A typo gets a hint, never a silent guess: the command is still refused.
    for (const CommandSpec& spec : kCommands)
        if (spec.help && typoDistance(command.verb, spec.verb) == 1)
            return error(UnknownCommand, reply + "; did you mean " + spec.verb + "? (" + spec.help + ")");
    return error(UnknownCommand, reply);
}

// RFC 5321 4.5.3.1.2: a domain is at most 255 octets, so the name echoed in our reply keeps that
// reply line under 4.5.3.1.5's 512.
constexpr size_t kMostHeloNameOctets = 255;

std::optional<Output> Session::takeHeloName(const char* verb, const std::string& arg) {
    std::string name = arg.substr(0, arg.find(' '));
    if (name.empty()) return error(SyntaxError, std::string("Syntax: ") + verb + " <your-name>");
    if (name.size() > kMostHeloNameOctets)
        return error(SyntaxError, std::string("Syntax: ") + verb + " <your-name>, a name of at most 255 octets (RFC 5321 4.5.3.1.2)");
    heloName_ = name;
    // What the Received field says of it, made once here rather than for every message. A name that
    // is not a plain host name or address literal is not written as the domain, and its brackets
    // cannot close our comment early (RFC 5322 3.2.2 quoted-pair): no forged trace.
    if (name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_[]:") == std::string::npos) {
        heloTrace_ = name + " (";
    } else {
        heloTrace_ = "unknown (HELO ";
        for (char c : name) {
            if (c == '(' || c == ')' || c == '\\') heloTrace_ += '\\';
            heloTrace_ += c;
        }
        heloTrace_ += "; ";
    }
    return std::nullopt;
}

Output Session::cmdHelo(const std::string& arg) {
    if (auto refused = takeHeloName("HELO", arg)) return *refused;
    const std::string& name = heloName_;
    extended_ = false;
    resetTransaction();  // RFC 5321 4.1.4: HELO/EHLO also resets the transaction
    enterState(State::Ready);
    Output out;
    out.replies.push_back(reply(Ok, env_.hostname + " Hello " + name));
    return out;
}

Output Session::cmdEhlo(const std::string& arg) {
    if (auto refused = takeHeloName("EHLO", arg)) return *refused;
    const std::string& name = heloName_;
    extended_ = true;
    resetTransaction();
    enterState(State::Ready);
    Reply r = reply(Ok, env_.hostname + " Hello " + name);
    r.status.clear();  // EHLO keywords must not carry an enhanced code (RFC 2034 3)
    r.lines.push_back("SIZE " + std::to_string(limits_.maxMessageSize));  // RFC 1870
    r.lines.push_back("8BITMIME");                                         // RFC 6152
    r.lines.push_back("ENHANCEDSTATUSCODES");                              // RFC 2034
    r.lines.push_back("PIPELINING");                                       // RFC 2920
    r.lines.push_back("CHUNKING");                                         // RFC 3030 (no BINARYMIME)
    if (env_.tlsMode == TlsMode::StartTls && !tlsActive_) r.lines.push_back("STARTTLS");  // RFC 3207
    ReplyCode unused{0, ""};
    if (authRefusal(env_.tlsMode, tlsActive_, env_.allowPlaintextAuth, unused).empty())
        r.lines.push_back("AUTH PLAIN LOGIN");  // RFC 4954; never offered before TLS unless allowed
    r.lines.push_back("HELP");
    Output out;
    out.replies.push_back(r);
    return out;
}

Output Session::cmdAuth(const std::string& arg) {
    if (authenticated())  // RFC 4954 4: one AUTH per session
        return error(BadSequence, "Bad sequence of commands: already authenticated as " + user_ +
                                      "; to log in or register as someone else, QUIT and connect again");
    ReplyCode refusal{0, ""};
    std::string why = authRefusal(env_.tlsMode, tlsActive_, env_.allowPlaintextAuth, refusal);
    if (!why.empty()) return error(refusal, why);
    Command parts = parseCommand(arg);  // mechanism, then an optional initial response
    const std::string& mechanism = parts.verb;
    std::string initial = parts.argument;
    if (mechanism.empty()) return error(SyntaxError, "Syntax: AUTH PLAIN|LOGIN [initial-response]");
    Output out;
    if (mechanism == "PLAIN") {
        enterState(State::AuthPlain);
        if (!initial.empty()) return onAuthResponse(initial);  // RFC 4954 4 initial response
        out.replies.push_back(reply(AuthChallenge, ""));  // RFC 4954 4: empty challenge
        return out;
    }
    if (mechanism == "LOGIN") {
        enterState(State::AuthLoginUser);
        if (!initial.empty()) return onAuthResponse(initial);
        out.replies.push_back(reply(AuthChallenge, "VXNlcm5hbWU6"));  // "Username:"
        return out;
    }
    return error(UnknownMechanism, "Unrecognized authentication type " + mechanism.substr(0, 20) +
                                       "; use PLAIN or LOGIN");
}

Output Session::onAuthResponse(const std::string& line) {
    State mechanismState = state_;
    if (line == "*") {  // RFC 4954 4: the client cancels the exchange
        enterState(State::Ready);
        pendingLoginUser_.clear();
        return error(AuthCancelled, "Authentication cancelled");
    }
    std::string decoded;
    try {
        // "=" is the empty initial response (RFC 4954 4).
        decoded = line == "=" ? "" : maillab::base64Decode(line);
    } catch (const std::exception&) {
        enterState(State::Ready);
        pendingLoginUser_.clear();
        return error(BadBase64, "Cannot decode AUTH response: not base64");
    }
    if (mechanismState == State::AuthLoginUser) {
        pendingLoginUser_ = decoded;
        enterState(State::AuthLoginPassword);
        Output out;
        out.replies.push_back(reply(AuthChallenge, "UGFzc3dvcmQ6"));  // "Password:"
        return out;
    }
    if (mechanismState == State::AuthLoginPassword) {
        std::string user = pendingLoginUser_;
        pendingLoginUser_.clear();
        return finishAuth(user, decoded);
    }
    std::optional<PlainCredentials> credentials = parsePlainResponse(decoded);
    if (!credentials) {
        enterState(State::Ready);
        return error(SyntaxError, "AUTH PLAIN response must be authzid NUL user NUL password");
    }
    if (credentials->actsAsAnother()) {
        enterState(State::Ready);
        return error(AuthInvalid, "Authentication credentials invalid: cannot act as another user");
    }
    return finishAuth(credentials->user, credentials->password);
}

bool PlainCredentials::actsAsAnother() const { return !authzid.empty() && text::lowerCase(authzid) != text::lowerCase(user); }

bool isCommandText(const std::string& line) {
    for (unsigned char c : line)
        if ((c < 32 && c != '\t') || c > 126) return false;
    return true;
}

std::optional<PlainCredentials> parsePlainResponse(const std::string& decoded) {
    // RFC 4616 2: [authzid] NUL authcid NUL passwd
    size_t first = decoded.find('\0');
    size_t second = first == std::string::npos ? std::string::npos : decoded.find('\0', first + 1);
    if (second == std::string::npos) return std::nullopt;
    return PlainCredentials{decoded.substr(0, first), decoded.substr(first + 1, second - first - 1),
                            decoded.substr(second + 1)};
}

Output Session::finishAuth(const std::string& user, const std::string& password) {
    enterState(State::Ready);
    if (refuseSlowWork_) {  // the event core had no worker for it in time: as AuthBusy below, nothing checked
        refuseSlowWork_ = false;
        env_.log("event=auth result=error reason=\"no worker free in time: the server is busy\"");
        return error(TemporaryAuthFailure, "Temporary authentication failure; try again later");
    }
    AuthResult result;
    try {
        if (authAtOnce_ && authAtOnce_->user == user && authAtOnce_->password == password)
            result = std::move(authAtOnce_->result);  // answered on the event loop (authAnswerableAtOnce)
        else
            result = auth_.authenticate(user, password, true, env_.peerAddress);
        authAtOnce_.reset();
    } catch (const std::exception& e) {
        env_.log(std::string("event=auth result=error reason=\"") + e.what() + "\"");
        return error(TemporaryAuthFailure, "Temporary authentication failure; try again later");
    }
    Output out;
    // A refusal's log line names where the login came from (the board and an instructor read it).
    auto logRefused = [&](const char* outcome) {
        env_.log("event=auth user=" + logValue(result.user) + " result=" + outcome + " peer=" + logValue(env_.peerAddress));
    };
    switch (result.outcome) {
        case AuthOutcome::Ok:
            user_ = result.user;
            env_.log("event=auth user=" + logValue(user_) + " result=ok");
            if (env_.onLogin) env_.onLogin(user_);
            out.replies.push_back(reply(AuthSucceeded, "Authentication successful"));
            return out;
        case AuthOutcome::Registered: {
            user_ = result.user;
            env_.log("event=auth user=" + logValue(user_) + " result=registered");
            if (env_.onLogin) env_.onLogin(user_);
            Reply r = reply(AuthSucceeded, "Authentication successful; registered " + user_ +
                                               " with password: " + result.newPassword + " (shown once)");
            r.secret = true;
            out.replies.push_back(r);
            return out;
        }
        case AuthOutcome::Throttled:
            // Nothing was checked: the account's guess budget for this source is spent.
            logRefused("throttled");
            if (result.knownAccount && env_.onLoginFailed) env_.onLoginFailed(result.user, result.knownSource);
            // The same words whoever asks: a reply that changed with the address's standing would
            // tell a guesser at a shared address (NAT, the server's own machine) which names exist.
            return error(AccountLocked, "Too many failed logins for this account; no password checked. Try again in " +
                                            std::to_string(result.retryAfterSeconds) +
                                            " seconds, or from an address you have logged in from before");
        case AuthOutcome::RegistrationLimited:
            logRefused("registration-limited");
            return error(AccountLocked, "Too many new accounts from your address; try again in " +
                                            std::to_string(result.retryAfterSeconds) +
                                            " seconds, or log in to the account you registered");
        case AuthOutcome::NotOnRoster:
            logRefused("not-on-roster");
            return error(AuthInvalid, result.user + " is not on this class's roster: register the account your "
                                                    "instructor gave you (your student id @" +
                                          auth_.policy().labDomain + ")");
        case AuthOutcome::BadCredentials: break;
    }
    logRefused("fail");
    if (result.knownAccount && env_.onLoginFailed) env_.onLoginFailed(result.user, result.knownSource);
    if (++authFailures_ >= limits_.maxAuthFailures) {
        out.replies.push_back(reply(TooManyAuthFailures, "Too many failed authentication attempts; closing connection"));
        out.close = true;
        enterState(State::Closed);
        return out;
    }
    // Names only a well-formed lab address back (anything else the client sent stays out of the reply).
    std::string who = auth_.nameToShow(result.user);
    // An empty password asks to register: say what no registration can get past. Public policy, the
    // same words whether or not such an account exists.
    const bool registers = auth_.policy().registrationEnabled;
    if (registers && password.empty() && who != "<you>" && isReservedAddress(result.user))
        return error(AuthInvalid, who + " is a role address (RFC 2142): it cannot be registered. Register your own name, "
                                        "or log in with the password whoever runs the server set (`make password USER=" +
                                        who + "`)");
    if (registers && password.empty() && who == "<you>")
        return error(AuthInvalid, "Only @" + auth_.policy().labDomain + " addresses can be registered here: log in as "
                                  "yourname@" + auth_.policy().labDomain + " (or yourname alone) with an empty password");
    return error(AuthInvalid, "Authentication credentials invalid; forgotten password? `make password USER=" + who +
                                  "` sets a new one (on a class server, ask the instructor)");
}

Output Session::cmdMail(const std::string& arg) {
    auto path = parsePath(arg, "FROM");
    if (!path) return error(SyntaxError, "Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]");
    size_t declared = 0;
    // One value per parameter: SIZE=1 SIZE=99999999 has no one meaning.
    if (!path->repeated.empty())
        return error(SyntaxError, "MAIL FROM parameter " + path->repeated.substr(0, 20) + " given twice");
    for (const auto& [key, value] : path->params) {
        if (key == "SIZE") {
            // RFC 1870 6: a declared size over the limit is refused at MAIL.
            if (value.empty() || value.size() > 18 || value.find_first_not_of("0123456789") != std::string::npos)
                return error(SyntaxError, "Syntax: SIZE=<number of octets>");
            if (std::stoull(value) > limits_.maxMessageSize)
                return error(MessageTooBig, "Message size exceeds fixed maximum message size (" +
                                                std::to_string(limits_.maxMessageSize) + " octets)");
            declared = static_cast<size_t>(std::stoull(value));
        } else if (key == "BODY") {
            std::string body = value;
            std::transform(body.begin(), body.end(), body.begin(), ::toupper);
            if (body != "7BIT" && body != "8BITMIME") return error(SyntaxError, "Syntax: BODY=7BIT|8BITMIME");
        } else if (key == "AUTH") {
            // RFC 4954 5: accepted and not used for trust.
        } else {
            return error(ParameterNotRecognized, "MAIL FROM parameter " + key.substr(0, 20) + " not recognized");
        }
    }
    std::string sender = text::lowerCase(path->address);
    // A bare name is the lab domain's, as the login takes it (Postfix's append_at_myorigin): a student
    // who logged in as "ana" may write MAIL FROM:<ana>.
    if (!sender.empty() && sender.find('@') == std::string::npos) sender += "@" + auth_.policy().labDomain;
    // Submission policy (RFC 6409 6.1): the envelope sender is the authenticated user's own address.
    if (sender != user_)
        return error(SenderNotOwned, "Sender address rejected: <" + sender.substr(0, 256) +
                                         "> is not owned by authenticated user " + user_ + "; send as <" + user_ +
                                         ">");
    if (auto refused = storageRefusal()) return *refused;
    if (env_.rates) {
        const int64_t now = env_.clock();
        if (int64_t wait = env_.rates->wait(user_, env_.peerAddress, SubmissionRates::What::Messages, 1, now))
            return error(RateLimited, "Submission rate limit: " +
                                          std::to_string(env_.rates->perHour(SubmissionRates::What::Messages)) +
                                          " messages an hour from your account and address; try again in " +
                                          std::to_string((wait + 59) / 60) + " min");
    }
    mailFrom_ = sender;
    declaredSize_ = declared;
    recipients_.clear();
    enterState(State::Mail);
    Output out;
    out.replies.push_back(reply(SenderOk, "Sender <" + sender + "> ok"));
    return out;
}

Output Session::cmdRcpt(const std::string& arg) {
    auto path = parsePath(arg, "TO");
    if (!path) return error(SyntaxError, "Syntax: RCPT TO:<address>");
    if (!path->params.empty())
        return error(ParameterNotRecognized, "RCPT TO parameters not recognized");
    if (chunks_ > 0)
        return error(BadSequence, "Bad sequence of commands: RCPT after BDAT; the recipients come before the "
                                  "message (RSET to start over)");
    std::string rcpt = text::lowerCase(path->address);
    // A bare name is the lab domain's, as at login and MAIL (RFC 5321 4.5.1 requires this much for
    // "Postmaster"; Postfix appends its origin to every bare recipient).
    if (!rcpt.empty() && rcpt.find('@') == std::string::npos) rcpt += "@" + auth_.policy().labDomain;
    if (!isValidMailbox(rcpt)) return error(BadAddressSyntax, "Bad recipient address syntax: need user@domain");
    if (!auth_.isLabAddress(rcpt)) {
        auto at = rcpt.rfind('@');
        if (rcpt.substr(at + 1) != auth_.policy().labDomain)
            return error(RelayDenied, "Relay access denied: only @" + auth_.policy().labDomain + " mailboxes are served here");
        return error(UserUnknown, "Recipient address rejected: user unknown <" + rcpt + ">");
    }
    if (std::find(recipients_.begin(), recipients_.end(), rcpt) == recipients_.end()) {
        if (recipients_.size() >= limits_.maxRecipients)  // RFC 5321 4.5.3.1.10
            return error(TooManyRecipients,
                         "Too many recipients (limit " + std::to_string(limits_.maxRecipients) + " per message)");
        bool exists;
        try {
            exists = store_.findAccount(rcpt).has_value();
        } catch (const std::exception& e) {
            env_.log(std::string("event=store result=error reason=\"") + e.what() + "\"");
            return error(LocalError, "Local error in processing; try again later");
        }
        if (!exists)
            return error(UserUnknown, "Recipient address rejected: user unknown <" + rcpt +
                                          ">: no such account yet (its owner registers by logging in once)");
        if (env_.rates) {
            if (int64_t wait = env_.rates->wait(user_, env_.peerAddress, SubmissionRates::What::Recipients,
                                                static_cast<int64_t>(recipients_.size()) + 1, env_.clock()))
                return error(TooManyRecipients,
                             "Too many recipients this hour (" +
                                 std::to_string(env_.rates->perHour(SubmissionRates::What::Recipients)) +
                                 " an hour from your account and address); try again in " +
                                 std::to_string((wait + 59) / 60) + " min");
        }
        // RFC 1870 6: with a declared SIZE, a mailbox it would not fit in is refused here, for itself
        // (the others still get the message), not after DATA for everyone; permanently when even an
        // empty one could not hold it (a 452 would have the client retry for days).
        if (limits_.mailboxQuotaBytes > 0 && static_cast<int64_t>(declaredSize_) > limits_.mailboxQuotaBytes)
            return error(OverWholeQuota, "Message of SIZE=" + std::to_string(declaredSize_) + " octets is larger than <" +
                                             rcpt + ">'s whole quota (" + std::to_string(limits_.mailboxQuotaBytes) +
                                             " bytes); it cannot be delivered there");
        if (auto full = quotaRefusal(rcpt, declaredSize_)) return *full;
        recipients_.push_back(rcpt);
    }
    enterState(State::Rcpt);
    Output out;
    out.replies.push_back(reply(RecipientOk, "Recipient <" + rcpt + "> ok"));
    return out;
}

Output Session::cmdData(const std::string&) {
    if (chunks_ > 0)  // RFC 3030 2: DATA and BDAT are not mixed in one transaction
        return error(BadSequence, "Bad sequence of commands: DATA after BDAT in the same transaction; "
                                  "send the rest with BDAT, or RSET to start over");
    resetData();
    enterState(State::Data);
    Output out;
    out.replies.push_back(reply(StartMailInput, "End data with <CR><LF>.<CR><LF>"));
    return out;
}

void Session::resetTransaction() {
    mailFrom_.clear();
    declaredSize_ = 0;
    recipients_.clear();
    resetData();
}

void Session::resetData() {
    releaseData();
    dataOverBudget_ = false;
    dataTooBig_ = false;
    dataLineTooLong_ = false;
    dataBareCr_ = false;
    previousDataLineCrlf_ = true;
    chunks_ = 0;
}

Output Session::cmdRset(const std::string&) {
    resetTransaction();
    if (state_ != State::Fresh) enterState(State::Ready);
    Output out;
    out.replies.push_back(reply(Ok, "Ok"));
    return out;
}

Output Session::cmdNoop(const std::string&) {
    Output out;
    out.replies.push_back(reply(Ok, "Ok"));
    return out;
}

Output Session::cmdHelp(const std::string& arg) {
    std::string topic = parseCommand(arg).verb;
    Reply r = reply(Help, "");
    r.lines.clear();
    const bool startTlsOffered = env_.tlsMode == TlsMode::StartTls && !tlsActive_;  // as EHLO says (RFC 3207)
    for (const CommandSpec& spec : kCommands) {
        if (!spec.help) continue;
        if (!topic.empty() && topic != spec.verb) continue;
        if (std::string(spec.verb) == "STARTTLS" && !startTlsOffered) {
            if (!topic.empty())
                r.lines.push_back(tlsActive_ ? "STARTTLS: not offered: this connection is already in TLS"
                                             : "STARTTLS: not offered by this server (it runs with --tls " +
                                                   std::string(env_.tlsMode == TlsMode::Implicit ? "implicit" : "off") + ")");
            continue;
        }
        r.lines.push_back(spec.help);
    }
    if (r.lines.empty()) return error(SyntaxError, "No help for " + topic.substr(0, 20) + "; try HELP");
    if (topic.empty()) r.lines.insert(r.lines.begin(), "maillab commands, in the order a session uses them:");
    r.lines.push_back("End of HELP");
    Output out;
    out.replies.push_back(r);
    return out;
}

Output Session::cmdVrfy(const std::string& arg) {
    if (arg.find_first_not_of(' ') == std::string::npos) return error(SyntaxError, "Syntax: VRFY <address>");
    Output out;
    // RFC 5321 3.5.3: 252 when the server will not say whether a mailbox exists.
    out.replies.push_back(reply(CannotVerify, "Cannot VRFY user, but will accept message and attempt delivery"));
    return out;
}

Output Session::cmdQuit(const std::string&) {
    Output out;
    out.replies.push_back(reply(Closing, env_.hostname + " closing connection"));
    out.close = true;
    enterState(State::Closed);
    return out;
}

Output Session::cmdNotImplemented(const std::string&) {
    return error(NotImplemented, "Command not implemented");
}

}  // namespace maillab::smtp
