// A server's start-up around Poco (server_runtime.h).
#include "server_runtime.h"
#include "log_text.h"

#include <Poco/AutoPtr.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Util/PropertyFileConfiguration.h>

#include <cerrno>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <sys/resource.h>
#include <sys/statvfs.h>

namespace maillab {

void loadBuiltinDefaults(Poco::Util::LayeredConfiguration& config, const char* propertiesText, int priority) {
    std::istringstream in(propertiesText);
    Poco::AutoPtr<Poco::Util::PropertyFileConfiguration> defaults = new Poco::Util::PropertyFileConfiguration(in);
    config.add(defaults, priority, false);  // low priority: everything else overrides it
}


TlsOptions tlsOptionsFrom(const Poco::Util::AbstractConfiguration& config) {
    TlsOptions tls;
    tls.certFile = config.getString("tls.cert");
    tls.keyFile = config.getString("tls.key");
    tls.caFile = config.getString("tls.ca");
    tls.keyLogFile = config.getString("tls.keylog");
    tls.sessionTickets = config.getInt("tls.sessionTickets");
    return tls;
}

proxy::Settings proxySettingsFrom(const Poco::Util::AbstractConfiguration& config) {
    proxy::Settings settings;
    settings.trusted = proxy::TrustedPeers::parse(config.getString("proxy.trustedAddresses", ""));
    settings.timeoutMs = config.getInt("proxy.headerTimeoutMs", 3000);
    long long maxBytes = config.getInt64("proxy.maxHeaderBytes", 4096);
    if (settings.timeoutMs <= 0 || maxBytes < 232 || maxBytes > 65551)
        throw std::invalid_argument("proxy.headerTimeoutMs must be over 0 and proxy.maxHeaderBytes from 232 (a v2 "
                                    "header with unix addresses) to 65551 (the largest v2 header)");
    settings.maxBytes = static_cast<size_t>(maxBytes);
    return settings;
}


int64_t freeBytesAt(const std::string& directory) {
    struct statvfs fs {};
    if (::statvfs(directory.c_str(), &fs) != 0) return INT64_MAX;
    return static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize);
}

int64_t FreeSpaceGauge::bytes() {
    int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    int64_t readAt = readAt_.load(std::memory_order_acquire);
    int64_t maxAge = std::chrono::duration_cast<std::chrono::steady_clock::duration>(kMaxAge).count();
    if (readAt != INT64_MIN && now - readAt < maxAge) return bytes_.load(std::memory_order_relaxed);
    int64_t fresh = freeBytesAt(directory_);
    bytes_.store(fresh, std::memory_order_relaxed);
    readAt_.store(now, std::memory_order_release);
    return fresh;
}

long raiseOpenFileLimit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
    return static_cast<long>(limit.rlim_cur);
}


void loadServerConfiguration(Poco::Util::Application& app, const char* sharedDefaults, const char* ownDefaults) {
    loadBuiltinDefaults(app.config(), sharedDefaults, 1001);  // under the server's own
    loadBuiltinDefaults(app.config(), ownDefaults, 1000);
    if (app.config().has("maillab.configFile")) app.loadConfiguration(app.config().getString("maillab.configFile"));
}

Poco::Net::Context::Ptr serverTlsContext(const TlsOptions& tls, const std::string& alpn, Poco::Logger& logger) {
    Poco::Net::Context::Ptr context = makeServerContext(tls);
    acceptAlpn(*context, alpn);
    std::string keylog = enableKeyLog(*context, tls.keyLogFile);
    if (!keylog.empty()) logger.warning("event=keylog file=" + keylog + " note=\"TLS secrets are being written\"");
    return context;
}


namespace {
struct BindFailure {
    int error;
    std::string address;
};

std::unique_ptr<Poco::Net::ServerSocket> bindOne(const Poco::Net::SocketAddress& address, int backlog,
                                                 Poco::Net::Context::Ptr tlsContext) {
    std::unique_ptr<Poco::Net::ServerSocket> socket;
    if (tlsContext) socket = std::make_unique<Poco::Net::SecureServerSocket>(tlsContext);
    else socket = std::make_unique<Poco::Net::ServerSocket>();
    try {
        // SO_REUSEADDR (a restart while old connections sit in TIME_WAIT), never SO_REUSEPORT: a
        // second server on a port in use must fail, not share the port.
        if (address.family() == Poco::Net::SocketAddress::IPv6) socket->bind6(address, true, false, true);
        else socket->bind(address, true, false);
        socket->listen(backlog);
    } catch (const Poco::Exception& e) {
        throw BindFailure{e.code(), address.toString()};
    }
    return socket;
}
}  // namespace

