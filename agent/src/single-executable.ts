/**
 * Entry point of the single-file agent executable, a Node.js single executable application that
 * `npm run package:agent` builds (agent/packaging/build-artifact.js). It does what
 * `agent/bin/agent.js` does.
 *
 * The V8 flags are applied first. Every other module is loaded with require() after that call,
 * because the bundler keeps the order of require() calls but hoists import declarations.
 */
import { applyRuntimeFlags } from './runtime-flags';

applyRuntimeFlags();

function main(): void {
  const { runAgent } = require('./cli') as typeof import('./cli');
  runAgent(process.argv).then(
    (code) => {
      if (code !== undefined) process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}

main();
