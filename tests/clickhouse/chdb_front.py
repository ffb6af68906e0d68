"""A test-only HTTP front that serves the part of ClickHouse's HTTP interface
that the clients use (the Rust `clickhouse` crate, clickhouse-connect, curl),
over one persistent in-process chdb session (chdb embeds ClickHouse; it
cannot listen on a port itself).

    python tests/clickhouse/chdb_front.py --port 0 --data DIR

prints the chosen port on stdout's first line, then serves until killed.
In-process: `front = ChdbFront(data_dir); front.url; front.close()`.

Served (as ClickHouse's HTTP interface does, docs/en/interfaces/http.md):
  * GET / (no query), GET /ping, GET /replicas_status -> "Ok.\n"
  * GET|POST /?query=...: the query in the URL, in the body (POST), or the
    beginning in `query` and the rest in the body, joined by "\n". For an
    `INSERT ... FORMAT X` the bytes after the format name (after spaces/tabs
    and one optional newline, as ClickHouse's parser does) are the rows; they
    are written to a temp file and run as `INSERT ... FROM INFILE 'f' FORMAT X`.
    GET is read-only (Code 164, READONLY) as in ClickHouse.
  * `database` param / X-ClickHouse-Database header: default database (USE).
  * `default_format` param / X-ClickHouse-Format header: output format when the
    query has no FORMAT clause (TabSeparated otherwise).
  * `param_<name>`: query parameters for {name:Type} placeholders.
  * a multipart/form-data body (the Rust crate sends `query` and the `param_*`
    query parameters so since 0.15): its fields count as URL parameters, as
    ClickHouse's HTTP handler reads them; a part with a filename (an external
    table) is refused (Code 48).
  * `client_protocol_version=N` (clickhouse-go's HTTP transport): Native output
    as ClickHouse writes it for that revision (BlockInfo per block; from 54454 a
    has_custom_serialization byte, always 0, after each column type), rewritten
    from chdb's revision-0 Native; Native input is revision 0, as in ClickHouse.
  * every other URL parameter not in NON_SETTING_PARAMS is a ClickHouse setting,
    applied with SET for this query only (reset with `SET x = DEFAULT`); an
    unknown setting is an error (Code 115), as in ClickHouse.
  * request bodies: Transfer-Encoding: chunked; Content-Encoding gzip, deflate,
    lz4 (frame), zstd, xz, bz2 (br if `brotli` is importable); `decompress=1`:
    ClickHouse's compressed blocks (LZ4 0x82, ZSTD 0x90, NONE 0x02), CityHash128
    checksums verified unless http_native_compression_disable_checksumming_on_decompress=1.
  * responses: `compress=1` -> compressed LZ4 blocks with CityHash128 v1.0.2
    checksums (the Rust crate verifies them); enable_http_compression=1 plus
    Accept-Encoding -> Content-Encoding (same list as above, first one we know).
    Headers: X-ClickHouse-Format, X-ClickHouse-Query-Id, X-ClickHouse-Timezone,
    X-ClickHouse-Summary.
  * errors: status from ClickHouse's exceptionCodeToHTTPStatus (400/404/500...),
    body `Code: N. DB::Exception: ... (NAME) (version V (official build))\n`,
    header X-ClickHouse-Exception-Code: N. Error bodies are never compressed
    (the Rust crate falls back to the raw body; clickhouse-connect honours
    Content-Encoding, which we do not set on errors).

Credentials: with `--password`, a request must carry that password
(X-ClickHouse-Key header, `password` param, or HTTP basic auth) or it gets
Code 516 (AUTHENTICATION_FAILED, 403); without, any credentials are accepted.
`--tls-cert`/`--tls-key` serve https instead of http.

Not served: users and roles (`role` is ignored: chdb has no access control),
HTTP sessions (`session_id`: every
request shares the one chdb session), external tables, progress headers, mid-stream exceptions (results are buffered whole).
chdb accepts multi-statement queries ("a; b"), which ClickHouse's HTTP
interface rejects.
"""

import argparse
import base64
import bz2
import gzip
import json
import lzma
import os
import re
import ssl
import struct
import sys
import tempfile
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
import lz4.frame
from chdb.session import Session
from clickhouse_cityhash.cityhash import CityHash128

try:  # Python >= 3.14
    from compression import zstd
