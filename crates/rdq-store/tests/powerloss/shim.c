/*
 * The power-loss test's LD_PRELOAD shim (tests/it/powerloss.rs); not a tool.
 *
 * It wraps fsync(2) and fdatasync(2). When the descriptor is a regular file
 * directly inside the directory named by RDQ_POWERLOSS_DIR, it copies the
 * file's current contents to RDQ_POWERLOSS_SNAP/f-<name>@<inode> before the
 * real call; when it is that directory itself, it writes the directory's
 * listing ("<inode> <name>" lines) to RDQ_POWERLOSS_SNAP/dir. Each copy is
 * written under a temporary name and renamed into place, so a kill during a
 * copy leaves the previous one whole. Every snapshot appends a line to
 * RDQ_POWERLOSS_SNAP/log ("file <name> <inode> <bytes>" or "dir <entries>"),
 * which the test counts. Without both variables, and for any other
 * descriptor, the calls go straight to the real ones.
 *
 * Why the copy is taken *before* the real call: everything it reads was
 * written before the sync began, so it is on disk once the sync returns.
 * Bytes written by another thread while the sync runs may or may not be;
 * the copy leaves them out (or has some of them: they were written before
 * the copy read them, which is before the sync began). So the snapshot never
 * holds more than the disk would.
 *
 * The shim never opens or closes a descriptor of a database file: closing
 * any descriptor of a file drops every POSIX lock the process holds on it,
 * SQLite's included. It reads through the caller's descriptor with pread or
 * copy_file_range, which leave its offset alone.
 *
 * Snapshots are taken one at a time (one mutex), so they land in the order
 * their syncs began.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long snap_seq;

/* Appends one line to SNAP/log. */
static void log_line(const char *snap, const char *line) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/log", snap) >= (int)sizeof path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t ignored = write(fd, line, strlen(line));
    (void)ignored;
    close(fd);
}

/* A temporary name in SNAP, unique within the process. */
static int temp_name(char *out, size_t size, const char *snap) {
    return snprintf(out, size, "%s/.tmp-%d-%llu", snap, (int)getpid(),
                    ++snap_seq) < (int)size;
}

/* Copies the first `size` bytes of fd (fewer if it is shorter by now) to a
 * new file `to`. The size is the file's when the sync began: what is
 * appended later is left out, which keeps the copy bounded while a writer
 * goes on appending. */
static int copy_fd(int fd, off_t size, const char *to, long long *copied) {
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        return -1;
    loff_t in_off = 0;
    int ok = 1;
    int by_hand = 0;
    while (in_off < size && !by_hand) {
        ssize_t n = copy_file_range(fd, &in_off, out, NULL, size - in_off, 0);
        if (n == 0)
            break; /* shorter than it was */
        if (n < 0 && errno != EINTR)
            by_hand = 1; /* not supported here: from where it stopped */
    }
    static char buf[1 << 16]; /* under snap_lock */
    while (by_hand && ok && in_off < size) {
        size_t want = size - in_off < (off_t)sizeof buf ? (size_t)(size - in_off)
                                                         : sizeof buf;
        ssize_t r = pread(fd, buf, want, in_off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            ok = r == 0;
            break;
        }
        ssize_t done = 0;
        while (ok && done < r) {
            ssize_t w = pwrite(out, buf + done, r - done, in_off + done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                ok = 0;
            else
                done += w;
        }
        in_off += r;
    }
    *copied = in_off;
    if (close(out) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

static void snapshot_file(int fd, const char *snap, const char *name,
                          const struct stat *st) {
    char tmp[PATH_MAX], dest[PATH_MAX], line[PATH_MAX + 64];
    long long copied = 0;
    if (!temp_name(tmp, sizeof tmp, snap))
        return;
    if (snprintf(dest, sizeof dest, "%s/f-%s@%llu", snap, name,
                 (unsigned long long)st->st_ino) >= (int)sizeof dest)
        return;
    if (copy_fd(fd, st->st_size, tmp, &copied) != 0 || rename(tmp, dest) != 0) {
        unlink(tmp);
        snprintf(line, sizeof line, "error copying %s: %s\n", name,
                 strerror(errno));
        log_line(snap, line);
        return;
    }
    snprintf(line, sizeof line, "file %s %llu %lld\n", name,
             (unsigned long long)st->st_ino, copied);
    log_line(snap, line);
}

static void snapshot_dir(const char *snap, const char *dir_path) {
    char tmp[PATH_MAX], dest[PATH_MAX], line[64];
    if (!temp_name(tmp, sizeof tmp, snap))
        return;
    if (snprintf(dest, sizeof dest, "%s/dir", snap) >= (int)sizeof dest)
        return;
    DIR *dir = opendir(dir_path);
    if (!dir)
        return;
    FILE *out = fopen(tmp, "we");
    if (!out) {
        closedir(dir);
        return;
    }
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        fprintf(out, "%llu %s\n", (unsigned long long)e->d_ino, e->d_name);
        entries++;
    }
    closedir(dir);
    if (fclose(out) != 0 || rename(tmp, dest) != 0) {
        unlink(tmp);
        log_line(snap, "error writing the directory listing\n");
        return;
    }
    snprintf(line, sizeof line, "dir %d\n", entries);
    log_line(snap, line);
}

/* Snapshots what fd names, if it is the watched directory or a file in it. */
static void snapshot(int fd) {
    const char *watch = getenv("RDQ_POWERLOSS_DIR");
    const char *snap = getenv("RDQ_POWERLOSS_SNAP");
    if (!watch || !snap || !*watch || !*snap)
        return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return;
    path[n] = '\0';
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    size_t len = strlen(watch);
    pthread_mutex_lock(&snap_lock);
    if (S_ISDIR(st.st_mode)) {
        if (strcmp(path, watch) == 0)
            snapshot_dir(snap, watch);
    } else if (S_ISREG(st.st_mode) && st.st_nlink > 0 &&
               strncmp(path, watch, len) == 0 && path[len] == '/' &&
               path[len + 1] != '\0' && strchr(path + len + 1, '/') == NULL) {
        snapshot_file(fd, snap, path + len + 1, &st);
    }
    pthread_mutex_unlock(&snap_lock);
}

typedef int (*sync_fn)(int);

static sync_fn real(const char *name, _Atomic(sync_fn) *cache) {
    sync_fn f = atomic_load(cache);
    if (!f) {
        f = (sync_fn)dlsym(RTLD_NEXT, name);
        atomic_store(cache, f);
    }
    return f;
}

int fsync(int fd) {
    static _Atomic(sync_fn) next;
    int saved = errno;
    snapshot(fd);
    errno = saved;
    sync_fn f = real("fsync", &next);
    if (!f) {
        errno = ENOSYS;
        return -1;
    }
    return f(fd);
}

int fdatasync(int fd) {
    static _Atomic(sync_fn) next;
    int saved = errno;
    snapshot(fd);
    errno = saved;
    sync_fn f = real("fdatasync", &next);
    if (!f) {
        errno = ENOSYS;
        return -1;
    }
    return f(fd);
}
