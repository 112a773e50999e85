#!/usr/bin/env node
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
