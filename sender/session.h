// The SMTP submission session as a socket-free state machine: bytes in, replies out. It owns its
// framing (lines with a length limit, DATA's dot-terminated lines, BDAT's counted octets, the
// STARTTLS plaintext discard), so the server, the fuzz target and the tests all make one call,
// onBytes. One command table (kCommands in session.cpp) says what each command needs before it runs.
#pragma once
#include "../common/lab/auth.h"
#include "../common/net/linereader.h"
#include "../common/lab/store.h"
#include "smtp_replies.h"
#include "smtp_syntax.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <optional>
#include <string>
#include <vector>

namespace maillab::smtp {

struct SessionLimits {
    size_t maxLineLength = 1000;            // octets including CRLF (RFC 5321 4.5.3.1.4/6)
    size_t maxMessageSize = 10 * 1024 * 1024;  // octets of message data, advertised as SIZE
    size_t maxRecipients = 100;             // RCPT commands per message (RFC 5321 4.5.3.1.8)
    int maxAuthFailures = 5;                // failed AUTH per session before 421
    int maxErrors = 20;                     // error replies per session before 421
    int64_t mailboxQuotaBytes = 0;          // stored bytes a mailbox may hold (0: no quota); past it 452 4.2.2
    int64_t minFreeDiskBytes = 0;           // below this much free disk new mail gets 452 4.3.1
    size_t maxStoryBytes = 16384;           // of a session's transcript kept with its messages (0: none)
};

// What accounts and source addresses may submit an hour (class servers), shared by a server's
// sessions: messages, recipients and bytes, each a token bucket of `perHour` that refills
// continuously. 0 means no limit. Kept in memory: one sender process per class server.
class SubmissionRates {
public:
    struct Limits {
        int64_t messagesPerHour = 0, recipientsPerHour = 0, bytesPerHour = 0;
    };
    enum class What { Messages = 0, Recipients = 1, Bytes = 2 };
    explicit SubmissionRates(Limits limits) : limits_(limits) {}
    // Seconds until `amount` more may be submitted by both the account and the address; 0: now.
    int64_t wait(const std::string& account, const std::string& address, What what, int64_t amount, int64_t now);
    void charge(const std::string& account, const std::string& address, int64_t recipients, int64_t bytes, int64_t now);
    int64_t perHour(What what) const;

private:
    struct Bucket {
        double tokens[3];
        int64_t updated;
    };
    Bucket& bucket(const std::string& key, int64_t now);
    Limits limits_;
    std::mutex mutex_;
    std::unordered_map<std::string, Bucket> buckets_;
};

// The bytes of message data every session holds in memory at once, shared by a server's sessions: a
// message that would take the total past `limit` is read to its end, not kept, and answered 452.
class DataBudget {
public:
    explicit DataBudget(size_t limit) : limit_(limit) {}
    bool take(size_t bytes);  // false (nothing taken) when it would pass the limit
    void give(size_t bytes);
    size_t inUse() const { return inUse_.load(); }

private:
    const size_t limit_;
    std::atomic<size_t> inUse_{0};
};

struct SessionEnv {
    TlsMode tlsMode = TlsMode::Implicit;
    bool allowPlaintextAuth = false;           // --tls off only: let AUTH run in clear, for the lesson
    std::string hostname = "localhost";        // our name in the banner, EHLO and Received
    std::string peerAddress = "127.0.0.1";     // for Received
    std::string tlsDescription;                // e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"; "" for plaintext
    std::string tlsGroup;                      // the key exchange group, e.g. "x25519"; "" for plaintext
    std::function<int64_t()> clock;            // Unix seconds; default: time(nullptr)
    std::function<std::string()> newQueueId;   // default: 12 random hex digits
    std::function<void(const std::string&)> log;  // key=value event lines (no connection id)
    std::function<void(const std::string&)> trace;  // each client input as "C: ..." (--verbose); none: not traced
    DataBudget* dataBudget = nullptr;          // shared by the server's sessions; none: no total limit
    SubmissionRates* rates = nullptr;          // shared likewise; none: no rate limit
    std::function<int64_t()> freeDiskBytes;    // free space where mail is stored; none: not checked
    std::function<void(const std::string&)> onLogin;  // the account, after AUTH succeeds (provenance)
    // Whether onLogin(account) would wait (a store write: a class server's provenance): such a login
    // is not answered on an event loop. None: it never waits.
    std::function<bool(const std::string& account)> loginWouldWait;
    // The class board's record (common/lab/class_board.h): a refused login of an existing account, and
    // a message stored (its sender and Subject).
    std::function<void(const std::string& account, bool knownSource)> onLoginFailed;
    std::function<void(const std::string& account, const std::string& subject)> onQueued;
};

struct Reply {
    int code = 0;
    std::string status;              // enhanced status code, or ""
    std::vector<std::string> lines;  // one or more texts; several make a multi-line reply
    bool secret = false;             // carries a password: never log the text
    // The reply as sent: "250-first\r\n250 last\r\n", each text preceded by the status code.
    std::string wire() const;
    // The same, with secret texts replaced, for logs.
    std::string forLog() const;
    // Its line `i` without the CRLF ("250-first"); for a log or a story, a secret text is replaced.
    std::string line(size_t i, bool forLog = false) const;

private:
    std::string joined(bool forLog) const;
};

struct Output {
    std::vector<Reply> replies;
    bool close = false;     // the server closes the connection after sending the replies
    bool startTls = false;  // after sending the replies, the server starts the TLS handshake
    size_t inputs = 0;      // client lines and BDAT chunks completed: each restarts the command clock
    // With Session::setDeferSlowWork: an input that may block (a password check, storing a message)
    // is waiting, with every byte after it, for resumeDeferred(); the replies are those before it.
    bool deferred = false;
    // With Session::resumeDeferredUntilStored: the message's end ran up to its commit, which is the
    // caller's to start (Store::deliverAsync) and to report (messageStored, which answers it).
    bool storing = false;
    // After STARTTLS: octets that arrived in clear after it, dropped unread (RFC 3207 5, CVE-2011-0411).
    // The server logs them, once per STARTTLS (event=starttls-discarded-plaintext).
    size_t discardedOctets = 0;
};

// An AUTH PLAIN response, decoded (RFC 4616 2: [authzid] NUL authcid NUL passwd); nullopt without
// its two NULs.
struct PlainCredentials {
    std::string authzid, user, password;
    // An authzid naming another user than the one logging in (this server acts as no one else).
    bool actsAsAnother() const;
};
// RFC 5321 2.4: commands are US-ASCII; a line with control or non-ASCII octets is no command.
bool isCommandText(const std::string& line);
std::optional<PlainCredentials> parsePlainResponse(const std::string& decoded);
// Why AUTH may not run now, or "" when it may (code set to the refusal's reply code).
std::string authRefusal(TlsMode mode, bool tlsActive, bool allowPlaintext, ReplyCode& code);

class Session {
public:
    enum class State {
        Fresh,             // banner sent, no HELO/EHLO yet
        Ready,             // greeted, no mail transaction
        AuthPlain,         // AUTH PLAIN sent 334, waiting for the response
        AuthLoginUser,     // AUTH LOGIN sent "Username:"
        AuthLoginPassword, // AUTH LOGIN sent "Password:"
        Mail,              // MAIL accepted, no RCPT yet
        Rcpt,              // at least one RCPT accepted
        Data,              // 354 sent, collecting message lines
        Bdat,              // BDAT read: taking exactly its octets, raw (RFC 3030 2)
        Closed,            // QUIT or a fatal error; no further input is read
    };

