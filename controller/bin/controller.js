#!/usr/bin/env node
const { runController } = require('../dist/cli.js');

runController(process.argv).then((code) => {
  process.exitCode = code;
});
