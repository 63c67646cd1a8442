/*
 * journal: append-only records with a torn-tail-safe reader (see journal.h).
 *
 * Appends take a mutex, write the header and payload with one write(2) (looping only if the
 * kernel takes less) and fdatasync. When the write or the sync fails, the file is cut back
 * to its size before the append, so that a process that lives on (a full disk that frees up
 * later) never leaves a half record that the reader would have to skip. The directory is
 * synced when the file is created or renamed, so the name itself survives a crash.
 *
 * The reader is a pure function over bytes (the file is mapped, not copied): at each offset
 * it expects a header; a record is good when the magic matches, the length is within the
 * ceiling and the input, and the check equals the first 8 bytes of SHA-256 over the length
 * and the payload. Anything else is skipped one byte at a time until a good record starts;
 * bytes that end the input in the middle of a plausible record are the torn tail.
 */
#include "storage/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char magic[4] = {'C', 'U', 'T', 'J'};

struct journal {
    pthread_mutex_t mu;
    char *path;
    int fd;
    off_t size;
};

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The first 8 bytes of SHA-256(len4 || payload). */
static void check_of(const unsigned char len4[4], const void *payload, size_t n,
                     unsigned char out[8])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(c, len4, 4) != 1 ||
        EVP_DigestUpdate(c, payload, n) != 1 || EVP_DigestFinal_ex(c, md, &mdlen) != 1)
        abort(); /* only an allocation can fail here */
    EVP_MD_CTX_free(c);
    memcpy(out, md, 8);
}

