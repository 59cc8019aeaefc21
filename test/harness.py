"""Helpers shared by test/start-server and the pytest suite (conftest.py).

In the spirit of httpd's test/pyhttpd: real processes on 127.0.0.1, cleaned up by PID.
"""
import glob
import os
import pwd
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_root():
    return os.geteuid() == 0


def chown_tree(path, user):
    if not as_root():
        return
    pw = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), pw.pw_uid, pw.pw_gid)


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        sys.exit(f"start-server: PostgreSQL's {name} not found (apt-get install postgresql)")
    return found[-1]


def run_as(user, argv, **kw):
    if as_root() and user:
        argv = ["runuser", "-u", user, "--"] + argv
    return subprocess.run(argv, check=True, **kw)


class PgCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, fsync off)."""

    def __init__(self, base):
        self.dir = os.path.join(base, "pg")
        os.makedirs(self.dir)
        self.user = "postgres" if as_root() else None
        if self.user:
            chown_tree(self.dir, self.user)
        self.port = free_port()
        data = os.path.join(self.dir, "data")
        run_as(self.user, [pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                           "-E", "UTF8", "--no-sync"], stdout=subprocess.DEVNULL)
        run_as(self.user, [pg_bin("pg_ctl"), "-D", data, "-l", os.path.join(self.dir, "log"),
                           "-w", "-o", f"-p {self.port} -k {self.dir} "
                           "-c listen_addresses=127.0.0.1 -c fsync=off "
                           "-c synchronous_commit=off -c max_connections=200",
                           "start"], stdout=subprocess.DEVNULL)
        self.data = data
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres"

    def stop(self):
        try:
            run_as(self.user, [pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.CalledProcessError:
            pass


def psql(dsn, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def dsn_with_db(dsn, dbname):
    parts = [p for p in dsn.split() if not p.startswith("dbname=")]
    return " ".join(parts + [f"dbname={dbname}"])




def configtest_conf(tmp, build, line):
    """A minimal httpd configuration in tmp loading the module, with `line`, for
    `httpd -t`; returns its path."""
    conf = os.path.join(tmp, "t.conf")
    with open(conf, "w") as f:
        f.write(f"""ServerRoot "{tmp}"
Listen 127.0.0.1:1
DefaultRuntimeDir "{tmp}"
PidFile "{tmp}/p"
ErrorLog "{tmp}/e.log"
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule gemini_mcp_module {build}/mod_gemini_mcp.so
{line}
""")
    return conf


def sanitizer_dir(logdir):
    """Where httpd's sanitizer reports go: the test session's directory (conftest sets
    GMCP_SANITIZER_DIR, which outlives every server, so reports written as a server
    stops are seen too), else one beside the log. Either is writable by the children,
    which run as RUN_USER when the tests are root; without that their reports are lost."""
    return os.environ.get("GMCP_SANITIZER_DIR") or os.path.join(logdir, "sanitizer")


def httpd_env(build, logdir):
    """Environment for running httpd with the module from `build`: a sanitizer build
    needs the ASan runtime preloaded into the (uninstrumented) httpd binary."""
    env = dict(os.environ)
    if os.path.basename(build.rstrip("/")).endswith("asan"):   # build-asan, build-x-asan
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                 text=True).stdout.strip()
        reports = sanitizer_dir(logdir)
        os.makedirs(reports, exist_ok=True)
        os.chmod(reports, 0o1777)
        env["LD_PRELOAD"] = libasan
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:log_path=" + os.path.join(reports, "asan"))
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:log_path="
                       + os.path.join(reports, "ubsan"))
    return env
