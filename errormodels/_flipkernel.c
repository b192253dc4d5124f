/*
 * Compiled kernel of errormodels.inject: a model's flip plan (a Bernoulli process over all bits,
 * another over a weak set, value-dependent thinning) drawn by the block sampler and applied to a
 * tensor's bytes (fused with the copy for inject), the weak wordline pieces of a placement, and a
 * small pool of helper threads.
 *
 * The stream is defined in errormodels/inject/sampler.py (the comment above _BLOCK_BITS), which
 * also holds a vectorised numpy/torch version of it; both give the same flips for the same key,
 * and tests/test_inject_kernel.py checks that they do. In short, for a process over n positions
 * at rate p (q = p, or q = 1 - p for p > 1/2, when the drawn positions are those *not* chosen),
 * cut into blocks of BLOCK_BITS positions (the last one partial, nb positions):
 *     count    c_b = #{k : F(k) <= u_b / 2^53},  u_b = mix64(key + GAMMA * (b * 2^32 + 2^32 - 1)) >> 11
 *              with F the cumulative table of Binomial(nb, q) built by table_build (below)
 *     word j   = mix64(key + GAMMA * (b * 2^32 + j))        j = 0, 1, ...
 *     draw t   = (word >> (t * L)) & (2^L - 1)              t = 0 .. 64/L - 1
 * the drawn positions being the first c_b distinct draws below nb, L = max(1, bit_length(nb - 1)).
 *
 * Every entry point releases the GIL while it works; the helper threads never touch Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#endif
#ifndef _WIN32
#include <pthread.h>
#define HAVE_POOL 1
#endif

#define BLOCK_SHIFT 16
#define BLOCK_BITS (1 << BLOCK_SHIFT)
#define BLOCK_BYTES (BLOCK_BITS / 8)
#define BLOCK_WORDS (BLOCK_BITS / 64)
#define GAMMA 0x9E3779B97F4A7C15ULL
#define COUNT_WORD 0xFFFFFFFFULL /* word index of a block's count uniform (position words start at 0) */
#define STREAM_VERSION 2 /* errormodels.inject.sampler._STREAM_VERSION must match: else the build is stale */
#ifndef DENSE_BYTES_PER_FLIP
#define DENSE_BYTES_PER_FLIP 256 /* in place, blocks with flips this close are rewritten whole */
#endif
#ifndef STREAM_MIN_BYTES
#define STREAM_MIN_BYTES (16 << 20) /* copies this large (with their source, beyond a typical L3) stream */
#endif
#define TABLE_MAX 4096 /* entries of a count table: Binomial(<= 2^16, <= 1/2) needs under 2,700 */
#define GUIDE_BITS 8
#define TWO53 9007199254740992.0
#define CHUNK_BLOCKS 8 /* blocks a thread takes at a time (64 KiB of data) */
#define CHUNK_WORDS 256 /* bitmap words of weak pieces a thread takes at a time */
#define MAX_THREADS 64
#ifndef PARALLEL_MIN_NS
#define PARALLEL_MIN_NS 200000.0 /* estimated work (ns) from which a job is split across threads */
#endif

/* The C library's memcpy, called (not expanded inline into `rep movs`, which is slower for blocks). */
static void *(*volatile copy_bytes)(void *, const void *, size_t) = memcpy;

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#define SALT_KIND 0xD1B54A32D192ED03ULL

/* The i-th key derived from a key (62 bits): sampler._subkey. */
static inline uint64_t subkey(uint64_t key, uint64_t i)
{
    return mix64(key + i * SALT_KIND) >> 2;
}

#if defined(__GNUC__) || defined(__clang__)
#define LOWEST_SET(w) ((unsigned)__builtin_ctzll(w))
#define POPCOUNT(w) ((unsigned)__builtin_popcountll(w))
#define PREFETCH_W(p) __builtin_prefetch((p), 1)
#define PREFETCH_R(p) __builtin_prefetch((p), 0)
#else
static unsigned lowest_set(uint64_t w)
{
    unsigned k = 0;
    while (!((w >> k) & 1))
        k++;
    return k;
}
static unsigned popcount64(uint64_t w)
{
    unsigned n = 0;
    for (; w; w &= w - 1)
        n++;
    return n;
}
#define LOWEST_SET(w) lowest_set(w)
#define POPCOUNT(w) popcount64(w)
#define PREFETCH_W(p) ((void)(p))
#define PREFETCH_R(p) ((void)(p))
#endif

static unsigned bit_length(uint64_t v)
{
    unsigned n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    return n;
}

/* ------------------------------------------------------------------ count tables
 * The cumulative distribution of Binomial(n, q), 0 < q <= 1/2, over the counts whose weight is at
 * least 2^-70 of the mode's: weights w(m) = 1 at the mode m = floor((n + 1) q), then outward by
 * the ratio of successive probabilities, summed from the lowest count up and divided by the sum;
 * the last entry is set to 1. Only +, *, / of doubles in a fixed order (no contraction into
 * fused multiply-adds), so sampler._cdf_table in Python gives the same doubles.
 */
typedef struct {
    int64_t k0; /* count of cdf[0] */
    int32_t len;
    double *cdf;
    uint16_t guide[(1 << GUIDE_BITS) + 1]; /* guide[g]: first index with cdf > g / 2^GUIDE_BITS */
} table_t;

#if defined(__clang__)
#pragma clang fp contract(off)
#endif
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
static int table_build(table_t *t, int64_t n, double q)
{
    static const double tiny = 1.0 / 1180591620717411303424.0; /* 2^-70 */
    double *up = NULL, *down = NULL;
    t->cdf = NULL;
    if (n <= 0 || !(q > 0.0)) { /* the count is always 0 */
        t->cdf = malloc(sizeof(double));
        if (!t->cdf)
            return -1;
        t->k0 = 0;
        t->len = 1;
        t->cdf[0] = 1.0;
    } else {
        const double r = q / (1.0 - q);
        int64_t m = (int64_t)((double)(n + 1) * q);
        if (m > n)
            m = n;
        up = malloc(TABLE_MAX * sizeof(double));
        down = malloc(TABLE_MAX * sizeof(double));
        t->cdf = malloc(TABLE_MAX * sizeof(double));
        if (!up || !down || !t->cdf)
            goto fail;
        int n_up = 0, n_down = 0;
        double w = 1.0;
        for (int64_t k = m; k < n;) {
            k++;
            w = w * (double)(n - k + 1) * r / (double)k;
            if (w < tiny)
                break;
            if (n_up == TABLE_MAX / 2)
                goto fail;
            up[n_up++] = w;
        }
        w = 1.0;
        for (int64_t k = m; k > 0;) {
            w = w * (double)k / ((double)(n - k + 1) * r);
            k--;
            if (w < tiny)
                break;
            if (n_down == TABLE_MAX / 2 - 1)
                goto fail;
            down[n_down++] = w;
        }
        t->k0 = m - n_down;
        t->len = n_down + 1 + n_up;
        double s = 0.0;
        int i = 0;
        for (int j = n_down - 1; j >= 0; j--)
            t->cdf[i++] = (s += down[j]);
        t->cdf[i++] = (s += 1.0);
        for (int j = 0; j < n_up; j++)
            t->cdf[i++] = (s += up[j]);
        for (i = 0; i < t->len; i++)
            t->cdf[i] = t->cdf[i] / s;
        t->cdf[t->len - 1] = 1.0;
        free(up), free(down);
    }
    int i = 0;
    for (int g = 0; g <= (1 << GUIDE_BITS); g++) {
        const double x = (double)g / (double)(1 << GUIDE_BITS);
        while (i < t->len - 1 && t->cdf[i] <= x)
            i++;
        t->guide[g] = (uint16_t)i;
    }
    return 0;
fail:
    free(up), free(down), free(t->cdf);
    t->cdf = NULL;
    return -1;
}

/* k0 + the number of entries <= u / 2^53 (u < 2^53): the count of a uniform. */
static inline uint32_t table_count(const table_t *t, uint64_t u)
{
    const double x = (double)u * (1.0 / TWO53);
    int i = t->guide[u >> (53 - GUIDE_BITS)];
    while (t->cdf[i] <= x)
        i++;
    return (uint32_t)(t->k0 + i);
}

/* Tables are kept for reuse (a network's tensors come in a few sizes, at one or two rates):
 * TABLE_CACHE of them, each with a count of its users (the cache is one), freed at zero. */
#define TABLE_CACHE 32
typedef struct {
    int64_t n;
    double q;
    int refs;
    table_t t;
} shared_table_t;

#ifdef HAVE_POOL
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
#define TABLE_LOCK() pthread_mutex_lock(&table_mu)
#define TABLE_UNLOCK() pthread_mutex_unlock(&table_mu)
#else
#define TABLE_LOCK() ((void)0)
#define TABLE_UNLOCK() ((void)0)
#endif
static shared_table_t *table_cache[TABLE_CACHE];
static int table_clock = 0;

static void table_release(shared_table_t *st)
{
    if (!st)
        return;
    TABLE_LOCK();
    const int last = --st->refs == 0;
    TABLE_UNLOCK();
    if (last) {
        free(st->t.cdf);
        free(st);
    }
}

