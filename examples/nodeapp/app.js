// app.js: an ordinary Node HTTP service, written the way services are
// written before anyone thinks of a process supervisor: plain node:http, no
// dependencies, and it binds its own port with server.listen(PORT). Nothing
// in it knows about goinit, socket activation or the cluster module.
//
// Run N copies on one port with goinit, which holds the port and answers
// each worker's bind() with the same listening socket (--share-ports, the
// default with --workers):
//
//   goinit --workers=2 -- node app.js
//
//   GET /         "worker ID pid PID": ID is GOINIT_WORKER_ID, empty when
//                 run alone
//   GET /healthz  200 "ok"
//   GET /stats    {"pid":41,"worker":"2","requests":17}; requests counts GET /
//
// PORT (default 3000) is the port; listen(port) with no host binds [::],
// dual-stack, so both 127.0.0.1 and ::1 reach it. SIGTERM or SIGINT stops
// accepting, lets in-flight requests finish for up to DRAIN_MS and exits 0
// (1 if the drain timed out).
'use strict';
const http = require('node:http');

const port = Number(process.env.PORT || 3000);
const worker = process.env.GOINIT_WORKER_ID ?? '';
// Below goinit's default stop timeout, so the app finishes on its own.
const DRAIN_MS = 20000;

let requests = 0;
const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/') {
    requests++;
    res.end(`worker ${worker} pid ${process.pid}\n`);
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

server.on('error', (err) => {
  console.error(`nodeapp: worker "${worker}" (pid ${process.pid}): ${err.message}`);
  process.exit(1);
});

server.listen(port, () => {
  const a = server.address();
  const at = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  console.error(`nodeapp: worker "${worker}" (pid ${process.pid}) serving on ${at}`);
});

function stop() {
  // close() stops accepting and, since Node 19, closes idle keep-alive
  // connections; requests in flight finish first.
  server.close(() => {
    console.error(`nodeapp: worker "${worker}" (pid ${process.pid}) drained, exiting`);
    process.exit(0);
  });
  setTimeout(() => {
    console.error(`nodeapp: worker "${worker}" (pid ${process.pid}): drain not finished after ${DRAIN_MS} ms`);
    process.exit(1);
  }, DRAIN_MS).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
