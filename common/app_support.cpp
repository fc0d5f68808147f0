// Helpers shared by the lab's Poco applications.
#include "app_support.h"

#include <Poco/AutoPtr.h>
#include <Poco/Util/PropertyFileConfiguration.h>

#include <sstream>

namespace maillab {

void loadBuiltinDefaults(Poco::Util::LayeredConfiguration& config, const char* propertiesText) {
    std::istringstream in(propertiesText);
    Poco::AutoPtr<Poco::Util::PropertyFileConfiguration> defaults = new Poco::Util::PropertyFileConfiguration(in);
    config.add(defaults, 1000, false);  // lowest priority: everything else overrides it
}

std::string logValue(const std::string& value) {
    if (!value.empty() && value.find_first_of(" \"=\t") == std::string::npos) return value;
    std::string out = "\"";
    for (char c : value) {
        if (c == '"' || c == '\\') out += '\\';
        out += (c == '\r' || c == '\n') ? ' ' : c;
    }
    return out + "\"";
}

}  // namespace maillab
