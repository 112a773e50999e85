/**
 * V8 flags that the agent launcher (`agent/bin/agent.js`) sets at start-up, before it loads any
 * other module. The agent runs on every node and serves a few calls per distribute, so it trades
 * JavaScript speed for resident memory.
 *
 * NOTE: V8 documents flag changes after start-up as unsupported. Each flag here was checked to take
 * effect at run time with Node.js 20.20 (V8 11.3). `test/src/unit/agent-runtime-flags.test.ts`
 * checks the new-space flag with the Node.js that runs the tests.
 */
import * as v8 from 'node:v8';

// TODO: an idle agent stays at about 53 MB resident, above the 45 MB goal. A bare Node.js process
// takes about 39 MB here, and a TLS and HTTP/2 server touches about 6 MB more of the node binary,
// which leaves no room for the heap of grpc-js, yaml and the agent within 45 MB. Only a smaller
// runtime would meet it (docs/benchmarks.md, Footprint).

export const RUNTIME_FLAGS: readonly string[] = [
  // The young generation stays at its initial 1 MB semi-spaces instead of growing to 16 MB each,
  // which keeps about 6 MB less resident. Unlike --max-semi-space-size this takes effect when set
  // at run time. A factor of 0 crashes V8, so 1 is the lowest valid value.
  '--semi-space-growth-factor=1',
  // No optimising (TurboFan) or baseline (Sparkplug) compilation: the agent's code runs in the
  // Ignition interpreter. This leaves about 4 MB of compiler code in the node binary unread and
  // saves the compiled code. Key generation, hashing and TLS are native code and keep their speed.
  '--no-opt',
  '--no-sparkplug',
];

/** Applies RUNTIME_FLAGS to this process's V8. */
export function applyRuntimeFlags(): void {
  for (const flag of RUNTIME_FLAGS) v8.setFlagsFromString(flag);
}
