// A Store that forwards to another and lets a test step in: run a hook right after a login's read
// (what a parallel connection does meanwhile), count the account reads, or fail every write of the
// guess budget and trusted sources (a full disk). Shared by the Authenticator's and the session's tests.
#pragma once
#include "../../common/lab/store.h"

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace maillab::testing {

// A store that runs `hook` once, right after the next read of an account's login state or its
// credential generation: what a parallel connection does between a login's first read and the rest.
class RacingStore : public Store {
public:
    explicit RacingStore(Store& inner) : in_(inner) {}
    std::function<void()> hook;
    bool diskFull = false;  // every write of the guess budget and trusted sources fails
    void full() const {
        if (diskFull) throw StoreError("step: database or disk is full");
    }
    int loginStateReads = 0;
    std::optional<LoginState> loginState(const std::string& e, const std::string& s) override {
        ++loginStateReads;
        auto state = in_.loginState(e, s);
        if (hook) std::exchange(hook, nullptr)();
        return state;
    }
    int generationReads = 0;
    std::optional<uint64_t> credentialGeneration(const std::string& e) override {
        ++generationReads;
        auto generation = in_.credentialGeneration(e);
        if (hook) std::exchange(hook, nullptr)();
        return generation;
    }
    std::optional<Account> findAccount(const std::string& e) override { return in_.findAccount(e); }
    bool createAccount(const std::string& e, const std::string& h, int64_t n) override { return in_.createAccount(e, h, n); }
    bool setPasswordHash(const std::string& e, const std::string& h) override { return in_.setPasswordHash(e, h); }
    double takeGuess(const std::string& k, double b, double r, int64_t n) override {
        full();
        return in_.takeGuess(k, b, r, n);
    }
    void returnGuess(const std::string& k, double b) override {
        full();
        in_.returnGuess(k, b);
    }
    void clearGuessBudgets(const std::string& e) override { in_.clearGuessBudgets(e); }
    bool isTrustedSource(const std::string& e, const std::string& s) override { return in_.isTrustedSource(e, s); }
    void trustSource(const std::string& e, const std::string& s, int64_t n) override {
        full();
        in_.trustSource(e, s, n);
    }
    std::vector<int64_t> deliver(const NewMessage& m) override { return in_.deliver(m); }
    std::vector<MessageSummary> listMessages(const std::string& m, int64_t o, int64_t l) override { return in_.listMessages(m, o, l); }
    std::optional<StoredMessage> getMessage(const std::string& m, int64_t id) override { return in_.getMessage(m, id); }
    std::optional<MessageSummary> findMessage(const std::string& m, int64_t id) override { return in_.findMessage(m, id); }
    std::vector<MessageStart> listMessageStarts(const std::string& m, int64_t o, int64_t l, int64_t b) override {
        return in_.listMessageStarts(m, o, l, b);
    }
    MailboxStats mailboxStats(const std::string& m) override { return in_.mailboxStats(m); }
    std::optional<std::string> messageStory(const std::string& m, int64_t id) override { return in_.messageStory(m, id); }
    int64_t deleteMessages(const std::string& m, const std::vector<int64_t>& ids) override { return in_.deleteMessages(m, ids); }
    std::vector<Account> listAccounts() override { return in_.listAccounts(); }
    bool deleteAccount(const std::string& e) override { return in_.deleteAccount(e); }
    bool setRole(const std::string& e, const std::string& r) override { return in_.setRole(e, r); }
    bool recordTlsLogin(const TlsSessionRecord& r) override { return in_.recordTlsLogin(r); }
    std::vector<TlsSessionRecord> findTlsSessions(const std::vector<std::string>& r) override { return in_.findTlsSessions(r); }
    int64_t forgetTlsSessionsBefore(int64_t c) override { return in_.forgetTlsSessionsBefore(c); }
    void recordActivity(const std::vector<ActivityCount>& c) override { in_.recordActivity(c); }
    std::vector<ActivityCount> listActivity() override { return in_.listActivity(); }
    std::vector<std::string> listMailboxes() override { return in_.listMailboxes(); }
    std::vector<TrustedSource> listTrustedSources() override { return in_.listTrustedSources(); }
    std::unique_ptr<StoreImport> beginImport() override { return in_.beginImport(); }

private:
    Store& in_;
};

}  // namespace maillab::testing
