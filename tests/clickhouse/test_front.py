"""Tests of chdb_front.py, the test-only ClickHouse HTTP front over chdb.

The front is started as a subprocess on a free port (`--port 0`, port on
stdout's first line) and spoken to by the official Python client
(clickhouse-connect) and, by hand, the way the Rust `clickhouse` crate speaks
(RowBinary, LZ4 compressed blocks, chunked bodies, compress=1 responses).
"""

import datetime as dt
import http.client
import os
import re
import struct
import sys
import urllib.parse

import clickhouse_connect
import lz4.block
import pytest
import requests
from clickhouse_cityhash.cityhash import CityHash128
from clickhouse_connect.driver.exceptions import DatabaseError

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chdb_front  # noqa: E402  (for its block codec, checked against the crate's test vector)
from conftest import start_front, stop_process  # noqa: E402

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="module")
def front(data_dir):
    proc, port = start_front(data_dir)
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


def connect(front, **kw):
    url = urllib.parse.urlsplit(front)
    return clickhouse_connect.get_client(host=url.hostname, port=url.port, username="default", password="", **kw)


# --- plain HTTP ----------------------------------------------------------------

def test_ping(front):
    for path in ("/", "/ping"):
        r = requests.get(front + path)
        assert (r.status_code, r.text) == (200, "Ok.\n")


def test_query_in_url_in_body_and_split(front):
    assert requests.get(front, params={"query": "SELECT 1"}).text == "1\n"
    assert requests.post(front, data=b"SELECT 2").text == "2\n"
    # the beginning in `query`, the rest in the body: joined by a line feed
    assert requests.post(front, params={"query": "SELECT"}, data=b"3").text == "3\n"
    r = requests.post(front, params={"default_format": "JSONEachRow"}, data=b"SELECT 4 AS x")
    assert (r.text, r.headers["X-ClickHouse-Format"]) == ('{"x":4}\n', "JSONEachRow")
    # a FORMAT clause wins over default_format
    r = requests.post(front, params={"default_format": "JSONEachRow"}, data=b"SELECT 5 AS x FORMAT CSVWithNames")
    assert (r.text, r.headers["X-ClickHouse-Format"]) == ('"x"\n5\n', "CSVWithNames")


def test_settings_and_query_parameters(front):
    r = requests.post(front, params={"max_threads": "3", "param_x": "a\\tb"},
                      data=b"SELECT getSetting('max_threads'), {x:String} = 'a\tb'")
    assert r.text == "3\t1\n"
    # applied for that query only
    assert requests.post(front, data=b"SELECT getSetting('max_threads') = 3").text == "0\n"
    r = requests.post(front, params={"no_such_setting": "1"}, data=b"SELECT 1")
    assert r.status_code == 404 and r.headers["X-ClickHouse-Exception-Code"] == "115"


def test_multipart_form_fields_are_parameters(front):
    # As the Rust crate (0.15) sends a query with server-side parameters.
    boundary = "clickhouse-rs-boundary-x"
    fields = [("query", "SELECT {ids:Array(String)} AS ids, {n:Int64} + 1 AS n"), ("param_ids", "['a\\'b','c']"),
              ("param_n", "41")]
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields) + f"--{boundary}--\r\n"
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = requests.post(front, params={"default_format": "JSONEachRow"}, data=body.encode(), headers=headers)
    assert r.json() == {"ids": ["a'b", "c"], "n": 42}
    # an external table (a file part) is not served
    files = {"t": ("t.tsv", b"1\n")}
    r = requests.post(front, params={"query": "SELECT 1"}, files=files)
    assert r.status_code == 501 and r.headers["X-ClickHouse-Exception-Code"] == "48"


def test_get_is_readonly(front):
    r = requests.get(front, params={"query": "CREATE DATABASE nope"})
    assert r.headers["X-ClickHouse-Exception-Code"] == "164" and "READONLY" in r.text


