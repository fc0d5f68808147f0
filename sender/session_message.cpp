// The SMTP session's message: DATA lines (dot-unstuffing, the in-flight budget), finishing a message
// (Received, the header summary) and storing it (Store::deliver: the 250 only after the commit, the
// quota and the disk refusals), and the message's story (the session's transcript, stored with it).
// Split from session.cpp, which keeps the command table, the states and the commands.
#include "session.h"

#include "smtp_syntax.h"
#include "../common/net/rfc5322.h"
#include "../common/net/text.h"
#include "../common/net/log_text.h"

#include <Poco/JSONString.h>
#include <Poco/String.h>

#include <algorithm>
#include <stdexcept>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <sstream>
#include <vector>

namespace maillab::smtp {

namespace {
bool startsWithHeaderField(const std::string& message) {
    // RFC 5322 2.2: field-name is printable US-ASCII except ':' followed by ':'.
    size_t i = 0;
    while (i < message.size() && message[i] > 32 && message[i] < 127 && message[i] != ':') ++i;
    return i > 0 && i < message.size() && message[i] == ':';
}
}  // namespace

void Session::noteStory(std::string line) {
    if (limits_.maxStoryBytes == 0) return;
    if (line.size() > 1024) line.resize(1024);
    if (!isPlainLogText(line)) line = escapeControl(line);
    const size_t half = limits_.maxStoryBytes / 2;
    if (storyTail_.empty() && !storyInTransaction_ && storyHeadBytes_ + line.size() <= half) {
        storyHeadBytes_ += line.size();
        storyHead_.push_back(std::move(line));
        return;
    }
    storyTailBytes_ += line.size();
    storyTail_.push_back(std::move(line));
    while (storyTailBytes_ > half && storyTailStart_ < storyTail_.size()) {
        storyTailBytes_ -= storyTail_[storyTailStart_].size();
        storyTail_[storyTailStart_++].clear();
        ++storyLeftOut_;
    }
    if (storyTailStart_ > 64 && storyTailStart_ * 2 > storyTail_.size()) {  // compact now and then
        storyTail_.erase(storyTail_.begin(), storyTail_.begin() + static_cast<std::ptrdiff_t>(storyTailStart_));
        storyTailStart_ = 0;
    }
}

void Session::noteClientLine(const std::string& line, State before) {
    if (before == State::Closed) return;
    if (before == State::Data) {
        // The message itself is in the mailbox: the story says how much of it crossed the wire.
        if (line == ".") {
            noteStory("C: <the message: " + std::to_string(data_.size()) + " octets, dot-stuffed on the wire>");
            noteStory("C: .");
        }
        return;
    }
    // Each message's story is the session's start and its own transaction: on a connection kept open
    // for thousands of messages, the ones before are counted, not copied into every story (they made
    // each stored story a full smtp.maxStoryBytes and cost more CPU than the delivery itself).
    if (line.size() >= 4 && Poco::icompare(line, 0, 4, "MAIL") == 0) {
        if (storyInTransaction_) {
            storyEarlier_ += storyTail_.size() - storyTailStart_ + storyLeftOut_;
            storyTail_.clear();
            storyTailBytes_ = storyTailStart_ = storyLeftOut_ = 0;
        }
        storyInTransaction_ = true;
    }
    noteStory("C: " + redactForLog(line));
}

void Session::noteReplies(const Output& out) {
    for (const Reply& r : out.replies)
        for (size_t i = 0; i < r.lines.size(); ++i) noteStory("S: " + r.line(i, true));
}

namespace {
// value as Poco::toJSON writes it (JSON_WRAP_STRINGS), appended to out. Most lines are printable ASCII
// that Poco::toJSON, a code point at a time, would copy unchanged; one pass tells (it escapes '"' and
// '/' too, and '\\', so those are left to it as well).
void appendJsonString(std::string& out, const std::string& value) {
    for (char ch : value) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c >= 0x7F || c == '\\' || c == '"' || c == '/') {
            out += Poco::toJSON(value, Poco::JSON_WRAP_STRINGS);
            return;
        }
    }
    out += '"';
    out += value;
    out += '"';
}
}  // namespace

