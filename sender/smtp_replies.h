// SMTP reply codes and enhanced status codes (RFC 5321 section 4.2, RFC 3463, RFC 2034) shared by
// the sender's server (session.cpp), its clients (smtp_client.cpp, client.cpp) and the unit tests,
// so that every side names a reply the same way. They live with the protocol that uses them.
#pragma once

namespace maillab::smtp {
inline namespace replies {

struct ReplyCode {
    int code;            // three-digit basic code (RFC 5321 4.2.1)
    const char* status;  // enhanced status code (RFC 3463), empty where none is sent (220 banner)
};

// The basic code a client checks, whatever the enhanced code and text (RFC 5321 4.2.1: the first
// digit says success, wait, or failure; the client acts on the three digits).
inline constexpr int kServiceNotAvailable = 421;  // the server is closing the connection (any 421)

// Positive completion
inline constexpr ReplyCode ServiceReady{220, ""};
inline constexpr ReplyCode Closing{221, "2.0.0"};
inline constexpr ReplyCode AuthSucceeded{235, "2.7.0"};
inline constexpr ReplyCode Ok{250, "2.0.0"};
inline constexpr ReplyCode ReadyToStartTls{220, "2.0.0"};
inline constexpr ReplyCode SenderOk{250, "2.1.0"};
inline constexpr ReplyCode RecipientOk{250, "2.1.5"};
inline constexpr ReplyCode Help{214, "2.0.0"};
inline constexpr ReplyCode CannotVerify{252, "2.5.0"};
// Positive intermediate
inline constexpr ReplyCode AuthChallenge{334, ""};
inline constexpr ReplyCode StartMailInput{354, ""};
// Transient negative
inline constexpr ReplyCode TooManyConnections{421, "4.3.2"};
inline constexpr ReplyCode TooManyFromAddress{421, "4.7.0"};
inline constexpr ReplyCode ShuttingDown{421, "4.3.2"};
inline constexpr ReplyCode BareLineFeedAtEnd{421, "4.5.0"};
inline constexpr ReplyCode Timeout{421, "4.4.2"};
inline constexpr ReplyCode TooManyAuthFailures{421, "4.7.0"};
inline constexpr ReplyCode TooManyErrors{421, "4.7.0"};
// Sent in clear to a client that speaks plain SMTP (or says nothing) on the implicit-TLS port.
inline constexpr ReplyCode TlsExpectedFirst{421, "4.7.0"};
// Its text begins so; our client recognises it and says to use --tls implicit.
inline constexpr const char* kTlsExpectedFirstText = "This port expects TLS first";
inline constexpr ReplyCode LocalError{451, "4.3.0"};
inline constexpr ReplyCode TooManyRecipients{452, "4.5.3"};
inline constexpr ReplyCode InsufficientStorage{452, "4.3.1"};
inline constexpr ReplyCode MailboxFull{452, "4.2.2"};
inline constexpr ReplyCode RateLimited{451, "4.7.1"};
inline constexpr ReplyCode AccountLocked{454, "4.7.0"};
inline constexpr ReplyCode TemporaryAuthFailure{454, "4.7.0"};
// Permanent negative
inline constexpr ReplyCode UnknownCommand{500, "5.5.2"};
inline constexpr ReplyCode LineTooLong{500, "5.5.6"};
inline constexpr ReplyCode SyntaxError{501, "5.5.4"};
inline constexpr ReplyCode AuthCancelled{501, "5.0.0"};
inline constexpr ReplyCode BadBase64{501, "5.5.2"};
inline constexpr ReplyCode NotImplemented{502, "5.5.1"};
inline constexpr ReplyCode BadSequence{503, "5.5.1"};
inline constexpr ReplyCode UnknownMechanism{504, "5.5.4"};
inline constexpr ReplyCode AuthRequired{530, "5.7.0"};
inline constexpr ReplyCode AuthInvalid{535, "5.7.8"};
inline constexpr ReplyCode UserUnknown{550, "5.1.1"};
inline constexpr ReplyCode RelayDenied{550, "5.7.1"};
inline constexpr ReplyCode MessageTooBig{552, "5.3.4"};
inline constexpr ReplyCode OverWholeQuota{552, "5.2.2"};  // a declared SIZE no emptied mailbox could take
inline constexpr ReplyCode SenderNotOwned{553, "5.7.1"};
inline constexpr ReplyCode BadAddressSyntax{553, "5.1.3"};
inline constexpr ReplyCode ParameterNotRecognized{555, "5.5.4"};
inline constexpr ReplyCode EncryptionRequired{538, "5.7.11"};
inline constexpr ReplyCode BareCarriageReturn{550, "5.6.0"};
// After the final ".": RFC 5321 4.3.2 allows no 500 there (the 5xx after DATA's end are 550, 552, 554),
// and X.5.6 is RFC 4954's AUTH line code; the content is what failed (RFC 3463 X.6.0), as for a bare CR.
inline constexpr ReplyCode DataLineTooLong{550, "5.6.0"};

}  // namespace replies
}  // namespace maillab::smtp