def test_database_param_and_header(front):
    requests.post(front, data=b"CREATE DATABASE IF NOT EXISTS dbp").raise_for_status()
    assert requests.post(front, params={"database": "dbp"}, data=b"SELECT currentDatabase()").text == "dbp\n"
    assert requests.post(front, headers={"X-ClickHouse-Database": "dbp"}, data=b"SELECT currentDatabase()").text == "dbp\n"
    assert requests.post(front, data=b"SELECT currentDatabase()").text == "default\n"
    r = requests.post(front, params={"database": "nodb"}, data=b"SELECT 1")
    assert r.status_code == 404 and r.headers["X-ClickHouse-Exception-Code"] == "81"


def test_syntax_error_in_clickhouse_form(front):
    r = requests.post(front, data=b"SELEC 1")
    assert r.status_code == 400
    assert r.headers["X-ClickHouse-Exception-Code"] == "62"
    assert r.text.startswith("Code: 62. DB::Exception: Syntax error")
    assert re.search(r"\(SYNTAX_ERROR\) \(version [\d.]+ \(official build\)\)\n$", r.text)


def test_http_compression_both_ways(front):
    import gzip
    r = requests.post(front, params={"enable_http_compression": "1"},
                      headers={"Accept-Encoding": "gzip", "Content-Encoding": "gzip"},
                      data=gzip.compress(b"SELECT number FROM numbers(3)"), stream=True)
    assert r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(r.raw.read()) == b"0\n1\n2\n"
    # an undecoded body is not a query
    r = requests.post(front, data=gzip.compress(b"SELECT 1"))
    assert r.status_code == 400 and r.headers["X-ClickHouse-Exception-Code"] == "62"


# --- clickhouse-connect (Native over HTTP) -------------------------------------

ROWS = [
    (dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "checkout", {"http.method": "GET", "k": ""}, ["a", "b"], 1),
    (dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "", {}, [], 2**64 - 1),
    (dt.datetime(2026, 7, 1, tzinfo=UTC), "ünïcødé ✓", {"x": "tab\there\nnewline"}, ["", "'quote'"], 0),
]


@pytest.mark.parametrize("compress", [False, "lz4", "zstd", "gzip"])
def test_clickhouse_connect_roundtrip(front, compress):
    client = connect(front, compress=compress)
    db = f"cc_{compress or 'plain'}"
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(f"""CREATE TABLE {db}.spans (
        ts DateTime64(9, 'UTC'), service LowCardinality(String),
        attrs Map(LowCardinality(String), String), tags Array(String), n UInt64
    ) ENGINE = MergeTree ORDER BY n""")
    summary = client.insert(f"{db}.spans", ROWS, column_names=["ts", "service", "attrs", "tags", "n"])
    assert summary.written_rows == len(ROWS)
    got = client.query(f"SELECT ts, service, attrs, tags, n FROM {db}.spans ORDER BY n").result_rows
    # clickhouse-connect returns naive datetimes when the column's zone is the server's (UTC)
    got = [(r[0].replace(tzinfo=UTC), *r[1:]) for r in got]
    assert got == sorted(ROWS, key=lambda r: r[4])
    # nanoseconds survive (the Python datetime has only micros, so check in SQL)
    client.command(f"INSERT INTO {db}.spans (ts, n) VALUES ('2026-01-01 00:00:00.123456789', 7)")
    assert client.query(f"SELECT toUnixTimestamp64Nano(ts) FROM {db}.spans WHERE n = 7").result_rows == [
        (1767225600123456789,)]


def test_clickhouse_connect_database_and_errors(front):
    client = connect(front, database="system")
    assert client.command("SELECT currentDatabase()") == "system"
    assert client.query("SELECT name FROM databases WHERE name = 'system'").result_rows == [("system",)]
    with pytest.raises(DatabaseError) as e:
        client.query("SELEC 1")
    assert "Code: 62" in str(e.value) and "SYNTAX_ERROR" in str(e.value)
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        client.query("SELECT * FROM no_such_table")


