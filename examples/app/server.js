#!/usr/bin/env node
/*
 * The example application that cutover runs in front of, in the tests and in the demo.
 *
 * It plays a document service whose files live in a legacy store with signed, expiring
 * delivery URLs, the way an application on Cloudinary does:
 *   - clients upload documents (multipart or raw body) and get back the store's key,
 *     which keeps the original filename verbatim (spaces, unicode, '+', '%', '#', ...);
 *   - clients ask for a signed delivery URL (as JSON, or as a 302 redirect);
 *   - the delivery URL serves the bytes, possibly "optimised" (altered) for chosen
 *     documents, as a format optimisation did to 847 files in the story this plays;
 *   - a raw URL always serves the original bytes (what a migration copies from).
 * The legacy store is a directory (--data): objects/ holds the bytes, meta/ one JSON file
 * per document, documents.jsonl one {"key","org","patient"} line per document (a backfill
 * source), tmp/ uploads in progress. Files are named by the SHA-256 of the key, so any
 * key is safe on disk.
 * A control API under /_control/ lets tests switch behaviours and read request counts.
 *
 * Node 20, standard library only. See README.md next to this file for the endpoints.
 */
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const fsp = require('node:fs/promises');
const http = require('node:http');
const path = require('node:path');

/* ---------- limits ---------- */

const MAX_KEY_BYTES = 1024;
const MAX_PART_HEADERS = 16 * 1024; /* one multipart part's header block */
const MAX_FIELD_BYTES = 64 * 1024;  /* one non-file form field */
const MAX_FIELDS = 100;
const MAX_CONTROL_BODY = 64 * 1024; /* JSON bodies of the control API */
const MAX_SEED_COUNT = 1000000;
const MAX_SEED_SIZE = 64 * 1024 * 1024;
const MAX_EXPIRES_IN = 7 * 24 * 3600;
const DEFAULT_EXPIRES_IN = 3600;
const MAX_DRAIN = 1024 * 1024 * 1024; /* body bytes read and dropped after an error answer */
const ALTER_TRAILER = Buffer.from('\n%% optimised by delivery %%\n');

/* ---------- options ---------- */

function usage(code) {
    const text =
        'usage: node server.js --listen HOST:PORT --data DIR [options]\n' +
        '  --listen HOST:PORT   address to bind (env APP_LISTEN); a bare PORT binds 127.0.0.1\n' +
        '  --data DIR           legacy store directory, created if missing (env APP_DATA)\n' +
        '  --secret S           URL signing secret (env APP_SECRET; default example-secret)\n' +
        '  --raw-token T        require "Authorization: T" or "Bearer T" on /legacy/raw/ (env APP_RAW_TOKEN)\n' +
        '  --max-body BYTES     largest upload body (env APP_MAX_BODY; default 1073741824)\n' +
        '  --public-url URL     base of the delivery URLs it signs (env APP_PUBLIC_URL;\n' +
        '                       default http://HOST:PORT of --listen)\n' +
        '  --quiet              no access log lines\n';
    (code === 0 ? process.stdout : process.stderr).write(text);
    process.exit(code);
}

function parseOptions(argv) {
    const env = process.env;
    const o = {
        listen: env.APP_LISTEN || '',
        data: env.APP_DATA || '',
        secret: env.APP_SECRET || 'example-secret',
        rawToken: env.APP_RAW_TOKEN || '',
        maxBody: env.APP_MAX_BODY ? Number(env.APP_MAX_BODY) : 1024 * 1024 * 1024,
        publicUrl: env.APP_PUBLIC_URL || '',
        quiet: false,
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const eq = a.indexOf('=');
        const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
        const takeValue = () => {
            if (eq > 0 && a.startsWith('--'))
                return a.slice(eq + 1);
            if (i + 1 >= argv.length) {
                process.stderr.write(`server.js: ${a} needs a value\n`);
                usage(2);
            }
            return argv[++i];
        };
        switch (name) {
        case '--listen': o.listen = takeValue(); break;
        case '--data': o.data = takeValue(); break;
        case '--secret': o.secret = takeValue(); break;
        case '--raw-token': o.rawToken = takeValue(); break;
        case '--max-body': o.maxBody = Number(takeValue()); break;
        case '--public-url': o.publicUrl = takeValue(); break;
        case '--quiet': o.quiet = true; break;
        case '-h': case '--help': usage(0); break;
        default:
            process.stderr.write(`server.js: unknown option ${a}\n`);
            usage(2);
        }
    }
    if (!o.listen || !o.data) {
        process.stderr.write('server.js: --listen and --data are required\n');
        usage(2);
    }
    let host = '127.0.0.1';
    let port = o.listen;
    const colon = o.listen.lastIndexOf(':');
    if (colon >= 0) {
        host = o.listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
        port = o.listen.slice(colon + 1);
    }
    o.host = host;
    o.port = Number(port);
    if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535 || !host) {
        process.stderr.write(`server.js: bad --listen ${o.listen}\n`);
        usage(2);
    }
    if (!Number.isSafeInteger(o.maxBody) || o.maxBody < 0) {
        process.stderr.write('server.js: bad --max-body\n');
        usage(2);
    }
    if (!o.secret) {
        process.stderr.write('server.js: the secret must not be empty\n');
        usage(2);
    }
    return o;
}

