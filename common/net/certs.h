// The lab's certificates: a small CA and a server certificate for localhost, 127.0.0.1 and ::1,
// created with OpenSSL when missing so that a student never meets a passphrase prompt.
#pragma once
#include <string>
#include <vector>

namespace maillab {

struct CertPaths {
    std::string caCert;      // ca.pem: what clients (ours, curl --cacert, Python) trust
    std::string caKey;       // ca.key (0600)
    std::string serverCert;  // server.pem
    std::string serverKey;   // server.key (0600)
    static CertPaths inDirectory(const std::string& dir);
};

// Creates whatever is missing. A missing CA means a new CA and a new server certificate. `host`
// (a class server's name or address, "" for none) is added to the server certificate's names with
// the addresses it resolves to; a server certificate that does not name it is issued again by the
// same CA (students keep their ca.pem). Returns true when something was created. Throws
// std::runtime_error on failure. `expired`: the server certificate is issued again, valid from two
// days ago until yesterday (a lab scenario, in a folder of its own). `onlyHost`: the server
// certificate is issued again naming `host` alone, not localhost (the wrong-host scenario).
bool ensureCertificates(const CertPaths& paths, const std::string& host = "", bool expired = false,
                        bool onlyHost = false);

// The subjectAltName entries a server certificate for `host` carries: localhost, 127.0.0.1, ::1,
// and the host with its addresses ("DNS:lab.example.edu", "IP:192.0.2.7").
std::vector<std::string> serverNames(const std::string& host);

}  // namespace maillab
