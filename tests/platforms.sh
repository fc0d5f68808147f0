#!/usr/bin/env bash
# `make test-platforms`: the README's two commands (`make demo`, `make test`) on fresh minimal
# installs of each Debian release a student may have, one line per release with the counts.
#
# Each release (Debian: bookworm trixie testing; Ubuntu: noble = 24.04, resolute = 26.04) gets a
# debootstrap --variant=minbase tree, built once and cached in
# $MAILLAB_PLATFORM_CACHE (default .platforms/, which `make clean` leaves alone; `make
# clean-platforms` removes it). Every run copies that pristine tree, so the packages the README's
# commands install are installed again each time (from a cached archive folder), then copies the
# working tree's committed and new files in (no build output) and runs the commands as root.
#
#   tests/platforms.sh [--bench] [--keep] [release ...]     (default: bookworm trixie testing noble resolute)
#   --bench   also run `make bench-platform` there and keep its JSON for docs/benchmarks.md
#   --keep    leave the run tree for inspection (chroot .platforms/run/<release> bash)
#   --readme  write the results into README.md's table of tested releases
#   --head    copy the last commit (git archive HEAD) instead of the working tree
# Exit status: 0 when every release passed, 1 when one failed, 2 on a usage or set-up error.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CACHE=${MAILLAB_PLATFORM_CACHE:-$REPO/.platforms}
MIRROR=${MAILLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
UBUNTU_MIRROR=${MAILLAB_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
# The Ubuntu archive's signing key (2018). The keyring package that holds it comes over plain HTTP,
# so the package is pinned by its SHA-256, and only the one key whose primary fingerprint is the pin
# is taken out of it (minimal export, exactly one key) to check the archive.
UBUNTU_ARCHIVE_KEY=F6ECB3762474EDA9D21B7022871920D1991BC93C
UBUNTU_KEYRING_DEB=${MAILLAB_UBUNTU_KEYRING_DEB:-$UBUNTU_MIRROR/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb}
UBUNTU_KEYRING_SHA256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8
BENCH=0
KEEP=0
README=0
HEAD_ONLY=0
RELEASES=()
for arg in "$@"; do
  case $arg in
    --bench) BENCH=1 ;;
    --keep) KEEP=1 ;;
    --readme) README=1 ;;
    --head) HEAD_ONLY=1 ;;
    --clean) CLEAN=1 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    -*) echo "error: unknown option $arg (see --help)"; exit 2 ;;
    *) RELEASES+=("$arg") ;;
  esac
done
[ ${#RELEASES[@]} -gt 0 ] || RELEASES=(bookworm trixie testing noble resolute)
is_ubuntu() { case $1 in noble|resolute) return 0 ;; *) return 1 ;; esac; }