    Session(Authenticator& auth, Store& store, SessionLimits limits, SessionEnv env);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    Output start();                              // the 220 banner
    // What the client sent, as it arrived (any split): the replies to every input it completes, in
    // order (RFC 2920). Lines end with CRLF or a bare LF (students type into `openssl s_client`);
    // DATA ends only at <CRLF>.<CRLF>; BDAT's octets are counted, never parsed. Nothing after a
    // close is read, and nothing after STARTTLS until onTlsStarted (RFC 3207 5, CVE-2011-0411).
    Output onBytes(const char* data, size_t size);
    Output onBytes(const std::string& bytes) { return onBytes(bytes.data(), bytes.size()); }
    // The event core (event_server.cpp): its loop must not block, so with this on onBytes stops before
    // an input that may (an AUTH password check or registration: scrypt; the end of DATA or BDAT LAST:
    // Store::deliver waits for the group commit's fsync) and says Output::deferred. resumeDeferred()
    // then runs that input alone, blocking as it must: on a worker thread, while the server reads
    // nothing more for this session. The bytes after it are moved to `after`, not framed: the caller
    // gives them to onBytes again (so a later slow input is deferred in turn, for its own lane, and the
    // caller's framing limits apply to them).
    void setDeferSlowWork(bool on) { deferSlowWork_ = on; }
    Output resumeDeferred(std::string& after);
    // The deferred input is not run: the server had no worker for it in time. It is answered as the
    // thread core answers a server too busy for it (an AUTH: 454 4.7.0, no hash place; the end of a
    // message: 451 4.3.0, not stored); the bytes after it are moved to `after`, as resumeDeferred's.
    // Never blocks.
    Output refuseDeferred(std::string& after);
    // The event core on SQLite: resumeDeferred, except that a message's end stops where it would wait
    // for the group commit. Output::storing then says the message waits in pendingMessage(), for the
    // caller to hand to Store::deliverAsync and to report to messageStored(error, "" when stored),
    // whose Output answers it (250, or 451 4.3.0 and nothing stored). Nothing here blocks but the
    // checks on the way (the quota's read, mostly from memory). The session takes no input between.
    Output resumeDeferredUntilStored(std::string& after);
    std::shared_ptr<const NewMessage> pendingMessage() const;
    Output messageStored(const std::string& error);
    // Whether the deferred input is a password check (else the end of a message): its worker lane.
    bool deferredIsAuth() const;
    bool hasDeferred() const { return deferredLine_.has_value() || !deferredBytes_.empty(); }
    Output onTimeout();                          // the idle timer fired
    Output onShutdown();                         // the server is stopping (RFC 5321 3.8: 421, then close)
    // The STARTTLS handshake completed: RFC 3207 4.2 says forget everything learnt before it.
    void onTlsStarted(const std::string& tlsDescription, const std::string& tlsGroup = "");
    bool tlsActive() const { return tlsActive_; }

