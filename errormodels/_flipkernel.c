/*
 * Compiled kernel of errormodels.inject: the block sampler of a Bernoulli process, and
 * uniform bit flipping fused with the copy of the data.
 *
 * The stream is defined in errormodels/inject/sampler.py (the comment above _BLOCK_BITS), which also holds
 * a vectorised torch version of it; both give the same positions for the same key and counts,
 * and tests/test_inject_kernel.py checks that they do.
 *
 * For a process over n positions, cut into blocks of BLOCK_BITS positions (the last one
 * partial, nb positions), block b holds counts[b] chosen positions (drawn by the caller from
 * a binomial). They are the first counts[b] distinct values, in draw order, of
 *     word j  = mix64(key + GAMMA * (b * 2^32 + j))        j = 0, 1, ...
 *     draw t  = (word >> (t * L)) & (2^L - 1)              t = 0 .. 64/L - 1
 * that are below nb, where L = max(1, bit_length(nb - 1)). A uniform random subset of the
 * block, of the given size: with the binomial counts, every position is chosen independently
 * with probability p.
 *
 * Every function releases the GIL while it works, so callers may run disjoint block ranges
 * in parallel threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif

#define BLOCK_SHIFT 16
#define BLOCK_BITS (1 << BLOCK_SHIFT)
#define BLOCK_BYTES (BLOCK_BITS / 8)
#define BLOCK_WORDS (BLOCK_BITS / 64)
#define GAMMA 0x9E3779B97F4A7C15ULL
#define STREAM_VERSION 1 /* errormodels.inject._STREAM_VERSION must match: else the build is stale */
#define DENSE_BYTES_PER_FLIP 256 /* in place, blocks with flips this close are rewritten whole */
#ifndef STREAM_MIN_BYTES
#define STREAM_MIN_BYTES (16 << 20) /* copies this large (with their source, beyond a typical L3) stream */
#endif

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#if defined(__GNUC__) || defined(__clang__)
#define LOWEST_SET(w) ((unsigned)__builtin_ctzll(w))
#else
static unsigned lowest_set(uint64_t w)
{
    unsigned k = 0;
    while (!((w >> k) & 1))
        k++;
    return k;
}
#define LOWEST_SET(w) lowest_set(w)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH_W(p) __builtin_prefetch((p), 1)
#else
#define PREFETCH_W(p) ((void)(p))
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

/* Choose c distinct positions of block b (nb positions): set them in `seen` (all zero on
 * entry) and list them, in draw order, in `chosen`. */
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

/* Whether `pos` is the lowest chosen position of its element (2**shift bits, shift <= 6) in the
 * block's bitmap: each touched element is then counted once. */
static inline int first_in_element(const uint64_t *seen, uint32_t pos, int shift)
{
    const unsigned k = pos & 63;
    const unsigned lane = k & ~((1u << shift) - 1); /* first bit of the element in its word */
    const uint64_t below = ((1ULL << k) - 1) & ~((1ULL << lane) - 1);
    return (seen[pos >> 6] & below) == 0;
}

/* dst = src ^ mask over len bytes (mask: a block's bitmap, little-endian: bit k of byte i is
 * position 8 i + k). With `stream`, 16-byte non-temporal stores: a large copy then leaves the
 * cache to its source instead of evicting it (returns whether any were issued). */
static int xor_block(uint8_t *dst, const uint8_t *src, const uint64_t *mask, size_t len, int stream)
{
    size_t i = 0;
    int streamed = 0;
#if defined(__SSE2__) || defined(_M_X64)
    if (stream && ((uintptr_t)dst & 15) == 0) {
        for (; i + 16 <= len; i += 16) {
            const __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)),
                                            _mm_load_si128((const __m128i *)((const uint8_t *)mask + i)));
            _mm_stream_si128((__m128i *)(dst + i), v);
        }
        streamed = 1;
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

