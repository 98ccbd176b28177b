// app.js: a worker of the agent example, an ordinary Node HTTP service in
// plain node:http that binds its own port with server.listen(PORT). goinit
// shares that port between the workers. The service serves the last config
// the agent sent it, so every worker serves the same value.
//
//   goinit --workers=2 --ready=message --agent='node agent.js' -- node app.js
//
//   GET /         "worker ID pid PID: config version V from agent pid A"
//   GET /config   {"worker":"0","pid":41,"config":{"version":7,"agent":12,"at":"..."}}
//                 (config is null until the agent's first message)
//   GET /healthz  200 "ok"
//
// The config arrives as {from: 'agent', data: {config}} on Node's own IPC
// channel (process.on('message')), which goinit provides. The worker says it
// is ready with process.send('ready') once it listens (--ready=message).
// While the agent restarts, the worker keeps serving the last config it got.
// SIGTERM or SIGINT stops accepting, lets requests in flight finish and
// exits 0.
'use strict';
const http = require('node:http');

const port = Number(process.env.PORT || 3000);
const worker = process.env.GOINIT_WORKER_ID ?? '';

let config = null;
process.on('message', (m) => {
  if (m.from === 'agent' && m.data && m.data.config) {
    config = m.data.config;
  } else if (m.from === 'goinit' && m.data && m.data.event === 'agent-exit') {
    console.error(`app: worker ${worker}: the agent (pid ${m.data.pid}) exited; serving config version ${config && config.version} until its successor sends one`);
  }
});

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/') {
    const what = config ? `config version ${config.version} from agent pid ${config.agent}` : 'no config yet';
    res.end(`worker ${worker} pid ${process.pid}: ${what}\n`);
  } else if (req.method === 'GET' && path === '/config') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ worker, pid: process.pid, config }) + '\n');
  } else if (req.method === 'GET' && path === '/healthz') {
    res.end('ok\n');
  } else {
    res.statusCode = 404;
    res.end('not found\n');
  }
});

server.on('error', (err) => {
  console.error(`app: worker "${worker}" (pid ${process.pid}): ${err.message}`);
  process.exit(1);
});

server.listen(port, () => {
  const a = server.address();
  const at = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  console.error(`app: worker "${worker}" (pid ${process.pid}) serving on ${at}`);
  if (process.send) process.send('ready');
});

function stop() {
  // The IPC channel keeps the event loop alive, so exit once drained
  // instead of waiting for the loop to empty.
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(1), 10000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
