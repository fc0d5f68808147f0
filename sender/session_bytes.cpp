// The SMTP session's framing: the bytes a client sends become lines (commands, DATA's content) or
// BDAT chunks (RFC 3030) here and nowhere else, so the server, the fuzz target and the tests all
// make one call. The commands themselves are in session.cpp.
#include "session.h"

#include "../common/lab/password.h"
#include "../common/net/log_text.h"
#include "../common/net/text.h"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace maillab::smtp {

namespace {
void append(Output& into, Output&& from) {
    for (Reply& r : from.replies) into.replies.push_back(std::move(r));
    into.close = into.close || from.close;
    into.startTls = into.startTls || from.startTls;
    into.inputs += from.inputs;
    into.deferred = into.deferred || from.deferred;
    into.storing = into.storing || from.storing;
    into.discardedOctets += from.discardedOctets;
}

// RFC 5322 2.3: CR and LF appear in a message only together. BDAT's octets are not lines, so a bare
// CR or LF in them ends no command and smuggles nothing; the message is stored with CRLF line ends
// (as DATA stores it) and ending with one, for the readers of the mailbox.
void normalizeLineEnds(std::string& message) {
    bool bare = false;
    for (size_t i = 0; i < message.size() && !bare; ++i)
        bare = message[i] == '\r' ? (i + 1 == message.size() || message[i + 1] != '\n')
                                  : message[i] == '\n' && (i == 0 || message[i - 1] != '\r');
    if (bare) {
        std::string fixed;
        fixed.reserve(message.size() + message.size() / 64 + 2);
        for (size_t i = 0; i < message.size(); ++i) {
            char c = message[i];
            if (c == '\r') {
                fixed += "\r\n";
                if (i + 1 < message.size() && message[i + 1] == '\n') ++i;
            } else if (c == '\n') {
                fixed += "\r\n";
            } else {
                fixed += c;
            }
        }
        message.swap(fixed);
    }
    if (!message.empty() && (message.size() < 2 || message.compare(message.size() - 2, 2, "\r\n") != 0))
        message += "\r\n";
}
}  // namespace

Output Session::onBytes(const char* data, size_t size) {
    if (hasDeferred()) {  // a caller that did not wait for resumeDeferred(): kept in order behind it
        deferredBytes_.append(data, size);
        Output waiting;
        waiting.deferred = true;
        return waiting;
    }
    return frame(data, size, !deferSlowWork_);
}

Output Session::runDeferred(bool refuse, std::string& after) {
    // Only the deferred input runs here (a worker's call): what followed it goes back to the caller
    // unframed, to be framed again with deferral on, so that the next slow input is deferred for the
    // worker lane it needs (an AUTH pipelined behind a message's end is no delivery's job, five AUTHs
    // are five jobs) and the caller's framing limits apply to it.
    Output all;
    refuseSlowWork_ = refuse;
    std::string bytes = std::move(deferredBytes_);
    deferredBytes_.clear();
    size_t used = 0;
    try {
        if (deferredLine_) {
            LineReader::Event event = std::move(*deferredLine_);
            deferredLine_.reset();
            takeLine(event, all);
        } else if (state_ == State::Bdat && !bytes.empty()) {
            // A BDAT LAST chunk's end: the octets that complete it are the input (frame stops there).
            used = std::min(chunkLeft_, bytes.size());
            all = frame(bytes.data(), used, true);
        }
    } catch (...) {
        refuseSlowWork_ = false;
        throw;
    }
    refuseSlowWork_ = false;
    after = bytes.substr(used);
    return all;
}

Output Session::resumeDeferred(std::string& after) { return runDeferred(false, after); }

// A BDAT LAST whose octets are in the deferred bytes is refused as they end (the flag is still set).
Output Session::refuseDeferred(std::string& after) { return runDeferred(true, after); }

bool Session::deferredIsAuth() const {
    if (state_ == State::AuthPlain || state_ == State::AuthLoginPassword) return true;
    return deferredLine_ && !deferredLine_->tooLong && state_ != State::Data && parseCommand(deferredLine_->line).verb == "AUTH";
}