const opt = parseOptions(process.argv.slice(2));

/* ---------- logging: JSON lines on stdout ---------- */

function log(level, event, fields) {
    if (opt.quiet && event === 'request')
        return;
    const line = Object.assign({ ts: new Date().toISOString(), level, event }, fields || {});
    process.stdout.write(JSON.stringify(line) + '\n');
}

/* ---------- the legacy store on disk ---------- */

const dirs = {
    objects: path.join(opt.data, 'objects'),
    meta: path.join(opt.data, 'meta'),
    tmp: path.join(opt.data, 'tmp'),
};
const jsonlPath = path.join(opt.data, 'documents.jsonl');

/* key -> metadata ({key, org, patient, filename, content_type, fields, size, md5, sha256,
 * created_at, seq}); Map keeps the order documents were created in. */
const docs = new Map();
let nextSeq = 1;

function fileId(key) {
    return crypto.createHash('sha256').update(key, 'utf8').digest('hex');
}
function objectPath(key) {
    return path.join(dirs.objects, fileId(key));
}
function metaPath(key) {
    return path.join(dirs.meta, fileId(key) + '.json');
}
function jsonlLine(m) {
    return JSON.stringify({ key: m.key, org: m.org, patient: m.patient }) + '\n';
}
/* Rewrites documents.jsonl from the index, atomically (write then rename). */
function rewriteJsonl() {
    const tmp = path.join(dirs.tmp, 'documents.jsonl.' + process.pid);
    const lines = [];
    for (const m of docs.values())
        lines.push(jsonlLine(m));
    fs.writeFileSync(tmp, lines.join(''));
    fs.renameSync(tmp, jsonlPath);
}

function loadStore() {
    for (const d of Object.values(dirs))
        fs.mkdirSync(d, { recursive: true });
    for (const f of fs.readdirSync(dirs.tmp))
        fs.rmSync(path.join(dirs.tmp, f), { force: true, recursive: true });
    const loaded = [];
    for (const f of fs.readdirSync(dirs.meta)) {
        if (!f.endsWith('.json'))
            continue;
        try {
            const m = JSON.parse(fs.readFileSync(path.join(dirs.meta, f), 'utf8'));
            if (typeof m.key === 'string' && fs.existsSync(objectPath(m.key)))
                loaded.push(m);
        } catch (e) {
            log('warn', 'store', { msg: `skipping unreadable ${f}: ${e.message}` });
        }
    }
    loaded.sort((a, b) => (a.seq || 0) - (b.seq || 0));
    for (const m of loaded) {
        docs.set(m.key, m);
        nextSeq = Math.max(nextSeq, (m.seq || 0) + 1);
    }
    rewriteJsonl();
}

/* Moves a finished temporary file into the store under key and records its metadata. */
function commitDocument(tmpFile, meta) {
    const existed = docs.has(meta.key);
    meta.seq = nextSeq++;
    meta.created_at = new Date().toISOString();
    fs.renameSync(tmpFile, objectPath(meta.key));
    fs.writeFileSync(metaPath(meta.key), JSON.stringify(meta));
    if (existed)
        docs.delete(meta.key); /* an overwrite moves it to the end, as a new upload */
    docs.set(meta.key, meta);
    if (existed)
        rewriteJsonl();
    else
        fs.appendFileSync(jsonlPath, jsonlLine(meta));
}

function deleteDocument(key) {
    if (!docs.has(key))
        return false;
    docs.delete(key);
    altered.delete(key);
    fs.rmSync(objectPath(key), { force: true });
    fs.rmSync(metaPath(key), { force: true });
    rewriteJsonl();
    return true;
}

let tmpCounter = 0;
function tmpName() {
    return path.join(dirs.tmp, `up-${process.pid}-${++tmpCounter}-${crypto.randomBytes(4).toString('hex')}`);
}

/* ---------- control state (in memory, reset on restart) ---------- */

const altered = new Map();    /* key -> "append" | "flip" */
const deniedUsers = new Set();
const delays = { all: 0, routes: new Map() };
let clockOffset = 0;          /* seconds added to the clock for signing and checking */
const stats = { total: 0, routes: {}, status: {}, recent: [] };

function nowSeconds() {
    return Math.floor(Date.now() / 1000) + clockOffset;
}

/* Counted when the request arrives, so a client that got its answer finds it counted. */
function countRequest(route, method, rawPath) {
    stats.total++;
    stats.routes[route] = (stats.routes[route] || 0) + 1;
    const entry = { route, method, path: rawPath, status: null };
    stats.recent.push(entry);
    if (stats.recent.length > 100)
        stats.recent.shift();
    return entry;
}
/* Counted when the answer's head is written. */
function countStatus(entry, status) {
    entry.status = status;
    const s = stats.status[entry.route] || (stats.status[entry.route] = {});
    s[status] = (s[status] || 0) + 1;
}

