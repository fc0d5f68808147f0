// The event core's door: see event_gate.h.
#include "event_gate.h"

#include "log_text.h"

#include <algorithm>

namespace maillab::net {

using namespace std::chrono;

// A connection the limiter turned away: the server's refusal, sent once the handshake (if any) is
// done, then closed. The handshake and the answer share one deadline from the accept.
class EventGate::Refusal : public GatedProtocol {
public:
    Refusal(EventGate& gate, ConnectionLimiter::Verdict verdict, ConnectionLog log)
        : gate_(gate), verdict_(verdict), log_(std::move(log)), deadline_(Clock::now() + gate.settings_.refusalTimeout) {}
    ~Refusal() override {
        if (gate_.settings_.overTls) --gate_.refusing_;
    }
    const ConnectionLog& log() const override { return log_; }
    bool answersClearText() const override { return false; }
    void onReady(Connection& connection) override {
        // The handshake's end cleared the deadline: what is left of the same one, not a new one.
        connection.setDeadline(duration_cast<milliseconds>(std::max(deadline_ - Clock::now(), Clock::duration(1))));
        connection.send(gate_.settings_.refusal(verdict_));
        answered_ = true;
        connection.closeAfterSend();
    }
    void onBytes(Connection&, const char*, size_t) override {}  // the client's words are not read
    void onClosed(Connection&, const Ending& ending) override {
        bool answered = answered_ && !(ending.deadline && ending.phase != Phase::Open);
        log_.peerEvent("refused", std::string("reason=") + ConnectionLimiter::describe(verdict_) +
                                      " answered=" + (answered ? gate_.settings_.refusedAs : "closed"));
    }

private:
    EventGate& gate_;
    ConnectionLimiter::Verdict verdict_;
    ConnectionLog log_;
    Clock::time_point deadline_;
    bool answered_ = false;
};

ConnectionLog EventGate::newLog(const proxy::Peer& peer) const {
    ConnectionLog log(settings_.logger, (*settings_.nextConnectionId)++, service_);
    log.setPeer(peer);
    return log;
}

const GatedProtocol& EventGate::protocolOf(const Connection& connection) {
    return static_cast<const GatedProtocol&>(*connection.protocol());  // every protocol on a gated core is one
}

std::unique_ptr<Protocol> EventGate::open(Connection& connection, const Admit& admit) {
    ConnectionLimiter::Slot slot = settings_.limiter->admit(connection.peer().host);
    if (slot.admitted()) return admit(connection, std::move(slot));
    ConnectionLimiter::Verdict verdict = slot.verdict();
    ConnectionLog log = newLog(connection.peer());
    if (settings_.overTls && ++refusing_ > settings_.maxRefusalHandshakes) {
        --refusing_;
        log.peerEvent("refused", std::string("reason=") + ConnectionLimiter::describe(verdict) + " answered=closed");
        return nullptr;
    }
    connection.setDeadline(settings_.refusalTimeout);
    return std::make_unique<Refusal>(*this, verdict, std::move(log));
}

void EventGate::install(CoreSettings& core, Admit admit) {
    core.open = [this, admit = std::move(admit)](Connection& connection) { return open(connection, admit); };
    core.proxyRefused = [this](const proxy::Peer& peer) {
        newLog(peer).peerEvent("proxy-refused", "reason=" + logValue(peer.error));
    };
}

}  // namespace maillab::net
