/*
 * faultfs: a pass-through FUSE file system that injects faults, for
 * psync's end-to-end tests (tests/util/faultfs.rs builds and mounts it).
 *
 *   faultfs BACKING MOUNTPOINT [FUSE options]
 *
 * Every path is served from BACKING. Faults are chosen by environment
 * variables, each a fnmatch(3) pattern matched against the path inside
 * the mount ("/dir/file"; "*" matches any path, '/' included):
 *
 *   FAULTFS_CORRUPT_WRITE  writes to matching files store the data with
 *                          its first byte flipped (and report success):
 *                          storage that corrupts what it stores. A read
 *                          that reaches this file system returns the
 *                          corrupt byte; the kernel's page cache keeps
 *                          what the writer wrote until it is dropped.
 *   FAULTFS_EIO_READ       reads of matching files fail with EIO.
 *   FAULTFS_EIO_WRITE      writes to matching files fail with EIO.
 *   FAULTFS_EIO_FSYNC      fsync of matching files fails with EIO.
 *   FAULTFS_EIO_STAT       getattr of matching paths, and listing a
 *                          matching directory, fail with EIO.
 *   FAULTFS_HANG_READ      reads of matching files never return (a hung
 *                          server); only killing the reader (or this
 *                          daemon) ends them.
 *
 * The page cache stays on (unless FAULTFS_COHERENT) and is kept across
 * opens (kernel_cache): what a writer wrote stays cached and readable, as
 * on a real file system, and only a read that misses the cache reaches
 * here. Two mounts of one backing tree keep a page cache each, so one
 * does not see what the other wrote into a page it cached:
 * FAULTFS_COHERENT=1 makes them coherent, as a cluster file system's
 * clients are.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <fuse.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

static int backing = -1; /* fd of the backing directory */

/* The backing path relative to `backing`: "." for the root. */
static const char *rel(const char *path) {
    while (*path == '/')
        path++;
    return *path ? path : ".";
}

/* True when `path` matches one of the ':'-separated patterns in `var`. */
static int faulty(const char *var, const char *path) {
    const char *pats = getenv(var);
    if (!pats)
        return 0;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", pats);
    char *save = NULL;
    for (char *p = strtok_r(buf, ":", &save); p; p = strtok_r(NULL, ":", &save))
        if (fnmatch(p, path, 0) == 0)
            return 1;
    return 0;
}

/* `l*` calls through /proc for xattrs: relative to `backing`, no follow. */
static void proc_path(char *buf, size_t len, const char *path) {
    snprintf(buf, len, "/proc/self/fd/%d/%s", backing, rel(path));
}

static int err(int r) { return r < 0 ? -errno : r; }

static void *ff_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    conn->max_write = 1 << 20; /* fewer, larger requests */
    /* Cached pages stay valid when the file's mtime or size changes (as
     * on a local file system): by default libfuse has the kernel drop
     * them then, which would make every read-back reach the storage. */
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    cfg->use_ino = 1;
    /* Keep the page cache across opens, unless FAULTFS_COHERENT is set:
     * then no page cache at all (direct_io), so that two mounts of one
     * backing tree are coherent, as a cluster file system's clients are. */
    cfg->direct_io = getenv("FAULTFS_COHERENT") != NULL;
    cfg->kernel_cache = !cfg->direct_io;
    cfg->nullpath_ok = 0;
    return NULL;
}

static int ff_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    if (faulty("FAULTFS_EIO_STAT", path))
        return -EIO;
    if (fi)
        return err(fstat((int)fi->fh, st));
    return err(fstatat(backing, rel(path), st, AT_SYMLINK_NOFOLLOW));
}

static int ff_readlink(const char *path, char *buf, size_t size) {
    ssize_t n = readlinkat(backing, rel(path), buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = 0;
    return 0;
}

static int ff_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
    (void)off, (void)fi, (void)flags;
    if (faulty("FAULTFS_EIO_STAT", path))
        return -EIO;
    int fd = openat(backing, rel(path), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st = {.st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type)};
        if (fill(buf, e->d_name, &st, 0, 0))
            break;
    }
    closedir(d);
    return 0;
}

static int ff_mknod(const char *path, mode_t mode, dev_t rdev) {
    return err(mknodat(backing, rel(path), mode, rdev));
}
static int ff_mkdir(const char *path, mode_t mode) { return err(mkdirat(backing, rel(path), mode)); }
static int ff_unlink(const char *path) { return err(unlinkat(backing, rel(path), 0)); }
static int ff_rmdir(const char *path) { return err(unlinkat(backing, rel(path), AT_REMOVEDIR)); }
static int ff_symlink(const char *to, const char *path) { return err(symlinkat(to, backing, rel(path))); }
static int ff_link(const char *from, const char *to) {
    return err(linkat(backing, rel(from), backing, rel(to), 0));
}
static int ff_rename(const char *from, const char *to, unsigned int flags) {
    return err((int)syscall(SYS_renameat2, backing, rel(from), backing, rel(to), flags));
}

