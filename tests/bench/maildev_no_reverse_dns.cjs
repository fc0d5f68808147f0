// Preloaded into MailDev by tests/bench/maildev_peer.py (NODE_OPTIONS=--require ...): answers the
// reverse DNS lookup that smtp-server makes for every new SMTP connection at once, with no names,
// so no query leaves loopback during the benchmark. MailDev 3 passes no `disableReverseLookup` and
// no `resolver` to smtp-server, so the lookup is answered here, where smtp-server calls it:
// the `reverse` function of node's dns module.
'use strict';
const dns = require('node:dns');

let answered = 0;
dns.reverse = (address, callback) => {
    answered += 1;
    process.nextTick(callback, null, []);
};
dns.promises.reverse = async () => [];
process.on('exit', () => {
    if (process.env.MAILLAB_REVERSE_DNS_COUNT) process.stderr.write(`reverse lookups answered locally: ${answered}\n`);
});
