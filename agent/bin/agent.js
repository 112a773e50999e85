#!/usr/bin/env node
// V8 flags for a small resident footprint, set before any module is loaded. See
// agent/src/runtime-flags.ts for each flag and what it saves.
require('../dist/runtime-flags.js').applyRuntimeFlags();

const { runAgent } = require('../dist/cli.js');

runAgent(process.argv).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (error) => {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
