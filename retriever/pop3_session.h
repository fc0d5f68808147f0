// The POP3 session (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH PLAIN, RFC 2595 STLS, RFC 3206 response
// codes) as a socket-free state machine: bytes in, replies out, like the SMTP session
// (sender/session.h). It owns its framing (lines with a length limit, the STLS plaintext discard), so
// pop3_server.cpp, the unit and golden tests and the fuzz target all make one call, onBytes, with
// what the client sent. One command table (kCommands in pop3_session.cpp) says what each
// command needs before it may run. Accounts, the guess budget and the mail are the ones the sender
// and the HTTPS side use (common/lab/auth.h, common/lab/store.h): a user reads only her own maildrop.
#pragma once
#include "../common/lab/auth.h"
#include "../common/lab/store.h"
#include "../common/net/linereader.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace maillab::pop3 {

struct Limits {
    // Octets of a command line including CRLF. RFC 2449 4 raises RFC 1939's 47 to 255; AUTH PLAIN's
    // response line carries an address and a password in base64, so a little more is allowed.
    size_t maxLineLength = 1000;
    int maxBadCommands = 20;   // unknown, misplaced or malformed commands before the server closes
    int maxAuthFailures = 3;   // failed logins on one connection before the server closes
    size_t maxMessages = 10000;  // the newest this many messages make the maildrop (numbered oldest first)
};

// RFC 1939 8: one session at a time per maildrop. A second login to a maildrop in use gets
// -ERR [IN-USE] (RFC 2449 8.1.2). Shared by a server's sessions; a hold is released when it goes.
class MaildropLocks {
public:
    // The maildrop's lock, or nullptr when another session holds it.
    std::shared_ptr<void> acquire(const std::string& mailbox);
    bool held(const std::string& mailbox) const;

private:
    mutable std::mutex mutex_;
    std::set<std::string> held_;
};

struct Env {
    std::string hostname = "localhost";  // our name in the greeting
    std::string peerAddress = "127.0.0.1";
    bool tlsActive = true;    // false on the plaintext port until STLS completes
    bool stlsOffered = false;  // the plaintext port offers STLS (RFC 2595)
    std::string implicitTlsPort;  // named in the refusal of credentials before TLS; "" when not served
    MaildropLocks* locks = nullptr;  // shared by the server's sessions; none: no IN-USE check
    // A place in the server's budget of response bytes in memory (RETR, TOP), held until sent;
    // nullptr when the bytes do not fit now. None: no budget.
    std::function<std::shared_ptr<void>(size_t bytes)> reserve;
    std::function<void(const std::string&)> log;  // key=value event lines (no connection id)
    // Each client line as "C: ..." (passwords and AUTH hidden), as it is read (--verbose); none: not traced.
    std::function<void(const std::string&)> trace;
    // The class board's record: a login, a refused login of an existing account, a message read.
    std::function<void(const std::string& account)> onLogin;
    std::function<void(const std::string& account, bool knownSource)> onLoginFailed;
    std::function<void(const std::string& account)> onRetrieve;
};

struct Reply {
    std::string status;  // "+OK ...", "-ERR ...", or "+ " (an AUTH continuation), without CRLF
    // A multi-line response's lines (RFC 1939 3): each ends in CRLF, those starting with '.' are
    // byte-stuffed, and the terminating ".\r\n" is included. Empty for a one-line reply.
    std::string block;
    std::string wire() const { return status + "\r\n" + block; }
    // The status line and, for a block, its size: what a --verbose log shows.
    std::string forLog() const;
};

struct Output {
    std::vector<Reply> replies;
    bool close = false;     // the server closes the connection after sending the replies
    bool startTls = false;  // after sending the replies, the server starts the TLS handshake (STLS)
    std::vector<std::shared_ptr<void>> holds;  // budget places for the replies, until they are sent
    size_t inputs = 0;  // client lines completed: each restarts the autologout timer (RFC 1939 3)
    // After STLS: octets that arrived in clear after it in the same bytes, dropped unread (RFC 2595,
    // CVE-2011-0411: nothing pipelined before the handshake runs inside TLS).
    size_t discardedOctets = 0;
    // The replies reached kBatchBytes with lines still unanswered: send these, then call onBytes
    // again (with no new bytes, or the next ones), so pipelined RETRs hold one batch at a time.
    bool more = false;
};

class Session {
public:
    enum class State {
        Authorization,  // greeting sent; USER/PASS or AUTH (RFC 1939 4)
        AuthPlain,      // AUTH PLAIN sent "+ ", waiting for the response line (RFC 5034 4)
        Transaction,    // logged in, the maildrop locked and numbered (RFC 1939 5)
        Closed,         // QUIT (after the UPDATE state, RFC 1939 6) or a fatal error
    };