static shared_table_t *table_get(int64_t n, double q)
{
    TABLE_LOCK();
    for (int i = 0; i < TABLE_CACHE; i++) {
        shared_table_t *st = table_cache[i];
        if (st && st->n == n && st->q == q) {
            st->refs++;
            TABLE_UNLOCK();
            return st;
        }
    }
    TABLE_UNLOCK();
    shared_table_t *st = malloc(sizeof(shared_table_t));
    if (!st)
        return NULL;
    if (table_build(&st->t, n, q) < 0) {
        free(st);
        return NULL;
    }
    st->n = n, st->q = q, st->refs = 2; /* the caller and the cache */
    TABLE_LOCK();
    shared_table_t *old = table_cache[table_clock];
    table_cache[table_clock] = st;
    table_clock = (table_clock + 1) % TABLE_CACHE;
    TABLE_UNLOCK();
    table_release(old);
    return st;
}

/* ------------------------------------------------------------------ a process */
typedef struct {
    uint64_t key;
    int64_t n, n_blocks, last_nb;
    int complement; /* p > 1/2: the drawn positions are the ones not chosen */
    int none;       /* q == 0: nothing is drawn */
    shared_table_t *full, *last;
} proc_t;

static void proc_free(proc_t *pr)
{
    table_release(pr->full);
    table_release(pr->last);
    pr->full = pr->last = NULL;
}

static int proc_init(proc_t *pr, uint64_t key, int64_t n, double p)
{
    memset(pr, 0, sizeof(*pr));
    pr->key = key;
    pr->n = n > 0 ? n : 0;
    pr->n_blocks = (pr->n + BLOCK_BITS - 1) >> BLOCK_SHIFT;
    pr->last_nb = pr->n_blocks ? pr->n - (pr->n_blocks - 1) * (int64_t)BLOCK_BITS : 0;
    pr->complement = p > 0.5;
    const double q = pr->complement ? 1.0 - p : p;
    pr->none = !(q > 0.0) || pr->n == 0;
    if (pr->none)
        return 0;
    if ((pr->n_blocks > 1 || pr->last_nb == BLOCK_BITS) && !(pr->full = table_get(BLOCK_BITS, q)))
        return -1;
    if (pr->last_nb != BLOCK_BITS && !(pr->last = table_get(pr->last_nb, q))) {
        proc_free(pr);
        return -1;
    }
    return 0;
}

static inline uint32_t proc_nb(const proc_t *pr, int64_t b)
{
    return b == pr->n_blocks - 1 ? (uint32_t)pr->last_nb : BLOCK_BITS;
}

/* Positions drawn in block b (for a complement process: those *not* chosen). */
static inline uint32_t proc_drawn(const proc_t *pr, int64_t b)
{
    if (pr->none)
        return 0;
    const uint64_t u = mix64(pr->key + GAMMA * (((uint64_t)b << 32) + COUNT_WORD)) >> 11;
    const table_t *t = (b == pr->n_blocks - 1 && pr->last_nb != BLOCK_BITS) ? &pr->last->t : &pr->full->t;
    return table_count(t, u);
}

static inline uint32_t proc_chosen(const proc_t *pr, int64_t b)
{
    const uint32_t d = proc_drawn(pr, b);
    return pr->complement ? proc_nb(pr, b) - d : d;
}

/* The accepted draws of block b (nb positions), in order: see the comment at the top. */
typedef struct {
    uint64_t base, j, w, mask;
    unsigned bits, per_word, left;
    uint32_t nb;
} draws_t;

static inline void draws_init(draws_t *d, uint64_t key, int64_t b, uint32_t nb)
{
    d->bits = bit_length(nb - 1);
    if (d->bits == 0)
        d->bits = 1;
    d->per_word = 64 / d->bits;
    d->mask = (1ULL << d->bits) - 1;
    d->base = key + GAMMA * ((uint64_t)b << 32);
    d->j = 0;
    d->w = 0;
    d->left = 0;
    d->nb = nb;
}

static inline uint32_t draws_next(draws_t *d)
{
    for (;;) {
        if (d->left == 0) {
            d->w = mix64(d->base + GAMMA * d->j++);
            d->left = d->per_word;
        }
        const uint32_t pos = (uint32_t)(d->w & d->mask);
        d->w >>= d->bits;
        d->left--;
        if (pos < d->nb)
            return pos;
    }
}

/* Draw c distinct positions of block b (nb positions): set them in `seen` (all zero on entry)
 * and list them, in draw order, in `chosen`. */
static void draw_block(uint64_t key, int64_t b, uint32_t nb, uint32_t c, uint64_t *seen, uint16_t *chosen)
{
    draws_t d;
    draws_init(&d, key, b, nb);
    for (uint32_t got = 0; got < c;) {
        const uint32_t pos = draws_next(&d);
        const uint64_t bit = 1ULL << (pos & 63);
        if (seen[pos >> 6] & bit)
            continue;
        seen[pos >> 6] |= bit;
        chosen[got++] = (uint16_t)pos;
    }
}

/* dst = src ^ mask over len bytes (mask: a block's bitmap, little-endian: bit k of byte i is
 * position 8 i + k). With `stream`, 16-byte non-temporal stores: a large copy then leaves the
 * cache to its source instead of evicting it (returns whether any were issued). */
#ifdef HAVE_AVX512_PATH
static int have_avx2 = 0;
__attribute__((target("avx2"))) static size_t xor_avx2(uint8_t *dst, const uint8_t *src, const uint64_t *mask,
                                                      size_t len, int stream)
{
    size_t i = 0;
    const uint8_t *mk = (const uint8_t *)mask;
    if (stream && ((uintptr_t)dst & 31) == 0) {
        for (; i + 64 <= len; i += 64) {
            const __m256i a = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + i)),
                                               _mm256_loadu_si256((const __m256i *)(mk + i)));
            const __m256i b = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + i + 32)),
                                               _mm256_loadu_si256((const __m256i *)(mk + i + 32)));
            _mm256_stream_si256((__m256i *)(dst + i), a);
            _mm256_stream_si256((__m256i *)(dst + i + 32), b);
        }
    } else {
        for (; i + 64 <= len; i += 64) {
            const __m256i a = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + i)),
                                               _mm256_loadu_si256((const __m256i *)(mk + i)));
            const __m256i b = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + i + 32)),
                                               _mm256_loadu_si256((const __m256i *)(mk + i + 32)));
            _mm256_storeu_si256((__m256i *)(dst + i), a);
            _mm256_storeu_si256((__m256i *)(dst + i + 32), b);
        }
    }
    return i;
}
#endif

#ifdef HAVE_AVX512_PATH
__attribute__((target("avx2"))) static void copy_avx2(uint8_t *dst, const uint8_t *src, size_t len)
{
    size_t i = 0;
    for (; i + 128 <= len; i += 128) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        const __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
        const __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
        _mm256_storeu_si256((__m256i *)(dst + i), a);
        _mm256_storeu_si256((__m256i *)(dst + i + 32), b);
        _mm256_storeu_si256((__m256i *)(dst + i + 64), c);
        _mm256_storeu_si256((__m256i *)(dst + i + 96), d);
    }
    memcpy(dst + i, src + i, len - i);
}
#endif

/* dst = src over a block, with ordinary stores (the lines stay cached for the flips that follow;
 * the C library's memcpy may use `rep movsb`, whose lines need not). */
static void copy_block(uint8_t *dst, const uint8_t *src, size_t len)
{
#ifdef HAVE_AVX512_PATH
    if (have_avx2) {
        copy_avx2(dst, src, len);
        return;
    }
#endif
    copy_bytes(dst, src, len);
}

static int xor_block(uint8_t *dst, const uint8_t *src, const uint64_t *mask, size_t len, int stream)
{
    size_t i = 0;
    int streamed = 0;
#ifdef HAVE_AVX512_PATH
    if (have_avx2) {
        i = xor_avx2(dst, src, mask, len, stream);
        streamed = stream && ((uintptr_t)dst & 31) == 0;
    }
#endif
#if defined(__SSE2__) || defined(_M_X64)
    if (stream && ((uintptr_t)dst & 15) == 0) {
        for (; i + 16 <= len; i += 16) {
            const __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)),
                                            _mm_load_si128((const __m128i *)((const uint8_t *)mask + i)));
            _mm_stream_si128((__m128i *)(dst + i), v);
        }
        streamed = 1;
    } else {
        for (; i + 16 <= len; i += 16) {
            const __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)),
                                            _mm_load_si128((const __m128i *)((const uint8_t *)mask + i)));
            _mm_storeu_si128((__m128i *)(dst + i), v);
        }
    }
#else
    (void)stream;
#endif
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= mask[i / 8];
        memcpy(dst + i, &v, 8);
    }
    for (; i < len; i++)
        dst[i] = src[i] ^ ((const uint8_t *)mask)[i];
    return streamed;
}

/* Zero the bitmap again: word by word where few positions were set, else all of it. */
static void clear_block(uint64_t *seen, const uint16_t *chosen, uint32_t c)
{
    if (c > BLOCK_WORDS / 4) {
        memset(seen, 0, BLOCK_WORDS * sizeof(uint64_t));
        return;
    }
    for (uint32_t i = 0; i < c; i++)
        seen[chosen[i] >> 6] = 0;
}

/* ------------------------------------------------------------------ scratch of a thread */
typedef struct {
    uint64_t *seen, *flip; /* a block's bitmaps (drawn, kept), 16-byte aligned, all zero between blocks */
    void *raw;
    uint16_t *chosen, *kept;
    uint32_t cap;
} scratch_t;

