// cluster.js: nodeserver under Node's own cluster module, the baseline that
// goinit cluster mode is benchmarked against. The primary listens on
// $HOST:$PORT through cluster (round-robin by default;
// NODE_CLUSTER_SCHED_POLICY=none lets the kernel pick) and forks $WORKERS
// workers (default: os.availableParallelism()).
//
// A worker that dies is re-forked after $RESTART_MS (default 100, the same
// as goinit's --restart-delay), the usual cluster recipe with no backoff. SIGTERM or SIGINT drains every worker, and the primary
// exits 0 once all have exited.
'use strict';
const cluster = require('node:cluster');
const os = require('node:os');
const { serve } = require('./server');

const RESTART_MS = Number(process.env.RESTART_MS ?? 100);

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS) || os.availableParallelism();
  let live = 0;
  let stopping = false;
  const fork = () => { live++; cluster.fork(); };

  cluster.on('exit', (w, code, signal) => {
    live--;
    if (stopping) {
      if (live === 0) process.exit(0);
      return;
    }
    console.error(`cluster: worker ${w.id} (pid ${w.process.pid}) exited (${signal ?? `code ${code}`}); restarting in ${RESTART_MS} ms`);
    setTimeout(() => { if (!stopping) fork(); }, RESTART_MS);
  });
  const stop = () => {
    stopping = true;
    if (live === 0) process.exit(0);
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  for (let i = 0; i < n; i++) fork();
} else {
  serve();
}
