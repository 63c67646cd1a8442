/*
 * The sticky rollout (see rollout.h for the rule and why deny wins).
 *
 * MurmurHash3 x86_32, written from its description: the input is read in 4-byte
 * little-endian blocks, each multiplied by c1, rotated left 15, multiplied by c2 and mixed
 * into the state (xor, rotate left 13, × 5 + 0xe6546b64); the 1 to 3 bytes left over form a
 * last block mixed the same way without the state's rotation; the length is xored in and the
 * 32-bit finaliser (xor-shifts by 16, 13, 16 around two multiplications) spreads every input
 * bit over the result. Little-endian block reads are done byte by byte, so the answer is the
 * same on every machine. The hash is the one Unleash and flagd use, so a user of those can
 * check a decision with their own tools.
 */
#include "flags/rollout.h"

#include <string.h>

static uint32_t rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

static uint32_t mix_block(uint32_t k)
{
    k *= 0xcc9e2d51u;
    k = rotl32(k, 15);
    k *= 0x1b873593u;
    return k;
}

static uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* Streaming form, so that route, ':' and sticky need no joined copy. */
struct mm3 {
    uint32_t h;
    uint32_t len;
    uint8_t tail[4];
    int ntail;
};

static void mm3_feed(struct mm3 *m, const uint8_t *p, size_t n)
{
    m->len += (uint32_t)n;
    while (n--) {
        m->tail[m->ntail++] = *p++;
        if (m->ntail == 4) {
            uint32_t k = (uint32_t)m->tail[0] | (uint32_t)m->tail[1] << 8 |
                         (uint32_t)m->tail[2] << 16 | (uint32_t)m->tail[3] << 24;
            m->h ^= mix_block(k);
            m->h = rotl32(m->h, 13);
            m->h = m->h * 5 + 0xe6546b64u;
            m->ntail = 0;
        }
    }
}

static uint32_t mm3_end(struct mm3 *m)
{
    uint32_t k = 0;

    switch (m->ntail) {
    case 3:
        k ^= (uint32_t)m->tail[2] << 16;
        /* fall through */
    case 2:
        k ^= (uint32_t)m->tail[1] << 8;
        /* fall through */
    case 1:
        k ^= m->tail[0];
        m->h ^= mix_block(k);
        break;
    default:
        break;
    }
    m->h ^= m->len;
    return fmix32(m->h);
}

uint32_t flags_murmur3_32(const void *data, size_t len, uint32_t seed)
{
    struct mm3 m = {.h = seed};
    mm3_feed(&m, data, len);
    return mm3_end(&m);
}

uint32_t flags_rollout_bucket(const char *route, const char *sticky)
{
    struct mm3 m = {.h = 0};
    mm3_feed(&m, (const uint8_t *)route, strlen(route));
    mm3_feed(&m, (const uint8_t *)":", 1);
    mm3_feed(&m, (const uint8_t *)sticky, strlen(sticky));
    return mm3_end(&m) % FLAGS_ROLLOUT_BUCKETS;
}

uint32_t flags_rollout_threshold(double percent)
{
    if (!(percent > 0))
        return 0;
    if (percent >= 100)
        return FLAGS_ROLLOUT_BUCKETS;
    return (uint32_t)(percent * 100.0 + 0.5); /* round to the nearest bucket */
}

bool flags_rollout_selects(const flags_snapshot *s, const char *route, const char *sticky,
                           enum flags_rollout_why *why)
{
    enum flags_rollout_why w;

    if (flags_read_listed(s, true, sticky))
        w = FLAGS_ROLLOUT_DENIED;
    else if (flags_read_listed(s, false, sticky))
        w = FLAGS_ROLLOUT_ALLOWED;
    else
        w = flags_rollout_bucket(route, sticky) < flags_rollout_threshold(flags_read_percent(s))
                ? FLAGS_ROLLOUT_IN
                : FLAGS_ROLLOUT_OUT;
    if (why)
        *why = w;
    return w == FLAGS_ROLLOUT_IN || w == FLAGS_ROLLOUT_ALLOWED;
}