static int scratch_init(scratch_t *s)
{
    s->raw = calloc(2 * BLOCK_WORDS + 2, sizeof(uint64_t));
    s->cap = 1024;
    s->chosen = malloc(s->cap * sizeof(uint16_t));
    s->kept = malloc(s->cap * sizeof(uint16_t));
    if (!s->raw || !s->chosen || !s->kept) {
        free(s->raw), free(s->chosen), free(s->kept);
        return -1;
    }
    s->seen = (uint64_t *)(((uintptr_t)s->raw + 15) & ~(uintptr_t)15);
    s->flip = s->seen + BLOCK_WORDS;
    return 0;
}

static void scratch_free(scratch_t *s)
{
    free(s->raw), free(s->chosen), free(s->kept);
}

static int scratch_need(scratch_t *s, uint32_t n)
{
    if (n <= s->cap)
        return 0;
    if (n > BLOCK_BITS)
        return -1; /* a block holds at most BLOCK_BITS distinct positions: a malformed weak set */
    uint32_t cap = s->cap;
    while (cap < n)
        cap *= 2;
    if (cap > BLOCK_BITS)
        cap = BLOCK_BITS;
    uint16_t *c = realloc(s->chosen, cap * sizeof(uint16_t));
    if (!c)
        return -1;
    s->chosen = c;
    c = realloc(s->kept, cap * sizeof(uint16_t));
    if (!c)
        return -1;
    s->kept = c;
    s->cap = cap;
    return 0;
}

/* ------------------------------------------------------------------ thread pool
 * A job is n_items items, taken CHUNK at a time by the calling thread and up to max_helpers
 * helpers (an atomic counter hands out chunks, so a helper that wakes late just takes fewer).
 * One job at a time; a second caller meanwhile does its job alone.
 */
typedef struct job job_t;
typedef int (*job_fn)(job_t *job, int64_t lo, int64_t hi, scratch_t *s, uint64_t *acc);
struct job {
    job_fn fn;
    void *ctx;
    int64_t n_items, chunk;
    int64_t next; /* atomic */
    int failed;   /* atomic */
    uint64_t acc[4];
    int max_helpers, helpers, active;
    int need_scratch;
};

static void run_share(job_t *job)
{
    scratch_t s;
    uint64_t acc[4] = {0, 0, 0, 0};
    if (job->need_scratch && scratch_init(&s) < 0) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (;;) {
        const int64_t lo = __atomic_fetch_add(&job->next, job->chunk, __ATOMIC_RELAXED);
        if (lo >= job->n_items || __atomic_load_n(&job->failed, __ATOMIC_RELAXED))
            break;
        const int64_t hi = lo + job->chunk < job->n_items ? lo + job->chunk : job->n_items;
        if (job->fn(job, lo, hi, job->need_scratch ? &s : NULL, acc) < 0) {
            __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
            break;
        }
    }
#if defined(__SSE2__) || defined(_M_X64)
    _mm_sfence(); /* streamed stores are visible before the job is reported done */
#endif
    for (int i = 0; i < 4; i++)
        __atomic_fetch_add(&job->acc[i], acc[i], __ATOMIC_RELAXED);
    if (job->need_scratch)
        scratch_free(&s);
}

#ifdef HAVE_POOL
static pthread_mutex_t pool_use = PTHREAD_MUTEX_INITIALIZER; /* held by the job's caller */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static job_t *pool_job = NULL;
static uint64_t pool_gen = 0;
static int pool_workers = 0;

static void *worker_main(void *arg)
{
    (void)arg;
    uint64_t seen_gen = 0;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        if (pool_job != NULL && pool_gen != seen_gen) {
            seen_gen = pool_gen;
            job_t *job = pool_job;
            if (job->helpers < job->max_helpers) {
                job->helpers++;
                job->active++;
                pthread_mutex_unlock(&pool_mu);
                run_share(job);
                pthread_mutex_lock(&pool_mu);
                if (--job->active == 0)
                    pthread_cond_broadcast(&pool_done);
            }
            continue;
        }
        pthread_cond_wait(&pool_wake, &pool_mu);
    }
    return NULL;
}

static void pool_prepare(void)
{
    pthread_mutex_lock(&pool_use);
    pthread_mutex_lock(&pool_mu);
    pthread_mutex_lock(&table_mu);
}

static void pool_parent(void)
{
    pthread_mutex_unlock(&table_mu);
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_use);
}

static void pool_child(void) /* the parent's helpers do not exist in a forked child */
{
    pool_workers = 0;
    pool_job = NULL;
    pthread_cond_init(&pool_wake, NULL);
    pthread_cond_init(&pool_done, NULL);
    pthread_mutex_unlock(&table_mu);
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_use);
}
#endif

/* Run a job on up to `threads` threads (this one included). Called without the GIL. */
static void run_job(job_t *job, int threads)
{
    job->next = 0;
    job->failed = 0;
    memset(job->acc, 0, sizeof(job->acc));
#ifdef HAVE_POOL
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > 1 && job->n_items > job->chunk && pthread_mutex_trylock(&pool_use) == 0) {
        pthread_mutex_lock(&pool_mu);
        while (pool_workers < threads - 1) {
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            const int err = pthread_create(&t, &attr, worker_main, NULL);
            pthread_attr_destroy(&attr);
            if (err)
                break;
            pool_workers++;
        }
        job->max_helpers = threads - 1;
        job->helpers = job->active = 0;
        pool_job = job;
        pool_gen++;
        pthread_cond_broadcast(&pool_wake);
        pthread_mutex_unlock(&pool_mu);
        run_share(job);
        pthread_mutex_lock(&pool_mu);
        pool_job = NULL; /* no helper joins from now on */
        while (job->active > 0)
            pthread_cond_wait(&pool_done, &pool_mu);
        pthread_mutex_unlock(&pool_mu);
        pthread_mutex_unlock(&pool_use);
        return;
    }
#else
    (void)threads;
#endif
    run_share(job);
}

/* ------------------------------------------------------------------ weak sets */
enum { WEAK_NONE = 0, WEAK_PIECES = 1, WEAK_BITLINES = 2 };

typedef struct {
    int kind;
    int64_t n;     /* weak bits of the tensor (ranks 0 .. n - 1, in position order) */
    int64_t start; /* linear bit of tensor bit 0 */
    /* pieces: weak pieces of 2^shift bits, consecutive in the tensor */
    const int64_t *wq; /* sorted linear indices of the weak pieces meeting the tensor */
    int64_t n_wq, head, first;
    const uint8_t *bits; /* bit (q - first): piece q is weak */
    int shift;
    /* bitlines: row segments (runs of 2^shift bits) and the weak bitlines of their banks */
    const int64_t *seg_t, *seg_key, *idx0, *cum, *keys;
    int64_t n_seg, n_keys, row_bits, first_run;
    const uint8_t *table; /* bit bank * row_bits + bit_in_row: a weak bitline */
} weak_t;

static inline int weak_contains(const weak_t *w, int64_t pos)
{
    if (w->kind == WEAK_PIECES) {
        const int64_t i = ((w->start + pos) >> w->shift) - w->first;
        return (w->bits[i >> 3] >> (i & 7)) & 1;
    }
    const int64_t j = ((w->start + pos) >> w->shift) - w->first_run;
    const int64_t key = w->seg_key[j] + (pos - w->seg_t[j]);
    const int64_t i = (key >> 20) * w->row_bits + (key & ((1 << 20) - 1));
    return (w->table[i >> 3] >> (i & 7)) & 1;
}