/* ---------- shared pieces ---------- */

class HttpError extends Error {
    constructor(status, message) {
        super(message);
        this.status = status;
    }
}

function sendJson(res, status, obj, extraHeaders) {
    if (res.headersSent) {
        res.destroy();
        return;
    }
    const body = Buffer.from(JSON.stringify(obj) + '\n');
    res.writeHead(status, Object.assign({
        'Content-Type': 'application/json',
        'Content-Length': body.length,
    }, extraHeaders || {}));
    res.end(body);
}

/* Header values arrive as latin1 strings; the bytes are usually UTF-8. */
function headerUtf8(req, name) {
    const v = req.headers[name];
    if (v === undefined)
        return undefined;
    return Buffer.from(Array.isArray(v) ? v[0] : v, 'latin1').toString('utf8');
}

function hasControlChars(s) {
    return /[\u0000-\u001f\u007f]/.test(s);
}

function checkKey(key, where) {
    if (typeof key !== 'string' || key.length === 0)
        throw new HttpError(400, `${where}: the storage key is empty`);
    if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES)
        throw new HttpError(400, `${where}: the storage key is longer than ${MAX_KEY_BYTES} bytes`);
    if (hasControlChars(key))
        throw new HttpError(400, `${where}: the storage key contains control characters`);
    if (key.includes('\ufffd'))
        throw new HttpError(400, `${where}: the storage key is not valid UTF-8`);
    return key;
}

function decodeSegment(seg, what) {
    try {
        return decodeURIComponent(seg);
    } catch (e) {
        throw new HttpError(400, `${what}: bad percent-encoding`);
    }
}

/* Decodes a key written as path segments: each segment percent-decoded, joined with '/'.
 * Both "a/b%20c" and "a%2Fb%20c" give "a/b c". */
function decodeKeyPath(rest, what) {
    return rest.split('/').map((s) => decodeSegment(s, what)).join('/');
}

/* Encodes a key as path segments for a URL: '/' stays the separator, everything else that
 * is not unreserved is percent-encoded; "." and ".." segments are encoded so that URL
 * normalisation cannot remove them. */
function encodeKeyPath(key) {
    return key.split('/').map((s) => {
        if (s === '.' || s === '..')
            return s.replace(/\./g, '%2E');
        return encodeURIComponent(s).replace(/[!'()*]/g,
            (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
    }).join('/');
}

function signature(key, expires) {
    return crypto.createHmac('sha256', opt.secret).update(`${key}\n${expires}`, 'utf8').digest('hex');
}

function publicBase() {
    if (opt.publicUrl)
        return opt.publicUrl.replace(/\/+$/, '');
    let h = opt.host;
    if (h === '0.0.0.0')
        h = '127.0.0.1';
    else if (h === '::')
        h = '::1';
    if (h.includes(':'))
        h = `[${h}]`;
    return `http://${h}:${boundPort}`;
}

function signedUrl(key, expiresIn) {
    const expires = nowSeconds() + expiresIn;
    const url = `${publicBase()}/legacy/delivery/${encodeKeyPath(key)}` +
        `?expires=${expires}&sig=${signature(key, expires)}`;
    return { url, expires_at: expires };
}

function sanitizeContentType(ct) {
    if (typeof ct === 'string' && ct.length <= 200 && /^[\x20-\x7e]+$/.test(ct))
        return ct.trim();
    return 'application/octet-stream';
}

function readSmallBody(req, limit) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let n = 0;
        req.on('data', (c) => {
            n += c.length;
            if (n > limit) {
                reject(new HttpError(413, `body larger than ${limit} bytes`));
                req.removeAllListeners('data');
                req.resume();
                return;
            }
            chunks.push(c);
        });
        req.on('end', () => resolve(Buffer.concat(chunks)));
        req.on('error', reject);
    });
}

async function readJson(req) {
    const body = await readSmallBody(req, MAX_CONTROL_BODY);
    if (body.length === 0)
        return {};
    let v;
    try {
        v = JSON.parse(body.toString('utf8'));
    } catch (e) {
        throw new HttpError(400, `invalid JSON: ${e.message}`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v))
        throw new HttpError(400, 'expected a JSON object');
    return v;
}

/* ---------- streaming upload: hashes while writing to a temporary file ---------- */