except ImportError:
    try:  # a dependency of clickhouse-connect on older Pythons
        from backports import zstd
    except ImportError:
        zstd = None
try:
    import brotli
except ImportError:
    brotli = None

# URL parameters that are not settings: ClickHouse's HTTP handler consumes them
# itself (plus `param_*`, the query parameters).
NON_SETTING_PARAMS = {
    "query", "database", "default_format", "user", "password", "quota_key",
    "query_id", "session_id", "session_timeout", "session_check",
    "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "stacktrace", "close_session",
}
# Real settings that only steer the HTTP layer: this front handles them (or,
# for progress/buffering, has nothing to do: it always buffers) and does not
# SET them in chdb.
HTTP_LAYER_SETTINGS = {
    "enable_http_compression", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "http_wait_end_of_query", "http_response_buffer_size",
}

# exceptionCodeToHTTPStatus.cpp, by error name.
STATUS_BY_NAME = {
    401: {"REQUIRED_PASSWORD"},
    403: {"UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"},
    400: {"BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
          "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
          "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
          "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
          "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
          "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
          "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"},
    404: {"UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
          "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
          "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"},
    413: {"QUERY_IS_TOO_LARGE"},
    501: {"NOT_IMPLEMENTED"},
    503: {"SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"},
    411: {"HTTP_LENGTH_REQUIRED"},
    408: {"TIMEOUT_EXCEEDED"},
    415: {"UNSUPPORTED_MEDIA_TYPE"},
}


class ClickHouseError(Exception):
    """An error in ClickHouse's text form: `Code: N. DB::Exception: ... (NAME)`."""

    def __init__(self, text):
        super().__init__(text)
        m = re.match(r"Code: (\d+)\.", text)
        self.code = int(m.group(1)) if m else 1001  # STD_EXCEPTION
        m = re.search(r"\(([A-Z][A-Z0-9_]+)\)\s*$", text)
        self.name = m.group(1) if m else ""
        self.text = text if m or text.startswith("Code:") else f"Code: {self.code}. DB::Exception: {text}"

    @classmethod
    def make(cls, code, name, message):
        return cls(f"Code: {code}. DB::Exception: {message}. ({name})")

    @property
    def status(self):
        return next((s for s, names in STATUS_BY_NAME.items() if self.name in names), 500)


# --- ClickHouse's compressed blocks (compress=1 / decompress=1) -------------
# [16 bytes CityHash128 v1.0.2 of the rest][1 byte method][u32 LE compressed
# size incl. this 9-byte header][u32 LE uncompressed size][payload]

METHOD_NONE, METHOD_LZ4, METHOD_ZSTD = 0x02, 0x82, 0x90
BLOCK_SIZE = 1 << 20  # ClickHouse's DBMS_DEFAULT_BUFFER_SIZE


def block_checksum(block):
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


def compress_blocks(data):
    out = []
    for i in range(0, len(data), BLOCK_SIZE):
        chunk = data[i:i + BLOCK_SIZE]
        payload = lz4.block.compress(chunk, store_size=False)
        block = struct.pack("<BII", METHOD_LZ4, 9 + len(payload), len(chunk)) + payload
        out.append(block_checksum(block) + block)
    return b"".join(out)


