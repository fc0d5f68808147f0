// What the lab's programs share around Poco::Util: the built-in defaults (each program's .properties
// file, compiled in so the binary works from any directory), ready lines, and key=value formatting.
#pragma once
#include <Poco/Util/LayeredConfiguration.h>

#include <string>

namespace maillab {

// Adds the compiled-in defaults at the lowest priority, so a --config file and options override them.
void loadBuiltinDefaults(Poco::Util::LayeredConfiguration& config, const char* propertiesText);

// Quotes a log value when it contains spaces or quotes: key="two words".
std::string logValue(const std::string& value);

}  // namespace maillab