class FileSink {
    constructor() {
        this.path = tmpName();
        this.stream = fs.createWriteStream(this.path, { flags: 'wx' });
        this.md5 = crypto.createHash('md5');
        this.sha256 = crypto.createHash('sha256');
        this.size = 0;
        this.failed = null;
        this.stream.on('error', (e) => { this.failed = e; });
    }
    async write(buf) {
        if (buf.length === 0)
            return;
        if (this.failed)
            throw this.failed;
        this.md5.update(buf);
        this.sha256.update(buf);
        this.size += buf.length;
        if (!this.stream.write(buf))
            await new Promise((resolve) => {
                const done = () => {
                    this.stream.off('drain', done);
                    this.stream.off('error', done);
                    resolve();
                };
                this.stream.on('drain', done);
                this.stream.on('error', done);
            });
        if (this.failed)
            throw this.failed;
    }
    async finish() {
        await new Promise((resolve, reject) => {
            if (this.failed)
                return reject(this.failed);
            this.stream.end((e) => (e ? reject(e) : resolve()));
        });
        return { size: this.size, md5: this.md5.digest('hex'), sha256: this.sha256.digest('hex') };
    }
    discard() {
        /* the file is created when the stream opens, which may be after destroy(): remove it
         * once the stream has closed, not before */
        const rm = () => fs.rm(this.path, { force: true }, () => {});
        if (this.stream.closed) {
            rm();
            return;
        }
        this.stream.once('close', rm);
        this.stream.destroy();
    }
}

/*
 * Feeds the request body to onChunk (an async function) one chunk at a time, pausing the
 * socket while onChunk works, and counts the body against the ceiling. On an error it stops
 * listening and rejects without destroying the request, so an error answer can still be sent.
 */
function readBody(req, onChunk) {
    return new Promise((resolve, reject) => {
        let n = 0;
        let failed = false;
        const fail = (e) => {
            if (failed)
                return;
            failed = true;
            req.off('data', onData);
            req.off('end', onEnd);
            reject(e);
        };
        /* 'end' may come while the last chunk is still being handled (pausing does not hold
         * it back), so every chunk's work is chained and 'end' waits for the chain. */
        let chain = Promise.resolve();
        const onData = (chunk) => {
            n += chunk.length;
            if (n > opt.maxBody)
                return fail(new HttpError(413, `body larger than ${opt.maxBody} bytes`));
            req.pause();
            chain = chain.then(() => (failed ? undefined : onChunk(chunk))).then(() => {
                if (!failed)
                    req.resume();
            }, fail);
        };
        const onEnd = () => {
            chain.then(() => {
                if (!failed)
                    resolve();
            });
        };
        req.on('data', onData);
        req.on('end', onEnd);
        req.on('error', fail);
        req.on('aborted', () => fail(new HttpError(400, 'request aborted')));
    });
}

function parseDisposition(value) {
    /* form-data; name="file"; filename="a b.pdf"; filename*=UTF-8''a%20b.pdf */
    const out = {};
    const re = /;\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
    let m;
    while ((m = re.exec(value)) !== null) {
        const k = m[1].toLowerCase();
        let v = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3].trim();
        if (k === 'filename*') {
            const q = v.indexOf("''");
            if (q >= 0) {
                try {
                    v = decodeURIComponent(v.slice(q + 2));
                } catch (e) {
                    continue;
                }
            }
        }
        out[k] = v;
    }
    if (out['filename*'] !== undefined)
        out.filename = out['filename*'];
    return out;
}

/*
 * Streams a multipart/form-data body: the part named `file` goes to a FileSink, other parts
 * are kept as bounded UTF-8 fields. The stream is scanned for "\r\n--BOUNDARY" (a CRLF is
 * put in front of the body so the first delimiter looks like the others); at most the
 * delimiter's length minus one bytes are held back between chunks.
 */
