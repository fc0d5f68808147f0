// One connection's provenance record (tls_provenance.h).
#include "tls_provenance.h"

#include "../net/log_text.h"
#include "../net/tls.h"

#include <ctime>

namespace maillab {

void TlsProvenance::noteSession(const Poco::Net::StreamSocket& socket, const std::string& peer) {
    if (store_) noteSession(sslOf(socket), peer);
}

void TlsProvenance::noteSession(SSL* ssl, const std::string& peer) {
    if (!store_) return;
    session_ = TlsSessionRecord{clientRandomHex(ssl), serverRandomHex(ssl), service_, peer,
                                static_cast<int64_t>(std::time(nullptr)), ""};
    recorded_.clear();
}

void TlsProvenance::recordLogin(const std::string& account, const ConnectionLog& log) {
    if (!store_ || session_.clientRandom.empty() || account.empty() || account == recorded_) return;
    TlsSessionRecord record = session_;
    record.account = account;
    try {
        store_->recordTlsLogin(record);
        recorded_ = account;
    } catch (const std::exception& e) {
        log.line("event=provenance result=error reason=" + logValue(e.what()));
    }
}

}  // namespace maillab
