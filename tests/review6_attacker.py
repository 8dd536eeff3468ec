# The attacker of review6_attacks.rs, run as the unprivileged test user
# while psync runs as root. It does only what that user may do: in the
# directories it owns in DST (u/, u/w, u/w/sub) any name operation, in the
# 1777 ones (the root, tmp/) create its own names. Bounded by a number of
# operations and seconds, and stopped early when the stop file appears.
#
# argv: dst outside_dir att_dir vshared_file seed max_seconds max_ops stop_file
import ctypes, os, random, sys, time

dst, outside, att, vshared = sys.argv[1:5]
seed, max_s, max_ops, stop = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
rng = random.Random(seed)
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def xchg(a, b):
    return libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) == 0


def p(*parts):
    return os.path.join(dst, *parts)


OWN = ["u", "u/w", "u/w/sub"]  # directories the attacker owns
STICKY = ["", "tmp"]  # 1777: only its own names
counter = [0]


def fresh(prefix="a"):
    counter[0] += 1
    return "%s-%d-%d" % (prefix, os.getpid(), counter[0])


def quiet(f, *a):
    try:
        return f(*a)
    except OSError:
        return None


def listdir(d):
    try:
        return os.listdir(d)
    except OSError:
        return []


def run_ids():
    ids = set()
    for d in OWN + STICKY + ["u/v"]:
        for n in listdir(p(d)):
            if n.startswith(".psync-tmp."):
                parts = n.split(".")
                if len(parts) >= 3 and len(parts[2]) == 16:
                    ids.add(parts[2])
    return sorted(ids)


def plant_thing(path):
    """A file, a directory, a symlink out of DST or a hard link to one of
    the attacker's files outside DST at `path`."""
    k = rng.randrange(5)
    if k == 0:
        quiet(lambda: open(path, "x").write("planted by the attacker\n"))
    elif k == 1:
        quiet(os.mkdir, path, 0o777)
    elif k == 2:
        quiet(os.symlink, outside, path)
    elif k == 3:
        quiet(os.symlink, os.path.join(outside, "root", "f0"), path)
    else:
        links = listdir(att)
        if links:
            quiet(os.link, os.path.join(att, rng.choice(links)), path)


def rm(path):
    if quiet(os.unlink, path) is None:
        quiet(os.rmdir, path)