async function parseMultipart(req, boundary) {
    const delim = Buffer.from('\r\n--' + boundary);
    const fields = {};
    let nFields = 0;
    let file = null; /* {sink, filename, contentType} */
    let part = null; /* {name, filename, contentType, chunks, size} for fields */
    let state = 'preamble';
    let buf = Buffer.from('\r\n');

    const emit = async (data) => {
        if (state !== 'body' || data.length === 0)
            return;
        if (part === null) {
            await file.sink.write(data);
            return;
        }
        part.size += data.length;
        if (part.size > MAX_FIELD_BYTES)
            throw new HttpError(413, `form field ${JSON.stringify(part.name)} is larger than ${MAX_FIELD_BYTES} bytes`);
        part.chunks.push(data);
    };
    const endPart = () => {
        if (part !== null) {
            if (++nFields > MAX_FIELDS)
                throw new HttpError(413, `more than ${MAX_FIELDS} form fields`);
            fields[part.name] = Buffer.concat(part.chunks).toString('utf8');
            part = null;
        }
    };
    const startPart = (headerText) => {
        let disposition = null;
        let ctype = 'application/octet-stream';
        for (const line of headerText.split('\r\n')) {
            if (line === '')
                continue;
            const c = line.indexOf(':');
            if (c <= 0)
                throw new HttpError(400, 'malformed multipart part header');
            const name = line.slice(0, c).trim().toLowerCase();
            const value = line.slice(c + 1).trim();
            if (name === 'content-disposition')
                disposition = parseDisposition(value);
            else if (name === 'content-type')
                ctype = value;
        }
        if (disposition === null || disposition.name === undefined)
            throw new HttpError(400, 'multipart part without Content-Disposition name');
        if (disposition.name === 'file') {
            if (file !== null)
                throw new HttpError(400, 'more than one "file" part');
            file = { sink: new FileSink(), filename: disposition.filename, contentType: ctype };
            part = null;
        } else {
            part = { name: disposition.name, chunks: [], size: 0 };
        }
    };

    const step = async () => {
        for (;;) {
            if (state === 'preamble') {
                const i = buf.indexOf(delim);
                if (i < 0) {
                    buf = buf.subarray(Math.max(0, buf.length - delim.length + 1));
                    return;
                }
                buf = buf.subarray(i + delim.length);
                state = 'after';
            } else if (state === 'after') {
                if (buf.length < 2)
                    return;
                if (buf[0] === 0x2d && buf[1] === 0x2d) { /* "--": the closing delimiter */
                    state = 'end';
                    buf = Buffer.alloc(0);
                    return;
                }
                /* transport padding (spaces, tabs) may precede the CRLF */
                let j = 0;
                while (j < buf.length && (buf[j] === 0x20 || buf[j] === 0x09))
                    j++;
                if (j + 2 > buf.length) {
                    if (j > 1024)
                        throw new HttpError(400, 'malformed multipart delimiter');
                    return;
                }
                if (buf[j] !== 0x0d || buf[j + 1] !== 0x0a)
                    throw new HttpError(400, 'malformed multipart delimiter');
                buf = buf.subarray(j + 2);
                state = 'headers';
            } else if (state === 'headers') {
                let headerText;
                if (buf.length >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) {
                    headerText = '';
                    buf = buf.subarray(2);
                } else {
                    const i = buf.indexOf('\r\n\r\n');
                    if (i < 0) {
                        if (buf.length > MAX_PART_HEADERS)
                            throw new HttpError(400, 'multipart part headers too long');
                        return;
                    }
                    if (i > MAX_PART_HEADERS)
                        throw new HttpError(400, 'multipart part headers too long');
                    headerText = Buffer.from(buf.subarray(0, i)).toString('utf8');
                    buf = buf.subarray(i + 4);
                }
                startPart(headerText);
                state = 'body';
            } else if (state === 'body') {
                const i = buf.indexOf(delim);
                if (i < 0) {
                    const keep = delim.length - 1;
                    if (buf.length > keep) {
                        await emit(buf.subarray(0, buf.length - keep));
                        buf = buf.subarray(buf.length - keep);
                    }
                    return;
                }
                await emit(buf.subarray(0, i));
                endPart();
                buf = buf.subarray(i + delim.length);
                state = 'after';
            } else {
                buf = Buffer.alloc(0);
                return;
            }
        }
    };

    try {
        await readBody(req, async (chunk) => {
            if (state === 'end')
                return;
            buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
            await step();
        });
        if (state !== 'end')
            throw new HttpError(400, 'multipart body ends before its closing delimiter');
        if (file === null)
            throw new HttpError(400, 'multipart body has no part named "file"');
        return { fields, file };
    } catch (e) {
        if (file !== null)
            file.sink.discard();
        throw e;
    }
}

function boundaryOf(contentType) {
    const m = /;\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
    const b = m ? (m[1] || m[2]) : '';
    if (!b || b.length > 200)
        throw new HttpError(400, 'multipart/form-data without a valid boundary');
    return b;
}

function baseName(filename) {
    let f = String(filename || '');
    const cut = Math.max(f.lastIndexOf('/'), f.lastIndexOf('\\'));
    if (cut >= 0)
        f = f.slice(cut + 1);
    f = f.replace(/[\u0000-\u001f\u007f]/g, '_');
    if (f === '' || f === '.' || f === '..')
        f = 'document';
    return f;
}

/* ---------- handlers ---------- */

async function handleUpload(req, res, query) {
    const org = headerUtf8(req, 'x-org-id');
    if (org === undefined || org === '')
        throw new HttpError(400, 'missing X-Org-Id header');
    if (hasControlChars(org) || org.length > 128 || org.includes('/'))
        throw new HttpError(400, 'X-Org-Id must be at most 128 characters, without "/" or control characters');
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > opt.maxBody)
        throw new HttpError(413, `body larger than ${opt.maxBody} bytes`);

    const ctype = req.headers['content-type'] || '';
    let fields = {};
    let filename;
    let contentType;
    let sink;
    if (/^multipart\/form-data\b/i.test(ctype)) {
        const r = await parseMultipart(req, boundaryOf(ctype));
        fields = r.fields;
        sink = r.file.sink;
        filename = r.file.filename;
        contentType = r.file.contentType;
    } else {
        sink = new FileSink();
        try {
            await readBody(req, (chunk) => sink.write(chunk));
        } catch (e) {
            sink.discard();
            throw e;
        }
        filename = query.get('filename');
        contentType = ctype || 'application/octet-stream';
    }

    try {
        let key;
        const headerKey = headerUtf8(req, 'x-storage-key');
        if (fields.storage_key !== undefined)
            key = checkKey(fields.storage_key, 'form field storage_key');
        else if (fields['X-Storage-Key'] !== undefined)
            key = checkKey(fields['X-Storage-Key'], 'form field X-Storage-Key');
        else if (headerKey !== undefined)
            key = checkKey(decodeSegment(headerKey, 'X-Storage-Key'), 'X-Storage-Key');
        else
            key = checkKey(`${org}/${crypto.randomBytes(8).toString('hex')}/${baseName(filename)}`,
                'filename');
        let patient = fields.patient_id;
        if (patient === undefined)
            patient = headerUtf8(req, 'x-patient-id');
        if (patient === undefined)
            patient = query.get('patient_id');
        if (patient === undefined || patient === null)
            patient = null;

        const sums = await sink.finish();
        const extra = Object.assign({}, fields);
        delete extra.storage_key;
        delete extra['X-Storage-Key'];
        delete extra.patient_id;
        commitDocument(sink.path, {
            key, org, patient,
            filename: filename === undefined || filename === null ? null : String(filename),
            content_type: sanitizeContentType(contentType),
            fields: extra,
            size: sums.size, md5: sums.md5, sha256: sums.sha256,
        });
        altered.delete(key);
        sendJson(res, 201, { storage_key: key, size: sums.size, md5: sums.md5, sha256: sums.sha256 });
    } catch (e) {
        sink.discard();
        throw e;
    }
}