/* Whether a buffer format is a native little-endian 64-bit integer ("l"/"q", optionally "@", "=", "<"). */
static int is_int64_format(const char *f)
{
    if (f == NULL)
        return 0;
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    return (f[0] == 'l' || f[0] == 'q') && f[1] == '\0';
}

typedef struct {
    Py_buffer dst, src, counts;
    int have_src;
} buffers_t;

static void release(buffers_t *bufs)
{
    if (bufs->dst.obj)
        PyBuffer_Release(&bufs->dst);
    if (bufs->src.obj)
        PyBuffer_Release(&bufs->src);
    if (bufs->counts.obj)
        PyBuffer_Release(&bufs->counts);
}

/* Check counts[b0:b1] against the block sizes of a process over n_bits positions; *largest
 * gets the largest of them. */
static int check_counts(const int64_t *counts, Py_ssize_t n_counts, long long n_bits, long long b0, long long b1,
                        long long *largest)
{
    *largest = 0;
    long long n_blocks = (n_bits + BLOCK_BITS - 1) / BLOCK_BITS;
    if (b0 < 0 || b1 < b0 || b1 > n_blocks || n_counts < n_blocks) {
        PyErr_Format(PyExc_ValueError, "block range [%lld, %lld) and %zd counts do not fit %lld blocks",
                     b0, b1, n_counts, n_blocks);
        return -1;
    }
    for (long long b = b0; b < b1; b++) {
        long long nb = n_bits - b * BLOCK_BITS < BLOCK_BITS ? n_bits - b * BLOCK_BITS : BLOCK_BITS;
        if (counts[b] < 0 || counts[b] > nb) {
            PyErr_Format(PyExc_ValueError, "count %lld of block %lld is outside [0, %lld]",
                         (long long)counts[b], b, nb);
            return -1;
        }
        if (counts[b] > *largest)
            *largest = counts[b];
    }
    return 0;
}

PyDoc_STRVAR(flip_uniform_doc,
"flip_uniform(dst, src, counts, key, b0, b1, elem_shift) -> (flipped, ones_flipped, touched)\n\n"
"Blocks [b0, b1) of the bytes of dst: copy them from src (unless src is None), then flip the\n"
"block sampler's positions (bit k of byte i is position 8 i + k). Returns the flips, the flips\n"
"of bits that held 1, and the elements of 2**elem_shift bits (2 <= elem_shift <= 6) touched.");