/* The segment holding rank r (bitlines): the last j with cum[j] <= r. */
static int64_t seg_of_rank(const weak_t *w, int64_t r)
{
    int64_t lo = 0, hi = w->n_seg; /* cum[lo] <= r < cum[hi] */
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (w->cum[mid] <= r)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Position of rank r; *seg is a cursor for increasing ranks (bitlines), -1 to start afresh. */
static inline int64_t weak_position(const weak_t *w, int64_t r, int64_t *seg)
{
    if (w->kind == WEAK_PIECES) {
        const int64_t rr = r + w->head;
        return (w->wq[rr >> w->shift] << w->shift) + (rr & ((1LL << w->shift) - 1)) - w->start;
    }
    int64_t j = *seg;
    if (j < 0)
        j = seg_of_rank(w, r);
    while (w->cum[j + 1] <= r)
        j++;
    *seg = j;
    return w->seg_t[j] + (w->keys[w->idx0[j] + (r - w->cum[j])] - w->seg_key[j]);
}

/* ------------------------------------------------------------------ injection */
typedef struct {
    uint8_t *dst;
    const uint8_t *src;
    int64_t n_bytes, n_bits;
    int elem_shift, stream;
    proc_t strong, wproc;
    weak_t weak;
    int64_t *wpos; /* positions of the weak set's chosen bits, sorted */
    const int64_t *woff; /* first entry of each rank block in wpos */
    uint64_t tkey;
    uint64_t thr[2];
    int thin;
} inj_t;

/* Rank blocks [lo, hi) of the weak process: their chosen ranks, as sorted positions, into wpos. */
static int weak_job(job_t *job, int64_t lo, int64_t hi, scratch_t *s, uint64_t *acc)
{
    (void)acc;
    inj_t *c = (inj_t *)job->ctx;
    const proc_t *pr = &c->wproc;
    for (int64_t rb = lo; rb < hi; rb++) {
        const uint32_t nb = proc_nb(pr, rb), drawn = proc_drawn(pr, rb);
        if (scratch_need(s, drawn) < 0)
            return -1;
        draw_block(pr->key, rb, nb, drawn, s->seen, s->chosen);
        int64_t *out = c->wpos + c->woff[rb];
        const int64_t base = rb << BLOCK_SHIFT;
        int64_t seg = -1;
        const uint32_t words = (nb + 63) / 64;
        for (uint32_t i = 0; i < words; i++) {
            uint64_t w = s->seen[i];
            s->seen[i] = 0;
            if (pr->complement) {
                w = ~w;
                if (i == words - 1 && (nb & 63))
                    w &= (1ULL << (nb & 63)) - 1;
            }
            for (; w; w &= w - 1)
                *out++ = weak_position(&c->weak, base + (int64_t)(i * 64 + LOWEST_SET(w)), &seg);
        }
    }
    return 0;
}

static int64_t lower_bound(const int64_t *a, int64_t n, int64_t x)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The drawn positions of block b (nb positions, c of them, distinct), in draw order: the body
 * runs for each with `pos` set; `seen` (zero on entry) gets their bits. */
#define FOR_EACH_DRAW_L(key, b, nb, L, c, seen, body)                                              \
    do {                                                                                           \
        const unsigned per_ = 64 / (L);                                                            \
        const uint64_t mask_ = (1ULL << (L)) - 1, base_ = (key) + GAMMA * ((uint64_t)(b) << 32);  \
        uint32_t got_ = 0;                                                                         \
        for (uint64_t j_ = 0; got_ < (c); j_++) {                                                  \
            uint64_t w_ = mix64(base_ + GAMMA * j_);                                               \
            for (unsigned t_ = 0; t_ < per_; t_++, w_ >>= (L)) {                                   \
                const uint32_t pos = (uint32_t)(w_ & mask_);                                       \
                if (pos >= (nb))                                                                   \
                    continue;                                                                      \
                const uint64_t bit_ = 1ULL << (pos & 63);                                          \
                if ((seen)[pos >> 6] & bit_)                                                       \
                    continue;                                                                      \
                (seen)[pos >> 6] |= bit_;                                                          \
                do {                                                                               \
                    body;                                                                          \
                } while (0); /* a `continue` in the body ends it: the draw still counts */         \
                if (++got_ == (c))                                                                 \
                    break;                                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* The same; a full block (the common case) with its constants known to the compiler. */
#define FOR_EACH_DRAW(key, b, nb, c, seen, body)                                                   \
    do {                                                                                           \
        if ((nb) == BLOCK_BITS) {                                                                  \
            FOR_EACH_DRAW_L(key, b, BLOCK_BITS, BLOCK_SHIFT, c, seen, body);                       \
        } else {                                                                                   \
            const unsigned Lb_ = bit_length((nb) - 1) ? bit_length((nb) - 1) : 1;                  \
            FOR_EACH_DRAW_L(key, b, nb, Lb_, c, seen, body);                                       \
        }                                                                                          \
    } while (0)

/* Bits of the element of `pos` (2**shift bits, shift <= 6) in its word. */
static inline uint64_t lane_of(uint32_t pos, int shift)
{
    const unsigned width = 1u << shift;
    const uint64_t ones = width == 64 ? ~0ULL : (1ULL << width) - 1;
    return ones << ((pos & 63) & ~(width - 1));
}

/* Record a kept flip: count its element if it is the element's first, and whether it held 1. */
#define KEEP(pos)                                                                                  \
    do {                                                                                           \
        const uint64_t fw_ = flip[(pos) >> 6];                                                     \
        touched += (fw_ & lane_of((pos), shift)) == 0;                                             \
        flip[(pos) >> 6] = fw_ | (1ULL << ((pos) & 63));                                           \
        ones += (from[(pos) >> 3] >> ((pos) & 7)) & 1;                                             \
        kept[m++] = (uint16_t)(pos);                                                               \
    } while (0)

/* Blocks [lo, hi) of the tensor: draw, thin and apply their flips; acc += (flipped, ones, touched, weak).
 *
 * Per block: (copying, not streaming) the block is copied first, so what follows reads cached
 * lines; pass 1 draws the candidates (prefetching their lines where the data is not cached);
 * pass 2 thins them and counts what they do; then the flips are applied (in the copy's cached
 * lines, or by one pass XORing the block's bitmap, or byte by byte in place). */
static int inject_job(job_t *job, int64_t lo, int64_t hi, scratch_t *s, uint64_t *acc)
{
    inj_t *c = (inj_t *)job->ctx;
    const proc_t *pr = &c->strong;
    const int has_weak = c->weak.kind != WEAK_NONE;
    const int general = has_weak || c->thin; /* drawn and kept differ: two bitmaps */
    uint64_t *seen = s->seen, *flip = general ? s->flip : s->seen;
    const int64_t n_w = has_weak ? c->woff[c->wproc.n_blocks] : 0;
    int64_t wi = n_w ? lower_bound(c->wpos, n_w, lo << BLOCK_SHIFT) : 0;
    const int shift = c->elem_shift;
    const weak_t wk = c->weak; /* locals: the stores below may not alias them */
    const uint64_t tkey = c->tkey, thr[2] = {c->thr[0], c->thr[1]};
#define PREFETCH_AT(pos) PREFETCH_W(blk + ((pos) >> 3))
    for (int64_t b = lo; b < hi; b++) {
        const int64_t off = b * BLOCK_BYTES;
        const size_t len = (size_t)(c->n_bytes - off < BLOCK_BYTES ? c->n_bytes - off : BLOCK_BYTES);
        const uint32_t nb = (uint32_t)(len * 8);
        const int64_t base = b << BLOCK_SHIFT;
        uint8_t *blk = c->dst + off;
        const uint8_t *from = c->src ? c->src + off : blk; /* the block's bytes before injection */
        const uint32_t drawn = proc_drawn(pr, b);
        int64_t we = wi;
        while (we < n_w && c->wpos[we] < base + nb)
            we++;
        const uint32_t n_draw = pr->complement ? nb : drawn, n_keep = n_draw + (uint32_t)(we - wi);
        if (we - wi > BLOCK_BITS || scratch_need(s, n_keep < nb ? (n_keep > n_draw ? n_keep : n_draw)
                                                                 : (nb > n_draw ? nb : n_draw)) < 0)
            return -1;
        /* the lines pass 2 reads: copied now, or fetched in one sweep (a block read whole anyway), or
         * each asked for as pass 1 draws it */
        int prefetch = 0;
        if (c->src && !c->stream)
            copy_block(blk, from, len);
        else if (c->src)
            for (size_t i = 0; i < len; i += 64)
                PREFETCH_R(from + i);
        else if (n_draw + (uint32_t)(we - wi) >= len / DENSE_BYTES_PER_FLIP)
            for (size_t i = 0; i < len; i += 64)
                PREFETCH_W(blk + i);
        else
            prefetch = 1;
        uint16_t *rec = s->chosen, *kept = general ? s->kept : s->chosen;
        uint32_t m = 0, n_rec = 0, n_cand = 0, weak_kept = 0;
        uint64_t ones = 0, touched = 0;

        /* pass 1: bits at the rate of every bit (less those of the weak set), then the weak set's */
        if (!general && !pr->complement) {
            FOR_EACH_DRAW(pr->key, b, nb, drawn, seen, {
                touched += (seen[pos >> 6] & lane_of(pos, shift) & ~bit_) == 0;
                if (prefetch)
                    PREFETCH_AT(pos);
                kept[m++] = (uint16_t)pos;
            });
            n_rec = m;
        } else if (!pr->complement) { /* general: rec lists the drawn, kept (for now) the candidates */
            FOR_EACH_DRAW(pr->key, b, nb, drawn, seen, {
                rec[n_rec++] = (uint16_t)pos;
                if (has_weak && weak_contains(&wk, base + pos))
                    continue;
                if (prefetch)
                    PREFETCH_AT(pos);
                kept[n_cand++] = (uint16_t)pos;
            });
        } else { /* the drawn positions are the ones not chosen */
            FOR_EACH_DRAW(pr->key, b, nb, drawn, seen, { (void)pos; });
            const uint32_t words = (nb + 63) / 64;
            for (uint32_t i = 0; i < words; i++) {
                uint64_t w = ~seen[i];
                seen[i] = 0;
                if (i == words - 1 && (nb & 63))
                    w &= (1ULL << (nb & 63)) - 1;
                for (; w; w &= w - 1) {
                    const uint32_t pos = i * 64 + LOWEST_SET(w);
                    if (!has_weak || !weak_contains(&wk, base + pos))
                        kept[n_cand++] = (uint16_t)pos;
                }
            }
            if (!general) { /* the chosen are the kept: count the elements, set the bitmap */
                for (uint32_t i = 0; i < n_cand; i++) {
                    const uint32_t pos = kept[i];
                    touched += (seen[pos >> 6] & lane_of(pos, shift)) == 0;
                    seen[pos >> 6] |= 1ULL << (pos & 63);
                }
                m = n_rec = n_cand;
            }
        }
        const uint32_t n_strong = general ? n_cand : m;
        for (; wi < we; wi++) {
            if (c->wpos[wi] < base)
                return -1; /* not sorted: a malformed weak set */
            if (n_cand == s->cap)
                return -1; /* more chosen bits than the block holds: a malformed weak set */
            const uint32_t pos = (uint32_t)(c->wpos[wi] - base);
            if (prefetch)
                PREFETCH_AT(pos);
            kept[n_cand++] = (uint16_t)pos;
        }

        /* pass 2: thinning and counts (the candidates' lines are in cache by now) */
        const int copied = c->src && !c->stream;
        if (!general && copied) { /* count and flip in one go: the copy's lines are cached */
            for (uint32_t i = 0; i < m; i++) {
                const uint32_t pos = kept[i];
                const uint8_t byte = blk[pos >> 3];
                ones += (byte >> (pos & 7)) & 1;
                blk[pos >> 3] = byte ^ (uint8_t)(1u << (pos & 7));
            }
        } else if (!general) {
            for (uint32_t i = 0; i < m; i++)
                ones += (from[kept[i] >> 3] >> (kept[i] & 7)) & 1;
        } else if (c->thin) { /* without branches: half the bits may be thinned away at random */
            for (uint32_t i = 0; i < n_cand; i++) {
                const uint32_t pos = kept[i];
                const unsigned v = (from[pos >> 3] >> (pos & 7)) & 1;
                const unsigned keep = (mix64(tkey + GAMMA * (uint64_t)(base + pos)) >> 11) < thr[v];
                const uint64_t fw = flip[pos >> 6];
                touched += keep & ((fw & lane_of(pos, shift)) == 0);
                flip[pos >> 6] = fw | ((uint64_t)keep << (pos & 63));
                ones += keep & v;
                weak_kept += keep & (i >= n_strong);
                kept[m] = (uint16_t)pos; /* m <= i: kept[] is compacted in place */
                m += keep;
            }
        } else {
            for (uint32_t i = 0; i < n_cand; i++) {
                const uint32_t pos = kept[i];
                KEEP(pos);
            }
            weak_kept = n_cand - n_strong;
        }

        /* apply */
        if (c->src && c->stream) {
            xor_block(blk, from, flip, len, 1);
        } else if (c->src) { /* the copy's lines are cached */
            if (general)
                for (uint32_t i = 0; i < m; i++)
                    blk[kept[i] >> 3] ^= (uint8_t)(1u << (kept[i] & 7));
        } else if (m && m >= len / DENSE_BYTES_PER_FLIP) { /* in place, dense: one pass over the block */
            xor_block(blk, blk, flip, len, 0);
        } else {
            for (uint32_t i = 0; i < m; i++)
                blk[kept[i] >> 3] ^= (uint8_t)(1u << (kept[i] & 7));
        }
        clear_block(seen, rec, n_rec);
        if (general)
            clear_block(flip, kept, m);
        acc[0] += m;
        acc[1] += ones;
        acc[2] += touched;
        acc[3] += weak_kept;
    }
#undef PREFETCH_AT
    return 0;
}

/* ------------------------------------------------------------------ argument parsing */
typedef struct {
    Py_buffer b[12];
    int n;
} bufs_t;

static void bufs_release(bufs_t *bs)
{
    for (int i = 0; i < bs->n; i++)
        PyBuffer_Release(&bs->b[i]);
    bs->n = 0;
}

/* Whether a buffer format is a native little-endian 64-bit integer ("l"/"q", optionally "@", "=", "<"). */
static int is_int64_format(const char *f)
{
    if (f == NULL)
        return 0;
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    return (f[0] == 'l' || f[0] == 'q') && f[1] == '\0';
}

/* A C-contiguous buffer of obj (int64 if `int64`, else bytes) with at least min_len items. */
static void *get_buf(bufs_t *bs, PyObject *obj, int int64, int writable, Py_ssize_t min_len, const char *what)
{
    Py_buffer *v = &bs->b[bs->n];
    int flags = PyBUF_C_CONTIGUOUS | (int64 ? PyBUF_FORMAT : 0) | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0)
        return NULL;
    bs->n++;
    if (int64 && (v->itemsize != 8 || !is_int64_format(v->format))) {
        PyErr_Format(PyExc_TypeError, "%s must be int64", what);
        return NULL;
    }
    if (v->len / (int64 ? 8 : 1) < min_len) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd items, needs %zd", what, v->len / (int64 ? 8 : 1), min_len);
        return NULL;
    }
    return v->buf;
}

/* The weak set of a tuple (see errormodels/inject/weak.py, _kernel_args). */
static int parse_weak(PyObject *t, weak_t *w, bufs_t *bs, int64_t n_bits, int full)
{
    memset(w, 0, sizeof(*w));
    if (t == Py_None)
        return 0;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 1) {
        PyErr_SetString(PyExc_TypeError, "weak must be None or a tuple");
        return -1;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    if (kind == WEAK_PIECES) {
        PyObject *wq, *bits;
        long long n, head, first, start, n_pieces;
        int shift;
        int dummy;
        if (!PyArg_ParseTuple(t, "iLOLOLLiL", &dummy, &n, &wq, &head, &bits, &first, &start, &shift, &n_pieces))
            return -1;
        if (shift < 0 || shift > 32 || n < 0 || head < 0 || first < 0 || start < 0 || n_pieces < 0) {
            PyErr_SetString(PyExc_ValueError, "bad weak pieces");
            return -1;
        }
        w->kind = WEAK_PIECES;
        w->n = n, w->head = head, w->first = first, w->start = start, w->shift = shift;
        Py_ssize_t n_wq = (Py_ssize_t)((n + head + (1LL << shift) - 1) >> shift);
        if (!(w->wq = get_buf(bs, wq, 1, 0, n_wq, "weak pieces")))
            return -1;
        w->n_wq = n_wq;
        if (!(w->bits = get_buf(bs, bits, 0, 0, (Py_ssize_t)((n_pieces + 7) / 8), "weak piece bits")))
            return -1;
        /* every tensor bit's piece must lie in the bitmap */
        if (n_bits > 0 && (((start + n_bits - 1) >> shift) - first >= n_pieces || (start >> shift) < first)) {
            PyErr_SetString(PyExc_ValueError, "weak piece bits do not cover the tensor");
            return -1;
        }
        for (Py_ssize_t i = full ? 0 : n_wq; i < n_wq; i++) {
            const int64_t q = w->wq[i] - first;
            if (q < 0 || q >= n_pieces || (i && w->wq[i] <= w->wq[i - 1])) {
                PyErr_SetString(PyExc_ValueError, "weak pieces must be sorted, distinct and in the bitmap");
                return -1;
            }
        }
        return 0;
    }
    if (kind == WEAK_BITLINES) {
        PyObject *seg_t, *seg_key, *idx0, *cum, *keys, *table;
        long long n, row_bits, first_run, start, banks;
        int shift, dummy;
        if (!PyArg_ParseTuple(t, "iLOOOOOOLiLLL", &dummy, &n, &seg_t, &seg_key, &idx0, &cum, &keys, &table, &row_bits,
                              &shift, &first_run, &start, &banks))
            return -1;
        if (shift < 0 || shift > 40 || n < 0 || row_bits < 1 || row_bits > (1 << 20) || banks < 1 || start < 0 ||
            first_run < 0) {
            PyErr_SetString(PyExc_ValueError, "bad weak bitlines");
            return -1;
        }
        w->kind = WEAK_BITLINES;
        w->n = n, w->row_bits = row_bits, w->shift = shift, w->first_run = first_run, w->start = start;
        const int64_t n_seg = n_bits > 0 ? ((start + n_bits - 1) >> shift) - first_run + 1 : 0;
        if (n_bits > 0 && (start >> shift) != first_run) {
            PyErr_SetString(PyExc_ValueError, "weak bitlines: first_run is not the tensor's");
            return -1;
        }
        w->n_seg = n_seg;
        if (!(w->seg_t = get_buf(bs, seg_t, 1, 0, n_seg, "seg_t")) ||
            !(w->seg_key = get_buf(bs, seg_key, 1, 0, n_seg, "seg_key")) ||
            !(w->idx0 = get_buf(bs, idx0, 1, 0, n_seg, "idx0")) ||
            !(w->cum = get_buf(bs, cum, 1, 0, n_seg + 1, "cum")) || !(w->keys = get_buf(bs, keys, 1, 0, 0, "keys")) ||
            !(w->table = get_buf(bs, table, 0, 0, (Py_ssize_t)((banks * row_bits + 7) / 8), "bitline table")))
            return -1;
        w->n_keys = bs->b[bs->n - 2].len / 8;
        if (n_seg && (w->cum[n_seg] != n || w->cum[0] != 0)) {
            PyErr_SetString(PyExc_ValueError, "weak bitlines: cum does not end at n");
            return -1;
        }
        for (int64_t j = full ? 0 : n_seg; j < n_seg; j++) {
            const int64_t k = w->seg_key[j] >> 20, cnt = w->cum[j + 1] - w->cum[j];
            const int64_t t0 = j ? ((first_run + j) << shift) - start : 0;
            const int64_t t1 = j + 1 < n_seg ? ((first_run + j + 1) << shift) - start : n_bits;
            if (k < 0 || k >= banks || w->seg_t[j] != t0 || (w->seg_key[j] & ((1 << 20) - 1)) + (t1 - t0) > row_bits ||
                cnt < 0 || w->idx0[j] < 0 || w->idx0[j] + cnt > w->n_keys) {
                PyErr_SetString(PyExc_ValueError, "weak bitlines: a segment is out of range");
                return -1;
            }
            /* its weak bitlines lie in it (the keys ascend: checked below) */
            if (cnt && (w->keys[w->idx0[j]] < w->seg_key[j] || w->keys[w->idx0[j] + cnt - 1] >= w->seg_key[j] + (t1 - t0))) {
                PyErr_SetString(PyExc_ValueError, "weak bitlines: keys do not fit their segment");
                return -1;
            }
        }
        for (int64_t i = full ? 1 : w->n_keys; i < w->n_keys; i++) {
            if (w->keys[i] <= w->keys[i - 1]) {
                PyErr_SetString(PyExc_ValueError, "weak bitlines: keys do not ascend");
                return -1;
            }
        }
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "unknown weak set kind %ld", kind);
    return -1;
}

/* ------------------------------------------------------------------ inject() */
PyDoc_STRVAR(inject_doc,
"inject(dst, src, elem_shift, key, p, weak, p_weak, thr0, thr1, threads)\n"
"    -> (flipped, ones_flipped, touched, weak_flipped)\n\n"
"Flip the bits of dst (a writable byte buffer) as a flip plan says, after copying src into it\n"
"(unless src is None): bits outside the weak set at rate p (key), bits of the weak set (None or a\n"
"tuple from errormodels.inject.weak) at p_weak (subkey 1 of key), each chosen bit then kept if the\n"
"top 53 bits of mix64(subkey 2 + GAMMA * position) are below thr0 (it holds 0) or thr1 (it holds 1).\n"
"Returns the flips, the flips of bits that held 1, the elements of 2**elem_shift bits\n"
"(2 <= elem_shift <= 6) touched and the flips in the weak set; on up to `threads` threads.");

static PyObject *py_inject(PyObject *self, PyObject *args)
{
    PyObject *dst_obj, *src_obj, *weak_obj;
    unsigned long long key, thr0, thr1;
    double p, p_weak;
    int elem_shift, threads;
    bufs_t bs;
    bs.n = 0;
    inj_t c;
    memset(&c, 0, sizeof(c));
    int procs = 0;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OOiKdOdKKi", &dst_obj, &src_obj, &elem_shift, &key, &p, &weak_obj, &p_weak, &thr0,
                          &thr1, &threads))
        return NULL;
    if (elem_shift < 2 || elem_shift > 6) {
        PyErr_Format(PyExc_ValueError, "elem_shift must be 2 .. 6, got %d", elem_shift);
        return NULL;
    }
    if (!(p >= 0.0 && p <= 1.0) || !(p_weak >= 0.0 && p_weak <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "p and p_weak must be in [0, 1]");
        return NULL;
    }
    if (thr0 > (1ULL << 53) || thr1 > (1ULL << 53)) {
        PyErr_SetString(PyExc_ValueError, "thresholds must be <= 2**53");
        return NULL;
    }
    if (!(c.dst = get_buf(&bs, dst_obj, 0, 1, 0, "dst")))
        goto done;
    c.n_bytes = bs.b[0].len;
    c.n_bits = c.n_bytes * 8;
    if (src_obj != Py_None) {
        if (!(c.src = get_buf(&bs, src_obj, 0, 0, 0, "src")))
            goto done;
        if (bs.b[1].len != c.n_bytes) {
            PyErr_SetString(PyExc_ValueError, "src and dst differ in size");
            goto done;
        }
        const char *s0 = (const char *)c.src, *d0 = (const char *)c.dst;
        if (c.n_bytes && s0 < d0 + c.n_bytes && d0 < s0 + c.n_bytes) {
            PyErr_SetString(PyExc_ValueError, "src and dst overlap (give src=None to flip in place)");
            goto done;
        }
    }
    if (parse_weak(weak_obj, &c.weak, &bs, c.n_bits, 0) < 0)
        goto done;
    c.elem_shift = elem_shift;
    c.stream = c.src != NULL && c.n_bytes >= STREAM_MIN_BYTES;
    c.tkey = subkey(key, 2);
    const uint64_t wkey = subkey(key, 1);
    c.thr[0] = thr0;
    c.thr[1] = thr1;
    c.thin = thr0 < (1ULL << 53) || thr1 < (1ULL << 53);
    if (proc_init(&c.strong, key, c.n_bits, p) < 0 ||
        proc_init(&c.wproc, wkey, c.weak.kind ? c.weak.n : 0, p_weak) < 0) {
        PyErr_NoMemory();
        procs = 1;
        goto done;
    }
    procs = 1;
    int failed = 0;
    uint64_t acc[4] = {0, 0, 0, 0};
    int64_t *woff = NULL;
    Py_BEGIN_ALLOW_THREADS
    if (c.weak.kind) { /* the weak set's chosen bits first: few, sorted, then merged block by block */
        const int64_t n_rb = c.wproc.n_blocks;
        woff = malloc((size_t)(n_rb + 1) * sizeof(int64_t));
        if (woff) {
            woff[0] = 0;
            for (int64_t rb = 0; rb < n_rb; rb++)
                woff[rb + 1] = woff[rb] + proc_chosen(&c.wproc, rb);
            c.woff = woff;
            c.wpos = malloc((size_t)(woff[n_rb] + 1) * sizeof(int64_t));
        }
        if (!woff || !c.wpos) {
            failed = 1;
        } else if (n_rb) {
            job_t wj = {0};
            wj.fn = weak_job, wj.ctx = &c, wj.n_items = n_rb, wj.chunk = 1, wj.need_scratch = 1;
            run_job(&wj, woff[n_rb] > 4 * BLOCK_BITS ? threads : 1);
            failed = wj.failed;
        }
    }
    if (!failed) {
        job_t j = {0};
        j.fn = inject_job, j.ctx = &c, j.chunk = CHUNK_BLOCKS, j.need_scratch = 1;
        j.n_items = (c.n_bits + BLOCK_BITS - 1) >> BLOCK_SHIFT;
        /* a helper wakes in 10-50 us: it pays off for work of a few hundred (about 0.1 ns per byte
         * copied, 4 ns per flip) */
        const double q = c.strong.none ? 0.0 : c.strong.complement ? 1.0 : p;
        const double work_ns = (double)c.n_bytes * (c.src ? 0.1 : 0.01) +
                               4.0 * ((double)c.n_bits * q + (c.weak.kind ? (double)woff[c.wproc.n_blocks] : 0.0));
        run_job(&j, work_ns > PARALLEL_MIN_NS ? threads : 1);
        failed = j.failed;
        memcpy(acc, j.acc, sizeof(acc));
    }
    free(c.wpos);
    free(woff);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_BuildValue("KKKK", (unsigned long long)acc[0], (unsigned long long)acc[1], (unsigned long long)acc[2],
                           (unsigned long long)acc[3]);
done:
    if (procs) {
        proc_free(&c.strong);
        proc_free(&c.wproc);
    }
    bufs_release(&bs);
    return result;
}

