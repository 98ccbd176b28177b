// agent.js: the agent of the example, one process beside the workers, for
// the work that must happen once per machine. Here that work is a timer that
// stands for a config service: every INTERVAL_MS (default 500) it makes a new
// config version and broadcasts it to every worker. It also pushes the
// current version to each worker that becomes ready, so a worker that was
// (re)started between two ticks does not serve nothing until the next one.
//
//   goinit --workers=2 --ready=message --agent='node agent.js' -- node app.js
//
// It talks to goinit only through Node's own process.send() and
// process.on('message'): goinit gives the agent the same channel as a worker
// (NODE_CHANNEL_FD), so no library is needed.
//
//   sends     {to: 'workers', data: {config}}   on every tick
//             {to: ID, data: {config}}          when worker ID is ready
//   receives  {from: 'goinit', data: {event: 'worker-ready', id, pid}}, ...
//
// The config is {version, agent, at}: a counter that starts at 1 with each
// agent process, the agent's pid, and when the version was made. SIGTERM
// stops the timer and exits 0.
'use strict';

const INTERVAL_MS = Number(process.env.INTERVAL_MS || 500);

if (!process.send) {
  console.error('agent: no channel to goinit; run me as goinit --agent=\'node agent.js\'');
  process.exit(2);
}

let config = null;
function next() {
  config = { version: (config ? config.version : 0) + 1, agent: process.pid, at: new Date().toISOString() };
  process.send({ to: 'workers', data: { config } });
}

process.on('message', (m) => {
  // Only goinit's pool events matter here; workers send the agent nothing.
  if (m.from !== 'goinit' || !m.data) return;
  const ev = m.data;
  if (ev.event === 'worker-ready') {
    process.send({ to: ev.id, data: { config } });
  } else if (ev.event === 'worker-exit') {
    console.error(`agent: worker ${ev.id} (pid ${ev.pid}) exited (${ev.signal || 'code ' + ev.code})`);
  }
});

const timer = setInterval(next, INTERVAL_MS);
next(); // a value before the first worker starts: goinit starts them once the agent is ready
process.send('ready');
console.error(`agent: pid ${process.pid} ready, config version ${config.version}, a new one every ${INTERVAL_MS} ms`);

process.once('SIGTERM', () => {
  clearInterval(timer);
  console.error(`agent: pid ${process.pid} stopping at config version ${config.version}`);
  process.exit(0);
});
