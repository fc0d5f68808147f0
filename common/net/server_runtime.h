// What any TLS server here needs around Poco at start-up, below the lab's own scaffolding
// (common/lab/app_support.h): compiled-in settings under a --config file, the TLS and PROXY
// settings, the TLS context with its optional key log, the listening sockets, the open-file limit
// and the free space a writer has.
#pragma once
#include "proxy_protocol.h"
#include "tls.h"

#include <Poco/Logger.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Util/AbstractConfiguration.h>
#include <Poco/Util/Application.h>
#include <Poco/Util/LayeredConfiguration.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace maillab {

// Adds compiled-in defaults at a low priority (1000 and below), so a --config file and options
// override them; a larger `priority` is consulted later.
void loadBuiltinDefaults(Poco::Util::LayeredConfiguration& config, const char* propertiesText, int priority = 1000);

// tls.cert, tls.key, tls.ca, tls.keylog, tls.sessionTickets.
TlsOptions tlsOptionsFrom(const Poco::Util::AbstractConfiguration& config);
// proxy.trustedAddresses, proxy.headerTimeoutMs, proxy.maxHeaderBytes. Throws std::invalid_argument
// naming a bad entry or value.
proxy::Settings proxySettingsFrom(const Poco::Util::AbstractConfiguration& config);

// A server's configuration: the compiled-in defaults (common/shared.properties under the server's
// own file), then the --config file when one was given.
void loadServerConfiguration(Poco::Util::Application& app, const char* sharedDefaults, const char* ownDefaults);

// Free bytes for an unprivileged writer on the file system holding `directory` (statvfs); a large
// number when it cannot be read (the check then never refuses mail on a guess).
int64_t freeBytesAt(const std::string& directory);

// freeBytesAt for a hot path (the sender asks at every MAIL and every message's end): the answer is
// read again once it is older than kMaxAge, by whichever thread asks first (two statvfs calls were 2%
// of a kept-open message's CPU, issue 22). A disk filling faster than kMaxAge passes the floor by that
// much at most: the floor (smtp.minFreeDiskBytes) is a margin, not the last byte.
class FreeSpaceGauge {
public:
    static constexpr std::chrono::milliseconds kMaxAge{250};
    explicit FreeSpaceGauge(std::string directory) : directory_(std::move(directory)) {}
    int64_t bytes();

private:
    std::string directory_;
    std::atomic<int64_t> bytes_{0};
    std::atomic<int64_t> readAt_{INT64_MIN};  // steady_clock ticks of the last statvfs
};

// Raises the open-file limit to the hard limit: every connection is a descriptor, and the soft
// default (often 1024) is below what sender.maxConnections allows. Returns the new soft limit.
long raiseOpenFileLimit();

// The server's TLS context, with its key log when asked for (and said so in the log).
// `alpn` is the protocol the server speaks ("smtp", "http/1.1"): see acceptAlpn() in tls.h.
Poco::Net::Context::Ptr serverTlsContext(const TlsOptions& tls, const std::string& alpn, Poco::Logger& logger);

// The listening sockets, one per address in `addresses` ("127.0.0.1,::1", as --bind takes them),
// all on one port; port 0 picks one that every address can take. TLS from the first byte when
// `tlsContext` is given, else in clear; a service with no TLS at all (`plaintextWarning` non-empty)
// listens on loopback only and logs the warning. A port in use is refused (no SO_REUSEPORT: one
// server per port). ::1 is skipped with a warning where the machine has no IPv6. Returns an empty
// list, after logging why, when an address cannot be had.
std::vector<std::unique_ptr<Poco::Net::ServerSocket>> openListeners(const std::string& addresses, int port,
                                                                    int backlog, Poco::Net::Context::Ptr tlsContext,
                                                                    const std::string& plaintextWarning,
                                                                    Poco::Logger& logger);
// "127.0.0.1:9000 [::1]:9000"
std::string describeListeners(const std::vector<std::unique_ptr<Poco::Net::ServerSocket>>& listeners);

}  // namespace maillab