# --- client_protocol_version (clickhouse-go's HTTP transport, clickhouse-connect) ---

def native(front, sql, revision=None):
    params = {"default_format": "Native"}
    if revision is not None:
        params["client_protocol_version"] = str(revision)
    r = requests.post(front, params=params, data=sql.encode())
    assert r.status_code == 200, r.text
    return r.content


BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"  # is_overflows=0, bucket_num=-1, end


def test_native_for_client_protocol_version(front):
    sql = "SELECT 1 AS x, 'ab' AS s"
    plain = b"\x02\x01" + b"\x01x\x05UInt8\x01" + b"\x01s\x06String\x02ab"
    assert native(front, sql) == plain == native(front, sql, 0)
    # below 54454 (DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION): block info only
    assert native(front, sql, 54405) == BLOCK_INFO + plain
    # clickhouse-go sends 54460: also a has_custom_serialization byte (0) after each column type
    assert native(front, sql, 54460) == BLOCK_INFO + b"\x02\x01" + b"\x01x\x05UInt8\x00\x01" + b"\x01s\x06String\x00\x02ab"
    # clickhouse-go's handshake query, and every block of a multi-block result gets its BlockInfo
    hello = native(front, "SELECT displayName(), version(), revision(), timezone()", 54460)
    assert hello.startswith(BLOCK_INFO + b"\x04\x01\x0ddisplayName()\x06String\x00")
    many = native(front, "SELECT number FROM numbers(10) SETTINGS max_block_size = 3", 54460)
    assert many.count(BLOCK_INFO + b"\x01") >= 4 and many.startswith(BLOCK_INFO)


def test_native_revision_walks_nested_types(front):
    """The front must know each column's size to place the per-column byte; clickhouse-connect
    (which probes client_protocol_version=54405 and then expects BlockInfo) reads the result."""
    client = connect(front)
    assert client.protocol_version == 54405
    sql = """SELECT number AS n,
        map(toLowCardinality(toString(number)), 'v', 'k', repeat('x', number)) AS m,
        [NULL, toString(number)]::Array(Nullable(String)) AS a,
        CAST((toUInt8(number), 'b'), 'Tuple(i UInt8, s String)') AS t,
        toLowCardinality(if(number % 2, 'odd', 'even')) AS lc,
        toFixedString('ab', 2) AS f, toDecimal64(number, 3) AS d,
        toDateTime64('2026-01-02 03:04:05.123456789', 9, 'UTC') AS ts,
        toUUID('00000000-0000-0000-0000-00000000000a') AS u, [[1, 2], []]::Array(Array(UInt16)) AS aa
        FROM numbers(5) ORDER BY n"""
    rows = client.query(sql).result_rows
    assert len(rows) == 5
    n, m, a, t, lc, f, d, ts, u, aa = rows[3]
    assert (n, m, a, t, lc, f, str(d), aa) == (3, {"3": "v", "k": "xxx"}, [None, "3"], {"i": 3, "s": "b"}, "odd", b"ab", "3.000", [[1, 2], []])
    assert str(u) == "00000000-0000-0000-0000-00000000000a"
    # the same bytes at 54460 are those at 54405 plus one 0 byte after each of the 10 column types
    assert len(native(front, sql, 54460)) == len(native(front, sql, 54405)) + 10
    r = requests.post(front, params={"default_format": "Native", "client_protocol_version": "54460"},
                      data=b"SELECT 1::Dynamic AS d")
    assert r.status_code == 501 and "cannot re-encode" in r.text


# --- as the Rust `clickhouse` crate does ---------------------------------------

def checksum(block):
    """ClickHouse's block checksum: CityHash128 v1.0.2, high u64 first, both LE."""
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & (2**64 - 1))


def lz4_blocks(data):
    block = struct.pack("<BII", 0x82, 0, len(data)) + lz4.block.compress(data, store_size=False)
    block = block[:1] + struct.pack("<I", len(block)) + block[5:]
    return checksum(block) + block


