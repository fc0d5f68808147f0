// Lab CA and server certificate generation with the OpenSSL 3 API (EC P-256, SHA-256).
#include "certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cstdio>
#include <netdb.h>
#include <functional>
#include <memory>
#include <stdexcept>
#include <sys/file.h>
#include <sys/stat.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace maillab {

namespace {
using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("certificate generation failed: ") + what);
}

bool exists(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

KeyPtr newKey() {
    KeyPtr key(EVP_EC_gen("P-256"), EVP_PKEY_free);
    check(key != nullptr, "EC key");
    return key;
}

void addExtension(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    check(ext != nullptr, value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

CertPtr newCert(EVP_PKEY* key, const char* commonName, long days, long startOffsetSeconds = -3600) {
    CertPtr cert(X509_new(), X509_free);
    check(cert != nullptr, "X509_new");
    X509_set_version(cert.get(), 2);
    unsigned char serial[16];
    check(RAND_bytes(serial, sizeof serial) == 1, "serial");
    serial[0] &= 0x7f;  // a positive serial number (RFC 5280 4.1.2.2)
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), startOffsetSeconds);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 24 * 3600);
    X509_set_pubkey(cert.get(), key);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("maillab"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(commonName), -1, -1,
                               0);
    return cert;
}

// Written to a temporary file beside the target, then renamed, so a reader never sees half a file.
void writePem(const std::string& path, bool isPrivate, const std::function<int(FILE*)>& write) {
    std::string tmp = path + ".tmp" + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, isPrivate ? 0600 : 0644);
    check(fd >= 0, path.c_str());
    FILE* f = ::fdopen(fd, "w");
    check(f != nullptr, path.c_str());
    bool ok = write(f) == 1;
    ok = (std::fflush(f) == 0) && ok;
    ::fsync(fd);
    std::fclose(f);
    check(ok, path.c_str());
    check(::rename(tmp.c_str(), path.c_str()) == 0, path.c_str());
}

void writeKey(const std::string& path, EVP_PKEY* key) {
    writePem(path, true, [key](FILE* f) {
        return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    });
}

void writeCert(const std::string& path, X509* cert) {
    writePem(path, false, [cert](FILE* f) { return PEM_write_X509(f, cert); });
}

// A PEM file's one object (a key, a certificate); check() throws naming the file when it cannot be read.
template <class T>
std::unique_ptr<T, void (*)(T*)> readPem(const std::string& path, T* (*read)(FILE*, T**, pem_password_cb*, void*),
                                         void (*release)(T*)) {
    FILE* f = std::fopen(path.c_str(), "r");
    check(f != nullptr, path.c_str());
    std::unique_ptr<T, void (*)(T*)> object(read(f, nullptr, nullptr, nullptr), release);
    std::fclose(f);
    check(object != nullptr, path.c_str());
    return object;
}

KeyPtr readKey(const std::string& path) { return readPem<EVP_PKEY>(path, PEM_read_PrivateKey, EVP_PKEY_free); }

CertPtr readCert(const std::string& path) { return readPem<X509>(path, PEM_read_X509, X509_free); }
}  // namespace

CertPaths CertPaths::inDirectory(const std::string& dir) {
    return {dir + "/ca.pem", dir + "/ca.key", dir + "/server.pem", dir + "/server.key"};
}

std::vector<std::string> serverNames(const std::string& host) {
    std::vector<std::string> names = {"DNS:localhost", "IP:127.0.0.1", "IP:::1"};
    auto add = [&](const std::string& name) {
        if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    };
    if (host.empty()) return names;
    in6_addr probe{};
    bool literal = ::inet_pton(AF_INET, host.c_str(), &probe) == 1 || ::inet_pton(AF_INET6, host.c_str(), &probe) == 1;
    add((literal ? "IP:" : "DNS:") + host);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (!literal && ::getaddrinfo(host.c_str(), nullptr, &hints, &found) == 0) {
        for (addrinfo* a = found; a; a = a->ai_next) {
            char text[INET6_ADDRSTRLEN] = {0};
            const void* where = a->ai_family == AF_INET
                                    ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                                    : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
            if (::inet_ntop(a->ai_family, where, text, sizeof text)) add(std::string("IP:") + text);
        }
        ::freeaddrinfo(found);
    }
    return names;
}

