// The StoreImport both backends hand out (store.h; maillab-admin migrate): one of the store's pooled
// connections and one transaction on it, held from beginImport() until commit(), rolled back when
// destroyed without it. The rules of a move live here once; each backend gives only its writes (the
// SQL), as a `Writes` type (SqliteStore::ImportWrites, PostgresStore::ImportWrites) that names:
//   Connection, Transaction                      its pooled connection and its transaction on one
//   begin(Connection&) -> unique_ptr<Transaction>
//   addAccount, addMessage, addTrustedSource,    StoreImport's writes, each taking the Connection first
//   addTlsLogin, addActivity                     (addMessage's ids: checked here, one per recipient)
//   afterNumberedMessages(Connection&)           before COMMIT, when messages came with their ids
//   afterCommit(Connection&)                     after COMMIT (the SQLite store's mailbox generations)
#pragma once
#include "store.h"

#include <memory>
#include <string>
#include <vector>

namespace maillab {

template <class Writes>
class TransactionImport final : public StoreImport {
public:
    using Connection = typename Writes::Connection;
    using Transaction = typename Writes::Transaction;

    template <class Backend>
    explicit TransactionImport(Backend& store)
        : c_(std::make_unique<Connection>(store)), tx_(Writes::begin(*c_)) {}

    bool addAccount(const Account& a) override { return Writes::addAccount(*c_, a); }

    std::vector<int64_t> addMessage(const NewMessage& m, const std::vector<int64_t>& ids) override {
        if (!ids.empty() && ids.size() != m.recipients.size())
            throw StoreError("import: " + std::to_string(ids.size()) + " ids for " +
                             std::to_string(m.recipients.size()) + " recipients");
        if (!ids.empty()) numbered_ = true;
        return Writes::addMessage(*c_, m, ids);
    }

    void addTrustedSource(const TrustedSource& t) override { Writes::addTrustedSource(*c_, t); }
    bool addTlsLogin(const TlsSessionRecord& r) override { return Writes::addTlsLogin(*c_, r); }
    void addActivity(const std::vector<ActivityCount>& counts) override { Writes::addActivity(*c_, counts); }

    void commit() override {
        if (numbered_) Writes::afterNumberedMessages(*c_);
        tx_->commit();
        Writes::afterCommit(*c_);
    }

private:
    std::unique_ptr<Connection> c_;
    std::unique_ptr<Transaction> tx_;  // declared after c_: rolled back before the connection goes back
    bool numbered_ = false;            // some messages kept the source's ids
};

}  // namespace maillab