function authorizeReader(req) {
    const user = headerUtf8(req, 'x-user-id');
    if (user === undefined || user === '')
        throw new HttpError(401, 'missing X-User-Id header');
    if (deniedUsers.has(user))
        throw new HttpError(403, `user ${JSON.stringify(user)} may not read documents`);
}

function expiresInOf(query) {
    const v = query.get('expires_in');
    if (v === null)
        return DEFAULT_EXPIRES_IN;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > MAX_EXPIRES_IN)
        throw new HttpError(400, `expires_in must be an integer from 1 to ${MAX_EXPIRES_IN}`);
    return n;
}

function handleSignedUrl(req, res, key, query, redirect) {
    authorizeReader(req);
    const expiresIn = expiresInOf(query);
    if (!docs.has(key))
        throw new HttpError(404, 'no such document');
    const s = signedUrl(key, expiresIn);
    if (redirect) {
        res.writeHead(302, { Location: s.url, 'Content-Length': 0, 'Cache-Control': 'no-store' });
        res.end();
        return;
    }
    sendJson(res, 200, s, { 'Cache-Control': 'no-store' });
}

/* Streams a stored document; mode "append" adds a trailer, "flip" changes one byte in the
 * middle (same length; an empty document gets the trailer instead). */
function serveBytes(req, res, m, alterMode) {
    const file = objectPath(m.key);
    let length = m.size;
    if (alterMode === 'append' || (alterMode === 'flip' && m.size === 0))
        alterMode = 'append';
    if (alterMode === 'append')
        length += ALTER_TRAILER.length;
    res.writeHead(200, {
        'Content-Type': m.content_type || 'application/octet-stream',
        'Content-Length': length,
        'Cache-Control': 'private, max-age=60',
    });
    if (req.method === 'HEAD') {
        res.end();
        return;
    }
    const stream = fs.createReadStream(file);
    let offset = 0;
    const flipAt = Math.floor(m.size / 2);
    stream.on('data', (chunk) => {
        if (alterMode === 'flip' && flipAt >= offset && flipAt < offset + chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[flipAt - offset] ^= 0x20;
        }
        offset += chunk.length;
        if (!res.write(chunk)) {
            stream.pause();
            res.once('drain', () => stream.resume());
        }
    });
    stream.on('end', () => {
        if (alterMode === 'append')
            res.write(ALTER_TRAILER);
        res.end();
    });
    stream.on('error', () => res.destroy());
    res.on('close', () => stream.destroy());
}

function handleDelivery(req, res, key, query) {
    const expires = query.get('expires');
    const sig = query.get('sig');
    if (expires === null || sig === null)
        throw new HttpError(403, 'missing expires or sig');
    if (!/^[0-9]{1,15}$/.test(expires) || !/^[0-9a-f]{64}$/.test(sig))
        throw new HttpError(403, 'malformed expires or sig');
    const want = Buffer.from(signature(key, expires), 'hex');
    if (!crypto.timingSafeEqual(want, Buffer.from(sig, 'hex')))
        throw new HttpError(403, 'bad signature');
    if (Number(expires) < nowSeconds())
        throw new HttpError(403, 'signed URL expired');
    const m = docs.get(key);
    if (!m)
        throw new HttpError(404, 'no such document');
    serveBytes(req, res, m, altered.get(key));
}

function handleRaw(req, res, key) {
    if (opt.rawToken) {
        const a = req.headers.authorization;
        if (a !== opt.rawToken && a !== `Bearer ${opt.rawToken}`)
            throw new HttpError(401, 'missing or wrong Authorization');
    }
    const m = docs.get(key);
    if (!m)
        throw new HttpError(404, 'no such document');
    serveBytes(req, res, m, undefined);
}

function handleDelete(req, res, key) {
    if (!deleteDocument(key))
        throw new HttpError(404, 'no such document');
    res.writeHead(204);
    res.end();
}