    State state() const { return state_; }
    // Message octets are arriving (DATA's lines or a BDAT chunk): the server's data timeouts apply.
    bool receivingMessage() const { return state_ == State::Data || state_ == State::Bdat; }
    // A message has begun (DATA, or BDAT chunks so far): losing the connection loses it.
    bool inMessage() const { return receivingMessage() || chunks_ > 0; }
    bool authenticated() const { return !user_.empty(); }
    const std::string& user() const { return user_; }
    // What a log may show of a line before the session reads it (AUTH payloads hidden).
    std::string redactForLog(const std::string& line) const;

    static const char* stateName(State s);

private:
    using Handler = Output (Session::*)(const std::string& argument);
    struct CommandSpec;
    static const CommandSpec kCommands[];

    // One line, without its ending; `bareLf` when it ended with LF alone.
    Output onLine(const std::string& line, bool bareLf);
    Output onLineTooLong();  // the reader discarded a line over maxLineLength
    Output dispatch(const std::string& line);
    Output onDataLine(const std::string& line, bool bareLf);
    // A content line (not the ending "."), without its line end: dot-unstuffed into the message.
    void takeContentLine(const char* line, size_t size);
    Output onAuthResponse(const std::string& line);
    void enterState(State next);
    Reply reply(ReplyCode code, std::string text) const;
    Output error(ReplyCode code, std::string text);
    Output finishAuth(const std::string& user, const std::string& password);
    Output finishMessage();
    // A message past every check, on its way to the store, and what its answer needs.
    struct PendingDelivery {
        std::shared_ptr<NewMessage> message;
        size_t recipients = 0, size = 0;
        int64_t now = 0;
    };
    Output completeDelivery(PendingDelivery& delivery, const std::string& error);
    std::optional<PendingDelivery> pendingDelivery_;  // resumeDeferredUntilStored's, until messageStored
    bool deliverLater_ = false;                        // inside resumeDeferredUntilStored
    void resetTransaction();

    Output cmdHelo(const std::string& arg);
    Output cmdEhlo(const std::string& arg);
    Output cmdAuth(const std::string& arg);
    Output cmdMail(const std::string& arg);
    Output cmdRcpt(const std::string& arg);
    Output cmdData(const std::string& arg);
    Output cmdBdat(const std::string& arg);
    Output cmdRset(const std::string& arg);
    Output cmdNoop(const std::string& arg);
    Output cmdHelp(const std::string& arg);
    Output cmdVrfy(const std::string& arg);
    Output cmdQuit(const std::string& arg);
    Output cmdStartTls(const std::string& arg);
    Output cmdNotImplemented(const std::string& arg);

    // BDAT (RFC 3030): the chunk being read, and why it is refused once read (a refused BDAT still
    // takes its octets, so the bytes after it are read as what they are).
    struct Refusal {
        ReplyCode code;
        std::string text;
        bool endsTransaction = false;
    };
    void takeChunkOctets(const char* data, size_t size);
    Output chunkDone();
    size_t chunkLeft_ = 0, chunkSize_ = 0;
    bool chunkLast_ = false;
    State chunkReturn_ = State::Ready;    // where a refused chunk leaves the session
    std::optional<Refusal> chunkRefusal_;
    size_t chunks_ = 0;                   // chunks accepted in this transaction

