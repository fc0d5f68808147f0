// The lab's certificates: a small CA and a server certificate for localhost, 127.0.0.1 and ::1,
// created with OpenSSL when missing so that a student never meets a passphrase prompt.
#pragma once
#include <string>

namespace maillab {

struct CertPaths {
    std::string caCert;      // ca.pem: what clients (ours, curl --cacert, Python) trust
    std::string caKey;       // ca.key (0600)
    std::string serverCert;  // server.pem
    std::string serverKey;   // server.key (0600)
    static CertPaths inDirectory(const std::string& dir);
};

// Creates whatever is missing. A missing CA means a new CA and a new server certificate.
// Returns true when something was created. Throws std::runtime_error on failure.
bool ensureCertificates(const CertPaths& paths);

}  // namespace maillab