    Session(Authenticator& auth, Store& store, Limits limits, Env env);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Replies past this many octets end an onBytes call early (Output::more).
    static constexpr size_t kBatchBytes = 64 * 1024;

    Output start();  // the +OK greeting
    // What the client sent, as it arrived (any split): the replies to every line it completes, in
    // order (RFC 2449 6.6 PIPELINING). Lines end with CRLF or a bare LF (students type into
    // `openssl s_client`); a line over maxLineLength is refused, not read. Nothing after a close is
    // read, and nothing after STLS until onTlsStarted (RFC 2595, CVE-2011-0411).
    Output onBytes(const char* data, size_t size);
    Output onBytes(const std::string& bytes) { return onBytes(bytes.data(), bytes.size()); }
    Output onTimeout();      // the autologout timer fired (RFC 1939 3): no UPDATE, nothing deleted
    Output onShutdown();     // the server is stopping: nothing deleted
    void onTlsStarted();     // the STLS handshake completed (RFC 2595 4: forget what came before; read anew)

    State state() const { return state_; }
    bool tlsActive() const { return env_.tlsActive; }
    const std::string& user() const { return user_; }
    // What a log may show of a line before the session reads it (passwords and AUTH hidden).
    std::string redactForLog(const std::string& line) const;

    static const char* stateName(State s);

private:
    using Handler = Output (Session::*)(const std::vector<std::string>& args, const std::string& rest);
    struct CommandSpec;
    static const CommandSpec kCommands[];

    struct Entry {
        int64_t id = 0;   // the store's id: the UIDL, stable across sessions
        int64_t size = 0;
        bool deleted = false;
    };

    // One line without its ending; the reader's report of a line over maxLineLength.
    Output onLine(const std::string& line);
    Output onLineTooLong();
    Output dispatch(const std::string& line);
    void enterState(State next);
    Output ok(const std::string& text, std::string block = std::string());
    Output bad(const std::string& text);    // a refused command: counts towards maxBadCommands
    Output refuse(const std::string& text);  // an -ERR that is not the client's fault
    Output finishLogin(const std::string& user, const std::string& password);
    Output onAuthResponse(const std::string& line);
    // The message a number names (RFC 1939 5: not one marked deleted), or the refusal.
    const Entry* message(const std::string& number, Output& refusal);
    int64_t liveCount() const;
    int64_t liveBytes() const;
    // LIST and UIDL (RFC 1939 5, 7): "n value" for the message args[0] names, or a line of it for
    // every message not marked deleted under `heading`; `field`: the value (its size, its id).
    Output listing(const std::vector<std::string>& args, int64_t Entry::*field, const std::string& heading);
    Output sendText(const Entry& entry, bool whole, int64_t bodyLines);
    Output update();

    Output cmdCapa(const std::vector<std::string>&, const std::string&);
    Output cmdUser(const std::vector<std::string>&, const std::string&);
    Output cmdPass(const std::vector<std::string>&, const std::string&);
    Output cmdAuth(const std::vector<std::string>&, const std::string&);
    Output cmdStls(const std::vector<std::string>&, const std::string&);
    Output cmdApop(const std::vector<std::string>&, const std::string&);
    Output cmdQuit(const std::vector<std::string>&, const std::string&);
    Output cmdStat(const std::vector<std::string>&, const std::string&);
    Output cmdList(const std::vector<std::string>&, const std::string&);
    Output cmdRetr(const std::vector<std::string>&, const std::string&);
    Output cmdTop(const std::vector<std::string>&, const std::string&);
    Output cmdUidl(const std::vector<std::string>&, const std::string&);
    Output cmdDele(const std::vector<std::string>&, const std::string&);
    Output cmdRset(const std::vector<std::string>&, const std::string&);
    Output cmdNoop(const std::vector<std::string>&, const std::string&);

    LineReader reader_;
    bool awaitingTls_ = false;  // STLS answered +OK: until the handshake, bytes are discarded
    std::string unread_;        // bytes left when a call stopped at kBatchBytes, read first next time

    Authenticator& auth_;
    Store& store_;
    Limits limits_;
    Env env_;
    State state_ = State::Authorization;
    std::string pendingUser_;  // from USER, for PASS
    std::string user_;         // the logged-in account, whose maildrop this is
    std::shared_ptr<void> lock_;
    std::vector<Entry> messages_;  // numbered from 1, fixed for the session (RFC 1939 5)
    int badCommands_ = 0;
    int authFailures_ = 0;
};

// Byte-stuffs text for a multi-line response (RFC 1939 3): every line ends in CRLF, a line that
// starts with '.' gets one more, and ".\r\n" ends the block. `bodyLines` >= 0 keeps the header
// section and that many lines of the body (TOP); -1 keeps everything (RETR).
std::string stuffedBlock(const std::string& text, int64_t bodyLines = -1);

}  // namespace maillab::pop3