namespace {
// Whether the certificate names `host` (as a DNS name or an address).
bool certificateNames(X509* cert, const std::string& host) {
    if (host.empty()) return true;
    if (X509_check_ip_asc(cert, host.c_str(), 0) == 1) return true;
    return X509_check_host(cert, host.c_str(), host.size(), X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1;
}
}  // namespace

bool ensureCertificates(const CertPaths& paths, const std::string& host, bool expired, bool onlyHost) {
    auto slash = paths.caCert.rfind('/');
    std::string dir = slash == std::string::npos ? "." : paths.caCert.substr(0, slash);
    if (slash != std::string::npos && slash > 0) ::mkdir(dir.c_str(), 0755);
    // Both servers may start at once on a fresh checkout: one creates, the other waits and reuses.
    int lock = ::open((dir + "/.maillab-certs.lock").c_str(), O_RDWR | O_CREAT, 0600);
    if (lock < 0)
        throw std::runtime_error("cannot create certificates in " + dir + ": " + std::strerror(errno) +
                                 " (make the folder writable, or give --certs DIR)");
    ::flock(lock, LOCK_EX);
    struct Unlock {
        int fd;
        ~Unlock() { ::close(fd); }  // closing releases the flock
    } unlock{lock};
    bool newCa = !exists(paths.caCert) || !exists(paths.caKey);
    bool newServer = newCa || !exists(paths.serverCert) || !exists(paths.serverKey) ||
                     !certificateNames(readCert(paths.serverCert).get(), host) || expired || onlyHost;
    if (!newServer) return false;

    KeyPtr caKey(nullptr, EVP_PKEY_free);
    CertPtr caCert(nullptr, X509_free);
    if (newCa) {
        caKey = newKey();
        caCert = newCert(caKey.get(), "maillab lab CA", 3650);
        X509_set_issuer_name(caCert.get(), X509_get_subject_name(caCert.get()));
        addExtension(caCert.get(), caCert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
        addExtension(caCert.get(), caCert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
        addExtension(caCert.get(), caCert.get(), NID_subject_key_identifier, "hash");
        addExtension(caCert.get(), caCert.get(), NID_authority_key_identifier, "keyid:always");
        check(X509_sign(caCert.get(), caKey.get(), EVP_sha256()) > 0, "CA signature");
        writeKey(paths.caKey, caKey.get());
        writeCert(paths.caCert, caCert.get());
    } else {
        caKey = readKey(paths.caKey);
        caCert = readCert(paths.caCert);
    }

    KeyPtr key = newKey();
    // 397 days: the longest validity browsers accept for a server certificate.
    // Expired (a lab scenario): valid from two days ago to yesterday.
    CertPtr cert = expired ? newCert(key.get(), host.empty() ? "localhost" : host.c_str(), -1, -2 * 24 * 3600)
                           : newCert(key.get(), host.empty() ? "localhost" : host.c_str(), 397);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(caCert.get()));
    addExtension(cert.get(), caCert.get(), NID_basic_constraints, "critical,CA:FALSE");
    addExtension(cert.get(), caCert.get(), NID_key_usage, "critical,digitalSignature");
    addExtension(cert.get(), caCert.get(), NID_ext_key_usage, "serverAuth");
    std::string altNames;
    std::vector<std::string> names = serverNames(host);
    if (onlyHost) names.erase(names.begin(), names.begin() + 3);  // the host alone: no localhost, no loopback
    for (const std::string& name : names) altNames += (altNames.empty() ? "" : ",") + name;
    addExtension(cert.get(), caCert.get(), NID_subject_alt_name, altNames.c_str());
    addExtension(cert.get(), caCert.get(), NID_subject_key_identifier, "hash");
    addExtension(cert.get(), caCert.get(), NID_authority_key_identifier, "keyid:always");
    check(X509_sign(cert.get(), caKey.get(), EVP_sha256()) > 0, "server signature");
    writeKey(paths.serverKey, key.get());
    writeCert(paths.serverCert, cert.get());
    return true;
}

}  // namespace maillab