def decompress_blocks(data, verify=True):
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 25:
            raise ClickHouseError.make(32, "ATTEMPT_TO_READ_AFTER_EOF", "Cannot read all data: truncated compressed block")
        method, csize, usize = struct.unpack_from("<BII", data, pos + 16)
        block = data[pos + 16:pos + 16 + csize]
        if csize < 9 or len(block) < csize:
            raise ClickHouseError.make(271, "CANNOT_DECOMPRESS", "Cannot decompress: truncated compressed block")
        if verify and data[pos:pos + 16] != block_checksum(block):
            raise ClickHouseError.make(40, "CHECKSUM_DOESNT_MATCH", "Checksum doesn't match: corrupted data")
        payload = block[9:]
        if method == METHOD_LZ4:
            out.append(lz4.block.decompress(payload, uncompressed_size=usize))
        elif method == METHOD_ZSTD and zstd is not None:
            out.append(zstd.decompress(payload))
        elif method == METHOD_NONE:
            out.append(payload)
        else:
            raise ClickHouseError.make(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method: {method:#x}")
        pos += 16 + csize
    return b"".join(out)


# --- Native output for clients that send client_protocol_version --------------
# chdb writes Native as for revision 0 (clickhouse-local has no client). ClickHouse's HTTP handler
# writes it for the URL's `client_protocol_version` (NativeWriter): from revision 1 each block
# starts with its BlockInfo, and from 54454 (DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION) each
# column's type is followed by a has_custom_serialization byte (0: chdb never writes sparse
# columns for revision 0). clickhouse-go's HTTP transport decodes with the revision it sent, so
# the front rewrites chdb's blocks; that needs every column's size, hence the type walker below.

REVISION_WITH_CUSTOM_SERIALIZATION = 54454
FIXED_SIZES = {
    1: "UInt8 Int8 Bool Enum8 Nothing", 2: "UInt16 Int16 Date Enum16 BFloat16",
    4: "UInt32 Int32 Float32 Date32 DateTime IPv4 Time Decimal32",
    8: "UInt64 Int64 Float64 DateTime64 Time64 Decimal64 IntervalNanosecond IntervalMicrosecond "
       "IntervalMillisecond IntervalSecond IntervalMinute IntervalHour IntervalDay IntervalWeek "
       "IntervalMonth IntervalQuarter IntervalYear",
    16: "UInt128 Int128 UUID IPv6 Decimal128", 32: "UInt256 Int256 Decimal256",
}
FIXED_SIZE = {name: size for size, names in FIXED_SIZES.items() for name in names.split()}


def parse_type(text):
    """`Map(LowCardinality(String), Array(Tuple(a UInt8, b String)))` -> (name, [arg types]);
    named tuple elements lose their names, literal arguments (Enum values, time zones, scales)
    are kept as text."""
    text = text.strip()
    if "(" not in text:
        return text, []
    name, inner = text[:text.index("(")].strip(), text[text.index("(") + 1:text.rindex(")")]
    args, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(inner + ","):
        if quote:
            quote = None if c == quote and inner[i - 1] != "\\" else quote
        elif c in "'`\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            args.append(inner[start:i].strip())
            start = i + 1
    if name == "Tuple":  # named elements: `a UInt8` -> `UInt8` (a bare type has no space after its name)
        args = [m.group(2) if (m := re.match(r"(`[^`]*`|\w+)\s+(\S.*)$", a, re.S)) else a for a in args]
    return name, args


class NativeReader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ClickHouseError.make(32, "ATTEMPT_TO_READ_AFTER_EOF", "Cannot read all data in Native block")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def varuint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self):
        return self.take(self.varuint())

    def skip_prefix(self, typ):
        """serializeBinaryBulkStatePrefix: only LowCardinality writes one (its key version)."""
        name, args = parse_type(typ)
        if name == "LowCardinality":
            self.take(8)
        elif name in ("Array", "Nullable", "Map", "Tuple", "SimpleAggregateFunction"):
            for a in (args[1:] if name == "SimpleAggregateFunction" else args):
                self.skip_prefix(a)

    def skip_data(self, typ, rows):
        name, args = parse_type(typ)
        if name in FIXED_SIZE:
            self.take(rows * FIXED_SIZE[name])
        elif name == "Decimal":
            p = int(args[0])
            self.take(rows * (4 if p <= 9 else 8 if p <= 18 else 16 if p <= 38 else 32))
        elif name == "String":
            for _ in range(rows):
                self.take(self.varuint())
        elif name == "FixedString":
            self.take(rows * int(args[0]))
        elif name == "Nullable":
            self.take(rows)
            self.skip_data(args[0], rows)
        elif name in ("Array", "Map"):
            offsets = struct.unpack(f"<{rows}Q", self.take(8 * rows)) if rows else ()
            nested = offsets[-1] if offsets else 0
            for a in ([args[0]] if name == "Array" else args):
                self.skip_data(a, nested)
        elif name == "Tuple":
            for a in args:
                self.skip_data(a, rows)
        elif name == "SimpleAggregateFunction":
            self.skip_data(args[-1], rows)
        elif name == "LowCardinality":
            keys_type = re.sub(r"^Nullable\((.*)\)$", r"\1", args[0])
            done = 0
            while done < rows:  # one or more (dictionary, indexes) chunks
                flags = self.u64()
                if flags & (1 << 9):  # HasAdditionalKeysBit
                    self.skip_data(keys_type, self.u64())
                n = self.u64()
                self.take(n * (1, 2, 4, 8)[flags & 0xFF])
                done += n
        else:
            raise ClickHouseError.make(48, "NOT_IMPLEMENTED", f"chdb_front cannot re-encode Native column type {typ} "
                                       "for client_protocol_version > 0")


def native_for_revision(data, revision):
    """chdb's Native output (revision 0) as ClickHouse writes it for client_protocol_version=revision."""
    if revision <= 0:
        return data
    r, out = NativeReader(data), []
    while r.pos < len(data):
        out.append(b"\x01\x00\x02\xff\xff\xff\xff\x00")  # BlockInfo: is_overflows=0, bucket_num=-1, end
        start = r.pos
        cols, rows = r.varuint(), r.varuint()
        out.append(data[start:r.pos])
        for _ in range(cols):
            start = r.pos
            r.string()
            typ = r.string().decode()
            out.append(data[start:r.pos])
            if revision >= REVISION_WITH_CUSTOM_SERIALIZATION:
                out.append(b"\x00")
            start = r.pos
            if rows:
                r.skip_prefix(typ)
                r.skip_data(typ, rows)
            out.append(data[start:r.pos])
    return b"".join(out)


# --- HTTP Content-Encoding ----------------------------------------------------

DECODERS = {"gzip": gzip.decompress, "deflate": zlib.decompress, "lz4": lz4.frame.decompress,
            "xz": lzma.decompress, "bz2": bz2.decompress}
ENCODERS = {"gzip": gzip.compress, "deflate": zlib.compress, "lz4": lz4.frame.compress,
            "xz": lzma.compress, "bz2": bz2.compress}
if zstd is not None:
    DECODERS["zstd"], ENCODERS["zstd"] = zstd.decompress, zstd.compress
if brotli is not None:
    DECODERS["br"], ENCODERS["br"] = brotli.decompress, brotli.compress


# --- queries ------------------------------------------------------------------

# `INSERT INTO <target> [(cols)] [SETTINGS ...] FORMAT <name>`: group `head` is
# everything before FORMAT. Matched on the query text only, never on the data.
INSERT_FORMAT = re.compile(rb"\s*INSERT\s+INTO\s+(?P<head>.*?)\bFORMAT\s+(?P<fmt>\w+)", re.I | re.S)
SETTINGS_KW = re.compile(rb"\bSETTINGS\b", re.I)
VALUES_OR_SELECT = re.compile(rb"\b(VALUES|SELECT|WITH)\b", re.I)
FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)", re.I)
QUERY_START = re.compile(r"\s*([A-Za-z(]|--|/\*|#)")
READ_ONLY_KW = re.compile(r"\s*(\(\s*)*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b", re.I)


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_str(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_insert(query, data_start):
    """For `INSERT ... FORMAT X<ws>data` return (head, fmt, data) or None.
    `data_start` bounds where the FORMAT clause may be found: the end of the
    `query` URL parameter when the data came in the body."""
    m = INSERT_FORMAT.match(query, 0, data_start)
    if not m or VALUES_OR_SELECT.search(m.group("head")):
        return None
    pos = m.end()
    while pos < len(query) and query[pos] in b" \t\f":
        pos += 1
    if query.startswith(b"\r", pos):
        pos += 1
    if query.startswith(b"\n", pos):
        pos += 1
    return m.group("head"), m.group("fmt").decode(), query[pos:]


def multipart_fields(body, content_type):
    """The (name, value) fields of a multipart/form-data body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.I)
    if not m:
        raise ClickHouseError.make(36, "BAD_ARGUMENTS", "multipart/form-data without a boundary")
    fields = []
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, value = part.partition(b"\r\n\r\n")
        disposition = re.search(rb"(?im)^content-disposition:(.*)$", head)
        name = disposition and re.search(rb'\bname="([^"]*)"', disposition.group(1))
        if not sep or not name:
            raise ClickHouseError.make(36, "BAD_ARGUMENTS", "a multipart/form-data part without a name")
        if re.search(rb"\bfilename=", disposition.group(1)):
            raise ClickHouseError.make(48, "NOT_IMPLEMENTED", "chdb_front does not serve external tables")
        fields.append((name.group(1).decode(), value.removesuffix(b"\r\n").decode()))
    return fields


class Result:
    def __init__(self, body, fmt, summary):
        self.body, self.format, self.summary = body, fmt, summary


class Engine:
    """One chdb session; every query runs under one lock because a query is
    `USE db` + `SET`s + the statement + resets, which must not interleave."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.session = Session(data_dir)
        self.lock = threading.Lock()
        row = self.session.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split("\t")
        self.version, self.timezone = row[0], row[1].strip()

    def close(self):
        with self.lock:
            self.session.close()

    def _q(self, sql, fmt="TabSeparated", params=None):
        try:
            return self.session.query(sql, fmt, params=params or None)
        except Exception as e:  # chdb raises ChdbError/RuntimeError with ClickHouse's text
            raise ClickHouseError(str(e).strip()) from None

    def execute(self, query, data_start, *, database=None, settings=(), params=None,
                default_format=None, readonly=False):
        insert = split_insert(query, data_start)
        if insert is None:
            sql = query.decode("utf-8", errors="replace")
            if not sql.strip():
                raise ClickHouseError.make(62, "SYNTAX_ERROR", "Empty query")
            if not QUERY_START.match(sql):  # chdb silently returns nothing for such garbage
                raise ClickHouseError.make(62, "SYNTAX_ERROR", "Syntax error: failed at position 1: not a query")
            if readonly and not READ_ONLY_KW.match(sql):
                raise ClickHouseError.make(
                    164, "READONLY", "Cannot execute query in readonly mode. For queries over HTTP, method GET "
                    "implies readonly. You should use method POST for modifying queries")
            formats = FORMAT_CLAUSE.findall(sql)
            fmt = formats[-1] if formats else (default_format or "TabSeparated")
        elif readonly:
            raise ClickHouseError.make(164, "READONLY", "Cannot execute query in readonly mode")
        else:
            fmt = default_format or "TabSeparated"
        tmp = None
        with self.lock:
            self._q(f"USE {quote_ident(database or 'default')}")
            applied = []
            try:
                for name, value in settings:
                    self._q(f"SET {quote_ident(name)} = {quote_str(value)}")
                    applied.append(name)
                if insert:
                    head, in_fmt, data = insert
                    fd, tmp = tempfile.mkstemp(suffix=".rows", dir=self.data_dir)  # no .gz etc: no auto-decompression
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    m = SETTINGS_KW.search(head)  # FROM INFILE goes before SETTINGS
                    target, tail = (head[:m.start()], head[m.start():]) if m else (head, b"")
                    sql = (f"INSERT INTO {target.decode()} FROM INFILE {quote_str(tmp)} "
                           f"{tail.decode()} FORMAT {in_fmt}")
                res = self._q(sql, fmt, params)
            finally:
                for name in applied:
                    self._q(f"SET {quote_ident(name)} = DEFAULT")
                if tmp:
                    os.unlink(tmp)
        body = res.bytes()
        summary = {
            "read_rows": res.rows_read(), "read_bytes": res.bytes_read(),
            "written_rows": res.rows_written(), "written_bytes": res.bytes_written(),
            "total_rows_to_read": res.rows_read(), "result_bytes": len(body),
            "elapsed_ns": int(res.elapsed() * 1e9),
        }
        return Result(body, fmt, {k: str(v) for k, v in summary.items()})


def content_type(fmt):
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f.startswith(("rowbinary", "native", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def truthy(value):
    return value not in (None, "", "0", "false", "False")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    # The headers and the body of an answer are two writes: with Nagle's algorithm the second waits
    # for the client's delayed ACK (40 ms on Linux) on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "chdb_front"
    engine = None  # set on the subclass made by ChdbFront
    verbose = False
    password = None  # the password every request must carry, or None to accept any

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("chdb_front: " + (fmt % args) + "\n")

    def do_GET(self):
        self.handle_query(readonly=True)

    def do_POST(self):
        self.handle_query(readonly=False)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def password_given(self, args):
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            return base64.b64decode(auth[6:].strip()).decode(errors="replace").partition(":")[2]
        return self.headers.get("X-ClickHouse-Key") or args.get("password") or ""

    def handle_query(self, readonly):
        url = urlsplit(self.path)
        body = self.read_body()  # always drain it, to keep the connection usable
        pairs = parse_qsl(url.query, keep_blank_values=True)
        args = dict(pairs)
        if url.path in ("/ping", "/replicas_status") or (url.path == "/" and readonly and "query" not in args):
            return self.send(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
        if url.path != "/":
            return self.send(404, b"There is no handle " + url.path.encode() + b"\n")
        query_id = args.get("query_id") or str(uuid.uuid4())
        try:
            if self.password is not None and self.password_given(args) != self.password:
                user = self.headers.get("X-ClickHouse-User") or args.get("user") or "default"
                raise ClickHouseError.make(516, "AUTHENTICATION_FAILED", f"{user}: Authentication failed: "
                                           "password is incorrect, or there is no user with such name")
            encoding = self.headers.get("Content-Encoding", "").strip().lower()
            if body and encoding and encoding != "identity":
                if encoding not in DECODERS:
                    raise ClickHouseError.make(415, "UNSUPPORTED_MEDIA_TYPE", f"Unknown Content-Encoding: {encoding}")
                body = DECODERS[encoding](body)
            if truthy(args.get("decompress")):
                verify = not truthy(args.get("http_native_compression_disable_checksumming_on_decompress"))
                body = decompress_blocks(body, verify)
            if self.headers.get("Content-Type", "").lower().startswith("multipart/form-data"):
                pairs += multipart_fields(body, self.headers["Content-Type"])
                args, body = dict(pairs), b""
            query = args.get("query", "").encode()
            data_start = len(query)
            if query and body:
                query += b"\n" + body
            elif body:
                query, data_start = body, len(body)
            settings = [(k, v) for k, v in pairs
                        if k not in NON_SETTING_PARAMS and k not in HTTP_LAYER_SETTINGS and not k.startswith("param_")]
            params = {k[len("param_"):]: v for k, v in pairs if k.startswith("param_")}
            result = self.engine.execute(
                query, data_start, readonly=readonly, settings=settings, params=params,
                database=args.get("database") or self.headers.get("X-ClickHouse-Database"),
                default_format=args.get("default_format") or self.headers.get("X-ClickHouse-Format"))
        except ClickHouseError as e:
            text = f"{e.text} (version {self.engine.version} (official build))\n".encode()
            return self.send(e.status, text, [
                ("Content-Type", "text/plain; charset=UTF-8"), ("X-ClickHouse-Query-Id", query_id),
                ("X-ClickHouse-Exception-Code", str(e.code))])
        headers = [("Content-Type", content_type(result.format)), ("X-ClickHouse-Format", result.format),
                   ("X-ClickHouse-Query-Id", query_id), ("X-ClickHouse-Timezone", self.engine.timezone),
                   ("X-ClickHouse-Summary", json.dumps(result.summary, separators=(",", ":")))]
        out = result.body
        revision = args.get("client_protocol_version", "")
        if result.format.lower() == "native" and revision.isdigit() and int(revision) > 0:
            try:
                out = native_for_revision(out, int(revision))
            except ClickHouseError as e:
                return self.send(e.status, f"{e.text} (version {self.engine.version} (official build))\n".encode(), [
                    ("Content-Type", "text/plain; charset=UTF-8"), ("X-ClickHouse-Exception-Code", str(e.code))])
        if truthy(args.get("compress")):
            out = compress_blocks(out)
        elif truthy(args.get("enable_http_compression")):
            accepted = [e.split(";")[0].strip().lower() for e in self.headers.get("Accept-Encoding", "").split(",")]
            chosen = next((e for e in accepted if e in ENCODERS), None)
            if chosen:
                out = ENCODERS[chosen](out)
                headers.append(("Content-Encoding", chosen))
        self.send(200, out, headers)


class ChdbFront:
    """The front, serving on a background thread of this process."""

    def __init__(self, data_dir, host="127.0.0.1", port=0, verbose=False, password=None, tls=None):
        """tls: (certificate file, key file) to serve https."""
        self.engine = Engine(data_dir)
        handler = type("BoundHandler", (Handler,), {"engine": self.engine, "verbose": verbose, "password": password})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host, self.port = host, self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="chdb_front", daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.engine.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    ap.add_argument("--data", required=True, help="chdb data directory (tables persist here)")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    ap.add_argument("--password", help="the password every request must carry")
    ap.add_argument("--tls-cert", help="PEM certificate (chain) to serve https")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    a = ap.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    os.makedirs(a.data, exist_ok=True)
    front = ChdbFront(os.path.abspath(a.data), a.host, a.port, a.verbose, a.password,
                      (a.tls_cert, a.tls_key) if a.tls_cert else None)
    print(front.port, flush=True)
    try:
        front.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        front.close()


if __name__ == "__main__":
    main()