# Ends the processes running inside a tree (a server a failed test left behind), then unmounts
# everything mounted below it, deepest first.
unmount_below() {
  local dir p
  dir=$(realpath -m "$1")
  for p in /proc/[0-9]*; do
    case $(readlink "$p/root" 2>/dev/null) in "$dir"|"$dir"/*) kill -9 "${p#/proc/}" 2>/dev/null ;; esac
  done
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

if [ "${CLEAN:-0}" = 1 ]; then
  unmount_below "$CACHE"
  rm -rf "$CACHE"
  echo "removed $CACHE"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the platform check builds chroots and must run as root (sudo make test-platforms)"
  exit 2
fi
if ! command -v debootstrap >/dev/null; then
  echo "Installing packages: debootstrap"
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null || { echo "error: cannot install debootstrap"; exit 2; }
fi

mkdir -p "$CACHE/base" "$CACHE/run" "$CACHE/apt" "$CACHE/logs" "$CACHE/results"
RUN_ROOTS=()
cleanup() { for r in "${RUN_ROOTS[@]}"; do unmount_below "$r"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# The Ubuntu archive key alone, as a keyring file for debootstrap and apt (made once).
ubuntu_keyring() {
  local keyring="$CACHE/ubuntu-archive-$UBUNTU_ARCHIVE_KEY.gpg" work
  if [ ! -s "$keyring" ]; then
    command -v gpg >/dev/null || apt-get install -y -qq --no-install-recommends gpg >/dev/null
    work=$(mktemp -d)
    curl -fsS -o "$work/keyring.deb" "$UBUNTU_KEYRING_DEB" \
      && echo "$UBUNTU_KEYRING_SHA256  $work/keyring.deb" | sha256sum --check --quiet - \
      && dpkg-deb -x "$work/keyring.deb" "$work/x" \
      && gpg --homedir "$work" --no-default-keyring --keyring "$work/x/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
           --export-options export-minimal --export "$UBUNTU_ARCHIVE_KEY!" >"$keyring.tmp" 2>/dev/null \
      && gpg --homedir "$work" --show-keys --with-colons "$keyring.tmp" 2>/dev/null \
           | awk -F: -v pin="$UBUNTU_ARCHIVE_KEY" '/^pub:/ { keys++; p = 1; next } p && /^fpr:/ { first = $10; p = 0 }
                                                   END { exit !(keys == 1 && first == pin) }' \
      && mv "$keyring.tmp" "$keyring"
    rm -rf "$work" "$keyring.tmp"
    [ -s "$keyring" ] || { echo "error: no Ubuntu archive key $UBUNTU_ARCHIVE_KEY from $UBUNTU_KEYRING_DEB" >&2; return 1; }
  fi
  echo "$keyring"
}

# The pristine tree of a release, made once.
base_tree() {
  local release=$1 base="$CACHE/base/$1" keyring
  if [ ! -x "$base/usr/bin/make" ]; then
    rm -rf "$base.tmp"
    echo "[$release] debootstrap --variant=minbase (once; cached in $base)"
    local how=("$release" "$base.tmp" "$MIRROR")
    if is_ubuntu "$release"; then
      # debootstrap's scripts may predate the release: Ubuntu's all follow gutsy's. Packages the
      # lab needs (Poco, Catch2, tshark) are in universe; a fresh install also has -updates and -security.
      keyring=$(ubuntu_keyring) || return 1
      how=(--components=main,universe --keyring="$keyring" "$release" "$base.tmp" "$UBUNTU_MIRROR"
           /usr/share/debootstrap/scripts/gutsy)
    fi
    if ! debootstrap --variant=minbase --include=make,ca-certificates "${how[@]}" \
         >"$CACHE/logs/$release-debootstrap.log" 2>&1; then
      echo "[$release] debootstrap failed: see $CACHE/logs/$release-debootstrap.log"
      return 1
    fi
    if is_ubuntu "$release"; then
      printf 'deb %s %s main universe\ndeb %s %s-updates main universe\ndeb %s %s-security main universe\n' \
        "$UBUNTU_MIRROR" "$release" "$UBUNTU_MIRROR" "$release" "$UBUNTU_MIRROR" "$release" >"$base.tmp/etc/apt/sources.list"
      cp "$keyring" "$base.tmp/etc/apt/trusted.gpg.d/maillab-ubuntu-archive.gpg"
    fi
    # testing and unstable are served as dated snapshots whose Release file may be past its
    # Valid-Until date; apt refuses those unless told (an installed system follows the live archive).
    # Ubuntu's are current: its trees keep the check (an old Release replayed is refused).
    is_ubuntu "$release" || echo 'Acquire::Check-Valid-Until "false";' >"$base.tmp/etc/apt/apt.conf.d/99maillab-snapshot"
    rm -rf "$base" && mv "$base.tmp" "$base"
  fi
}

# What an installed Debian system has and a debootstrap tree lacks: its host name in /etc/hosts
# (without it Python's socket.getfqdn() waits for DNS), localhost on both stacks, a resolver.
system_files() {
  local root=$1 host
  host=$(hostname)
  cat >"$root/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$host
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
  echo "$host" >"$root/etc/hostname"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
}

mount_system() {
  local root=$1 release=$2
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t sysfs sys "$root/sys" 2>/dev/null || true
  mkdir -p "$CACHE/apt/$release/partial"
  mount --bind "$CACHE/apt/$release" "$root/var/cache/apt/archives"
}

in_root() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb CI="${CI:-}" DEBIAN_FRONTEND=noninteractive bash -c "$*"
}

seconds_since() { echo $(( $(date +%s) - $1 )); }

SUMMARY=()
FAILED=0
for release in "${RELEASES[@]}"; do
  started=$(date +%s)
  if ! base_tree "$release"; then SUMMARY+=("$release: set-up failed (debootstrap)"); FAILED=1; continue; fi
  root="$CACHE/run/$release"
  unmount_below "$root"
  rm -rf "$root"
  cp -a "$CACHE/base/$release" "$root"
  RUN_ROOTS+=("$root")
  system_files "$root"
  mount_system "$root" "$release"
  # The working tree's committed and new files, without build output or run-time data.
  mkdir -p "$root/root/maillab"
  if [ "$HEAD_ONLY" = 1 ]; then
    git archive HEAD | tar -C "$root/root/maillab" -xf -
  else
    git ls-files -z --cached --others --exclude-standard | tar -C "$REPO" --null -T - -cf - | tar -C "$root/root/maillab" -xf -
  fi
  log_demo="$CACHE/logs/$release-demo.log"
  log_test="$CACHE/logs/$release-test.log"
  echo "[$release] make demo   (log: $log_demo)"
  t=$(date +%s)
  in_root "$root" 'cd /root/maillab && make demo' >"$log_demo" 2>&1 </dev/null
  demo_rc=$?
  demo_s=$(seconds_since "$t")
  echo "[$release] make test   (log: $log_test)"
  t=$(date +%s)
  in_root "$root" 'cd /root/maillab && make test' >"$log_test" 2>&1 </dev/null
  test_rc=$?
  test_s=$(seconds_since "$t")
  counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log_test" | tail -1)
  [ -n "$counts" ] || counts="no count (exit $test_rc)"
  versions=$(in_root "$root" '
    . /etc/os-release
    poco=$(dpkg-query -W -f="\${Version}" libpoco-dev 2>/dev/null | cut -d- -f1)
    ssl=$(openssl version | cut -d" " -f2)
    tshark=$(dpkg-query -W -f="\${Version}" tshark 2>/dev/null | cut -d- -f1)
    py=$(/usr/bin/python3 -c "import platform; print(platform.python_version())")
    echo "$PRETTY_NAME poco=$poco openssl=$ssl tshark=$tshark python=$py"' 2>/dev/null)
  bench_note=
  if [ "$BENCH" = 1 ] && [ $demo_rc -eq 0 ]; then
    log_bench="$CACHE/logs/$release-bench.log"
    echo "[$release] make bench-platform   (log: $log_bench)"
    in_root "$root" 'cd /root/maillab && make bench-platform OUT=/root/bench.json' >"$log_bench" 2>&1 </dev/null \
      && cp "$root/root/bench.json" "$CACHE/results/$release-bench.json" && bench_note=", bench ok" \
      || { bench_note=", bench FAILED"; FAILED=1; }
  fi
  demo_word=ok; [ $demo_rc -eq 0 ] || { demo_word="FAILED (exit $demo_rc)"; FAILED=1; }
  case $counts in *" 0 failed"*) [ $test_rc -eq 0 ] || FAILED=1 ;; *) FAILED=1 ;; esac
  line="$release: $versions | make demo $demo_word (${demo_s} s) | make test: $counts (${test_s} s)$bench_note | total $(seconds_since "$started") s"
  echo "$line"
  echo "$line" >"$CACHE/results/$release.txt"
  printf '%s\t%s\t%s\t%s\t%s\n' "$release" "$versions" "$demo_word (${demo_s} s)" "$counts" "$(date -u +%Y-%m-%d)" \
    >"$CACHE/results/$release.tsv"
  SUMMARY+=("$line")
  if [ $test_rc -ne 0 ] || [ $demo_rc -ne 0 ]; then
    grep -E '^FAIL' "$log_test" | head -20 | sed "s/^/[$release]   /"
    tail -5 "$log_demo" | sed "s/^/[$release] demo: /"
  fi
  unmount_below "$root"
  [ "$KEEP" = 1 ] || rm -rf "$root"
done

echo
echo "platform check $(date -u +%Y-%m-%d):"
printf '  %s\n' "${SUMMARY[@]}"
if [ "$README" = 1 ]; then
  # The README's table of tested releases, from the last result of each release; a release this
  # cache has no result for keeps its row (a run of some releases does not erase the others).
  /usr/bin/python3 - "$CACHE/results" README.md <<'PY'
import glob, os, re, sys
results, readme = sys.argv[1], sys.argv[2]
order = {"bookworm": 0, "trixie": 1, "testing": 2, "sid": 3, "noble": 4, "resolute": 5}
text = open(readme).read()
begin, end = "<!-- platforms-tested:begin -->", "<!-- platforms-tested:end -->"
kept = {}
for line in text[text.index(begin):text.index(end)].splitlines():
    cells = line.split(" | ")
    found = re.findall(r"\(([\w-]+)\)", cells[0]) if line.startswith("| ") and len(cells) > 1 else []
    if found and found[-1] != "release":
        kept[found[-1]] = line
fresh = {}
for path in sorted(glob.glob(os.path.join(results, "*.tsv")), key=lambda p: order.get(os.path.basename(p)[:-4], 9)):
    release, versions, demo, test, date = open(path).read().rstrip("\n").split("\t")
    name, _, tools = versions.partition(" poco=")
    tools = "poco=" + tools if tools else ""
    short = " / ".join(kv.split("=", 1)[1] for kv in tools.split()) if tools else "?"
    label = name if f"({release})" in name else f"{name} ({release})"
    fresh[release] = f"| {label} | {short} | {demo} | {test} | {date} |"
kept.update(fresh)
rows = [kept[r] for r in sorted(kept, key=lambda r: order.get(r, 9))]
table = "\n".join(["| release | Poco / OpenSSL / tshark / Python | `make demo` | `make test` | date |",
                    "|---|---|---|---|---|"] + rows)
text = text[:text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]
open(readme, "w").write(text)
print("updated the tested releases in README.md")
PY
fi
exit $FAILED