// Would this input block (a password check, storing a message)? Decided before it runs, from the
// state and the line alone; a false yes only costs a trip to a worker.
bool Session::mayBlockOn(const LineReader::Event& event) const {
    if (event.tooLong) return false;
    switch (state_) {
        case State::AuthPlain:
        case State::AuthLoginPassword: return true;
        case State::AuthLoginUser: return false;
        case State::Data: return event.line == ".";
        case State::Closed: return false;
        default: break;
    }
    Command command = parseCommand(event.line);
    if (command.verb == "AUTH") return command.argument.find(' ') != std::string::npos;  // an initial response
    if (command.verb == "BDAT") {
        // Only BDAT 0 LAST ends a message on its line; a LAST chunk with octets ends where they do
        // (deferred in frame's BDAT branch), so its line runs on the loop.
        std::string upper = text::upperCase(command.argument);
        std::string size = upper.substr(0, upper.find(' '));
        return upper.size() >= 4 && upper.compare(upper.size() - 4, 4, "LAST") == 0 && !size.empty() &&
               size.find_first_not_of('0') == std::string::npos;
    }
    return false;
}

void Session::takeLine(LineReader::Event& event, Output& all) {
    ++all.inputs;
    if (env_.trace)
        env_.trace(event.tooLong ? std::string("C: <line over the length limit, discarded>")
                                 : "C: " + escapeControl(redactForLog(event.line)));
    append(all, event.tooLong ? onLineTooLong() : onLine(event.line, event.bareLf));
    if (all.startTls) {
        awaitingTls_ = true;
        reader_ = LineReader(limits_.maxLineLength);
    }
}

Output Session::frame(const char* data, size_t size, bool mayBlock) {
    Output all;
    const char* end = data + size;
    while (data < end && state_ != State::Closed && !all.close) {
        if (awaitingTls_) {
            // RFC 3207 5 / CVE-2011-0411: bytes pipelined after STARTTLS arrived in clear; none may
            // run inside the TLS session that follows.
            all.discardedOctets += static_cast<size_t>(end - data);
            break;
        }
        if (state_ == State::Bdat) {
            size_t n = std::min(chunkLeft_, static_cast<size_t>(end - data));
            if (!mayBlock && !refuseSlowWork_ && n == chunkLeft_ && chunkLast_ && !chunkRefusal_) {  // this read ends the message
                deferredBytes_.assign(data, end);
                all.deferred = true;
                break;
            }
            takeChunkOctets(data, n);
            data += n;
            if (chunkLeft_ > 0) break;
            ++all.inputs;
            Output out = chunkDone();
            noteReplies(out);
            append(all, std::move(out));
            continue;
        }
        // A message's content lines go straight from the read into the message, as onDataLine
        // takes them (per line: a string, a queue entry and a copy cost more than a kept-open
        // message's commit, issue 22). The ending ".", a line over the limit, a line begun in an
        // earlier read and a traced session take the general path below.
        std::string_view line;
        bool bareLf = false;
        const char* next = nullptr;
        if (state_ == State::Data && !env_.trace && reader_.peekWholeLine(data, end, line, bareLf, next) && line != ".") {
            ++all.inputs;
            previousDataLineCrlf_ = !bareLf;
            takeContentLine(line.data(), line.size());
            data = next;
            continue;
        }
        // One line at a time: after a BDAT command the next bytes are octets, not lines.
        LineReader::Event event;
        if (!reader_.nextFrom(data, end, event)) break;  // no line end yet: the rest waits in the reader
        if (!mayBlock && mayBlockOn(event) && !authAnswerableAtOnce(event)) {
            deferredLine_ = std::move(event);
            deferredBytes_.assign(data, end);
            all.deferred = true;
            break;
        }
        takeLine(event, all);
        authAtOnce_.reset();  // used by this line's finishAuth, or by none (a refusal before it)
    }
    return all;
}

