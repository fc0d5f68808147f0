#!/usr/bin/env bash
# `make demo`: the lab's main job end to end, as a readable transcript. Starts a sender server on a
# free port with a scratch database, registers two users, sends a message from one to the other,
# shows what was stored, and stops the server.
set -euo pipefail
BUILD=${1:-build}
BIN=$BUILD/bin
WORK=$(mktemp -d /tmp/maillab-demo-XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$BIN/maillab-certs" certs >/dev/null
step "Starting the sender server (SMTP over implicit TLS 1.3) on a free port"
coproc SERVER { exec "$BIN/senderserver" --port=0 --db="$WORK/demo.db" --certs=certs 2>"$WORK/server.log"; }
SERVER_PID=$SERVER_PID
read -r -t 30 ready <&"${SERVER[0]}" || { echo "server did not start"; cat "$WORK/server.log"; exit 1; }
PORT=${ready#ready port=}
echo "senderserver is listening on localhost:$PORT (database $WORK/demo.db)"

client() { "$BIN/senderclient" --port "$PORT" --ca certs/ca.pem "$@"; }

step "Registering ana@447.edu: AUTH with an empty password creates the account"
ANA=$(client --user ana --verbose 2>"$WORK/ana.trace" | sed -n 's/^password: //p')
sed 's/password: [0-9]*/password: ********/' "$WORK/ana.trace"
echo "ana's new password: $ANA (8 digits, ending in 447)"

step "Registering bob@447.edu"
BOB=$(client --user bob | sed -n 's/^password: //p')
echo "bob's new password: $BOB"

step "ana sends bob a message (every C:/S: line shown)"
printf 'Hi Bob,\n\nthe lab report is due on Friday.\n.\nA line with a single dot above was dot-stuffed on the wire.\n\nAna\n' >"$WORK/body.txt"
client --user ana --password "$ANA" --to bob --subject "Lab report" --body-file "$WORK/body.txt" --verbose 2>&1

step "What the server stored in bob's mailbox"
/usr/bin/python3 - "$WORK/demo.db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
for mid, qid, sender, subject, size, raw in con.execute(
        "SELECT id, queue_id, envelope_from, subject, size, raw FROM messages WHERE mailbox='bob@447.edu'"):
    print(f"message {mid}: queue id {qid}, from {sender}, subject {subject!r}, {size} octets")
    print("-" * 72)
    print(raw.decode(errors="replace").replace("\r\n", "\n"), end="")
    print("-" * 72)
PY

step "Server log (key=value, one line per event)"
grep -E "event=(connect|tls|auth|queued|close)" "$WORK/server.log" | sed 's/^[^ ]* //' | head -20

step "Stopping the server"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
echo "Done. Try it yourself: make senderserver PORT=9000, then in another terminal make senderclient PORT=9000"
