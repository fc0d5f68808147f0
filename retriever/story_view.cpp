// storyHtml: the story JSON made readable, every value escaped.
#include "story_view.h"

#include "../common/net/rfc5322.h"
#include "../common/net/text.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

namespace maillab::http {
namespace {

const char* const kStoryStyle =
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:1.5rem auto;padding:0 1rem;color:#1b1b1b}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{font-weight:600}dd{margin:0}"
    "pre{background:#f5f5f5;padding:.8rem;overflow-x:auto;white-space:pre-wrap;word-break:break-word}"
    ".c{color:#0b4f9c}.s{color:#1d6b24}.n{color:#666;font-style:italic}";

std::string field(const Poco::JSON::Object::Ptr& story, const std::string& name) {
    return story->has(name) ? story->getValue<std::string>(name) : std::string();
}

}  // namespace

std::string storyHtml(const std::string& storyJson, const std::string& mailbox, int64_t id) {
    const std::string messagePath = "/mailboxes/" + text::htmlEscape(mailbox) + "/messages/" + std::to_string(id);
    std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>How message " +
                       std::to_string(id) + " arrived</title><style>" + kStoryStyle + "</style></head><body>\n<h1>How message " +
                       std::to_string(id) + " arrived</h1>\n<p><a href=\"/mailboxes/" + text::htmlEscape(mailbox) +
                       "\">inbox</a> · <a href=\"" + messagePath + "/page\">message</a> · <a href=\"" + messagePath +
                       "/raw?view=text\">raw</a></p>\n";
    Poco::JSON::Object::Ptr story;
    try {
        if (!storyJson.empty()) story = Poco::JSON::Parser().parse(storyJson).extract<Poco::JSON::Object::Ptr>();
    } catch (const std::exception&) {
        story = nullptr;
    }
    if (!story) {
        return html + "<p id=\"no-story\">This message has no story on record: it was stored before the sender kept "
                      "one, or by a tool rather than an SMTP session.</p>\n</body></html>\n";
    }
    try {
        const std::string tls = field(story, "tls"), group = field(story, "tls_group");
        const bool starttls = story->has("starttls") && story->getValue<bool>("starttls");
        html += "<dl id=\"story\">";
        auto row = [&](const std::string& name, const std::string& value) {
            html += "<dt>" + name + "</dt><dd>" + text::htmlEscape(value) + "</dd>";
        };
        row("Delivered", rfc5322::dateTime(story->getValue<int64_t>("started_at")) + " (the session's start)");
        row("From the address", field(story, "peer"));
        row("Its HELO/EHLO name", field(story, "helo"));
        row("TLS", tls.empty() ? "none: the whole session crossed the wire in plaintext"
                               : tls + (group.empty() ? "" : ", key exchange group " + group) +
                                     (starttls ? " (after STARTTLS, RFC 3207)" : " (implicit TLS, RFC 8314)"));
        row("Authenticated account", field(story, "account"));
        row("Queue id", field(story, "queue_id"));
        // The whole session up to this message's end: its start (EHLO, AUTH) is part of how it arrived;
        // on a connection kept open, earlier messages are counted in one line, not repeated.
        html += "</dl>\n<h2>The session up to this message, as the server saw it</h2>\n<pre id=\"transcript\">";
        Poco::JSON::Array::Ptr lines = story->getArray("transcript");
        for (size_t i = 0; lines && i < lines->size(); ++i) {
            std::string line = lines->getElement<std::string>(static_cast<unsigned>(i));
            const char* kind = line.rfind("C:", 0) == 0 ? "c" : line.rfind("S:", 0) == 0 ? "s" : "n";
            html += std::string("<span class=\"") + kind + "\">" + text::htmlEscape(line) + "</span>\n";
        }
        html += "</pre>\n<p class=\"n\">Then, once the message was on disk, the server answered <code>250 2.0.0 Ok: "
                "queued as " + text::htmlEscape(field(story, "queue_id")) +
                "</code>. AUTH responses are shown redacted: they carry the password in base64, which is not "
                "encryption. A capture of this session shows the same lines only when decrypted with its key log.</p>\n";
    } catch (const std::exception&) {
        html += "<p id=\"no-story\">The story on record cannot be read.</p>\n";
    }
    return html + "</body></html>\n";
}

}  // namespace maillab::http
