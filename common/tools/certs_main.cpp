// maillab-certs: creates the lab CA and server certificate under a directory (default certs/) when
// missing; `make certs` runs it. The servers do the same at start-up.
#include "../certs.h"

#include <iostream>

int main(int argc, char** argv) {
    std::string dir = argc > 1 ? argv[1] : "certs";
    try {
        auto paths = maillab::CertPaths::inDirectory(dir);
        if (maillab::ensureCertificates(paths))
            std::cout << "created " << paths.caCert << " (trust this CA) and " << paths.serverCert << "\n";
        else
            std::cout << "certificates already present in " << dir << "/\n";
    } catch (const std::exception& e) {
        std::cerr << "maillab-certs: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
