#!/usr/bin/env python3
"""GCS XML-API adapter in front of fake-gcs-server (standard library only).

Why this exists: object_store's GCP client (0.14) writes through the GCS *XML*
API (PUT object, S3-style multipart, x-goog-copy-source), while
fake-gcs-server only implements the JSON API for writes (upstream issue
fsouza/fake-gcs-server#331).  This server takes the XML calls object_store
makes and performs them with fake-gcs-server's JSON API.  Everything else is
passed through unchanged.

fake-gcs-server 1.54 quirks handled here (each was observed, not assumed):
  * its XML read routes (GET/HEAD/DELETE /bucket/object, GET /bucket?list-type=2)
    only match when Host is its "public host" -> we send Host: storage.googleapis.com;
  * it ignores ifGenerationMatch on every write -> we enforce
    x-goog-if-generation-match ourselves, under a per-key lock;
  * its XML list ignores start-after / max-keys / continuation-token and
    returns unquoted ETags (GET/HEAD quote them) -> we rebuild the list;
  * it ignores If-Match / If-None-Match / If-(Un)Modified-Since on GET.

Multipart parts are kept on disk under --state-dir, not in memory.

Usage: gcs_xml_adapter.py --port P --upstream http://127.0.0.1:Q --state-dir DIR
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import threading
import traceback
import uuid
import xml.etree.ElementTree as ET
from email.utils import formatdate, parsedate_to_datetime
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

CHUNK = 1 << 20
MIN_PART = 5 * 1024 * 1024  # GCS (like S3) rejects non-final parts below 5 MiB
PUBLIC_HOST = "storage.googleapis.com"
# First path segments that belong to fake-gcs-server's JSON/internal API.
JSON_PREFIXES = {"storage", "upload", "download", "batch", "_internal"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "te",
              "trailer", "upgrade", "proxy-connection"}
# Request headers that become object attributes (JSON field names).
ATTR_HEADERS = {"cache-control": "cacheControl", "content-disposition": "contentDisposition",
                "content-language": "contentLanguage", "content-encoding": "contentEncoding",
                "x-goog-storage-class": "storageClass"}

UPSTREAM = ("127.0.0.1", 4443)
UPLOADS = "/tmp/gcs-xml-adapter-uploads"
# Striped locks: every write to (bucket, name) takes its stripe so that a
# precondition check and the write that follows are atomic w.r.t. other writes.
LOCKS = [threading.Lock() for _ in range(64)]


def lock_for(bucket, name):
    return LOCKS[hash((bucket, name)) % len(LOCKS)]


class UpstreamError(Exception):
    def __init__(self, status, body):
        super().__init__(f"upstream {status}: {body[:200]!r}")
        self.status = status


class Reader:
    """File-like over a list of (file, length) segments, read in order.

    Used both for a request body (exactly Content-Length bytes of rfile) and
    for the concatenation of multipart parts, so nothing is loaded whole."""

    def __init__(self, segments):
        self.segments = list(segments)
        self.md5 = hashlib.md5()

    def read(self, size=-1):
        while self.segments and self.segments[0][1] == 0:
            self.segments.pop(0)
        if not self.segments:
            return b""
        f, left = self.segments[0]
        data = f.read(min(left, CHUNK, size if size and size > 0 else CHUNK))
        if not data:
            raise IOError("short read: client closed the connection")
        self.segments[0] = (f, left - len(data))
        self.md5.update(data)
        return data

    def readall(self):
        return b"".join(iter(lambda: self.read(CHUNK), b""))


def upstream(method, path, body=None, headers=None, length=None):
    conn = http.client.HTTPConnection(*UPSTREAM, timeout=300, blocksize=CHUNK)
    hdrs = {**(headers or {}), "Host": PUBLIC_HOST}
    if length is not None:
        hdrs["Content-Length"] = str(length)
    conn.request(method, path, body=body, headers=hdrs)
    return conn, conn.getresponse()


def json_call(method, path, body=None, headers=None, length=None):
    """JSON API call; returns the decoded object or None for 404."""
    if isinstance(body, bytes):
        length = len(body)
    conn, resp = upstream(method, path, body, headers, length)
    data = resp.read()
    conn.close()
    if resp.status == 404:
        return None
    if resp.status >= 300:
        raise UpstreamError(resp.status, data)
    return json.loads(data) if data.strip() else {}


def obj_path(bucket, name):
    return f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"


def etag_of(obj):
    # Same form fake-gcs-server's XML GET/HEAD use, so put/head/list agree.
    return f'"{obj["etag"]}"'


def upload(bucket, name, body, length, headers):
    """Store an object through the JSON media upload, then set attributes."""
    headers = {k.lower(): v for k, v in headers.items()}  # also a plain dict from meta.json
    ctype = headers.get("content-type") or "application/octet-stream"
    # Only Content-Type is forwarded: fake-gcs-server would gunzip a body sent
    # with Content-Encoding: gzip, but here that header is an attribute.
    obj = json_call("POST", f"/upload/storage/v1/b/{quote(bucket, safe='')}/o?uploadType=media"
                    f"&name={quote(name, safe='')}", body, {"Content-Type": ctype}, length)
    if obj is None:
        raise UpstreamError(404, b"NoSuchBucket")
    patch = {field: headers[h] for h, field in ATTR_HEADERS.items() if headers.get(h)}
    meta = {k[len("x-goog-meta-"):]: v for k, v in headers.items() if k.startswith("x-goog-meta-")}
    if meta:
        patch["metadata"] = meta
    if patch:
        obj = json_call("PATCH", obj_path(bucket, name), json.dumps(patch).encode(),
                        {"Content-Type": "application/json"})
    return obj


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as reqwest expects
    # Headers and body go out in separate writes: without TCP_NODELAY each
    # response stalls ~40 ms on Nagle + delayed ACK.
    disable_nagle_algorithm = True

    # ---------- plumbing ----------
    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def xml_reply(self, status, xml, headers=None):
        body = ('<?xml version="1.0" encoding="UTF-8"?>' + xml).encode()
        self.reply(status, body, {"Content-Type": "application/xml", **(headers or {})})

    def error(self, status, code, msg=""):
        self.xml_reply(status, f"<Error><Code>{code}</Code><Message>{escape(msg)}</Message></Error>")

    def body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise UpstreamError(411, b"chunked request bodies are not supported")
        return Reader([(self.rfile, int(self.headers.get("Content-Length") or 0))])

    def route(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        seg = u.path.lstrip("/").split("/", 1)
        if not seg[0] or seg[0] in JSON_PREFIXES:
            return None, None, q
        return unquote(seg[0]), (unquote(seg[1]) if len(seg) > 1 and seg[1] else None), q

    def dispatch(self, fn, *args):
        try:
            fn(*args)
        except UpstreamError as e:
            self.close_connection = True  # the request body may be unread
            codes = {404: "NoSuchKey", 412: "PreconditionFailed", 411: "MissingContentLength"}
            self.error(e.status, codes.get(e.status, "InternalError"), str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # never let a bug look like a hung server
            traceback.print_exc()
            self.close_connection = True
            self.error(500, "InternalError", repr(e))

    def proxy(self):
        """Forward the request unchanged (but for Host) and relay the answer."""
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        length = self.headers.get("Content-Length")
        body = self.body() if length else None
        conn, resp = upstream(self.command, self.path, body, hdrs)
        try:
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            if resp.getheader("Content-Length") is None and self.command != "HEAD":
                data = resp.read()  # upstream chunked: small JSON answers only
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.end_headers()
            if self.command != "HEAD":
                while chunk := resp.read(CHUNK):
                    self.wfile.write(chunk)
        finally:
            conn.close()

    def check_generation(self, bucket, name):
        """x-goog-if-generation-match: 0 = must not exist, N = must be generation N."""
        want = self.headers.get("x-goog-if-generation-match")
        if want is None:
            return True
        cur = json_call("GET", obj_path(bucket, name))
        return want.strip() == (cur["generation"] if cur else "0")

    # ---------- verbs ----------
    def do_GET(self):
        bucket, name, q = self.route()
        if bucket and name is None and q.get("list-type") == "2":
            return self.dispatch(self.list_objects, bucket, q)
        if bucket and name and self.conditional_headers():
            return self.dispatch(self.conditional_get, bucket, name)
        self.dispatch(self.proxy)

    do_HEAD = do_GET

    def do_PUT(self):
        bucket, name, q = self.route()
        if not (bucket and name):
            return self.dispatch(self.proxy)
        if "uploadId" in q:
            return self.dispatch(self.put_part, bucket, name, q)
        if "x-goog-copy-source" in self.headers:
            return self.dispatch(self.copy, bucket, name)
        self.dispatch(self.put_object, bucket, name)

    def do_POST(self):
        bucket, name, q = self.route()
        if bucket and name and "uploads" in q:
            return self.dispatch(self.initiate, bucket, name)
        if bucket and name and "uploadId" in q:
            return self.dispatch(self.complete, bucket, name, q["uploadId"])
        self.dispatch(self.proxy)

    def do_DELETE(self):
        bucket, name, q = self.route()
        if bucket and name and "uploadId" in q:
            return self.dispatch(self.abort, q["uploadId"])
        with lock_for(bucket, name):  # a delete is a write too
            self.dispatch(self.proxy)

    do_PATCH = lambda self: self.dispatch(self.proxy)  # noqa: E731 (JSON API)

    # ---------- XML API operations ----------
    def put_object(self, bucket, name):
        body, length = self.body(), int(self.headers.get("Content-Length") or 0)
        with lock_for(bucket, name):
            if not self.check_generation(bucket, name):
                body.readall()  # consume it: keeps the keep-alive connection usable
                return self.error(412, "PreconditionFailed", "x-goog-if-generation-match failed")
            obj = upload(bucket, name, body, length, self.headers)
        self.reply(200, b"", {"ETag": etag_of(obj), "x-goog-generation": obj["generation"],
                              "x-goog-metageneration": obj.get("metageneration", "1")})

    def copy(self, bucket, name):
        src_bucket, _, src_name = self.headers["x-goog-copy-source"].lstrip("/").partition("/")
        src_bucket, src_name = unquote(src_bucket), unquote(src_name)
        with lock_for(bucket, name):
            # GCS reports a missing source (404) before a failed precondition.
            if json_call("GET", obj_path(src_bucket, src_name)) is None:
                return self.error(404, "NoSuchKey", f"copy source {src_bucket}/{src_name}")
            if not self.check_generation(bucket, name):
                return self.error(412, "PreconditionFailed", "x-goog-if-generation-match failed")
            obj = json_call("POST", f"{obj_path(src_bucket, src_name)}/copyTo"
                            f"/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}", b"")
        if obj is None:
            return self.error(404, "NoSuchKey", f"copy source {src_bucket}/{src_name} not found")
        self.xml_reply(200, f"<CopyObjectResult><LastModified>{obj['updated']}</LastModified>"
                            f"<ETag>{escape(etag_of(obj))}</ETag></CopyObjectResult>",
                       {"ETag": etag_of(obj), "x-goog-generation": obj["generation"]})

    def upload_dir(self, upload_id):
        d = os.path.join(UPLOADS, os.path.basename(upload_id))
        return d if upload_id and os.path.isdir(d) else None

    def initiate(self, bucket, name):
        upload_id = uuid.uuid4().hex
        d = os.path.join(UPLOADS, upload_id)
        os.makedirs(d)
        # Attributes sent at initiate apply to the final object.
        keep = {k: v for k, v in self.headers.items()
                if k.lower() in ATTR_HEADERS or k.lower() in ("content-type",)
                or k.lower().startswith("x-goog-meta-")}
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"bucket": bucket, "name": name, "headers": keep}, f)
        self.xml_reply(200, f"<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
                            f"<Key>{escape(name)}</Key><UploadId>{upload_id}</UploadId>"
                            "</InitiateMultipartUploadResult>")

    def put_part(self, bucket, name, q):
        d = self.upload_dir(q["uploadId"])
        body = self.body()
        number = int(q.get("partNumber", "0"))
        if d is None or not 1 <= number <= 10000:
            body.readall()
            return self.error(404 if d is None else 400,
                              "NoSuchUpload" if d is None else "InvalidArgument", q["uploadId"])
        tmp = os.path.join(d, f"{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            while chunk := body.read(CHUNK):
                f.write(chunk)
        # The part's ETag (its MD5) is in its file name: complete() then finds
        # exactly the data the client was told about, even after retried parts.
        os.replace(tmp, os.path.join(d, f"{number:05d}.{body.md5.hexdigest()}.part"))
        self.reply(200, b"", {"ETag": f'"{body.md5.hexdigest()}"'})

    def complete(self, bucket, name, upload_id):
        d = self.upload_dir(upload_id)
        xml = self.body().readall()
        if d is None:
            return self.error(404, "NoSuchUpload", upload_id)
        done = os.path.join(d, "done.json")
        with lock_for(bucket, name):
            if not os.path.exists(done):  # a retried complete gets the first result
                parts = [(int(p.findtext("PartNumber")), p.findtext("ETag").strip())
                         for p in ET.fromstring(xml).iter("Part")]
                if not parts or [n for n, _ in parts] != sorted({n for n, _ in parts}):
                    return self.error(400, "InvalidPartOrder", "parts must be ascending")
                files = []
                for i, (n, etag) in enumerate(parts):
                    path = os.path.join(d, f"{n:05d}.{os.path.basename(etag.strip(chr(34)))}.part")
                    if not os.path.exists(path):
                        return self.error(400, "InvalidPart", f"part {n} {etag} was not uploaded")
                    size = os.path.getsize(path)
                    if size < MIN_PART and i < len(parts) - 1:
                        return self.error(400, "EntityTooSmall", f"part {n} is {size} bytes")
                    files.append((path, size))
                with open(os.path.join(d, "meta.json")) as f:
                    headers = json.load(f)["headers"]
                handles = [open(p, "rb") for p, _ in files]
                try:
                    total = sum(s for _, s in files)
                    obj = upload(bucket, name, Reader(zip(handles, (s for _, s in files))),
                                 total, headers)
                finally:
                    for h in handles:
                        h.close()
                with open(done + ".tmp", "w") as f:
                    json.dump(obj, f)
                os.replace(done + ".tmp", done)
                for p in os.listdir(d):
                    if p.endswith(".part"):
                        os.remove(os.path.join(d, p))
            with open(done) as f:
                obj = json.load(f)
        self.xml_reply(200, f"<CompleteMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
                            f"<Key>{escape(name)}</Key><ETag>{escape(etag_of(obj))}</ETag>"
                            "</CompleteMultipartUploadResult>",
                       {"x-goog-generation": obj["generation"]})

    def abort(self, upload_id):
        d = self.upload_dir(upload_id)
        if d:
            shutil.rmtree(d, ignore_errors=True)
        self.reply(204)  # idempotent: a retried abort must not fail

    def list_objects(self, bucket, q):
        """ListObjectsV2: upstream lists prefix/delimiter; we page and quote ETags."""
        sub = "&".join(f"{k}={quote(q[k], safe='')}" for k in ("prefix", "delimiter") if k in q)
        conn, resp = upstream("GET", f"/{quote(bucket, safe='')}?list-type=2&{sub}")
        data = resp.read()
        conn.close()
        if resp.status != 200:
            raise UpstreamError(resp.status, data)
        root = ET.fromstring(data)
        start = max(q.get("start-after", ""), q.get("continuation-token", ""))
        entries = [(c.findtext("Key"), c) for c in root.iter("Contents")]
        entries += [(p.findtext("Prefix"), None) for p in root.iter("CommonPrefixes")]
        entries = sorted((e for e in entries if e[0] > start), key=lambda e: e[0])
        max_keys = int(q.get("max-keys") or 1000)
        page, truncated = entries[:max_keys], len(entries) > max_keys
        out = [f"<ListBucketResult><Name>{escape(bucket)}</Name>"
               f"<Prefix>{escape(q.get('prefix', ''))}</Prefix><KeyCount>{len(page)}</KeyCount>"
               f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>"]
        if truncated:
            out.append(f"<NextContinuationToken>{escape(page[-1][0])}</NextContinuationToken>")
        for key, c in page:
            if c is None:
                out.append(f"<CommonPrefixes><Prefix>{escape(key)}</Prefix></CommonPrefixes>")
                continue
            etag = c.findtext("ETag") or ""
            etag = etag if etag.startswith('"') else f'"{etag}"'
            out.append(f"<Contents><Key>{escape(key)}</Key>"
                       f"<LastModified>{c.findtext('LastModified')}</LastModified>"
                       f"<ETag>{escape(etag)}</ETag><Size>{c.findtext('Size')}</Size></Contents>")
        out.append("</ListBucketResult>")
        self.xml_reply(200, "".join(out))

    def conditional_headers(self):
        return any(h in self.headers for h in
                   ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"))

    def conditional_get(self, bucket, name):
        """Evaluate conditional headers (RFC 9110 order) on the object's metadata."""
        obj = json_call("GET", obj_path(bucket, name))
        if obj is None:
            return self.error(404, "NoSuchKey", name)
        etag = etag_of(obj)
        updated = datetime.fromisoformat(obj["updated"].replace("Z", "+00:00")).replace(microsecond=0)

        def matches(header):
            tags = [t.strip() for t in self.headers[header].split(",")]
            return "*" in tags or etag in tags or etag.strip('"') in tags

        hdr = {"ETag": etag, "Last-Modified": formatdate(updated.timestamp(), usegmt=True)}
        if "If-Match" in self.headers and not matches("If-Match"):
            return self.error(412, "PreconditionFailed", "If-Match")
        if ("If-Unmodified-Since" in self.headers and "If-Match" not in self.headers
                and updated > parsedate_to_datetime(self.headers["If-Unmodified-Since"])):
            return self.error(412, "PreconditionFailed", "If-Unmodified-Since")
        if "If-None-Match" in self.headers and matches("If-None-Match"):
            return self.reply(304, b"", hdr)
        if ("If-Modified-Since" in self.headers and "If-None-Match" not in self.headers
                and updated <= parsedate_to_datetime(self.headers["If-Modified-Since"])):
            return self.reply(304, b"", hdr)
        self.proxy()  # conditions hold: serve the object (Range etc.) from upstream


def main():
    global UPSTREAM, UPLOADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--upstream", required=True, help="fake-gcs-server base URL (http)")
    ap.add_argument("--state-dir", required=True, help="where multipart parts are kept")
    args = ap.parse_args()
    u = urlsplit(args.upstream)
    UPSTREAM = (u.hostname, u.port or 80)
    UPLOADS = os.path.join(args.state_dir, "gcs-multipart")
    os.makedirs(UPLOADS, exist_ok=True)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"gcs_xml_adapter listening on http://{args.host}:{args.port} -> {args.upstream}",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
