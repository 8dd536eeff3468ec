/* verifycopy.c: the floor of a verified copy of large files, by method.
 *
 * One thread per SRC DST pair copies SRC to DST (created or truncated)
 * by one method and prints the wall time of all. A verified copy must
 * hash what it read from the source and what reads back from the target
 * (xxh3-128 here, as psync); the methods show what that costs on a file
 * system whose pages are only in memory (tmpfs), where the copy without
 * verification is one in-kernel pass:
 *
 *   0  copy_file_range only (no verification: psync --no-verify on tmpfs)
 *   1  pread 1 MiB, hash, pwrite; then pread the target back, hash
 *      (psync's chunks with verification)
 *   2  as 1, each chunk read back right after it is written
 *   3  as 1, the target hashed through MAP_POPULATE mappings of WIN MiB
 *   4  mapped source, hashed and written from the mapping; the target
 *      hashed through mappings (no copy into user space at all)
 *   5  as 1, the target read back after every WIN MiB written (psync's
 *      chunks before 2026-12-02: 64 MiB)
 *
 * Build: apt-get install libxxhash-dev;
 *        gcc -O2 -march=native -pthread -o verifycopy verifycopy.c
 * Usage: [CHUNK_KIB=N] verifycopy METHOD WIN_MIB SRC DST [SRC DST]...
 */
#define _GNU_SOURCE
#define XXH_INLINE_ALL
#include "xxhash.h"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int method;
static size_t chunk = 1 << 20, win;

struct pair {
    const char *src, *dst;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void full(ssize_t got, size_t want, const char *what) {
    if (got != (ssize_t)want) die(what);
}

static void hash_mapped(int fd, off_t off, size_t len, XXH3_state_t *h) {
    void *m = mmap(0, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, off);
    if (m == MAP_FAILED) die("mmap");
    XXH3_128bits_update(h, m, len);
    munmap(m, len);
}

static void *run(void *arg) {
    struct pair *p = arg;
    int s = open(p->src, O_RDONLY), d = open(p->dst, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (s < 0 || d < 0) die("open");
    struct stat st;
    if (fstat(s, &st)) die("fstat");
    size_t n = st.st_size, step = method >= 3 ? win : chunk;
    if (n % chunk || n % step) {
        fprintf(stderr, "%s: size not a multiple of the chunk and window\n", p->src);
        exit(2);
    }
    char *buf = aligned_alloc(4096, chunk);
    XXH3_state_t *hs = XXH3_createState(), *hd = XXH3_createState();
    XXH3_128bits_reset(hs);
    XXH3_128bits_reset(hd);
    if (method == 0) {
        loff_t o = 0;
        while ((size_t)o < n)
            if (copy_file_range(s, &o, d, &o, n - o, 0) <= 0) die("copy_file_range");
    } else if (method == 1 || method == 3) {
        for (size_t o = 0; o < n; o += chunk) {
            full(pread(s, buf, chunk, o), chunk, "pread");
            XXH3_128bits_update(hs, buf, chunk);
            full(pwrite(d, buf, chunk, o), chunk, "pwrite");
        }
        for (size_t o = 0; o < n; o += step) {
            if (method == 3) {
                hash_mapped(d, o, step, hd);
                continue;
            }
            full(pread(d, buf, chunk, o), chunk, "pread");
            XXH3_128bits_update(hd, buf, chunk);
        }
    } else if (method == 2) {
        for (size_t o = 0; o < n; o += chunk) {
            full(pread(s, buf, chunk, o), chunk, "pread");
            XXH3_128bits_update(hs, buf, chunk);
            full(pwrite(d, buf, chunk, o), chunk, "pwrite");
            full(pread(d, buf, chunk, o), chunk, "pread");
            XXH3_128bits_update(hd, buf, chunk);
        }
    } else if (method == 5) {
        for (size_t w = 0; w < n; w += win) {
            for (size_t o = w; o < w + win; o += chunk) {
                full(pread(s, buf, chunk, o), chunk, "pread");
                XXH3_128bits_update(hs, buf, chunk);
                full(pwrite(d, buf, chunk, o), chunk, "pwrite");
            }
            for (size_t o = w; o < w + win; o += chunk) {
                full(pread(d, buf, chunk, o), chunk, "pread");
                XXH3_128bits_update(hd, buf, chunk);
            }
        }
    } else if (method == 4) {
        for (size_t o = 0; o < n; o += win) {
            void *m = mmap(0, win, PROT_READ, MAP_SHARED | MAP_POPULATE, s, o);
            if (m == MAP_FAILED) die("mmap");
            XXH3_128bits_update(hs, m, win);
            full(pwrite(d, m, win, o), win, "pwrite");
            munmap(m, win);
            hash_mapped(d, o, win, hd);
        }
    }
    XXH128_hash_t a = XXH3_128bits_digest(hs), b = XXH3_128bits_digest(hd);
    if (method != 0 && !XXH128_isEqual(a, b)) {
        fprintf(stderr, "%s: the target does not read back as the source\n", p->dst);
        exit(1);
    }
    close(s);
    close(d);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5 || (argc - 3) % 2 || (argc - 3) / 2 > 64) {
        fprintf(stderr, "usage: [CHUNK_KIB=N] verifycopy METHOD WIN_MIB SRC DST [SRC DST]...\n");
        return 2;
    }
    method = atoi(argv[1]);
    win = (size_t)atoi(argv[2]) << 20;
    if (getenv("CHUNK_KIB")) chunk = (size_t)atoi(getenv("CHUNK_KIB")) << 10;
    if (method < 0 || method > 5 || !win || !chunk) return 2;
    int k = (argc - 3) / 2;
    pthread_t t[64];
    struct pair p[64];
    double t0 = now();
    for (int i = 0; i < k; i++) {
        p[i] = (struct pair){argv[3 + 2 * i], argv[4 + 2 * i]};
        if (pthread_create(&t[i], 0, run, &p[i])) die("pthread_create");
    }
    for (int i = 0; i < k; i++) pthread_join(t[i], 0);
    printf("method %d: %.3f s\n", method, now() - t0);
    return 0;
}