/* Syncs the directory holding path, so that a new or renamed name survives a crash. */
static bool sync_dir(const char *path, cut_err *err)
{
    char *copy = xstrdup(path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    bool ok = dfd >= 0 && fsync(dfd) == 0;
    if (!ok)
        err_set(err, CUT_EIO, "journal", "cannot sync the directory of %s: %s", path,
                strerror(errno));
    if (dfd >= 0)
        close(dfd);
    free(copy);
    return ok;
}

static int open_file(const char *path, off_t *size, cut_err *err)
{
    struct stat st;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || fstat(fd, &st) != 0) {
        err_set(err, CUT_EIO, "journal", "cannot open %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *size = st.st_size;
    if (!sync_dir(path, err)) {
        close(fd);
        return -1;
    }
    return fd;
}

journal *journal_open(const char *path, cut_err *err)
{
    off_t size = 0;
    int fd = open_file(path, &size, err);
    journal *j;
    if (fd < 0)
        return NULL;
    j = xcalloc(1, sizeof(*j));
    pthread_mutex_init(&j->mu, NULL);
    j->path = xstrdup(path);
    j->fd = fd;
    j->size = size;
    return j;
}

void journal_close(journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close(j->fd);
    pthread_mutex_destroy(&j->mu);
    free(j->path);
    free(j);
}

size_t journal_encode(const void *payload, size_t n, unsigned char *out)
{
    memcpy(out, magic, 4);
    put_le32(out + 4, (uint32_t)n);
    check_of(out + 4, payload, n, out + 8);
    memcpy(out + JOURNAL_HEADER, payload, n);
    return JOURNAL_HEADER + n;
}

bool journal_append(journal *j, const void *payload, size_t n, cut_err *err)
{
    unsigned char *rec;
    size_t total, off = 0;
    bool ok = false;

    if (n == 0 || n > JOURNAL_MAX_RECORD) {
        err_set(err, CUT_ELIMIT, "journal", "a record must have 1 to %u bytes, not %zu",
                JOURNAL_MAX_RECORD, n);
        return false;
    }
    rec = xmalloc(JOURNAL_HEADER + n);
    total = journal_encode(payload, n, rec);

    pthread_mutex_lock(&j->mu);
    if (j->fd < 0) {
        err_set(err, CUT_EIO, "journal", "%s is not open", j->path);
        goto out;
    }
    while (off < total) {
        ssize_t w = write(j->fd, rec + off, total - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err_set(err, CUT_EIO, "journal", "cannot append to %s: %s", j->path,
                    w < 0 ? strerror(errno) : "no progress");
            goto undo;
        }
        off += (size_t)w;
    }
    if (fdatasync(j->fd) != 0) {
        err_set(err, CUT_EIO, "journal", "cannot sync %s: %s", j->path, strerror(errno));
        goto undo;
    }
    j->size += (off_t)total;
    ok = true;
    goto out;
undo:
    /* leave no half record behind while the process lives on */
    if (ftruncate(j->fd, j->size) != 0)
        log_msgf(LOG_ERROR, "journal", "cannot cut %s back after a failed append: %s", j->path,
                 strerror(errno));
out:
    pthread_mutex_unlock(&j->mu);
    free(rec);
    return ok;
}

bool journal_rotate(journal *j, const char *aside_path, cut_err *err)
{
    bool ok = false;
    off_t size = 0;
    int fd;

    pthread_mutex_lock(&j->mu);
    if (rename(j->path, aside_path) != 0) {
        err_set(err, CUT_EIO, "journal", "cannot move %s aside: %s", j->path, strerror(errno));
        goto out;
    }
    fd = open_file(j->path, &size, err);
    if (fd < 0) {
        /* put it back so appends go on where they were */
        if (rename(aside_path, j->path) != 0)
            log_msgf(LOG_ERROR, "journal", "cannot move %s back: %s", aside_path, strerror(errno));
        goto out;
    }
    close(j->fd);
    j->fd = fd;
    j->size = size;
    ok = true;
out:
    pthread_mutex_unlock(&j->mu);
    return ok;
}

uint64_t journal_parse(const void *buf, size_t n, journal_record_fn fn, void *arg,
                       struct journal_scan *scan)
{
    const unsigned char *p = buf;
    struct journal_scan s = {0};
    size_t off = 0;

    while (off < n) {
        size_t left = n - off;
        const unsigned char *h = p + off;
        unsigned char want[8];
        uint32_t len;

        if (left < JOURNAL_HEADER) {
            /* a header cut short: torn if what is there could start a record */
            if (memcmp(h, magic, left < 4 ? left : 4) == 0) {
                s.torn_tail = left;
                s.skipped_bytes += left;
                break;
            }
            off++;
            s.skipped_bytes++;
            continue;
        }
        len = get_le32(h + 4);
        if (memcmp(h, magic, 4) != 0 || len == 0 || len > JOURNAL_MAX_RECORD) {
            off++;
            s.skipped_bytes++;
            continue;
        }
        if (len > left - JOURNAL_HEADER) {
            /* a record cut short by the end of the input: the torn tail of a crash, unless
             * a good record starts inside it (then it was damage, and the scan goes on) */
            bool later = false;
            for (size_t k = off + 1; k + JOURNAL_HEADER <= n && !later; k++) {
                uint32_t l2 = get_le32(p + k + 4);
                if (memcmp(p + k, magic, 4) == 0 && l2 && l2 <= n - k - JOURNAL_HEADER) {
                    check_of(p + k + 4, p + k + JOURNAL_HEADER, l2, want);
                    later = memcmp(want, p + k + 8, 8) == 0;
                }
            }
            if (!later) {
                s.torn_tail = left;
                s.skipped_bytes += left;
                break;
            }
            off++;
            s.skipped_bytes++;
            continue;
        }
        check_of(h + 4, h + JOURNAL_HEADER, len, want);
        if (memcmp(want, h + 8, 8) != 0) {
            off++;
            s.skipped_bytes++;
            continue;
        }
        s.records++;
        off += JOURNAL_HEADER + len;
        if (!fn(arg, h + JOURNAL_HEADER, len))
            break;
    }
    if (scan)
        *scan = s;
    return s.records;
}

bool journal_read_file(const char *path, uint64_t max_bytes, journal_record_fn fn, void *arg,
                       struct journal_scan *scan, cut_err *err)
{
    struct stat st;
    void *map;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (scan)
        memset(scan, 0, sizeof(*scan));
    if (fd < 0) {
        if (errno == ENOENT)
            return true;
        err_set(err, CUT_EIO, "journal", "cannot read %s: %s", path, strerror(errno));
        return false;
    }
    if (fstat(fd, &st) != 0) {
        err_set(err, CUT_EIO, "journal", "cannot read %s: %s", path, strerror(errno));
        close(fd);
        return false;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        err_set(err, CUT_ELIMIT, "journal", "%s has %lld bytes, over the ceiling of %llu", path,
                (long long)st.st_size, (unsigned long long)max_bytes);
        close(fd);
        return false;
    }
    if (st.st_size == 0) {
        close(fd);
        return true;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        err_set(err, CUT_EIO, "journal", "cannot map %s: %s", path, strerror(errno));
        return false;
    }
    journal_parse(map, (size_t)st.st_size, fn, arg, scan);
    munmap(map, (size_t)st.st_size);
    return true;
}

/* ---- the record an upload leaves in the journal ------------------------------------------- */

char *journal_doc_encode(const struct pgstore_doc_in *d)
{
    json_t *o = json_pack("{s:i, s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?}", "v",
                          JOURNAL_DOC_VERSION, "storage_key", d->storage_key, "s3_key", d->s3_key,
                          "vars", d->vars, "spool_path", d->spool_path, "md5", d->md5, "sha256",
                          d->sha256, "content_type", d->content_type, "filename", d->filename,
                          "unmirrorable", d->failed_reason);
    char *text;

    if (!o)
        return NULL;
    if (d->size >= 0)
        json_object_set_new(o, "size", json_integer((json_int_t)d->size));
    if (d->answered_seq > 0)
        json_object_set_new(o, "answered_seq", json_integer((json_int_t)d->answered_seq));
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* The string member k of o into *dst (NULL when absent or null); false when another type. */
static bool doc_str(json_t *o, const char *k, const char **dst)
{
    json_t *v = json_object_get(o, k);
    *dst = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return false;
    *dst = json_string_value(v);
    return true;
}

/* The integer member k of o into *dst (def when absent or null); false when another type. */
static bool doc_int(json_t *o, const char *k, int64_t def, int64_t *dst)
{
    json_t *v = json_object_get(o, k);
    *dst = def;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v))
        return false;
    *dst = (int64_t)json_integer_value(v);
    return true;
}

bool journal_doc_decode(const void *payload, size_t n, struct journal_doc *out, cut_err *err)
{
    static const struct {
        const char *name;
        size_t off;
    } strs[] = {
        {"storage_key", offsetof(struct pgstore_doc_in, storage_key)},
        {"s3_key", offsetof(struct pgstore_doc_in, s3_key)},
        {"vars", offsetof(struct pgstore_doc_in, vars)},
        {"spool_path", offsetof(struct pgstore_doc_in, spool_path)},
        {"md5", offsetof(struct pgstore_doc_in, md5)},
        {"sha256", offsetof(struct pgstore_doc_in, sha256)},
        {"content_type", offsetof(struct pgstore_doc_in, content_type)},
        {"filename", offsetof(struct pgstore_doc_in, filename)},
        {"unmirrorable", offsetof(struct pgstore_doc_in, failed_reason)},
    };
    json_error_t je;
    int64_t v;
    const char *bad = NULL;

    memset(out, 0, sizeof(*out));
    out->json = json_loadb(payload, n, 0, &je);
    if (!json_is_object(out->json)) {
        err_set(err, CUT_EINVAL, "journal", "a record is not a JSON object: %s",
                out->json ? "another value" : je.text);
        goto fail;
    }
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (!doc_str(out->json, strs[i].name, (const char **)((char *)&out->doc + strs[i].off)))
            bad = strs[i].name;
    if (!doc_int(out->json, "v", 1, &v) || v < 1 || v > INT32_MAX)
        bad = "v";
    out->version = (int)v;
    if (!doc_int(out->json, "size", -1, &out->doc.size) || out->doc.size < -1)
        bad = "size";
    /* version 1 has no sequence; a value out of range is no order at all */
    if (!doc_int(out->json, "answered_seq", 0, &out->doc.answered_seq) || out->doc.answered_seq < 0)
        bad = "answered_seq";
    if (out->version < 2)
        out->doc.answered_seq = 0;
    if (bad) {
        err_set(err, CUT_EINVAL, "journal", "a record's \"%s\" has the wrong type", bad);
        goto fail;
    }
    if (!out->doc.storage_key || !*out->doc.storage_key) {
        err_set(err, CUT_EINVAL, "journal", "a record without a storage key");
        goto fail;
    }
    out->doc.origin = "upload";
    return true;
fail:
    journal_doc_clear(out);
    return false;
}

void journal_doc_clear(struct journal_doc *d)
{
    json_decref(d->json);
    memset(d, 0, sizeof(*d));
}
