"""A test server for portshare: binds as told, prints one line saying what
happened, then answers every connection with its pid and bound address.

usage: server.py MODE HOST PORT [options]
  MODE: inet (AF_INET), dual (AF_INET6 dual-stack), v6only, udp, http
  (http.server on (HOST, PORT)), client (AF_INET: bind (HOST, PORT), then
  connect to 127.0.0.1:Q given by --to Q), probe (AF_INET: bind, close)
options: --backlog N, --fork (a forked child binds and serves, the parent
waits for it), --shutdown-rd (shut the listener down for reading after
listen, then idle), --once (idle after binding), --nonblock (make the
socket non-blocking before bind), --inheritable (clear its close-on-exec
flag before bind), --listen-after FILE (after bind, say "bound-only" and
listen once FILE exists), --bind-after FILE (say "waiting" and bind once
FILE exists, so that several workers bind at the same moment), --tos (set
IP_TOS 0x10 before bind), --bind-twice (bind the same address again at once,
as a bind restarted by a signal does, and say "rebind ok" or "rebind error
ERRNO"), --reuseaddr (set SO_REUSEADDR before bind)
"""
import os
import time
import signal
import socket
import sys


def report(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve(s):
    while True:
        c, peer = s.accept()
        try:
            c.recv(4096)
            host, port = s.getsockname()[:2]
            body = "pid %d port %d family %d peer %s\n" % (os.getpid(), port, s.family, peer[0])
            c.sendall(("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
        except OSError:
            pass
        c.close()


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opts = sys.argv[4:]
    backlog = int(opts[opts.index("--backlog") + 1]) if "--backlog" in opts else 128
    if mode == "http":
        import http.server

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = ("pid %d port %d\n" % (os.getpid(), self.server.server_address[1])).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = http.server.HTTPServer((host, port), H)
        report("bound %d" % srv.server_address[1])
        srv.serve_forever()
        return
    if mode in ("client", "probe"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
            if mode == "probe":
                s.close()
                report("probed %d" % port)
            else:
                s.connect(("127.0.0.1", int(opts[opts.index("--to") + 1])))
                report("connected from %d" % s.getsockname()[1])
        except OSError as e:
            report("error %d %s" % (e.errno, os.getpid()))
            sys.exit(1)
        signal.pause()
        return
    fam = socket.AF_INET if mode in ("inet", "udp") else socket.AF_INET6
    typ = socket.SOCK_DGRAM if mode == "udp" else socket.SOCK_STREAM
    s = socket.socket(fam, typ)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if mode == "v6only" else 0)
    if "--nonblock" in opts:
        s.setblocking(False)
    if "--inheritable" in opts:
        s.set_inheritable(True)
    if "--reuseaddr" in opts:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if "--tos" in opts:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
    if "--fork" in opts:
        child = os.fork()
        if child:
            report("forked %d" % child)
            os.waitpid(child, 0)
            return
    if "--bind-after" in opts:
        trigger = opts[opts.index("--bind-after") + 1]
        report("waiting")
        while not os.path.exists(trigger):  # the test creates it
            time.sleep(0.0005)
    try:
        s.bind((host, port))
        if "--bind-twice" in opts:
            try:
                s.bind((host, port))
                report("rebind ok")
            except OSError as e:
                report("rebind error %d" % e.errno)
        if "--listen-after" in opts:
            trigger = opts[opts.index("--listen-after") + 1]
            report("bound-only %d pid %d" % (s.getsockname()[1], os.getpid()))
            while not os.path.exists(trigger):  # the test creates it
                time.sleep(0.01)
        if typ == socket.SOCK_STREAM:
            s.listen(backlog)
    except OSError as e:
        report("error %d %s" % (e.errno, os.getpid()))
        sys.exit(1)
    report("bound %d family %d pid %d fd %d" % (s.getsockname()[1], s.family, os.getpid(), s.fileno()))
    if "--shutdown-rd" in opts:
        try:
            s.shutdown(socket.SHUT_RD)
            report("shutdown ok")
        except OSError as e:
            report("shutdown error %d" % e.errno)
        signal.pause()
        return
    if "--once" in opts or typ == socket.SOCK_DGRAM:
        signal.pause()
        return
    serve(s)


main()