def op():
    k = rng.randrange(12)
    if k == 0:
        # The victim's directory u/v given the name of the attacker's u/w
        # (and back, now or later).
        if xchg(p("u/v"), p("u/w")):
            log("xchg v w")
            if rng.random() < 0.7:
                time.sleep(rng.random() * 0.003)
                xchg(p("u/v"), p("u/w"))
                log("xchg v w")
    elif k == 1:
        # A directory of the attacker's swapped for a symlink out of DST.
        d = rng.choice(["u/w", "u/w/sub"])
        s = p(os.path.dirname(d), fresh(".s"))
        if quiet(os.symlink, outside, s) is not None or os.path.islink(s):
            if xchg(p(d), s):
                time.sleep(rng.random() * 0.003)
                xchg(p(d), s)
            rm(s)
    elif k == 2:
        # The victim's directory renamed to names of the attacker's own: a
        # name not in the source, a name in the source, and back.
        to = rng.choice(["u/zz", "u/n", "u/tc", "u/w2"])
        if quiet(os.rename, p("u/v"), p(to)) is not None:
            log("mv v " + to)
            if rng.random() < 0.8:
                time.sleep(rng.random() * 0.003)
                if quiet(os.rename, p(to), p("u/v")) is not None:
                    log("mv %s v" % to)
    elif k == 3:
        # psync's temporaries in the attacker's directories exchanged for
        # things of the attacker's (its own file, a link out, a directory).
        for d in OWN:
            for n in listdir(p(d)):
                if n.startswith(".psync-") and rng.random() < 0.5:
                    s = p(d, fresh(".x"))
                    plant_thing(s)
                    if xchg(p(d, n), s):
                        log("xchg %s/%s %s" % (d, n, s[len(dst):]))
                        if rng.random() < 0.5:
                            time.sleep(rng.random() * 0.002)
                            if xchg(p(d, n), s):
                                log("xchg back")
    elif k == 4:
        # Names like psync's private ones, of runs seen.
        for rid in run_ids() or ["%016x" % rng.getrandbits(64)]:
            d = rng.choice(OWN + STICKY)
            tag = "%016x" % rng.getrandbits(64)
            name = ".psync-tmp.%s.%s%s" % (rid, tag, rng.choice(["", ".links", ".links"]))
            plant_thing(p(d, name))
        # A part name of the attacker's large file.
        d = rng.choice(OWN)
        plant_thing(p(d, ".psync-part.%016x" % rng.getrandbits(64)))
    elif k == 5:
        # The victim's directory renamed to a name like a temporary or a
        # link area of a run seen.
        ids = run_ids()
        if ids:
            n = "u/.psync-tmp.%s.%016x.links" % (rng.choice(ids), rng.getrandbits(64))
            if quiet(os.rename, p("u/v"), p(n)) is not None:
                log("mv v " + n)
                time.sleep(rng.random() * 0.003)
                if quiet(os.rename, p(n), p("u/v")) is not None:
                    log("mv back")
    elif k == 6:
        # Hard links at names the source has: the attacker's own files
        # outside DST and the victim's world-writable file.
        d = rng.choice(["u/w", "u/w/sub", "u"])
        names = [n for n in listdir(p(d)) if not n.startswith(".")] or ["f0"]
        target = rng.choice(names)
        srcs = [os.path.join(att, n) for n in listdir(att)] + [vshared, p("tmp/v-shared")]
        tmp = p(d, fresh(".h"))
        if quiet(os.link, rng.choice(srcs), tmp) is not None:
            if quiet(os.rename, tmp, p(d, target)) is None:
                rm(tmp)
    elif k == 7:
        # Names created and removed where psync writes.
        d = rng.choice(OWN + STICKY)
        n = p(d, fresh("junk"))
        plant_thing(n)
        if rng.random() < 0.5:
            rm(n)
    elif k == 8:
        # Type changes under psync: a file of the attacker's replaced by a
        # directory or a symlink, and back to a file.
        d = rng.choice(OWN)
        names = [n for n in listdir(p(d)) if not n.startswith(".")]
        if names:
            n = p(d, rng.choice(names))
            s = p(d, fresh(".t"))
            plant_thing(s)
            if xchg(n, s):
                log("xchg %s %s" % (n[len(dst):], s[len(dst):]))
                time.sleep(rng.random() * 0.002)
                if rng.random() < 0.5 and xchg(n, s):
                    log("xchg back")
            rm(s)
    elif k == 9:
        # A victim's file in the attacker's directory moved around in it.
        for n in listdir(p("u")):
            if n.startswith("vf") and rng.random() < 0.5:
                to = p("u", rng.choice(["w2", "n", fresh("vf-moved")]))
                if quiet(os.rename, p("u", n), to) is not None and rng.random() < 0.5:
                    quiet(os.rename, to, p("u", n))
    elif k == 10:
        # The attacker's own files' modes, so attribute fixes are due.
        # (Not through its links to files outside DST: those are its own
        # too, but the test checks that psync leaves them alone.)
        for d in OWN:
            if os.path.islink(p(d)):
                continue
            for n in listdir(p(d)):
                st = quiet(os.lstat, p(d, n))
                if st and st.st_nlink == 1 and st.st_uid == os.getuid() and rng.random() < 0.2:
                    quiet(os.chmod, p(d, n), rng.choice([0o600, 0o666, 0o4755, 0o777]))
    else:
        # Clean up the attacker's strays now and then.
        for d in OWN + STICKY:
            for n in listdir(p(d)):
                if n.startswith((".s-", ".x-", ".t-", ".h-", "junk-")) and rng.random() < 0.5:
                    rm(p(d, n))


journal = []


def log(what):
    journal.append("%.4f %s" % (time.time() - start, what))


start = time.time()
ops = 0
while ops < max_ops and time.time() - start < max_s and not os.path.exists(stop):
    op()
    ops += 1
for l in journal:
    sys.stderr.write(l + "\n")
print("attacker: %d operations in %.2fs" % (ops, time.time() - start))