function handleList(req, res, query) {
    const org = query.get('org');
    const out = [];
    for (const m of docs.values()) {
        if (org !== null && m.org !== org)
            continue;
        out.push({ key: m.key, org: m.org, patient: m.patient, size: m.size, created_at: m.created_at });
    }
    sendJson(res, 200, out);
}

/* ---------- control API ---------- */

/* Deterministic content for seeded documents: SHA-256 blocks of the key and a counter. */
function seedBytes(key, size) {
    const out = Buffer.alloc(size);
    let off = 0;
    for (let i = 0; off < size; i++) {
        const block = crypto.createHash('sha256').update(`${key}#${i}`).digest();
        off += block.copy(out, off);
    }
    return out;
}

function intField(body, name, def, min, max) {
    const v = body[name] === undefined ? def : body[name];
    if (!Number.isInteger(v) || v < min || v > max)
        throw new HttpError(400, `"${name}" must be an integer from ${min} to ${max}`);
    return v;
}
function strField(body, name, def) {
    const v = body[name] === undefined ? def : body[name];
    if (typeof v !== 'string')
        throw new HttpError(400, `"${name}" must be a string`);
    return v;
}

async function handleSeed(res, body) {
    const count = intField(body, 'count', 1, 0, MAX_SEED_COUNT);
    const size = intField(body, 'size', 1024, 0, MAX_SEED_SIZE);
    const start = intField(body, 'start', 0, 0, Number.MAX_SAFE_INTEGER - MAX_SEED_COUNT);
    const org = strField(body, 'org', 'org-seed');
    const prefix = strField(body, 'prefix', `${org}/seed-`);
    const patients = intField(body, 'patients', 10, 1, 1000000);
    if (count * size > 8 * 1024 * 1024 * 1024)
        throw new HttpError(400, 'count * size is larger than 8 GiB');
    const keys = [];
    for (let i = start; i < start + count; i++) {
        const key = checkKey(`${prefix}${String(i).padStart(6, '0')}.bin`, 'seed key');
        const bytes = seedBytes(key, size);
        const tmp = tmpName();
        await fsp.writeFile(tmp, bytes);
        commitDocument(tmp, {
            key, org, patient: `patient-${i % patients}`,
            filename: path.posix.basename(key), content_type: 'application/octet-stream',
            fields: {}, size,
            md5: crypto.createHash('md5').update(bytes).digest('hex'),
            sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
        });
        altered.delete(key);
        if (keys.length < 1000)
            keys.push(key);
    }
    sendJson(res, 201, { created: count, keys, truncated: count > keys.length });
}

async function handleControl(req, res, name, query) {
    if (req.method === 'GET' && name === 'stats')
        return sendJson(res, 200, stats);
    if (req.method === 'GET' && name === 'state')
        return sendJson(res, 200, {
            altered: Object.fromEntries(altered), denied: [...deniedUsers],
            delay: { ms: delays.all, routes: Object.fromEntries(delays.routes) },
            clock_offset_s: clockOffset, documents: docs.size,
        });
    if (req.method !== 'POST')
        throw new HttpError(405, 'control endpoints take POST (GET for stats and state)');
    const body = await readJson(req);
    switch (name) {
    case 'alter': {
        const key = checkKey(body.key, '"key"');
        const on = body.altered === undefined ? true : body.altered;
        const mode = body.mode === undefined ? 'append' : body.mode;
        if (typeof on !== 'boolean')
            throw new HttpError(400, '"altered" must be a boolean');
        if (mode !== 'append' && mode !== 'flip')
            throw new HttpError(400, '"mode" must be "append" or "flip"');
        if (!docs.has(key))
            throw new HttpError(404, 'no such document');
        if (on)
            altered.set(key, mode);
        else
            altered.delete(key);
        return sendJson(res, 200, { key, altered: on, mode: on ? mode : null });
    }
    case 'deny': {
        const user = strField(body, 'user', undefined);
        const on = body.denied === undefined ? true : body.denied;
        if (typeof on !== 'boolean')
            throw new HttpError(400, '"denied" must be a boolean');
        if (on)
            deniedUsers.add(user);
        else
            deniedUsers.delete(user);
        return sendJson(res, 200, { denied: [...deniedUsers] });
    }
    case 'delay': {
        const ms = intField(body, 'ms', undefined, 0, 600000);
        if (body.route === undefined)
            delays.all = ms;
        else
            delays.routes.set(strField(body, 'route', undefined), ms);
        return sendJson(res, 200, { ms: delays.all, routes: Object.fromEntries(delays.routes) });
    }
    case 'clock': {
        clockOffset = intField(body, 'offset_s', 0, -MAX_EXPIRES_IN * 10, MAX_EXPIRES_IN * 10);
        return sendJson(res, 200, { offset_s: clockOffset, now: nowSeconds() });
    }
    case 'seed':
        return handleSeed(res, body);
    case 'reset': {
        altered.clear();
        deniedUsers.clear();
        delays.all = 0;
        delays.routes.clear();
        clockOffset = 0;
        stats.total = 0;
        stats.routes = {};
        stats.status = {};
        stats.recent = [];
        return sendJson(res, 200, { reset: true });
    }
    default:
        throw new HttpError(404, `no control endpoint ${JSON.stringify(name)}`);
    }
}