// The story as Poco::JSON::Object would write it (keys sorted, no spaces; each string escaped by
// Poco::toJSON, as Object's stringify does), built as one string: an Object and its Dynamic::Var
// copies cost an eighth of a kept-open message's CPU (perf, issue 22). tests/unit/test_session.cpp
// parses it back. The head's lines only ever grow: their JSON is kept and extended, not rebuilt for
// each message of a kept-open connection.
std::string Session::storyJson(const std::string& queueId) const {
    if (storyHeadJsonLines_ != storyHead_.size()) {
        for (size_t i = storyHeadJsonLines_; i < storyHead_.size(); ++i) {
            if (i) storyHeadJson_ += ',';
            appendJsonString(storyHeadJson_, storyHead_[i]);
        }
        storyHeadJsonLines_ = storyHead_.size();
    }
    size_t size = 256 + queueId.size() + env_.peerAddress.size() + heloName_.size() + user_.size() + storyHeadJson_.size();
    for (size_t i = storyTailStart_; i < storyTail_.size(); ++i) size += storyTail_[i].size() + 4;
    std::string out;
    out.reserve(size + size / 8);
    auto string = [&out](const std::string& value) { appendJsonString(out, value); };
    auto key = [&out, &string](const char* name) {
        out += out.size() == 1 ? "" : ",";
        string(name);
        out += ':';
    };
    out += '{';
    key("account");
    string(user_);
    key("helo");
    string(escapeControl(heloName_));
    key("peer");
    string(env_.peerAddress);
    key("queue_id");
    string(queueId);
    key("started_at");
    out += std::to_string(startedAt_);
    key("starttls");
    out += env_.tlsMode == TlsMode::StartTls ? "true" : "false";
    key("tls");
    string(tlsActive_ ? env_.tlsDescription : std::string());
    key("tls_group");
    string(tlsActive_ ? env_.tlsGroup : std::string());
    key("transcript");
    out += '[';
    out += storyHeadJson_;
    bool first = storyHeadJson_.empty();
    auto line = [&](const std::string& text) {
        if (!first) out += ',';
        first = false;
        string(text);
    };
    if (storyEarlier_)
        line("... (" + std::to_string(storyEarlier_) + " lines of earlier messages on this connection left out) ...");
    if (storyLeftOut_) line("... (" + std::to_string(storyLeftOut_) + " lines left out: smtp.maxStoryBytes) ...");
    for (size_t i = storyTailStart_; i < storyTail_.size(); ++i) line(storyTail_[i]);
    out += "]}";
    return out;
}

Output Session::onDataLine(const std::string& line, bool bareLf) {
    bool previousCrlf = previousDataLineCrlf_;
    previousDataLineCrlf_ = !bareLf;
    if (line == ".") {
        // RFC 5321 4.1.1.4 and 2.3.8: only <CRLF>.<CRLF> ends the data. A "." with a bare LF on either
        // side is how SMTP smuggling (CVE-2023-51764/51765) hides a second message: what follows must
        // not run as commands, and the message is not stored. It is also what `openssl s_client`
        // sends without -crlf, so the reply says so; the connection closes either way.
        if (!bareLf && previousCrlf) return finishMessage();
        Output out;
        out.replies.push_back(reply(BareLineFeedAtEnd,
                                    "Bare <LF> around the ending \".\" (only <CRLF>.<CRLF> ends DATA, RFC 5321 "
                                    "2.3.8); message not stored, closing connection. With openssl s_client use "
                                    "-crlf"));
        out.close = true;
        env_.log("event=bare-lf-at-end-of-data stored=no");
        resetTransaction();
        enterState(State::Closed);
        return out;
    }
    takeContentLine(line.data(), line.size());
    return {};
}

void Session::takeContentLine(const char* line, size_t size) {
    // Elsewhere in the content a bare LF is read as CRLF (Postfix's smtpd_forbid_bare_newline =
    // normalize); a bare CR, which other servers may read as a line end, refuses the message.
    if (std::memchr(line, '\r', size)) dataBareCr_ = true;
    if (size > 0 && line[0] == '.') ++line, --size;  // RFC 5321 4.5.2: the client's added dot
    appendData(line, size, true);
}

void Session::appendData(const char* data, size_t size, bool crlf) {
    if (data_.size() + size + (crlf ? 2 : 0) > limits_.maxMessageSize) {
        dataTooBig_ = true;  // keep reading to the end of the message, store nothing
        releaseData();
    }
    if (dataTooBig_ || dataOverBudget_) return;
    data_.append(data, size);
    if (crlf) data_ += "\r\n";
    // What the buffer holds (its capacity, not only its size) is taken from the server's budget
    // as it grows; past the budget the message is read to its end and refused with 452.
    if (env_.dataBudget && data_.capacity() > dataBudgetHeld_) {
        size_t more = data_.capacity() - dataBudgetHeld_;
        if (env_.dataBudget->take(more)) {
            dataBudgetHeld_ += more;
        } else {
            dataOverBudget_ = true;
            releaseData();
            env_.log("event=data-over-budget in-flight=" + std::to_string(env_.dataBudget->inUse()));
        }
    }
}