std::vector<std::unique_ptr<Poco::Net::ServerSocket>> openListeners(const std::string& addresses, int port,
                                                                    int backlog, Poco::Net::Context::Ptr tlsContext,
                                                                    const std::string& plaintextWarning,
                                                                    Poco::Logger& logger) {
    if (port < 0 || port > 65535) {
        logger.error("event=startup-failed reason=" + logValue("--port must be from 0 to 65535 (0: any free port), not " +
                                                               std::to_string(port)));
        return {};
    }
    std::vector<Poco::Net::IPAddress> hosts;
    std::istringstream list(addresses);
    for (std::string item; std::getline(list, item, ',');) {
        item.erase(0, item.find_first_not_of(' '));
        item.erase(item.find_last_not_of(' ') + 1);
        if (item.size() > 2 && item.front() == '[' && item.back() == ']') item = item.substr(1, item.size() - 2);
        if (item.empty()) continue;
        Poco::Net::IPAddress host;
        if (item == "::") {
            host = Poco::Net::IPAddress(Poco::Net::IPAddress::IPv6);  // every IPv6 address (Poco 1.11 cannot parse "::")
        } else if (!Poco::Net::IPAddress::tryParse(item, host)) {
            logger.error("event=startup-failed reason=" + logValue("--bind: '" + item + "' is not an IP address"));
            return {};
        }
        if (!plaintextWarning.empty() && !host.isLoopback()) {
            logger.error("event=startup-failed reason=\"--tls off listens on loopback only\"");
            return {};
        }
        hosts.push_back(host);
    }
    if (hosts.empty()) {
        logger.error("event=startup-failed reason=\"--bind needs at least one address\"");
        return {};
    }
    if (!plaintextWarning.empty()) logger.warning("event=warning note=" + logValue(plaintextWarning));

    // Port 0: the first address picks a free port, the others must get the same one; a clash
    // there (another program has it on that address only) means another try with a new port.
    for (int attempt = 0; attempt < 20; ++attempt) {
        std::vector<std::unique_ptr<Poco::Net::ServerSocket>> sockets;
        Poco::UInt16 chosen = static_cast<Poco::UInt16>(port);
        try {
            for (const auto& host : hosts) {
                try {
                    sockets.push_back(bindOne(Poco::Net::SocketAddress(host, chosen), backlog, tlsContext));
                    chosen = sockets.back()->address().port();
                } catch (const BindFailure& failure) {
                    // No IPv6 on this machine: loopback on IPv4 still serves "localhost".
                    bool noIpv6 = host.family() == Poco::Net::IPAddress::IPv6 &&
                                  (failure.error == EADDRNOTAVAIL || failure.error == EAFNOSUPPORT);
                    if (noIpv6 && hosts.size() > 1) {
                        logger.warning("event=warning note=" + logValue("cannot listen on " + failure.address +
                                                                        ": this machine has no IPv6; skipped"));
                        continue;
                    }
                    throw;
                }
            }
            if (sockets.empty()) throw BindFailure{EADDRNOTAVAIL, addresses};
            return sockets;
        } catch (const BindFailure& failure) {
            if (failure.error == EADDRINUSE && port == 0 && sockets.size() > 0) continue;  // try another port
            std::string why = failure.error == EADDRINUSE
                                  ? "port " + std::to_string(port) + " is in use on " + failure.address +
                                        " (another server already runs there: stop it, or choose another PORT=)"
                              : failure.error == EADDRNOTAVAIL
                                  ? failure.address + " is not an address of this machine (--bind)"
                              : failure.error == EACCES
                                  ? "port " + std::to_string(port) + " needs root (ports below 1024): choose PORT=9000 or above"
                                  : "cannot listen on " + failure.address + " (error " + std::to_string(failure.error) + ")";
            logger.error("event=startup-failed reason=" + logValue(why));
            return {};
        }
    }
    logger.error("event=startup-failed reason=\"no free port common to every --bind address\"");
    return {};
}

std::string describeListeners(const std::vector<std::unique_ptr<Poco::Net::ServerSocket>>& listeners) {
    std::string text;
    for (const auto& socket : listeners) text += (text.empty() ? "" : ",") + socket->address().toString();
    return text;
}

}  // namespace maillab