def read_blocks(data):
    out, pos = b"", 0
    while pos < len(data):
        method, csize, usize = struct.unpack_from("<BII", data, pos + 16)
        block = data[pos + 16:pos + 16 + csize]
        assert method == 0x82 and data[pos:pos + 16] == checksum(block)  # the crate checks both
        out += lz4.block.decompress(block[9:], uncompressed_size=usize)
        pos += 16 + csize
    return out


def test_block_codec_matches_the_crate():
    # clickhouse-rs src/compression/lz4.rs, tests it_compresses / it_decompresses
    source = bytes([1, 0, 2, 255, 255, 255, 255, 0, 1, 1, 1, 115, 6, 83, 116, 114, 105, 110, 103, 3, 97, 98, 99])
    expected = bytes([245, 5, 222, 235, 225, 158, 59, 108, 225, 31, 65, 215, 66, 66, 36, 92, 130, 34, 0, 0, 0,
                      23, 0, 0, 0, 240, 8, 1, 0, 2, 255, 255, 255, 255, 0, 1, 1, 1, 115, 6, 83, 116, 114, 105,
                      110, 103, 3, 97, 98, 99])
    assert lz4_blocks(source) == expected
    assert chdb_front.compress_blocks(source) == expected
    assert chdb_front.decompress_blocks(expected) == source
    big = os.urandom(3 << 20)  # several 1 MiB blocks
    assert read_blocks(chdb_front.compress_blocks(big)) == big


def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def rb_str(s):
    b = s.encode()
    return varint(len(b)) + b


def rb_row(ts_ns, service, attrs, tags, n):
    return (struct.pack("<q", ts_ns) + rb_str(service)
            + varint(len(attrs)) + b"".join(rb_str(k) + rb_str(v) for k, v in attrs.items())
            + varint(len(tags)) + b"".join(rb_str(t) for t in tags) + struct.pack("<Q", n))


