#!/usr/bin/env node
const path = require('node:path');
const v8 = require('node:v8');
const { loadController } = require('./bundle-loader.js');

const { runController } = loadController(path.join(__dirname, '..')).exports;
// V8 hands a function to its optimizing compiler, on a background thread, once the function has
// used up its interrupt budget a few times. A command lasts seconds at most, so with the default
// budget that compiler cost more CPU than it saved. Four times the budget took 5 % less CPU in a
// distribute to 16 nodes and 4 % less at 1,006 nodes (docs/benchmarks.md). The flag is set after
// the bundle is loaded because V8 accepts a code cache only under the flags it was made with.
v8.setFlagsFromString(`--interrupt-budget=${4 * 66 * 1024}`);

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