static int ff_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
    if (fi)
        return err(fchmod((int)fi->fh, mode));
    return err(fchmodat(backing, rel(path), mode, 0));
}

static int ff_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
    if (fi)
        return err(fchown((int)fi->fh, uid, gid));
    return err(fchownat(backing, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW));
}

static int ff_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    if (fi)
        return err(ftruncate((int)fi->fh, size));
    int fd = openat(backing, rel(path), O_WRONLY | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    int r = err(ftruncate(fd, size));
    close(fd);
    return r;
}

static int ff_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
    if (fi)
        return err(futimens((int)fi->fh, tv));
    return err(utimensat(backing, rel(path), tv, AT_SYMLINK_NOFOLLOW));
}

static int ff_open(const char *path, struct fuse_file_info *fi) {
    int fd = openat(backing, rel(path), (fi->flags & ~O_DIRECT) | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    fi->fh = (uint64_t)fd;
    fi->keep_cache = 1;
    return 0;
}

static int ff_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
    int fd = openat(backing, rel(path), (fi->flags & ~O_DIRECT) | O_CREAT | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    fi->fh = (uint64_t)fd;
    fi->keep_cache = 1;
    return 0;
}

static int ff_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    if (faulty("FAULTFS_EIO_READ", path))
        return -EIO;
    while (faulty("FAULTFS_HANG_READ", path))
        sleep(1);
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int ff_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi) {
    if (faulty("FAULTFS_EIO_WRITE", path))
        return -EIO;
    const char *data = buf;
    char *bad = NULL;
    if (size > 0 && faulty("FAULTFS_CORRUPT_WRITE", path)) {
        bad = malloc(size);
        if (!bad)
            return -ENOMEM;
        memcpy(bad, buf, size);
        bad[0] ^= (char)0xff;
        data = bad;
    }
    ssize_t n = pwrite((int)fi->fh, data, size, off);
    int e = errno;
    free(bad);
    return n < 0 ? -e : (int)n;
}

static int ff_statfs(const char *path, struct statvfs *st) {
    (void)path;
    return err(fstatvfs(backing, st));
}

static int ff_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    close((int)fi->fh);
    return 0;
}

static int ff_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    if (faulty("FAULTFS_EIO_FSYNC", path))
        return -EIO;
    return err(datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh));
}

static int ff_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi) {
    (void)path;
    return err(fallocate((int)fi->fh, mode, off, len));
}

static int ff_setxattr(const char *path, const char *name, const char *value, size_t size, int flags) {
    char p[PATH_MAX + 64];
    proc_path(p, sizeof p, path);
    return err(lsetxattr(p, name, value, size, flags));
}

static int ff_getxattr(const char *path, const char *name, char *value, size_t size) {
    char p[PATH_MAX + 64];
    proc_path(p, sizeof p, path);
    ssize_t n = lgetxattr(p, name, value, size);
    return n < 0 ? -errno : (int)n;
}

static int ff_listxattr(const char *path, char *list, size_t size) {
    char p[PATH_MAX + 64];
    proc_path(p, sizeof p, path);
    ssize_t n = llistxattr(p, list, size);
    return n < 0 ? -errno : (int)n;
}

static int ff_removexattr(const char *path, const char *name) {
    char p[PATH_MAX + 64];
    proc_path(p, sizeof p, path);
    return err(lremovexattr(p, name));
}

static const struct fuse_operations ops = {
    .init = ff_init,
    .getattr = ff_getattr,
    .readlink = ff_readlink,
    .readdir = ff_readdir,
    .mknod = ff_mknod,
    .mkdir = ff_mkdir,
    .unlink = ff_unlink,
    .rmdir = ff_rmdir,
    .symlink = ff_symlink,
    .link = ff_link,
    .rename = ff_rename,
    .chmod = ff_chmod,
    .chown = ff_chown,
    .truncate = ff_truncate,
    .utimens = ff_utimens,
    .open = ff_open,
    .create = ff_create,
    .read = ff_read,
    .write = ff_write,
    .statfs = ff_statfs,
    .release = ff_release,
    .fsync = ff_fsync,
    .fallocate = ff_fallocate,
    .setxattr = ff_setxattr,
    .getxattr = ff_getxattr,
    .listxattr = ff_listxattr,
    .removexattr = ff_removexattr,
};

int main(int argc, char *argv[]) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s BACKING MOUNTPOINT [FUSE options]\n", argv[0]);
        return 2;
    }
    backing = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (backing < 0) {
        perror(argv[1]);
        return 2;
    }
    /* fuse_main sees: prog MOUNTPOINT [options] */
    argv[1] = argv[0];
    umask(0);
    return fuse_main(argc - 1, argv + 1, &ops, NULL);
}
