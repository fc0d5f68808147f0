#!/usr/bin/env bash
# `make demo`: the whole lab end to end, as a readable transcript. Starts a sender server and a
# retriever server on free ports over one scratch database, registers two users, has them mail each
# other, lets each read their own mailbox (and shows that reading the other's is refused), then stops
# both servers.
set -euo pipefail
BUILD=${1:-build}
BIN=$BUILD/bin
WORK=$(mktemp -d /tmp/maillab-demo-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Starts a server on port 0 and waits for its "ready port=N" line (no sleeping). Sets PORT_OF_<name>
# and records the pid in this shell (not a $(...) subshell, where it would be lost and the server
# left running after the demo).
start() {
  local name=$1; shift
  exec {fd}< <(exec "$BIN/$name" --port=0 --db="$WORK/demo.db" --certs=certs "$@" 2>"$WORK/$name.log")
  PIDS+=($!)
  local ready
  read -r -t 30 ready <&"$fd" || { echo "$name did not start"; cat "$WORK/$name.log"; exit 1; }
  ready=${ready#ready port=}
  printf -v "PORT_OF_$name" '%s' "${ready%% *}"  # the first port; the retriever names its POP3 ones after it
}

"$BIN/maillab-certs" certs >/dev/null
step "Starting the sender (SMTP, implicit TLS 1.3) and the retriever (HTTPS, TLS 1.3)"
start senderserver
start retrieverserver
SPORT=$PORT_OF_senderserver
RPORT=$PORT_OF_retrieverserver
echo "senderserver    on localhost:$SPORT"
echo "retrieverserver on https://localhost:$RPORT/   (one database: $WORK/demo.db)"

send() { "$BIN/senderclient" --port "$SPORT" --ca certs/ca.pem "$@"; }
fetch() { "$BIN/retrieverclient" --port "$RPORT" --ca certs/ca.pem "$@"; }

step "Registering ana@447.edu: AUTH with an empty password creates the account"
ANA=$(send --user ana --verbose 2>"$WORK/ana.trace" | sed -n 's/^password: //p')
sed 's/password: [0-9]*/password: ********/' "$WORK/ana.trace"
echo "ana's new password: $ANA (8 digits, ending in 447)"

step "Registering bob@447.edu"
BOB=$(send --user bob | sed -n 's/^password: //p')
echo "bob's new password: $BOB"

step "ana sends bob a message (every C:/S: line shown)"
printf 'Hi Bob,\n\nthe lab report is due on Friday.\n.\nThe line above held a single dot: it was dot-stuffed on the wire.\n\nAna\n' >"$WORK/ana.txt"
send --user ana --password "$ANA" --to bob --subject "Lab report" --body-file "$WORK/ana.txt" --verbose 2>&1

step "bob answers ana"
printf 'Thanks, Ana. See you in the lab.\nBob\n' >"$WORK/bob.txt"
send --user bob --password "$BOB" --to ana --subject "Re: Lab report" --body-file "$WORK/bob.txt"

step "bob reads his mailbox over HTTPS (request and response headers shown)"
fetch --user bob --password "$BOB" --verbose 2>&1
ID=$(fetch --user bob --password "$BOB" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"][0]["id"])')
step "bob opens message $ID"
fetch --user bob --password "$BOB" --id "$ID"

step "ana reads her mailbox"
fetch --user ana --password "$ANA"

step "ana tries to read bob's message $ID: refused"
curl -sS --cacert certs/ca.pem -u "ana@447.edu:$ANA" "https://localhost:$RPORT/mailboxes/bob@447.edu/messages/$ID" -w '  (HTTP %{http_code})\n' || true

step "Server logs (key=value, one line per event)"
grep -hE "event=(tls|auth|queued|request)" "$WORK/senderserver.log" "$WORK/retrieverserver.log" | sed 's/^[^ ]* //' | head -24

step "Stopping both servers"
echo "(pids ${PIDS[*]})"
for pid in "${PIDS[@]}"; do kill "$pid"; done
for pid in "${PIDS[@]}"; do
  # wait for each to exit (tail --pid watches any process, child or not), 20 s at most
  timeout 20 tail --pid="$pid" -f /dev/null || { echo "error: server $pid is still running"; exit 1; }
done
PIDS=()
echo "Both servers have stopped."
echo "Done. Try it yourself, each in its own terminal:"
echo "  make senderserver PORT=9000      make senderclient PORT=9000"
echo "  make retrieverserver PORT=9100   make retrieverclient PORT=9100"
