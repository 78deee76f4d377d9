#!/usr/bin/env python3
"""Seeds the fuzz corpora from the test suite: fuzz/seeds.py CORPUS_DIR.

rewrite: every SQL string literal of the rewriter's and the proxy's tests.
frame:   those statements as the client messages libpq and the drivers send
         (simple Query; Parse/Bind/Describe/Execute/Sync; COPY data;
         Terminate), plus malformed framings, each prefixed with the byte
         that sets how many bytes one read delivers.
startup: startup packets as psql, pgJDBC, psycopg and node-postgres send
         them, SSL/GSSENC/cancel requests, `options` strings, and SCRAM
         exchanges (valid and tampered) against the fuzz target's verifier.
"""

import base64
import hashlib
import hmac
import pathlib
import re
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SQL_SOURCES = [
    "src/rewrite/tests.rs",
    "tests/deny_proxy.rs",
    "tests/views_proxy.rs",
    "tests/protocol_abuse.rs",
    "tests/clients/psycopg_compat.py",
    "tests/clients/psycopg_views.py",
]
SQL_START = re.compile(
    r"^\s*(\(|select|with|insert|update|delete|merge|copy|table|values|set|reset|show|"
    r"explain|create|drop|alter|begin|start|commit|rollback|prepare|execute|deallocate|"
    r"declare|fetch|move|close|lock|do|call|grant|revoke|truncate|vacuum|analyze|discard|"
    r"listen|notify|comment|refresh|load|checkpoint|savepoint|release)\b",
    re.IGNORECASE,
)
RAW_STRING = re.compile(r'r(#*)"(.*?)"\1', re.DOTALL)
PLAIN_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"|\'((?:[^\'\\\n]|\\.)*)\'')

# The fuzz target's fixed verifier: password, salt, rounds, server nonce.
PASSWORD = b"fuzz-password"
SALT = b"pgveil-fuzz-salt"
ROUNDS = 4096
SERVER_NONCE = "pgveilfuzzservernonce"


def unescape(text):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), text)


def sql_literals():
    found = []
    for source in SQL_SOURCES:
        path = ROOT / source
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        candidates = [m.group(2) for m in RAW_STRING.finditer(text)]
        candidates += [unescape(m.group(1) or m.group(2) or "") for m in PLAIN_STRING.finditer(text)]
        found += [c for c in candidates if SQL_START.match(c)]
    return sorted(set(found))


def message(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(text):
    return text.encode() + b"\0"


def client_messages(sql):
    query = message(b"Q", cstr(sql))
    extended = (
        message(b"P", cstr("s1") + cstr(sql) + struct.pack("!h", 0))
        + message(b"B", cstr("") + cstr("s1") + struct.pack("!hhh", 0, 0, 0))
        + message(b"D", b"P" + cstr(""))
        + message(b"E", cstr("") + struct.pack("!i", 0))
        + message(b"S", b"")
    )
    return [query, extended, query + message(b"X", b"")]


def malformed_frames():
    copy = message(b"Q", cstr("COPY t FROM STDIN")) + message(b"d", b"1\tx\n" * 50) + message(b"c", b"")
    return [
        b"Q\0\0\0\x03",  # length below 4
        b"Q\xff\xff\xff\xff",  # negative length
        b"Q\x7f\xff\xff\xffselect",  # longer than the limit
        message(b"Q", b"select 1"),  # no terminator
        message(b"Q", b"select '\xff'\0"),  # invalid UTF-8
        message(b"P", b"\0select 1\0\0\x05\0\0\0\x17"),  # OID count too large
        message(b"z", b"unknown tag"),
        message(b"F", b"\0\0\x04\xd2\0\0\0\0\0\0"),
        copy,
        message(b"Q", cstr("select 1"))[:7],  # truncated
    ]


def startup_packet(params, version=196608):
    body = struct.pack("!I", version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def startup_seeds():
    clients = [
        [("user", "sam"), ("database", "crm"), ("application_name", "psql"), ("client_encoding", "UTF8")],
        [("user", "sam"), ("database", "crm"), ("client_encoding", "UTF8"), ("DateStyle", "ISO"),
         ("TimeZone", "UTC"), ("extra_float_digits", "2")],  # pgJDBC
        [("user", "ana"), ("database", "crm"), ("options", "-c pgveil.view=analytics")],
        [("user", "sam"), ("database", "crm"), ("options", "-c search_path=a\\ b --statement-timeout=5")],
        [("user", "sam"), ("replication", "database")],
        [("user", "sam"), ("_pq_.test_option", "1")],
    ]
    seeds = [startup_packet(p)[4:] for p in clients]
    seeds.append(startup_packet(clients[0], 196610)[4:])  # protocol 3.2
    seeds += [struct.pack("!I", code) for code in (80877103, 80877104)]
    seeds.append(struct.pack("!Iii", 80877102, 4242, -7))
    seeds += [b"-c pgveil.view=standard", b"--search-path=x -cfoo=bar", b"-c"]
    seeds += scram_seeds()
    return seeds


def scram_seeds():
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD, SALT, ROUNDS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    seeds = []
    for gs2, cnonce in (("n,,", "rOprNGfwEbeRWgbNEkqO"), ("y,,", "fyko+d2lbbFgONRv9qkxdawL")):
        first_bare = f"n=,r={cnonce}"
        nonce = cnonce + SERVER_NONCE
        server_first = f"r={nonce},s={base64.b64encode(SALT).decode()},i={ROUNDS}"
        without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={nonce}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
        client_first = (gs2 + first_bare).encode()
        seeds.append(client_first + b"\0" + f"{without_proof},p={proof}".encode())
        seeds.append(client_first + b"\0" + f"{without_proof},p={proof[:-4]}AAA=".encode())
        seeds.append(cstr("SCRAM-SHA-256") + struct.pack("!i", len(client_first)) + client_first)
    seeds.append(b"p=tls-server-end-point,,n=,r=abc\0")
    return seeds


def write(corpus, target, seeds):
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        (folder / f"seed-{i:04}").write_bytes(seed)
    return len(seeds)


def main():
    corpus = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "fuzz" / "corpus")
    statements = sql_literals()
    frames = [bytes([chunk]) + m for sql in statements for m, chunk in zip(client_messages(sql), (255, 7, 64))]
    frames += [bytes([3]) + m for m in malformed_frames()]
    counts = {
        "rewrite": write(corpus, "rewrite", [s.encode() for s in statements]),
        "frame": write(corpus, "frame", frames),
        "startup": write(corpus, "startup", startup_seeds()),
    }
    print(" ".join(f"{k}={v}" for k, v in counts.items()), "seeds")


if __name__ == "__main__":
    main()