/* ---------- routing ---------- */

/* Returns {route, run} for a request; the path is matched raw, one segment at a time. */
function route(req, rawPath, query) {
    const m = req.method;
    const seg = rawPath.split('/');
    if (rawPath === '/health' && (m === 'GET' || m === 'HEAD'))
        return { route: 'health', run: (res) => sendJson(res, 200, { ok: true, documents: docs.size }) };
    if (rawPath === '/documents') {
        if (m === 'POST')
            return { route: 'upload', run: (res) => handleUpload(req, res, query) };
        if (m === 'GET')
            return { route: 'list', run: (res) => handleList(req, res, query) };
        return { route: 'documents', run: () => { throw new HttpError(405, 'method not allowed'); } };
    }
    if (seg[1] === 'documents' && seg.length === 4 && seg[2] !== '' &&
        (seg[3] === 'url' || seg[3] === 'redirect') && (m === 'GET' || m === 'HEAD')) {
        const redirect = seg[3] === 'redirect';
        return {
            route: redirect ? 'redirect' : 'url',
            run: (res) => handleSignedUrl(req, res, checkKey(decodeSegment(seg[2], 'path'), 'path'),
                query, redirect),
        };
    }
    if (seg[1] === 'documents' && seg.length === 3 && seg[2] !== '' && m === 'DELETE')
        return {
            route: 'delete',
            run: (res) => handleDelete(req, res, checkKey(decodeSegment(seg[2], 'path'), 'path')),
        };
    for (const [prefix, name] of [['/legacy/delivery/', 'delivery'], ['/legacy/raw/', 'raw']]) {
        if (rawPath.startsWith(prefix) && rawPath.length > prefix.length && (m === 'GET' || m === 'HEAD')) {
            const key = () => checkKey(decodeKeyPath(rawPath.slice(prefix.length), 'path'), 'path');
            return {
                route: name,
                run: (res) => (name === 'raw' ? handleRaw(req, res, key())
                    : handleDelivery(req, res, key(), query)),
            };
        }
    }
    if (seg[1] === '_control' && seg.length === 3)
        return { route: 'control', run: (res) => handleControl(req, res, seg[2], query) };
    return { route: 'not_found', run: () => { throw new HttpError(404, 'no such route'); } };
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

async function onRequest(req, res) {
    const started = Date.now();
    const rawUrl = req.url || '/';
    const q = rawUrl.indexOf('?');
    const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1));
    let r = { route: 'bad_request' };
    try {
        r = route(req, rawPath, query);
        if (r.route !== 'control') {
            const entry = countRequest(r.route, req.method, rawPath);
            const writeHead = res.writeHead;
            res.writeHead = function (status, ...rest) {
                countStatus(entry, status);
                return writeHead.call(this, status, ...rest);
            };
            const ms = delays.routes.has(r.route) ? delays.routes.get(r.route) : delays.all;
            if (ms > 0)
                await sleep(ms);
        }
        await r.run(res);
    } catch (e) {
        if (e instanceof HttpError) {
            sendJson(res, e.status, { error: e.message });
            if (!req.complete) {
                /* Read and discard the rest so the client sees the answer rather than a
                 * reset, up to a limit after which the connection is cut. */
                let drained = 0;
                req.on('data', (c) => {
                    drained += c.length;
                    if (drained > MAX_DRAIN)
                        req.socket.destroy();
                });
                req.resume();
            }
        } else {
            log('error', 'request', { msg: String(e && e.stack || e), path: rawPath });
            sendJson(res, 500, { error: 'internal error' }, { Connection: 'close' });
        }
    }
    const finish = () => {
        log('info', 'request', {
            method: req.method, path: rawPath, route: r.route, status: res.statusCode,
            ms: Date.now() - started,
        });
    };
    if (res.writableFinished)
        finish();
    else
        res.once('close', finish);
}

/* ---------- start ---------- */

let boundPort = opt.port;
loadStore();

const server = http.createServer({ requestTimeout: 0, headersTimeout: 60000 }, (req, res) => {
    onRequest(req, res).catch((e) => {
        log('error', 'request', { msg: String(e && e.stack || e) });
        res.destroy();
    });
});
server.on('clientError', (err, socket) => {
    if (socket.writable && !socket.destroyed) {
        const body = JSON.stringify({ error: `bad request: ${err.code || err.message}` }) + '\n';
        socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n' +
            `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    } else {
        socket.destroy();
    }
});
server.on('error', (e) => {
    log('error', 'listen', { msg: e.message });
    process.exit(1);
});
server.listen(opt.port, opt.host, () => {
    boundPort = server.address().port;
    log('info', 'listening', {
        msg: `example app on ${publicBase()}`, url: publicBase(), data: opt.data,
        documents: docs.size,
    });
});

function shutdown(sig) {
    log('info', 'stopping', { signal: sig });
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
