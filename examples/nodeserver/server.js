// nodeserver: the example Node worker for goinit cluster mode (the same
// server as ../goserver). It serves HTTP on the socket goinit passes by
// socket activation (fd 3, when LISTEN_PID is this process), or on
// $HOST:$PORT (default :8080) when run on its own, under cluster.js, or under
// `pm2 start server.js -i N` (pm2's cluster mode shares the port).
//
//   GET /         a greeting naming the worker and pid
//   GET /healthz  200 "ok"
//   GET /stats    {"pid":41,"worker":"2","requests":17}; requests counts GET /
//
// The worker id is GOINIT_WORKER_ID, else pm2's NODE_APP_INSTANCE, else the
// cluster worker id. SIGTERM or SIGINT stops accepting, lets in-flight
// requests finish for up to DRAIN_MS and exits 0 (1 if the drain timed out).
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

// Below goinit's default stop timeout, so the server finishes on its own.
const DRAIN_MS = 20000;

function serve() {
  const env = process.env;
  const worker = env.GOINIT_WORKER_ID ?? env.NODE_APP_INSTANCE ?? (cluster.isWorker ? String(cluster.worker.id) : '');
  const activated = env.LISTEN_PID === String(process.pid) && Number(env.LISTEN_FDS) >= 1;
  // Like sd_listen_fds(1): consume the variables so our children never see them.
  delete env.LISTEN_PID; delete env.LISTEN_FDS; delete env.LISTEN_FDNAMES;

  let requests = 0;
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (req.method === 'GET' && path === '/') {
      requests++;
      res.end(`hello from nodeserver worker=${worker} pid=${process.pid}\n`);
    } else if (req.method === 'GET' && path === '/healthz') {
      res.end('ok\n');
    } else if (req.method === 'GET' && path === '/stats') {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ pid: process.pid, worker, requests }) + '\n');
    } else {
      res.statusCode = 404;
      res.end('not found\n');
    }
  });

  const where = activated ? { fd: 3 } : { host: env.HOST || undefined, port: Number(env.PORT || 8080) };
  server.listen(where, () => {
    const a = server.address();
    const at = typeof a === 'string' ? a : `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    console.error(`nodeserver: worker "${worker}" (pid ${process.pid}) serving on ${at}`);
  });
  server.on('error', (err) => {
    console.error(`nodeserver: worker "${worker}" (pid ${process.pid}): ${err.message}`);
    process.exit(1);
  });

  const stop = () => {
    // close() stops accepting and, since Node 19, closes idle keep-alive connections.
    server.close(() => {
      console.error(`nodeserver: worker "${worker}" (pid ${process.pid}) drained, exiting`);
      process.exit(0);
    });
    setTimeout(() => {
      console.error(`nodeserver: worker "${worker}" (pid ${process.pid}): drain not finished after ${DRAIN_MS} ms`);
      process.exit(1);
    }, DRAIN_MS).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  return server;
}

module.exports = { serve };

if (require.main === module) serve();