static PyObject *flip_uniform(PyObject *self, PyObject *args)
{
    PyObject *dst_obj, *src_obj, *counts_obj;
    unsigned long long key;
    long long b0, b1;
    int elem_shift;
    buffers_t bufs;
    memset(&bufs, 0, sizeof(bufs));
    if (!PyArg_ParseTuple(args, "OOOKLLi", &dst_obj, &src_obj, &counts_obj, &key, &b0, &b1, &elem_shift))
        return NULL;
    if (elem_shift < 2 || elem_shift > 6) {
        PyErr_Format(PyExc_ValueError, "elem_shift must be 2 .. 6, got %d", elem_shift);
        return NULL;
    }
    if (PyObject_GetBuffer(dst_obj, &bufs.dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        goto fail;
    if (src_obj != Py_None) {
        if (PyObject_GetBuffer(src_obj, &bufs.src, PyBUF_C_CONTIGUOUS) < 0)
            goto fail;
        if (bufs.src.len != bufs.dst.len) {
            PyErr_SetString(PyExc_ValueError, "src and dst differ in size");
            goto fail;
        }
        const char *s0 = bufs.src.buf, *d0 = bufs.dst.buf;
        if (bufs.dst.len && s0 < d0 + bufs.dst.len && d0 < s0 + bufs.src.len) {
            PyErr_SetString(PyExc_ValueError, "src and dst overlap (give src=None to flip in place)");
            goto fail;
        }
        bufs.have_src = 1;
    }
    if (PyObject_GetBuffer(counts_obj, &bufs.counts, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto fail;
    if (bufs.counts.itemsize != 8 || !is_int64_format(bufs.counts.format)) {
        PyErr_SetString(PyExc_TypeError, "counts must be int64");
        goto fail;
    }
    const int64_t *counts = (const int64_t *)bufs.counts.buf;
    const long long n_bytes = (long long)bufs.dst.len;
    const long long n_bits = n_bytes * 8;
    long long largest;
    if (check_counts(counts, bufs.counts.len / 8, n_bits, b0, b1, &largest) < 0)
        goto fail;

    /* 16-byte alignment for the SSE2 loads of the bitmap */
    uint64_t *seen_raw = calloc(BLOCK_WORDS + 2, sizeof(uint64_t));
    uint16_t *chosen = malloc((size_t)(largest + 1) * sizeof(uint16_t));
    if (!seen_raw || !chosen) {
        free(seen_raw), free(chosen);
        PyErr_NoMemory();
        goto fail;
    }
    uint64_t *seen = (uint64_t *)(((uintptr_t)seen_raw + 15) & ~(uintptr_t)15);
    uint8_t *dst = (uint8_t *)bufs.dst.buf;
    const uint8_t *src = bufs.have_src ? (const uint8_t *)bufs.src.buf : NULL;
    const int stream = n_bytes >= STREAM_MIN_BYTES;
    int streamed = 0;
    unsigned long long flipped = 0, ones = 0, touched = 0;

    Py_BEGIN_ALLOW_THREADS
    for (long long b = b0; b < b1; b++) {
        const long long off = b * BLOCK_BYTES;
        const long long len = n_bytes - off < BLOCK_BYTES ? n_bytes - off : BLOCK_BYTES;
        uint8_t *blk = dst + off;
        const uint32_t c = (uint32_t)counts[b];
        if (c == 0) {
            if (src)
                streamed |= xor_block(blk, src + off, seen, (size_t)len, stream); /* seen is all zero */
            continue;
        }
        flipped += c;
        draw_block(key, b, (uint32_t)(len * 8), c, seen, chosen);
        if (src) { /* copy and flip in one pass; the pass leaves the source block in cache */
            streamed |= xor_block(blk, src + off, seen, (size_t)len, stream);
            const uint8_t *before = src + off;
            for (uint32_t i = 0; i < c; i++) {
                const uint32_t pos = chosen[i];
                ones += (before[pos >> 3] >> (pos & 7)) & 1;
                touched += first_in_element(seen, pos, elem_shift);
            }
        } else if (c >= len / DENSE_BYTES_PER_FLIP) { /* in place, dense: one pass over the block */
            xor_block(blk, blk, seen, (size_t)len, 0);
            for (uint32_t i = 0; i < c; i++) {
                const uint32_t pos = chosen[i];
                ones += ((blk[pos >> 3] >> (pos & 7)) & 1) == 0; /* flipped from 1 */
                touched += first_in_element(seen, pos, elem_shift);
            }
        } else { /* in place, sparse: the lines are likely not in cache, so they are asked for at once */
            for (uint32_t i = 0; i < c; i++)
                PREFETCH_W(blk + (chosen[i] >> 3));
            for (uint32_t i = 0; i < c; i++) {
                const uint32_t pos = chosen[i];
                const uint8_t m = (uint8_t)(1u << (pos & 7));
                ones += (blk[pos >> 3] & m) != 0;
                blk[pos >> 3] ^= m;
                touched += first_in_element(seen, pos, elem_shift);
            }
        }
        clear_block(seen, chosen, c);
    }
#if defined(__SSE2__) || defined(_M_X64)
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before anyone reads dst */
#endif
    Py_END_ALLOW_THREADS

    free(seen_raw), free(chosen);
    release(&bufs);
    return Py_BuildValue("KKK", flipped, ones, touched);
fail:
    release(&bufs);
    return NULL;
}

PyDoc_STRVAR(sample_ranks_doc,
"sample_ranks(out, counts, key, n_bits, b0, b1) -> None\n\n"
"Write the block sampler's positions of blocks [b0, b1) of a process over n_bits positions,\n"
"sorted, into the int64 buffer out (sum(counts[b0:b1]) entries).");

static PyObject *sample_ranks(PyObject *self, PyObject *args)
{
    PyObject *out_obj, *counts_obj;
    unsigned long long key;
    long long n_bits, b0, b1;
    buffers_t bufs;
    memset(&bufs, 0, sizeof(bufs));
    if (!PyArg_ParseTuple(args, "OOKLLL", &out_obj, &counts_obj, &key, &n_bits, &b0, &b1))
        return NULL;
    if (n_bits < 0) {
        PyErr_SetString(PyExc_ValueError, "n_bits must be >= 0");
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &bufs.dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto fail;
    if (PyObject_GetBuffer(counts_obj, &bufs.counts, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto fail;
    if (bufs.dst.itemsize != 8 || bufs.counts.itemsize != 8 || !is_int64_format(bufs.dst.format) ||
        !is_int64_format(bufs.counts.format)) {
        PyErr_SetString(PyExc_TypeError, "out and counts must be int64");
        goto fail;
    }
    const int64_t *counts = (const int64_t *)bufs.counts.buf;
    long long largest;
    if (check_counts(counts, bufs.counts.len / 8, n_bits, b0, b1, &largest) < 0)
        goto fail;
    long long total = 0;
    for (long long b = b0; b < b1; b++)
        total += counts[b];
    if (total != bufs.dst.len / 8) {
        PyErr_Format(PyExc_ValueError, "out holds %zd positions, the blocks %lld", bufs.dst.len / 8, total);
        goto fail;
    }
    uint64_t *seen = calloc(BLOCK_WORDS, sizeof(uint64_t));
    uint16_t *chosen = malloc((size_t)(largest + 1) * sizeof(uint16_t));
    if (!seen || !chosen) {
        free(seen), free(chosen);
        PyErr_NoMemory();
        goto fail;
    }
    int64_t *out = (int64_t *)bufs.dst.buf;

    Py_BEGIN_ALLOW_THREADS
    for (long long b = b0; b < b1; b++) {
        const uint32_t c = (uint32_t)counts[b];
        if (c == 0)
            continue;
        const long long nb = n_bits - b * BLOCK_BITS < BLOCK_BITS ? n_bits - b * BLOCK_BITS : BLOCK_BITS;
        draw_block(key, b, (uint32_t)nb, c, seen, chosen);
        const int64_t base = (int64_t)b * BLOCK_BITS;
        uint64_t summary[BLOCK_WORDS / 64] = {0}; /* which words of `seen` hold a position */
        for (uint32_t i = 0; i < c; i++)
            summary[chosen[i] >> 12] |= 1ULL << ((chosen[i] >> 6) & 63);
        for (size_t g = 0; g < BLOCK_WORDS / 64; g++) { /* the set bits, in order */
            for (uint64_t sw = summary[g]; sw; sw &= sw - 1) {
                const size_t i = g * 64 + LOWEST_SET(sw);
                for (uint64_t w = seen[i]; w; w &= w - 1)
                    *out++ = base + (int64_t)(i * 64 + LOWEST_SET(w));
                seen[i] = 0;
            }
        }
    }
    Py_END_ALLOW_THREADS

    free(seen), free(chosen);
    release(&bufs);
    Py_RETURN_NONE;
fail:
    release(&bufs);
    return NULL;
}

static PyMethodDef methods[] = {
    {"flip_uniform", flip_uniform, METH_VARARGS, flip_uniform_doc},
    {"sample_ranks", sample_ranks, METH_VARARGS, sample_ranks_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_flipkernel",
    "Compiled block sampler and fused copy-and-flip of errormodels.inject.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__flipkernel(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "BLOCK_BITS", BLOCK_BITS) < 0 ||
              PyModule_AddIntConstant(m, "STREAM_VERSION", STREAM_VERSION) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
