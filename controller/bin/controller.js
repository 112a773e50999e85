#!/usr/bin/env node
const path = require('node:path');
const { loadController } = require('./bundle-loader.js');

const { runController } = loadController(path.join(__dirname, '..')).exports;

runController(process.argv).then((code) => {
  process.exitCode = code;
  // A connection attempt to an unreachable agent can keep the process alive for the kernel's TCP
  // connect timeout (about two minutes) after the command is done, so exit once the output is out.
  let pending = 2;
  const done = () => {
    pending -= 1;
    if (pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
});