PyDoc_STRVAR(check_weak_doc,
"check_weak(weak, n_bits) -> None\n\n"
"Check a weak set's tuple throughout (inject checks only what costs O(1)): raises ValueError if\n"
"it does not describe a weak set of a tensor of n_bits bits.");

static PyObject *py_check_weak(PyObject *self, PyObject *args)
{
    PyObject *weak_obj;
    long long n_bits;
    weak_t w;
    bufs_t bs;
    bs.n = 0;
    if (!PyArg_ParseTuple(args, "OL", &weak_obj, &n_bits))
        return NULL;
    const int rc = parse_weak(weak_obj, &w, &bs, n_bits, 1);
    bufs_release(&bs);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ block counts, tables, ranks */
PyDoc_STRVAR(block_counts_doc,
"block_counts(out, n, q, key) -> None\n\n"
"The drawn counts of the blocks of a process over n positions at rate q (0 <= q <= 1/2) into the\n"
"int64 buffer out (one per block of 2**16 positions).");

static PyObject *py_block_counts(PyObject *self, PyObject *args)
{
    PyObject *out_obj;
    long long n;
    double q;
    unsigned long long key;
    bufs_t bs;
    bs.n = 0;
    if (!PyArg_ParseTuple(args, "OLdK", &out_obj, &n, &q, &key))
        return NULL;
    if (n < 0 || !(q >= 0.0 && q <= 0.5)) {
        PyErr_SetString(PyExc_ValueError, "block_counts needs n >= 0 and 0 <= q <= 1/2");
        return NULL;
    }
    const int64_t n_blocks = (n + BLOCK_BITS - 1) >> BLOCK_SHIFT;
    int64_t *out = get_buf(&bs, out_obj, 1, 1, n_blocks, "out");
    if (!out) {
        bufs_release(&bs);
        return NULL;
    }
    proc_t pr;
    if (proc_init(&pr, key, n, q) < 0) {
        bufs_release(&bs);
        return PyErr_NoMemory();
    }
    for (int64_t b = 0; b < n_blocks; b++)
        out[b] = proc_drawn(&pr, b);
    proc_free(&pr);
    bufs_release(&bs);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cdf_table_doc,
"cdf_table(n, q) -> (k0, [cdf ...])\n\n"
"The count table of Binomial(n, q) (0 < q <= 1/2) the kernel draws counts from.");

static PyObject *py_cdf_table(PyObject *self, PyObject *args)
{
    long long n;
    double q;
    if (!PyArg_ParseTuple(args, "Ld", &n, &q))
        return NULL;
    if (n < 0 || n > BLOCK_BITS || !(q >= 0.0 && q <= 0.5)) {
        PyErr_SetString(PyExc_ValueError, "cdf_table needs 0 <= n <= 2**16 and 0 <= q <= 1/2");
        return NULL;
    }
    table_t t;
    if (table_build(&t, n, q) < 0)
        return PyErr_NoMemory();
    PyObject *list = PyList_New(t.len);
    for (int i = 0; list && i < t.len; i++)
        PyList_SET_ITEM(list, i, PyFloat_FromDouble(t.cdf[i]));
    free(t.cdf);
    if (!list)
        return NULL;
    return Py_BuildValue("LN", (long long)t.k0, list);
}

PyDoc_STRVAR(sample_ranks_doc,
"sample_ranks(out, counts, key, n_bits, b0, b1) -> None\n\n"
"Write the block sampler's drawn positions of blocks [b0, b1) of a process over n_bits positions,\n"
"sorted, into the int64 buffer out (sum(counts[b0:b1]) entries).");

static PyObject *sample_ranks(PyObject *self, PyObject *args)
{
    PyObject *out_obj, *counts_obj;
    unsigned long long key;
    long long n_bits, b0, b1;
    bufs_t bs;
    bs.n = 0;
    if (!PyArg_ParseTuple(args, "OOKLLL", &out_obj, &counts_obj, &key, &n_bits, &b0, &b1))
        return NULL;
    if (n_bits < 0) {
        PyErr_SetString(PyExc_ValueError, "n_bits must be >= 0");
        return NULL;
    }
    int64_t *out = get_buf(&bs, out_obj, 1, 1, 0, "out");
    const int64_t *counts = out ? get_buf(&bs, counts_obj, 1, 0, 0, "counts") : NULL;
    if (!counts) {
        bufs_release(&bs);
        return NULL;
    }
    const long long n_counts = bs.b[1].len / 8, n_blocks = (n_bits + BLOCK_BITS - 1) / BLOCK_BITS;
    if (b0 < 0 || b1 < b0 || b1 > n_blocks || n_counts < n_blocks) {
        PyErr_Format(PyExc_ValueError, "block range [%lld, %lld) and %lld counts do not fit %lld blocks", b0, b1,
                     n_counts, n_blocks);
        bufs_release(&bs);
        return NULL;
    }
    long long total = 0;
    for (long long b = b0; b < b1; b++) {
        const long long nb = n_bits - b * BLOCK_BITS < BLOCK_BITS ? n_bits - b * BLOCK_BITS : BLOCK_BITS;
        if (counts[b] < 0 || counts[b] > nb) {
            PyErr_Format(PyExc_ValueError, "count %lld of block %lld is outside [0, %lld]", (long long)counts[b], b,
                         nb);
            bufs_release(&bs);
            return NULL;
        }
        total += counts[b];
    }
    if (total != bs.b[0].len / 8) {
        PyErr_Format(PyExc_ValueError, "out holds %zd positions, the blocks %lld", bs.b[0].len / 8, total);
        bufs_release(&bs);
        return NULL;
    }
    scratch_t s;
    if (scratch_init(&s) < 0 || scratch_need(&s, BLOCK_BITS) < 0) {
        bufs_release(&bs);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    for (long long b = b0; b < b1; b++) {
        const uint32_t c = (uint32_t)counts[b];
        if (c == 0)
            continue;
        const uint32_t nb = (uint32_t)(n_bits - b * BLOCK_BITS < BLOCK_BITS ? n_bits - b * BLOCK_BITS : BLOCK_BITS);
        draw_block(key, b, nb, c, s.seen, s.chosen);
        const int64_t base = (int64_t)b * BLOCK_BITS;
        uint64_t summary[BLOCK_WORDS / 64] = {0}; /* which words of `seen` hold a position */
        for (uint32_t i = 0; i < c; i++)
            summary[s.chosen[i] >> 12] |= 1ULL << ((s.chosen[i] >> 6) & 63);
        for (size_t g = 0; g < BLOCK_WORDS / 64; g++) { /* the set bits, in order */
            for (uint64_t sw = summary[g]; sw; sw &= sw - 1) {
                const size_t i = g * 64 + LOWEST_SET(sw);
                for (uint64_t w = s.seen[i]; w; w &= w - 1)
                    *out++ = base + (int64_t)(i * 64 + LOWEST_SET(w));
                s.seen[i] = 0;
            }
        }
    }
    Py_END_ALLOW_THREADS
    scratch_free(&s);
    bufs_release(&bs);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ weak wordline pieces
 * Piece q (linear bits q 2^pshift ..) is weak where weak_mask(seed, kind, id) holds for
 * id = bank << 40 | row << 20 | bit_in_row >> gshift of its first bit: top 53 bits of
 * mix64(id ^ salt) below thr. Runs (run_bytes consecutive linear bytes in one row) are walked
 * with an odometer over (bank, row, slot), so no division per piece.
 */
typedef struct {
    uint64_t salt, thr;
    int gshift, pshift, interleave;
    int64_t first, n_pieces, banks, rows, row_bytes, line_bytes, run_bytes;
    uint64_t *out;
} pieces_t;

typedef struct {
    int64_t bank, row, slot, byte0; /* the run's place */
    int64_t k, run_pieces;          /* piece within the run */
} odo_t;

static void odo_locate(const pieces_t *pc, odo_t *o, int64_t q)
{
    const int64_t lin_bit = q << pc->pshift;
    const int64_t run = (lin_bit >> 3) / pc->run_bytes;
    const int64_t run_bits = pc->run_bytes * 8;
    o->run_pieces = run_bits >> pc->pshift;
    o->k = (lin_bit - run * run_bits) >> pc->pshift;
    if (pc->interleave == 0) { /* row */
        o->bank = run / pc->rows, o->row = run % pc->rows, o->slot = 0;
    } else if (pc->interleave == 1) { /* bank */
        o->bank = run % pc->banks, o->row = run / pc->banks, o->slot = 0;
    } else { /* line */
        const int64_t slots = pc->row_bytes / pc->line_bytes, s = run / pc->banks;
        o->bank = run % pc->banks, o->slot = s % slots, o->row = s / slots;
    }
    o->byte0 = o->slot * pc->line_bytes;
}

static inline void odo_next_run(const pieces_t *pc, odo_t *o)
{
    o->k = 0;
    if (pc->interleave == 0) {
        if (++o->row == pc->rows)
            o->row = 0, o->bank++;
    } else if (pc->interleave == 1) {
        if (++o->bank == pc->banks)
            o->bank = 0, o->row++;
    } else {
        if (++o->bank == pc->banks) {
            o->bank = 0;
            if (++o->slot == pc->row_bytes / pc->line_bytes)
                o->slot = 0, o->row++;
            o->byte0 = o->slot * pc->line_bytes;
        }
    }
}

static inline uint64_t odo_id(const pieces_t *pc, const odo_t *o)
{
    return ((uint64_t)o->bank << 40) | ((uint64_t)o->row << 20) |
           (uint64_t)((o->byte0 * 8 + (o->k << pc->pshift)) >> pc->gshift);
}

static uint64_t hash64_scalar(const uint64_t *ids, uint64_t salt, uint64_t thr)
{
    uint64_t m = 0;
    for (int i = 0; i < 64; i++)
        m |= (uint64_t)((mix64(ids[i] ^ salt) >> 11) < thr) << i;
    return m;
}

#ifdef HAVE_AVX512_PATH
__attribute__((target("avx512f,avx512dq"))) static uint64_t hash64_avx512(const uint64_t *ids, uint64_t salt,
                                                                          uint64_t thr)
{
    const __m512i m1 = _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ULL);
    const __m512i m2 = _mm512_set1_epi64((long long)0x94D049BB133111EBULL);
    const __m512i s = _mm512_set1_epi64((long long)salt), t = _mm512_set1_epi64((long long)thr);
    uint64_t m = 0;
    for (int i = 0; i < 8; i++) {
        __m512i z = _mm512_xor_si512(_mm512_loadu_si512((const void *)(ids + 8 * i)), s);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), m1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), m2);
        z = _mm512_srli_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 31)), 11);
        m |= (uint64_t)_mm512_cmplt_epu64_mask(z, t) << (8 * i);
    }
    return m;
}
static int have_avx512 = 0;
#endif