bool Session::authAnswerableAtOnce(const LineReader::Event& event) {
    if (event.tooLong) return false;
    std::string response;  // the base64 text carrying the password
    if (state_ == State::AuthPlain || state_ == State::AuthLoginPassword) {
        response = event.line;
    } else {
        if (state_ == State::Data || state_ == State::Bdat) return false;  // a message's end: the delivery lane's
        Command command = parseCommand(event.line);
        if (command.verb != "AUTH") return false;  // BDAT 0 LAST
        // An AUTH that dispatch or cmdAuth refuses before any check (not after EHLO or in a mail
        // transaction, not ASCII, a second AUTH, before STARTTLS) runs on the loop, checking nothing.
        if (state_ != State::Ready || authenticated() || !isCommandText(event.line)) return true;
        ReplyCode unused{0, ""};
        if (!authRefusal(env_.tlsMode, tlsActive_, env_.allowPlaintextAuth, unused).empty()) return true;
        Command parts = parseCommand(command.argument);  // mechanism, initial response
        if (parts.verb != "PLAIN") return false;  // AUTH LOGIN's initial response carries the name only
        response = parts.argument;
    }
    // What onAuthResponse refuses before any check (a cancel, not base64, no two NULs, another
    // user's authzid) runs on the loop: it cannot block.
    if (response == "*") return true;
    std::optional<PlainCredentials> credentials;
    try {
        std::string decoded = response == "=" ? "" : maillab::base64Decode(response);
        if (state_ == State::AuthLoginPassword) credentials = PlainCredentials{"", pendingLoginUser_, decoded};
        else credentials = parsePlainResponse(decoded);
    } catch (const std::exception&) {
        return true;
    }
    if (!credentials || credentials->actsAsAnother()) return true;
    if (credentials->password.empty()) return false;  // a registration's slow hash, perhaps
    std::optional<AuthResult> result;
    try {
        result = auth_.authenticateWithoutWaiting(credentials->user, credentials->password, env_.peerAddress);
    } catch (const std::exception&) {
        return false;  // a store error: the worker's full check says it, as before
    }
    // Only a login is answered here: a refusal (a spent budget, an account deleted meanwhile) is the
    // worker's, as a wrong password's is, so a right and a wrong password are answered alike.
    if (!result || result->outcome != AuthOutcome::Ok) return false;
    if (env_.loginWouldWait && env_.loginWouldWait(result->user)) return false;  // the worker runs it all again
    authAtOnce_ = AuthAtOnce{credentials->user, credentials->password, std::move(*result)};
    return true;
}

Output Session::cmdBdat(const std::string& arg) {
    // RFC 3030 2: BDAT SP chunk-size [SP "LAST"]. Without a size the octets that follow cannot be
    // counted: 501 at once (they will be read as commands, and refused as such).
    std::string size = arg.substr(0, arg.find(' '));
    std::string rest = size.size() < arg.size() ? arg.substr(size.size() + 1) : "";
    bool last = rest.size() == 4 && std::equal(rest.begin(), rest.end(), "LAST",
                                               [](char a, char b) { return std::toupper(static_cast<unsigned char>(a)) == b; });
    if (size.empty() || size.size() > 18 || size.find_first_not_of("0123456789") != std::string::npos ||
        (!rest.empty() && !last)) {
        chunkRefusal_.reset();
        return error(SyntaxError, "Syntax: BDAT <octets> [LAST], the size in decimal digits (at most 18)");
    }
    chunkSize_ = chunkLeft_ = static_cast<size_t>(std::stoull(size));
    chunkLast_ = last;
    chunkReturn_ = state_;
    // RFC 1870 / RFC 3030 4: a chunk that would take the message past the limit is read and refused.
    if (!chunkRefusal_ && data_.size() + chunkSize_ > limits_.maxMessageSize)
        chunkRefusal_ = Refusal{MessageTooBig, "Message size exceeds fixed maximum message size (" +
                                                   std::to_string(limits_.maxMessageSize) + " octets); not stored",
                                true};
    enterState(State::Bdat);
    if (chunkLeft_ == 0) return chunkDone();
    return {};
}

void Session::takeChunkOctets(const char* data, size_t size) {
    chunkLeft_ -= size;
    if (!chunkRefusal_) appendData(data, size, false);  // no dot-stuffing, no lines: the octets as sent
}

Output Session::chunkDone() {
    noteStory("C: <" + std::to_string(chunkSize_) + " octets>");
    if (env_.trace) env_.trace("C: <" + std::to_string(chunkSize_) + " octets of BDAT data>");
    if (chunkRefusal_) {
        Refusal refusal = std::move(*chunkRefusal_);
        chunkRefusal_.reset();
        if (refusal.endsTransaction) {
            // RFC 3030 2: the transaction has failed; BDATs already pipelined after it are read and
            // refused (503, no MAIL) until the client starts again.
            resetTransaction();
            enterState(State::Ready);
        } else {
            enterState(chunkReturn_);
        }
        return error(refusal.code, std::move(refusal.text));
    }
    ++chunks_;
    // Too big or over the server's budget: refused now, not at LAST (finishMessage says which).
    if (chunkLast_ || dataTooBig_ || dataOverBudget_) {
        if (chunkLast_ && !dataTooBig_ && !dataOverBudget_) {
            size_t before = data_.size();
            normalizeLineEnds(data_);
            if (data_.size() > before) appendData("", 0, false);  // the budget counts what grew
        }
        return finishMessage();
    }
    enterState(State::Rcpt);
    Output out;
    out.replies.push_back(reply(Ok, "Ok: " + std::to_string(chunkSize_) + " octets received, " +
                                        std::to_string(data_.size()) + " in all"));
    return out;
}

}  // namespace maillab::smtp
