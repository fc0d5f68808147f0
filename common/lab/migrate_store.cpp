// maillab-admin migrate's work (migrate_store.h): reads the source through the Store interface and
// writes the target through one StoreImport transaction.
#include "migrate_store.h"

#include <algorithm>
#include <climits>
#include <map>
#include <tuple>
#include <vector>

namespace maillab {

namespace {

// What makes two stored copies one delivery (one text in the store): the same queue id and header
// fields, the same arrival and the same bytes and story. The Store does not name its bodies, so
// the copies are grouped again from these.
using DeliveryKey = std::tuple<std::string, std::string, std::string, std::string, std::string, std::string, int64_t>;

DeliveryKey keyOf(const MessageSummary& m) {
    return {m.queueId, m.envelopeFrom, m.from, m.to, m.subject, m.date, m.receivedAt};
}

// A delivery as the target will store it: its text and story, the mailboxes and the ids there.
struct Delivery {
    NewMessage message;
    std::vector<int64_t> ids;
};

std::string targetContents(Store& to) {
    size_t accounts = to.listAccounts().size(), mailboxes = to.listMailboxes().size();
    size_t sessions = to.findTlsSessions({}).size(), activity = to.listActivity().size();
    if (accounts + mailboxes + sessions + activity == 0) return "";
    return std::to_string(accounts) + " accounts, " + std::to_string(mailboxes) + " mailboxes with mail, " +
           std::to_string(sessions) + " TLS sessions and " + std::to_string(activity) + " class board counts";
}

}  // namespace

MigrationCounts migrateStore(Store& from, Store& to, const MigrationOptions& options) {
    std::string already = targetContents(to);
    if (!already.empty() && !options.intoNonEmpty)
        throw MigrationRefused("the target holds " + already + " already; nothing was moved. Move into an empty "
                               "database (or schema), or add --into-nonempty to keep what it holds and add to it");
    const bool keepIds = already.empty();
    MigrationCounts counts;
    std::unique_ptr<StoreImport> into = to.beginImport();

    for (const Account& account : from.listAccounts()) (into->addAccount(account) ? counts.accounts : counts.accountsKept)++;
    for (const TrustedSource& trusted : from.listTrustedSources()) {
        into->addTrustedSource(trusted);
        ++counts.trustedSources;
    }

    // Every stored copy, grouped by delivery; each group then split by its bytes (copies whose texts
    // differ were not one delivery, whatever their headers say).
    std::map<DeliveryKey, std::vector<MessageSummary>> groups;
    for (const std::string& mailbox : from.listMailboxes()) {
        ++counts.mailboxes;
        for (const MessageSummary& m : from.listMessages(mailbox, 0, INT64_MAX)) groups[keyOf(m)].push_back(m);
    }
    // In the order they arrived, so that a target numbering them itself keeps that order.
    std::vector<const std::vector<MessageSummary>*> ordered;
    for (auto& [key, copies] : groups) {
        std::sort(copies.begin(), copies.end(), [](const MessageSummary& a, const MessageSummary& b) { return a.id < b.id; });
        ordered.push_back(&copies);
    }
    std::sort(ordered.begin(), ordered.end(), [](auto* a, auto* b) { return a->front().id < b->front().id; });
    for (const std::vector<MessageSummary>* copies : ordered) {
        std::vector<Delivery> deliveries;
        for (const MessageSummary& m : *copies) {
            std::optional<StoredMessage> stored = from.getMessage(m.mailbox, m.id);
            if (!stored) continue;  // deleted while moving (a server still running on the source)
            std::string story = from.messageStory(m.mailbox, m.id).value_or("");
            auto same = std::find_if(deliveries.begin(), deliveries.end(), [&](const Delivery& d) {
                return d.message.raw == stored->raw && d.message.story == story;
            });
            if (same == deliveries.end()) {
                Delivery d;
                d.message.queueId = m.queueId;
                d.message.envelopeFrom = m.envelopeFrom;
                d.message.from = m.from;
                d.message.to = m.to;
                d.message.subject = m.subject;
                d.message.date = m.date;
                d.message.receivedAt = m.receivedAt;
                d.message.raw = std::move(stored->raw);
                d.message.story = std::move(story);
                deliveries.push_back(std::move(d));
                same = deliveries.end() - 1;
            }
            same->message.recipients.push_back(m.mailbox);
            same->ids.push_back(m.id);
        }
        for (const Delivery& d : deliveries) {
            into->addMessage(d.message, keepIds ? d.ids : std::vector<int64_t>());
            counts.messages += static_cast<int64_t>(d.ids.size());
            counts.bodies += 1;
            counts.bytes += static_cast<int64_t>(d.message.raw.size());
        }
    }

    for (const TlsSessionRecord& session : from.findTlsSessions({}))
        if (into->addTlsLogin(session)) ++counts.tlsSessions;
    std::vector<ActivityCount> activity = from.listActivity();
    into->addActivity(activity);
    counts.activityCounts = static_cast<int64_t>(activity.size());
    into->commit();
    into.reset();

    if (keepIds) {
        // The target now answers as the source did: the same totals in every mailbox.
        for (const std::string& mailbox : from.listMailboxes()) {
            MailboxStats a = from.mailboxStats(mailbox), b = to.mailboxStats(mailbox);
            if (a.count != b.count || a.bytes != b.bytes)
                throw MigrationMismatch("after the move, mailbox " + mailbox + " holds " + std::to_string(b.count) +
                                        " messages in the target but " + std::to_string(a.count) + " in the source");
        }
    }
    return counts;
}

std::string describeMigration(const MigrationCounts& c) {
    std::string out;
    auto line = [&](const char* what, int64_t n) { out += std::string(what) + " " + std::to_string(n) + "\n"; };
    line("accounts", c.accounts);
    if (c.accountsKept) line("accounts already in the target (kept as they were there)", c.accountsKept);
    line("mailboxes", c.mailboxes);
    line("messages", c.messages);
    line("stored texts", c.bodies);
    line("bytes of text", c.bytes);
    line("trusted sources", c.trustedSources);
    line("TLS sessions", c.tlsSessions);
    line("class board counts", c.activityCounts);
    return out;
}

}  // namespace maillab