static int pieces_job(job_t *job, int64_t lo, int64_t hi, scratch_t *s, uint64_t *acc)
{
    (void)s, (void)acc;
    const pieces_t *pc = (const pieces_t *)job->ctx;
    uint64_t ids[64];
    odo_t o;
    odo_locate(pc, &o, pc->first + lo * 64);
    for (int64_t w = lo; w < hi; w++) {
        const int64_t left = pc->n_pieces - w * 64;
        const int count = left < 64 ? (int)left : 64;
        if (pc->pshift == pc->gshift && o.k + count <= o.run_pieces) { /* one run: consecutive ids */
            const uint64_t id0 = odo_id(pc, &o);
            for (int i = 0; i < 64; i++)
                ids[i] = id0 + (uint64_t)i;
            o.k += count;
            if (o.k == o.run_pieces)
                odo_next_run(pc, &o);
        } else {
            for (int i = 0; i < count; i++) {
                ids[i] = odo_id(pc, &o);
                if (++o.k == o.run_pieces)
                    odo_next_run(pc, &o);
            }
        }
        for (int i = count; i < 64; i++)
            ids[i] = 0;
        uint64_t m;
#ifdef HAVE_AVX512_PATH
        if (have_avx512)
            m = hash64_avx512(ids, pc->salt, pc->thr);
        else
#endif
            m = hash64_scalar(ids, pc->salt, pc->thr);
        pc->out[w] = count < 64 ? m & ((1ULL << count) - 1) : m;
    }
    return 0;
}

