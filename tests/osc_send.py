#!/usr/bin/env python3
"""A minimal OSC 1.0 sender for the tests (standard library only).

usage: osc_send.py PORT ADDRESS [ARG...]      one message; ARG is i:5, f:1.5, s:text, h:7, d:2.5
       osc_send.py PORT --bundle ADDRESS ARG... [-- ADDRESS ARG...]...
       osc_send.py PORT --raw HEX             any bytes (malformed packets)
"""
import socket
import struct
import sys


def pad(b: bytes) -> bytes:
    return b + b"\0" * (4 - len(b) % 4)


def message(address: str, args: list) -> bytes:
    tags, data = ",", b""
    for a in args:
        kind, _, value = a.partition(":")
        if kind == "i":
            tags, data = tags + "i", data + struct.pack(">i", int(value))
        elif kind == "h":
            tags, data = tags + "h", data + struct.pack(">q", int(value))
        elif kind == "f":
            tags, data = tags + "f", data + struct.pack(">f", float(value))
        elif kind == "d":
            tags, data = tags + "d", data + struct.pack(">d", float(value))
        elif kind == "s":
            tags, data = tags + "s", data + pad(value.encode())
        else:
            raise SystemExit(f"bad argument {a!r}")
    return pad(address.encode()) + pad(tags.encode()) + data


def main() -> None:
    port = int(sys.argv[1])
    rest = sys.argv[2:]
    if rest and rest[0] == "--raw":
        packet = bytes.fromhex(rest[1])
    elif rest and rest[0] == "--bundle":
        parts, cur = [], []
        for a in rest[1:] + ["--"]:
            if a == "--":
                if cur:
                    parts.append(message(cur[0], cur[1:]))
                cur = []
            else:
                cur.append(a)
        packet = b"#bundle\0" + struct.pack(">Q", 1)
        for p in parts:
            packet += struct.pack(">i", len(p)) + p
    else:
        packet = message(rest[0], rest[1:])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, ("127.0.0.1", port))


if __name__ == "__main__":
    main()