Output Session::finishMessage() {
    enterState(State::Ready);
    if (refuseSlowWork_) {
        // The event core had no worker for it in time. RFC 5321 6.1: the message is ours only once
        // 250 is sent; a transient refusal leaves it with the client, which tries again.
        refuseSlowWork_ = false;
        resetTransaction();
        env_.log("event=store result=error reason=\"no worker free in time: the server is busy\"");
        return error(LocalError, "Local error in processing: message not stored; try again later");
    }
    if (dataOverBudget_) {
        resetTransaction();
        // RFC 5321 4.2.2 / RFC 3463 X.3.1: a transient refusal, the client tries again later.
        return error(InsufficientStorage, "Insufficient system storage: too much mail arriving at once; "
                                          "message not stored, try again later");
    }
    if (dataTooBig_) {
        resetTransaction();
        return error(MessageTooBig, "Message size exceeds fixed maximum message size (" +
                                        std::to_string(limits_.maxMessageSize) + " octets); not stored");
    }
    if (dataLineTooLong_) {
        resetTransaction();
        return error(DataLineTooLong, "Message has a line over " + std::to_string(limits_.maxLineLength) +
                                      " octets (RFC 5321 4.5.3.1.6); not stored");
    }
    if (dataBareCr_) {
        resetTransaction();
        return error(BareCarriageReturn, "Message contains a bare <CR> (RFC 5321 2.3.8: CR only before LF); not stored");
    }

    const int64_t now = env_.clock();
    NewMessage message;
    message.queueId = env_.newQueueId();
    message.envelopeFrom = mailFrom_;
    message.recipients = recipients_;
    message.receivedAt = now;

    HeaderSummary headers = summarizeHeaders(data_);
    std::string date = rfc5322::dateTime(now);
    // RFC 5321 4.4: a trace field at the top; ESMTPSA says ESMTP with TLS and AUTH (RFC 3848).
    // "(Authenticated sender: ...)" as Postfix writes it (smtpd_sasl_authenticated_header): who
    // really sent it, whatever the header From says.
    std::string added = "Received: from " + heloTrace_ + env_.peerAddress + ")\r\n\t(Authenticated sender: " +
                        user_ + ")\r\n\tby " + env_.hostname +
                        " (maillab) with " + std::string(tlsActive_ ? "ESMTPSA" : "ESMTPA") +
                        " id " + message.queueId + "\r\n\t";
    if (tlsActive_ && !env_.tlsDescription.empty()) added += "(" + env_.tlsDescription + ")\r\n\t";
    if (recipients_.size() == 1) added += "for <" + recipients_[0] + ">";
    added += "; " + date + "\r\n";
    // RFC 6409 8.2/8.3: a submission server may add a missing Date and Message-ID.
    if (!headers.hasDate) added += "Date: " + date + "\r\n";
    if (!headers.hasMessageId) {
        headers.messageId = "<" + message.queueId + "." + std::to_string(now) + "@" + env_.hostname + ">";
        added += "Message-ID: " + headers.messageId + "\r\n";
    }
    if (!startsWithHeaderField(data_)) added += "\r\n";  // a bare body: keep it out of the header section
    // In place: one copy of the message in memory, not two (the budget still counts it until stored).
    data_.insert(0, added);
    message.raw = std::move(data_);
    // The header as it came, or none: the envelope sender is kept apart (envelopeFrom), and the lab
    // shows the two side by side (a message without From: is the header-versus-envelope lesson).
    message.from = headers.from;
    message.to = headers.to;
    message.subject = headers.subject;
    message.date = headers.hasDate ? headers.date : date;
    message.story = storyJson(message.queueId);

    size_t count = recipients_.size();
    size_t size = message.raw.size();
    std::optional<Output> refusal = storageRefusal();
    for (size_t i = 0; !refusal && i < recipients_.size(); ++i) refusal = quotaRefusal(recipients_[i], size, count > 1);
    if (!refusal && env_.rates) {
        if (int64_t wait = env_.rates->wait(user_, env_.peerAddress, SubmissionRates::What::Bytes,
                                            static_cast<int64_t>(size * count), now))
            refusal = error(RateLimited, "Submission rate limit: " +
                                             std::to_string(env_.rates->perHour(SubmissionRates::What::Bytes) >> 20) +
                                             " MiB an hour from your account and address (each recipient counts); "
                                             "try again in " + std::to_string((wait + 59) / 60) + " min");
    }
    if (refusal) {
        resetTransaction();
        return *refusal;
    }
    PendingDelivery delivery{std::make_shared<NewMessage>(std::move(message)), count, size, now};
    if (deliverLater_) {  // the event core commits it (Store::deliverAsync) and calls messageStored
        pendingDelivery_ = std::move(delivery);
        Output out;
        out.storing = true;
        return out;
    }
    std::string failure;
    try {
        store_.deliver(*delivery.message);
    } catch (...) {
        failure = Store::failureText(std::current_exception());
    }
    return completeDelivery(delivery, failure);
}