PyDoc_STRVAR(weak_pieces_doc,
"weak_pieces(out, salt, thr, gshift, pshift, first, n_pieces, interleave, banks, rows, row_bytes,\n"
"            line_bytes, threads) -> None\n\n"
"Which of the pieces first .. first + n_pieces - 1 (2**pshift linear bits each) lie in weak\n"
"wordline groups (2**gshift bits), as bits of the uint64 words of out (bit i of word w: piece\n"
"first + 64 w + i). interleave: 0 row, 1 bank, 2 line.");

static PyObject *py_weak_pieces(PyObject *self, PyObject *args)
{
    PyObject *out_obj;
    pieces_t pc;
    unsigned long long salt, thr;
    long long first, n_pieces, banks, rows, row_bytes, line_bytes;
    int threads;
    bufs_t bs;
    bs.n = 0;
    if (!PyArg_ParseTuple(args, "OKKiiLLiLLLLi", &out_obj, &salt, &thr, &pc.gshift, &pc.pshift, &first, &n_pieces,
                          &pc.interleave, &banks, &rows, &row_bytes, &line_bytes, &threads))
        return NULL;
    if (pc.gshift < 0 || pc.gshift > 32 || pc.pshift < 0 || pc.pshift > pc.gshift || first < 0 || n_pieces < 0 ||
        pc.interleave < 0 || pc.interleave > 2 || banks < 1 || rows < 1 || row_bytes < 1 || line_bytes < 1 ||
        row_bytes % line_bytes || banks > (1 << 20) || rows > (1 << 20) || row_bytes * 8 > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "bad weak-piece geometry");
        return NULL;
    }
    pc.salt = salt, pc.thr = thr, pc.first = first, pc.n_pieces = n_pieces;
    pc.banks = banks, pc.rows = rows, pc.row_bytes = row_bytes, pc.line_bytes = line_bytes;
    pc.run_bytes = pc.interleave == 2 ? line_bytes : row_bytes;
    if (((pc.run_bytes * 8) & ((1LL << pc.pshift) - 1)) || (first + n_pieces) > (banks * rows * row_bytes * 8) >> pc.pshift) {
        PyErr_SetString(PyExc_ValueError, "pieces must divide the runs and lie in the DIMM");
        return NULL;
    }
    const int64_t n_words = (n_pieces + 63) / 64;
    if (!(pc.out = get_buf(&bs, out_obj, 0, 1, n_words * 8, "out"))) {
        bufs_release(&bs);
        return NULL;
    }
    if (((uintptr_t)pc.out & 7) != 0) {
        PyErr_SetString(PyExc_ValueError, "out must be 8-byte aligned");
        bufs_release(&bs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    job_t j = {0};
    j.fn = pieces_job, j.ctx = &pc, j.n_items = n_words, j.chunk = CHUNK_WORDS;
    run_job(&j, threads);
    Py_END_ALLOW_THREADS
    bufs_release(&bs);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(weak_ids_doc,
"weak_ids(out, salt, thr, id0, count) -> None\n\n"
"Which of the location ids id0 .. id0 + count - 1 are weak (top 53 bits of mix64(id ^ salt) below\n"
"thr), as bits of the uint64 words of out (bit i of word w: id id0 + 64 w + i).");

static PyObject *py_weak_ids(PyObject *self, PyObject *args)
{
    PyObject *out_obj;
    unsigned long long salt, thr, id0;
    long long count;
    bufs_t bs;
    bs.n = 0;
    if (!PyArg_ParseTuple(args, "OKKKL", &out_obj, &salt, &thr, &id0, &count))
        return NULL;
    if (count < 0) {
        PyErr_SetString(PyExc_ValueError, "count must be >= 0");
        return NULL;
    }
    const int64_t n_words = (count + 63) / 64;
    uint64_t *out = get_buf(&bs, out_obj, 0, 1, n_words * 8, "out");
    if (!out || ((uintptr_t)out & 7)) {
        if (out)
            PyErr_SetString(PyExc_ValueError, "out must be 8-byte aligned");
        bufs_release(&bs);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    uint64_t ids[64];
    for (int64_t w = 0; w < n_words; w++) {
        const int64_t left = count - w * 64;
        for (int i = 0; i < 64; i++)
            ids[i] = id0 + (uint64_t)(w * 64 + i);
        uint64_t m;
#ifdef HAVE_AVX512_PATH
        if (have_avx512)
            m = hash64_avx512(ids, salt, thr);
        else
#endif
            m = hash64_scalar(ids, salt, thr);
        out[w] = left < 64 ? m & ((1ULL << left) - 1) : m;
    }
    Py_END_ALLOW_THREADS
    bufs_release(&bs);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(bit_list_doc,
"bit_list(out, bits, n, offset) -> None\n\n"
"The indices (plus offset) of the set bits among the first n bits of the byte buffer bits\n"
"(little-endian), ascending, into the int64 buffer out (exactly as many entries as set bits).");

static PyObject *py_bit_list(PyObject *self, PyObject *args)
{
    PyObject *out_obj, *bits_obj;
    long long n, offset;
    bufs_t bs;
    bs.n = 0;
    if (!PyArg_ParseTuple(args, "OOLL", &out_obj, &bits_obj, &n, &offset))
        return NULL;
    int64_t *out = n >= 0 ? get_buf(&bs, out_obj, 1, 1, 0, "out") : NULL;
    const uint8_t *bits = out ? get_buf(&bs, bits_obj, 0, 0, (n + 7) / 8, "bits") : NULL;
    if (!bits) {
        if (n < 0)
            PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        bufs_release(&bs);
        return NULL;
    }
    const Py_ssize_t cap = bs.b[0].len / 8;
    Py_ssize_t got = 0;
    for (long long i = 0; i < n; i += 64) {
        uint64_t w = 0;
        const long long nbytes = (n - i + 7) / 8 < 8 ? (n - i + 7) / 8 : 8;
        memcpy(&w, bits + i / 8, (size_t)nbytes);
        if (n - i < 64)
            w &= (1ULL << (n - i)) - 1;
        got += POPCOUNT(w);
        if (got > cap)
            break;
        for (; w; w &= w - 1)
            *out++ = offset + i + LOWEST_SET(w);
    }
    bufs_release(&bs);
    if (got != cap) {
        PyErr_Format(PyExc_ValueError, "out holds %zd entries, the bits %s", cap, got > cap ? "more" : "fewer");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(pool_workers_doc, "pool_workers() -> int\n\nThe helper threads started so far (in this process).");

static PyObject *py_pool_workers(PyObject *self, PyObject *args)
{
#ifdef HAVE_POOL
    pthread_mutex_lock(&pool_mu);
    const int n = pool_workers;
    pthread_mutex_unlock(&pool_mu);
    return PyLong_FromLong(n);
#else
    return PyLong_FromLong(0);
#endif
}

PyDoc_STRVAR(bit_count_doc, "bit_count(bits, n) -> int\n\nThe set bits among the first n bits of the byte buffer bits.");

static PyObject *py_bit_count(PyObject *self, PyObject *args)
{
    PyObject *bits_obj;
    long long n;
    bufs_t bs;
    bs.n = 0;
    if (!PyArg_ParseTuple(args, "OL", &bits_obj, &n))
        return NULL;
    const uint8_t *bits = n >= 0 ? get_buf(&bs, bits_obj, 0, 0, (n + 7) / 8, "bits") : NULL;
    if (!bits) {
        if (n < 0)
            PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        bufs_release(&bs);
        return NULL;
    }
    unsigned long long got = 0;
    for (long long i = 0; i < n; i += 64) {
        uint64_t w = 0;
        const long long nbytes = (n - i + 7) / 8 < 8 ? (n - i + 7) / 8 : 8;
        memcpy(&w, bits + i / 8, (size_t)nbytes);
        if (n - i < 64)
            w &= (1ULL << (n - i)) - 1;
        got += POPCOUNT(w);
    }
    bufs_release(&bs);
    return PyLong_FromUnsignedLongLong(got);
}

static PyMethodDef methods[] = {
    {"bit_count", py_bit_count, METH_VARARGS, bit_count_doc},
    {"pool_workers", py_pool_workers, METH_NOARGS, pool_workers_doc},
    {"inject", py_inject, METH_VARARGS, inject_doc},
    {"check_weak", py_check_weak, METH_VARARGS, check_weak_doc},
    {"block_counts", py_block_counts, METH_VARARGS, block_counts_doc},
    {"cdf_table", py_cdf_table, METH_VARARGS, cdf_table_doc},
    {"sample_ranks", sample_ranks, METH_VARARGS, sample_ranks_doc},
    {"weak_pieces", py_weak_pieces, METH_VARARGS, weak_pieces_doc},
    {"bit_list", py_bit_list, METH_VARARGS, bit_list_doc},
    {"weak_ids", py_weak_ids, METH_VARARGS, weak_ids_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_flipkernel",
    "Compiled block sampler, flip-plan injection and weak wordline pieces of errormodels.inject.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__flipkernel(void)
{
#ifdef HAVE_AVX512_PATH
    __builtin_cpu_init();
    have_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
#ifdef HAVE_POOL
    static int atfork_done = 0;
    if (!atfork_done) {
        pthread_atfork(pool_prepare, pool_parent, pool_child);
        atfork_done = 1;
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "BLOCK_BITS", BLOCK_BITS) < 0 ||
              PyModule_AddIntConstant(m, "STREAM_VERSION", STREAM_VERSION) < 0 ||
#ifdef HAVE_AVX512_PATH
              PyModule_AddIntConstant(m, "AVX512", have_avx512) < 0 ||
#endif
              PyModule_AddIntConstant(m, "STREAM_MIN_BYTES", STREAM_MIN_BYTES) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