def parse_rb_row(buf, pos):
    def s():
        nonlocal pos
        n, shift = 0, 0
        while True:
            byte = buf[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        return n

    def string():
        nonlocal pos
        n = s()
        pos += n
        return buf[pos - n:pos].decode()

    (ts,) = struct.unpack_from("<q", buf, pos)
    pos += 8
    service = string()
    attrs = {string(): string() for _ in range(s())}
    tags = [string() for _ in range(s())]
    (n,) = struct.unpack_from("<Q", buf, pos)
    return (ts, service, attrs, tags, n), pos + 8


RB_ROWS = [
    (1767225600123456789, "checkout", {"http.method": "GET", "net.peer": "10.0.0.1"}, ["a", "b"], 1),
    (-1, "", {}, [], 2),  # 1969-12-31 23:59:59.999999999
    (1800000000000000001, "ünïcødé", {"k": "v\n\t"}, [""], 3),
]
COLUMNS = "ts DateTime64(9, 'UTC'), service LowCardinality(String), attrs Map(LowCardinality(String), String), tags Array(String), n UInt64"


def crate_post(front, params, body, chunked=False):
    """POST as hyper does in the crate: X-ClickHouse-User/Key, chunked body for inserts."""
    url = urllib.parse.urlsplit(front)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": "", "User-Agent": "clickhouse-rs/0.15.1 (test)"}
    if chunked:  # the crate streams inserts as chunks of compressed blocks
        chunks = [body[i:i + 7] for i in range(0, len(body), 7)]
        conn.request("POST", "/?" + urllib.parse.urlencode(params), body=iter(chunks), headers=headers,
                     encode_chunked=True)
    else:
        conn.request("POST", "/?" + urllib.parse.urlencode(params), body=body, headers=headers)
    r = conn.getresponse()
    result = (r.status, dict(r.getheaders()), r.read())
    conn.close()
    return result


@pytest.mark.parametrize("validation", [True, False])
def test_rowbinary_like_the_rust_crate(front, validation):
    db = "rs_v" if validation else "rs_nv"
    for sql in (f"CREATE DATABASE IF NOT EXISTS {db}", f"CREATE TABLE {db}.spans ({COLUMNS}) ENGINE = MergeTree ORDER BY n"):
        assert crate_post(front, {}, sql.encode())[0] == 200
    fields = "`ts`,`service`,`attrs`,`tags`,`n`"
    rows = b"".join(rb_row(*r) for r in RB_ROWS)
    if validation:
        # Client::insert with validation (the default): DESCRIBE the table first...
        status, headers, body = crate_post(front, {"default_format": "RowBinaryWithNamesAndTypes", "database": db,
                                                   "compress": "1", "describe_include_subcolumns": "0"},
                                           b"DESCRIBE TABLE spans")
        assert status == 200 and b"Map(LowCardinality(String), String)" in read_blocks(body)
        # ...then send RowBinaryWithNamesAndTypes: a header of names and types, then rows
        names = ["ts", "service", "attrs", "tags", "n"]
        types = ["DateTime64(9, 'UTC')", "LowCardinality(String)", "Map(LowCardinality(String), String)",
                 "Array(String)", "UInt64"]
        rows = varint(5) + b"".join(map(rb_str, names)) + b"".join(map(rb_str, types)) + rows
        fmt = "RowBinaryWithNamesAndTypes"
    else:
        fmt = "RowBinary"
    # Insert::new: "INSERT INTO {table}({fields}) FORMAT {format}"; params database, query, decompress=1
    status, headers, body = crate_post(front, {"database": db, "query": f"INSERT INTO spans({fields}) FORMAT {fmt}",
                                               "decompress": "1", "input_format_binary_read_json_as_string": "1"},
                                       lz4_blocks(rows), chunked=True)
    assert (status, body) == (200, b""), body
    assert headers.get("X-ClickHouse-Exception-Code") is None
    assert '"written_rows":"3"' in headers["X-ClickHouse-Summary"]
    # Query::fetch: SQL in the body; default_format, database, compress=1 in the URL
    status, headers, body = crate_post(front, {"default_format": "RowBinary", "database": db, "compress": "1"},
                                       f"SELECT {fields} FROM spans ORDER BY n".encode())
    assert status == 200 and headers["X-ClickHouse-Format"] == "RowBinary"
    data, pos, got = read_blocks(body), 0, []
    while pos < len(data):
        row, pos = parse_rb_row(data, pos)
        got.append(row)
    assert got == RB_ROWS


def test_crate_error_paths(front):
    # errors are plain text even with compress=1; the crate falls back to the raw body
    status, headers, body = crate_post(front, {"default_format": "RowBinary", "compress": "1"}, b"SELECT * FROM nope.nope")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "81"
    assert body.startswith(b"Code: 81. DB::Exception: Database nope does not exist")
    # a corrupted compressed block is refused, as ClickHouse does
    block = bytearray(lz4_blocks(struct.pack("<I", 1)))
    block[0] ^= 1
    requests.post(front, data=b"CREATE TABLE IF NOT EXISTS default.u (x UInt32) ENGINE = Memory").raise_for_status()
    status, headers, body = crate_post(front, {"query": "INSERT INTO default.u(`x`) FORMAT RowBinary",
                                               "decompress": "1"}, bytes(block), chunked=True)
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "40", body


def test_tables_persist_across_restarts(tmp_path):
    proc, port = start_front(tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        requests.post(url, data=b"CREATE TABLE keep (x UInt8) ENGINE = MergeTree ORDER BY x").raise_for_status()
        requests.post(url, params={"query": "INSERT INTO keep FORMAT CSV"}, data=b"1\n2\n").raise_for_status()
    finally:
        stop_process(proc)
    proc, port = start_front(tmp_path)
    try:
        assert requests.get(f"http://127.0.0.1:{port}", params={"query": "SELECT sum(x) FROM keep"}).text == "3\n"
    finally:
        stop_process(proc)
