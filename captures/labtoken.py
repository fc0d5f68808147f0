#!/usr/bin/python3
"""make token STUDENT=id [SECRET=...]: a student's lab token, derived from the instructor's secret and
the student id (no database): HMAC-SHA256(secret, "maillab-lab-token/v1/" + id), its first 40 bits in
Crockford base32, written "lab-xxxx-xxxx". The student puts it in the Subject of the lab message; the
grader (grade.py) recomputes it. Two students' tokens differ; without the secret a token cannot be
made for anyone.

The secret is SECRET (any text) or the file users/instructor.secret, created on first use with 32
random bytes (0600). Keep it out of the students' reach; a new secret makes new tokens for everyone.

  python3 -m captures.labtoken token --student ana [--secret TEXT | --secret-file users/instructor.secret]
  python3 -m captures.labtoken tokens --roster roster.csv   (one line per student: id,token)"""

import argparse
import csv
import hashlib
import hmac
import os
import secrets
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SECRET_FILE = os.path.join(ROOT, "users", "instructor.secret")
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no i, l, o, u to misread


def normalize_student(student):
    return student.strip().lower()


def token(secret, student):
    """The student's token: "lab-" and 8 base32 characters in two groups."""
    digest = hmac.new(secret.encode(), ("maillab-lab-token/v1/" + normalize_student(student)).encode(),
                      hashlib.sha256).digest()
    value = int.from_bytes(digest[:5], "big")  # 40 bits
    chars = "".join(ALPHABET[(value >> shift) & 31] for shift in range(35, -1, -5))
    return f"lab-{chars[:4]}-{chars[4:]}"


def load_secret(text=None, path=None, create=True):
    """SECRET as given, else the secret file (created with 32 random bytes when missing)."""
    if text:
        return text
    path = path or DEFAULT_SECRET_FILE
    if not os.path.exists(path):
        if not create:
            raise SystemExit(f"no instructor secret: give SECRET= or create {path} with `make token STUDENT=x`")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        print(f"created the instructor secret {path} (keep it private; it makes every student's token)",
              file=sys.stderr)
    with open(path) as f:
        return f.read().strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["token", "tokens"])
    parser.add_argument("--student")
    parser.add_argument("--roster")
    parser.add_argument("--secret")
    parser.add_argument("--secret-file")
    args = parser.parse_args()
    secret = load_secret(args.secret, args.secret_file)
    if args.command == "token":
        if not args.student:
            print("usage: make token STUDENT=id (the student id from your roster)", file=sys.stderr)
            return 2
        print(token(secret, args.student))
        return 0
    if not args.roster:
        print("usage: make tokens ROSTER=roster.csv", file=sys.stderr)
        return 2
    with open(args.roster, newline="") as f:
        for row in csv.DictReader(f):
            print(f"{row['student']},{token(secret, row['student'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