Output Session::resumeDeferredUntilStored(std::string& after) {
    deliverLater_ = true;
    try {
        Output out = runDeferred(false, after);
        deliverLater_ = false;
        return out;
    } catch (...) {
        deliverLater_ = false;
        throw;
    }
}

std::shared_ptr<const NewMessage> Session::pendingMessage() const {
    return pendingDelivery_ ? pendingDelivery_->message : nullptr;
}

Output Session::messageStored(const std::string& error) {
    if (!pendingDelivery_) throw std::logic_error("messageStored without a message on its way to the store");
    PendingDelivery delivery = std::move(*pendingDelivery_);
    pendingDelivery_.reset();
    Output out = completeDelivery(delivery, error);
    noteReplies(out);
    return out;
}

// After the commit (or its failure): the answer, and only now the transaction's end.
Output Session::completeDelivery(PendingDelivery& delivery, const std::string& failure) {
    NewMessage& message = *delivery.message;
    message.raw = std::string();  // the message's memory goes now; the budget's bytes with the reset
    resetTransaction();
    if (!failure.empty()) {
        env_.log("event=store result=error reason=" + logValue(failure));
        return error(LocalError, "Local error in processing: message not stored; try again later");
    }
    env_.log("event=queued qid=" + message.queueId + " from=" + message.envelopeFrom +
             " rcpts=" + std::to_string(delivery.recipients) + " size=" + std::to_string(delivery.size));
    if (env_.rates) env_.rates->charge(user_, env_.peerAddress, static_cast<int64_t>(delivery.recipients),
                                       static_cast<int64_t>(delivery.size * delivery.recipients), delivery.now);
    if (env_.onQueued) env_.onQueued(user_, message.subject);
    Output out;
    // Sent only after the commit: a 250 means the message is on disk.
    out.replies.push_back(reply(Ok, "Ok: queued as " + message.queueId));
    return out;
}

std::optional<Output> Session::storageRefusal() {
    if (!env_.freeDiskBytes || limits_.minFreeDiskBytes <= 0) return std::nullopt;
    int64_t free = env_.freeDiskBytes();
    if (free >= limits_.minFreeDiskBytes) return std::nullopt;
    // New mail stops first, so that logins and reading (which write a little) keep working.
    env_.log("event=disk-low free=" + std::to_string(free) + " floor=" + std::to_string(limits_.minFreeDiskBytes));
    return error(InsufficientStorage, "Insufficient system storage: the server's disk is nearly full; "
                                      "no new mail until there is room (try again later)");
}

std::optional<Output> Session::quotaRefusal(const std::string& mailbox, size_t adding, bool refusesAll) {
    if (limits_.mailboxQuotaBytes <= 0) return std::nullopt;
    int64_t holds = 0;
    try {
        holds = store_.mailboxStats(mailbox).bytes;
    } catch (const std::exception& e) {
        env_.log(std::string("event=store result=error reason=") + logValue(e.what()));
        return error(LocalError, "Local error in processing; try again later");
    }
    if (holds + static_cast<int64_t>(adding) <= limits_.mailboxQuotaBytes && holds < limits_.mailboxQuotaBytes)
        return std::nullopt;
    // RFC 3463 4.2.2: mailbox full, a transient condition (the owner can make room).
    auto size = [](int64_t bytes) {
        return bytes >= (1 << 20) ? std::to_string(bytes >> 20) + " MiB" : std::to_string(bytes) + " bytes";
    };
    return error(MailboxFull, "Mailbox full: <" + mailbox + "> holds " + size(holds) + " of its " +
                                  size(limits_.mailboxQuotaBytes) +
                                  (adding ? " and this message does not fit" : "") + "; try again later" +
                                  (refusesAll ? " (stored for no recipient: send it again without <" + mailbox + ">)" : ""));
}

}  // namespace maillab::smtp
