// Provenance (class servers): the TLS session an account logged in over, named by its two randoms
// (the ClientHello's and the ServerHello's, as Wireshark shows them), so that a capture handed in
// can be matched to a login the server saw. One per connection, the same for SMTP, HTTPS and POP3.
#pragma once
#include "store.h"

#include "../net/guarded_connection.h"

#include <Poco/Net/StreamSocket.h>

#include <string>

namespace maillab {

class TlsProvenance {
public:
    // `store` null: provenance is off and nothing is noted or recorded.
    TlsProvenance(Store* store, std::string service) : store_(store), service_(std::move(service)) {}

    // After each handshake (the first, STARTTLS, STLS): the session later logins are recorded with.
    void noteSession(const Poco::Net::StreamSocket& socket, const std::string& peer);
    void noteSession(SSL* ssl, const std::string& peer);  // the event core's connections
    // `account` logged in over the session noted last: recorded once per account; a store error is
    // logged (the login itself stands).
    void recordLogin(const std::string& account, const ConnectionLog& log);
    // True when recordLogin(account) would write to the store (an event loop hands that to a worker).
    bool wouldRecord(const std::string& account) const {
        return store_ && !session_.clientRandom.empty() && !account.empty() && account != recorded_;
    }

private:
    Store* store_;
    std::string service_;
    TlsSessionRecord session_;  // empty until a TLS session is noted
    std::string recorded_;      // the account already recorded for it
};

}  // namespace maillab
