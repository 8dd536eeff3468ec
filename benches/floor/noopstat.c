/* noopstat.c: the syscall floor of a no-op re-sync.
 *
 * N threads walk SRC and DST side by side, one directory per task, and do
 * only what any quick check must: list each source directory (getdents64)
 * and stat every entry on both sides relative to the directory fds
 * (fstatat, AT_SYMLINK_NOFOLLOW), comparing type, size and mtime. With -x
 * it also lists each entry's xattrs on both sides (listxattrat, Linux
 * 6.13), as a check that preserves xattrs and ACLs must. It copies,
 * deletes and allocates nothing per entry: psync's no-op cannot beat it.
 *
 * Usage: noopstat [-q] [-x] [-t THREADS] SRC DST
 * Exit 0 when every entry matched, 1 when some differ, 2 on an error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif

struct task {
    struct task *next;
    char path[]; /* relative to both roots; "." for the roots */
};

static const char *src_root, *dst_root;
static int src_fd, dst_fd, with_xattrs, quiet;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct task *stack;
static long busy;           /* tasks queued or being worked on */
static long entries, differ, errors;

static void push(const char *parent, const char *name) {
    size_t n = strlen(parent) + strlen(name) + 2;
    struct task *t = malloc(sizeof *t + n);
    if (!t) abort();
    if (strcmp(parent, ".") == 0 && name[0])
        snprintf(t->path, n, "%s", name);
    else if (name[0])
        snprintf(t->path, n, "%s/%s", parent, name);
    else
        snprintf(t->path, n, "%s", parent);
    pthread_mutex_lock(&lock);
    t->next = stack;
    stack = t;
    busy++;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
}

static void fail(const char *what, const char *root, const char *path) {
    if (!quiet) fprintf(stderr, "noopstat: %s %s/%s: %s\n", what, root, path, strerror(errno));
    __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
}

static void one_dir(const char *path) {
    int s = openat(src_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s < 0) return fail("open", src_root, path);
    int d = openat(dst_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (d < 0) {
        close(s);
        return fail("open", dst_root, path);
    }
    char buf[64 * 1024];
    long n_entries = 0, n_differ = 0;
    for (;;) {
        long got = syscall(SYS_getdents64, s, buf, sizeof buf);
        if (got < 0) {
            fail("getdents64", src_root, path);
            break;
        }
        if (got == 0) break;
        for (long off = 0; off < got;) {
            struct dirent64 *e = (struct dirent64 *)(buf + off);
            off += e->d_reclen;
            const char *name = e->d_name;
            if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))) continue;
            struct stat a, b;
            n_entries++;
            if (fstatat(s, name, &a, AT_SYMLINK_NOFOLLOW) < 0) {
                fail("stat", src_root, name);
                continue;
            }
            if (fstatat(d, name, &b, AT_SYMLINK_NOFOLLOW) < 0) {
                n_differ++;
                continue;
            }
            if (with_xattrs) {
                syscall(SYS_listxattrat, s, name, AT_SYMLINK_NOFOLLOW, NULL, 0);
                syscall(SYS_listxattrat, d, name, AT_SYMLINK_NOFOLLOW, NULL, 0);
            }
            if ((a.st_mode & S_IFMT) != (b.st_mode & S_IFMT)) {
                n_differ++;
            } else if (S_ISDIR(a.st_mode)) {
                push(path, name);
            } else if (a.st_size != b.st_size || a.st_mtim.tv_sec != b.st_mtim.tv_sec ||
                       a.st_mtim.tv_nsec != b.st_mtim.tv_nsec) {
                n_differ++;
            }
        }
    }
    close(s);
    close(d);
    __atomic_add_fetch(&entries, n_entries, __ATOMIC_RELAXED);
    __atomic_add_fetch(&differ, n_differ, __ATOMIC_RELAXED);
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (!stack && busy) pthread_cond_wait(&cond, &lock);
        if (!stack) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        struct task *t = stack;
        stack = t->next;
        pthread_mutex_unlock(&lock);
        one_dir(t->path);
        free(t);
        pthread_mutex_lock(&lock);
        if (--busy == 0) pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
    }
}

int main(int argc, char **argv) {
    int threads = 2, opt;
    while ((opt = getopt(argc, argv, "qxt:")) != -1) {
        switch (opt) {
        case 'q': quiet = 1; break;
        case 'x': with_xattrs = 1; break;
        case 't': threads = atoi(optarg); break;
        default: goto usage;
        }
    }
    if (argc - optind != 2 || threads < 1) {
    usage:
        fprintf(stderr, "usage: noopstat [-q] [-x] [-t THREADS] SRC DST\n");
        return 2;
    }
    src_root = argv[optind];
    dst_root = argv[optind + 1];
    src_fd = open(src_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    dst_fd = open(dst_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src_fd < 0 || dst_fd < 0) {
        perror("noopstat: open root");
        return 2;
    }
    push(".", "");
    pthread_t tid[threads];
    for (int i = 0; i < threads; i++) pthread_create(&tid[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    if (!quiet) printf("%ld entries, %ld differ, %ld errors\n", entries, differ, errors);
    return errors ? 2 : differ ? 1 : 0;
}