    // Adds message octets to data_ within maxMessageSize and the DataBudget; `crlf` adds a line end.
    void appendData(const char* data, size_t size, bool crlf);

    LineReader reader_;
    bool awaitingTls_ = false;  // STARTTLS answered 220: until the handshake, bytes are discarded

    // onBytes' framing; `mayBlock` false: stop before a slow input (setDeferSlowWork).
    Output frame(const char* data, size_t size, bool mayBlock);
    void takeLine(LineReader::Event& event, Output& all);
    Output runDeferred(bool refuse, std::string& after);  // the deferred input alone (resume or refuse)
    bool mayBlockOn(const LineReader::Event& event) const;
    // An AUTH input about to be deferred: answered on the loop instead when the Authenticator can
    // say at once (a cached password: no slow hash, no store write), as the retriever's event core
    // does. The answer waits here for finishAuth, which uses it for these very credentials only.
    bool authAnswerableAtOnce(const LineReader::Event& event);
    struct AuthAtOnce {
        std::string user, password;
        AuthResult result;
    };
    std::optional<AuthAtOnce> authAtOnce_;
    bool deferSlowWork_ = false;
    bool refuseSlowWork_ = false;  // inside refuseDeferred(): the password check or delivery answers busy
    std::optional<LineReader::Event> deferredLine_;  // framed, not yet run
    std::string deferredBytes_;                      // not yet framed

    Authenticator& auth_;
    Store& store_;
    SessionLimits limits_;
    SessionEnv env_;
    State state_ = State::Fresh;
    bool tlsActive_ = true;

    std::string heloName_;
    std::string heloTrace_;  // the Received field's start for it: "name (" or "unknown (HELO quoted; "
    // HELO's and EHLO's name: refused when missing or over 255 octets, else kept with its heloTrace_.
    std::optional<Output> takeHeloName(const char* verb, const std::string& arg);
    bool extended_ = false;  // EHLO rather than HELO
    std::string user_;       // authenticated address
    std::string pendingLoginUser_;
    int authFailures_ = 0;
    int errors_ = 0;

    // Mail transaction (RFC 5321 3.3)
    std::string mailFrom_;
    size_t declaredSize_ = 0;  // MAIL FROM's SIZE= (RFC 1870), 0 when none: RCPT checks each quota with it
    std::vector<std::string> recipients_;
    std::string data_;
    void releaseData();  // empties data_ and gives its bytes back to the DataBudget
    // New mail refused: the disk is below its floor; the mailbox would pass its quota.
    std::optional<Output> storageRefusal();
    // 452 4.2.2 when the mailbox cannot take `adding` more bytes; refusesAll: the reply also says no one got it.
    std::optional<Output> quotaRefusal(const std::string& mailbox, size_t adding, bool refusesAll = false);
    void resetData();    // releaseData() and the message's flags: before DATA and after a transaction
    size_t dataBudgetHeld_ = 0;  // bytes of the shared DataBudget this session holds for data_
    bool dataOverBudget_ = false;
    bool dataTooBig_ = false;
    bool dataLineTooLong_ = false;
    bool dataBareCr_ = false;          // a CR not followed by LF in the content: refused at the end
    bool previousDataLineCrlf_ = true;  // the line before (or DATA itself) ended with CRLF

    // The message's own story (issue 19): the session as the wire saw it, kept with each message
    // it delivers: C:/S: lines with AUTH redacted, message data as one line. The first half of
    // maxStoryBytes is the session's start up to its first MAIL; after that this transaction's latest
    // lines, the rest counted (earlier transactions on the connection apart).
    void noteStory(std::string line);
    void noteClientLine(const std::string& line, State before);
    void noteReplies(const Output& out);
    std::string storyJson(const std::string& queueId) const;
    int64_t startedAt_ = 0;
    std::vector<std::string> storyHead_, storyTail_;
    mutable std::string storyHeadJson_;   // storyHead_'s first storyHeadJsonLines_ lines as JSON strings, comma-joined
    mutable size_t storyHeadJsonLines_ = 0;
    size_t storyHeadBytes_ = 0, storyTailBytes_ = 0, storyTailStart_ = 0, storyLeftOut_ = 0, storyEarlier_ = 0;
    bool storyInTransaction_ = false;  // a MAIL was seen: the head is closed, each MAIL restarts the tail
};

}  // namespace maillab::smtp
