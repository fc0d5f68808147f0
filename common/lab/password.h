// Account passwords: generation of the lab's 8-digit passwords ending in 447, and their storage as
// salted scrypt hashes (OpenSSL EVP_PBE_scrypt) compared in constant time.
#pragma once
#include <cstdint>
#include <string>

namespace maillab {

// Cost of the scrypt hash. N=2^14, r=8 costs about 16 MiB and a few tens of milliseconds per hash,
// which is what makes an offline guess of the 100,000 possible lab passwords slow.
struct ScryptParams {
    uint64_t n = 16384;
    uint64_t r = 8;
    uint64_t p = 1;
};

// Five digits drawn uniformly from OpenSSL's CSPRNG (rejection sampling, no modulo bias), then "447".
std::string generateLabPassword();

// "scrypt$N$r$p$<salt base64>$<hash base64>" with a fresh 16-byte salt.
std::string hashPassword(const std::string& password, const ScryptParams& params = {});

// Recomputes the hash with the stored salt and parameters; false on mismatch or a malformed record.
bool verifyPassword(const std::string& password, const std::string& encoded);

// Helpers shared by the password, AUTH and HTTP Basic code.
std::string base64Encode(const std::string& data);
// Throws std::invalid_argument on characters outside the base64 alphabet or a bad length.
std::string base64Decode(const std::string& text);

}  // namespace maillab
